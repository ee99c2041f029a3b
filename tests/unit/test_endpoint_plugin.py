"""The authorization plugin process (endpoint_authz/plugin.py) over its unix socket.

Proves, with the documented command (`python3 -I endpoint_authz/plugin.py
serve --socket ... --config ... --drain-file ...`) on a temporary socket:
dockerd's plugin protocol (Plugin.Activate, AuthZPlugin.AuthZReq,
AuthZPlugin.AuthZRes; sized and chunked requests); the socket is 0600;
`drain`/`resume`/`status` switch creates off and on for a running plugin;
an edited configuration (a revoked serial) applies without a restart; an
unreadable configuration refuses restricted clients (and a TLS request
without a user); ownership calls ask dockerd's socket (here a stand-in,
FakeDockerSocket) and are refused when it cannot be asked; SIGTERM stops it and
removes the socket; it notifies systemd (Type=notify) once it answers.
Every process a test starts is stopped by its PID.
Does not prove: that dockerd calls it (the hostlab does).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from endpoint_authz.rules import DEFAULT_REGISTRIES, OWNER_LABEL
from tests.support.docker_socket import FakeDockerSocket
from tests.unit.test_endpoint_policy import peer_certificate

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "endpoint_authz" / "plugin.py"
CONFIG = {
    "sandboxRuntimes": ["runsc"],
    "limits": {"maxMemoryMiB": 512, "maxPids": 256, "maxMilliCpus": 1000},
    "revokedSerials": [],
    "revokedNames": [],
}
SOCKET_WAIT_S = 20  # bound for the plugin to bind its socket


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=10)
        self._path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self._path)


def post(sock: Path, method: str, payload: object, chunked: bool = False) -> tuple[int, dict]:
    conn = UnixConnection(sock)
    try:
        data = json.dumps(payload).encode()
        headers = {"Content-Type": "application/vnd.docker.plugins.v1.2+json"}
        if chunked:
            conn.request("POST", f"/{method}", body=iter([data[:10], data[10:]]), headers=headers,
                         encode_chunked=True)
        else:
            conn.request("POST", f"/{method}", body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def authz(sock: Path, method: str, uri: str, body: object = None, user: str = "functions-runtime consumer",
          chunked: bool = False) -> dict:
    envelope = {
        "User": user,
        "UserAuthNMethod": "TLS" if user else "",
        "RequestPeerCertificates": [peer_certificate(user)] if user else None,
        "RequestMethod": method,
        "RequestUri": uri,
        "RequestBody": base64.b64encode(json.dumps(body).encode()).decode() if body is not None else None,
    }
    status, answer = post(sock, "AuthZPlugin.AuthZReq", envelope, chunked)
    assert status == 200
    return answer


CREATE = {
    "Image": "busybox", "Labels": {OWNER_LABEL: "functions-runtime consumer"},
    "HostConfig": {"Memory": 64 << 20, "PidsLimit": 64, "NanoCpus": 500_000_000},
}
# What the stand-in for dockerd's socket answers (tests/support/docker_socket.py).
INSPECT = {
    "/containers/abc/json": {"Id": "abc" * 8, "Config": {"Labels": {OWNER_LABEL: "functions-runtime consumer"}},
                             "HostConfig": {"Runtime": "runsc"}},
    "/containers/rootbox/json": {"Id": "f00" * 8, "Config": {"Labels": {}}, "HostConfig": {"Runtime": "runc"}},
}


class Plugin:
    def __init__(self, tmp: Path) -> None:
        self.sock = tmp / "plugins" / "functions-runtime-authz.sock"
        self.config = tmp / "endpoint-policy.json"
        self.drain_file = tmp / "state" / "draining"
        self.docker_socket = tmp / "docker.sock"
        self.config.write_text(json.dumps(CONFIG))
        self.proc: subprocess.Popen[str] | None = None

    def start(self, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(PLUGIN), "serve", "--socket", str(self.sock), "--config",
             str(self.config), "--drain-file", str(self.drain_file), "--docker-socket", str(self.docker_socket)],
            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
        )
        for _ in range(SOCKET_WAIT_S * 10):
            if self.sock.exists() or self.proc.poll() is not None:
                break
            time.sleep(0.1)
        assert self.sock.exists(), f"the plugin did not bind {self.sock}: {self.stop()}"

    def command(self, action: str) -> dict:
        out = subprocess.run(
            [sys.executable, "-I", str(PLUGIN), action, "--drain-file", str(self.drain_file)],
            capture_output=True, text=True, check=True,
        )
        return json.loads(out.stdout)

    def stop(self) -> str:
        if self.proc is None:
            return ""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, 15)
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, 9)
            _, err = self.proc.communicate()
        return err


@pytest.fixture
def plugin(tmp_path) -> Iterator[Plugin]:
    dockerd = FakeDockerSocket(tmp_path / "docker.sock", INSPECT)
    p = Plugin(tmp_path)
    p.start()
    try:
        yield p
    finally:
        p.stop()
        dockerd.close()


def test_the_plugin_speaks_dockerds_protocol(plugin):
    assert post(plugin.sock, "Plugin.Activate", {}) == (200, {"Implements": ["authz"]})
    assert authz(plugin.sock, "POST", "/v1.45/containers/create", CREATE) == {"Allow": True, "Msg": ""}
    refused = authz(plugin.sock, "POST", "/v1.45/containers/create",
                    {**CREATE, "HostConfig": {**CREATE["HostConfig"], "Privileged": True}})
    assert refused == {"Allow": False, "Msg": "functions-runtime policy: --privileged is not allowed on this endpoint"}
    status, answer = post(plugin.sock, "AuthZPlugin.AuthZRes", {"ResponseBody": base64.b64encode(b"x" * 100000).decode()})
    assert (status, answer) == (200, {"Allow": True})
    assert stat.S_IMODE(plugin.sock.stat().st_mode) == 0o600


def test_chunked_requests_are_read(plugin):
    assert authz(plugin.sock, "POST", "/v1.45/build", chunked=True)["Allow"] is False
    assert authz(plugin.sock, "POST", "/v1.45/containers/create", CREATE, chunked=True)["Allow"] is True


def test_a_malformed_envelope_is_refused(plugin):
    status, answer = post(plugin.sock, "AuthZPlugin.AuthZReq", ["not", "an", "object"])
    assert status == 200 and answer["Allow"] is False


def test_drain_and_resume_switch_creates_on_a_running_plugin(plugin):
    assert plugin.command("status") == {"draining": False}
    assert plugin.command("drain") == {"draining": True}
    answer = authz(plugin.sock, "POST", "/v1.45/containers/create", CREATE)
    assert answer["Allow"] is False and "this host is draining" in answer["Msg"]
    assert authz(plugin.sock, "POST", "/v1.45/containers/abc/stop")["Allow"] is True
    assert authz(plugin.sock, "POST", "/v1.45/containers/abc/exec", {"Cmd": ["sh"]})["Allow"] is True
    assert plugin.command("drain") == {"draining": True}  # idempotent
    assert plugin.command("resume") == {"draining": False}
    assert authz(plugin.sock, "POST", "/v1.45/containers/create", CREATE)["Allow"] is True


def test_draining_survives_a_restart(plugin):
    plugin.command("drain")
    plugin.stop()
    plugin.start()
    assert authz(plugin.sock, "POST", "/v1.45/containers/create", CREATE)["Allow"] is False


def test_an_edited_configuration_applies_without_restart(plugin):
    assert authz(plugin.sock, "GET", "/_ping", user="verify old")["Allow"] is True
    plugin.config.write_text(json.dumps({**CONFIG, "revokedNames": ["verify old"]}))
    answer = authz(plugin.sock, "GET", "/_ping", user="verify old")
    assert answer["Allow"] is False and "revoked" in answer["Msg"]


def test_an_unreadable_configuration_refuses_restricted_clients_only(plugin):
    plugin.config.write_text("{")
    answer = authz(plugin.sock, "GET", "/_ping")
    assert answer["Allow"] is False and "configuration is unreadable" in answer["Msg"]
    assert authz(plugin.sock, "GET", "/_ping", user="")["Allow"] is True


def test_sigterm_stops_it_and_removes_the_socket(plugin):
    err = plugin.stop()
    assert plugin.proc is not None and plugin.proc.returncode == 0, err
    assert not plugin.sock.exists()
    assert "stopped" in err


def test_it_will_not_start_without_a_readable_configuration(tmp_path):
    p = Plugin(tmp_path)
    p.config.write_text("{}")
    r = subprocess.run(
        [sys.executable, "-I", str(PLUGIN), "serve", "--socket", str(p.sock), "--config", str(p.config),
         "--drain-file", str(p.drain_file)],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 1 and "unreadable" in r.stderr
    assert not p.sock.exists()


def test_check_config(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(CONFIG))
    r = subprocess.run([sys.executable, "-I", str(PLUGIN), "check-config", str(good)], capture_output=True, text=True)
    assert r.returncode == 0 and json.loads(r.stdout) == {
        "config": str(good), "sandboxRuntimes": ["runsc"], "registries": list(DEFAULT_REGISTRIES),
    }
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"sandboxRuntimes": ["runsc"]}))
    r = subprocess.run([sys.executable, "-I", str(PLUGIN), "check-config", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and "limits" in r.stderr


def test_it_tells_systemd_when_its_socket_answers(tmp_path):
    notify = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(notify))
        listener.settimeout(SOCKET_WAIT_S)
        p = Plugin(tmp_path)
        try:
            p.start({"NOTIFY_SOCKET": str(notify)})
            assert listener.recv(64) == b"READY=1"
            assert post(p.sock, "Plugin.Activate", {})[0] == 200
        finally:
            p.stop()


def test_the_plugin_asks_dockerd_who_owns_a_container(plugin):
    assert authz(plugin.sock, "POST", "/v1.45/containers/abc/kill")["Allow"] is True
    answer = authz(plugin.sock, "POST", "/v1.45/containers/rootbox/exec", {"Cmd": ["sh"]})
    assert answer["Allow"] is False and "runs runc runtime, not a sandbox runtime" in answer["Msg"]
    # No such container: dockerd answers 404 itself.
    assert authz(plugin.sock, "DELETE", "/v1.45/containers/gone")["Allow"] is True


def test_a_dockerd_that_cannot_be_asked_refuses_ownership_calls(plugin, tmp_path):
    (tmp_path / "docker.sock").unlink()
    answer = authz(plugin.sock, "POST", "/v1.45/containers/abc/kill")
    assert answer["Allow"] is False and "could not ask dockerd about container 'abc'" in answer["Msg"]
    assert authz(plugin.sock, "GET", "/_ping")["Allow"] is True


def test_an_unreadable_configuration_fails_closed_for_a_tls_request_without_a_user(plugin):
    plugin.config.write_text("{")
    status, answer = post(plugin.sock, "AuthZPlugin.AuthZReq",
                          {"UserAuthNMethod": "TLS", "RequestMethod": "GET", "RequestUri": "/_ping"})
    assert status == 200 and answer["Allow"] is False
