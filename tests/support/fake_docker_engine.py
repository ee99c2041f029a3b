"""A stateful stand-in for dockerd's Engine API on a unix socket: a TEST DOUBLE, NOT dockerd.

It holds containers, images and build-cache entries in memory and answers the
few requests host_gc makes, over real HTTP/1.1 on a real unix socket (in the
test's tmp_path), from a thread stopped by close():

    GET    /containers/json?all=1      GET /containers/{id}/json
    DELETE /containers/{id}?v=1        (409 for a running, paused or restarting one unless force=1)
    GET    /images/json                DELETE /images/{id|tag}?force=0&noprune=0
                                       (409 while any container names it, or when tagged in
                                       several repositories and deleted by ID)
    POST   /build/prune?filters={"until":["<N>s"]}

with or without a `/v1.NN` prefix; anything else is 404 "page not found".
Removals change the state, so a second request sees them, and `disk_usage`
(what host_gc's injected disk probe calls) counts what the engine holds:
the base use plus every image's Size, build-cache entry and container's size.
Every request is kept in `requests`; `before(method, path, action)` runs an
action once just before a request is answered (a container starts using an
image meanwhile); `garbage = True` answers HTML instead of the API, and
`refuse_all = (status, message)` answers every request with that error.

What it does NOT prove: that real dockerd answers with these shapes and
statuses (they follow the Engine API documentation, v1.43 to v1.47, and were
not recorded from a dockerd); that removing an image frees its Size (dockerd
frees only layers no other image shares, so the real disk falls less); child
images, the containerd image store, `until` on real build-cache records,
chunked answers, keep-alive, API version negotiation, or the authorization
plugin dockerd asks first. The hostlab exercises trixie's dockerd.
"""

from __future__ import annotations

import json
import re
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from host_gc.plan import DiskUsage

GIB = 1024**3
ALIVE_STATES = ("running", "paused", "restarting")
_VERSION = re.compile(r"^/v1\.\d+(?=/)")


def docker_time(when: float | None) -> str:
    """A Unix time as dockerd writes it: RFC 3339 with nanoseconds; Go's zero time for None."""
    if when is None:
        return "0001-01-01T00:00:00Z"
    whole = int(when)
    nanos = round((when - whole) * 1e9)
    return datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


@dataclass
class FakeContainer:
    id: str
    image_id: str
    state: str
    created: float
    finished_at: float | None = None
    size: int = 0


@dataclass
class FakeImage:
    id: str
    tags: tuple[str, ...]
    created: int
    size: int
    digests: tuple[str, ...] = ()


@dataclass
class FakeCacheEntry:
    id: str
    size: int
    last_used: float


class FakeDockerEngine:
    """A TEST DOUBLE, not dockerd (see the module docstring for what it does not prove)."""

    def __init__(self, socket_path: Path, clock: Callable[[], float], disk_total: int = 100 * GIB,
                 disk_base_used: int = 10 * GIB) -> None:
        self.socket_path = socket_path
        self.clock = clock
        self.disk_total = disk_total
        self.disk_base_used = disk_base_used
        self.containers: dict[str, FakeContainer] = {}
        self.images: dict[str, FakeImage] = {}
        self.build_cache: list[FakeCacheEntry] = []
        self.requests: list[tuple[str, str]] = []
        self.garbage = False
        # (status, message) answered to every request instead, as dockerd does when its
        # authorization plugin cannot be asked.
        self.refuse_all: tuple[int, str] | None = None
        self._hooks: list[tuple[str, str, Callable[[], None]]] = []
        self._lock = threading.RLock()
        self._server = _Server(socket_path, self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    # ------------------------------------------------------------- the state

    def add_container(self, ident: str, image_id: str, state: str, created: float,
                      finished_at: float | None = None, size: int = 0) -> FakeContainer:
        with self._lock:
            container = FakeContainer(ident, image_id, state, created, finished_at, size)
            self.containers[ident] = container
            return container

    def add_image(self, ident: str, tags: tuple[str, ...] = (), created: int = 0, size: int = 0,
                  digests: tuple[str, ...] = ()) -> FakeImage:
        with self._lock:
            image = FakeImage(ident, tags, created, size, digests)
            self.images[ident] = image
            return image

    def add_build_cache(self, ident: str, size: int, last_used: float) -> None:
        with self._lock:
            self.build_cache.append(FakeCacheEntry(ident, size, last_used))

    def before(self, method: str, path: str, action: Callable[[], None]) -> None:
        """Run `action` once, just before the next `method path` (path without query) is answered."""
        with self._lock:
            self._hooks.append((method, path, action))

    def disk_usage(self, _path: Path) -> DiskUsage:
        with self._lock:
            used = (self.disk_base_used + sum(i.size for i in self.images.values())
                    + sum(c.size for c in self.containers.values()) + sum(e.size for e in self.build_cache))
            return DiskUsage(used=used, total=self.disk_total)

    def writes(self) -> list[tuple[str, str]]:
        """The requests that would change something (anything but GET)."""
        return [r for r in self.requests if r[0] != "GET"]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        self.socket_path.unlink(missing_ok=True)

    def __enter__(self) -> FakeDockerEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ the API

    def answer(self, method: str, target: str) -> tuple[int, Any]:
        """(status, JSON document or None) for one request."""
        split = urlsplit(target)
        path = _VERSION.sub("", unquote(split.path))
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        with self._lock:
            self.requests.append((method, target))
            for hook in list(self._hooks):
                if hook[0] == method and hook[1] == path:
                    self._hooks.remove(hook)
                    hook[2]()
            if self.refuse_all is not None:
                return self.refuse_all[0], {"message": self.refuse_all[1]}
            return self._route(method, path, query)

    def _route(self, method: str, path: str, query: dict[str, str]) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if method == "GET" and parts == ["containers", "json"]:
            return 200, self._container_list(query.get("all") in ("1", "true"))
        if method == "GET" and len(parts) == 3 and parts[0] == "containers" and parts[2] == "json":
            return self._inspect(parts[1])
        if method == "DELETE" and len(parts) == 2 and parts[0] == "containers":
            return self._remove_container(parts[1], query.get("force") in ("1", "true"))
        if method == "GET" and parts == ["images", "json"]:
            return 200, [self._image_summary(i) for i in self.images.values()]
        if method == "DELETE" and len(parts) >= 2 and parts[0] == "images":
            return self._remove_image("/".join(parts[1:]), query.get("force") in ("1", "true"))
        if method == "POST" and parts == ["build", "prune"]:
            return self._prune(query.get("filters", "{}"))
        return 404, {"message": "page not found"}

    def _container_list(self, every: bool) -> list[dict[str, Any]]:
        return [
            {"Id": c.id, "Names": [f"/{c.id[:12]}"], "Image": c.image_id, "ImageID": c.image_id,
             "Command": "true", "Created": int(c.created), "State": c.state, "Status": c.state,
             "Labels": {}}
            for c in self.containers.values() if every or c.state == "running"
        ]

    def _inspect(self, ident: str) -> tuple[int, Any]:
        c = self.containers.get(ident)
        if c is None:
            return 404, {"message": f"No such container: {ident}"}
        started = None if c.state == "created" else c.created
        return 200, {
            "Id": c.id, "Created": docker_time(c.created), "Image": c.image_id,
            "State": {"Status": c.state, "Running": c.state == "running", "Paused": c.state == "paused",
                      "Restarting": c.state == "restarting", "Dead": c.state == "dead", "Pid": 0, "ExitCode": 0,
                      "StartedAt": docker_time(started),
                      "FinishedAt": docker_time(c.finished_at if c.state not in ALIVE_STATES else None)},
        }

    def _remove_container(self, ident: str, force: bool) -> tuple[int, Any]:
        c = self.containers.get(ident)
        if c is None:
            return 404, {"message": f"No such container: {ident}"}
        if c.state in ALIVE_STATES and not force:
            return 409, {"message": f"cannot remove container \"/{ident[:12]}\": container is {c.state}: stop the "
                                    "container before removing or force remove"}
        del self.containers[ident]
        return 204, None

    @staticmethod
    def _image_summary(i: FakeImage) -> dict[str, Any]:
        return {"Id": i.id, "ParentId": "", "RepoTags": list(i.tags) or None, "RepoDigests": list(i.digests) or None,
                "Created": i.created, "Size": i.size, "SharedSize": -1, "Labels": {}, "Containers": -1}

    def _find_image(self, ref: str) -> FakeImage | None:
        hex_ref = ref.removeprefix("sha256:")
        for image in self.images.values():
            if ref in image.tags or ref == image.id or image.id.removeprefix("sha256:").startswith(hex_ref):
                return image
        return None

    def _remove_image(self, ref: str, force: bool) -> tuple[int, Any]:
        image = self._find_image(ref)
        if image is None:
            return 404, {"message": f"No such image: {ref}"}
        users = [c for c in self.containers.values() if c.image_id == image.id]
        if users and not force:
            user = users[0]
            what = "running" if user.state == "running" else "stopped"
            return 409, {"message": f"conflict: unable to delete {image.id[7:19]} (must be forced) - image is being "
                                    f"used by {what} container {user.id[:12]}"}
        by_id = ref not in image.tags
        if by_id and len({t.rsplit(":", 1)[0] for t in image.tags}) > 1 and not force:
            return 409, {"message": f"conflict: unable to delete {image.id[7:19]} (must be forced) - image is "
                                    "referenced in multiple repositories"}
        if not by_id and len(image.tags) > 1:
            image.tags = tuple(t for t in image.tags if t != ref)
            return 200, [{"Untagged": ref}]
        del self.images[image.id]
        return 200, [*({"Untagged": t} for t in image.tags), {"Deleted": image.id}]

    def _prune(self, filters: str) -> tuple[int, Any]:
        try:
            until = json.loads(filters).get("until", [])
            age = float(until[0].removesuffix("s")) if until else 0.0
        except (ValueError, AttributeError, IndexError):
            return 400, {"message": f"invalid filter {filters!r}"}
        cutoff = self.clock() - age
        gone = [e for e in self.build_cache if e.last_used < cutoff]
        self.build_cache = [e for e in self.build_cache if e.last_used >= cutoff]
        return 200, {"CachesDeleted": [e.id for e in gone] or None, "SpaceReclaimed": sum(e.size for e in gone)}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def address_string(self) -> str:
        return "unix"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        engine = self.server.engine
        if engine.garbage:
            data, status, kind = b"<html>not the Engine API</html>", 200, "text/html"
        else:
            status, doc = engine.answer(self.command, self.path)
            data, kind = (b"", "") if doc is None else (json.dumps(doc).encode(), "application/json")
        self.send_response(status)
        if kind:
            self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Api-Version", "1.47")
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _handle


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    # Not daemon threads: server_close() joins every handler, so close() leaves none behind.
    daemon_threads = False
    block_on_close = True

    def __init__(self, socket_path: Path, engine: FakeDockerEngine) -> None:
        self.engine = engine
        super().__init__(str(socket_path), _Handler)
