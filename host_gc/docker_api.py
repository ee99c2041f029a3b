"""A small Docker Engine API client on dockerd's unix socket: GET, POST, DELETE.

Why not endpoint_authz.plugin.DockerLookups: it only GETs, and turns a 404
into None and every other status into the authorization rules'
LookupFailed. GC needs POST and DELETE, the status of every answer (409 and
404 are "skipped", not errors) and a longer timeout for removals; it shares
the plugin's connection to the socket (both ship in the payload).

Paths are unversioned (`/containers/json`): dockerd answers them in its own
API version, and a pinned old version stops working when a later dockerd
raises its minimum. Every request opens one connection (a run makes a few
hundred at most) and closes it.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from endpoint_authz.plugin import UnixHTTPConnection

# dockerd's own socket (root only).
DOCKER_SOCKET = Path("/run/docker.sock")
# A list or an inspect answers in milliseconds; removing a large image or a
# container's writable layer can take tens of seconds on a busy disk.
REQUEST_TIMEOUT_S = 120.0
# Pruning the build cache walks all of it.
PRUNE_TIMEOUT_S = 600.0
# A listing of ten thousand containers is about 20 MiB; more is not dockerd.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class DockerUnreachable(Exception):
    """dockerd's socket could not be connected to, or did not answer in time."""


class DockerGarbage(Exception):
    """Something answered on the socket, but not with the Engine API's HTTP and JSON."""


@dataclass(frozen=True)
class Response:
    """One answer: its status, its JSON body (None when empty) and dockerd's
    error message (its `message` field) when it sent one."""

    status: int
    body: Any

    @property
    def message(self) -> str:
        if isinstance(self.body, dict) and isinstance(self.body.get("message"), str):
            return self.body["message"]
        return ""


class DockerAPI:
    """HTTP/1.1 requests to dockerd on `socket_path`, one connection each."""

    def __init__(self, socket_path: Path = DOCKER_SOCKET, timeout: float = REQUEST_TIMEOUT_S) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def request(self, method: str, path: str, query: Mapping[str, str] | None = None,
                timeout: float | None = None) -> Response:
        """One request; raises DockerUnreachable or DockerGarbage, never returns
        an answer that is not HTTP with a JSON (or empty) body."""
        target = f"{path}?{urlencode(query)}" if query else path
        conn = UnixHTTPConnection(self.socket_path, self.timeout if timeout is None else timeout)
        try:
            conn.request(method, target)  # Host: docker; a bodiless POST gets Content-Length: 0
            answer = conn.getresponse()
            data = answer.read(MAX_RESPONSE_BYTES + 1)
        except http.client.HTTPException as err:  # includes RemoteDisconnected
            raise DockerGarbage(f"{method} {path}: not an HTTP answer ({type(err).__name__}: {err})") from None
        except OSError as err:  # refused, no such file, permission, timeout
            raise DockerUnreachable(f"{method} {path}: {type(err).__name__}: {err}") from None
        finally:
            conn.close()
        if len(data) > MAX_RESPONSE_BYTES:
            raise DockerGarbage(f"{method} {path}: answer larger than {MAX_RESPONSE_BYTES} bytes")
        if not data.strip():
            return Response(answer.status, None)
        try:
            return Response(answer.status, json.loads(data))
        except ValueError:
            raise DockerGarbage(f"{method} {path}: answered {answer.status} with something other than JSON "
                                f"({data[:60]!r})") from None

    def get(self, path: str, query: Mapping[str, str] | None = None) -> Response:
        return self.request("GET", path, query)

    def post(self, path: str, query: Mapping[str, str] | None = None, timeout: float | None = None) -> Response:
        return self.request("POST", path, query, timeout)

    def delete(self, path: str, query: Mapping[str, str] | None = None) -> Response:
        return self.request("DELETE", path, query)
