"""scripts/configure_runtime.sh: what it writes, without touching /etc.

Proves: daemon.json is valid JSON with "hosts" (fd:// and the private
address), mutual TLS, the runtimes per isolation and KVM, the default runtime,
no-new-privileges/live-restore/icc; when a Debian trixie `dockerd` is given in
FR_TEST_DOCKERD, `dockerd --validate` accepts it (and rejects the
non-existent "tls-min-version" key, which is why the file does not carry it);
the docker.service drop-in clears ExecStart and runs dockerd without -H; the
socket drop-in is root-only; TLS material lands with a 0600 key and a second
run changes nothing. The endpoint policy: daemon.json names the plugin;
the configuration written is what the plugin loads (limits, revocations,
common names with spaces and quotes); the unit starts the plugin before
dockerd and restarts it; a second run changes nothing and a revocation
rewrites only the configuration (no restart); the operator command drains,
resumes and reports for real. Kata: `kata-runtime check` is asked about
the chosen hypervisor's configuration (qemu or clh, not whichever one is in
force), before anything is written; that file is the one put in force; a
failing check on a vm host stops configure with nothing changed, naming the
hypervisor and the file; clh is logged as an experiment.
Does not prove: that dockerd starts and serves mTLS or asks the plugin (the
hostlab does, and verify_host.sh checks it on every host), nor the systemctl
restart logic.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from components.contract import CNI_BRIDGE, CNI_NETWORK, CNI_SUBNET, DOCKERD_CGROUP_SET, HOST_FILTER_TABLE
from endpoint_authz.rules import load_config
from tests.scripts.helpers import (
    catalog_rows,
    install_fake_kata,
    kvm_env,
    make_pki,
    release_runsc_path,
    run_bash,
    write_catalog,
    write_runsc,
)

ROOT = Path(__file__).resolve().parents[2]

NET = {"PRIVATE_ADDRESS": "10.0.0.2", "ENDPOINT_PORT": "2376"}


def daemon_json(fr_env, tmp_path, isolation="sandbox", kvm=False, kata=False):
    """configure's daemon.json, with gVisor's release installed as the
    install step leaves it (a stand-in runsc at its versioned path)."""
    write_catalog(tmp_path / "fr", catalog_rows())
    write_runsc(release_runsc_path(fr_env))
    if kata:
        install_fake_kata(tmp_path)  # `kata-runtime check` passes
    env = {
        **fr_env,
        **NET,
        **kvm_env(tmp_path, kvm),
        "ISOLATION": isolation,
        "FR_DOCKER_DIR": str(tmp_path / "docker"),
    }
    r = run_bash(
        'plan_runtimes; render_daemon_json "${RUNTIMES[0]}" "${RUNTIMES[@]}"',
        env,
        script="configure_runtime.sh",
    )
    assert r.rc == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize(
    ("isolation", "kvm", "kata", "default", "runtimes"),
    [
        ("sandbox", False, False, "runsc", {"runsc"}),
        ("sandbox", True, True, "kata", {"kata", "runsc"}),
        ("sandbox", False, True, "runsc", {"runsc"}),  # Kata installed but KVM gone: not registered
        ("vm", True, True, "kata", {"kata"}),
    ],
)
def test_daemon_json_per_isolation(fr_env, tmp_path, isolation, kvm, kata, default, runtimes):
    d = daemon_json(fr_env, tmp_path, isolation, kvm, kata)
    assert d["hosts"] == ["fd://", "tcp://10.0.0.2:2376"]
    assert d["metrics-addr"] == "10.0.0.2:9323"  # dockerd's metrics: the private address only
    assert d["tls"] is True and d["tlsverify"] is True
    assert d["tlskey"].endswith("/tls/server-key.pem")
    assert d["default-runtime"] == default
    assert set(d["runtimes"]) == runtimes
    if "runsc" in runtimes:
        # The release's runsc by its versioned path (gvisor.runsc: release, the default).
        assert d["runtimes"]["runsc"] == {
            "path": str(release_runsc_path(fr_env)),
            "runtimeArgs": ["--platform=systrap"],
        }
    if "kata" in runtimes:
        assert d["runtimes"]["kata"] == {"runtimeType": "io.containerd.kata.v2"}
    assert d["no-new-privileges"] is True and d["live-restore"] is True and d["icc"] is False
    assert d["log-driver"] == "json-file" and d["log-opts"]["max-file"] == "3"


def test_daemon_json_runs_debians_runsc_when_the_stack_chose_it(fr_env, tmp_path):
    write_catalog(tmp_path / "fr", catalog_rows())
    debian = write_runsc(Path(fr_env["FR_DEBIAN_RUNSC"]), version="0.0~20240729.0")
    env = {**fr_env, **NET, "GVISOR_RUNSC": "debian", "FR_DOCKER_DIR": str(tmp_path / "docker")}
    r = run_bash('plan_runtimes; render_daemon_json "${RUNTIMES[0]}" "${RUNTIMES[@]}"', env, script="configure_runtime.sh")
    assert r.rc == 0, r.stderr
    assert json.loads(r.stdout)["runtimes"]["runsc"]["path"] == str(debian)


DOCKERD = os.environ.get("FR_TEST_DOCKERD") or shutil.which("dockerd")


@pytest.mark.skipif(
    not DOCKERD, reason="no dockerd here; set FR_TEST_DOCKERD to Debian trixie's /usr/sbin/dockerd"
)
def test_dockerd_validates_rendered_daemon_json(fr_env, tmp_path):
    pki = make_pki(tmp_path / "pki")
    d = daemon_json(fr_env, tmp_path)
    d.update(
        tlscacert=str(pki.directory / "ca.pem"),
        tlscert=str(pki.directory / "server.pem"),
        tlskey=str(pki.directory / "server.key"),
    )
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps(d))
    env = {**os.environ, "PATH": f"{os.path.dirname(DOCKERD)}:{os.environ['PATH']}"}
    ok = subprocess.run(
        [DOCKERD, "--validate", "--config-file", str(path)], capture_output=True, text=True, env=env
    )
    assert ok.returncode == 0, ok.stderr
    path.write_text(json.dumps({**d, "tls-min-version": "1.2"}))
    bad = subprocess.run(
        [DOCKERD, "--validate", "--config-file", str(path)], capture_output=True, text=True, env=env
    )
    assert bad.returncode != 0 and "tls-min-version" in bad.stderr


def test_docker_drop_in_replaces_exec_start_without_h(fr_env):
    r = run_bash("render_docker_drop_in", {**fr_env, **NET}, script="configure_runtime.sh")
    lines = r.stdout.splitlines()
    starts = [line for line in lines if line.startswith("ExecStart=")]
    assert starts == ["ExecStart=", "ExecStart=/usr/sbin/dockerd"]
    # dockerd starts after the policy plugin (it refuses to start without it),
    # and only wants it: restarting the plugin must not restart dockerd.
    assert "After=network-online.target containerd.service functions-runtime-authz.service" in lines
    assert "Wants=network-online.target functions-runtime-authz.service" in lines
    assert not any(line.startswith(("Requires=", "BindsTo=")) for line in lines)
    pre = next(line for line in lines if line.startswith("ExecStartPre="))
    assert "ip -o address show to 10.0.0.2" in pre
    # systemd expands $$ to $; a single $ would be a systemd variable.
    assert "$$((i+1))" in pre and "$i" not in pre.replace("$$i", "")


def test_docker_drop_in_puts_dockerd_in_the_host_filters_set(fr_env):
    """Each dockerd start lands its cgroup in the set the host filter's
    from_dockerd rules match (the rules themselves: tests/hostlab)."""
    r = run_bash("render_docker_drop_in", {**fr_env, **NET}, script="configure_runtime.sh")
    table, members = HOST_FILTER_TABLE, DOCKERD_CGROUP_SET
    assert f"NFTSet=cgroup:inet:{table}:{members}" in r.stdout.splitlines()


def test_socket_drop_in_is_root_only(fr_env):
    r = run_bash("render_socket_drop_in", fr_env, script="configure_runtime.sh")
    assert {"SocketMode=0600", "SocketUser=root", "SocketGroup=root"} <= set(r.stdout.splitlines())


def test_tls_material_written_once_with_private_key(fr_env, tmp_path):
    pki = make_pki(tmp_path / "pki")
    env = {**fr_env, **NET, "FR_DOCKER_DIR": str(tmp_path / "docker")}
    verifier_ca = make_pki(tmp_path / "verifier").ca
    stdin = pki.ca + verifier_ca + pki.server_cert + pki.server_key
    snippet = 'install_tls_material; printf "%s\\n" "${CHANGED[@]}"'
    first = run_bash(snippet, env, stdin=stdin, script="configure_runtime.sh")
    assert first.rc == 0, first.stderr
    tls = tmp_path / "docker" / "tls"
    assert len(first.stdout.split()) == 3
    assert (tls / "ca.pem").read_text() == pki.ca + verifier_ca, "dockerd must trust both CAs"
    assert (tls / "server-key.pem").read_text() == pki.server_key
    assert oct(os.stat(tls / "server-key.pem").st_mode & 0o777) == "0o600"
    assert "PRIVATE KEY" not in first.stdout + first.stderr
    second = run_bash(snippet, env, stdin=stdin, script="configure_runtime.sh")
    assert second.rc == 0 and second.stdout.strip() == ""


def test_tls_material_in_wrong_order_is_refused(fr_env, tmp_path):
    pki = make_pki(tmp_path / "pki")
    env = {**fr_env, **NET, "FR_DOCKER_DIR": str(tmp_path / "docker")}
    r = run_bash(
        "install_tls_material",
        env,
        stdin=pki.server_key + pki.ca + pki.ca + pki.server_cert,
        script="configure_runtime.sh",
    )
    assert r.rc != 0 and "to be a certificate" in r.stderr
    assert not (tmp_path / "docker" / "tls" / "server-key.pem").exists()


# ---------------------------------------------------------------- the endpoint policy

POLICY = {"LIMIT_MAX_MEMORY_MIB": "1024", "LIMIT_MAX_PIDS": "512", "LIMIT_MAX_MILLICPUS": "1500"}


def policy_env(fr_env, tmp_path, **extra):
    """The policy's paths in tmp_path, the repository's plugin in FR_ROOT."""
    shutil.copytree(ROOT / "endpoint_authz", Path(fr_env["FR_ROOT"]) / "endpoint_authz",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return {
        **fr_env,
        **NET,
        **POLICY,
        "FR_PYTHON": sys.executable,
        "FR_DOCKER_DIR": str(tmp_path / "docker"),
        "FR_SYSTEMD_DIR": str(tmp_path / "systemd"),
        "FR_AUTHZ_SOCKET": str(tmp_path / "plugins" / "functions-runtime-authz.sock"),
        "FR_AUTHZ_CONFIG": str(tmp_path / "etc" / "endpoint-policy.json"),
        "FR_AUTHZ_DRAIN_FILE": str(tmp_path / "var" / "draining"),
        "FR_ENDPOINT_COMMAND": str(tmp_path / "sbin" / "functions-runtime-endpoint"),
        **extra,
    }


def test_daemon_json_names_the_policy_plugin(fr_env, tmp_path):
    assert daemon_json(fr_env, tmp_path)["authorization-plugins"] == ["functions-runtime-authz"]


def test_policy_config_is_what_the_plugin_loads(fr_env, tmp_path):
    env = policy_env(fr_env, tmp_path, REVOKED_SERIALS="abc 0f", REVOKED_NAMES='verify old\nsay "hi"\n')
    r = run_bash("render_policy_config runsc kata", env, script="configure_runtime.sh")
    assert r.rc == 0, r.stderr
    data = json.loads(r.stdout)
    config = load_config(data)
    assert config.sandbox_runtimes == ("runsc", "kata")
    assert config.limits.max_memory_bytes == 1024 * 1024 * 1024
    assert config.limits.max_pids == 512 and config.limits.max_nano_cpus == 1_500_000_000
    assert config.revoked_serials == {0xABC, 0xF}
    assert config.revoked_names == {"verify old", 'say "hi"'}


def test_policy_config_carries_the_stacks_registries(fr_env, tmp_path):
    env = policy_env(fr_env, tmp_path, ENDPOINT_REGISTRIES="docker.io registry.example.com:5000")
    r = run_bash("render_policy_config runsc", env, script="configure_runtime.sh")
    assert r.rc == 0, r.stderr
    assert load_config(json.loads(r.stdout)).registries == ("docker.io", "registry.example.com:5000")


@pytest.mark.parametrize("variable", ["LIMIT_MAX_MEMORY_MIB", "LIMIT_MAX_PIDS", "ISOLATION", "GVISOR_RUNSC"])
def test_a_missing_input_fails_closed_naming_it(fr_env, tmp_path, variable):
    """Values are the program's, checked once (components/settings); the
    script stops only when one is missing."""
    r = run_bash("check_inputs", policy_env(fr_env, tmp_path, **{variable: ""}), script="configure_runtime.sh")
    assert r.rc != 0 and f"variable {variable} to be set" in r.stderr


def test_policy_unit_starts_the_plugin_before_dockerd_and_restarts_it(fr_env, tmp_path):
    env = policy_env(fr_env, tmp_path)
    r = run_bash("render_policy_unit", env, script="configure_runtime.sh")
    lines = r.stdout.splitlines()
    assert {"Before=docker.service", "Type=notify", "Restart=always", "RestartSec=1"} <= set(lines)
    start = next(line for line in lines if line.startswith("ExecStart="))
    assert start == (
        f"ExecStart={sys.executable} -I {env['FR_ROOT']}/endpoint_authz/plugin.py serve "
        f"--socket {env['FR_AUTHZ_SOCKET']} --config {env['FR_AUTHZ_CONFIG']} --drain-file {env['FR_AUTHZ_DRAIN_FILE']}"
    )
    assert f"ReadWritePaths={tmp_path / 'plugins'}" in lines
    # On a host: the socket's directory under /run is created for the sandboxed service.
    host = run_bash("render_policy_unit", {**env, "FR_AUTHZ_SOCKET": "/run/docker/plugins/functions-runtime-authz.sock"},
                    script="configure_runtime.sh").stdout.splitlines()
    assert {"RuntimeDirectory=docker/plugins", "RuntimeDirectoryPreserve=yes", "ProtectSystem=strict",
            "ReadWritePaths=/run/docker/plugins"} <= set(host)


def test_configure_policy_writes_once(fr_env, tmp_path):
    env = policy_env(fr_env, tmp_path)
    first = run_bash('RUNTIMES=(runsc); configure_policy; printf "%s\\n" "${CHANGED[@]}"; echo "restart=$POLICY_NEEDS_RESTART"',
                     env, script="configure_runtime.sh")
    assert first.rc == 0, first.stderr
    assert env["FR_AUTHZ_CONFIG"] in first.stdout and "restart=1" in first.stdout
    assert json.loads(Path(env["FR_AUTHZ_CONFIG"]).read_text())["sandboxRuntimes"] == ["runsc"]
    assert os.access(env["FR_ENDPOINT_COMMAND"], os.X_OK)
    second = run_bash('RUNTIMES=(runsc); configure_policy; echo "changed=${#CHANGED[@]} restart=$POLICY_NEEDS_RESTART"',
                      env, script="configure_runtime.sh")
    assert second.rc == 0 and "changed=0 restart=0" in second.stdout, second.stdout + second.stderr
    # A revocation rewrites the configuration only: the plugin re-reads it, no restart.
    third = run_bash('RUNTIMES=(runsc); configure_policy; printf "%s\\n" "${CHANGED[@]}"; echo "restart=$POLICY_NEEDS_RESTART"',
                     {**env, "REVOKED_SERIALS": "abc"}, script="configure_runtime.sh")
    assert third.stdout.splitlines() == [env["FR_AUTHZ_CONFIG"], "restart=0"]


def test_the_operator_command_drains_resumes_and_reports(fr_env, tmp_path):
    env = policy_env(fr_env, tmp_path)
    r = run_bash("RUNTIMES=(runsc); configure_policy", env, script="configure_runtime.sh")
    assert r.rc == 0, r.stderr
    command = env["FR_ENDPOINT_COMMAND"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", command, *args], capture_output=True, text=True, timeout=60)

    assert json.loads(run("status").stdout) == {"draining": False}
    assert json.loads(run("drain").stdout) == {"draining": True}
    assert Path(env["FR_AUTHZ_DRAIN_FILE"]).exists()
    assert json.loads(run("resume").stdout) == {"draining": False}
    usage = run("bogus")
    assert usage.returncode == 2 and "drain|resume|status|recover" in usage.stderr


# ---------------------------------------------------------------- Kata's hypervisor
#
# The kata-runtime here is a test double (tests/scripts/helpers.py): it
# records how it was called and fails `check` for the configurations the test
# names. So these prove which configuration configure asks Kata about, when,
# and what it does with the answer; not what real Kata says about QEMU or
# Cloud Hypervisor on real KVM (a dedicated host's verify step does).


def kata_env(fr_env, tmp_path, hypervisor, isolation="vm", **extra):
    return {
        **policy_env(fr_env, tmp_path),
        **kvm_env(tmp_path, True),
        "ISOLATION": isolation,
        "KATA_HYPERVISOR": hypervisor,
        **extra,
    }


def check_call(config: Path) -> str:
    return f"--config {config} check --no-network-checks"


@pytest.mark.parametrize("hypervisor", ["qemu", "clh"])
def test_kata_is_checked_against_the_chosen_hypervisors_configuration(fr_env, tmp_path, hypervisor):
    kata = install_fake_kata(tmp_path)
    env = kata_env(fr_env, tmp_path, hypervisor)
    r = run_bash('choose_runtimes; configure_kata; echo "${RUNTIMES[@]}"', env, script="configure_runtime.sh")
    assert r.rc == 0, r.stderr
    assert r.stdout.split() == ["kata"]
    assert kata.calls == [check_call(kata.config(hypervisor))]
    # ... and that file is the one put in force.
    assert Path(env["FR_KATA_CONFIG"]).read_text() == kata.config(hypervisor).read_text()


def test_clh_stack_is_checked_against_clh_configuration_not_the_one_in_force(fr_env, tmp_path):
    """A qemu host switched to clh: QEMU's configuration is still in force when
    configure checks, and the check must not be asked about it."""
    kata = install_fake_kata(tmp_path, failing=("qemu",))
    env = kata_env(fr_env, tmp_path, "clh")
    in_force = Path(env["FR_KATA_CONFIG"])
    in_force.parent.mkdir(parents=True)
    in_force.write_text(kata.config("qemu").read_text())
    r = run_bash('choose_runtimes; configure_kata; echo "${RUNTIMES[@]}"', env, script="configure_runtime.sh")
    assert r.rc == 0, r.stderr
    assert kata.calls == [check_call(kata.config("clh"))]
    assert in_force.read_text() == kata.config("clh").read_text()
    # The host's log says it too: clh is the stack's experiment.
    assert "WARNING: Kata runs with clh, an experiment the stack accepted" in r.stderr
    assert "only with QEMU as the VMM" in r.stderr


def test_qemu_stack_carries_no_experiment_warning(fr_env, tmp_path):
    install_fake_kata(tmp_path)
    r = run_bash("choose_runtimes", kata_env(fr_env, tmp_path, "qemu"), script="configure_runtime.sh")
    assert r.rc == 0 and "WARNING" not in r.stderr, r.stderr


@pytest.mark.parametrize("hypervisor", ["qemu", "clh"])
def test_a_failing_check_changes_nothing_and_names_the_hypervisor_and_configuration(fr_env, tmp_path, hypervisor):
    """configure's own main, as the host runs it (root check stubbed): the
    check comes before the TLS material, daemon.json, the policy and Kata's
    configuration are written."""
    kata = install_fake_kata(tmp_path, failing=(hypervisor,))
    env = kata_env(fr_env, tmp_path, hypervisor)
    in_force = Path(env["FR_KATA_CONFIG"])
    in_force.parent.mkdir(parents=True)
    in_force.write_text("# the configuration in force before\n")
    pki = make_pki(tmp_path / "pki")
    stdin = pki.ca + make_pki(tmp_path / "verifier").ca + pki.server_cert + pki.server_key

    def files() -> list[Path]:  # every path under the test's root but the double's own log
        return sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p != kata.log)

    before = files()
    r = run_bash("require_root() { :; }; main", env, stdin=stdin, script="configure_runtime.sh")
    assert r.rc != 0
    line = r.stderr.strip().splitlines()[-1]
    assert "FAILED on host test-host-1" in line
    assert f"with hypervisor {hypervisor} (functions-runtime:kata.hypervisor)" in line
    assert f"'kata-runtime check' failed with the {hypervisor} configuration {kata.config(hypervisor)}" in line
    assert "ERROR: kvm is not usable (nested)" in line and "nothing was changed" in line
    assert f"kata-runtime --config {kata.config(hypervisor)} check --verbose" in line
    assert "set functions-runtime:isolation to sandbox" in line
    # Only for the experiment: back to the hypervisor Kata tests with Docker.
    assert ("set functions-runtime:kata.hypervisor to qemu" in line) == (hypervisor == "clh")
    # Nothing was changed: no file appeared under the test's root (TLS
    # material, daemon.json, drop-ins, the policy), the old configuration
    # is still in force.
    assert files() == before
    assert in_force.read_text() == "# the configuration in force before\n"
    assert kata.calls == [check_call(kata.config(hypervisor))]


def test_a_sandbox_host_whose_clh_check_fails_falls_back_to_gvisor_naming_the_configuration(fr_env, tmp_path):
    kata = install_fake_kata(tmp_path, failing=("clh",))
    r = run_bash(
        'choose_runtimes; echo "${RUNTIMES[@]}"', kata_env(fr_env, tmp_path, "clh", isolation="sandbox"),
        script="configure_runtime.sh",
    )
    assert r.rc == 0, r.stderr
    assert r.stdout.split() == ["runsc"]
    assert f"Kata not registered: 'kata-runtime check' failed with the clh configuration {kata.config('clh')}" in r.stderr


def test_a_hypervisor_the_release_does_not_ship_fails_before_any_check(fr_env, tmp_path):
    kata = install_fake_kata(tmp_path, ships=("qemu",))
    r = run_bash("choose_runtimes", kata_env(fr_env, tmp_path, "clh"), script="configure_runtime.sh")
    assert r.rc != 0
    line = r.stderr.strip().splitlines()[-1]
    assert f"Kata's clh configuration {kata.config('clh')} does not exist" in line and "nothing was changed" in line
    assert kata.calls == []


def test_the_cni_network_is_a_bridge_the_plugins_can_read_and_is_written_once(fr_env):
    """configure's CNI network for ctr --cni and nerdctl: the shape nerdctl
    writes (bridge with gateway, masquerade and host-local addresses, then
    the firewall plugin), the contract's name, bridge and subnet; a second
    run changes nothing. Does not prove the plugins run it (the hostlab
    does, through verify's ctr checks)."""
    snippet = 'configure_cni_network; printf "%s\\n" "${CHANGED[@]}"'
    first = run_bash(snippet, fr_env, script="configure_runtime.sh")
    assert first.rc == 0, first.stderr
    assert first.stdout.split() == [fr_env["FR_CNI_CONFLIST"]]
    conflist = json.loads(Path(fr_env["FR_CNI_CONFLIST"]).read_text())
    assert conflist["name"] == CNI_NETWORK
    bridge, firewall = conflist["plugins"]
    assert bridge["type"] == "bridge" and bridge["bridge"] == CNI_BRIDGE
    assert bridge["isGateway"] and bridge["ipMasq"]
    assert bridge["ipam"]["type"] == "host-local"
    assert bridge["ipam"]["ranges"] == [[{"subnet": CNI_SUBNET}]]
    assert firewall == {"type": "firewall"}
    assert oct(Path(fr_env["FR_CNI_CONFLIST"]).stat().st_mode & 0o777) == "0o644"
    second = run_bash(snippet, fr_env, script="configure_runtime.sh")
    assert second.rc == 0 and second.stdout.strip() == ""


def test_nerdctl_finds_debians_cni_plugins_and_containerds_socket(fr_env):
    """nerdctl's own configuration: the release binary looks for CNI plugins
    in /opt/cni/bin unless told; Debian ships them in /usr/lib/cni."""
    r = run_bash("render_nerdctl_toml", fr_env, script="configure_runtime.sh")
    assert r.rc == 0, r.stderr
    lines = {line.split(" = ")[0]: line.split(" = ")[1] for line in r.stdout.splitlines() if " = " in line}
    assert lines == {"address": '"unix:///run/containerd/containerd.sock"', "cni_path": '"/usr/lib/cni"'}
