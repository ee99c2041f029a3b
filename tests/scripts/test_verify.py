"""scripts/verify_host.sh, the wrapper, run whole: the report contract and
the checks that need no Docker, through real processes.

Proves: the wrapper runs the Python verification (host_verify/) with the
step's variables and stdin; on every failure exactly one report JSON is
printed (passed false, failedCheck, reason naming the host's problem) and
the check's own exit code; ISOLATION=vm on this machine (no vmx/svm) fails
the Kata preflight with the clear message; the endpoint checks against a
real mutual TLS server on 127.0.0.1 (Python ssl, client certificate
required) pass both halves with the real curl, and against a server that
does NOT require a client certificate the "refuses no cert" check fails;
the Kata preflight asks `kata-runtime check` about the configuration in
force and refuses one that is not the stack's hypervisor's (a kata-runtime
test double: which file is asked about, not Kata's answer).
Each check's decision logic (isolation probes, limits, the policy, containerd's
clients, the image, the daemon) is tested with an injected command runner in
tests/unit/test_host_verify_checks.py and test_host_verify_engine.py.
Does not prove: Docker, gVisor or Kata behaviour (no dockerd runs here). The
hostlab runs the whole verification for real against Docker and gVisor.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.scripts.helpers import (
    GVISOR_VERSION,
    SCRIPTS,
    Result,
    _run,
    catalog_rows,
    free_port,
    install_fake_kata,
    kvm_env,
    make_pki,
    release_runsc_path,
    run_script,
    write_catalog,
    write_runsc,
    write_sidecars,
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
    runsc and sidecars at its versioned path, the catalog naming that version)."""
    write_catalog(tmp_path / "fr", catalog_rows())
    write_sidecars(write_runsc(release_runsc_path(fr_env)))
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
        "SSH_PORT": "22",
        "VERIFY_NERDCTL": "true",
        "VERIFY_NAME_PROBE": "probe.functions-runtime.test",
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
    # One check at a time: with lanes side by side, checks of other lanes running
    # when the preflight failed would be reported too.
    r = run_verify({**base_env, "ISOLATION": "vm"}, pki.ca + pki.client_cert + pki.client_key, "--jobs", "1")
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


def run_verify(env: dict[str, str], stdin: str, *args: str) -> Result:
    """The wrapper with arguments (a named subset: --only NAME,...)."""
    return _run(["bash", str(SCRIPTS / "verify_host.sh"), *args], env, stdin, 180)


# The Kata preflight with the kata-runtime test double (tests/scripts/helpers.py),
# the vhost modules loaded (directories under FR_SYS_MODULE): which
# configuration verify asks Kata about, not what real Kata answers.
def modules_loaded(tmp_path: Path) -> dict[str, str]:
    for module in ("vhost_vsock", "vhost_net"):
        (tmp_path / "sys-module" / module).mkdir(parents=True, exist_ok=True)
    return {"FR_SYS_MODULE": str(tmp_path / "sys-module")}


def clh_preflight(base_env, tmp_path, kata, in_force: str):
    """The preflight of a clh stack on a KVM host whose configuration in
    force is the release's file for `in_force`; (result, its path)."""
    env = {**base_env, **kvm_env(tmp_path, True), **modules_loaded(tmp_path), "ISOLATION": "vm", "KATA_HYPERVISOR": "clh"}
    path = tmp_path / "etc-kata" / "configuration.toml"
    path.parent.mkdir(parents=True)
    path.write_text(kata.config(in_force).read_text())
    pki = make_pki(tmp_path / "pki")
    return run_verify(env, pki.ca + pki.client_cert + pki.client_key, "--only", "preflight-kata"), path


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
    [({}, "", 2), ({"COLD_START_RUNS": "three"}, None, 2), ({"PRIVATE_ADDRESS": ""}, None, 2)],
)
def test_input_errors_still_print_report(base_env, pki, env_change, stdin, rc):
    stdin = pki.ca + pki.client_cert + pki.client_key if stdin is None else stdin
    r = run_script("verify_host.sh", {**base_env, **env_change}, stdin=stdin)
    assert r.rc == rc
    rep = report(r)
    assert rep["passed"] is False and rep["failedCheck"] == "inputs" and rep["reason"].startswith("expected ")


def verify_against_tls_server(base_env, pki, require_client_cert: bool):
    """Verify, one check at a time (the endpoint's both halves before Docker's
    first check), against a real mTLS server on the endpoint's port."""
    server = tls_server(pki, int(base_env["ENDPOINT_PORT"]), require_client_cert=require_client_cert)
    try:
        return run_verify(base_env, pki.ca + pki.client_cert + pki.client_key, "--jobs", "1")
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_endpoint_checks_against_real_mtls_server(base_env, pki):
    r = verify_against_tls_server(base_env, pki, require_client_cert=True)
    rep = report(r)
    status = {c["name"]: c["status"] for c in rep["checks"]}
    assert status["preflight-runsc"] == "passed"
    preflight = next(c for c in rep["checks"] if c["name"] == "preflight-runsc")
    assert preflight["detail"] == (
        f"{release_runsc_path(base_env)}: runsc version release-{GVISOR_VERSION}; "
        f"gVisor's pinned release {GVISOR_VERSION}, with its sidecars in {release_runsc_path(base_env).parent}/gvisor-bin"
    )
    assert status["endpoint-accepts-client-cert"] == "passed"
    assert status["endpoint-refuses-no-cert"] == "passed", rep
    # No docker CLI here: the next check fails, with its own exit code.
    assert rep["failedCheck"] == "default-runtime" and r.rc == 12
    assert rep["versions"]["docker"] == "26.1.5"
    assert "checking endpoint refuses clients without a certificate... passed" in r.stderr


def test_endpoint_without_client_cert_requirement_fails(base_env, pki):
    r = verify_against_tls_server(base_env, pki, require_client_cert=False)
    rep = report(r)
    assert r.rc == 11 and rep["failedCheck"] == "endpoint-refuses-no-cert"


def test_nothing_listening_fails_accepts_check(base_env, pki):
    r = run_verify(base_env, pki.ca + pki.client_cert + pki.client_key, "--jobs", "1")
    rep = report(r)
    assert r.rc == 11 and rep["failedCheck"] == "endpoint-accepts-client-cert"


def test_the_wrapper_lists_the_check_table(base_env):
    r = run_verify(base_env, "", "--list")
    assert r.rc == 0 and r.stdout.splitlines()[0].startswith("preflight-kata\t")


def test_a_missing_contract_fails_closed_through_the_wrapper(base_env, pki):
    r = run_verify({**base_env, "FR_CONTRACT": "/nonexistent/host.env"}, pki.ca + pki.client_cert + pki.client_key)
    assert r.rc == 1 and "expected the contract at /nonexistent/host.env" in r.stderr
