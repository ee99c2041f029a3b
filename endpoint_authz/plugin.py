"""dockerd's authorization plugin for the endpoint, and the operator command.

    plugin.py serve --socket PATH --config PATH --drain-file PATH [--docker-socket PATH]
    plugin.py drain|resume|status --drain-file PATH
    plugin.py check-config PATH

`serve` answers dockerd's plugin protocol over HTTP on a unix socket
(dockerd finds it as /run/docker/plugins/<name>.sock):
`/Plugin.Activate` -> {"Implements": ["authz"]}; `/AuthZPlugin.AuthZReq` ->
{"Allow": ..., "Msg": ...} from `rules.decide`; `/AuthZPlugin.AuthZRes` ->
allowed (the policy decides on requests only). A request that names a
container, exec or volume makes the plugin ask dockerd about it on
`--docker-socket` (DockerLookups: one inspect). The configuration file is
re-read when it changes; the drain file's existence is the draining state,
read on every request, so `drain` and `resume` take effect at once and
survive a restart. Anything it cannot read is refused, never allowed.

Standard library only: it runs on every host with Debian's python3.
Logs go to stderr (the journal), one line per refusal; no request body is
ever logged. The operator subcommands print one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import socketserver
import sys
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import quote

if __package__ in (None, ""):  # run as a file: python3 -I .../endpoint_authz/plugin.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from endpoint_authz.rules import (
    REFUSAL_PREFIX,
    LookupFailed,
    PolicyConfig,
    Refused,
    decide,
    identity,
    load_config,
    refuse,
)

PLUGIN_CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"
# An AuthZReq carries at most a 1 MiB body (base64: 1.4 MiB) and headers.
MAX_REQUEST_BYTES = 8 * 1024 * 1024
READ_CHUNK = 64 * 1024
# dockerd's own socket (root only): the ownership rules ask it about the
# container, exec or volume a request names.
DOCKER_SOCKET = Path("/run/docker.sock")
LOOKUP_TIMEOUT_S = 5.0
MAX_LOOKUP_BYTES = 4 * 1024 * 1024


class DockerLookups:
    """rules.Lookups answered by dockerd's inspect calls on its unix socket.

    Each is one more API request to dockerd (which asks this plugin about
    it too: the local socket, allowed at once), about 1-2 ms on a host;
    bench/endpoint_policy.py measures it."""

    def __init__(self, socket_path: Path = DOCKER_SOCKET) -> None:
        self.socket_path = socket_path

    def _get(self, path: str) -> Mapping[str, Any] | None:
        conn = UnixHTTPConnection(self.socket_path, LOOKUP_TIMEOUT_S)
        try:
            conn.request("GET", path, headers={"Host": "docker"})
            response = conn.getresponse()
            data = response.read(MAX_LOOKUP_BYTES + 1)
        except OSError as err:
            raise LookupFailed(f"{self.socket_path}: {err}") from None
        finally:
            conn.close()
        if response.status == 404:
            return None
        if response.status != 200 or len(data) > MAX_LOOKUP_BYTES:
            raise LookupFailed(f"GET {path} answered {response.status}")
        try:
            found = json.loads(data)
        except ValueError:
            raise LookupFailed(f"GET {path} answered with something other than JSON") from None
        if not isinstance(found, dict):
            raise LookupFailed(f"GET {path} answered with something other than an object")
        return found

    def container(self, ref: str) -> Mapping[str, Any] | None:
        return self._get(f"/containers/{quote(ref, safe='')}/json")

    def exec(self, exec_id: str) -> Mapping[str, Any] | None:
        return self._get(f"/exec/{quote(exec_id, safe='')}/json")

    def volume(self, name: str) -> Mapping[str, Any] | None:
        return self._get(f"/volumes/{quote(name, safe='')}")


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP to dockerd's unix socket (host_gc asks dockerd through it too)."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("docker", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def log(message: str) -> None:
    print(f"functions-runtime-authz: {message}", file=sys.stderr, flush=True)


class PolicyState:
    """The configuration (re-read when its file changes) and the drain file."""

    def __init__(self, config_path: Path, drain_file: Path, lookups: DockerLookups | None = None) -> None:
        self.config_path = config_path
        self.drain_file = drain_file
        self.lookups = lookups if lookups is not None else DockerLookups()
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._config: PolicyConfig | None = None
        self._error = ""

    def config(self) -> PolicyConfig | None:
        """The current configuration, or None when the file is unreadable
        (then every restricted request is refused)."""
        with self._lock:
            try:
                st = self.config_path.stat()
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
                if stamp != self._stamp:
                    self._config = load_config(json.loads(self.config_path.read_text()))
                    self._stamp, self._error = stamp, ""
                    log(f"configuration loaded from {self.config_path}")
            except (OSError, ValueError, KeyError, TypeError) as err:
                if self._error != str(err):
                    log(f"configuration {self.config_path} unreadable ({err}); refusing every restricted request")
                self._config, self._stamp, self._error = None, None, str(err)
            return self._config

    def draining(self) -> bool:
        return self.drain_file.exists()


def authorize(envelope: Any, state: PolicyState) -> dict[str, Any]:
    """One AuthZReq envelope to dockerd's answer."""
    config = state.config()
    if not isinstance(envelope, dict):
        decision = refuse("malformed authorization request")
    elif config is None:
        decision = (
            decide(envelope, _LOCAL_ONLY, False)
            if _is_local(envelope)
            else refuse("the endpoint's policy configuration is unreadable on this host; ask its operator")
        )
    else:
        decision = decide(envelope, config, state.draining(), state.lookups)
    if not decision.allow and isinstance(envelope, dict):
        log(
            f"refused {str(envelope.get('User'))!r} {str(envelope.get('RequestMethod'))[:10]} "
            f"{str(envelope.get('RequestUri'))[:200]}: {decision.msg}"
        )
    return {"Allow": decision.allow, "Msg": decision.msg}


def _is_local(envelope: dict[str, Any]) -> bool:
    """The policy's own test of the local socket (rules.identity): fails closed."""
    try:
        return identity(envelope) is None
    except Refused:
        return False


# Used only to let the local socket (root) through while the file is unreadable.
_LOCAL_ONLY = load_config({"sandboxRuntimes": [], "limits": {"maxMemoryMiB": 0, "maxPids": 0, "maxMilliCpus": 0}})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: PluginServer

    def address_string(self) -> str:
        return "unix"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self, keep: bool) -> bytes | None:
        """The request body (None when it exceeds MAX_REQUEST_BYTES); when
        `keep` is false it is read and dropped."""
        chunks: list[bytes] = []
        size = 0
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline(1024).split(b";", 1)[0].strip()
                length = int(line, 16)
                if length == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                data = self.rfile.read(length)
                self.rfile.readline(8)
                size += len(data)
                if keep and size <= MAX_REQUEST_BYTES:
                    chunks.append(data)
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining > 0:
                data = self.rfile.read(min(READ_CHUNK, remaining))
                if not data:
                    break
                remaining -= len(data)
                size += len(data)
                if keep and size <= MAX_REQUEST_BYTES:
                    chunks.append(data)
        if size > MAX_REQUEST_BYTES and keep:
            return None
        return b"".join(chunks)

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", PLUGIN_CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        try:
            if self.path == "/AuthZPlugin.AuthZRes":
                self._read_body(keep=False)
                self._reply(200, {"Allow": True})
                return
            body = self._read_body(keep=True)
            if self.path == "/Plugin.Activate":
                self._reply(200, {"Implements": ["authz"]})
            elif self.path == "/AuthZPlugin.AuthZReq":
                try:
                    envelope = json.loads(body) if body is not None else None
                except ValueError:
                    envelope = None
                self._reply(200, authorize(envelope, self.server.state))
            else:
                self._reply(404, {"Err": f"unknown plugin method {self.path[:100]}"})
        except (ValueError, ConnectionError) as err:
            log(f"bad request from dockerd ({err})")
            self.close_connection = True


class PluginServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, socket_path: Path, state: PolicyState) -> None:
        self.state = state
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        if socket_path.is_socket():
            socket_path.unlink()
        old = os.umask(0o177)  # the socket is root's (dockerd's) only
        try:
            super().__init__(str(socket_path), Handler)
        finally:
            os.umask(old)


def notify_ready() -> None:
    """Tell systemd (Type=notify) the socket answers, so dockerd starts after it."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"READY=1", address)


def serve(socket_path: Path, config_path: Path, drain_file: Path, docker_socket: Path = DOCKER_SOCKET) -> int:
    state = PolicyState(config_path, drain_file, DockerLookups(docker_socket))
    if state.config() is None:
        log(f"cannot start: the configuration {config_path} is unreadable")
        return 1
    # A stop that arrives while the socket is being bound waits for the
    # handler (held, not lost): the socket is always removed on the way out.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    server = PluginServer(socket_path, state)

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    log(f"serving on {socket_path} (draining: {state.draining()})")
    notify_ready()
    try:
        server.serve_forever()
    finally:
        server.server_close()
        try:
            socket_path.unlink()
        except FileNotFoundError:
            pass
    log("stopped")
    return 0


def drain_command(action: str, drain_file: Path) -> int:
    if action == "drain":
        drain_file.parent.mkdir(parents=True, exist_ok=True)
        drain_file.write_text("draining: container create is refused; everything else works\n")
        log("draining: new containers are refused, running ones keep running")
    elif action == "resume":
        drain_file.unlink(missing_ok=True)
        log("accepting new containers")
    print(json.dumps({"draining": drain_file.exists()}))
    return 0


def check_config(path: Path) -> int:
    try:
        config = load_config(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as err:
        log(f"{path}: {err}")
        return 1
    print(json.dumps({"config": str(path), "sandboxRuntimes": list(config.sandbox_runtimes),
                      "registries": list(config.registries)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="functions-runtime-endpoint", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="answer dockerd's authorization requests")
    p.add_argument("--socket", type=Path, required=True)
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--drain-file", type=Path, required=True)
    p.add_argument("--docker-socket", type=Path, default=DOCKER_SOCKET,
                   help=f"dockerd's unix socket, for the ownership rules (default {DOCKER_SOCKET})")
    for action, text in (
        ("drain", "refuse new containers, keep everything else"),
        ("resume", "accept new containers again"),
        ("status", "print the draining state"),
    ):
        p = sub.add_parser(action, help=text)
        p.add_argument("--drain-file", type=Path, required=True)
    p = sub.add_parser("check-config", help="validate a policy configuration file")
    p.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args.socket, args.config, args.drain_file, args.docker_socket)
    if args.command == "check-config":
        return check_config(args.path)
    return drain_command(args.command, args.drain_file)


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["REFUSAL_PREFIX", "main"]
