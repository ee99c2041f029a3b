"""One DNS question over UDP, for the name lookup's positive control: the host
asks the container's own nameserver what the container asked it.

Standard library only (the host has no dig). One A question with recursion
desired; the answer's A records, following compressed names. Not a
resolver: no retries over TCP, no search domains, no CNAME chasing beyond
what the server puts in the answer section.
"""

from __future__ import annotations

import socket
import struct

TYPE_A = 1
CLASS_IN = 1
QUERY_ID = 0x4652  # fixed: the answer is matched by it and by the question


def question(name: str) -> bytes:
    """The query message for `name`'s A records (RFC 1035, 4.1)."""
    header = struct.pack("!HHHHHH", QUERY_ID, 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(part)]) + part.encode("ascii") for part in name.rstrip(".").split("."))
    return header + labels + b"\x00" + struct.pack("!HH", TYPE_A, CLASS_IN)


def _skip_name(message: bytes, at: int) -> int:
    """The offset after the (possibly compressed) name that starts at `at`."""
    while True:
        if at >= len(message):
            raise ValueError("a name runs past the message")
        length = message[at]
        if length & 0xC0 == 0xC0:
            return at + 2
        if length == 0:
            return at + 1
        at += 1 + length


def addresses(message: bytes) -> list[str]:
    """The A records in an answer to `question()`; [] for NXDOMAIN or none.
    Raises ValueError for what is not an answer to it."""
    if len(message) < 12:
        raise ValueError("shorter than a DNS header")
    ident, flags, qdcount, ancount, _, _ = struct.unpack("!HHHHHH", message[:12])
    if ident != QUERY_ID or not flags & 0x8000:
        raise ValueError("not an answer to this question")
    if flags & 0x000F:  # RCODE: NXDOMAIN, SERVFAIL, REFUSED, ...
        return []
    at = 12
    for _ in range(qdcount):
        at = _skip_name(message, at) + 4
    found = []
    for _ in range(ancount):
        at = _skip_name(message, at)
        rtype, rclass, _ttl, length = struct.unpack("!HHIH", message[at : at + 10])
        at += 10
        if rtype == TYPE_A and rclass == CLASS_IN and length == 4:
            found.append(socket.inet_ntoa(message[at : at + 4]))
        at += length
    return found


def ask(server: str, name: str, timeout: float = 5.0) -> list[str] | None:
    """`name`'s A records from `server` (port 53); None when it did not answer."""
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(question(name), (server, 53))
            reply, _ = sock.recvfrom(4096)
        except OSError:
            return None
    try:
        return addresses(reply)
    except (ValueError, struct.error):
        return None
