"""host_verify/dns.py: one A question, asked of a responder on loopback.

The responder here is a few lines of test code answering over real UDP
sockets (compressed names, NXDOMAIN, silence), so the message building,
parsing and timeout run as on a host. Proves the wire format against this
responder and RFC 1035's layout; not tested against a real resolver (no
outside traffic in tests).
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from host_verify.dns import QUERY_ID, addresses, ask, question

NAME = "probe.functions-runtime.test"


def answer(query: bytes, records: list[str], rcode: int = 0, ident: int | None = None) -> bytes:
    """A reply to `query` with A records whose names point back at the question (0xC00C)."""
    qid = struct.unpack("!H", query[:2])[0] if ident is None else ident
    header = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, len(records), 0, 0)
    body = query[12:]
    for addr in records:
        body += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + socket.inet_aton(addr)
    return header + body


@pytest.fixture
def responder() -> Iterator[tuple[str, dict]]:
    """A UDP DNS responder on 127.0.0.1 whose behaviour the test sets: `records`, `rcode`, `silent`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    behaviour: dict = {"records": ["192.0.2.10"], "rcode": 0, "silent": False, "seen": []}
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                query, peer = sock.recvfrom(512)
            except TimeoutError:
                continue
            behaviour["seen"].append(query)
            if not behaviour["silent"]:
                sock.sendto(answer(query, behaviour["records"], behaviour["rcode"]), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}", behaviour
    finally:
        stop.set()
        thread.join(timeout=5)
        sock.close()


def test_the_question_is_one_recursive_a_query_for_the_name():
    q = question(NAME + ".")
    ident, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", q[:12])
    assert (ident, flags, qd, an, ns, ar) == (QUERY_ID, 0x0100, 1, 0, 0, 0)
    assert q[12:] == b"\x05probe\x11functions-runtime\x04test\x00" + struct.pack("!HH", 1, 1)


def test_answers_are_read_through_compressed_names():
    q = question(NAME)
    assert addresses(answer(q, ["192.0.2.10", "192.0.2.11"])) == ["192.0.2.10", "192.0.2.11"]
    assert addresses(answer(q, [], rcode=3)) == []  # NXDOMAIN


def test_a_reply_to_another_question_is_not_taken():
    with pytest.raises(ValueError, match="not an answer"):
        addresses(answer(question(NAME), ["192.0.2.10"], ident=QUERY_ID + 1))
    with pytest.raises(ValueError, match="shorter"):
        addresses(b"\x46\x52")


def test_ask_gets_the_records_over_udp(responder, monkeypatch):
    where, behaviour = responder
    host, port = where.split(":")
    monkeypatch.setattr("host_verify.dns.socket.socket", _socket_to_port(int(port)))
    assert ask(host, NAME, timeout=5) == ["192.0.2.10"]
    assert behaviour["seen"] == [question(NAME)]
    behaviour["rcode"] = 3
    assert ask(host, NAME, timeout=5) == []


def test_a_silent_server_is_no_answer_not_an_empty_one(responder, monkeypatch):
    where, behaviour = responder
    host, port = where.split(":")
    monkeypatch.setattr("host_verify.dns.socket.socket", _socket_to_port(int(port)))
    behaviour["silent"] = True
    assert ask(host, NAME, timeout=0.5) is None


def _socket_to_port(port: int) -> type:
    """socket.socket whose sendto goes to `port` instead of 53 (the responder is unprivileged)."""
    real = socket.socket

    class Redirected(real):  # type: ignore[misc, valid-type]
        def sendto(self, data, address):  # type: ignore[override]
            return super().sendto(data, (address[0], port))

    return Redirected
