"""The `hosts` list: host groups (new Cloud servers or adopted machines),
flattened into one `HostSpec` per host, with the rules across hosts (names,
addresses and ports used once)."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any

from components.contract import NO_KVM_ON_CLOUD
from components.settings.addresses import PRIVATE_LISTEN, is_host_address, normal_address
from components.settings.declarations import SETTINGS, ZONE_LOCATIONS, Setting, setting
from components.settings.model import EndpointSettings, HostSpec, NetworkSettings, key
from components.settings.problems import Problems, shown
from components.ssh_keys import HOST_KEY_TYPES, ssh_public_key_problem

# Hetzner allows at most 10 servers in one spread placement group.
PLACEMENT_GROUP_SIZE = 10
HOSTNAME_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
SERVER_TYPE = re.compile(r"^[a-z]{2,4}[0-9]{2,3}[a-z]*$")
# Hetzner's Arm (Ampere) server types; the lookup also reads the architecture.
ARM_SERVER_TYPE_PREFIXES = ("cax",)
# Debian's adduser NAME_REGEX, without the trailing '$' of machine accounts.
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def _group_fields(source: str) -> tuple[str, ...]:
    """The fields a group of one source accepts, from the declarations."""
    return tuple(
        s.field
        for s in SETTINGS
        if s.key.startswith("hosts[].") and s.key.count(".") == 1 and s.only in ("", source)
    )


HCLOUD_FIELDS = _group_fields("hcloud")
DEDICATED_FIELDS = _group_fields("dedicated")
MACHINE_FIELDS = tuple(s.field for s in SETTINGS if s.key.startswith("hosts[].addresses[]."))


def _field(p: Problems, group: Mapping[str, Any], where: str, name: str) -> Any:
    decl: Setting = setting(name)
    return p.read(decl, group.get(decl.field), f"{where}.{decl.field}")


def stack_slug(stack: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", stack.lower()).strip("-")
    return slug or "stack"


def parse_hosts(
    p: Problems,
    value: Any,
    stack: str,
    isolation: str | None,
    network: NetworkSettings,
    architectures: frozenset[str] = frozenset({"amd64"}),
) -> list[HostSpec]:
    hosts_key = key("hosts")
    if value is None or value == []:
        p.add(hosts_key, "required: a list of host groups (source: hcloud or source: dedicated)")
        return []
    if not isinstance(value, list):
        p.add(hosts_key, f"expected a list of host groups, got {type(value).__name__}")
        return []
    hosts: list[HostSpec] = []
    group_names: set[str] = set()
    for gi, group in enumerate(value):
        group_key = f"{hosts_key}[{gi}]"
        if not isinstance(group, Mapping):
            p.add(group_key, "expected an object with name and source")
            continue
        source = group.get("source")
        name = p.string(f"{group_key}.name", group.get("name")) or f"group{gi}"
        if not HOSTNAME_LABEL.match(name) or len(name) > 40:
            p.add(
                f"{group_key}.name",
                f"{name!r} is not a valid hostname label (lowercase letters, digits and "
                "hyphens, at most 40 characters)",
            )
        if name in group_names:
            p.add(f"{group_key}.name", f"{name!r} is used by another host group")
        group_names.add(name)
        if source == "hcloud":
            hosts.extend(_parse_hcloud_group(p, group_key, group, name, stack, isolation, network, architectures))
        elif source == "dedicated":
            hosts.extend(_parse_dedicated_group(p, group_key, group, name))
        else:
            p.add(f"{group_key}.source", f"must be 'hcloud' or 'dedicated', got {source!r}")
    seen: set[str] = set()
    for h in hosts:
        if h.name in seen:
            p.add(hosts_key, f"host name {h.name!r} appears twice; rename a group or machine")
        seen.add(h.name)
    _check_dedicated_unique(p, hosts)
    return hosts


def _check_dedicated_unique(p: Problems, hosts: Sequence[HostSpec]) -> None:
    """One machine is adopted once; two endpoints never share an address.

    A machine is its SSH address and port together: two lab guests behind
    one forwarding address differ by port.
    """
    seen: dict[str, dict[object, HostSpec]] = {"address": {}, "privateAddress": {}}
    for h in hosts:
        if h.source != "dedicated":
            continue
        claims = []
        if h.address is not None:
            claims.append(("address", (normal_address(h.address), h.ssh_port),
                           f"the address {h.address} (SSH port {h.ssh_port})",
                           "one machine is adopted once; remove the duplicate entry"))
        if h.private_address is not None:
            claims.append(("privateAddress", normal_address(h.private_address),
                           f"the privateAddress {h.private_address}", "two endpoints cannot listen on one address"))
        for kind, where, what, why in claims:
            owner = seen[kind].setdefault(where, h)
            if owner is not h:
                p.add(h.config_key, f"machine {h.name!r} has {what} of {owner.name!r}: {why}")


def private_address_problem(private: str) -> str | None:
    try:
        ip = ipaddress.ip_address(private)
    except ValueError:
        return f"{shown(private)} is not an IP address"
    if ip.version == 6:
        return (
            f"{private} is IPv6: the endpoint is exported as tcp://<privateAddress>:<port>, which "
            "Docker clients cannot parse for an IPv6 address; give the machine's private IPv4 "
            "address (its vSwitch or private network address)"
        )
    if not any(ip in net for net in PRIVATE_LISTEN):
        return (
            f"{private} is not a private address: the Docker endpoint listens on it, so it must "
            f"be on the private network ({', '.join(str(n) for n in PRIVATE_LISTEN)}); give the "
            "machine's vSwitch or private network address"
        )
    return None


def listening_ports(spec: HostSpec, endpoint: EndpointSettings) -> dict[str, int]:
    """Every TCP port a host listens on, by the config key that sets it.

    Add here the port of every feature that opens one (a metrics exporter,
    ...): they are all checked against each other.
    """
    sshd = f"{spec.config_key}.sshdPort" if spec.source == "dedicated" else f"{spec.config_key} (sshd on Cloud servers)"
    return {sshd: spec.sshd_port, key("endpoint.port"): endpoint.port}


def check_ports(p: Problems, hosts: Sequence[HostSpec], endpoint: EndpointSettings) -> None:
    reported: set[tuple[str, ...]] = set()
    for h in hosts:
        by_port: dict[int, list[str]] = {}
        for config_key, port in listening_ports(h, endpoint).items():
            by_port.setdefault(port, []).append(config_key)
        for port, keys in by_port.items():
            if len(keys) > 1 and tuple(keys) not in reported:
                reported.add(tuple(keys))
                p.add(
                    keys[0],
                    f"port {port} is also set by {', '.join(keys[1:])}: a host cannot listen on one "
                    "port for two services; choose another port for one of them",
                )


def arm_refusal(server_type: str) -> str:
    return (
        f"{server_type!r} is an Arm (arm64) server type, but the artifact catalog pins amd64 "
        "release files only (Kata, nerdctl): the host would get binaries it cannot run. Use an "
        "x86 type (cx, cpx, ccx), or add arm64 rows to the catalog first"
    )


def _parse_hcloud_group(
    p: Problems,
    group_key: str,
    group: Mapping[str, Any],
    name: str,
    stack: str,
    isolation: str | None,
    network: NetworkSettings,
    architectures: frozenset[str],
) -> list[HostSpec]:
    p.obj(group_key, group, HCLOUD_FIELDS)
    if isolation == "vm":
        p.add(
            group_key,
            f"host group {name!r} is on Hetzner Cloud, but functions-runtime:isolation is "
            f"'vm': {NO_KVM_ON_CLOUD} (no /dev/kvm on any server type), so Kata cannot run there. Adopt "
            "KVM-capable dedicated servers with source: dedicated, or set functions-runtime:isolation to "
            "'sandbox' to run gVisor on Cloud servers",
        )
    count_decl = setting("hosts[].count")
    count = p.integer(f"{group_key}.count", group.get("count"), 1, count_decl.low or 1, count_decl.high or 1)
    if group.get("count") is None:
        p.add(f"{group_key}.count", "required: how many servers this group has (at least 1)")
    server_type = _field(p, group, group_key, "hosts[].serverType")
    if server_type is None:
        p.add(f"{group_key}.serverType", "required: a Hetzner Cloud server type such as cx23 or cpx31")
    elif not SERVER_TYPE.match(server_type):
        p.add(f"{group_key}.serverType", f"{shown(server_type)} is not a Hetzner server type such as cx23 or cpx31")
    elif server_type.startswith(ARM_SERVER_TYPE_PREFIXES) and "arm64" not in architectures:
        p.add(f"{group_key}.serverType", arm_refusal(server_type))
    location = _field(p, group, group_key, "hosts[].location")
    zone_locations = ZONE_LOCATIONS.get(network.zone, ())
    if location is None:
        p.add(f"{group_key}.location", f"required: one of {', '.join(zone_locations)}")
    elif location not in zone_locations:
        all_locations = sorted(setting("hosts[].location").choices)
        if location in all_locations:
            p.add(
                f"{group_key}.location",
                f"{location!r} is outside network.zone {network.zone!r}; use one of "
                f"{', '.join(zone_locations)} or change network.zone",
            )
        else:
            p.add(f"{group_key}.location", f"unknown location {location!r}; accepted: {', '.join(all_locations)}")
    image = _field(p, group, group_key, "hosts[].image")
    images = setting("hosts[].image").choices
    if image not in images:
        p.add(f"{group_key}.image", f"{image!r} is not supported: the install scripts target {', '.join(images)}")
    slug = stack_slug(stack)
    hosts = []
    for i in range(count):
        host_name = f"{name}-{i + 1}"
        server_name = f"{slug}-{host_name}"
        if len(server_name) > 63:
            p.add(f"{group_key}.name", f"server name {server_name!r} is longer than 63 characters")
        hosts.append(
            HostSpec(
                name=host_name,
                group=name,
                source="hcloud",
                server_name=server_name,
                server_type=server_type,
                location=location,
                image=image,
                placement_index=i // PLACEMENT_GROUP_SIZE,
                config_key=group_key,
            )
        )
    return hosts


def _parse_dedicated_group(p: Problems, group_key: str, group: Mapping[str, Any], name: str) -> list[HostSpec]:
    p.obj(group_key, group, DEDICATED_FIELDS)
    user = _field(p, group, group_key, "hosts[].sshUser") or setting("hosts[].sshUser").default
    if not USER_NAME.match(user):
        p.add(
            f"{group_key}.sshUser",
            f"{shown(user)} is not a user name (lowercase letters, digits, '_' and '-', "
            "starting with a letter or '_', at most 32 characters)",
        )
    port = _field(p, group, group_key, "hosts[].sshPort")
    sshd = setting("hosts[].sshdPort")
    sshd_port = p.integer(f"{group_key}.sshdPort", group.get("sshdPort"), port, sshd.low or 1, sshd.high or 1)
    tofu = _field(p, group, group_key, "hosts[].trustOnFirstUse")
    machines = group.get("addresses")
    if not isinstance(machines, list) or not machines:
        p.add(
            f"{group_key}.addresses",
            "required: the existing KVM-capable Debian 13 machines to adopt, each as "
            "{address, privateAddress, hostKey}",
        )
        return []
    hosts = []
    for mi, machine in enumerate(machines):
        machine_key = f"{group_key}.addresses[{mi}]"
        m = p.obj(machine_key, machine, MACHINE_FIELDS)
        if not m and not isinstance(machine, Mapping):
            continue
        host_name = p.string(f"{machine_key}.name", m.get("name"), f"{name}-{mi + 1}") or ""
        if not HOSTNAME_LABEL.match(host_name):
            p.add(f"{machine_key}.name", f"{host_name!r} is not a valid hostname label")
        address = p.string(f"{machine_key}.address", m.get("address"))
        if address is None:
            p.add(f"{machine_key}.address", "required: the address SSH reaches the machine on")
        elif not is_host_address(address):
            p.add(
                f"{machine_key}.address",
                f"{shown(address)} is neither an IP address nor a host name; give the address "
                "SSH reaches the machine on (203.0.113.50, 2001:db8::50 or metal-1.example.com), "
                "without user@ or :port (use sshUser and sshPort)",
            )
        private = p.string(f"{machine_key}.privateAddress", m.get("privateAddress"))
        if private is None:
            p.add(
                f"{machine_key}.privateAddress",
                "required: the address the Docker endpoint listens on (the machine's "
                "private network or vSwitch address)",
            )
        else:
            problem = private_address_problem(private)
            if problem:
                p.add(f"{machine_key}.privateAddress", problem)
        host_key = p.string(f"{machine_key}.hostKey", m.get("hostKey"))
        problem = None if host_key is None else ssh_public_key_problem(host_key, HOST_KEY_TYPES)
        if problem:
            p.add(
                f"{machine_key}.hostKey",
                f"{problem}. Expected the machine's SSH host public key ('ssh-ed25519 AAAA...'), "
                "as in /etc/ssh/ssh_host_ed25519_key.pub on its console",
            )
        if host_key is None and not tofu:
            p.add(
                f"{machine_key}.hostKey",
                "required: the machine's SSH host public key, so the program never talks "
                "to an impostor (read it from the console: cat "
                "/etc/ssh/ssh_host_ed25519_key.pub), or set trustOnFirstUse: true on the "
                "group to accept whatever key answers",
            )
        hosts.append(
            HostSpec(
                name=host_name,
                group=name,
                source="dedicated",
                address=address,
                private_address=private,
                ssh_port=port,
                sshd_port=sshd_port,
                ssh_user=user,
                host_key=host_key,
                config_key=group_key,
            )
        )
    return hosts


# A golden-image host's server name carries "-g" and 8 hex digits of its
# image (components/machine.py golden_server_name); Hetzner allows 63.
GOLDEN_NAME_SUFFIX = 10


def check_golden_server_names(p: Problems, hosts: Sequence[HostSpec]) -> None:
    for h in hosts:
        if h.source == "hcloud" and h.server_name and len(h.server_name) + GOLDEN_NAME_SUFFIX > 63:
            p.add(
                f"{h.config_key}.name",
                f"server name {h.server_name!r} leaves no room for the golden image's suffix "
                f"({GOLDEN_NAME_SUFFIX} characters; Hetzner allows 63): shorten the group's name or the stack's",
            )


def leave_room_for_replacements(hosts: Sequence[HostSpec]) -> list[HostSpec]:
    """Nine Cloud hosts per spread placement group, not ten, with golden images:
    a rollout creates each replacement beside the server it replaces, and a
    full group (Hetzner's limit is ten) would refuse it."""
    seen: dict[str, int] = {}
    placed: list[HostSpec] = []
    for h in hosts:
        if h.source != "hcloud":
            placed.append(h)
            continue
        i = seen.get(h.group, 0)
        seen[h.group] = i + 1
        placed.append(dataclasses.replace(h, placement_index=i // (PLACEMENT_GROUP_SIZE - 1)))
    return placed
