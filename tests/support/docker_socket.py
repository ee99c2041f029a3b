"""A stand-in for dockerd's API socket: NOT dockerd.

An HTTP server on a unix socket that answers each GET <path> with a canned
JSON document from a table (404 "No such object" otherwise, or one default
document for every path), so the authorization plugin's own lookups
(endpoint_authz.plugin.DockerLookups) run over a real socket. It reads a
request's head and answers one document per connection; it knows nothing of
containers, methods or API versions. tests/unit/test_endpoint_plugin.py
tests the plugin against it, bench/endpoint_policy.py times a lookup's client
side with it; the hostlab asks trixie's dockerd.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _reply(status: bytes, document: Any) -> bytes:
    body = json.dumps(document).encode()
    return (b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)


class FakeDockerSocket:
    """A TEST DOUBLE, not dockerd: serves `documents` (request path -> JSON
    document) on a unix socket at `path`, from a daemon thread, until close().
    A path not in the table gets `default` (200) when one is given, else 404.
    The replies are encoded once, up front, so a timed lookup spends little
    in the stand-in."""

    def __init__(self, path: Path, documents: Mapping[str, Any], default: Any = None, backlog: int = 16) -> None:
        self.path = path
        self._replies = {p: _reply(b"200 OK", doc) for p, doc in documents.items()}
        self._other = (_reply(b"404 Not Found", {"message": "No such object"}) if default is None
                       else _reply(b"200 OK", default))
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(backlog)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    request += chunk
                path = request.split(b" ", 2)[1].decode() if request.count(b" ") >= 2 else ""
                conn.sendall(self._replies.get(path, self._other))

    def close(self) -> None:
        self.server.close()
