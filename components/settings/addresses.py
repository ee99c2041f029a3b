"""Address arithmetic for settings: which ranges are private, which are the
internet, and how much of the internet a set of ranges covers."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Any

from components.contract import CGNAT, CNI_SUBNET, CONTAINER_BLOCKED_V4, CONTAINER_BLOCKED_V6, IPV6_ULA
from components.contract import RFC1918 as RFC1918_RANGES

Net = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Docker's default bridge; a private network overlapping it makes the host's
# routes ambiguous for containers.
DOCKER_DEFAULT_BRIDGE = ipaddress.ip_network("172.17.0.0/16")
HOST_CNI_SUBNET = ipaddress.ip_network(CNI_SUBNET)
RFC1918 = tuple(ipaddress.ip_network(n) for n in RFC1918_RANGES)
# Where a functions service may call the endpoint from without an opt-in:
# RFC 1918, carrier-grade NAT, IPv6 unique-local, loopback (tunnels).
ENDPOINT_PRIVATE = RFC1918 + tuple(ipaddress.ip_network(n) for n in (CGNAT, IPV6_ULA, "127.0.0.0/8", "::1/128"))
# Where a dedicated host's endpoint may listen: its private network or
# vSwitch (RFC 1918), or an overlay in carrier-grade NAT space.
PRIVATE_LISTEN = RFC1918 + (ipaddress.ip_network(CGNAT),)
# What containers never reach (the host filter's blocked sets), parsed once.
CONTAINER_BLOCKED_NETS = tuple(ipaddress.ip_network(c) for c in (*CONTAINER_BLOCKED_V4, *CONTAINER_BLOCKED_V6))
# The documentation ranges (RFC 5737, RFC 3849) are not "global", yet the
# lab serves one as its internet: accepted as outside addresses.
TEST_NETS = tuple(
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)
# The internet of each family: all of IPv4; IPv6's global unicast 2000::/3.
INTERNET = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("2000::/3"))
# Inside INTERNET, yet no internet destination: "this network", loopback,
# multicast, the reserved class E and broadcast (IPv4), and IPv6 multicast
# (outside 2000::/3 anyway; named so the rule reads whole). Python's
# `is_global` is true for 224.0.0.0/4, which is why this list exists.
NOT_INTERNET = tuple(
    ipaddress.ip_network(n)
    for n in ("0.0.0.0/8", "127.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4", "::1/128", "ff00::/8")
)
# "Anywhere": a set of ranges whose union covers at least this share of
# IPv4, or of IPv6's global unicast space. No operator or service network
# comes near a quarter of the internet (the largest single IPv4 allocations
# are /8s, 1/256); ranges that do are the internet with gaps, however they
# are split (0.0.0.0/1 + 128.0.0.0/1, 2000::/4 + 3000::/4, ...).
ANYWHERE_SHARE = 0.25
DNS_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def within(net: Net, ranges: Sequence[Any]) -> bool:
    return any(net.version == r.version and net.subnet_of(r) for r in ranges)


def overlapping(net: Net, ranges: Sequence[Net]) -> list[str]:
    return [str(r) for r in ranges if r.version == net.version and r.overlaps(net)]


def internet_share(nets: Sequence[Net]) -> float:
    """The largest share of an address family's internet that the union of `nets` covers.

    IPv4's internet is the whole space; IPv6's is global unicast 2000::/3
    (unique-local addresses and the rest are not routed on the internet).
    Overlapping and adjacent ranges count once.
    """
    share = 0.0
    for internet in INTERNET:
        parts = []
        for net in nets:
            if net.version != internet.version or not net.overlaps(internet):
                continue
            parts.append(internet if internet.subnet_of(net) else net)  # type: ignore[arg-type]
        covered = sum(n.num_addresses for n in ipaddress.collapse_addresses(parts))  # type: ignore[arg-type]
        share = max(share, covered / internet.num_addresses)
    return share


def is_anywhere(nets: Sequence[Net]) -> bool:
    """Whether these ranges together stand for "anywhere" (see ANYWHERE_SHARE)."""
    return internet_share(nets) >= ANYWHERE_SHARE


def is_internet_address(addr: Address) -> bool:
    """An address a server reaches on the internet: global unicast, not
    multicast or reserved, never a range containers are kept from; the
    documentation ranges count (the lab serves its internet on one)."""
    if any(addr in n for n in TEST_NETS):
        return True
    if any(addr in b for b in CONTAINER_BLOCKED_NETS) or any(addr in n for n in NOT_INTERNET):
        return False
    if addr.version == 6 and addr not in INTERNET[1]:
        return False
    return addr.is_global


def not_internet(net: Net) -> list[str]:
    """The non-internet ranges a destination range touches (empty: all internet)."""
    found = overlapping(net, [*CONTAINER_BLOCKED_NETS, *NOT_INTERNET])
    if net.version == 6 and not net.subnet_of(INTERNET[1]):  # type: ignore[arg-type]
        found.append(f"everything outside {INTERNET[1]}")
    return found


def normal_address(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address.lower().rstrip(".")


def is_host_address(address: str) -> bool:
    """An IP address, or a DNS host name (RFC 1123 labels, at most 253 characters)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        name = address[:-1] if address.endswith(".") else address
        labels = name.split(".")
        return 0 < len(name) <= 253 and all(DNS_LABEL.match(label) for label in labels) and not labels[-1].isdigit()
    return not (ip.is_unspecified or ip.is_multicast)
