"""Pruning a stack's golden snapshot images (components/image_retention.py).

The choice of what to delete is a pure function, tested directly. The CLI
runs as a subprocess, as the program's local.Command runs it, against a
small fake of Hetzner's API on 127.0.0.1 (FakeHetzner below), which pages
its lists, records every request and can answer 429 or 500 on demand.
What this proves: the requests sent (selector, paging, bearer token,
DELETEs in order), the exit codes and messages, and that the token is never
printed. What it does not prove: the real API's answers or error texts.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from components.image_retention import (
    GOLDEN_LABEL,
    MAX_RATE_LIMIT_WAIT_S,
    RATE_LIMIT_RETRIES,
    STACK_LABEL,
    _retry_wait,
    choose_deletions,
)

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "hc-test-token-7Qz3kLpW9vXr2mNb"
STACK = "dev"


def image(image_id: int, created: str, **extra: Any) -> dict[str, Any]:
    return {"id": image_id, "created": created, **extra}


def day(n: int) -> str:
    return f"2025-01-{n:02d}T12:00:00+00:00"


# --- the pure choice ---------------------------------------------------------


def test_keeps_the_newest_n_and_deletes_the_rest_oldest_first():
    images = [image(i, day(i)) for i in range(1, 6)]
    assert choose_deletions(images, in_use=[], protect=[], keep=2) == [1, 2, 3]


def test_never_deletes_an_image_in_use():
    images = [image(i, day(i)) for i in range(1, 6)]
    assert choose_deletions(images, in_use=[1, 3], protect=[], keep=2) == [2]


def test_never_deletes_the_protected_image():
    images = [image(i, day(i)) for i in range(1, 6)]
    assert choose_deletions(images, in_use=[], protect=[2], keep=1) == [1, 3, 4]


@pytest.mark.parametrize("keep", [5, 6, 100])
def test_keep_at_least_the_count_deletes_nothing(keep):
    images = [image(i, day(i)) for i in range(1, 6)]
    assert choose_deletions(images, in_use=[], protect=[], keep=keep) == []


def test_no_images_deletes_nothing():
    assert choose_deletions([], in_use=[7], protect=[8], keep=1) == []


def test_orders_by_created_not_by_id_or_list_order():
    # Ids deliberately out of creation order, and the list shuffled.
    images = [image(10, day(3)), image(30, day(1)), image(20, day(4)), image(40, day(2))]
    assert choose_deletions(images, in_use=[], protect=[], keep=2) == [30, 40]


def test_a_tie_on_created_is_broken_by_the_higher_id_being_newer():
    images = [image(5, day(1)), image(9, day(2)), image(7, day(2)), image(8, day(2))]
    # Newest: 9, 8 (kept); then 7, then 5 (oldest).
    assert choose_deletions(images, in_use=[], protect=[], keep=2) == [5, 7]


def test_created_times_with_offsets_and_z_compare_as_instants():
    images = [
        image(1, "2025-01-01T12:00:00Z"),  # 12:00 UTC
        image(2, "2025-01-01T13:30:00+02:00"),  # 11:30 UTC: the oldest
        image(3, "2025-01-01T12:30:00+00:00"),  # 12:30 UTC: the newest
    ]
    assert choose_deletions(images, in_use=[], protect=[], keep=1) == [2, 1]


def test_keep_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        choose_deletions([image(1, day(1))], in_use=[], protect=[], keep=0)


def test_the_wait_after_a_429_follows_the_headers_and_is_bounded():
    now = 1_700_000_000.0
    assert _retry_wait({"Retry-After": "2"}, now) == 2.0  # type: ignore[arg-type]
    assert _retry_wait({"RateLimit-Reset": str(int(now) + 5)}, now) == 5.0  # type: ignore[arg-type]
    assert _retry_wait({"Retry-After": "3600"}, now) == MAX_RATE_LIMIT_WAIT_S  # type: ignore[arg-type]
    assert _retry_wait({"RateLimit-Reset": str(int(now) - 5)}, now) == 0.0  # type: ignore[arg-type]
    assert _retry_wait({}, now) == 1.0  # type: ignore[arg-type]


# --- the fake Hetzner API ------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None


@dataclass
class FakeHetzner:
    """Hetzner's image and server endpoints, just enough: label selection, paging, DELETE."""

    url: str = ""
    images: list[dict[str, Any]] = field(default_factory=list)
    servers: list[dict[str, Any]] = field(default_factory=list)
    page_size: int | None = None  # None: honour per_page, as Hetzner does
    rate_limited: int = 0  # answer this many requests with 429 first
    rate_limit_headers: dict[str, str] = field(default_factory=lambda: {"Retry-After": "0"})
    fail_delete: set[int] = field(default_factory=set)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def deletes(self) -> list[int]:
        return [int(r.path.rsplit("/", 1)[1]) for r in self.requests if r.method == "DELETE"]

    def gets(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == "GET" and r.path == path]


def _selected(labels: dict[str, str], selector: str) -> bool:
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if key not in labels or ("=" in term and labels[key] != value):
            return False
    return True


def _handler(fake: FakeHetzner) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self) -> Request:
            parts = urlsplit(self.path)
            request = Request(self.command, parts.path, parse_qs(parts.query), self.headers.get("Authorization"))
            with fake.lock:
                fake.requests.append(request)
                limited = fake.rate_limited > 0
                fake.rate_limited -= 1 if limited else 0
            if limited:
                self._send(429, {"error": {"code": "rate_limit_exceeded", "message": "slow down"}},
                           fake.rate_limit_headers)
                return None  # type: ignore[return-value]
            if request.authorization != f"Bearer {TOKEN}":
                self._send(401, {"error": {"code": "unauthorized", "message": "unable to authenticate"}})
                return None  # type: ignore[return-value]
            return request

        def _page(self, request: Request, key: str, items: list[dict[str, Any]]) -> None:
            selector = request.query.get("label_selector", [""])[0]
            chosen = [item for item in items if _selected(item.get("labels", {}), selector)]
            if key == "images":
                wanted = request.query.get("type", [None])[0]
                chosen = [item for item in chosen if wanted is None or item.get("type") == wanted]
            size = fake.page_size or int(request.query.get("per_page", ["25"])[0])
            page = int(request.query.get("page", ["1"])[0])
            last = max(1, -(-len(chosen) // size))
            body = {
                key: chosen[(page - 1) * size : page * size],
                "meta": {"pagination": {"page": page, "per_page": size, "last_page": last,
                                        "next_page": page + 1 if page < last else None,
                                        "total_entries": len(chosen)}},
            }
            self._send(200, body)

        def do_GET(self) -> None:
            request = self._record()
            if request is None:
                return
            if request.path == "/v1/images":
                self._page(request, "images", fake.images)
            elif request.path == "/v1/servers":
                self._page(request, "servers", fake.servers)
            else:
                self._send(404, {"error": {"code": "not_found", "message": "no such route"}})

        def do_DELETE(self) -> None:
            request = self._record()
            if request is None:
                return
            image_id = int(request.path.rsplit("/", 1)[1])
            if image_id in fake.fail_delete:
                # Echo the token back, as a careless proxy might: it must not be printed.
                self._send(500, {"error": {"code": "server_error",
                                           "message": f"boom for {self.headers.get('Authorization')}"}})
                return
            with fake.lock:
                before = len(fake.images)
                fake.images[:] = [i for i in fake.images if i["id"] != image_id]
                found = len(fake.images) < before
            if found:
                self._send(204)
            else:
                self._send(404, {"error": {"code": "not_found", "message": "image not found"}})

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def hetzner() -> Iterator[FakeHetzner]:
    fake = FakeHetzner()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def golden(image_id: int, created: str, stack: str = STACK, **extra: Any) -> dict[str, Any]:
    labels = {STACK_LABEL: stack, GOLDEN_LABEL: f"{image_id:032x}"}
    return {"id": image_id, "type": "snapshot", "created": created, "labels": labels,
            "protection": {"delete": False}, **extra}


def server(server_id: int, image_id: int | None, stack: str = STACK) -> dict[str, Any]:
    return {"id": server_id, "labels": {STACK_LABEL: stack},
            "image": None if image_id is None else {"id": image_id}}


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def summary(self) -> dict[str, Any]:
        lines = self.stdout.strip().splitlines()
        assert len(lines) == 1, self.stdout
        return json.loads(lines[0])


def run_cli(*args: str, endpoint: str | None, token: str | None = TOKEN) -> Run:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("HCLOUD_") and "PROXY" not in k.upper()}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    if endpoint is not None:
        env["HCLOUD_ENDPOINT"] = endpoint
    if token is not None:
        env["HCLOUD_TOKEN"] = token
    done = subprocess.run(
        [sys.executable, "-m", "components.image_retention", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert TOKEN not in done.stdout and TOKEN not in done.stderr, (done.stdout, done.stderr)
    return Run(done.returncode, done.stdout, done.stderr)


# --- the CLI against the fake ---------------------------------------------------


def test_pages_through_images_and_servers_and_deletes_exactly_the_unused_old_ones(hetzner):
    hetzner.page_size = 3  # five images and four servers: two pages each
    hetzner.images = [golden(i, day(i - 100)) for i in range(101, 106)]
    hetzner.images += [
        golden(201, day(1), stack="prod"),  # another stack's: not listed, not touched
        {**golden(202, day(1)), "labels": {STACK_LABEL: STACK}},  # not golden
        {**golden(203, day(1)), "type": "backup"},
    ]
    # The image in use is named on the second page of servers.
    hetzner.servers = [server(1, None), server(2, 105), server(3, 105), server(4, 102)]

    run = run_cli("--stack", STACK, "--keep", "2", "--protect", "103", endpoint=hetzner.url)

    assert run.code == 0, run.stderr
    assert hetzner.deletes() == [101]
    assert run.summary == {"kept": [105, 104, 103, 102], "deleted": [101], "protected": [103], "inUse": [102, 105]}
    assert {i["id"] for i in hetzner.images} == {102, 103, 104, 105, 201, 202, 203}

    image_gets = hetzner.gets("/v1/images")
    assert [g.query["page"] for g in image_gets] == [["1"], ["2"]]
    for get in image_gets:
        assert get.query["type"] == ["snapshot"]
        assert get.query["per_page"] == ["50"]
        assert get.query["label_selector"] == [f"{STACK_LABEL}={STACK},{GOLDEN_LABEL}"]
    server_gets = hetzner.gets("/v1/servers")
    assert [g.query["page"] for g in server_gets] == [["1"], ["2"]]
    assert all(g.query["label_selector"] == [f"{STACK_LABEL}={STACK}"] for g in server_gets)


def test_deletes_oldest_first_and_sends_the_bearer_token_on_every_request(hetzner):
    hetzner.images = [golden(i, day(i)) for i in range(1, 8)]

    run = run_cli("--stack", STACK, "--keep", "3", endpoint=hetzner.url)

    assert run.code == 0, run.stderr
    assert hetzner.deletes() == [1, 2, 3, 4]
    assert run.summary["deleted"] == [1, 2, 3, 4]
    assert run.summary["kept"] == [7, 6, 5]
    assert hetzner.requests and all(r.authorization == f"Bearer {TOKEN}" for r in hetzner.requests)
    assert all(TOKEN not in r.path and TOKEN not in json.dumps(r.query) for r in hetzner.requests)


def test_a_429_is_waited_out_and_retried(hetzner):
    hetzner.images = [golden(i, day(i)) for i in range(1, 4)]
    hetzner.rate_limited = 2

    run = run_cli("--stack", STACK, "--keep", "1", endpoint=hetzner.url)

    assert run.code == 0, run.stderr
    assert len(hetzner.gets("/v1/images")) == 3  # two 429s, then the answer
    assert hetzner.deletes() == [1, 2]
    assert "429" in run.stderr


def test_a_429_that_does_not_end_stops_after_a_few_retries(hetzner):
    hetzner.images = [golden(i, day(i)) for i in range(1, 4)]
    hetzner.rate_limited = 1000
    hetzner.rate_limit_headers = {"RateLimit-Reset": "0"}

    run = run_cli("--stack", STACK, "--keep", "1", endpoint=hetzner.url)

    assert run.code == 1
    assert len(hetzner.requests) == RATE_LIMIT_RETRIES + 1
    assert hetzner.deletes() == []
    assert "429" in run.stderr and "Nothing was deleted" in run.stderr


def test_a_500_on_delete_stops_naming_the_image_and_reports_what_was_deleted(hetzner):
    hetzner.images = [golden(i, day(i)) for i in range(1, 7)]
    hetzner.fail_delete = {3}

    run = run_cli("--stack", STACK, "--keep", "2", endpoint=hetzner.url)

    assert run.code == 1
    assert hetzner.deletes() == [1, 2, 3]  # stopped: 4 was not attempted
    message = run.stderr.strip().splitlines()[-1]
    assert "image 3" in message and "500" in message
    assert "[1, 2]" in message and "run again" in message
    assert run.summary["deleted"] == [1, 2]
    assert run.summary["kept"] == [6, 5, 4, 3]


def test_without_a_token_it_exits_2_and_asks_nothing(hetzner):
    hetzner.images = [golden(i, day(i)) for i in range(1, 4)]

    run = run_cli("--stack", STACK, "--keep", "1", endpoint=hetzner.url, token=None)

    assert run.code == 2
    assert "HCLOUD_TOKEN" in run.stderr and "Nothing was deleted" in run.stderr
    assert run.stdout == ""
    assert hetzner.requests == []


def test_dry_run_lists_what_it_would_delete_and_deletes_nothing(hetzner):
    hetzner.images = [golden(i, day(i)) for i in range(1, 6)]

    run = run_cli("--stack", STACK, "--keep", "2", "--dry-run", endpoint=hetzner.url)

    assert run.code == 0, run.stderr
    assert hetzner.deletes() == []
    assert len(hetzner.images) == 5
    assert run.summary["deleted"] == []
    assert run.summary["wouldDelete"] == [1, 2, 3]
    assert all(f"would delete image {i}" in run.stderr for i in (1, 2, 3))


def test_an_image_with_delete_protection_is_left_and_reported_protected(hetzner):
    hetzner.images = [golden(i, day(i)) for i in range(1, 5)]
    hetzner.images[0]["protection"] = {"delete": True}

    run = run_cli("--stack", STACK, "--keep", "1", "--protect", "2", endpoint=hetzner.url)

    assert run.code == 0, run.stderr
    assert hetzner.deletes() == [3]
    assert run.summary["protected"] == [1, 2]


@pytest.mark.parametrize("keep", ["0", "-1", "two"])
def test_keep_below_one_is_an_argument_error(hetzner, keep):
    run = run_cli("--stack", STACK, "--keep", keep, endpoint=hetzner.url)
    assert run.code == 2
    assert "--keep" in run.stderr
    assert hetzner.requests == []


def test_a_stack_slug_that_would_widen_the_selector_is_refused(hetzner):
    run = run_cli("--stack", f"dev,{GOLDEN_LABEL}", "--keep", "1", endpoint=hetzner.url)
    assert run.code == 2
    assert hetzner.requests == []


def test_an_unreachable_api_exits_1_saying_so():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = run_cli("--stack", STACK, "--keep", "1", endpoint=f"http://127.0.0.1:{port}/v1")
    assert run.code == 1
    assert "cannot reach" in run.stderr and "HCLOUD_ENDPOINT" in run.stderr
    assert "Nothing was deleted" in run.stderr
