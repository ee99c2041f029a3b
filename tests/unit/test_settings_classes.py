"""Classes of hostile settings the program refuses, each with several
members (not one example): a key entry holding two keys, an outside probe
that is no internet service, egress exemptions that are the internet in
pieces or no internet at all, and serials pasted as openssl prints them."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from components.settings import parse_settings
from tests.unit.test_settings import GOOD, HOST_KEY, problems_of, with_change

K = "functions-runtime:"
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBGe4QRoHlAeF+VOkMqHaVrWSGJ3kKN0n2DWnNX2Yvtq"


def named(cfg: dict[str, Any], config_key: str) -> list[str]:
    found = [p for p in problems_of(cfg) if p.startswith(K + config_key + ":")]
    assert found, (config_key, problems_of(cfg))
    return found


@pytest.mark.parametrize(
    "entry",
    [
        f"{HOST_KEY} {OTHER_KEY}",
        f"{HOST_KEY} me@laptop {OTHER_KEY}",
        f"{HOST_KEY} {OTHER_KEY.split()[1]}",
        f"{HOST_KEY} sk-ssh-ed25519@openssh.com AAAA",
    ],
    ids=["two-whole-keys", "comment-then-key", "second-body-only", "second-type-name"],
)
def test_an_ssh_keys_entry_holding_two_keys_is_refused(entry):
    (message,) = named(with_change("admin", {**GOOD["admin"], "sshKeys": [entry]}), "admin.sshKeys[0]")
    assert "more than one key" in message


def test_a_key_with_a_plain_comment_is_still_accepted():
    cfg = with_change("admin", {**GOOD["admin"], "sshKeys": [f"{HOST_KEY} ops@example.com rotated 2026"]})
    assert parse_settings(cfg, "dev").admin.ssh_keys


@pytest.mark.parametrize(
    "probe",
    ["224.0.0.1:443", "239.255.255.250:1900", "[ff02::1]:443", "[ff0e::1]:443", "255.255.255.255:443",
     "240.0.0.1:443", "127.0.0.1:443", "0.0.0.1:443", "[::1]:443", "[fc00::1]:443"],
)
def test_an_outside_probe_that_is_no_internet_service_is_refused(probe):
    (message,) = named(with_change("verify", {"outsideProbe": probe}), "verify.outsideProbe")
    assert "not an internet address" in message


@pytest.mark.parametrize("probe", ["1.1.1.1:443", "[2606:4700::1111]:443", "192.0.2.10:8080"])
def test_an_internet_or_documentation_outside_probe_is_accepted(probe):
    parse_settings(with_change("verify", {"outsideProbe": probe}), "dev")


def _public_slash8s() -> list[str]:
    """Every public /8 below 224/8: the internet with the private holes cut out."""
    out = []
    for first in range(1, 224):
        net = ipaddress.ip_network(f"{first}.0.0.0/8")
        if first in (10, 100, 127, 169, 172, 192):
            continue
        out.append(str(net))
    return out


@pytest.mark.parametrize(
    "cidrs",
    [
        _public_slash8s(),
        [f"{a}.0.0.0/8" for a in range(11, 80)],
        ["2000::/6", "2400::/6", "2800::/6"],
    ],
    ids=["every-public-slash8", "sixty-nine-slash8s", "ipv6-eighths"],
)
def test_egress_exemptions_that_together_are_a_large_share_of_the_internet_are_refused(cidrs):
    (message,) = named(with_change("egress", {"allowedCidrs": cidrs}), "egress.allowedCidrs")
    assert "together these ranges cover" in message


@pytest.mark.parametrize(
    "cidr",
    ["127.0.0.0/8", "127.0.0.1/32", "::1/128", "224.0.0.0/4", "239.1.2.3/32", "240.0.0.0/4", "0.0.0.0/8",
     "ff00::/8", "fe80::/10", "100.64.0.0/10"],
)
def test_egress_exemptions_that_are_no_internet_destination_are_refused(cidr):
    (message,) = named(with_change("egress", {"allowedCidrs": [cidr]}), "egress.allowedCidrs[0]")
    assert "no internet destination" in message or "never reach" in message


def test_a_few_internet_exemptions_are_accepted():
    settings = parse_settings(with_change("egress", {"allowedCidrs": ["203.0.113.25/32", "2001:db8::/48",
                                                                       "1.0.0.0/8"]}), "dev")
    assert settings.egress.allowed_cidrs == ("203.0.113.25/32", "2001:db8::/48", "1.0.0.0/8")


@pytest.mark.parametrize(
    "pasted,normal",
    [
        ("serial=0A1B2C3D", "a1b2c3d"),
        ("serial=0A:1B:2C:3D", "a1b2c3d"),
        ("SERIAL=7F", "7f"),
        ("0x7f", "7f"),
        ("7F:00", "7f00"),
    ],
)
def test_a_serial_pasted_as_openssl_prints_it_is_accepted(pasted, normal):
    settings = parse_settings(with_change("endpoint", {"revoked": {"serials": [pasted]}}), "dev")
    assert settings.endpoint.revoked.serials == (normal,)


@pytest.mark.parametrize("pasted", ["serial=", "serial=xyz", "issuer=0A", "0A 1B"])
def test_a_serial_that_is_no_hex_is_refused(pasted):
    (message,) = named(with_change("endpoint", {"revoked": {"serials": [pasted]}}), "endpoint.revoked.serials[0]")
    assert "openssl x509 -noout -serial" in message
