"""The program's provisioning, proven on a real Debian 13 guest.

One guest serves every provisioning test of the session (shared_guest.py):
it boots once with the program's rendered user-data (a Cloud-shaped
`hostlab` stack, `testbed.hcloud_config`) and is put into a named state by
restoring a snapshot: `cloud-init-done`, `installed`, `verified`. The
program runs under the mocks (tests/support/program.py); its own
`command.remote.Command` / `CopyToRemote` steps are executed over real SSH
in dependency order (tools/lab/replay.py), never rewritten. Every
lab-specific value (mirror URL, catalog, verify image, addresses) is a stack
setting the program supports. The verify step's real stdout goes back
through the program, whose endpoint code builds `runtimeEndpoint`.

Tests that only read the guest call `lab.at(name)`; tests that break the
host on purpose (a tampered archive, isolation `vm`, KVM removed, a killed
install) call `lab.fresh(name)` first: each starts from its
snapshot, whatever ran before it, so any one of them runs alone (`-k`).

Real here: cloud-init 25.1, sshd with the program's hardening and its pinned
host key, apt-get of docker.io/containerd/runc/CNI from Debian's
archive, dockerd with mutual TLS on 10.0.2.15 with the program's
certificates, gVisor (runsc, systrap) as the sandbox, nftables, the verify
script. Not real: Kata and nerdctl are test archives with the real layout
from a mirror on loopback (download, hash check, install and idempotence are
real; Kata itself is not: no hardware KVM here, the guest's /dev/kvm is
nested under TCG). Hetzner's network is QEMU user networking; its metadata
service is a responder in a network namespace.
"""

from __future__ import annotations

import json
import shlex
import socket
import ssl
import subprocess
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from components.contract import (
    AUTHZ_DRAIN_FILE,
    AUTHZ_OWNER_LABEL,
    CONSUMER_COMMON_NAME,
    GVISOR_DIR,
    GVISOR_SIDECAR_DIR,
    GVISOR_SIDECARS,
)
from components.endpoint import docker_client, limits_document, read_client_tls, read_endpoint
from tests.hostlab import testbed
from tests.hostlab.shared_guest import CLOUD_INIT_DONE, INSTALLED, VERIFIED, SharedGuest
from tests.support.program import ProgramRun
from tools.lab.replay import Replay, StepResult, host_steps, log_replay, replay

pytestmark = [pytest.mark.hostlab, pytest.mark.timeout(3600)]

# Named bounds (nothing here asserts a duration; timings are reported).
APT_TIMEOUT_S = 1800
DPKG_HOLD_TIMEOUT_S = 900  # until the interrupted install's dpkg has unpacked and waits
SESSION_END_TIMEOUT_S = 60  # for the killed SSH session to end
DOCKER_PY_TIMEOUT_S = 300  # one docker-py call through the endpoint (TCG)
POLL_INTERVAL_S = 1
# Every container the consumer creates carries limits: the endpoint policy refuses one without.
# What every create through the endpoint carries: limits, and the owner
# label with the consumer certificate's common name (the policy's rules).
FUNCTION_LIMITS = {
    "mem_limit": "256m",
    "pids_limit": 128,
    "nano_cpus": 1_000_000_000,
    "labels": {AUTHZ_OWNER_LABEL: CONSUMER_COMMON_NAME},
}

# What install takes from Debian: gVisor comes from its pinned release (the
# lab's stand-in), so Debian's runsc package is not among them.
RUNTIME_PACKAGES = ("docker.io docker-cli containerd runc containernetworking-plugins apparmor prometheus-node-exporter "
                    "unattended-upgrades")
# `retire` is the delete-time step: replayed as pulumi-command creates it (its create does nothing).
STEP_NAMES = ("wait", "payload", "bootstrap", "install", "firewall", "configure", "verify-image", "verify", "upkeep",
              "keys", "retire")


def step_json(result: StepResult) -> dict:
    lines = [line for line in result.stdout.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"{result.name}: expected one JSON line on stdout, got {result.stdout!r}"
    return json.loads(lines[0])


def results_by_step(rep: Replay) -> dict[str, StepResult]:
    """Results keyed by step (the part after the host name)."""
    prefix = f"{testbed.HOST_NAME}-"
    return {r.name.removeprefix(prefix): r for r in rep.results}


# ---------------------------------------------------------------- main path


def test_guest_boots_with_the_programs_user_data_and_pinned_host_key(lab):
    lab.at(CLOUD_INIT_DONE)
    status = lab.cloud_init_status
    assert status.returncode in (0, 2) and "status: done" in status.stdout, status.stdout + status.stderr
    assert "VERSION_CODENAME=trixie" in lab.sh("cat /etc/os-release")
    # cloud-init applied the program's document: hostname, sshd hardening, modules file.
    assert lab.sh("hostname").strip() == "hostlab-lab-1"
    sshd = lab.sh("sshd -T")
    assert "passwordauthentication no" in sshd and "permitrootlogin without-password" in sshd
    assert "maxauthtries 3" in sshd and "x11forwarding no" in sshd
    # The guest presents exactly the key the program generated; a client
    # pinning any other key is refused before authentication.
    served = lab.sh("cat /etc/ssh/ssh_host_ed25519_key.pub").split()[:2]
    assert served == lab.steps[0].connection["hostKey"].split()[:2]
    other = lab.key_path.parent / "known_hosts_wrong"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other) + ".key"], check=True)
    wrong_key = " ".join(Path(str(other) + ".key.pub").read_text().split()[:2])
    other.write_text(f"[127.0.0.1]:{lab.vm.ssh_port} {wrong_key}\n")
    args = lab.vm.ssh_args()
    args[args.index(f"UserKnownHostsFile={lab.vm.known_hosts}")] = f"UserKnownHostsFile={other}"
    refused = subprocess.run([*args, "true"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 255 and "Host key verification failed" in refused.stderr, refused.stderr


def test_first_replay_installs_from_debian_and_the_mirror(lab):
    # The first replay runs from `cloud-init-done` the first time any test
    # needs `installed` or `verified`, and takes both snapshots on its way.
    lab.at(VERIFIED)
    assert lab.first is not None
    by = results_by_step(lab.first)
    assert [r.returncode for r in lab.first.results] == [0] * len(lab.steps), log_replay(lab.first)
    # Dependency order as the program declared it (verify-image before verify).
    assert [r.name.removeprefix(f"{testbed.HOST_NAME}-") for r in lab.first.results] == list(STEP_NAMES)
    assert lab.vm.snapshots == [CLOUD_INIT_DONE, INSTALLED, VERIFIED]

    install = step_json(by["install"])
    assert set(install["installedPackages"]) == set(RUNTIME_PACKAGES.split())
    # cloud-init's package_update ran minutes ago and the program's apt hook
    # (user-data write_files) stamped it: no second apt-get update.
    assert "s ago, skipping apt-get update" in by["install"].stderr, by["install"].stderr[-2000:]
    # The guest's nested /dev/kvm passes has_kvm, so Kata's (test) archive was
    # downloaded, hash-checked and unpacked; nerdctl too.
    assert install["kata"] == "installed" and install["nerdctl"] == "installed"
    assert lab.mirror.downloads(testbed.KATA_FILE) == 1
    assert lab.mirror.downloads(testbed.nerdctl_file(testbed.NERDCTL_VERSION)) == 1
    assert "/opt/kata" in lab.sh("readlink -f /usr/local/bin/containerd-shim-kata-v2")
    assert "2.3.5 (hostlab test archive)" in lab.sh("nerdctl --version")
    versions = lab.sh("dpkg-query -W -f='${Package} ${Version}\\n' docker.io containerd runc")
    assert "docker.io 26.1" in versions and "containerd 1.7" in versions, versions
    # gVisor's release archive from the mirror, by the catalog's sha256, unpacked whole in its
    # versioned directory: runsc, the shim and the sidecars (stand-ins: see testbed).
    assert install["gvisor"] == "installed", install
    assert lab.mirror.downloads(testbed.GVISOR_FILE) == 1
    release = f"{GVISOR_DIR}/{testbed.GVISOR_VERSION}"
    # Sorted here: the guest's sort(1) collates by its locale (en_US), not by code point.
    listed = sorted(lab.sh(f"cd {release} && find . -type f -perm -u+x").split())
    assert listed == sorted(["./runsc", "./containerd-shim-runsc-v1",
                             *(f"./{GVISOR_SIDECAR_DIR}/{name}" for name in GVISOR_SIDECARS)]), listed
    assert lab.sh("readlink /usr/local/bin/runsc").strip() == f"{release}/runsc"
    assert "no packages found" in lab.sh("dpkg-query -W runsc 2>&1 || true")

    # bootstrap found cloud-init's work done: byte-identical files, packages present.
    assert step_json(by["bootstrap"])["changed"] == []

    configure = step_json(by["configure"])
    assert configure["restarted"] is True
    # The endpoint policy's plugin started, and answered, before dockerd restarted with it.
    assert configure["policyRestarted"] is True
    assert lab.sh("systemctl is-active functions-runtime-authz.service").strip() == "active"
    assert configure["defaultRuntime"] == "runsc" and configure["runtimes"] == ["runsc"]
    # Kata is installed and /dev/kvm exists, but `kata-runtime check` decides: not usable.
    assert "Kata not registered: 'kata-runtime check' failed" in by["configure"].stderr
    daemon = json.loads(lab.sh("cat /etc/docker/daemon.json"))
    assert daemon["hosts"] == ["fd://", "tcp://10.0.2.15:2376"] and daemon["tlsverify"] is True
    assert lab.sh("ss -ltnH 'sport = :2376'").split()[3] == "10.0.2.15:2376"


def test_verify_report_goes_through_the_programs_endpoint_code(lab):
    lab.at(VERIFIED)
    assert lab.first is not None, "the first replay did not run"
    verify = results_by_step(lab.first)["verify"]
    report = json.loads(verify.stdout)
    assert report["passed"] is True, verify.stderr
    checks = {c["name"]: c for c in report["checks"]}
    # The checks the issue names, each really passed (not skipped).
    assert checks["endpoint-refuses-no-cert"]["status"] == "passed"
    assert checks["endpoint-accepts-client-cert"]["status"] == "passed"
    assert checks["runtime-runsc-kernel"]["status"] == "passed"
    # The host reaches the metadata responder, the sandbox does not.
    assert checks["isolation-runsc-metadata"]["status"] == "passed", checks["isolation-runsc-metadata"]
    assert checks["isolation-runsc-host-endpoint"]["status"] == "passed"
    assert checks["isolation-runsc-host-ssh"]["status"] == "passed"
    # The endpoint policy (issue 13): dockerd asks the plugin; refusals; limits hold under gVisor.
    for name in ("endpoint-policy", "policy-refuses-privileged-runc", "policy-refuses-host-network",
                 "policy-refuses-host-mount", "policy-refuses-no-limits", "policy-limits", "limits-runsc-pids",
                 "limits-runsc-memory", "dns-runsc"):
        assert checks[name]["status"] == "passed", checks.get(name)
        print(f"{name}: {checks[name]['detail']}")
    # Kata's absence is reported with its reason, never passed.
    assert checks["preflight-kata"]["status"] == "skipped"
    assert "test archive, not Kata" in checks["preflight-kata"]["detail"]
    print("Kata verification skipped in the lab:", checks["preflight-kata"]["detail"])

    # The program parses the real stdout into its exported endpoint.
    run = endpoint_run(lab)
    endpoint = read_endpoint(run.outputs["runtimeEndpoint"])
    host = endpoint.host(testbed.HOST_NAME)
    raw = run.outputs["runtimeEndpoint"]["hosts"][0]
    assert raw["dockerHost"] == "tcp://10.0.2.15:2376"
    assert endpoint.default_runtime == "runsc"
    runsc = raw["runtimes"][0]
    assert runsc["name"] == "runsc" and runsc["guestKernel"] != report["hostKernel"]
    assert raw["hostKernel"] == lab.sh("uname -r").strip()
    assert host is not None
    # The endpoint's limits are what the host's verify proved its policy enforces.
    proven = report["limits"]
    assert run.outputs["runtimeEndpoint"]["limits"] == limits_document(
        proven["maxMemoryMiB"], proven["maxPids"], proven["maxMilliCpus"]
    )


def endpoint_run(lab: SharedGuest) -> ProgramRun:
    """The program run with the first replay's real verify stdout: its outputs are the endpoint."""
    if "endpoint_run" not in lab.notes:
        lab.at(VERIFIED)
        assert lab.first is not None
        verify = results_by_step(lab.first)["verify"]
        lab.notes["endpoint_run"] = lab.program(lab.hcloud_config(), verify_stdout=verify.stdout)
    return lab.notes["endpoint_run"]


def consumer_client(lab: SharedGuest) -> Any:
    run = endpoint_run(lab)
    lab.at(VERIFIED)
    return docker_client(
        read_endpoint(run.outputs["runtimeEndpoint"]), read_client_tls(run.outputs["runtimeClientTls"]),
        base_url=f"tcp://127.0.0.1:{lab.vm.forwards[2376]}", timeout=DOCKER_PY_TIMEOUT_S,
    )


def test_consumer_runs_a_sandboxed_container_through_the_forwarded_endpoint(lab):
    client = consumer_client(lab)
    run = endpoint_run(lab)
    try:
        info = client.info()
        assert info["DefaultRuntime"] == "runsc"
        out = client.containers.run(lab.image.image_id, ["uname", "-r"], remove=True, **FUNCTION_LIMITS)
    finally:
        client.close()
    guest_kernel = out.decode().strip()
    host_kernel = lab.sh("uname -r").strip()
    assert guest_kernel and guest_kernel != host_kernel
    assert guest_kernel == run.outputs["runtimeEndpoint"]["hosts"][0]["runtimes"][0]["guestKernel"]


def test_client_without_certificate_is_refused(lab):
    import docker
    import requests

    run = endpoint_run(lab)
    lab.at(VERIFIED)
    endpoint = read_endpoint(run.outputs["runtimeEndpoint"])
    ca = lab.key_path.parent / "ca.pem"
    ca.write_text(endpoint.ca_cert_pem)
    url = f"https://127.0.0.1:{lab.vm.forwards[2376]}"
    # Same CA, so the server is trusted; only the client certificate is missing.
    tls = docker.tls.TLSConfig(ca_cert=str(ca), verify=True)
    client = docker.DockerClient(base_url=url, tls=tls, timeout=60, version="1.45")
    # As components.endpoint.docker_client does: an environment CA bundle
    # (REQUESTS_CA_BUNDLE) must not replace the endpoint's CA, or the
    # failure below would be about the server, not the missing certificate.
    client.api.trust_env = False
    with pytest.raises(
        (requests.exceptions.SSLError, requests.exceptions.ConnectionError, docker.errors.DockerException)
    ) as refused:
        client.version()
    assert "certificate required" in str(refused.value) or "alert" in str(refused.value), refused.value


def wait_for_endpoint(client: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except Exception:  # any error means "not answering yet"
            assert time.monotonic() < deadline, f"the endpoint did not answer within {timeout} s of a restart"
            time.sleep(2)


def test_running_daemon_is_hardened_and_restarts_without_killing_functions(lab):
    """Issue #4's daemon settings, read off the running dockerd and its
    containers (not daemon.json): live-restore, log rotation, no new
    privileges, a root-only socket, no plain-TCP API."""
    client = consumer_client(lab)
    container = None
    try:
        info = client.info()
        assert info["LiveRestoreEnabled"] is True and info["LoggingDriver"] == "json-file"
        # A function that keeps running: a shell waiting on its open stdin.
        container = client.containers.run(
            lab.image.image_id, ["sh", "-c", "read -r line"], detach=True, stdin_open=True, **FUNCTION_LIMITS
        )
        container.reload()
        assert container.attrs["HostConfig"]["Runtime"] == "runsc"
        # The daemon's log options were applied to the container: its log cannot grow past 3 x 10 MB.
        assert container.attrs["HostConfig"]["LogConfig"] == {
            "Type": "json-file", "Config": {"max-file": "3", "max-size": "10m"},
        }
        # The OCI spec dockerd handed to the runtime forbids privilege gain.
        spec = json.loads(lab.sh(
            f"cat /run/containerd/io.containerd.runtime.v2.task/moby/{container.id}/config.json"
        ))
        assert spec["process"]["noNewPrivileges"] is True
        pid, started = container.attrs["State"]["Pid"], container.attrs["State"]["StartedAt"]

        # live-restore: restarting dockerd does not stop the running function.
        lab.sh("systemctl restart docker.service", timeout=DOCKER_PY_TIMEOUT_S)
        wait_for_endpoint(client, DOCKER_PY_TIMEOUT_S)
        container.reload()
        assert container.attrs["State"]["Running"] is True
        assert (container.attrs["State"]["Pid"], container.attrs["State"]["StartedAt"]) == (pid, started)
    finally:
        if container is not None:
            container.remove(force=True)
        client.close()

    # The local socket: root only, no docker group. A non-root user is refused.
    assert lab.sh("stat -L -c '%a %U %G' /run/docker.sock").strip() == "600 root root"
    denied = lab.vm.ssh(
        "runuser -u nobody -- python3 -c "
        "\"import socket; socket.socket(socket.AF_UNIX).connect('/run/docker.sock')\"",
        timeout=60,
    )
    assert denied.returncode != 0 and "PermissionError" in denied.stderr, denied.stdout + denied.stderr
    assert lab.sh("curl -sS --max-time 10 --unix-socket /run/docker.sock http://docker/_ping").strip() == "OK"
    # The TCP listeners are the mutual-TLS endpoint and dockerd's metrics, on the
    # private address: plain HTTP to the endpoint is not the API.
    listeners = lab.sh("ss -ltnpH | grep dockerd").strip().splitlines()
    assert sorted(line.split()[3] for line in listeners) == ["10.0.2.15:2376", "10.0.2.15:9323"], listeners
    assert "engine_daemon_" in lab.sh("curl -fsS --max-time 10 http://10.0.2.15:9323/metrics")
    plain = lab.vm.ssh("curl -sS --max-time 10 http://10.0.2.15:2376/_ping", timeout=60)
    assert "Client sent an HTTP request to an HTTPS server" in plain.stdout + plain.stderr, plain


# ---------------------------------------------------------------- the endpoint policy (issue 13)

# dockerd retries an unreachable plugin for about 30 s before it fails a request.
DEAD_PLUGIN_REFUSAL_TIMEOUT_S = 180
PLUGIN_RESTART_TIMEOUT_S = 120
POLICY = "functions-runtime policy:"


def refused(call: Any) -> str:
    """The policy's one-line refusal of a docker-py call."""
    import docker

    with pytest.raises(docker.errors.APIError) as err:
        call()
    message = str(err.value)
    assert err.value.status_code == 403 and POLICY in message, message
    return message[message.index(POLICY):]


def raw_post(client: Any, path: str) -> None:
    api = client.api
    api._raise_for_status(api._post(api._url(path), data=b""))


def test_the_policy_refuses_each_denial_class_through_the_consumer_credential(lab):
    client = consumer_client(lab)
    image = lab.image.image_id
    create = client.containers.create
    cases = {
        "runc with --privileged": (lambda: create(image, "true", runtime="runc", privileged=True, **FUNCTION_LIMITS), "--runtime runc"),
        "--privileged": (lambda: create(image, "true", privileged=True, **FUNCTION_LIMITS), "--privileged is not allowed on this endpoint"),
        "host network": (lambda: create(image, "true", network_mode="host", **FUNCTION_LIMITS), "--network host"),
        "host pid": (lambda: create(image, "true", pid_mode="host", **FUNCTION_LIMITS), "--pid host"),
        "host ipc": (lambda: create(image, "true", ipc_mode="host", **FUNCTION_LIMITS), "--ipc host"),
        "host userns": (lambda: create(image, "true", userns_mode="host", **FUNCTION_LIMITS), "--userns host"),
        "bind of /": (lambda: create(image, "true", volumes={"/": {"bind": "/host"}}, **FUNCTION_LIMITS), "bind mounts of host paths"),
        "device": (lambda: create(image, "true", devices=["/dev/vda:/dev/vda"], **FUNCTION_LIMITS), "--device"),
        "cap-add": (lambda: create(image, "true", cap_add=["SYS_ADMIN"], **FUNCTION_LIMITS), "--cap-add"),
        "seccomp unconfined": (lambda: create(image, "true", security_opt=["seccomp=unconfined"], **FUNCTION_LIMITS), "seccomp=unconfined"),
        "systempaths": (lambda: create(image, "true", security_opt=["systempaths=unconfined"], **FUNCTION_LIMITS), "systempaths"),
        "sysctl": (lambda: create(image, "true", sysctls={"net.ipv4.ip_forward": "1"}, **FUNCTION_LIMITS), "--sysctl"),
        "cgroup parent": (lambda: create(image, "true", cgroup_parent="/", **FUNCTION_LIMITS), "--cgroup-parent"),
        "oom-kill-disable": (lambda: create(image, "true", oom_kill_disable=True, **FUNCTION_LIMITS), "--oom-kill-disable"),
        "published port": (lambda: create(image, "true", ports={"80/tcp": 8080}, **FUNCTION_LIMITS), "-p/--publish"),
        "publish all": (lambda: create(image, "true", publish_all_ports=True, **FUNCTION_LIMITS), "-P/--publish-all"),
        "no limits": (lambda: create(image, "true"), "--memory is required"),
        "local volume with o=bind": (
            lambda: client.volumes.create("escape", driver_opts={"type": "none", "o": "bind", "device": "/"}),
            "o=bind",
        ),
        # docker-py's build() streams without raising: post it as the CLI does.
        "image build": (lambda: raw_post(client, "/build"), "image builds"),
        "BuildKit session": (lambda: raw_post(client, "/session"), "BuildKit sessions"),
        "swarm": (lambda: client.swarm.init(), "swarm is not allowed"),
        "plugins": (lambda: client.plugins.list(), "plugins are not allowed"),
        "image load": (lambda: client.images.load(b""), "image load"),
        "IPv6 network": (lambda: client.networks.create("frt-v6", enable_ipv6=True), "IPv6 container networks"),
    }
    messages = {}
    try:
        for name, (call, words) in cases.items():
            message = refused(call)
            assert words in message and "\n" not in message, (name, message)
            messages[name] = message
        # Exec: unprivileged and as the container's own user only.
        container = client.containers.run(image, ["sleep", "600"], detach=True, **FUNCTION_LIMITS)
        try:
            assert "exec --privileged" in refused(lambda: client.api.exec_create(container.id, "true", privileged=True))
            assert "exec --user" in refused(lambda: client.api.exec_create(container.id, "true", user="root"))
            assert container.exec_run(["true"]).exit_code == 0
        finally:
            container.remove(force=True)
    finally:
        client.close()
    # Root on the local socket is not restricted (image loads, any runc baseline).
    out = lab.sh(f"docker run --rm --runtime runc --network none {image} uname -r", timeout=DOCKER_PY_TIMEOUT_S)
    assert out.strip() == lab.sh("uname -r").strip()
    print("refusals:", json.dumps(messages, indent=1))


def plugin_state(lab: SharedGuest) -> tuple[str, int]:
    out = lab.sh("systemctl show functions-runtime-authz.service -p MainPID -p NRestarts --value").split()
    return out[0], int(out[1])


def test_a_killed_plugin_is_restarted_and_a_stopped_one_locks_everyone_out_until_recovered(lab):
    client = consumer_client(lab)
    lab.fresh(VERIFIED)  # kills, stops and restarts the plugin
    try:
        pid, restarts = plugin_state(lab)
        lab.sh(f"kill -KILL {pid}")
        deadline = time.monotonic() + PLUGIN_RESTART_TIMEOUT_S
        while plugin_state(lab)[1] == restarts or plugin_state(lab)[0] in ("0", pid):
            assert time.monotonic() < deadline, "systemd did not restart the killed plugin"
            time.sleep(1)
        # Restarted: the API works and the policy still holds.
        client.ping()
        assert "--privileged" in refused(
            lambda: client.containers.create(lab.image.image_id, "true", privileged=True, **FUNCTION_LIMITS)
        )

        # Stopped for good (a plugin that cannot run): dockerd refuses everyone, root included.
        lab.sh("systemctl stop functions-runtime-authz.service")
        import docker

        with pytest.raises(docker.errors.APIError) as dead:
            client.version()
        assert "functions-runtime-authz" in str(dead.value), dead.value
        local = lab.vm.ssh("docker version --format '{{.Server.Version}}'", timeout=DEAD_PLUGIN_REFUSAL_TIMEOUT_S)
        assert local.returncode != 0 and "functions-runtime-authz" in local.stderr, local.stdout + local.stderr
        # The documented one-command recovery.
        assert json.loads(lab.sh("functions-runtime-endpoint recover", timeout=PLUGIN_RESTART_TIMEOUT_S)) == {
            "draining": False
        }
        assert client.version()["Version"]
    finally:
        lab.sh("systemctl start functions-runtime-authz.service", check=False)
        client.close()


# The drain timeouts the retire proof gives the program (rollout.drainTimeoutSeconds):
# one far longer than its checks take on a busy machine, one it waits out.
RETIRE_PATIENT_S = 600
RETIRE_DRAIN_TIMEOUT_S = 10
RETIRE_RESULT = "/root/retire.json"


def retire_command(lab: SharedGuest, drain_timeout_s: int) -> str:
    """The program's own delete-time command of the host, as pulumi-command would run it."""
    config = {**lab.hcloud_config(), "functions-runtime:rollout": {"drainTimeoutSeconds": drain_timeout_s}}
    return lab.program(config).named(f"{testbed.HOST_NAME}-retire").plain["delete"]


def run_retire_in_background(lab: SharedGuest, command: str) -> None:
    """The step detached from the SSH session (which returns at once); its JSON
    line lands in RETIRE_RESULT only when it finished."""
    job = f"{command} >{RETIRE_RESULT}.part 2>/root/retire.log && mv {RETIRE_RESULT}.part {RETIRE_RESULT}"
    lab.sh(f"rm -f {RETIRE_RESULT}; setsid sh -c {shlex.quote(job)} </dev/null >/dev/null 2>&1 &")


def retire_result(lab: SharedGuest, within_s: float) -> dict:
    out = lab.sh(f"for i in $(seq {int(within_s)}); do [ -s {RETIRE_RESULT} ] && cat {RETIRE_RESULT} && exit 0; "
                 "sleep 1; done; cat /root/retire.log; exit 1", timeout=within_s + 60)
    return json.loads(out)


def test_the_retire_step_drains_and_finishes_when_the_last_function_exits_or_at_the_timeout(lab):
    """The delete-time step a replaced or removed host runs (scripts/retire_host.sh),
    with the program's own command: new creates are refused with the draining
    message while a sandboxed function keeps running and answering; the step
    returns once it exits, or reports the timeout without killing it; the
    operator's `resume` takes the host back."""
    client = consumer_client(lab)
    patient, impatient = retire_command(lab, RETIRE_PATIENT_S), retire_command(lab, RETIRE_DRAIN_TIMEOUT_S)
    assert f"DRAIN_TIMEOUT={RETIRE_DRAIN_TIMEOUT_S}" in impatient
    lab.fresh(VERIFIED)
    # A function that runs until the test lets it finish (so no timing decides what is checked first).
    short = client.containers.run(
        lab.image.image_id, ["sh", "-c", "echo up; until [ -f /tmp/finish ]; do sleep 1; done"], detach=True,
        **FUNCTION_LIMITS,
    )
    long = None
    try:
        run_retire_in_background(lab, patient)
        lab.sh(f"for i in $(seq 30); do [ -f {AUTHZ_DRAIN_FILE} ] && exit 0; sleep 1; done; exit 1")
        assert "this host is draining" in refused(
            lambda: client.containers.create(lab.image.image_id, "true", **FUNCTION_LIMITS)
        )
        short.reload()
        assert short.status == "running", "draining must not stop a running function"
        assert short.exec_run(["true"]).exit_code == 0
        assert b"up" in short.logs()
        assert client.ping() and client.images.get(lab.image.image_id)
        assert json.loads(lab.sh("functions-runtime-endpoint status")) == {"draining": True}
        assert lab.sh(f"cat {RETIRE_RESULT} 2>/dev/null || true") == "", "the step waits while a function runs"
        assert short.exec_run(["sh", "-c", ": >/tmp/finish"]).exit_code == 0
        done = retire_result(lab, 120)
        assert done["drained"] is True and done["timedOut"] is False and done["running"] == 0, done
        short.reload()
        assert short.status == "exited" and short.attrs["State"]["ExitCode"] == 0

        # A function that outlives the timeout: reported, still running, never killed.
        assert json.loads(lab.sh("functions-runtime-endpoint resume")) == {"draining": False}
        long = client.containers.run(lab.image.image_id, ["sh", "-c", "sleep 600"], detach=True, **FUNCTION_LIMITS)
        run_retire_in_background(lab, impatient)
        timed_out = retire_result(lab, RETIRE_DRAIN_TIMEOUT_S + 60)
        assert timed_out["timedOut"] is True and timed_out["running"] == 1, timed_out
        assert timed_out["waitedSeconds"] >= RETIRE_DRAIN_TIMEOUT_S
        long.reload()
        assert long.status == "running"
        long.stop(timeout=1)
        assert json.loads(lab.sh("functions-runtime-endpoint resume")) == {"draining": False}
        assert client.containers.run(lab.image.image_id, ["true"], remove=True, **FUNCTION_LIMITS) == b""
    finally:
        lab.sh("functions-runtime-endpoint resume", check=False)
        for c in (short, long):
            if c is not None:
                c.remove(force=True)
        client.close()


def test_a_revoked_certificate_is_refused_without_restarting_anything(lab):
    from cryptography import x509

    run = endpoint_run(lab)
    serial = x509.load_pem_x509_certificate(read_client_tls(run.outputs["runtimeClientTls"]).cert_pem.encode()).serial_number
    config_path = "/etc/functions-runtime/endpoint-policy.json"
    client = consumer_client(lab)
    lab.fresh(VERIFIED)  # rewrites the policy's configuration, as the configure step would
    original = lab.sh(f"cat {config_path}")
    before = plugin_state(lab)
    try:
        revoked = {**json.loads(original), "revokedSerials": [f"{serial:x}"]}
        lab.sh(f"printf '%s' {shlex.quote(json.dumps(revoked))} > {config_path}")
        assert "is revoked on this endpoint" in refused(client.ping)
        assert plugin_state(lab) == before  # re-read, not restarted
        lab.sh(f"printf '%s' {shlex.quote(original)} > {config_path}")
        assert client.ping()
    finally:
        client.close()


def tls11_client_context(cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """A client that offers TLS 1.0-1.1 only, with old ciphers allowed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1/TLSv1_1 are deprecated: the point
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert and key:
        ctx.load_cert_chain(cert, key)
    return ctx


def tls_handshake(ctx: ssl.SSLContext, port: int) -> str:
    """The negotiated version, or the error."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as raw:
        try:
            with ctx.wrap_socket(raw) as tls:
                return tls.version() or "?"
        except (ssl.SSLError, OSError) as e:
            return f"refused: {e}"


def test_endpoint_refuses_tls_below_1_2(lab, tmp_path):
    run = endpoint_run(lab)
    lab.at(VERIFIED)
    tls = read_client_tls(run.outputs["runtimeClientTls"])
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text(tls.cert_pem)
    key.write_text(tls.key_pem)
    key.chmod(0o600)
    # Not vacuous: this client does complete a TLS 1.1 handshake with a
    # loopback server that allows it.
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server_ctx.minimum_version = ssl.TLSVersion.TLSv1
    server_ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def serve_one() -> None:
            conn, _ = listener.accept()
            try:
                server_ctx.wrap_socket(conn, server_side=True).close()
            except (ssl.SSLError, OSError):
                conn.close()

        thread = threading.Thread(target=serve_one, daemon=True)
        thread.start()
        assert tls_handshake(tls11_client_context(cert, key), listener.getsockname()[1]) == "TLSv1.1"
        thread.join(timeout=30)
    # dockerd refuses it, and accepts the same client at TLS 1.2.
    result = tls_handshake(tls11_client_context(cert, key), lab.vm.forwards[2376])
    assert result.startswith("refused:") and "VERSION" in result.upper(), result
    modern = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    modern.check_hostname, modern.verify_mode = False, ssl.CERT_NONE
    modern.load_cert_chain(cert, key)
    modern.maximum_version = ssl.TLSVersion.TLSv1_2
    assert tls_handshake(modern, lab.vm.forwards[2376]) == "TLSv1.2"


def test_second_replay_has_nothing_to_do(lab):
    lab.at(VERIFIED)
    before = lab.docker_service()
    downloads = list(lab.mirror.requests)
    second = replay(lab.vm, lab.steps, check=False)
    lab.timings["second_replay_s"] = round(sum(r.seconds for r in second.results), 1)
    by = results_by_step(second)
    assert all(r.returncode == 0 for r in second.results), log_replay(second)
    lab.timings["second_verify_s"] = round(by["verify"].seconds, 1)
    for step in ("bootstrap", "install", "firewall", "configure", "keys"):
        assert step_json(by[step])["changed"] == [], f"{step}: {by[step].stdout}\n{by[step].stderr}"
    install = step_json(by["install"])
    assert install["installedPackages"] == [] and install["kata"] == "present" and install["nerdctl"] == "present"
    assert "already at 3.32.0, skipping" in by["install"].stderr
    assert step_json(by["configure"])["restarted"] is False
    assert step_json(by["configure"])["policyRestarted"] is False
    assert lab.mirror.requests == downloads, "the second replay downloaded again"
    assert lab.docker_service() == before, "dockerd was restarted"
    assert json.loads(by["verify"].stdout)["passed"] is True


def test_packet_filter_drops_disallowed_sources(lab):
    lab.fresh(VERIFIED)  # adds a peer namespace to the guest
    assert lab.sh(testbed.PEER_NAMESPACE).strip().endswith("ready")

    def probe(source: str, port: int) -> str:
        return lab.sh(testbed.peer_probe_command(source, port)).strip()

    # 10.0.2.77 is in endpoint.allowedCidrs (10.0.2.0/24) but not an admin source.
    assert probe(testbed.PEER_ALLOWED_SOURCE, 2376) == "open"
    assert probe(testbed.PEER_ALLOWED_SOURCE, 22) == "dropped"
    # 10.0.3.77 is in neither: both dropped (no RST either).
    assert probe(testbed.PEER_OTHER_SOURCE, 2376) == "dropped"
    assert probe(testbed.PEER_OTHER_SOURCE, 22) == "dropped"
    # Not vacuous: with the table gone the same probes connect.
    lab.sh("nft list table inet functions_runtime > /run/fr-table.nft && nft delete table inet functions_runtime")
    try:
        assert probe(testbed.PEER_OTHER_SOURCE, 2376) == "open"
        assert probe(testbed.PEER_OTHER_SOURCE, 22) == "open"
    finally:
        lab.sh("nft -f /etc/nftables.d/functions-runtime.nft")
    assert probe(testbed.PEER_OTHER_SOURCE, 2376) == "dropped"
    # The admin path (SSH from 10.0.2.2 through QEMU's forward) passes: this
    # very connection; and the forwarded endpoint (10.0.2.2) passed above.
    assert lab.sh("echo $SSH_CLIENT").split()[0] == testbed.HOST_FROM_GUEST


# ---------------------------------------------------------------- destructive, in order


def installed_state(lab: SharedGuest) -> str:
    return lab.sh(
        "cd /; sha256sum /usr/local/bin/nerdctl; cat /opt/functions-runtime/state/*.version; "
        "find /opt/kata -type f -print0 | sort -z | xargs -0 sha256sum"
    )


def test_tampered_archive_is_refused_and_leaves_the_host_as_it_was(lab):
    lab.fresh(VERIFIED)
    before = installed_state(lab)
    bumped = lab.program(lab.hcloud_config(catalog=lab.artifacts.bumped_catalog))
    steps = host_steps(bumped, testbed.HOST_NAME)
    result = replay(lab.vm, steps, check=False)
    by = results_by_step(result)
    assert [r.returncode for r in result.results[:-1]] == [0] * (len(result.results) - 1)
    install = by.get("install")
    assert install is not None and result.results[-1] is install, log_replay(result)
    assert install.returncode != 0
    assert "nothing was installed" in install.stderr and "sha256" in install.stderr, install.stderr
    assert lab.mirror.downloads(testbed.nerdctl_file(testbed.NERDCTL_BUMP_VERSION)) == 1
    assert installed_state(lab) == before
    # The scripts' work directories (make_work_dir); not systemd's
    # /var/tmp/systemd-private-*-functions-runtime-authz.service-* (PrivateTmp).
    assert lab.sh("find /var/tmp -maxdepth 1 -name 'functions-runtime.*' | wc -l").strip() == "0", "download left behind"


def test_isolation_vm_fails_with_kata_runtime_checks_message(lab):
    lab.fresh(VERIFIED)
    daemon_before = lab.sh("sha256sum /etc/docker/daemon.json")
    steps = host_steps(lab.program(lab.dedicated_config("vm")), testbed.HOST_NAME)
    result = replay(lab.vm, steps, check=False)
    by = results_by_step(result)
    configure = by.get("configure")
    assert configure is not None and configure.returncode != 0, log_replay(result)
    line = configure.stderr.strip().splitlines()[-1]
    assert "Kata Containers usable (functions-runtime:isolation is vm)" in line
    assert "'kata-runtime check' failed" in line and "test archive, not Kata" in line
    assert lab.sh("sha256sum /etc/docker/daemon.json") == daemon_before, "daemon.json changed"


def test_isolation_vm_without_kvm_fails_with_the_no_kvm_message(lab):
    lab.fresh(VERIFIED)
    lab.sh("for m in kvm_amd kvm_intel kvm; do modprobe -r $m 2>/dev/null || true; done; test ! -e /dev/kvm")
    steps = host_steps(lab.program(lab.dedicated_config("vm")), testbed.HOST_NAME)
    result = replay(lab.vm, steps, check=False)
    failed = result.results[-1]
    assert failed.name == f"{testbed.HOST_NAME}-install" and failed.returncode != 0, log_replay(result)
    line = failed.stderr.strip().splitlines()[-1]
    assert "FAILED on host lab-1" in line and "no usable /dev/kvm" in line
    assert "Hetzner Cloud servers have no nested virtualization" in line
    assert "set functions-runtime:isolation to sandbox" in line


# Test fixtures in the guest, like the metadata responder.
# A dpkg hook that holds dpkg after an unpack run (before apt's configure run)
# while the hold file exists: the bound of the interrupter below, so dpkg can
# never finish the job unseen.
DPKG_HOLD = "/run/hostlab-dpkg-hold"
DPKG_HELD = "/run/hostlab-dpkg-held"
DPKG_HOLD_HOOK = f"""set -eu
cat > /usr/local/sbin/hostlab-dpkg-hold <<'HOOK'
#!/bin/sh
[ "${{DPKG_HOOK_ACTION:-}}" = unpack ] || exit 0
[ -e {DPKG_HOLD} ] || exit 0
touch {DPKG_HELD}
while [ -e {DPKG_HOLD} ]; do sleep 1; done
HOOK
chmod 0755 /usr/local/sbin/hostlab-dpkg-hold
echo 'post-invoke=/usr/local/sbin/hostlab-dpkg-hold' > /etc/dpkg/dpkg.cfg.d/hostlab-hold
rm -f {DPKG_HELD}
touch {DPKG_HOLD}
"""
DPKG_HOLD_REMOVE = (
    f"rm -f {DPKG_HOLD} {DPKG_HELD} /etc/dpkg/dpkg.cfg.d/hostlab-hold /usr/local/sbin/hostlab-dpkg-hold; "
    "pkill -KILL -f '[s]cripts/install_runtime.sh' || true"
)
# The interrupter: while apt's `dpkg --unpack` runs, freeze it (SIGSTOP), read
# the packages' states, and if one is half-installed (dpkg is unpacking its
# files) kill the install's whole session with SIGKILL, as a lost connection
# to a crashed machine would; else let dpkg go on a little and look again.
# The state is read while dpkg is frozen, so what it says is what the kill
# leaves behind. Prints the states it saw at the kill.
DPKG_INTERRUPTER = f"""set -u
states=""
deadline=$(( $(date +%s) + {DPKG_HOLD_TIMEOUT_S} ))
while :; do
  pid=$(pgrep -o -f '^(/usr/bin/)?dpkg .*--unpack' || true)
  if [ -n "$pid" ] && kill -STOP "$pid" 2>/dev/null; then
    states=$(dpkg-query -W -f='${{Package}}=${{db:Status-Abbrev}} ' docker.io docker-cli 2>/dev/null || true)
    case "$states" in
      *=iH*)
        sid=$(ps -o sid= -p "$pid" | tr -d ' ')
        pkill -KILL -s "$sid"
        echo "$states"
        exit 0 ;;
    esac
    kill -CONT "$pid"
  fi
  if [ -e {DPKG_HELD} ]; then
    echo "dpkg finished its unpack run before a package was seen half-installed ($states)" >&2; exit 1
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "no half-installed package within {DPKG_HOLD_TIMEOUT_S} s ($states)" >&2; exit 1
  fi
  sleep 0.05
done
"""


def test_interrupted_install_converges(lab):
    # From `installed`, Docker's packages removed again (their .debs stay in
    # apt's cache, so this test costs dpkg time, not downloads); the install
    # step must put them back, and is killed while dpkg unpacks them: at an
    # observed state (a package half-installed), not after a guessed delay.
    lab.fresh(INSTALLED)
    lab.sh(
        "systemctl stop docker.socket docker.service || true; "
        "DEBIAN_FRONTEND=noninteractive apt-get purge -y -q docker.io docker-cli >/dev/null",
        timeout=APT_TIMEOUT_S,
    )
    index = next(i for i, s in enumerate(lab.steps) if s.name.endswith("-install"))
    pre = replay(lab.vm, lab.steps[:index], check=False)
    assert all(r.returncode == 0 for r in pre.results), log_replay(pre)
    install = lab.steps[index]
    lab.sh(DPKG_HOLD_HOOK)
    proc = subprocess.Popen(
        [*lab.vm.ssh_args(), install.create],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        interrupter = lab.vm.ssh(DPKG_INTERRUPTER, timeout=DPKG_HOLD_TIMEOUT_S + 60)
        assert interrupter.returncode == 0, interrupter.stderr
        proc.wait(timeout=SESSION_END_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        lab.sh(DPKG_HOLD_REMOVE)
    assert proc.returncode != 0
    seen = dict(word.split("=") for word in interrupter.stdout.split())
    print(f"\ninstall killed while dpkg's states were {seen}")
    # Really interrupted: dpkg left a package half-installed, and says so.
    states = dict(
        line.split("=") for line in lab.sh(
            "dpkg-query -W -f='${Package}=${db:Status-Abbrev}\\n' docker.io docker-cli 2>/dev/null || true"
        ).split()
    )
    # iH: half-installed (an R after it: dpkg requires a reinstall).
    half_installed = {package for package, state in states.items() if state.startswith("iH")}
    assert half_installed, states
    assert lab.sh("dpkg --audit", check=False).strip(), "dpkg --audit found nothing to finish"
    converge = replay(lab.vm, lab.steps, check=False)
    lab.timings["converge_replay_s"] = round(sum(r.seconds for r in converge.results), 1)
    assert all(r.returncode == 0 for r in converge.results), log_replay(converge)
    by = results_by_step(converge)
    assert "dpkg-recovered" in step_json(by["install"])["changed"]
    assert "running 'dpkg --configure -a' first" in by["install"].stderr
    assert lab.sh("dpkg --audit").strip() == ""
    # What `dpkg --configure -a` cannot finish (a half-installed package) is installed again.
    reinstalled = set(step_json(by["install"])["installedPackages"])
    assert half_installed <= reinstalled <= {"docker.io", "docker-cli"}, reinstalled
    assert lab.sh("dpkg-query -W -f='${db:Status-Abbrev}|' docker.io docker-cli") == "ii |ii |"
    assert json.loads(by["verify"].stdout)["passed"] is True
