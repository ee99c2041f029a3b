"""scripts/verify_host.sh: the report contract and the decision logic.

Proves: on every failure the script still prints exactly one report JSON
(passed false, failedCheck, reason naming the host's problem) and exits with
the check's own code; ISOLATION=vm on this machine (no vmx/svm) fails the Kata
preflight with the clear message; the endpoint checks against a real mutual
TLS server on 127.0.0.1 (Python ssl, client certificate required) pass both
halves, and against a server that does NOT require a client certificate the
"refuses no cert" check fails; the isolation probe records "skipped" (never
"passed") when the host itself cannot reach the target; a reachable target
fails; a verify image without a digest is refused; the cold-start median;
the Kata preflight asks `kata-runtime check` about the configuration in force
and refuses one that is not the stack's hypervisor's (a kata-runtime test
double: which file is asked about, not Kata's answer).
Does not prove: Docker, gVisor or Kata behaviour (no dockerd runs here); the
container probes are stubbed in the decision tests. The hostlab runs the whole
script for real against Docker and gVisor.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.scripts.helpers import (
    GVISOR_VERSION,
    catalog_rows,
    free_port,
    install_fake_kata,
    kvm_env,
    make_pki,
    release_runsc_path,
    run_bash,
    run_script,
    write_catalog,
    write_runsc,
)

SERVER = r"""
import http.server, json, ssl, sys
port, cert, key, ca, require = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] == "1"
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"Components": [{"Name": "Engine", "Version": "26.1.5+dfsg1"}], "Version": "26.1.5+dfsg1"}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.load_verify_locations(ca)
ctx.verify_mode = ssl.CERT_REQUIRED if require else ssl.CERT_NONE
srv = http.server.HTTPServer(("127.0.0.1", port), H)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"""


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path / "pki")


@pytest.fixture
def base_env(fr_env, tmp_path):
    """gVisor's release installed as the install step leaves it (a stand-in
    runsc at its versioned path, the catalog naming that version)."""
    write_catalog(tmp_path / "fr", catalog_rows())
    write_runsc(release_runsc_path(fr_env))
    # PATH without any docker CLI, so the first Docker-using check fails here.
    return {
        **fr_env,
        "PATH": "/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PRIVATE_ADDRESS": "127.0.0.1",
        "ENDPOINT_PORT": str(free_port()),
        "VERIFY_IMAGE": "functions-runtime/verify:busybox",
        "VERIFY_IMAGE_ARCHIVE": "",
        "COLD_START_RUNS": "3",
        "LIMIT_MAX_MILLICPUS": "2000",
        "VERIFY_OUTSIDE": "192.0.2.10 8080",
    }


def tls_server(pki, port: int, require_client_cert: bool):
    d = pki.directory
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SERVER,
            str(port),
            str(d / "server.pem"),
            str(d / "server.key"),
            str(d / "ca.pem"),
            "1" if require_client_cert else "0",
        ]
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)


def report(r):
    """stdout must be exactly one JSON document."""
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1, r.stdout
    return json.loads(lines[0])


def test_vm_without_kvm_fails_preflight_with_report(base_env, pki):
    r = run_script(
        "verify_host.sh", {**base_env, "ISOLATION": "vm"}, stdin=pki.ca + pki.client_cert + pki.client_key
    )
    assert r.rc == 10
    rep = report(r)
    assert rep["schema"] == "functions-runtime/verify@1" and rep["host"] == "test-host-1"
    assert rep["passed"] is False and rep["failedCheck"] == "preflight-kata"
    assert "Hetzner Cloud servers have no nested virtualization" in rep["reason"]
    assert "set functions-runtime:isolation to sandbox" in rep["reason"]
    assert rep["runtimes"][0]["name"] == "kata" and rep["runtimes"][0]["guestKernel"] is None
    assert rep["checks"] == [
        {"name": "preflight-kata", "status": "failed", "passed": False, "detail": rep["checks"][0]["detail"]}
    ]
    assert "BEGIN" not in r.stdout + r.stderr


# The Kata preflight with the kata-runtime test double (tests/scripts/helpers.py),
# the vhost modules taken as loaded: which configuration verify asks Kata
# about, not what real Kata answers.
PREFLIGHT = "module_loaded() { return 0; }; check_preflight_kata"


def clh_preflight(base_env, tmp_path, kata, in_force: str):
    """The preflight of a clh stack on a KVM host whose configuration in
    force is the release's file for `in_force`; (result, its path)."""
    env = {**base_env, **kvm_env(tmp_path, True), "ISOLATION": "vm", "KATA_HYPERVISOR": "clh"}
    path = tmp_path / "etc-kata" / "configuration.toml"
    path.parent.mkdir(parents=True)
    path.write_text(kata.config(in_force).read_text())
    return run_bash(PREFLIGHT, env, script="verify_host.sh"), path


def test_kata_preflight_checks_the_configuration_in_force_for_the_stacks_hypervisor(base_env, tmp_path):
    kata = install_fake_kata(tmp_path)
    r, in_force = clh_preflight(base_env, tmp_path, kata, in_force="clh")
    assert r.rc == 0, r.stderr
    assert kata.calls == [f"--config {in_force} check --no-network-checks"]
    assert "kata-runtime check passed with the clh configuration" in r.stderr


def test_kata_preflight_fails_when_another_hypervisors_configuration_is_in_force(base_env, tmp_path):
    kata = install_fake_kata(tmp_path)
    r, in_force = clh_preflight(base_env, tmp_path, kata, in_force="qemu")
    assert r.rc == 10
    line = r.stderr.strip().splitlines()[-1]
    assert f"the Kata configuration in force ({in_force}) to be the clh one ({kata.config('clh')})" in line
    assert "found a different file" in line and "re-run the configure step" in line
    assert kata.calls == [], "a check against the wrong configuration proves nothing"


def test_kata_preflight_names_the_configuration_when_its_check_fails(base_env, tmp_path):
    kata = install_fake_kata(tmp_path, failing=("clh",))
    r, in_force = clh_preflight(base_env, tmp_path, kata, in_force="clh")
    assert r.rc == 10
    line = r.stderr.strip().splitlines()[-1]
    assert f"'kata-runtime check' to pass with the clh configuration in force ({in_force})" in line
    assert "ERROR: kvm is not usable (nested)" in line
    assert f"kata-runtime --config {in_force} check --verbose" in line


@pytest.mark.parametrize(
    ("env_change", "stdin", "rc"),
    [({}, "", 1), ({"COLD_START_RUNS": "4"}, None, 2), ({"PRIVATE_ADDRESS": ""}, None, 1)],
)
def test_input_errors_still_print_report(base_env, pki, env_change, stdin, rc):
    stdin = pki.ca + pki.client_cert + pki.client_key if stdin is None else stdin
    r = run_script("verify_host.sh", {**base_env, **env_change}, stdin=stdin)
    assert r.rc == rc
    rep = report(r)
    assert rep["passed"] is False and rep["failedCheck"] == "inputs" and rep["reason"].startswith("expected ")


def test_endpoint_checks_against_real_mtls_server(base_env, pki):
    server = tls_server(pki, int(base_env["ENDPOINT_PORT"]), require_client_cert=True)
    try:
        r = run_script("verify_host.sh", base_env, stdin=pki.ca + pki.client_cert + pki.client_key)
    finally:
        server.terminate()
        server.wait(timeout=10)
    rep = report(r)
    status = {c["name"]: c["status"] for c in rep["checks"]}
    assert status["preflight-runsc"] == "passed"
    preflight = next(c for c in rep["checks"] if c["name"] == "preflight-runsc")
    assert preflight["detail"] == (
        f"{release_runsc_path(base_env)}: runsc version release-{GVISOR_VERSION}; "
        f"gVisor's pinned release {GVISOR_VERSION}"
    )
    assert status["endpoint-accepts-client-cert"] == "passed"
    assert status["endpoint-refuses-no-cert"] == "passed", rep
    # No docker CLI here: the next check fails, with its own exit code.
    assert rep["failedCheck"] == "default-runtime" and r.rc == 12
    assert rep["versions"]["docker"] == "26.1.5"
    assert "checking endpoint refuses clients without a certificate... passed" in r.stderr


def test_endpoint_without_client_cert_requirement_fails(base_env, pki):
    server = tls_server(pki, int(base_env["ENDPOINT_PORT"]), require_client_cert=False)
    try:
        r = run_script("verify_host.sh", base_env, stdin=pki.ca + pki.client_cert + pki.client_key)
    finally:
        server.terminate()
        server.wait(timeout=10)
    rep = report(r)
    assert r.rc == 11 and rep["failedCheck"] == "endpoint-refuses-no-cert"


def test_nothing_listening_fails_accepts_check(base_env, pki):
    r = run_script("verify_host.sh", base_env, stdin=pki.ca + pki.client_cert + pki.client_key)
    rep = report(r)
    assert r.rc == 11 and rep["failedCheck"] == "endpoint-accepts-client-cert"


@pytest.mark.parametrize(
    ("host_reaches", "probe", "rc", "status"),
    [
        ("no", "169.254.169.254 80 unreachable", 0, "skipped"),  # dedicated server, no metadata service
        ("no", "169.254.169.254 80 reachable", 0, "skipped"),  # never probed, never "passed"
        ("yes", "169.254.169.254 80 unreachable", 0, "passed"),
        ("yes", "169.254.169.254 80 reachable", 15, "failed"),
        ("yes", "docker: Error response from daemon: No such image", 15, "failed"),
        ("yes", "10.0.0.2 80 unreachable", 15, "failed"),  # another target's line proves nothing here
    ],
)
def test_isolation_probe_decision(base_env, host_reaches, probe, rc, status):
    snippet = (
        f"check_unreachable runsc metadata 169.254.169.254 80 {host_reaches} '{probe}'; "
        'echo "${CHECK_STATUS[0]}"'
    )
    r = run_bash(snippet, base_env, script="verify_host.sh")
    assert r.rc == rc, r.stderr
    if rc == 0:
        assert r.stdout.strip() == status
    else:
        assert "169.254.169.254:80" in r.stderr


def isolation_run(base_env, tmp_path, reachable: str, outside: str = "192.0.2.10 8080"):
    """check_isolation with the container's own probe loop run here under sh:
    nc is a stub that "connects" when `[ ADDR PORT ]` matches the shell test
    `reachable`, and the peer is a stand-in (start_peer stubbed). Proves the
    checks' order and decisions, not real networking (the hostlab does)."""
    calls = tmp_path / "calls"
    nc = tmp_path / "bin" / "nc"
    nc.parent.mkdir(exist_ok=True)
    nc.write_text(f'#!/bin/sh\naddr=$3 port=$4\n{reachable}\n')
    nc.chmod(0o755)
    snippet = (
        f"PATH={nc.parent}:$PATH; "
        'host_reaches() { [[ $1 != 169.254.169.254 ]]; }; '
        "start_peer() { PEER_NET=net-$1; PEER_NAME=peer-$1; PEER_ADDR=172.18.0.2; }; "
        "remove_peer() { :; }; "
        f'run_in() {{ echo "$1 ${{RUN_OPTS[*]}}" >> {calls}; shift; "$@"; }}; '
        'check_isolation runsc; echo "dns=${USER_NETWORK_DNS[runsc]}"'
    )
    env = {**base_env, "PRIVATE_ADDRESS": "10.0.0.2", "ENDPOINT_PORT": "2376", "SSH_PORT": "22",
           "VERIFY_OUTSIDE": outside}
    r = run_bash(snippet, env, script="verify_host.sh")
    outcomes = [line.split("... ")[1].split()[0] for line in r.stderr.splitlines() if "... " in line]
    return r, outcomes, calls.read_text().splitlines() if calls.exists() else []


def test_one_probe_container_on_the_peers_network_for_every_target(base_env, tmp_path):
    """The metadata service is out of the host's reach, so it is not probed;
    the positive controls pass first, then SSH is found reachable: a failure."""
    r, outcomes, calls = isolation_run(
        base_env, tmp_path, '[ "$port" = 22 ] || [ "$addr" = 172.18.0.2 ] || [ "$addr" = 192.0.2.10 ] || [ "$addr" = peer-runsc ]'
    )
    assert calls == ["runsc --network net-runsc"], "expected exactly one probe container, on the peer's network"
    assert outcomes == ["passed", "passed", "skipped:", "passed", "FAILED"], r.stderr
    assert r.rc == 15 and "10.0.0.2:22 unreachable from inside a runsc container" in r.stderr


def test_a_sandbox_without_network_fails_the_positive_control(base_env, tmp_path):
    """Everything unreachable used to pass every isolation check."""
    r, outcomes, _ = isolation_run(base_env, tmp_path, "false")
    assert outcomes == ["FAILED"], r.stderr
    assert r.rc == 15 and "172.18.0.2:8080 (peer)" in r.stderr and "positive control" in r.stderr


def test_outside_unreachable_fails_and_none_is_reported_as_skipped(base_env, tmp_path):
    r, outcomes, _ = isolation_run(base_env, tmp_path, '[ "$addr" = 172.18.0.2 ] || [ "$addr" = peer-runsc ]')
    assert outcomes == ["passed", "FAILED"], r.stderr
    assert r.rc == 15 and "192.0.2.10:8080" in r.stderr
    r, outcomes, _ = isolation_run(base_env, tmp_path, '[ "$addr" = 172.18.0.2 ] || [ "$addr" = peer-runsc ]', outside="none")
    assert outcomes == ["passed", "skipped:", "skipped:", "passed", "passed"], r.stderr
    assert r.rc == 0 and "verify.outsideProbe is none" in r.stderr


def test_peer_unreachable_by_name_is_reported_not_failed(base_env, tmp_path):
    r, outcomes, _ = isolation_run(base_env, tmp_path, '[ "$addr" = 172.18.0.2 ] || [ "$addr" = 192.0.2.10 ]')
    assert r.rc == 0, r.stderr
    assert r.stdout.strip().endswith("dns=false")
    assert "userNetworkDns: false" in r.stderr
    r, _, _ = isolation_run(base_env, tmp_path, '[ "$addr" = 172.18.0.2 ] || [ "$addr" = 192.0.2.10 ] || [ "$addr" = peer-runsc ]')
    assert r.rc == 0 and r.stdout.strip().endswith("dns=true"), r.stderr


@pytest.mark.parametrize("bad", ["192.0.2.10:8080", "192.0.2.10", "a b c"])
def test_malformed_outside_probe_is_refused(base_env, bad):
    r = run_bash("read_inputs", {**base_env, "VERIFY_OUTSIDE": bad}, script="verify_host.sh")
    assert r.rc == 2 and "verify.outsideProbe" in r.stderr, r.stderr


def test_verify_image_without_digest_is_refused(base_env):
    snippet = "endpoint_docker() { return 1; }; check_verify_image"
    r = run_bash(snippet, {**base_env, "VERIFY_IMAGE": "busybox:latest"}, script="verify_host.sh")
    assert r.rc == 13 and "pinned by digest" in r.stderr


def test_busybox_image_rootfs(base_env, tmp_path):
    """The tar handed to `docker import` holds bin/busybox and its applet links."""
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF-fake")
    busybox.chmod(0o755)
    out = tmp_path / "captured.tar"
    snippet = f'local_docker() {{ cp "${{@: -2:1}}" "{out}"; }}; make_work_dir w; build_busybox_image "$w"'
    r = run_bash(snippet, {**base_env, "FR_BUSYBOX": str(busybox)}, script="verify_host.sh")
    assert r.rc == 0, r.stderr
    listing = subprocess.run(["tar", "-tvf", str(out)], capture_output=True, text=True, check=True).stdout
    for applet in ("sh", "uname", "wget", "nc", "true", "sleep", "awk"):
        assert f"./bin/{applet} -> busybox" in listing
    assert "./bin/busybox" in listing


@pytest.mark.parametrize(
    ("values", "median"), [("5 1 3", "3"), ("900 100 300 200 800", "300"), ("7 7 7", "7")]
)
def test_median(base_env, values, median):
    r = run_bash(f"printf '%s\\n' {values} | median", base_env, script="verify_host.sh")
    assert r.stdout.strip() == median


def test_report_json_is_valid_with_awkward_details(base_env):
    snippet = (
        "CERTS=''; WANTED=(runsc); RUNSC=$(runsc_path); NETWORK[runsc]=sandbox; GUEST_KERNEL[runsc]=4.4.0; "
        "COLD_MEDIAN[runsc]=812; PASSED=true; "
        "record_check x passed $'tab\\there \"quoted\" \\\\ back\\nline'; print_report"
    )
    r = run_bash(snippet, base_env, script="verify_host.sh")
    rep = json.loads(r.stdout)
    assert rep["passed"] is True and rep["failedCheck"] is None
    assert rep["runtimes"] == [
        {
            "name": "runsc",
            "shim": str(release_runsc_path(base_env)),
            "isolation": "sandbox",
            "network": "sandbox",
            "hypervisor": None,
            "guestKernel": "4.4.0",
            "coldStartMs": {"median": 812, "runs": 3},
            "userNetworkDns": None,
        }
    ]
    assert rep["checks"][0]["detail"] == 'tab here "quoted" \\ back line'
    assert rep["versions"]["runsc"] == f"release-{GVISOR_VERSION}"


@pytest.mark.parametrize(
    ("args", "allowed", "rc", "network", "words"),
    [
        ("--platform=systrap ", "false", 0, "sandbox", "arguments: --platform=systrap; network sandbox"),
        ("--platform=systrap --network=sandbox ", "false", 0, "sandbox", "network sandbox"),
        ("--platform=systrap --network=host ", "true", 0, "host", "network host"),
        ("--platform=systrap --network=host ", "false", 12, None,
         "found Docker runs runsc with --network=host: socket calls reach the host kernel"),
        ("--platform=systrap --network=none ", "true", 12, None, "found runtime argument --network=none"),
    ],
    ids=["netstack", "netstack-explicit", "host-with-opt-in", "host-without-opt-in", "no-network"],
)
def test_the_runsc_network_is_read_from_the_running_daemon(base_env, args, allowed, rc, network, words):
    """docker info is stubbed with what Docker 26 prints for the template
    (path|args): proves the decision and the report, not Docker's output."""
    path = release_runsc_path(base_env)
    snippet = (
        f"endpoint_docker() {{ printf '%s' '{path}|{args}'; }}; WANTED=(runsc); RUNSC=$(runsc_path); "
        "check_runsc_network; PASSED=true; print_report"
    )
    env = {**base_env, "GVISOR_ALLOW_HOST_NETWORK": allowed}
    r = run_bash(snippet, env, script="verify_host.sh")
    assert r.rc == rc, r.stderr
    assert words in r.stderr
    if rc == 0:
        rep = json.loads(r.stdout)
        assert rep["runtimes"][0]["network"] == network
        assert rep["checks"][0]["name"] == "runtime-runsc-network"
        assert ("WARNING" in r.stderr) is (network == "host")


def test_a_daemon_running_another_runsc_fails_the_network_check(base_env):
    snippet = "endpoint_docker() { printf '%s' '/usr/bin/runsc|--platform=systrap '; }; RUNSC=$(runsc_path); check_runsc_network"
    r = run_bash(snippet, base_env, script="verify_host.sh")
    assert r.rc == 12
    assert f"Docker's runsc runtime at {release_runsc_path(base_env)} (functions-runtime:gvisor.runsc is release)" in r.stderr
    assert "found '/usr/bin/runsc'" in r.stderr


def test_a_report_before_the_network_check_says_no_network(base_env):
    r = run_bash("WANTED=(runsc kata); NETWORK[kata]=vm; print_report", base_env, script="verify_host.sh")
    runtimes = {rt["name"]: rt for rt in json.loads(r.stdout)["runtimes"]}
    assert runtimes["runsc"]["network"] is None and runtimes["kata"]["network"] == "vm"


def test_with_gvisor_runsc_debian_the_preflight_checks_and_reports_debians_runsc(base_env):
    debian = write_runsc(Path(base_env["FR_DEBIAN_RUNSC"]), version="0.0~20240729.0")
    env = {**base_env, "GVISOR_RUNSC": "debian"}
    r = run_bash("check_preflight_runsc; WANTED=(runsc); print_report", env, script="verify_host.sh")
    assert r.rc == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["runtimes"][0]["shim"] == str(debian)
    assert rep["versions"]["runsc"] == "release-20240729.0"
    assert "Debian's runsc package, the fallback gvisor.runsc: debian chose" in rep["checks"][0]["detail"]


def test_a_missing_runsc_fails_the_preflight_naming_the_setting(base_env):
    release_runsc_path(base_env).unlink()
    r = run_bash("check_preflight_runsc", base_env, script="verify_host.sh")
    assert r.rc == 10
    assert f"an executable {release_runsc_path(base_env)} (functions-runtime:gvisor.runsc is release)" in r.stderr


@pytest.mark.parametrize(
    ("info", "mode", "listeners", "rc", "message"),
    [
        ("true json-file", 0o600, "10.0.0.2:2376", 0, "socket 600 root:root"),
        ("false json-file", 0o600, "10.0.0.2:2376", 12, "LiveRestoreEnabled and LoggingDriver: false json-file"),
        ("true journald", 0o600, "10.0.0.2:2376", 12, "LoggingDriver: true journald"),
        ("true json-file", 0o660, "10.0.0.2:2376", 12, "mode 600, owned by root:root; found 660 root root"),
        ("true json-file", 0o600, "10.0.0.2:2376 0.0.0.0:2375", 12, "listeners: 10.0.0.2:2376 0.0.0.0:2375"),
    ],
)
def test_daemon_hardening_check(base_env, tmp_path, info, mode, listeners, rc, message):
    """Docker's answers are stubbed (no dockerd here); the socket's mode is a
    real file's. The hostlab runs the check against a real dockerd."""
    if os.geteuid() != 0:
        pytest.skip("the stand-in socket must be root's own file: run as root (CI does)")
    sock = tmp_path / "docker.sock"
    sock.touch()
    sock.chmod(mode)
    lines = "\\n".join(listeners.split())
    snippet = (
        f"endpoint_docker() {{ echo '{info}'; }}; dockerd_tcp_listeners() {{ printf '{lines}\\n'; }}; "
        "check_daemon_hardening"
    )
    env = {**base_env, "FR_DOCKER_SOCKET": str(sock), "PRIVATE_ADDRESS": "10.0.0.2", "ENDPOINT_PORT": "2376"}
    r = run_bash(snippet, env, script="verify_host.sh")
    assert r.rc == rc, r.stderr
    assert message in r.stderr


@pytest.mark.parametrize(
    ("image", "present", "loads"),
    [
        ("sha256:" + "a" * 64, True, 0),  # an image ID already there: nothing to load
        ("sha256:" + "a" * 64, False, 1),
        ("registry.example/verify@sha256:" + "b" * 64, True, 0),
        ("verify:lab", True, 1),  # a tag may point at an older image than the archive's
    ],
)
def test_verify_image_archive_is_loaded_only_when_needed(base_env, tmp_path, image, present, loads):
    """docker is stubbed: proves the decision, not `docker load` itself."""
    archive = tmp_path / "image.tar"
    archive.write_bytes(b"archive")
    calls = tmp_path / "docker-calls"
    flag = tmp_path / "image-present"  # the stub's state: docker load runs in a subshell
    if present:
        flag.touch()
    # Loads go through the local socket (root), inspects through the endpoint.
    stub = f'{{ echo "$*" >> {calls}; case $1 in load) touch {flag} ;; image) [[ -e {flag} ]] ;; esac; }}'
    snippet = f"endpoint_docker() {stub}; local_docker() {stub}; check_verify_image"
    env = {**base_env, "VERIFY_IMAGE": image, "VERIFY_IMAGE_ARCHIVE": str(archive)}
    r = run_bash(snippet, env, script="verify_host.sh")
    assert r.rc == 0, r.stderr
    assert sum(line.startswith("load ") for line in calls.read_text().splitlines()) == loads


# ---------------------------------------------------------------- the endpoint policy and limits (decisions; docker stubbed)

REFUSAL = "Error response from daemon: authorization denied by plugin functions-runtime-authz: functions-runtime policy: --privileged is not allowed on this endpoint"


@pytest.mark.parametrize(
    ("create", "rc", "words"),
    [
        (f'echo "{REFUSAL}" >&2; return 1', 0, "checking the endpoint refuses a container without limits... passed"),
        ('echo "some other error" >&2; return 1', 17, "a refusal from the endpoint policy"),
        ("echo c0ffee; return 0", 17, "it was allowed (container removed)"),
    ],
)
def test_policy_refusal_checks(base_env, tmp_path, create, rc, words):
    removed = tmp_path / "removed"
    snippet = (
        f"endpoint_docker() {{ {create}; }}; local_docker() {{ echo \"$*\" >> {removed}; }}; "
        "set_limit_opts; check_policy_refusals"
    )
    r = run_bash(snippet, base_env, script="verify_host.sh")
    assert r.rc == rc, r.stderr
    assert words in r.stderr
    if "allowed" in words:
        assert removed.read_text().strip() == "rm -f c0ffee"


def test_every_verify_container_carries_limits_within_the_stacks_maximum(base_env):
    r = run_bash('set_limit_opts; echo "${LIMIT_OPTS[*]}"', {**base_env, "LIMIT_MAX_MILLICPUS": "500"}, script="verify_host.sh")
    assert r.stdout.strip() == "--memory 256m --pids-limit 128 --cpus 0.500"
    r = run_bash('set_limit_opts; echo "${LIMIT_OPTS[*]}"', base_env, script="verify_host.sh")
    assert r.stdout.strip() == "--memory 256m --pids-limit 128 --cpus 1.000"


def _lines(word: str, upto: int, tail: str = "") -> str:
    return "\\n".join(f"{word} {i}" for i in range(1, upto + 1)) + tail


@pytest.mark.parametrize(
    ("output", "answers", "rc", "words"),
    [
        (_lines("started", 120) + "\\nsh: cannot fork: Resource temporarily unavailable", True, 0,
         "120 of 256 sleepers started under --pids-limit 128"),
        (_lines("started", 256) + "\\nstarted all", True, 18, "256 of 256 started"),
        (_lines("started", 128), True, 18, "128 of 256 started"),
        ("docker: Error response from daemon: OCI runtime create failed", True, 18, "the bomb container to run"),
        (_lines("started", 40), False, 18, "dockerd to answer after the bomb"),
    ],
)
def test_pid_limit_check_reads_the_effect(base_env, output, answers, rc, words):
    snippet = (
        f"run_in() {{ printf '{output}\\n'; return 2; }}; host_answers() {{ {'true' if answers else 'false'}; }}; "
        "check_pid_limit runsc"
    )
    r = run_bash(snippet, base_env, script="verify_host.sh")
    assert r.rc == rc, r.stderr
    assert words in r.stderr


MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("output", "rc", "words"),
    [
        ("held 67108864\\nheld 134217728", 0, "held at most 128 MiB of 512 MiB under --memory 256m"),
        ("held 268435456\\nheld 536870912\\nheld all", 18, "512 MiB held of 512 MiB"),
        ("held 536870912", 18, "512 MiB held"),
        ("awk: not found", 18, "the hog container to run"),
    ],
)
def test_memory_limit_check_reads_the_effect(base_env, output, rc, words):
    snippet = f"run_in() {{ printf '{output}\\n'; return 137; }}; host_answers() {{ true; }}; check_memory_limit runsc"
    r = run_bash(snippet, base_env, script="verify_host.sh")
    assert r.rc == rc, r.stderr
    assert words in r.stderr


@pytest.mark.parametrize("applet_run", ["bomb", "hog"])
def test_the_bomb_and_the_hog_are_bounded_where_no_limit_holds(base_env, tmp_path, applet_run):
    """Run for real with the machine's sh/awk (no limit at all): both stop by
    themselves and say the limit did not hold, so verify fails, never hangs."""
    if applet_run == "bomb":
        snippet = 'sh -c "${FORK_BOMB/sleep 600/sleep 0.01}" 20'
        r = run_bash(snippet, base_env, script="verify_host.sh")
        assert r.stdout.splitlines()[-1] == "started all"
    else:
        r = run_bash('awk -v target=65536 "$MEMORY_HOG"', base_env, script="verify_host.sh")
        assert r.stdout.splitlines()[-2:] == ["held 65536", "held all"]


# ---------------------------------------------------------------- containerd directly


@pytest.mark.parametrize(
    ("client", "runtime", "gvisor_runsc", "expected"),
    [
        ("ctr", "runc", "release", "io.containerd.runc.v2"),
        ("ctr", "runsc", "release", "runc-binary:{runsc}"),  # every host has the runc shim
        ("ctr", "kata", "release", "io.containerd.kata.v2"),
        ("nerdctl", "runsc", "release", "io.containerd.runsc.v1"),  # the release's shim
        ("nerdctl", "runsc", "debian", "{runsc}"),  # Debian ships no shim: nerdctl runs the binary
        ("nerdctl", "kata", "release", "io.containerd.kata.v2"),
    ],
)
def test_each_containerd_client_names_each_runtime(base_env, client, runtime, gvisor_runsc, expected):
    r = run_bash(f"RUNSC=/x/runsc; containerd_runtime {client} {runtime}", {**base_env, "GVISOR_RUNSC": gvisor_runsc},
                 script="verify_host.sh")
    assert r.rc == 0 and r.stdout.strip() == expected.format(runsc="/x/runsc"), r.stderr


def test_ctr_runs_in_verifys_namespace_on_the_cni_network_with_runsc_through_the_runc_shim(base_env, tmp_path):
    """The exact ctr command line (a ctr stub records it); Debian's ctr runs
    it for real in the hostlab."""
    bin_dir = tmp_path / "ctr-bin"
    bin_dir.mkdir()
    (bin_dir / "ctr").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path / "args"}\n')
    (bin_dir / "ctr").chmod(0o755)
    r = run_bash(f"PATH={bin_dir}:$PATH; RUNSC=/x/runsc; CTR_ROOTFS=/r; ctr_in runsc probe-1 sh -c 'uname -r'",
                 base_env, script="verify_host.sh")
    assert r.rc == 0, r.stderr
    assert (tmp_path / "args").read_text().splitlines() == [
        "--namespace", "functions-runtime-verify", "run", "--rm", "--cni",
        "--runtime", "io.containerd.runc.v2", "--runc-binary", "/x/runsc",
        "--rootfs", "/r", "probe-1", "sh", "-c", "uname -r",
    ]


def containerd_run(base_env, tmp_path, client: str, runtime: str, reachable: str, kernel: str = "4.4.0",
                   outside: str = "192.0.2.10 8080"):
    """check_containerd with the container's probe run here under sh: `uname`
    prints `kernel`, nc "connects" when the shell test `reachable` holds, the
    peer is a stand-in at 10.4.250.5. Proves the checks' names, order and
    decisions, not containerd (the hostlab runs ctr for real)."""
    stubs = tmp_path / "probe-bin"
    stubs.mkdir(exist_ok=True)
    (stubs / "nc").write_text(f"#!/bin/sh\naddr=$3 port=$4\n{reachable}\n")
    (stubs / "uname").write_text(f"#!/bin/sh\necho {kernel}\n")
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    snippet = (
        'host_reaches() { [[ $1 != 169.254.169.254 ]]; }; '
        "start_containerd_peer() { PEER_NAME=peer-$1-$2; PEER_ADDR=10.4.250.5; }; stop_containerd_peer() { :; }; "
        f'ctr_in() {{ shift 2; PATH={stubs}:$PATH "$@"; }}; nerdctl_in() {{ shift; PATH={stubs}:$PATH "$@"; }}; '
        f"check_containerd {client} {runtime}"
    )
    env = {**base_env, "PRIVATE_ADDRESS": "10.0.0.2", "ENDPOINT_PORT": "2376", "SSH_PORT": "22", "VERIFY_OUTSIDE": outside}
    r = run_bash(snippet, env, script="verify_host.sh")
    checks = [line.split("checking ")[1] for line in r.stderr.splitlines() if "checking " in line]
    return r, checks


PEER_AND_OUTSIDE = '[ "$addr" = 10.4.250.5 ] || [ "$addr" = 192.0.2.10 ]'


@pytest.mark.parametrize("client", ["ctr", "nerdctl"])
def test_a_containerd_sandbox_with_its_own_kernel_and_a_working_network_passes(base_env, tmp_path, client):
    r, checks = containerd_run(base_env, tmp_path, client, "runsc", PEER_AND_OUTSIDE)
    assert r.rc == 0, r.stderr
    assert [c.split("... ")[1].split()[0] for c in checks] == ["passed", "passed", "passed", "skipped:", "passed", "passed"]
    assert f"{client} runs runsc with its own kernel... passed" in r.stderr
    assert f"a {client}-runsc container reaches 10.4.250.5:8080 (peer)... passed" in r.stderr
    assert f"10.0.0.2:22 (host-ssh) is unreachable from a {client}-runsc container... passed" in r.stderr


def test_a_containerd_sandbox_on_the_hosts_kernel_fails(base_env, tmp_path):
    host_kernel = os.uname().release
    r, _ = containerd_run(base_env, tmp_path, "ctr", "runsc", PEER_AND_OUTSIDE, kernel=host_kernel)
    assert r.rc == 19 and f"a guest kernel different from the host's ({host_kernel})" in r.stderr


def test_a_runc_container_through_ctr_is_held_to_the_filter_not_to_a_kernel(base_env, tmp_path):
    host_kernel = os.uname().release
    r, _ = containerd_run(base_env, tmp_path, "ctr", "runc", PEER_AND_OUTSIDE + ' || [ "$port" = 22 ]', kernel=host_kernel)
    assert "ctr runs a runc container (the host filter's baseline, no sandbox)... passed" in r.stderr
    assert r.rc == 15 and "10.0.0.2:22 unreachable from inside a ctr-runc container" in r.stderr


def test_a_containerd_container_without_network_fails_its_positive_control(base_env, tmp_path):
    r, _ = containerd_run(base_env, tmp_path, "ctr", "runsc", "false")
    assert r.rc == 15 and "10.4.250.5:8080 (peer)" in r.stderr and "positive control" in r.stderr


def test_a_containerd_container_that_does_not_start_fails_naming_the_client(base_env, tmp_path):
    snippet = (
        'host_reaches() { false; }; start_containerd_peer() { PEER_NAME=p; PEER_ADDR=10.4.250.5; }; '
        "stop_containerd_peer() { :; }; ctr_in() { echo 'ctr: failed to create shim task: OCI runtime create failed' >&2; return 1; }; "
        "check_containerd ctr runsc"
    )
    r = run_bash(snippet, {**base_env, "SSH_PORT": "22"}, script="verify_host.sh")
    assert r.rc == 19 and "ctr run --runtime runsc to succeed" in r.stderr and "OCI runtime create failed" in r.stderr


def test_nerdctl_is_skipped_and_reported_when_the_stack_says_so(base_env):
    snippet = (
        "WANTED=(runsc); NETWORK[runsc]=sandbox; prepare_ctr_rootfs() { :; }; "
        'check_containerd() { echo "ran $1 $2"; }; load_nerdctl_image() { echo loaded; }; '
        'verify_containerd; printf "%s|%s|%s\\n" "${CHECK_NAMES[0]}" "${CHECK_STATUS[0]}" "${CHECK_DETAIL[0]}"'
    )
    r = run_bash(snippet, {**base_env, "VERIFY_NERDCTL": "false"}, script="verify_host.sh")
    assert r.rc == 0, r.stderr
    assert r.stdout.splitlines() == [
        "ran ctr runc", "ran ctr runsc",
        "runtime-nerdctl|skipped|verify.nerdctl is false: nerdctl's containers are not verified on this stack",
    ]
    r = run_bash(snippet, {**base_env, "VERIFY_NERDCTL": "true"}, script="verify_host.sh")
    assert r.stdout.splitlines()[:5] == ["ran ctr runc", "ran ctr runsc", "loaded", "ran nerdctl runc", "ran nerdctl runsc"]


def test_runsc_on_the_hosts_network_stack_is_skipped_past_docker_with_the_reason(base_env):
    snippet = (
        "WANTED=(runsc); NETWORK[runsc]=host; prepare_ctr_rootfs() { :; }; "
        'check_containerd() { echo "ran $1 $2"; }; verify_containerd; echo "${CHECK_STATUS[0]}: ${CHECK_DETAIL[0]}"'
    )
    r = run_bash(snippet, {**base_env, "VERIFY_NERDCTL": "false"}, script="verify_host.sh")
    assert r.stdout.splitlines()[:2] == ["ran ctr runc", "skipped: runsc runs with --network=host here "
                                        "(gvisor.allowHostNetworkStack), which containerd's clients cannot pass"]


@pytest.mark.parametrize("bad", ["yes", "1", "False"])
def test_a_malformed_verify_nerdctl_is_refused(base_env, bad):
    r = run_bash("read_inputs", {**base_env, "VERIFY_NERDCTL": bad}, script="verify_host.sh")
    assert r.rc == 2 and "functions-runtime:verify.nerdctl" in r.stderr
