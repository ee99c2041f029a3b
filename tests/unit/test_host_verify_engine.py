"""host_verify as a whole: the table, a named subset with what it needs, the
lanes, the first failure, the report (always on stdout, valid against the
one schema), the exit codes, the inputs and the contract file it parses.

Runs `host_verify.__main__.main` with an injected command runner
(tests/support/host_verify_fake.py) and temporary files: no host.
"""

from __future__ import annotations

import json
import shlex
import threading
from pathlib import Path

import pytest

from components.contract import VERIFY_SCHEMA, render_contract_env
from host_verify import __main__ as cli
from host_verify.checks import CHECKS, Check, Context, Recorder
from host_verify.clients import PROBE, Result
from host_verify.engine import run_checks, select
from host_verify.failures import FAMILIES, Failure
from host_verify.inputs import certificate_common_name, parse_contract_env, pem_blocks
from host_verify.report import REPORT_FIELDS, report_problems
from tests.support.host_verify_fake import PRIVATE, RUNSC, FakeHost, make_ctx, throwaway_pems

CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"
PEMS = throwaway_pems()


# ---------------------------------------------------------------- the table


def test_every_check_has_a_known_family_and_needs_only_earlier_stages():
    by_name = {c.name: c for c in CHECKS}
    assert len(by_name) == len(CHECKS)
    for check in CHECKS:
        assert check.family in FAMILIES, check.name
        for need in check.needs:
            other = by_name[need]
            same_lane = other.stage == check.stage and other.lane == check.lane
            assert other.stage < check.stage or (same_lane and CHECKS.index(other) < CHECKS.index(check)), check.name
    assert sorted(set(FAMILIES.values())) == [2, *range(10, 20)]


def test_a_named_subset_brings_what_it_needs_in_table_order():
    assert [c.name for c in select(["isolation"])] == ["verify-image", "isolation"]
    assert [c.name for c in select(["nerdctl"])] == ["runtime-runsc-network", "verify-image", "nerdctl-image", "nerdctl"]
    assert select(None) == CHECKS
    with pytest.raises(KeyError):
        select(["no-such-check"])


def test_lanes_run_side_by_side_and_the_first_failure_stops_the_rest(tmp_path):
    ctx, _ = make_ctx(tmp_path)
    barrier = threading.Barrier(2, timeout=30)
    ran: list[str] = []

    def meets(name: str, fail: bool = False):
        def run(_ctx: Context, _rt: str, rec: Recorder) -> None:
            barrier.wait()  # both lanes are running at once, or this times out
            ran.append(name)
            if fail:
                raise rec.fail(name, name, "x", "y", "z")
            rec.passed(name, name, "ok")
        return run

    def later(_ctx: Context, _rt: str, rec: Recorder) -> None:
        ran.append("later")

    table = (
        Check("a", "kernel", "docker", meets("a", fail=True), stage=1, lane="a"),
        Check("b", "isolation", "ctr", meets("b"), stage=1, lane="b"),
        Check("a2", "kernel", "docker", later, stage=1, lane="a"),
        Check("c", "cold-start", "docker", later, stage=2, lane="c"),
    )
    outcome = run_checks(ctx, table, lambda _line: None)
    assert sorted(ran) == ["a", "b"]
    assert outcome.failure and outcome.failure.check == "a" and outcome.failure.code == 14
    assert [r.name for r in outcome.results] == ["a", "b"]


def test_a_defect_in_a_check_is_its_failure_not_a_lost_report(tmp_path):
    ctx, _ = make_ctx(tmp_path)

    def broken(_ctx: Context, _rt: str, _rec: Recorder) -> None:
        raise RuntimeError("bug")

    outcome = run_checks(ctx, (Check("x", "limits", "docker", broken),), lambda _line: None)
    assert outcome.failure and outcome.failure.code == 18 and "RuntimeError: bug" in outcome.failure.message
    assert outcome.results[0].status == "failed"


# ---------------------------------------------------------------- the whole run


def environ(tmp_path: Path, **changes: str) -> dict[str, str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    contract = tmp_path / "host.env"
    contract.write_text(render_contract_env())
    policy = tmp_path / "endpoint-policy.json"
    policy.write_text(json.dumps({"sandboxRuntimes": ["runsc"],
                                  "limits": {"maxMemoryMiB": 1024, "maxPids": 256, "maxMilliCpus": 2000}}))
    runsc = tmp_path / "runsc"
    runsc.write_text("#!/bin/sh\n")
    runsc.chmod(0o755)
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF")
    env = {
        "FR_ROOT": str(tmp_path), "FR_CONTRACT": str(contract), "FR_HOST": "lab-1", "FR_SCRIPT_NAME": "verify_host.sh",
        "FR_AUTHZ_CONFIG": str(policy), "FR_DEBIAN_RUNSC": str(runsc), "FR_BUSYBOX": str(busybox),
        "FR_WORK_BASE": str(tmp_path / "work"), "FR_SECRET_BASE": str(tmp_path / "secret"),
        "FR_DEV_KVM": str(tmp_path / "no-kvm"), "FR_CATALOG": str(tmp_path / "no-catalog"),
        "FR_CNI_NETWORKS": str(tmp_path / "cni"), "FR_DOCKER_SOCKET": str(tmp_path / "docker.sock"),
        "ISOLATION": "sandbox", "KATA_HYPERVISOR": "qemu", "GVISOR_RUNSC": "debian", "GVISOR_ALLOW_HOST_NETWORK": "false",
        "PRIVATE_ADDRESS": PRIVATE, "ENDPOINT_PORT": "2376", "SSH_PORT": "22",
        "VERIFY_IMAGE": "functions-runtime/verify:busybox", "VERIFY_IMAGE_ARCHIVE": "", "COLD_START_RUNS": "3",
        "LIMIT_MAX_MILLICPUS": "2000", "VERIFY_OUTSIDE": "192.0.2.10 8080", "VERIFY_NERDCTL": "true",
        "VERIFY_NAME_PROBE": "probe.functions-runtime.test",
    }
    env.update(changes)
    return env


def run_main(tmp_path: Path, capsys, argv: list[str] | None = None, stdin: str = PEMS, fake: FakeHost | None = None,
             **changes: str) -> tuple[int, dict, str, FakeHost]:
    env = environ(tmp_path, **changes)
    fake = fake or FakeHost(cni=tmp_path / "cni")
    fake.runsc_entry = f"{env['FR_DEBIAN_RUNSC']}|--network=sandbox "
    code = cli.main(argv or [], env, lambda _env: fake, stdin)
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 1, out  # exactly one report, on one line
    return code, json.loads(lines[0]), err, fake


def test_a_verified_host_reports_every_check_and_its_proven_limits(tmp_path, capsys):
    code, report, err, fake = run_main(tmp_path, capsys)
    assert code == 0, err
    assert report_problems(report, VERIFY_SCHEMA) == []
    assert report["passed"] is True and report["failedCheck"] is None and report["defaultRuntime"] == "runsc"
    assert report["limits"] == {"maxMemoryMiB": 1024, "maxPids": 256, "maxMilliCpus": 2000}
    (runsc,) = report["runtimes"]
    assert runsc["network"] == "sandbox" and runsc["guestKernel"] == "4.4.0" and runsc["userNetworkDns"] is True
    assert runsc["coldStartMs"]["runs"] == 3 and runsc["shim"].endswith("/runsc")
    names = [c["name"] for c in report["checks"]]
    for expected in ("preflight-kata", "preflight-runsc", "endpoint-accepts-client-cert", "endpoint-refuses-no-cert",
                     "default-runtime", "runtime-runsc-network", "daemon-hardening", "endpoint-policy", "verify-image",
                     "nerdctl-image", "policy-refuses-privileged-runc", "policy-refuses-no-limits", "policy-limits",
                     "runtime-runsc-kernel", "reach-runsc-peer", "isolation-runsc-metadata", "limits-runsc-pids",
                     "limits-runsc-memory", "runtime-ctr-runc-kernel", "reach-ctr-runsc-outside",
                     "isolation-nerdctl-runsc-host-ssh", "cold-start-runsc"):
        assert expected in names, expected
    # One line per check on stderr, in the scripts' form; the cold start last.
    assert err.count("verify_host.sh [lab-1]: checking ") == len(names)
    assert names[-1] == "cold-start-runsc"
    assert err.strip().endswith("verify_host.sh [lab-1]: host lab-1 verified: default runtime runsc")
    assert report["versions"]["containerd"] == "1.7.24" and report["versions"]["docker"] == "26.1.5"
    # Every create through the endpoint carries the policy's owner label: the client certificate's CN.
    creates = [c for c in fake.calls if c[0] == "docker" and c[c.index("-H") + 1].startswith("tcp://")
               and c[c.index("-H") + 2] in ("run", "create")]
    assert creates and all("functions-runtime.owner=verify lab-1" in c for c in creates)
    # the key material is gone
    assert not any((tmp_path / "secret").iterdir()) and not any((tmp_path / "work").iterdir())


def test_a_failure_prints_the_report_and_exits_with_its_familys_code(tmp_path, capsys):
    fake = FakeHost(cni=tmp_path / "cni")
    fake.container_reaches.add("169.254.169.254 80")
    code, report, err, _ = run_main(tmp_path, capsys, fake=fake)
    assert code == 15
    assert report["passed"] is False and report["failedCheck"].startswith("isolation-")
    assert report["failedCheck"].endswith("-metadata") and "169.254.169.254:80 unreachable" in report["reason"]
    assert report_problems(report, VERIFY_SCHEMA) == []
    assert "cold-start-runsc" not in [c["name"] for c in report["checks"]]  # stopped before stage 2
    assert f"FAILED on host lab-1: {report['reason']}" in err


def test_only_a_subset_runs_what_it_names_and_needs(tmp_path, capsys):
    code, report, _, fake = run_main(tmp_path, capsys, ["--only", "isolation"])
    assert code == 0
    assert [c["name"] for c in report["checks"]] == ["verify-image", "runtime-runsc-kernel", "reach-runsc-peer",
                                                     "reach-runsc-outside",
                                                     "isolation-runsc-metadata", "isolation-runsc-host-endpoint",
                                                     "isolation-runsc-host-ssh"]
    assert not [c for c in fake.calls if c[0] in ("ctr", "nerdctl")]
    assert report["limits"] is None  # not proven in this run


def test_vm_without_kvm_fails_the_preflight_with_a_report(tmp_path, capsys):
    code, report, err, _ = run_main(tmp_path, capsys, ISOLATION="vm")
    assert code == 10 and report["failedCheck"] == "preflight-kata"
    assert report["runtimes"][0]["name"] == "kata" and report["runtimes"][0]["isolation"] == "vm"
    assert "KVM for Kata Containers (functions-runtime:isolation is vm)" in report["reason"]


@pytest.mark.parametrize(
    "changes, stdin, words",
    [
        # Values are the program's, checked once (components/settings): verify
        # stops on a missing or unreadable one, and judges none of them again.
        ({"VERIFY_OUTSIDE": "192.0.2.10:8080"}, PEMS, "one it cannot read"),
        ({"LIMIT_MAX_MILLICPUS": "1.5"}, PEMS, "one it cannot read"),
        ({"GVISOR_ALLOW_HOST_NETWORK": ""}, PEMS, "variable GVISOR_ALLOW_HOST_NETWORK to be set"),
        ({"VERIFY_NERDCTL": ""}, PEMS, "variable VERIFY_NERDCTL to be set"),
        ({"PRIVATE_ADDRESS": ""}, PEMS, "variable PRIVATE_ADDRESS to be set"),
        ({}, CERT + CERT, "3 PEM blocks on stdin"),
        ({}, CERT + CERT + "-----BEGIN PRIVATE KEY-----\nx\n", "an unterminated block"),
        ({}, CERT + KEY + KEY, "stdin block 'cert.pem' to be a certificate"),
    ],
)
def test_input_errors_still_print_a_report(tmp_path, capsys, changes, stdin, words):
    code, report, err, fake = run_main(tmp_path, capsys, stdin=stdin, **changes)
    assert code == 2 and report["failedCheck"] == "inputs" and words in report["reason"]
    assert report["passed"] is False and report["schema"] == VERIFY_SCHEMA
    assert not fake.calls  # nothing ran on the host
    assert "PRIVATE KEY" not in err + json.dumps(report)  # key material is never printed


def test_a_missing_contract_fails_closed(tmp_path, capsys):
    env = environ(tmp_path, FR_CONTRACT=str(tmp_path / "nope.env"))
    assert cli.main([], env, lambda _env: FakeHost(cni=tmp_path), PEMS) == 1
    assert "expected the contract at" in capsys.readouterr().err


def test_the_list_prints_the_table(capsys):
    assert cli.main(["--list"], {}) == 0
    assert [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()] == [c.name for c in CHECKS]


def test_the_docker_cli_gets_a_private_config_directory(tmp_path, capsys):
    seen: dict[str, str] = {}

    def factory(env: dict[str, str]) -> FakeHost:
        seen.update(env)
        return FakeHost(cni=tmp_path / "cni")

    env = environ(tmp_path)
    cli.main(["--only", "endpoint-policy"], env, factory, PEMS)
    capsys.readouterr()
    assert seen["DOCKER_CONFIG"].startswith(str(tmp_path / "work"))


def test_the_ctr_rootfs_is_busybox_with_its_applets_outside_run(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    (tmp_path / "busybox").write_bytes(b"BB")
    rootfs = cli.prepare_ctr_rootfs(work, tmp_path / "busybox")
    assert oct(work.stat().st_mode & 0o777) == "0o711"
    assert (rootfs / "bin/sh").readlink() == Path("busybox") and (rootfs / "bin/busybox").read_bytes() == b"BB"
    assert all((rootfs / d).is_dir() for d in ("proc", "dev", "sys", "etc", "tmp"))


# ---------------------------------------------------------------- contract and report


def test_the_contract_env_gives_python_what_bash_gives_the_scripts(tmp_path):
    import subprocess

    env_file = tmp_path / "host.env"
    env_file.write_text(render_contract_env())
    facts = parse_contract_env(env_file.read_text(), {"FR_AUTHZ_CONFIG": "/tmp/x.json"})
    script = "".join(f'printf "%s=%s\\n" {name} "${name}";' for name in facts)
    out = subprocess.run(["bash", "-c", f"FR_AUTHZ_CONFIG=/tmp/x.json; source {shlex.quote(str(env_file))}; {script}"],
                         capture_output=True, text=True, check=True).stdout
    assert dict(line.split("=", 1) for line in out.splitlines()) == facts
    assert facts["FR_AUTHZ_CONFIG"] == "/tmp/x.json" and facts["FR_VERIFY_SCHEMA"] == VERIFY_SCHEMA


def test_a_malformed_contract_line_is_refused():
    with pytest.raises(ValueError):
        parse_contract_env("FR_X=a b\n", {})
    with pytest.raises(ValueError):
        parse_contract_env("echo hi\n", {})


def test_pem_blocks_split_in_order_and_crlf_is_accepted():
    assert pem_blocks((CERT + KEY).replace("\n", "\r\n")) == [CERT, KEY]


def test_the_report_schema_catches_each_kind_of_problem():
    good = {"schema": VERIFY_SCHEMA, "host": "h", "passed": True, "failedCheck": None, "reason": None,
            "hostKernel": "6.12", "defaultRuntime": "runsc", "versions": {"docker": "26.1.5"}, "limits": {
                "maxMemoryMiB": 1, "maxPids": 2, "maxMilliCpus": 3},
            "runtimes": [{"name": "runsc", "shim": RUNSC, "isolation": "sandbox", "network": "sandbox", "hypervisor": None,
                          "guestKernel": "4.4.0", "coldStartMs": {"median": 5, "runs": 3}, "userNetworkDns": False}],
            "checks": [{"name": "a", "status": "passed", "passed": True, "detail": 'quotes " and \\ and \t'}]}
    assert report_problems(good, VERIFY_SCHEMA) == []
    assert set(REPORT_FIELDS) <= set(good)
    bad = json.loads(json.dumps(good))
    bad["passed"] = "yes"
    bad["runtimes"][0]["coldStartMs"]["median"] = True
    bad["checks"][0]["status"] = "fine"
    del bad["hostKernel"]
    bad["limits"]["maxPids"] = "2"
    problems = report_problems(bad, VERIFY_SCHEMA)
    for words in ("report.passed: expected bool", "report.runtimes[0].coldStartMs.median", "report.checks[0].status",
                  "report.hostKernel: missing", "report.limits.maxPids"):
        assert any(words in p for p in problems), words
    assert report_problems({**good, "limits": None}, VERIFY_SCHEMA) == [
        "report.limits: a passed report says which limits the endpoint policy enforces"]
    assert report_problems({**good, "schema": "other@1"}, VERIFY_SCHEMA)[0].startswith("expected a ")


def test_the_probe_is_bounded_and_prints_one_line_per_target():
    assert 'nc -w "$w"' in PROBE and PROBE.startswith('echo "kernel $(uname -r)"') and PROBE.rstrip().endswith("wait")


def test_failure_messages_stay_on_one_line():
    f = Failure("x", 10, "a\nb", "c\td", "e\r\nf")
    assert "\n" not in f.message and "\t" not in f.message and f.message == "expected a b; found c d; to fix: e  f"


def test_results_keep_table_order_whatever_finishes_first(tmp_path):
    ctx, fake = make_ctx(tmp_path)
    fake.override = lambda argv: Result(0, "kernel 4.4.0\n") if PROBE in argv and argv[0] == "ctr" else None
    table = tuple(c for c in CHECKS if c.name in ("limits-memory", "limits-pids"))
    outcome = run_checks(ctx, table, lambda _line: None)
    assert [r.name for r in outcome.results] == ["limits-runsc-pids", "limits-runsc-memory"]


def test_the_owner_label_is_the_client_certificates_common_name():
    pems = throwaway_pems("verify " + "h" * 57)  # the longest a CN may be
    assert certificate_common_name(pem_blocks(pems)[1]) == "verify " + "h" * 57
    with pytest.raises(ValueError):
        certificate_common_name(pem_blocks(throwaway_pems(with_cn=False))[1])


def test_a_client_certificate_without_a_common_name_is_an_input_error(tmp_path, capsys):
    code, report, _, _ = run_main(tmp_path, capsys, stdin=throwaway_pems(with_cn=False))
    assert code == 2 and "common name" in report["reason"]


def test_the_system_runner_speaks_http_on_a_unix_socket(tmp_path):
    import http.server
    import socketserver

    from host_verify.clients import SystemRunner

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_DELETE(self) -> None:
            self.send_response(204 if self.path == "/containers/a%20b?force=1" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        def get_request(self):  # BaseHTTPRequestHandler wants a client address
            request, _ = super().get_request()
            return request, ("local", 0)

    path = tmp_path / "docker.sock"
    with Server(str(path), Handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        runner = SystemRunner({})
        assert runner.docker_api(path, "DELETE", "/containers/a%20b?force=1").code == 204
        assert runner.docker_api(path, "DELETE", "/other").code == 404
        server.shutdown()
    assert runner.docker_api(tmp_path / "none.sock", "GET", "/_ping").code == 0


def test_a_background_command_keeps_what_it_printed_for_the_failure_message():
    """The real runner's background process (a ctr peer's `ctr run`): its
    output goes to a file, and its last line, stdout or stderr, is there
    after it ends."""
    from host_verify.clients import SystemRunner

    proc = SystemRunner({"PATH": "/usr/bin:/bin"}).start(["sh", "-c", "echo first; echo 'ctr: shim failed' >&2; exit 3"])
    assert proc.wait(timeout=30) == 3 and proc.poll() == 3
    assert proc.last_line() == "ctr: shim failed"
