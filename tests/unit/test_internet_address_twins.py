"""The host's `_is_internet` and the program's `is_internet_address` agree.

host_verify/checks.py runs on the host with the standard library only, so it
cannot import components/settings/addresses.py and carries a small twin of
`is_internet_address` (it decides whether a failed name lookup's nameserver
is one containers could ever reach). This proves the two give the same
answer, and the answer written here, for at least one address of every range
either of them treats specially (each range `is_internet_address` names is
checked to have a row), and on both sides of the CGNAT and RFC 1918 edges.

The two once disagreed on the documentation ranges (the lab's internet is on
TEST-NET-1) and on IPv6 outside 2000::/3 (IPv4-mapped and NAT64 forms of
public addresses); the host's twin now follows the program's rule there.
"""

from __future__ import annotations

import ipaddress

import pytest

from components.settings.addresses import CONTAINER_BLOCKED_NETS, NOT_INTERNET, TEST_NETS, is_internet_address
from host_verify.checks import _is_internet

# (address, whether it is an internet address)
TABLE: tuple[tuple[str, bool], ...] = (
    # "this network" 0.0.0.0/8
    ("0.0.0.0", False),
    ("0.1.2.3", False),
    # loopback
    ("127.0.0.1", False),
    ("127.1.2.3", False),
    # RFC 1918, and just outside 172.16.0.0/12
    ("10.0.0.1", False),
    ("10.255.255.254", False),
    ("172.16.0.1", False),
    ("172.31.255.254", False),
    ("172.32.0.1", True),
    ("192.168.1.1", False),
    # carrier-grade NAT 100.64.0.0/10, and just outside it
    ("100.63.255.255", True),
    ("100.64.0.1", False),
    ("100.127.255.254", False),
    ("100.128.0.1", True),
    # link-local, and the cloud metadata address in it
    ("169.254.0.1", False),
    ("169.254.169.254", False),
    # benchmarking 198.18.0.0/15
    ("198.18.0.1", False),
    ("198.19.255.254", False),
    # IETF protocol assignments 192.0.0.0/24
    ("192.0.0.1", False),
    # multicast (Python's is_global is true for most of it)
    ("224.0.0.1", False),
    ("224.0.1.1", False),
    ("239.255.255.250", False),
    # reserved class E, and broadcast
    ("240.0.0.1", False),
    ("255.255.255.255", False),
    # public
    ("1.1.1.1", True),
    ("8.8.8.8", True),
    ("9.9.9.9", True),
    # IPv6: unspecified, loopback, link-local, unique-local
    ("::", False),
    ("::1", False),
    ("fe80::1", False),
    ("fc00::1", False),
    ("fd00::1", False),
    # IPv6 multicast, link and global scope
    ("ff02::1", False),
    ("ff0e::1", False),
    # IPv4-mapped private address
    ("::ffff:10.0.0.1", False),
    # Teredo 2001::/32, inside 2000::/3 but not global
    ("2001::1", False),
    # the documentation ranges: the lab serves its internet on TEST-NET-1
    ("192.0.2.10", True),
    ("192.0.2.53", True),
    ("198.51.100.7", True),
    ("203.0.113.9", True),
    ("2001:db8::1", True),
    # IPv6 forms of public IPv4 addresses, outside 2000::/3
    ("::ffff:8.8.8.8", False),
    ("64:ff9b::808:808", False),
    # IPv6 public
    ("2606:4700::1111", True),
    ("2001:4860:4860::8888", True),
)


@pytest.mark.parametrize(("address", "internet"), TABLE, ids=[a for a, _ in TABLE])
def test_host_and_program_agree(address: str, internet: bool):
    assert _is_internet(address) is internet
    assert is_internet_address(ipaddress.ip_address(address)) is internet


def test_the_table_has_a_row_in_every_range_the_program_names():
    addresses = [ipaddress.ip_address(a) for a, _ in TABLE]
    ranges = (*CONTAINER_BLOCKED_NETS, *NOT_INTERNET, *TEST_NETS)
    missing = [str(net) for net in ranges if not any(a.version == net.version and a in net for a in addresses)]
    assert not missing, f"no row in {missing}"
