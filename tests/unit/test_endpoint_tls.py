"""docker_client's mutual TLS against a real TLS server on loopback.

The server is `openssl s_server` with a server certificate and a client CA
from the program's own mocked run (real, deterministic crypto), so this
proves the client trusts exactly the endpoint's CA and presents the client
certificate, even when the machine sets REQUESTS_CA_BUNDLE (which requests
would otherwise prefer). It does not prove dockerd accepts it (the hostlab).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from components.endpoint import docker_client, read_client_tls, read_endpoint
from tests.support.program import config_from_stack_file, pem_blocks, run_program

ROOT = Path(__file__).resolve().parents[2]
SERVER_START_TIMEOUT_S = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_listening(server: subprocess.Popen, port: int) -> None:
    """Return once `server` accepts on `port`; fail the test, with its stderr, if it never does."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(
                f"openssl s_server exited with {server.returncode} before listening on 127.0.0.1:{port}: "
                f"{server.stderr.read().decode(errors='replace').strip() if server.stderr else ''}"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"openssl s_server did not listen on 127.0.0.1:{port} within {SERVER_START_TIMEOUT_S} s")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl (.ci/setup installs it)")
def test_client_trusts_the_endpoint_ca_despite_an_environment_bundle(tmp_path, monkeypatch):
    run = run_program(config_from_stack_file(ROOT / "Pulumi.dev.yaml"), stack="dev")
    stdin = run.named("cloud-1-configure").plain["stdin"]
    stack_ca, _verifier_ca, cert, key = pem_blocks(stdin)
    for name, pem in (("ca.pem", stack_ca), ("cert.pem", cert), ("key.pem", key)):
        (tmp_path / name).write_text(pem)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    port = free_port()
    server = subprocess.Popen(
        ["openssl", "s_server", "-quiet", "-www", "-accept", f"127.0.0.1:{port}",
         "-cert", str(tmp_path / "cert.pem"), "-key", str(tmp_path / "key.pem"),
         "-CAfile", str(tmp_path / "ca.pem"), "-Verify", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        wait_until_listening(server, port)
        endpoint = read_endpoint(run.outputs["runtimeEndpoint"])
        tls = read_client_tls(run.outputs["runtimeClientTls"])
        client = docker_client(endpoint, tls, base_url=f"tcp://127.0.0.1:{port}")
        response = client.api.get(f"https://127.0.0.1:{port}/")
        client.close()
        assert response.status_code == 200
        assert "Client certificate" in response.text, "the server saw no client certificate"
    finally:
        server.kill()
        server.wait()
