"""The canary: verify's own table run as a named subset, its result for
consumers and its metrics for the node exporter's textfile collector.

Runs `host_verify.__main__.main` with the fake command runner
(tests/support/host_verify_fake.py): it proves what the canary decides and
writes, not that a real runtime breaks it (the hostlab does that).
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from host_verify import __main__ as cli
from host_verify.canary import CANARY_SCHEMA, HostState, certificate_expiries, follow_health, render_metrics
from host_verify.checks import CHECKS, PROFILES
from host_verify.clients import Result
from host_verify.engine import select
from tests.support.host_verify_fake import FakeHost, throwaway_pems
from tests.unit.test_host_verify_engine import environ

PEMS = throwaway_pems("canary lab-1")

def canary_ps(argv: list[str]) -> Result | None:
    """Two running containers under runsc and one under runc, on the local socket."""
    if "ps" in argv and "--quiet" in argv:
        return Result(0, "aaa\nbbb\nccc\n")
    if "inspect" in argv and "{{.HostConfig.Runtime}}" in argv:
        return Result(0, "runsc\nrunsc\nrunc\n")
    return None

def run_canary(tmp_path: Path, capsys, fake: FakeHost | None = None) -> tuple[int, dict, str, str]:
    env = environ(tmp_path)
    fake = fake or FakeHost(cni=tmp_path / "cni", override=canary_ps)
    fake.runsc_entry = f"{env['FR_DEBIAN_RUNSC']}|--network=sandbox "
    result, textfile = tmp_path / "state" / "canary.json", tmp_path / "textfile" / "canary.prom"
    code = cli.main(["--profile", "canary", "--result", str(result), "--textfile", str(textfile), "--interval", "60"],
                    env, lambda _env: fake, PEMS)
    _out, err = capsys.readouterr()
    return code, json.loads(result.read_text()), textfile.read_text(), err

def metric(text: str, name: str) -> dict[str, float]:
    """labels text -> value, for one metric of a textfile."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head, value = line.rsplit(" ", 1)
            found[head[len(name):]] = float(value)
    return found

def test_the_canary_profile_is_a_named_subset_of_verifys_own_table():
    names = {c.name for c in CHECKS}
    assert set(PROFILES["canary"]) <= names
    chosen = [c.name for c in select(PROFILES["canary"])]
    # What a running host can lose, and what it needs; not the costly once-per-up checks.
    assert {"endpoint-accepts-client-cert", "endpoint-policy", "isolation", "name-lookup", "verify-image"} <= set(chosen)
    assert not {"cold-start", "limits-memory", "limits-pids", "policy-limits", "ctr", "nerdctl"} & set(chosen)

def test_a_healthy_canary_run_writes_its_result_and_metrics(tmp_path, capsys):
    code, result, textfile, err = run_canary(tmp_path, capsys)
    assert code == 0, err
    assert result["schema"] == CANARY_SCHEMA and result["healthy"] is True and result["host"] == "lab-1"
    assert result["intervalSeconds"] == 60 and result["failedCheck"] is None and result["endpointPolicyUp"] is True
    checks = [c["name"] for c in result["report"]["checks"]]
    assert "runtime-runsc-kernel" in checks and "isolation-runsc-metadata" in checks and "dns-runsc" in checks
    assert not [c for c in checks if c.startswith("cold-start")]
    assert metric(textfile, "functions_runtime_canary_success") == {"": 1}
    assert metric(textfile, "functions_runtime_canary_check_success")['{check="runtime-runsc-kernel"}'] == 1
    assert metric(textfile, "functions_runtime_sandboxes_running") == {'{runtime="runc"}': 1, '{runtime="runsc"}': 2}
    assert metric(textfile, "functions_runtime_canary_interval_seconds") == {"": 60}
    assert metric(textfile, "functions_runtime_reboot_required") == {"": 0}
    assert "# TYPE functions_runtime_canary_success gauge" in textfile
    # A Unix time keeps every digit (`%g` would round it to hours).
    stamp = metric(textfile, "functions_runtime_canary_last_run_timestamp_seconds")[""]
    assert abs(stamp - datetime.datetime.now(datetime.UTC).timestamp()) < 600


def test_a_runtime_with_nothing_running_is_counted_as_zero(tmp_path, capsys):
    def nothing_runs(argv: list[str]) -> Result | None:
        return Result(0, "") if "ps" in argv and "--quiet" in argv else None

    _code, _result, textfile, _err = run_canary(tmp_path, capsys, FakeHost(cni=tmp_path / "cni", override=nothing_runs))
    assert metric(textfile, "functions_runtime_sandboxes_running") == {'{runtime="runsc"}': 0}

def test_a_runtime_on_the_hosts_kernel_fails_the_canary_and_says_which_check(tmp_path, capsys):
    fake = FakeHost(cni=tmp_path / "cni", override=canary_ps)
    fake.kernels["runsc"] = os.uname().release  # the sandbox shows the host's own kernel
    code, result, textfile, _err = run_canary(tmp_path, capsys, fake)
    assert code != 0
    assert result["healthy"] is False and result["failedCheck"] == "runtime-runsc-kernel"
    assert metric(textfile, "functions_runtime_canary_success") == {"": 0}
    assert metric(textfile, "functions_runtime_canary_check_success")['{check="runtime-runsc-kernel"}'] == 0

def test_an_inactive_endpoint_policy_makes_the_host_unhealthy(tmp_path, capsys):
    def policy_down(argv: list[str]) -> Result | None:
        if argv[:2] == ["systemctl", "is-active"]:
            return Result(3, "")
        return canary_ps(argv)

    code, result, textfile, _err = run_canary(tmp_path, capsys, FakeHost(cni=tmp_path / "cni", override=policy_down))
    assert result["healthy"] is False and result["endpointPolicyUp"] is False
    assert metric(textfile, "functions_runtime_endpoint_policy_up") == {"": 0}

def test_a_pending_reboot_shows_in_the_result_and_the_metrics(tmp_path, capsys, monkeypatch):
    flag = tmp_path / "reboot-required"
    flag.touch()
    monkeypatch.setenv("FR_REBOOT_REQUIRED", str(flag))
    env = environ(tmp_path, FR_REBOOT_REQUIRED=str(flag))
    fake = FakeHost(cni=tmp_path / "cni", override=canary_ps)
    fake.runsc_entry = f"{env['FR_DEBIAN_RUNSC']}|--network=sandbox "
    result, textfile = tmp_path / "canary.json", tmp_path / "canary.prom"
    cli.main(["--profile", "canary", "--result", str(result), "--textfile", str(textfile)], env, lambda _e: fake, PEMS)
    capsys.readouterr()
    assert json.loads(result.read_text())["rebootRequired"] is True
    assert metric(textfile.read_text(), "functions_runtime_reboot_required") == {"": 1}

def certificate(not_after: datetime.datetime) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(not_after - datetime.timedelta(days=30)).not_valid_after(not_after)
            .sign(key, hashes.SHA256()))

    return cert.public_bytes(Encoding.PEM).decode()

def test_certificate_expiries_are_read_per_certificate_and_a_missing_file_is_left_out(tmp_path):
    first = datetime.datetime(2027, 3, 1, 12, 0, tzinfo=datetime.UTC)
    second = datetime.datetime(2036, 1, 2, 0, 0, tzinfo=datetime.UTC)
    bundle = tmp_path / "ca.pem"
    bundle.write_text(certificate(first) + certificate(second))
    expiries = certificate_expiries({"stack-ca": (bundle, 0), "verifier-ca": (bundle, 1),
                                     "server": (tmp_path / "missing.pem", 0)}, tmp_path)
    assert expiries == {"stack-ca": int(first.timestamp()), "verifier-ca": int(second.timestamp())}
    assert sorted(os.listdir(tmp_path)) == ["ca.pem"]  # nothing left behind

def test_metric_labels_are_escaped():
    state = HostState(reboot_required=False, policy_up=True, artifacts={"gvisor": 'a"b\\c'})
    text = render_metrics({"passed": True, "checks": [], "versions": {}}, state, 60, 0.0, 1.0)
    assert 'functions_runtime_version_info{component="catalog:gvisor",version="a\\"b\\\\c"} 1' in text

def test_a_run_waits_for_another_runs_lock(tmp_path):
    """The lock the verify step and the canary share (main takes it first)."""
    held = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(held, fcntl.LOCK_EX)
    said: list[str] = []
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(cli.hold_run_lock(tmp_path, said.append)))
    try:
        waiter.start()
        waiter.join(1.0)
        assert waiter.is_alive() and not got, "a run must not start while another holds the lock"
    finally:
        fcntl.flock(held, fcntl.LOCK_UN)
        os.close(held)
        waiter.join(30)
    assert len(got) == 1 and said == ["waiting for another verification run on this host to finish"]
    os.close(got[0])
    assert os.listdir(tmp_path) == []  # the lock leaves nothing behind


def test_with_drain_on_failure_a_failing_canary_drains_and_a_passing_one_resumes(tmp_path, capsys):
    drain = tmp_path / "draining"
    env = environ(tmp_path, FR_AUTHZ_DRAIN_FILE=str(drain))
    broken = FakeHost(cni=tmp_path / "cni", override=canary_ps)
    broken.kernels["runsc"] = os.uname().release
    for fake in (broken, FakeHost(cni=tmp_path / "cni", override=canary_ps)):
        fake.runsc_entry = f"{env['FR_DEBIAN_RUNSC']}|--network=sandbox "
    cli.main(["--profile", "canary", "--drain-on-failure"], env, lambda _e: broken, PEMS)
    assert drain.read_text().startswith("drained by the canary: ")
    cli.main(["--profile", "canary", "--drain-on-failure"], env, lambda _e: broken, PEMS)
    assert drain.exists()
    healthy = FakeHost(cni=tmp_path / "cni", override=canary_ps)
    healthy.runsc_entry = f"{env['FR_DEBIAN_RUNSC']}|--network=sandbox "
    cli.main(["--profile", "canary", "--drain-on-failure"], env, lambda _e: healthy, PEMS)
    assert not drain.exists()
    assert "drained (canary.drainOnFailure)" in capsys.readouterr().err


def test_the_canary_never_lifts_an_operators_drain(tmp_path):
    drain = tmp_path / "draining"
    drain.write_text("draining: container create is refused; everything else works\n")
    assert follow_health(drain, healthy=True, reason=None) == "unchanged" and drain.exists()
    assert follow_health(drain, healthy=False, reason="x") == "unchanged"
    assert drain.read_text().startswith("draining:")


def test_the_canary_never_lifts_a_retiring_hosts_drain(tmp_path):
    """scripts/retire_host.sh marks its drain with the contract's retiring
    mark, which is not the canary's: a passing canary leaves it in place."""
    from components.contract import AUTHZ_RETIRE_MARK
    from host_verify.canary import CANARY_DRAIN_MARK

    assert not AUTHZ_RETIRE_MARK.startswith(CANARY_DRAIN_MARK)
    drain = tmp_path / "draining"
    text = f"{AUTHZ_RETIRE_MARK}: the host leaves the stack or is replaced\n"
    drain.write_text(text)
    assert follow_health(drain, healthy=True, reason=None) == "unchanged"
    assert follow_health(drain, healthy=False, reason="x") == "unchanged"
    assert drain.read_text() == text


def test_without_drain_on_failure_a_failing_canary_drains_nothing(tmp_path, capsys):
    drain = tmp_path / "draining"
    env = environ(tmp_path, FR_AUTHZ_DRAIN_FILE=str(drain))
    fake = FakeHost(cni=tmp_path / "cni", override=canary_ps)
    fake.kernels["runsc"] = os.uname().release
    fake.runsc_entry = f"{env['FR_DEBIAN_RUNSC']}|--network=sandbox "
    assert cli.main(["--profile", "canary"], env, lambda _e: fake, PEMS) != 0
    assert not drain.exists()
