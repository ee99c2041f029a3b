"""scripts/configure_runtime.sh and gVisor: which runsc Docker runs, and on
which network stack.

Proves: daemon.json names the chosen runsc by its path; a runsc that cannot
use gVisor's own network stack on this kernel is refused, in one line naming
the host, the runsc version, the kernel and what to do, before anything on
the host is written (the whole `main` runs: no TLS file, no daemon.json, no
unit, no policy file); with gvisor.allowHostNetworkStack: true the same host
falls back to runsc --network=host, says so on stderr and in its JSON line;
a fixed runsc or a kernel that hides the file keeps the netstack; a missing
runsc is refused the same way.

The test doubles: runsc is a shell script that prints a version and, for
Debian's 2024 build, holds the /proc path that build checks (all configure
reads of the binary); `unshare` is a script on PATH that answers "does a new
network namespace show /proc/sys/net/core/rmem_default?" as Linux 6.11+
(yes) or an older kernel (no) would. They prove configure's decision, not
gVisor's behaviour or the kernel's: the hostlab runs Debian's real runsc on
Debian 13's 6.12 kernel.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import pytest

from tests.scripts.helpers import (
    catalog_rows,
    install_fake_kata,
    make_pki,
    release_runsc_path,
    run_bash,
    write_catalog,
    write_runsc,
)
from tests.scripts.test_configure import policy_env

DEBIAN_VERSION = "0.0~20240729.0"
PLAN = 'plan_runtimes; render_daemon_json "${RUNTIMES[0]}" "${RUNTIMES[@]}"'


def fake_unshare(tmp_path: Path, file_visible: bool) -> str:
    """A PATH whose `unshare` answers as a kernel that shows (6.11+) or hides
    rmem_default in a new network namespace."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir(exist_ok=True)
    unshare = bin_dir / "unshare"
    unshare.write_text(f"#!/bin/sh\nexit {0 if file_visible else 1}\n")
    unshare.chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


@pytest.fixture
def host(fr_env, tmp_path):
    """Every path configure writes in tmp_path; the repository's plugin in
    FR_ROOT; the catalog as the project's; Debian's runsc (the 2024 build)
    at FR_DEBIAN_RUNSC, the release's (fixed) at its versioned path."""
    env = policy_env(
        fr_env,
        tmp_path,
        FR_DOCKER_DIR=str(tmp_path / "etc-docker"),
        FR_SYSTEMD_DIR=str(tmp_path / "etc-systemd"),
        FR_KATA_CONFIG=str(tmp_path / "etc-kata" / "configuration.toml"),
        FR_NERDCTL_CONFIG=str(tmp_path / "etc-nerdctl" / "nerdctl.toml"),
        FR_AUTHZ_CONFIG=str(tmp_path / "etc-fr" / "endpoint-policy.json"),
        FR_AUTHZ_DRAIN_FILE=str(tmp_path / "var-fr" / "draining"),
        PATH=fake_unshare(tmp_path, file_visible=True),
    )
    write_catalog(tmp_path / "fr", catalog_rows())
    write_runsc(Path(fr_env["FR_DEBIAN_RUNSC"]), version=DEBIAN_VERSION, root_ns_check=True)
    write_runsc(release_runsc_path(fr_env))
    return env


def written(env) -> list[str]:
    """Everything configure may write, that exists."""
    keys = ("FR_DOCKER_DIR", "FR_SYSTEMD_DIR", "FR_KATA_CONFIG", "FR_NERDCTL_CONFIG", "FR_AUTHZ_CONFIG",
            "FR_AUTHZ_DRAIN_FILE", "FR_ENDPOINT_COMMAND", "FR_CNI_CONFLIST")
    found = [env[k] for k in keys if Path(env[k]).exists()]
    found += [str(p) for p in Path(env["FR_ROOT"], "state").iterdir()]
    return found


def run_main(env, tmp_path):
    """The whole configure step as the program runs it (as root: CI is)."""
    if os.geteuid() != 0:
        pytest.skip("configure's main requires root: run as root (CI does)")
    pki = make_pki(tmp_path / "pki")
    stdin = pki.ca + pki.ca + pki.server_cert + pki.server_key
    return run_bash("main", env, stdin=stdin, script="configure_runtime.sh")


def test_debians_runsc_on_a_kernel_that_shows_rmem_default_is_refused_and_nothing_changes(host, tmp_path):
    env = {**host, "GVISOR_RUNSC": "debian"}
    r = run_main(env, tmp_path)
    assert r.rc != 0 and r.stdout == ""
    failed = [line for line in r.stderr.splitlines() if "FAILED" in line]
    assert len(failed) == 1, r.stderr
    line = failed[0]
    assert "FAILED on host test-host-1" in line
    assert f"{env['FR_DEBIAN_RUNSC']} (runsc version {DEBIAN_VERSION})" in line
    assert f"on kernel {platform.release()}" in line
    assert "google/gvisor#10704" in line and "socket calls reach the host kernel" in line
    assert "set functions-runtime:gvisor.runsc to release" in line
    assert "functions-runtime:gvisor.allowHostNetworkStack: true" in line
    assert written(env) == [], "a refusal must change nothing on the host"


def test_with_the_opt_in_debians_runsc_runs_on_host_networking_and_says_so(host):
    env = {**host, "GVISOR_RUNSC": "debian", "GVISOR_ALLOW_HOST_NETWORK": "true"}
    r = run_bash(PLAN + '; echo "network=$RUNSC_NETWORK"', env, script="configure_runtime.sh")
    assert r.rc == 0, r.stderr
    daemon, network = r.stdout.rsplit("\n", 2)[0], r.stdout.strip().splitlines()[-1]
    assert json.loads(daemon)["runtimes"]["runsc"] == {
        "path": env["FR_DEBIAN_RUNSC"],
        "runtimeArgs": ["--platform=systrap", "--network=host"],
    }
    assert network == "network=host"
    warning = [line for line in r.stderr.splitlines() if "WARNING" in line]
    assert len(warning) == 1 and "--network=host" in warning[0]
    assert "as functions-runtime:gvisor.allowHostNetworkStack allows" in warning[0]
    assert "say network 'host'" in warning[0]


def test_the_opt_in_is_reported_in_configures_json_line(host):
    env = {**host, "GVISOR_RUNSC": "debian", "GVISOR_ALLOW_HOST_NETWORK": "true"}
    r = run_bash("plan_runtimes; print_result", env, script="configure_runtime.sh")
    assert r.rc == 0, r.stderr
    assert json.loads(r.stdout)["runscNetwork"] == "host"


def test_the_pinned_release_keeps_gvisors_own_network_stack_on_the_same_kernel(host):
    """The release does not hold the root-namespace check: no opt-in needed."""
    r = run_bash(PLAN, host, script="configure_runtime.sh")
    assert r.rc == 0, r.stderr
    assert json.loads(r.stdout)["runtimes"]["runsc"] == {
        "path": str(release_runsc_path(host)),
        "runtimeArgs": ["--platform=systrap"],
    }
    assert "WARNING" not in r.stderr


def test_on_a_kernel_that_hides_rmem_default_debians_runsc_keeps_its_network_stack(host, tmp_path):
    env = {**host, "GVISOR_RUNSC": "debian", "PATH": fake_unshare(tmp_path, file_visible=False)}
    r = run_bash(PLAN + '; echo "network=$RUNSC_NETWORK"', env, script="configure_runtime.sh")
    assert r.rc == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "network=sandbox"
    assert "--network=host" not in r.stdout


def test_a_release_with_the_old_check_is_refused_with_a_catalog_fix(host):
    """Should a pinned release still carry the check, the fix is the catalog's."""
    write_runsc(release_runsc_path(host), root_ns_check=True)
    r = run_bash("plan_runtimes", host, script="configure_runtime.sh")
    assert r.rc != 0
    assert "pin a gVisor release from August 2024 or later in the catalog" in r.stderr
    assert "gvisor.allowHostNetworkStack: true" in r.stderr


def test_a_missing_runsc_is_refused_naming_the_setting_and_nothing_changes(host, tmp_path):
    release_runsc_path(host).unlink()
    r = run_main(host, tmp_path)
    assert r.rc != 0 and r.stdout == ""
    assert f"an executable runsc at {release_runsc_path(host)} (functions-runtime:gvisor.runsc is release)" in r.stderr
    assert "re-run the install step" in r.stderr
    assert written(host) == []


def test_a_vm_stack_asks_nothing_of_runsc(host, tmp_path):
    """No gVisor registered: neither runsc nor its network is looked at."""
    release_runsc_path(host).unlink()
    kvm = tmp_path / "cpuinfo-vmx"
    kvm.write_text("flags\t\t: fpu vmx sse2\n")
    env = {**host, "ISOLATION": "vm", "FR_DEV_KVM": "/dev/null", "FR_CPUINFO": str(kvm)}
    install_fake_kata(tmp_path)  # its `check` passes
    r = run_bash('plan_runtimes; echo "${RUNTIMES[*]} network=$RUNSC_NETWORK"', env, script="configure_runtime.sh")
    assert r.rc == 0, r.stderr
    assert r.stdout.strip() == "kata network="


def test_a_missing_opt_in_fails_closed(host):
    r = run_bash("check_inputs", {**host, "GVISOR_ALLOW_HOST_NETWORK": ""}, script="configure_runtime.sh")
    assert r.rc != 0 and "variable GVISOR_ALLOW_HOST_NETWORK to be set" in r.stderr
