"""host_verify's checks, one by one, against an injected command runner and
temporary files (tests/support/host_verify_fake.py): no host, no Docker.

Proves each check's decision (passed, skipped, or failed with its family's
exit code and a message naming what was expected, found and to do) from
what the commands answer, and which commands it runs (through the endpoint
or as root, in verify's containerd namespace, with limits). Does not prove
Docker, gVisor, containerd or Kata behaviour: the hostlab runs the same
checks on a real guest.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from host_verify.checks import (
    BOMB_FACTOR,
    CHECKS,
    Context,
    Recorder,
    busybox_tar,
    containerd_runtimes,
    kata_unusable_reason,
    last_count,
    lookup_result,
    median,
    probe_result,
    pull_result,
    runsc_path,
    runsc_release_date,
    upstream_version,
    version_of,
    wanted_runtimes,
)
from host_verify.clients import CNI_PEER_WAIT, PROBE, Result
from host_verify.failures import FAMILIES, Failure
from host_verify.inputs import CatalogRow
from host_verify.report import CheckResult
from tests.support.host_verify_fake import (
    CTR_PEER,
    DOCKER_PEER,
    GUEST_KERNEL,
    HOST_KERNEL,
    NAME_PROBE,
    OUTSIDE,
    PRIVATE,
    RUNSC,
    FakeHost,
    commands,
    contract,
    joined,
    make_ctx,
    make_inputs,
)

BY_NAME = {c.name: c for c in CHECKS}


def run_check(ctx: Context, name: str, runtime: str = "") -> tuple[dict[str, CheckResult], Failure | None, list[str]]:
    check = BY_NAME[name]
    lines: list[str] = []
    rec = Recorder(check.family, lines.append)
    failure = None
    try:
        check.run(ctx, runtime, rec)
    except Failure as err:
        failure = err
    return {r.name: r for r in rec.results}, failure, lines


def status(results: dict[str, CheckResult]) -> dict[str, str]:
    return {name: r.status for name, r in results.items()}


# ---------------------------------------------------------------- preflight and wanted runtimes


def kata_host(tmp_path: Path, hypervisor_in_force: str = "qemu", check_ok: bool = True) -> tuple[Context, FakeHost]:
    """A Kata install that passes every preflight step (a kata-runtime double)."""
    (tmp_path / "cpuinfo").write_text("flags : fpu vmx sse\n")
    (tmp_path / "state").mkdir()
    (tmp_path / "state/kata.version").write_text("3.32.0 sha256:" + "a" * 64 + "\n")
    shim = tmp_path / "kata/bin/containerd-shim-kata-v2"
    shim.parent.mkdir(parents=True)
    shim.write_text("#!/bin/sh\n")
    shim.chmod(0o755)
    defaults = tmp_path / "kata/share/defaults/kata-containers"
    defaults.mkdir(parents=True)
    for h in ("qemu", "clh"):
        (defaults / f"configuration-{h}.toml").write_text(f"[hypervisor.{h}]\n")
    (tmp_path / "kata-config.toml").write_text(f"[hypervisor.{hypervisor_in_force}]\n")
    for module in contract().words("KERNEL_MODULES"):
        (tmp_path / "sys-module" / module).mkdir(parents=True)
    fake = FakeHost(cni=tmp_path / "cni")
    asked: list[str] = []

    def kata_runtime(argv: list[str]) -> Result | None:
        if argv[0].endswith("kata-runtime"):
            asked.append(argv[argv.index("--config") + 1])
            return Result(0 if check_ok else 1, "System is capable of running Kata Containers\n" if check_ok else
                          "ERROR: /dev/vhost-vsock is busy\n")
        return None

    fake.override = kata_runtime
    fake.asked = asked  # type: ignore[attr-defined]
    ctx, _ = make_ctx(tmp_path, fake, wanted=("kata", "runsc"))
    ctx = Context(**{**ctx.__dict__, "catalog": {"kata": CatalogRow("kata", "3.32.0", "sha256:" + "a" * 64)}})
    return ctx, fake


def test_vm_without_kvm_fails_the_kata_preflight_naming_the_way_out(tmp_path):
    ctx, _ = make_ctx(tmp_path, wanted=("kata",), isolation="vm")
    results, failure, lines = run_check(ctx, "preflight-kata")
    assert failure and failure.code == FAMILIES["preflight"] == 10
    assert "KVM for Kata Containers (functions-runtime:isolation is vm)" in failure.message
    assert f"no usable {tmp_path / 'kvm'}" in failure.message and "Hetzner Cloud servers" in failure.message
    assert "set functions-runtime:isolation to sandbox" in failure.message
    assert results["preflight-kata"].status == "failed" and lines == [
        "checking Kata preflight (KVM, CPU flags, vhost modules, kata-runtime check)... FAILED"]


def test_kata_preflight_checks_the_configuration_in_force_for_the_stacks_hypervisor(tmp_path, monkeypatch):
    ctx, fake = kata_host(tmp_path)
    monkeypatch.setattr("host_verify.checks.kvm_missing_reason", lambda _paths: "")
    results, failure, _ = run_check(ctx, "preflight-kata")
    assert failure is None and results["preflight-kata"].status == "passed"
    assert fake.asked == [str(tmp_path / "kata-config.toml")]  # type: ignore[attr-defined]


def test_kata_preflight_fails_when_another_hypervisors_configuration_is_in_force(tmp_path, monkeypatch):
    ctx, _ = kata_host(tmp_path, hypervisor_in_force="clh")
    monkeypatch.setattr("host_verify.checks.kvm_missing_reason", lambda _paths: "")
    _, failure, _ = run_check(ctx, "preflight-kata")
    assert failure and failure.code == 10
    assert "to be the qemu one" in failure.message and "found a different file" in failure.message


def test_kata_preflight_names_the_configuration_when_its_check_fails(tmp_path, monkeypatch):
    ctx, _ = kata_host(tmp_path, check_ok=False)
    monkeypatch.setattr("host_verify.checks.kvm_missing_reason", lambda _paths: "")
    _, failure, _ = run_check(ctx, "preflight-kata")
    assert failure and "'kata-runtime check' to pass with the qemu configuration in force" in failure.message
    assert "/dev/vhost-vsock is busy" in failure.message and "check --verbose" in failure.message


def test_a_missing_kernel_module_fails_the_kata_preflight(tmp_path, monkeypatch):
    ctx, _ = kata_host(tmp_path)
    monkeypatch.setattr("host_verify.checks.kvm_missing_reason", lambda _paths: "")
    (tmp_path / "sys-module/vhost_net").rmdir()
    _, failure, _ = run_check(ctx, "preflight-kata")
    assert failure and "kernel module vhost_net loaded" in failure.message and "modprobe vhost_net" in failure.message


def test_sandbox_without_usable_kata_reports_why_as_skipped(tmp_path):
    ctx, _ = make_ctx(tmp_path)
    results, failure, _ = run_check(ctx, "preflight-kata")
    assert failure is None and results["preflight-kata"].status == "skipped"
    assert results["preflight-kata"].detail.startswith(f"Kata not usable: no usable {tmp_path / 'kvm'}")


@pytest.mark.parametrize(
    "isolation, kata_usable, wanted",
    [("vm", False, ("kata",)), ("vm", True, ("kata",)), ("sandbox", True, ("kata", "runsc")), ("sandbox", False, ("runsc",))],
)
def test_which_runtimes_are_wanted(isolation, kata_usable, wanted):
    assert wanted_runtimes(isolation, kata_usable) == wanted


def test_kvm_without_cpu_flags_is_no_kvm(tmp_path):
    ctx, _ = make_ctx(tmp_path)
    (tmp_path / "cpuinfo").write_text("flags : fpu sse\n")
    assert kata_unusable_reason(ctx.runner, ctx.paths, {}, "qemu").startswith("no usable")


def test_with_gvisor_runsc_debian_the_preflight_checks_and_reports_debians_runsc(tmp_path):
    runsc = tmp_path / "runsc"
    runsc.write_text("#!/bin/sh\n")
    runsc.chmod(0o755)
    ctx, _ = make_ctx(tmp_path)
    ctx = Context(**{**ctx.__dict__, "runsc": str(runsc)})
    results, failure, _ = run_check(ctx, "preflight-runsc")
    assert failure is None
    assert results["preflight-runsc"].detail == f"{runsc}: runsc version 0.0~20240729.0; Debian's runsc package, " \
        "the fallback gvisor.runsc: debian chose"


def test_a_missing_runsc_fails_the_preflight_naming_the_setting(tmp_path):
    ctx, _ = make_ctx(tmp_path, gvisor_runsc="release")
    ctx = Context(**{**ctx.__dict__, "runsc": str(tmp_path / "gvisor/20260831.0/runsc")})
    _, failure, _ = run_check(ctx, "preflight-runsc")
    assert failure and failure.code == 10
    assert "(functions-runtime:gvisor.runsc is release)" in failure.message and "re-run the install step" in failure.message


def release_ctx(tmp_path, sidecars=("gvisor_sentry", "gvisor-sentry-prewarmer", "checkpointgofer",
                                     "runsc-metric-server"), version="runsc version release-20260907.0"):
    """A host running gVisor's release from its versioned directory, the
    sidecars beside runsc (stand-in files), runsc's --version as given."""
    runsc = tmp_path / "gvisor" / "20260907.0" / "runsc"
    for name in ("runsc", *(f"gvisor-bin/{s}" for s in sidecars)):
        (runsc.parent / name).parent.mkdir(parents=True, exist_ok=True)
        (runsc.parent / name).write_text("#!/bin/sh\n")
        (runsc.parent / name).chmod(0o755)
    ctx, fake = make_ctx(tmp_path, gvisor_runsc="release")
    ctx = Context(**{**ctx.__dict__, "runsc": str(runsc)})
    fake.override = lambda argv: Result(0, version + "\n") if argv == [str(runsc), "--version"] else None
    return ctx, fake, runsc


def test_a_release_without_a_sidecar_fails_the_preflight_naming_it(tmp_path):
    ctx, _, runsc = release_ctx(tmp_path, sidecars=("gvisor_sentry", "checkpointgofer", "runsc-metric-server"))
    _, failure, _ = run_check(ctx, "preflight-runsc")
    assert failure and failure.code == 10 and "missing: gvisor-sentry-prewarmer" in failure.message
    assert f"{runsc.parent}/gvisor-bin" in failure.message and "re-run the install step" in failure.message


def test_the_release_preflight_reports_its_sidecars_and_runscs_version(tmp_path):
    ctx, _, runsc = release_ctx(tmp_path)
    results, failure, _ = run_check(ctx, "preflight-runsc")
    assert failure is None and f"with its sidecars in {runsc.parent}/gvisor-bin" in results["preflight-runsc"].detail
    assert ctx.facts.get("runsc_version") == "runsc version release-20260907.0"


def test_sandboxes_run_from_the_sentry_sidecar(tmp_path):
    ctx, fake, runsc = release_ctx(tmp_path)
    # An older release's sandbox already runs (its sentry counts before), and runsc itself.
    fake.process_images = {4242: "/opt/functions-runtime/gvisor/20260831.0/gvisor-bin/gvisor_sentry", 4243: str(runsc)}
    fake.runsc_sandbox_image = f"{runsc.parent}/gvisor-bin/gvisor_sentry"
    run_check(ctx, "preflight-runsc")
    results, failure, _ = run_check(ctx, "runtime-runsc-sidecars")
    assert failure is None
    assert results["runtime-runsc-sidecars"].detail == (
        "sentry processes: 1 before a gVisor container started, 2 while it ran")
    # Its container went through the endpoint, under the policy, and root removed it.
    (started,) = [c for c in commands(fake, "docker", "run") if "-d" in c]
    assert "--tlsverify" in started and started[started.index("--runtime") + 1] == "runsc"
    assert [c[-1] for c in commands(fake, "docker", "rm")] == ["peerid"]


def test_a_release_whose_sandboxes_do_not_run_the_sentry_fails(tmp_path):
    """The deprecated fallback: runsc runs its sandbox itself (another release's sentry runs meanwhile)."""
    ctx, fake, runsc = release_ctx(tmp_path)
    fake.process_images = {4242: "/opt/functions-runtime/gvisor/20260831.0/gvisor-bin/gvisor_sentry"}
    fake.runsc_sandbox_image = str(runsc)
    run_check(ctx, "preflight-runsc")
    _, failure, _ = run_check(ctx, "runtime-runsc-sidecars")
    assert failure and failure.code == 12 and "runs its sandbox without the sidecar" in failure.message
    assert "1 before it started, 1 while it ran" in failure.message
    assert [c[-1] for c in commands(fake, "docker", "rm")] == ["peerid"], "removed on failure too"


@pytest.mark.parametrize(
    ("runsc_source", "version", "reason"),
    [
        ("release", "runsc version release-20260817.0", "releases before 20260831 run their sandbox themselves"),
        ("debian", "runsc version 0.0~20240729.0", "Debian's runsc package (gvisor.runsc: debian)"),
    ],
)
def test_runscs_without_sidecars_skip_the_sidecar_check_saying_why(tmp_path, runsc_source, version, reason):
    ctx, fake, _ = release_ctx(tmp_path, version=version)
    ctx = Context(**{**ctx.__dict__, "inputs": make_inputs(gvisor_runsc=runsc_source)})
    ctx.facts.set("runsc_version", version)
    results, failure, _ = run_check(ctx, "runtime-runsc-sidecars")
    assert failure is None and results["runtime-runsc-sidecars"].status == "skipped"
    assert reason in results["runtime-runsc-sidecars"].detail
    assert commands(fake, "docker", "run") == []


@pytest.mark.parametrize(
    ("line", "date"),
    [("runsc version release-20260907.0", "20260907"), ("runsc version release-20240729.0", "20240729"),
     ("runsc version 0.0~20240729.0", "20240729"), ("runsc version 0.0~git", None), ("(no version)", None)],
)
def test_runsc_release_date(line, date):
    assert runsc_release_date(line) == date


def test_the_release_runsc_is_under_the_catalogs_version_and_a_bad_version_is_refused():
    c = contract({"FR_GVISOR_DIR": "/opt/g"})
    assert runsc_path(c, {"gvisor": CatalogRow("gvisor", "20260907.0", "sha256:x")}, "release") == "/opt/g/20260907.0/runsc"
    assert runsc_path(c, {}, "debian") == c["DEBIAN_RUNSC"]
    with pytest.raises(Failure, match="usable as a directory name in catalog row 'gvisor'"):
        runsc_path(c, {"gvisor": CatalogRow("gvisor", "../x", "sha256:x")}, "release")
    # The loose runsc row of a release before 20260831 is not the release any more.
    with pytest.raises(Failure, match="usable as a directory name"):
        runsc_path(c, {"runsc": CatalogRow("runsc", "20260817.0", "sha512:x")}, "release")


# ---------------------------------------------------------------- endpoint and daemon


def test_endpoint_checks_pass_both_halves(tmp_path):
    ctx, fake = make_ctx(tmp_path)
    accepts, failure, _ = run_check(ctx, "endpoint-accepts-client-cert")
    assert failure is None and accepts["endpoint-accepts-client-cert"].detail.endswith("(Docker 26.1.5)")
    assert ctx.facts.get("docker_version") == "26.1.5"
    refuses, failure, _ = run_check(ctx, "endpoint-refuses-no-cert")
    assert failure is None and "certificate required" in refuses["endpoint-refuses-no-cert"].detail
    with_cert, without = commands(fake, "curl")
    assert "--cert" in with_cert and "--key" in with_cert and "--cert" not in without
    assert with_cert[-1] == without[-1] == f"https://{PRIVATE}:2376/version"


def test_an_endpoint_that_answers_without_a_certificate_fails(tmp_path):
    ctx, fake = make_ctx(tmp_path)
    fake.override = lambda argv: Result(0, "{}") if argv[0] == "curl" else None
    _, failure, _ = run_check(ctx, "endpoint-refuses-no-cert")
    assert failure and failure.code == 11 and "a TLS client without a certificate to be refused" in failure.message


def test_nothing_listening_fails_the_accepts_check(tmp_path):
    ctx, fake = make_ctx(tmp_path)
    fake.override = lambda argv: Result(7, "", "curl: (7) Failed to connect\n") if argv[0] == "curl" else None
    _, failure, _ = run_check(ctx, "endpoint-accepts-client-cert")
    assert failure and failure.code == 11 and "Failed to connect" in failure.message


def test_ipv6_endpoint_is_bracketed(tmp_path):
    ctx, fake = make_ctx(tmp_path, private_address="fd00::5")
    run_check(ctx, "endpoint-accepts-client-cert")
    assert commands(fake, "curl")[0][-1] == "https://[fd00::5]:2376/version"


@pytest.mark.parametrize(
    "default, runtimes, words",
    [("runc", "runc runsc ", "expected default runtime runsc; found runc"),
     ("runsc", "runc ", "expected runtime runsc registered with Docker")],
)
def test_default_and_registered_runtimes(tmp_path, default, runtimes, words):
    ctx, fake = make_ctx(tmp_path)
    fake.default_runtime, fake.runtimes = default, runtimes
    _, failure, _ = run_check(ctx, "default-runtime")
    assert failure and failure.code == 12 and words in failure.message


@pytest.mark.parametrize(
    "args, allowed, network, words",
    [
        ("--network=sandbox ", False, "sandbox", None),
        ("", False, "sandbox", None),
        ("--network=host ", True, "host", None),
        ("--network=host ", False, None, "--network=host: socket calls reach the host kernel"),
        ("--network=none ", False, None, "runtime argument --network=none"),
    ],
)
def test_the_runsc_network_is_read_from_the_running_daemon(tmp_path, args, allowed, network, words):
    ctx, fake = make_ctx(tmp_path, allow_host_network=allowed)
    fake.runsc_entry = f"{RUNSC}|{args}"
    results, failure, lines = run_check(ctx, "runtime-runsc-network")
    assert ctx.facts.get("network", "runsc") == network
    if words:
        assert failure and failure.code == 12 and words in failure.message
    else:
        assert failure is None and results["runtime-runsc-network"].detail.endswith(f"network {network}")
        assert any("WARNING" in line for line in lines) == (network == "host")


def test_a_daemon_running_another_runsc_fails_the_network_check(tmp_path):
    ctx, fake = make_ctx(tmp_path)
    fake.runsc_entry = "/usr/local/bin/runsc|--network=sandbox "
    _, failure, _ = run_check(ctx, "runtime-runsc-network")
    assert failure and f"Docker's runsc runtime at {RUNSC}" in failure.message and "'/usr/local/bin/runsc'" in failure.message


@pytest.mark.parametrize(
    "change, words",
    [
        (("daemon", "false json-file"), "live-restore on and the json-file log driver"),
        (("socket_mode", "660 root docker"), "mode 600, owned by root:root; found 660 root docker"),
        (("listeners", (f"{PRIVATE}:2376", f"{PRIVATE}:9323", "0.0.0.0:2375")),
         f"listeners: 0.0.0.0:2375 {PRIVATE}:2376 {PRIVATE}:9323"),
        # dockerd's metrics on every address (not the private one) would bypass the host filter's intent.
        (("listeners", (f"{PRIVATE}:2376", "0.0.0.0:9323")), f"listeners: 0.0.0.0:9323 {PRIVATE}:2376"),
        (("listeners", (f"{PRIVATE}:2376",)), f"and {PRIVATE}:9323 (its metrics"),
        (("listeners", ()), "listeners: none"),
    ],
)
def test_daemon_hardening(tmp_path, change, words):
    ctx, fake = make_ctx(tmp_path)
    assert run_check(ctx, "daemon-hardening")[1] is None
    setattr(fake, *change)
    ctx.facts.set("docker_info", None)  # asked once per run: a new run asks again
    _, failure, _ = run_check(ctx, "daemon-hardening")
    assert failure and failure.code == 12 and words in failure.message


def test_docker_info_is_asked_once_for_every_daemon_check(tmp_path):
    ctx, fake = make_ctx(tmp_path)
    for name in ("default-runtime", "runtime-runsc-network", "daemon-hardening", "endpoint-policy"):
        assert run_check(ctx, name)[1] is None, name
    assert len(commands(fake, "docker", "info")) == 1


def test_the_policy_plugin_must_be_in_dockers_running_configuration(tmp_path):
    ctx, fake = make_ctx(tmp_path)
    assert run_check(ctx, "endpoint-policy")[1] is None
    fake.authz = ""
    ctx.facts.set("docker_info", None)
    _, failure, _ = run_check(ctx, "endpoint-policy")
    assert failure and failure.code == 17 and "authorization plugin functions-runtime-authz" in failure.message


# ---------------------------------------------------------------- the verify image


def test_verify_image_without_digest_is_refused(tmp_path):
    ctx, _ = make_ctx(tmp_path, image="busybox:latest")
    _, failure, _ = run_check(ctx, "verify-image")
    assert failure and failure.code == 13 and "pinned by digest" in failure.message


def test_the_busybox_image_is_built_from_busybox_static_when_absent(tmp_path):
    ctx, fake = make_ctx(tmp_path)
    fake.images = set()
    (tmp_path / "busybox").write_bytes(b"\x7fELF busybox")
    (tmp_path / "busybox").chmod(0o755)
    results, failure, _ = run_check(ctx, "verify-image")
    assert failure is None and results["verify-image"].detail == f"built from {tmp_path / 'busybox'}"
    (imp,) = commands(fake, "docker", "import")
    assert imp[:2] == ["docker", "-H"] and imp[2].startswith("unix://") and 'CMD ["/bin/sh"]' in imp


def test_busybox_rootfs_tar_is_deterministic_with_every_applet():
    data = busybox_tar(b"BB")
    assert data == busybox_tar(b"BB")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["bin/busybox"].mode == 0o755 and all(m.uid == 0 and m.mtime == 0 for m in members.values())
    for applet in ("sh", "uname", "wget", "nc", "true", "sleep", "awk"):
        assert members[f"bin/{applet}"].linkname == "busybox"


@pytest.mark.parametrize(
    "image, present, loads",
    [("sha256:" + "1" * 64, True, 0), ("sha256:" + "1" * 64, False, 1), ("example/img:tag", True, 1)],
)
def test_verify_image_archive_is_loaded_only_when_needed(tmp_path, image, present, loads):
    archive = tmp_path / "verify-image.tar"
    archive.write_bytes(b"tar")
    fake = FakeHost(cni=tmp_path / "cni")
    fake.images = {image} if present else set()

    def load(argv: list[str]) -> Result | None:
        if "load" in argv:
            fake.images.add(image)
            return Result(0, "Loaded image\n")
        return None

    fake.override = load
    ctx, _ = make_ctx(tmp_path, fake, image=image, image_archive=str(archive))
    _, failure, _ = run_check(ctx, "verify-image")
    assert failure is None and len(commands(fake, "docker", "load")) == loads


# ---------------------------------------------------------------- endpoint policy and its limits


@pytest.mark.parametrize(
    "policy, words",
    [
        (None, None),
        (lambda args: (True, ""), "a create with --runtime runc with --privileged refused by the endpoint policy"),
        (lambda args: (False, "Error response from daemon: something else"), "a refusal from the endpoint policy"),
    ],
)
def test_policy_refusal_checks(tmp_path, policy, words):
    fake = FakeHost(cni=tmp_path / "cni", policy=policy)
    ctx, _ = make_ctx(tmp_path, fake)
    results, failure, _ = run_check(ctx, "policy-refuses")
    if words is None:
        assert failure is None and set(results) == {f"policy-refuses-{c}" for c in
                                                    ("privileged-runc", "host-network", "host-mount", "no-limits")}
        no_limits = next(c for c in commands(fake, "docker", "create") if "--memory" not in c)
        assert "--runtime" not in no_limits
    else:
        assert failure and failure.code == 17 and words in failure.message
    if policy is not None and policy([])[0]:
        assert ["docker-api", "DELETE", "/containers/c0ffee?force=1"] in fake.calls  # removed as root


def test_every_verify_container_carries_limits_within_the_stacks_maximum(tmp_path):
    from host_verify.__main__ import verify_cpus

    assert verify_cpus(contract(), 500) == "0.500" and verify_cpus(contract(), 4000) == "1.000"
    ctx, fake = make_ctx(tmp_path)
    run_check(ctx, "isolation", "runsc")
    runs = commands(fake, "docker", "run")
    assert len(runs) == 2 and all(joined(r).count("--memory 256m --pids-limit 128 --cpus 1.000") == 1 for r in runs)


def test_the_policy_limits_are_proven_at_and_just_above_each_maximum(tmp_path):
    ctx, fake = make_ctx(tmp_path)
    results, failure, _ = run_check(ctx, "policy-limits")
    assert failure is None, failure
    assert ctx.facts.get("limits").to_json() == {"maxMemoryMiB": 1024, "maxPids": 256, "maxMilliCpus": 2000}
    creates = [joined(c) for c in commands(fake, "docker", "create")]
    assert any("--memory 1024m --pids-limit 256 --cpus 2.000" in c for c in creates)
    for above in ("--memory 1025m", "--pids-limit 257", "--cpus 2.001"):
        assert any(above in c for c in creates), above


def test_a_policy_that_allows_just_above_a_maximum_fails_the_limits_check(tmp_path):
    def lax_pids(args: list[str]) -> tuple[bool, str]:
        from tests.support.host_verify_fake import default_policy

        if args[args.index("--pids-limit") + 1] == "257":
            return True, ""
        return default_policy(args)

    ctx, _ = make_ctx(tmp_path, FakeHost(cni=tmp_path / "cni", policy=lax_pids))
    _, failure, _ = run_check(ctx, "policy-limits")
    assert failure and failure.code == 17 and "--pids-limit 257 (just above the maximum) refused" in failure.message
    assert ctx.facts.get("limits") is None


def test_a_policy_that_refuses_at_the_maximum_fails_the_limits_check(tmp_path):
    (tmp_path / "endpoint-policy.json").write_text(json.dumps(
        {"sandboxRuntimes": ["runsc"], "limits": {"maxMemoryMiB": 2048, "maxPids": 256, "maxMilliCpus": 2000}}))
    ctx, _ = make_ctx(tmp_path)
    _, failure, _ = run_check(ctx, "policy-limits")
    assert failure and "a create at every maximum" in failure.message and "1024 MiB" in failure.message


def test_a_policy_whose_cpu_maximum_is_not_the_stacks_fails(tmp_path):
    ctx, _ = make_ctx(tmp_path, max_millicpus=1500)
    _, failure, _ = run_check(ctx, "policy-limits")
    assert failure and "the stack's (1500 millicpus)" in failure.message


def test_an_unreadable_policy_configuration_fails_the_limits_check(tmp_path):
    (tmp_path / "endpoint-policy.json").write_text("{")
    ctx, _ = make_ctx(tmp_path)
    _, failure, _ = run_check(ctx, "policy-limits")
    assert failure and failure.code == 17 and "the policy's limits in" in failure.message


# ---------------------------------------------------------------- Docker per runtime


def test_the_kernel_is_read_in_the_probe_container_and_must_not_be_the_hosts(tmp_path):
    ctx, fake = make_ctx(tmp_path)
    results, failure, _ = run_check(ctx, "isolation", "runsc")
    assert failure is None and ctx.facts.get("guest_kernel", "runsc") == GUEST_KERNEL
    assert results["runtime-runsc-kernel"].detail == f"guest kernel {GUEST_KERNEL}, host kernel {HOST_KERNEL}"
    assert list(results)[0] == "runtime-runsc-kernel"  # judged before anything else
    fake.kernels["runsc"] = HOST_KERNEL
    _, failure, _ = run_check(ctx, "isolation", "runsc")
    assert failure and failure.code == 14 and "not sandboxed" in failure.message


def test_a_runtime_that_runs_no_container_fails_the_kernel_check(tmp_path):
    ctx, fake = make_ctx(tmp_path)
    fake.override = lambda argv: Result(125, "", "docker: Error response from daemon: shim failed\n") \
        if argv[0] == "docker" and "-d" in argv else None
    _, failure, _ = run_check(ctx, "isolation", "runsc")
    assert failure and failure.code == 14 and failure.check == "runtime-runsc-kernel" and "shim failed" in failure.message


def isolation(tmp_path: Path, **changes: object) -> tuple[dict[str, CheckResult], Failure | None, FakeHost, Context]:
    fake = FakeHost(cni=tmp_path / "cni")
    for key, value in changes.items():
        if key in ("outside",):
            continue
        setattr(fake, key, value)
    ctx, _ = make_ctx(tmp_path, fake, **({"outside": changes["outside"]} if "outside" in changes else {}))
    results, failure, _ = run_check(ctx, "isolation", "runsc")
    return results, failure, fake, ctx


def test_one_probe_container_on_the_peers_network_for_every_target(tmp_path):
    results, failure, fake, _ = isolation(tmp_path)
    assert failure is None
    probes = [c for c in commands(fake, "docker", "run") if PROBE in c]
    assert len(probes) == 1
    (probe,) = probes
    assert probe[probe.index("--network") + 1] == "functions-runtime-verify-runsc"
    targets = probe[probe.index(PROBE) + 2:]
    assert targets == [f"{DOCKER_PEER} 8080", "functions-runtime-verify-peer-runsc 8080", f"{OUTSIDE[0]} {OUTSIDE[1]}",
                       "169.254.169.254 80", f"{PRIVATE} 2376", f"{PRIVATE} 22"]
    assert status(results) == {"runtime-runsc-kernel": "passed", "reach-runsc-peer": "passed", "reach-runsc-outside": "passed",
                               "isolation-runsc-metadata": "passed", "isolation-runsc-host-endpoint": "passed",
                               "isolation-runsc-host-ssh": "passed"}
    # The peer and its network are removed as root (on the local socket).
    assert ["docker-api", "DELETE", "/networks/functions-runtime-verify-runsc"] in fake.calls[-2:]
    assert ["docker-api", "DELETE", "/containers/functions-runtime-verify-peer-runsc?force=1"] in fake.calls[-2:]


@pytest.mark.parametrize(
    "host_reaches, container_reaches, code, state",
    [(True, False, None, "passed"), (False, False, None, "skipped"), (True, True, 15, "failed")],
)
def test_isolation_probe_decision(tmp_path, host_reaches, container_reaches, code, state):
    fake_reaches = {("169.254.169.254", 80), (PRIVATE, 2376), (PRIVATE, 22)} if host_reaches else set()
    reach = {f"{DOCKER_PEER} 8080", f"{OUTSIDE[0]} {OUTSIDE[1]}"} | ({"169.254.169.254 80"} if container_reaches else set())
    results, failure, fake, _ = isolation(tmp_path, host_reaches=fake_reaches, container_reaches=reach)
    assert results["isolation-runsc-metadata"].status == state
    assert (failure.code if failure else None) == code
    if not host_reaches:
        probe = next(c for c in commands(fake, "docker", "run") if PROBE in c)
        assert "169.254.169.254 80" not in probe  # not probed: it would prove nothing


def test_a_sandbox_without_network_fails_the_positive_control(tmp_path):
    results, failure, _, _ = isolation(tmp_path, container_reaches=set())
    assert failure and failure.code == 15 and failure.check == "reach-runsc-peer"
    assert "the sandbox has no working network" in failure.message
    assert "isolation-runsc-metadata" not in results  # nothing blocked is judged without the control


def test_outside_unreachable_fails_and_none_is_reported_as_skipped(tmp_path):
    _, failure, _, _ = isolation(tmp_path, container_reaches={f"{DOCKER_PEER} 8080"})
    assert failure and failure.check == "reach-runsc-outside"
    results, failure, fake, _ = isolation(tmp_path / "none", outside=None)
    assert failure is None and results["reach-runsc-outside"].status == "skipped"
    assert "verify.outsideProbe is none" in results["reach-runsc-outside"].detail


def test_peer_unreachable_by_name_is_reported_not_failed(tmp_path):
    reach = {f"{DOCKER_PEER} 8080", f"{OUTSIDE[0]} {OUTSIDE[1]}"}
    (tmp_path / "a").mkdir()
    results, failure, _, ctx = isolation(tmp_path / "a", container_reaches=reach)
    assert failure is None and ctx.facts.get("dns", "runsc") is False
    results, failure, _, ctx = isolation(tmp_path)
    assert ctx.facts.get("dns", "runsc") is True


def test_a_probe_container_that_does_not_run_fails_naming_how_to_rerun_it(tmp_path):
    fake = FakeHost(cni=tmp_path / "cni")
    fake.override = lambda argv: Result(125, "", "docker: Error response from daemon: boom\n") if PROBE in argv else None
    ctx, _ = make_ctx(tmp_path, fake)
    _, failure, _ = run_check(ctx, "isolation", "runsc")
    assert failure and failure.code == 14 and "docker: Error response from daemon: boom" in failure.message
    assert "docker run --rm --runtime runsc" in failure.message


def test_probe_result_reads_one_line_per_target():
    out = "kernel 4.4.0\n10.0.0.1 80 unreachable\n10.0.0.2 80 reachable\n"
    assert probe_result(out, "10.0.0.1", 80) == "unreachable"
    assert probe_result(out, "10.0.0.2", 80) == "reachable"
    assert probe_result("oops\nsecond", "10.0.0.3", 80) == "probe failed: oops second"


def _lines(word: str, upto: int, tail: str = "") -> str:
    return "".join(f"{word} {n}\n" for n in range(1, upto + 1)) + tail


@pytest.mark.parametrize(
    "started, answers, code, words",
    [
        (127, True, None, "127 of 256 sleepers started under --pids-limit 128"),
        (256, True, 18, "256 of 256 started"),
        (0, True, 18, "the bomb container to run"),
        (127, False, 18, "the host's dockerd to answer after the bomb"),
    ],
)
def test_pid_limit_check_reads_the_effect(tmp_path, started, answers, code, words):
    fake = FakeHost(cni=tmp_path / "cni", pids_started=started)
    if not answers:
        fake.override = lambda argv: Result(0, "", "connection refused") if argv[-1] == "/_ping" else None
    ctx, _ = make_ctx(tmp_path, fake)
    results, failure, _ = run_check(ctx, "limits-pids", "runsc")
    assert (failure.code if failure else None) == code
    assert words in (failure.message if failure else results["limits-runsc-pids"].detail)
    run = commands(fake, "docker", "run")[0]
    assert run[-1] == str(128 * BOMB_FACTOR) and run[run.index("--network") + 1] == "none"


@pytest.mark.parametrize(
    "held, code, words",
    [(128 * 1024 * 1024, None, "held at most 128 MiB of 512 MiB under --memory 256m"),
     (1024 * 1024 * 1024, 18, "MiB held of 512 MiB"), (8, 18, "the hog container to run")],
)
def test_memory_limit_check_reads_the_effect(tmp_path, held, code, words):
    (tmp_path / "meminfo").write_text("MemTotal: 4000000 kB\nMemAvailable: 2048000 kB\n")
    ctx, _ = make_ctx(tmp_path, FakeHost(cni=tmp_path / "cni", memory_held=held))
    results, failure, _ = run_check(ctx, "limits-memory", "runsc")
    assert (failure.code if failure else None) == code
    assert words in (failure.message if failure else results["limits-runsc-memory"].detail)
    if not failure:
        assert "host MemAvailable 2000 MiB before" in results["limits-runsc-memory"].detail


def test_last_count_reads_the_last_numbered_line():
    assert last_count(_lines("started", 5, "sh: can't fork\n"), "started") == 5
    assert last_count("nothing\n", "held") == 0


def test_cold_start_is_the_median_of_the_runs(tmp_path):
    ctx, fake = make_ctx(tmp_path, cold_start_runs=5)
    results, failure, _ = run_check(ctx, "cold-start", "runsc")
    assert failure is None and len(commands(fake, "docker", "run")) == 5
    assert ctx.facts.get("cold_start", "runsc").runs == 5 and "median" in results["cold-start-runsc"].detail
    fake.override = lambda argv: Result(125, "", "docker: failed\n") if "run" in argv else None
    _, failure, _ = run_check(ctx, "cold-start", "runsc")
    assert failure and failure.code == 16


@pytest.mark.parametrize("values, expected", [([5, 1, 3], 3), ([9], 9), ([4, 2, 8, 6, 10], 6)])
def test_median(values, expected):
    assert median(values) == expected


# ---------------------------------------------------------------- containerd directly


@pytest.mark.parametrize(
    "client, runtime, gvisor_runsc, expected",
    [
        ("ctr", "runc", "release", ["--runtime", "io.containerd.runc.v2"]),
        ("ctr", "runsc", "release", ["--runtime", "io.containerd.runc.v2", "--runc-binary", RUNSC]),
        ("ctr", "kata", "release", ["--runtime", "io.containerd.kata.v2"]),
        ("nerdctl", "runsc", "release", "io.containerd.runsc.v1"),
        ("nerdctl", "runsc", "debian", RUNSC),
        ("nerdctl", "kata", "debian", "io.containerd.kata.v2"),
        ("nerdctl", "runc", "debian", "io.containerd.runc.v2"),
    ],
)
def test_each_containerd_client_names_each_runtime(tmp_path, client, runtime, gvisor_runsc, expected):
    ctx, _ = make_ctx(tmp_path, gvisor_runsc=gvisor_runsc)
    got = ctx.ctr.runtime_args(runtime) if client == "ctr" else ctx.nerdctl.runtime(runtime)
    assert got == expected


def test_ctr_runs_in_verifys_namespace_on_the_cni_network_with_runsc_through_the_runc_shim(tmp_path):
    ctx, fake = make_ctx(tmp_path)
    results, failure, _ = run_check(ctx, "ctr", "runsc")
    assert failure is None, failure
    (peer,) = fake.started
    assert peer[:5] == ["ctr", "--namespace", "functions-runtime-verify", "run", "--rm"] and "--cni" in peer
    assert peer[peer.index("--runc-binary") + 1] == RUNSC
    probe = next(c for c in commands(fake, "ctr", "run"))
    assert probe[probe.index(PROBE) + 2:] == [f"{CTR_PEER} 8080", f"{OUTSIDE[0]} {OUTSIDE[1]}", "169.254.169.254 80",
                                              f"{PRIVATE} 2376", f"{PRIVATE} 22"]
    assert status(results) == {"runtime-ctr-runsc-kernel": "passed", "reach-ctr-runsc-peer": "passed",
                               "reach-ctr-runsc-outside": "passed", "isolation-ctr-runsc-metadata": "passed",
                               "isolation-ctr-runsc-host-endpoint": "passed", "isolation-ctr-runsc-host-ssh": "passed"}
    # the peer's task is killed from the host; `ctr run --rm` removed the rest
    assert ["task", "ls"] in [c[3:] for c in commands(fake, "ctr")]
    assert not [c for c in commands(fake, "ctr", "delete")]


def test_what_a_killed_ctr_run_left_is_removed(tmp_path):
    ctx, fake = make_ctx(tmp_path)
    left = "functions-runtime-verify-peer-ctr-runsc"
    fake.override = lambda argv: (Result(0, f"{left}\n") if argv[3:5] == ["container", "ls"] else
                                  Result(0, f"TASK PID STATUS\n{left} 4242 RUNNING\n") if argv[3:5] == ["task", "ls"]
                                  else None)
    ctx.ctr.remove(left)
    assert ["kill", "-KILL", "4242"] in fake.calls
    assert [c[3:] for c in commands(fake, "ctr")][-2:] == [["task", "delete", left], ["container", "rm", left]]


@pytest.mark.parametrize("client", ["ctr", "nerdctl"])
def test_a_containerd_sandbox_with_its_own_kernel_and_a_working_network_passes(tmp_path, client):
    ctx, _ = make_ctx(tmp_path)
    results, failure, _ = run_check(ctx, client, "runsc")
    assert failure is None, failure
    assert results[f"runtime-{client}-runsc-kernel"].detail == f"guest kernel {GUEST_KERNEL}, host kernel {HOST_KERNEL}"


def test_a_containerd_sandbox_on_the_hosts_kernel_fails(tmp_path):
    ctx, fake = make_ctx(tmp_path)
    fake.kernels["runsc"] = HOST_KERNEL
    _, failure, _ = run_check(ctx, "ctr", "runsc")
    assert failure and failure.code == 19 and "a guest kernel different from the host's" in failure.message


def test_a_runc_container_through_ctr_is_held_to_the_filter_not_to_a_kernel(tmp_path):
    ctx, _ = make_ctx(tmp_path)
    results, failure, _ = run_check(ctx, "ctr", "runc")
    assert failure is None and results["runtime-ctr-runc-kernel"].detail == f"kernel {HOST_KERNEL}"
    assert results["isolation-ctr-runc-metadata"].status == "passed"


def test_a_containerd_container_without_network_fails_its_positive_control(tmp_path):
    ctx, fake = make_ctx(tmp_path)
    fake.container_reaches = set()
    _, failure, _ = run_check(ctx, "nerdctl", "runsc")
    assert failure and failure.check == "reach-nerdctl-runsc-peer" and failure.code == 15


def test_a_containerd_container_that_does_not_start_fails_naming_the_client(tmp_path):
    ctx, fake = make_ctx(tmp_path)
    fake.override = lambda argv: Result(1, "", "ctr: failed to create shim task\n") if argv[0] == "ctr" and PROBE in argv else None
    _, failure, _ = run_check(ctx, "ctr", "runsc")
    assert failure and failure.code == 19 and failure.check == "runtime-ctr-runsc-kernel"
    assert "ctr run --runtime runsc to succeed" in failure.message and "failed to create shim task" in failure.message


def test_a_ctr_peer_without_an_address_fails_the_peer_check(tmp_path):
    ctx, fake = make_ctx(tmp_path)
    fake.start = lambda argv: type("P", (), {"poll": lambda self: 1, "wait": lambda self, timeout=None: 1,
                                             "kill": lambda self: None, "last_line": lambda self: ""})()  # type: ignore[method-assign]
    _, failure, _ = run_check(ctx, "ctr", "runsc")
    assert failure and failure.code == 19 and failure.check == "reach-ctr-runsc-peer"
    assert "no address after 0 s" in failure.message


def test_a_ctr_peer_whose_run_ends_before_it_answers_fails_at_once_with_what_it_printed(tmp_path):
    """A dead peer is not waited on for the whole bound, and the message
    carries its last line (before, its output went nowhere)."""
    ctx, fake = make_ctx(tmp_path)
    fake.host_reaches.discard((CTR_PEER, 8080))
    start = fake.start

    def ended(argv):
        proc = start(argv)
        proc.code, proc.printed = 1, "ctr: failed to start shim: runsc: exit status 128\n"
        return proc

    fake.start = ended  # type: ignore[method-assign]
    clock = fake.clock
    _, failure, _ = run_check(ctx, "ctr", "runsc")
    assert failure and failure.check == "reach-ctr-runsc-peer" and failure.code == 19
    assert "its run ended (exit 1): ctr: failed to start shim: runsc: exit status 128" in failure.message
    assert fake.clock - clock < 30_000


def test_a_ctr_peer_that_never_answers_is_bounded_by_wall_time_and_says_what_it_printed(tmp_path):
    ctx, fake = make_ctx(tmp_path)
    fake.host_reaches.discard((CTR_PEER, 8080))
    start = fake.start

    def silent(argv):
        proc = start(argv)
        proc.printed = "time=... level=warning msg=\"cni setup slow\"\n"
        return proc

    fake.start = silent  # type: ignore[method-assign]
    clock = fake.clock
    _, failure, _ = run_check(ctx, "ctr", "runsc")
    assert failure and failure.check == "reach-ctr-runsc-peer"
    assert f"no answer after {CNI_PEER_WAIT} s; its run printed: time=... level=warning" in failure.message
    waited_ms = fake.clock - clock
    assert CNI_PEER_WAIT * 1000 <= waited_ms < (CNI_PEER_WAIT + 60) * 1000


def test_nerdctl_is_skipped_and_reported_when_the_stack_says_so(tmp_path):
    ctx, fake = make_ctx(tmp_path, nerdctl=False)
    results, failure, _ = run_check(ctx, "nerdctl-image")
    assert failure is None and results["runtime-nerdctl"].status == "skipped"
    assert BY_NAME["nerdctl"].runtimes(ctx) == () and not commands(fake, "nerdctl")


def test_the_verify_image_reaches_nerdctl_through_a_saved_archive(tmp_path):
    ctx, fake = make_ctx(tmp_path)
    results, failure, _ = run_check(ctx, "nerdctl-image")
    assert failure is None and results["nerdctl-image"].status == "passed"
    (save,) = commands(fake, "docker", "save")
    (load,) = commands(fake, "nerdctl", "load")
    assert load[1:3] == ["--namespace", "functions-runtime-verify"] and save[save.index("-o") + 1] == load[-1]


def test_runsc_on_the_hosts_network_stack_is_skipped_past_docker_with_the_reason(tmp_path):
    ctx, _ = make_ctx(tmp_path, allow_host_network=True)
    ctx.facts.set("network", "host", "runsc")
    assert containerd_runtimes(ctx) == ("runc",)
    results, _, _ = run_check(ctx, "containerd-skips")
    assert results["runtime-containerd-runsc"].status == "skipped" and "--network=host" in results[
        "runtime-containerd-runsc"].detail
    ctx.facts.set("network", "sandbox", "runsc")
    assert containerd_runtimes(ctx) == ("runc", "runsc") and run_check(ctx, "containerd-skips")[0] == {}


# ---------------------------------------------------------------- versions


@pytest.mark.parametrize(
    "line, version",
    [("runsc version 0.0~20240729.0", "release-20240729.0"), ("runsc version release-20260831.0", "release-20260831.0"),
     ("runc version 1.1.15+ds1", "1.1.15"), ("containerd github.com/containerd/containerd 1.7.24~ds1 x", "1.7.24"),
     ("no version here", None)],
)
def test_version_of(tmp_path, line, version):
    fake = FakeHost(cni=tmp_path)
    fake.override = lambda argv: Result(0, line + "\n")
    assert version_of(fake, ["x", "--version"]) == version


def test_upstream_version_drops_epoch_and_debian_suffix():
    assert upstream_version("5:26.1.5+dfsg1-9") == "26.1.5"


# ---------------------------------------------------------------- name lookup


def test_a_container_on_the_default_bridge_resolves_the_name_its_nameserver_gives_the_host(tmp_path):
    ctx, fake = make_ctx(tmp_path)
    results, failure, _ = run_check(ctx, "name-lookup", "runsc")
    assert failure is None, failure
    assert results["dns-runsc"].detail == f"{NAME_PROBE} is 192.0.2.10 through 192.0.2.53, as the host is told"
    (run,) = commands(fake, "docker", "run")
    assert "--network" not in run  # the default bridge, as the consumer side starts a function
    assert ["resolve", "192.0.2.53", NAME_PROBE] in fake.calls


def test_a_sandbox_that_cannot_resolve_what_the_host_resolves_fails_naming_both(tmp_path):
    ctx, fake = make_ctx(tmp_path)
    fake.container_resolves["runsc"] = []
    _, failure, _ = run_check(ctx, "name-lookup", "runsc")
    assert failure and failure.check == "dns-runsc" and failure.code == 15
    assert f"a runsc container to resolve {NAME_PROBE} through its nameserver 192.0.2.53 (the host gets 192.0.2.10" in (
        failure.message)
    assert "NXDOMAIN" in failure.message


def test_a_private_nameserver_is_named_as_the_reason(tmp_path):
    ctx, fake = make_ctx(tmp_path)
    fake.nameserver = "10.0.2.3"
    fake.host_resolves[("10.0.2.3", NAME_PROBE)] = ["192.0.2.10"]
    fake.container_resolves["runsc"] = []
    _, failure, _ = run_check(ctx, "name-lookup", "runsc")
    assert failure and "10.0.2.3 is not an internet address" in failure.message
    assert "point the host's /etc/resolv.conf at resolvers on the internet" in failure.message


def test_a_name_the_nameserver_does_not_answer_for_the_host_either_is_skipped_with_the_reason(tmp_path):
    ctx, fake = make_ctx(tmp_path)
    fake.host_resolves.clear()
    fake.container_resolves["runsc"] = []
    results, failure, _ = run_check(ctx, "name-lookup", "runsc")
    assert failure is None and results["dns-runsc"].status == "skipped"
    assert "gives the host no address" in results["dns-runsc"].detail


def test_name_lookups_are_skipped_when_the_stack_says_none(tmp_path):
    ctx, fake = make_ctx(tmp_path, name_probe=None)
    results, failure, _ = run_check(ctx, "name-lookup", "runsc")
    assert failure is None and results["dns-runsc"].status == "skipped" and not commands(fake, "docker", "run")


@pytest.mark.parametrize(
    "out, expected",
    [
        ("nameserver 192.0.2.53\nServer:\t\t192.0.2.53\nAddress:\t192.0.2.53:53\n\nName:\tx.test\nAddress: 192.0.2.10\n"
         "exit 0\n", ("192.0.2.53", ["192.0.2.10"])),
        # busybox before 1.29 numbers its addresses
        ("nameserver 1.1.1.1\nServer: 1.1.1.1\nAddress 1: 1.1.1.1\n\nName: x.test\nAddress 1: 192.0.2.10\n"
         "Address 2: 192.0.2.11\n", ("1.1.1.1", ["192.0.2.10", "192.0.2.11"])),
        # gVisor on a user network: Docker's embedded DNS is not reachable
        ("nameserver 127.0.0.11\nnslookup: write to '127.0.0.11': Connection refused\nexit 1\n", ("127.0.0.11", [])),
        ("Server:\t\t8.8.8.8\n** server can't find x.test: NXDOMAIN\nexit 1\n", (None, [])),
    ],
)
def test_lookup_result_reads_busybox_nslookup(out, expected):
    assert lookup_result(out) == expected


# ---------------------------------------------------------------- dockerd's own connections


def test_dockerd_egress_passes_when_the_filter_refuses_the_private_address_and_the_internet_connects(tmp_path):
    ctx, fake = make_ctx(tmp_path)
    results, failure, _ = run_check(ctx, "dockerd-egress")
    assert failure is None
    assert results["dockerd-egress"].detail == "reached 192.0.2.10:8080; refused 10.0.2.15:2376"
    # Both pulls as root on the local socket, never through the endpoint (the policy would refuse them).
    pulls = commands(fake, "docker", "pull")
    assert [p[-1] for p in pulls] == ["192.0.2.10:8080/functions-runtime-egress-probe:none",
                                      "10.0.2.15:2376/functions-runtime-egress-probe:none"]
    assert all(p[1:3] == ["-H", f"unix://{ctx.paths.docker_socket}"] for p in pulls)


def test_dockerd_egress_fails_when_dockerd_connects_to_the_hosts_private_address(tmp_path):
    ctx, fake = make_ctx(tmp_path)
    fake.dockerd_refused = set()
    _, failure, _ = run_check(ctx, "dockerd-egress")
    assert failure and failure.code == 15
    assert "found it connected" in failure.message and "nft list set inet functions_runtime dockerd" in failure.message


def test_dockerd_egress_fails_when_the_filter_refuses_the_internet_too(tmp_path):
    ctx, fake = make_ctx(tmp_path)
    fake.dockerd_refused.add("192.0.2.10:8080")
    _, failure, _ = run_check(ctx, "dockerd-egress")
    assert failure and failure.code == 15 and "positive control" in failure.message


def test_dockerd_egress_without_an_outside_probe_says_it_has_no_positive_control(tmp_path):
    ctx, fake = make_ctx(tmp_path, outside=None)
    results, failure, _ = run_check(ctx, "dockerd-egress")
    assert failure is None and "no positive control" in results["dockerd-egress"].detail
    assert len(commands(fake, "docker", "pull")) == 1


@pytest.mark.parametrize(
    ("code", "output", "result"),
    [
        (1, 'Error response from daemon: Get "https://10.0.0.2:443/v2/": dial tcp 10.0.0.2:443: connect: no route to host',
         "refused"),
        (1, 'Error response from daemon: Get "https://1.1.1.1:443/v2/": EOF', "connected"),
        (1, "Error response from daemon: Get \"https://1.1.1.1:443/v2/\": remote error: tls: certificate required",
         "connected"),
        (0, "1.1.1.1:443/functions-runtime-egress-probe:none", "connected"),
        # A dial that failed some other way proves nothing either way: its own words.
        (1, 'Error response from daemon: Get "https://1.1.1.1:443/v2/": dial tcp 1.1.1.1:443: i/o timeout',
         'Error response from daemon: Get "https://1.1.1.1:443/v2/": dial tcp 1.1.1.1:443: i/o timeout'),
        (1, "Cannot connect to the Docker daemon at unix:///run/docker.sock",
         "Cannot connect to the Docker daemon at unix:///run/docker.sock"),
    ],
)
def test_pull_result_reads_how_far_dockerds_dial_got(code, output, result):
    assert pull_result(Result(code, "", output)) == result
