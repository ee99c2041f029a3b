"""Typed stack configuration, checked before any resource exists.

Every problem is collected and raised at once, each naming its config key,
so a platform engineer fixes a stack file in one pass instead of one
`pulumi preview` per typo. No other module reads `pulumi.Config`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import pulumi
from pulumi.runtime import config as runtime_config

from components.catalog import Catalog, CatalogError, load_catalog
from components.contract import (
    BUSYBOX_VERIFY_IMAGE,
    CGNAT,
    CNI_SUBNET,
    COLD_START_RUNS_DEFAULT,
    COLD_START_RUNS_MAX,
    COLD_START_RUNS_MIN,
    CONTAINER_BLOCKED_V4,
    CONTAINER_BLOCKED_V6,
    EGRESS_NEW_BURST_DEFAULT,
    EGRESS_NEW_PER_SECOND_DEFAULT,
    ENDPOINT_MAX_MEMORY_MIB_DEFAULT,
    ENDPOINT_MAX_MEMORY_MIB_MIN,
    ENDPOINT_MAX_MILLICPUS_DEFAULT,
    ENDPOINT_MAX_MILLICPUS_MIN,
    ENDPOINT_MAX_PIDS_DEFAULT,
    ENDPOINT_MAX_PIDS_MIN,
    GVISOR_ARTIFACTS,
    GVISOR_RUNSC_SOURCES,
    IPV6_ULA,
    ISOLATIONS,
    KATA_DOCKER_TESTED_HYPERVISORS,
    KATA_HYPERVISORS,
    KATA_UNTESTED_WITH_DOCKER,
    NO_KVM_ON_CLOUD,
    SMTP_PORTS,
)
from components.contract import RFC1918 as RFC1918_RANGES
from components.local_files import (
    contained,
    docker_archive_problem,
    local_dir_problem,
    regular_file_problem,
    resolve,
)
from components.ssh_keys import HOST_KEY_TYPES, ssh_private_key_problem, ssh_public_key_problem

NAMESPACE = "functions-runtime"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CATALOG = "catalog/artifacts.tsv"

Isolation = Literal["vm", "sandbox"]
Source = Literal["hcloud", "dedicated"]

# Hetzner Cloud locations by network zone; a subnet lives in one zone and
# every server attached to it must be in a location of that zone.
ZONE_LOCATIONS: dict[str, tuple[str, ...]] = {
    "eu-central": ("fsn1", "nbg1", "hel1"),
    "us-east": ("ash",),
    "us-west": ("hil",),
    "ap-southeast": ("sin",),
}
# The scripts install Debian 13 packages; another image would fail half-way.
SUPPORTED_IMAGES = ("debian-13",)
HYPERVISORS = KATA_HYPERVISORS
DEFAULT_HYPERVISOR = KATA_DOCKER_TESTED_HYPERVISORS[0]
HYPERVISOR_NAMES = {"qemu": "QEMU", "clh": "Cloud Hypervisor"}
REFUSED_HYPERVISORS = {
    "firecracker": "Firecracker needs the devmapper snapshotter and is not tested "
    "with Docker upstream; use qemu",
    "fc": "Firecracker needs the devmapper snapshotter and is not tested "
    "with Docker upstream; use qemu",
    "dragonball": "Dragonball is built into the Rust runtime only, which this "
    "project does not install; use qemu",
}
# Docker's default bridge; a private network overlapping it makes the host's
# routes ambiguous for containers.
DOCKER_DEFAULT_BRIDGE = ipaddress.ip_network("172.17.0.0/16")
HOST_CNI_SUBNET = ipaddress.ip_network(CNI_SUBNET)
RFC1918 = tuple(ipaddress.ip_network(n) for n in RFC1918_RANGES)
# Where a functions service may call the endpoint from without an opt-in:
# RFC 1918, carrier-grade NAT, IPv6 unique-local, loopback (tunnels).
ENDPOINT_PRIVATE = RFC1918 + tuple(
    ipaddress.ip_network(n) for n in (CGNAT, IPV6_ULA, "127.0.0.0/8", "::1/128")
)
# Hetzner allows at most 10 servers in one spread placement group.
PLACEMENT_GROUP_SIZE = 10
MAX_HOSTS_PER_GROUP = 100
HOSTNAME_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
SERVER_TYPE = re.compile(r"^[a-z]{2,4}[0-9]{2,3}[a-z]*$")
# Hetzner's Arm (Ampere) server types; the lookup also reads the architecture.
ARM_SERVER_TYPE_PREFIXES = ("cax",)
# Debian's adduser NAME_REGEX, without the trailing '$' of machine accounts.
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
DNS_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# Where a dedicated host's endpoint may listen: its private network or
# vSwitch (RFC 1918), or an overlay in carrier-grade NAT space.
PRIVATE_LISTEN = RFC1918 + (ipaddress.ip_network(CGNAT),)
IMAGE_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# A pinned image reference as Docker parses it: [registry[:port]/]path[:tag]@sha256:<digest>,
# lowercase path components (distribution's reference grammar, written out here).
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REGISTRY = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]{1,5})?/)"
IMAGE_REFERENCE = re.compile(
    rf"^{_REGISTRY}?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?"
    r"@sha256:[0-9a-f]{64}$"
)
# What containers never reach (the host filter's blocked sets), parsed once.
CONTAINER_BLOCKED_NETS = tuple(ipaddress.ip_network(c) for c in (*CONTAINER_BLOCKED_V4, *CONTAINER_BLOCKED_V6))
# verify.outsideProbe: what every Hetzner server reaches (Cloudflare's
# resolver answers HTTPS on its anycast address).
VERIFY_OUTSIDE_PROBE_DEFAULT = ("1.1.1.1", 443)
# The documentation ranges (RFC 5737, RFC 3849) are not "global", yet the
# lab serves one as its internet: accepted as outside addresses.
TEST_NETS = tuple(
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)
# Whole numbers as a stack file or `pulumi config set` spells them: ASCII
# digits, an optional minus, and few enough digits that int() never refuses.
WHOLE_NUMBER = re.compile(r"^-?[0-9]{1,18}$")
# "Anywhere": a set of source ranges whose union covers at least this share
# of IPv4, or of IPv6's global unicast space. No operator or service network
# comes near a quarter of the internet (the largest single IPv4 allocations
# are /8s, 1/256); ranges that do are the internet with gaps, however they
# are split (0.0.0.0/1 + 128.0.0.0/1, 2000::/4 + 3000::/4, ...).
ANYWHERE_SHARE = 0.25
INTERNET = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("2000::/3"))
# An image ID is the digest of the image's config: content-addressed, so
# pinned, for an image loaded from verify.imageArchive.
IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}$")

TOP_LEVEL_KEYS = (
    "hosts",
    "isolation",
    "kata",
    "gvisor",
    "network",
    "admin",
    "endpoint",
    "artifacts",
    "verify",
    "egress",
    "dedicatedSshKey",
)


class SettingsError(Exception):
    """All configuration problems of a stack, each naming its config key."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"the stack configuration has {len(self.problems)} problem(s); "
            f"nothing was changed:\n{lines}"
        )


@dataclass(frozen=True)
class KataSettings:
    hypervisor: str
    # kata.allowUntestedHypervisor: the stack accepts a hypervisor Kata does
    # not test with Docker (clh) as an experiment.
    allow_untested_hypervisor: bool = False


@dataclass(frozen=True)
class GvisorSettings:
    """gvisor.*: which runsc a host runs (the pinned release, or Debian's
    package as an explicit fallback)."""

    runsc: str = "release"
    # Whether a gVisor host may run with runsc --network=host when its runsc
    # cannot use gVisor's own network stack there (socket calls then reach
    # the host kernel); without it configure refuses such a host.
    allow_host_network_stack: bool = False


@dataclass(frozen=True)
class NetworkSettings:
    ip_range: str
    subnet: str
    zone: str


@dataclass(frozen=True)
class AdminSettings:
    ssh_keys: tuple[str, ...]
    ssh_source_cidrs: tuple[str, ...]


@dataclass(frozen=True)
class EndpointLimits:
    """The largest limits a container may ask for through the endpoint
    (the plugin refuses a create without limits, or above these)."""

    max_memory_mib: int = ENDPOINT_MAX_MEMORY_MIB_DEFAULT
    max_pids: int = ENDPOINT_MAX_PIDS_DEFAULT
    max_millicpus: int = ENDPOINT_MAX_MILLICPUS_DEFAULT


@dataclass(frozen=True)
class EndpointRevocations:
    """Client certificates the endpoint refuses: serials (lowercase hex,
    no separators) and common names."""

    serials: tuple[str, ...] = ()
    common_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class EndpointSettings:
    port: int
    allowed_cidrs: tuple[str, ...]
    limits: EndpointLimits = EndpointLimits()
    revoked: EndpointRevocations = EndpointRevocations()


@dataclass(frozen=True)
class EgressSettings:
    """What containers may send to the internet (the blocked ranges are
    fixed): SMTP, and how fast each container address opens connections,
    so one abusive function does not get the host locked by its provider."""

    block_smtp: bool = True
    new_per_second: int = EGRESS_NEW_PER_SECOND_DEFAULT
    new_burst: int = EGRESS_NEW_BURST_DEFAULT
    # Destinations exempt from both (a mail relay, a busy API).
    allowed_cidrs: tuple[str, ...] = ()


@dataclass(frozen=True)
class ArtifactSettings:
    mirror: str | None
    catalog: Catalog
    # Directories outside the project the stack names for local artifacts.
    local_dirs: tuple[Path, ...] = ()


@dataclass(frozen=True)
class VerifySettings:
    image: str
    image_archive: Path | None
    cold_start_runs: int
    # The internet address (address, port) a sandbox must reach before its
    # blocked targets count; None when the stack says "none".
    outside_probe: tuple[str, int] | None = VERIFY_OUTSIDE_PROBE_DEFAULT
    # Whether verify also runs each runtime through nerdctl (false only where
    # nerdctl is a stand-in, as in the lab; the report says it was skipped).
    nerdctl: bool = True


@dataclass(frozen=True)
class HostSpec:
    """One runtime host as the stack configures it, flattened from its group.

    The only Host* type: the machine it becomes is `machine.Machine`, its
    entry in the endpoint document `endpoint.EndpointHost`.
    """

    name: str
    group: str
    source: Source
    # hcloud hosts
    server_name: str | None = None
    server_type: str | None = None
    location: str | None = None
    image: str | None = None
    placement_index: int | None = None
    # dedicated hosts
    address: str | None = None
    private_address: str | None = None
    ssh_port: int = 22
    # The port sshd listens on inside the host; differs from ssh_port only
    # behind a port forward (the hostlab VM).
    sshd_port: int = 22
    ssh_user: str = "root"
    host_key: str | None = None
    # The config key of the host's group ("functions-runtime:hosts[0]"), for
    # problems found after parsing (the hcloud lookup).
    config_key: str = ""


@dataclass(frozen=True)
class Settings:
    stack: str
    isolation: Isolation
    kata: KataSettings
    network: NetworkSettings
    admin: AdminSettings
    endpoint: EndpointSettings
    artifacts: ArtifactSettings
    verify: VerifySettings
    hosts: tuple[HostSpec, ...]
    egress: EgressSettings = EgressSettings()
    dedicated_ssh_key: pulumi.Output[str] | None = None
    # Whether a Hetzner token is configured (HCLOUD_TOKEN or hcloud:token),
    # so server types and locations can be looked up; never the token.
    hcloud_token_set: bool = False
    # What the stack accepts on purpose but should hear about at every
    # preview, each naming its config key (read_settings logs them).
    warnings: tuple[str, ...] = ()
    gvisor: GvisorSettings = GvisorSettings()

    @property
    def hcloud_hosts(self) -> tuple[HostSpec, ...]:
        return tuple(h for h in self.hosts if h.source == "hcloud")

    @property
    def dedicated_hosts(self) -> tuple[HostSpec, ...]:
        return tuple(h for h in self.hosts if h.source == "dedicated")


def key(name: str) -> str:
    return f"{NAMESPACE}:{name}"


class _Problems:
    """Collects problems; accessors return a usable default after a problem."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.warnings: list[str] = []

    def add(self, config_key: str, message: str) -> None:
        self.items.append(f"{config_key}: {message}")

    def warn(self, config_key: str, message: str) -> None:
        """Accepted, but said at every preview (not a problem: nothing fails)."""
        self.warnings.append(f"{config_key}: {message}")

    def obj(self, config_key: str, value: Any, allowed: Sequence[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.add(config_key, f"expected an object, got {type(value).__name__}")
            return {}
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            self.add(
                config_key,
                f"unknown field(s) {', '.join(unknown)}; accepted: {', '.join(allowed)}",
            )
        return dict(value)

    def string(self, config_key: str, value: Any, default: str | None = None) -> str | None:
        if value is None:
            return default
        if not isinstance(value, str) or not value.strip():
            self.add(config_key, f"expected a non-empty string, got {_shown(value)}")
            return default
        if _has_control(value.strip()):
            self.add(config_key, "holds a line break or control character; give one plain value")
            return default
        return value.strip()

    def integer(
        self, config_key: str, value: Any, default: int, low: int, high: int
    ) -> int:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            # ASCII digits only: str.isdigit() also accepts '²', which int() refuses.
            if isinstance(value, str) and WHOLE_NUMBER.match(value.strip()):
                value = int(value.strip())
            else:
                self.add(config_key, f"expected a whole number, got {_shown(value)}")
                return default
        if not low <= value <= high:
            self.add(config_key, f"must be between {low} and {high}, got {value}")
            return default
        return value

    def boolean(self, config_key: str, value: Any, default: bool = False) -> bool:
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return value == "true"
        self.add(config_key, f"expected true or false, got {_shown(value)}")
        return False

    def string_list(self, config_key: str, value: Any) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.add(config_key, f"expected a list of strings, got {_shown(value)}")
            return []
        return [v.strip() for v in value]

    def cidr(self, config_key: str, value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        try:
            return ipaddress.ip_network(value, strict=True)
        except ValueError as err:
            hint = ""
            try:
                hint = f" (did you mean {ipaddress.ip_network(value, strict=False)}?)"
            except ValueError:
                pass
            self.add(config_key, f"{_shown(value)} is not a valid CIDR: {err}{hint}")
            return None


def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def _shown(value: Any) -> str:
    """A value for a message: short, so a pasted secret is never echoed whole."""
    text = repr(value)
    return text if len(text) <= 80 else text[:60] + "...(cut)"


def _within(net: ipaddress.IPv4Network | ipaddress.IPv6Network, ranges: Sequence[Any]) -> bool:
    return any(net.version == r.version and net.subnet_of(r) for r in ranges)


def internet_share(nets: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> float:
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


def is_anywhere(nets: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """Whether these ranges together stand for "anywhere" (see ANYWHERE_SHARE)."""
    return internet_share(nets) >= ANYWHERE_SHARE


def stack_slug(stack: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", stack.lower()).strip("-")
    return slug or "stack"


def parse_settings(raw: Mapping[str, Any], stack: str) -> Settings:
    """Build `Settings` from plain config values (key without namespace -> value)."""
    p = _Problems()
    unknown = sorted(set(raw) - set(TOP_LEVEL_KEYS))
    for name in unknown:
        p.add(key(name), f"unknown setting; accepted: {', '.join(key(k) for k in TOP_LEVEL_KEYS)}")

    isolation = p.string(key("isolation"), raw.get("isolation"), "vm")
    if isolation not in ISOLATIONS:
        p.add(
            key("isolation"),
            f"must be 'vm' (Kata only) or 'sandbox' (Kata where the host has KVM, "
            f"else gVisor), got {isolation!r}",
        )
        isolation = "vm"

    kata = _parse_kata(p, raw.get("kata"))
    network = _parse_network(p, raw.get("network"))
    admin = _parse_admin(p, raw.get("admin"))
    endpoint = _parse_endpoint(p, raw.get("endpoint"), network)
    artifacts, local_dirs = _parse_artifacts(p, raw.get("artifacts"))
    gvisor = _parse_gvisor(p, raw.get("gvisor"), isolation, artifacts)
    verify = _parse_verify(p, raw.get("verify"), local_dirs)
    egress = _parse_egress(p, raw.get("egress"))
    architectures = artifacts.catalog.architectures if artifacts else frozenset({"amd64"})
    hosts = _parse_hosts(p, raw.get("hosts"), stack, isolation, network, architectures)
    _check_ports(p, hosts, endpoint)

    dedicated_key = raw.get("dedicatedSshKey")
    if any(h.source == "dedicated" for h in hosts) and dedicated_key is None:
        p.add(
            key("dedicatedSshKey"),
            "dedicated hosts are configured but no SSH private key to reach them; "
            "run `pulumi config set --secret functions-runtime:dedicatedSshKey "
            "< ~/.ssh/id_ed25519` with a key root on those hosts accepts",
        )
    elif isinstance(dedicated_key, pulumi.Output):
        # Known only inside apply: checked there, failing with the key's name only.
        dedicated_key = dedicated_key.apply(_checked_private_key)
    elif dedicated_key is not None:
        problem = (
            ssh_private_key_problem(dedicated_key)
            if isinstance(dedicated_key, str)
            else "expected the private key's text"
        )
        if problem:
            # Never the value, nor a part of it: only what is wrong.
            p.add(key("dedicatedSshKey"), problem)

    if p.items:
        raise SettingsError(p.items)
    return Settings(
        stack=stack,
        isolation=isolation,  # type: ignore[arg-type]
        kata=kata,
        network=network,
        admin=admin,
        endpoint=endpoint,
        artifacts=artifacts,  # type: ignore[arg-type]
        verify=verify,
        egress=egress,
        hosts=tuple(hosts),
        dedicated_ssh_key=dedicated_key if isinstance(dedicated_key, pulumi.Output) else None,
        warnings=tuple(p.warnings),
        gvisor=gvisor,
    )


def _checked_private_key(text: str) -> str:
    problem = ssh_private_key_problem(text)
    if problem:
        raise SettingsError([f"{key('dedicatedSshKey')}: {problem}"])
    return text


def _parse_kata(p: _Problems, value: Any) -> KataSettings:
    obj = p.obj(key("kata"), value, ("hypervisor", "allowUntestedHypervisor"))
    hypervisor = (
        p.string(key("kata.hypervisor"), obj.get("hypervisor"), DEFAULT_HYPERVISOR) or DEFAULT_HYPERVISOR
    )
    allow_untested = p.boolean(key("kata.allowUntestedHypervisor"), obj.get("allowUntestedHypervisor"))
    if hypervisor in REFUSED_HYPERVISORS:
        p.add(key("kata.hypervisor"), f"{hypervisor!r} is refused: {REFUSED_HYPERVISORS[hypervisor]}")
    elif hypervisor not in HYPERVISORS:
        p.add(
            key("kata.hypervisor"),
            f"unknown hypervisor {hypervisor!r}; accepted: {', '.join(HYPERVISORS)}",
        )
    elif hypervisor not in KATA_DOCKER_TESTED_HYPERVISORS:
        named = f"{hypervisor!r} ({HYPERVISOR_NAMES.get(hypervisor, hypervisor)})"
        if allow_untested:
            p.warn(
                key("kata.hypervisor"),
                f"{named} is an experiment this stack accepted (kata.allowUntestedHypervisor): "
                f"{KATA_UNTESTED_WITH_DOCKER}. Each host must still pass `kata-runtime check` "
                f"with its configuration and the verify step; {DEFAULT_HYPERVISOR!r} is the tested choice",
            )
        else:
            p.add(
                key("kata.hypervisor"),
                f"{named} is not tested with Docker upstream: {KATA_UNTESTED_WITH_DOCKER}. "
                f"Use {DEFAULT_HYPERVISOR!r} (the default), or set "
                f"{key('kata.allowUntestedHypervisor')} to true to run it as an experiment",
            )
    return KataSettings(hypervisor=hypervisor, allow_untested_hypervisor=allow_untested)


def _parse_network(p: _Problems, value: Any) -> NetworkSettings:
    obj = p.obj(key("network"), value, ("ipRange", "subnet", "zone"))
    ip_range = p.string(key("network.ipRange"), obj.get("ipRange"), "10.0.0.0/16") or ""
    subnet = p.string(key("network.subnet"), obj.get("subnet"), "10.0.1.0/24") or ""
    zone = p.string(key("network.zone"), obj.get("zone"), "eu-central") or ""
    if zone not in ZONE_LOCATIONS:
        p.add(key("network.zone"), f"unknown zone {zone!r}; accepted: {', '.join(ZONE_LOCATIONS)}")
    range_net = p.cidr(key("network.ipRange"), ip_range)
    subnet_net = p.cidr(key("network.subnet"), subnet)
    if range_net is not None:
        if not _within(range_net, RFC1918):
            p.add(key("network.ipRange"), f"{ip_range} must be a private IPv4 range (RFC 1918)")
        elif range_net.overlaps(DOCKER_DEFAULT_BRIDGE):
            p.add(
                key("network.ipRange"),
                f"{ip_range} overlaps Docker's default bridge {DOCKER_DEFAULT_BRIDGE}; "
                f"pick a range in {RFC1918_RANGES[0]} or {RFC1918_RANGES[2]}",
            )
        elif range_net.overlaps(HOST_CNI_SUBNET):
            p.add(
                key("network.ipRange"),
                f"{ip_range} overlaps the hosts' own CNI network {HOST_CNI_SUBNET} (ctr --cni and nerdctl "
                "containers); pick a range that does not contain it, e.g. 10.0.0.0/16",
            )
    if range_net is not None and subnet_net is not None:
        if subnet_net.version != range_net.version or not subnet_net.subnet_of(range_net):  # type: ignore[arg-type]
            p.add(key("network.subnet"), f"{subnet} must lie inside network.ipRange {ip_range}")
    return NetworkSettings(ip_range=ip_range, subnet=subnet, zone=zone)


def _parse_admin(p: _Problems, value: Any) -> AdminSettings:
    obj = p.obj(key("admin"), value, ("sshKeys", "sshSourceCidrs", "allowSshFromAnywhere"))
    keys = p.string_list(key("admin.sshKeys"), obj.get("sshKeys"))
    for i, k in enumerate(keys):
        problem = ssh_public_key_problem(k)
        if problem:
            p.add(key(f"admin.sshKeys[{i}]"), problem)
    cidrs = p.string_list(key("admin.sshSourceCidrs"), obj.get("sshSourceCidrs"))
    anywhere_ok = p.boolean(key("admin.allowSshFromAnywhere"), obj.get("allowSshFromAnywhere"))
    if not cidrs:
        p.add(
            key("admin.sshSourceCidrs"),
            "required: the addresses that may reach SSH, including the machine that runs "
            "`pulumi up` (for example your office or CI egress address as x.y.z.w/32)",
        )
    nets = []
    for i, c in enumerate(cidrs):
        net = p.cidr(key(f"admin.sshSourceCidrs[{i}]"), c)
        if net is None:
            continue
        nets.append(net)
        if is_anywhere([net]) and not anywhere_ok:
            p.add(
                key(f"admin.sshSourceCidrs[{i}]"),
                f"{c} opens SSH to the whole internet; list your own addresses, or set "
                "admin.allowSshFromAnywhere: true to accept that on purpose",
            )
    if not anywhere_ok and not any(is_anywhere([n]) for n in nets) and is_anywhere(nets):
        p.add(
            key("admin.sshSourceCidrs"),
            f"together these ranges cover {internet_share(nets):.0%} of the internet, which is "
            "opening SSH to anywhere however it is split; list your own addresses, or set "
            "admin.allowSshFromAnywhere: true to accept that on purpose",
        )
    return AdminSettings(ssh_keys=tuple(keys), ssh_source_cidrs=tuple(cidrs))


def _parse_endpoint(p: _Problems, value: Any, network: NetworkSettings) -> EndpointSettings:
    obj = p.obj(key("endpoint"), value, ("port", "allowedCidrs", "allowPublicSources", "limits", "revoked"))
    port = p.integer(key("endpoint.port"), obj.get("port"), 2376, 1024, 65535)
    cidrs = p.string_list(key("endpoint.allowedCidrs"), obj.get("allowedCidrs")) or [
        network.ip_range
    ]
    public_ok = p.boolean(key("endpoint.allowPublicSources"), obj.get("allowPublicSources"))
    nets = []
    for i, c in enumerate(cidrs):
        net = p.cidr(key(f"endpoint.allowedCidrs[{i}]"), c)
        if net is None:
            continue
        nets.append(net)
        if is_anywhere([net]):
            p.add(
                key(f"endpoint.allowedCidrs[{i}]"),
                f"{c} would expose the container API to everyone; list the networks "
                "of the functions service",
            )
        elif not _within(net, ENDPOINT_PRIVATE) and not public_ok:
            p.add(
                key(f"endpoint.allowedCidrs[{i}]"),
                f"{c} is not a private range; the endpoint listens on the private "
                "network only. Set endpoint.allowPublicSources: true to accept it on purpose",
            )
    if not any(is_anywhere([n]) for n in nets) and is_anywhere(nets):
        p.add(
            key("endpoint.allowedCidrs"),
            f"together these ranges cover {internet_share(nets):.0%} of the internet: that "
            "exposes the container API to everyone however it is split; list the networks of "
            "the functions service",
        )
    return EndpointSettings(
        port=port,
        allowed_cidrs=tuple(cidrs),
        limits=_parse_endpoint_limits(p, obj.get("limits")),
        revoked=_parse_revocations(p, obj.get("revoked")),
    )


# egress.newConnectionsPerSecond: 0 turns the limit off; above this it limits nothing.
EGRESS_NEW_PER_SECOND_MAX = 100_000


def _parse_egress(p: _Problems, value: Any) -> EgressSettings:
    obj = p.obj(
        key("egress"), value, ("smtp", "newConnectionsPerSecond", "newConnectionsBurst", "allowedCidrs")
    )
    smtp = p.string(key("egress.smtp"), obj.get("smtp"), "block")
    if smtp not in ("block", "allow"):
        p.add(
            key("egress.smtp"),
            f"must be 'block' (default: containers cannot send mail on TCP "
            f"{', '.join(str(port) for port in SMTP_PORTS)}) or 'allow', got {_shown(smtp)}; "
            "to let functions reach one mail relay, keep 'block' and list it in egress.allowedCidrs",
        )
    rate = p.integer(
        key("egress.newConnectionsPerSecond"),
        obj.get("newConnectionsPerSecond"),
        EGRESS_NEW_PER_SECOND_DEFAULT,
        0,
        EGRESS_NEW_PER_SECOND_MAX,
    )
    burst = p.integer(
        key("egress.newConnectionsBurst"),
        obj.get("newConnectionsBurst"),
        EGRESS_NEW_BURST_DEFAULT,
        1,
        EGRESS_NEW_PER_SECOND_MAX,
    )
    cidrs = p.string_list(key("egress.allowedCidrs"), obj.get("allowedCidrs"))
    for i, c in enumerate(cidrs):
        net = p.cidr(key(f"egress.allowedCidrs[{i}]"), c)
        if net is None:
            continue
        if is_anywhere([net]):
            p.add(
                key(f"egress.allowedCidrs[{i}]"),
                f"{c} exempts the whole internet from the SMTP block and the rate limit; "
                "set egress.smtp: allow and egress.newConnectionsPerSecond: 0 if that is meant",
            )
        overlap = [str(b) for b in CONTAINER_BLOCKED_NETS if b.version == net.version and b.overlaps(net)]
        if overlap and not is_anywhere([net]):
            p.add(
                key(f"egress.allowedCidrs[{i}]"),
                f"{c} overlaps {', '.join(overlap)}, which containers never reach (the metadata "
                "service, the private network, the host); the allow list only exempts "
                "internet destinations from the SMTP block and the rate limit",
            )
    return EgressSettings(
        block_smtp=smtp != "allow",
        new_per_second=rate,
        new_burst=burst,
        allowed_cidrs=tuple(cidrs),
    )


# The most a container may ask for; a whole host, not more.
ENDPOINT_MAX_MEMORY_MIB_MAX = 4 * 1024 * 1024
ENDPOINT_MAX_PIDS_MAX = 4 * 1024 * 1024
ENDPOINT_MAX_CPUS_MAX = 1024
CPUS = re.compile(r"^[0-9]{1,4}(\.[0-9]{1,3})?$")
CERT_SERIAL = re.compile(r"^[0-9a-f]{1,40}$")


def _parse_endpoint_limits(p: _Problems, value: Any) -> EndpointLimits:
    obj = p.obj(key("endpoint.limits"), value, ("maxMemoryMiB", "maxPids", "maxCpus"))
    memory = p.integer(
        key("endpoint.limits.maxMemoryMiB"),
        obj.get("maxMemoryMiB"),
        ENDPOINT_MAX_MEMORY_MIB_DEFAULT,
        ENDPOINT_MAX_MEMORY_MIB_MIN,
        ENDPOINT_MAX_MEMORY_MIB_MAX,
    )
    pids = p.integer(
        key("endpoint.limits.maxPids"),
        obj.get("maxPids"),
        ENDPOINT_MAX_PIDS_DEFAULT,
        ENDPOINT_MAX_PIDS_MIN,
        ENDPOINT_MAX_PIDS_MAX,
    )
    millicpus = ENDPOINT_MAX_MILLICPUS_DEFAULT
    cpus = obj.get("maxCpus")
    if cpus is not None:
        text = str(cpus).strip() if isinstance(cpus, (int, float, str)) and not isinstance(cpus, bool) else ""
        if not CPUS.match(text):
            p.add(
                key("endpoint.limits.maxCpus"),
                f"expected a number of CPUs with at most 3 decimals (e.g. 2 or 0.5), got {_shown(cpus)}",
            )
        else:
            whole, _, frac = text.partition(".")
            millicpus = int(whole) * 1000 + int((frac + "000")[:3])
            low, high = ENDPOINT_MAX_MILLICPUS_MIN, ENDPOINT_MAX_CPUS_MAX * 1000
            if not low <= millicpus <= high:
                p.add(
                    key("endpoint.limits.maxCpus"),
                    f"must be between {low / 1000:g} and {high // 1000}, got {text}",
                )
                millicpus = ENDPOINT_MAX_MILLICPUS_DEFAULT
    return EndpointLimits(max_memory_mib=memory, max_pids=pids, max_millicpus=millicpus)


def _parse_revocations(p: _Problems, value: Any) -> EndpointRevocations:
    obj = p.obj(key("endpoint.revoked"), value, ("serials", "commonNames"))
    serials = []
    for i, serial in enumerate(p.string_list(key("endpoint.revoked.serials"), obj.get("serials"))):
        normal = serial.lower().replace(":", "")
        if normal.startswith("0x"):
            normal = normal[2:]
        normal = normal.lstrip("0") or "0"
        if not CERT_SERIAL.match(normal):
            p.add(
                key(f"endpoint.revoked.serials[{i}]"),
                f"{_shown(serial)} is not a certificate serial; give it in hex as "
                "`openssl x509 -noout -serial` prints it (colons allowed)",
            )
            continue
        serials.append(normal)
    names = []
    for i, name in enumerate(p.string_list(key("endpoint.revoked.commonNames"), obj.get("commonNames"))):
        if not name or _has_control(name):
            p.add(
                key(f"endpoint.revoked.commonNames[{i}]"),
                "expected a certificate common name without line breaks or control characters",
            )
            continue
        names.append(name)
    return EndpointRevocations(serials=tuple(serials), common_names=tuple(names))


def _parse_artifacts(p: _Problems, value: Any) -> tuple[ArtifactSettings | None, tuple[Path, ...]]:
    obj = p.obj(key("artifacts"), value, ("mirror", "catalog", "localDirs"))
    mirror = p.string(key("artifacts.mirror"), obj.get("mirror"))
    if mirror is not None:
        problem = _mirror_problem(mirror)
        if problem:
            p.add(key("artifacts.mirror"), problem)
    local_dirs = []
    for i, text in enumerate(p.string_list(key("artifacts.localDirs"), obj.get("localDirs"))):
        path, problem = local_dir_problem(text)
        if problem:
            p.add(key(f"artifacts.localDirs[{i}]"), problem)
        elif path is not None:
            local_dirs.append(path)
    dirs = tuple(local_dirs)
    catalog_text = p.string(key("artifacts.catalog"), obj.get("catalog"), DEFAULT_CATALOG) or DEFAULT_CATALOG
    catalog_path = _local_file(p, key("artifacts.catalog"), catalog_text, dirs)
    if catalog_path is None:
        return None, dirs
    try:
        catalog = load_catalog(catalog_path)
    except CatalogError as err:
        p.add(key("artifacts.catalog"), str(err))
        return None, dirs
    artifacts = ArtifactSettings(
        mirror=mirror.rstrip("/") if mirror else None,
        catalog=catalog,
        local_dirs=dirs,
    )
    return artifacts, dirs


def _mirror_problem(mirror: str) -> str | None:
    """What is wrong with a mirror base URL; its text is never quoted (it may hold a password)."""
    try:
        url = urlsplit(mirror)
        url.port  # noqa: B018 - parsing the port is the check
    except ValueError:
        return "is not a URL; expected an http(s) base URL such as https://mirror.example/kata"
    if url.scheme not in ("http", "https") or not url.hostname or " " in mirror:
        return "expected an http(s) base URL such as https://mirror.example/kata"
    if "@" in url.netloc:
        return (
            "holds credentials (user:password@): the URL reaches command inputs, state, the "
            "pull-request preview and host logs in plain, and setting it as a secret does not "
            "change that. Put none in it: serve the mirror on the private network and admit the "
            "fleet's private range (the mirror needs no secret there); mirror credentials are "
            "not supported yet"
        )
    if url.query or url.fragment or "?" in mirror or "#" in mirror:
        return (
            "has a query string or fragment: the file name is appended to the URL's path, so "
            "they would break it (and a token there leaks as a password would); give a base URL "
            "such as https://mirror.example/kata"
        )
    return None


def _local_file(p: _Problems, config_key: str, text: str, local_dirs: Sequence[Path]) -> Path | None:
    """A file from the project or a local-artifacts directory, resolved (symlinks followed)."""
    path = resolve(text, PROJECT_ROOT)
    if path is None:
        p.add(config_key, f"{_shown(text)} is not a usable path")
        return None
    if not contained(path, (PROJECT_ROOT, *local_dirs)):
        p.add(
            config_key,
            f"{path} is outside the project and outside every artifacts.localDirs directory; keep "
            "the file in the project, or list the directory holding it in "
            "functions-runtime:artifacts.localDirs",
        )
        return None
    problem = regular_file_problem(path)
    if problem:
        p.add(config_key, problem)
        return None
    return path


def _parse_gvisor(
    p: _Problems, value: Any, isolation: str | None, artifacts: ArtifactSettings | None
) -> GvisorSettings:
    obj = p.obj(key("gvisor"), value, ("runsc", "allowHostNetworkStack"))
    runsc = p.string(key("gvisor.runsc"), obj.get("runsc"), "release") or "release"
    allow_host_network = p.boolean(key("gvisor.allowHostNetworkStack"), obj.get("allowHostNetworkStack"))
    if runsc not in GVISOR_RUNSC_SOURCES:
        p.add(
            key("gvisor.runsc"),
            f"must be 'release' (gVisor's release pinned in the artifact catalog) or 'debian' (Debian 13's "
            f"runsc package, a 2024-07-29 build, an explicit fallback), got {_shown(runsc)}",
        )
        runsc = "release"
    if runsc == "release" and isolation == "sandbox" and artifacts is not None:
        missing = [name for name in GVISOR_ARTIFACTS if name not in artifacts.catalog]
        if missing:
            p.add(
                key("artifacts.catalog"),
                f"{artifacts.catalog.path} has no row for {', '.join(missing)}, which gvisor.runsc: release "
                "installs on every gVisor host; add gVisor's release rows (as catalog/artifacts.tsv pins "
                "them), or set gvisor.runsc: debian to run Debian's package instead",
            )
    return GvisorSettings(runsc=runsc, allow_host_network_stack=allow_host_network)


def _parse_verify(p: _Problems, value: Any, local_dirs: Sequence[Path]) -> VerifySettings:
    obj = p.obj(key("verify"), value, ("image", "imageArchive", "coldStartRuns", "outsideProbe", "nerdctl"))
    image = p.string(key("verify.image"), obj.get("image"), BUSYBOX_VERIFY_IMAGE) or ""
    archive_rel = p.string(key("verify.imageArchive"), obj.get("imageArchive"))
    if IMAGE_ID.match(image):
        if archive_rel is None:
            p.add(
                key("verify.image"),
                f"{image!r} is an image ID, which only an archive can provide; set "
                "verify.imageArchive to the `docker save` tarball holding it",
            )
    elif image != BUSYBOX_VERIFY_IMAGE and not IMAGE_DIGEST.search(image):
        p.add(
            key("verify.image"),
            f"{_shown(image)} is not pinned; use a reference with @sha256:<digest> (or the image "
            f"ID sha256:<id> of verify.imageArchive), or leave it unset to build "
            f"{BUSYBOX_VERIFY_IMAGE} from the host's busybox-static",
        )
    elif image != BUSYBOX_VERIFY_IMAGE and not IMAGE_REFERENCE.match(image):
        p.add(
            key("verify.image"),
            f"{_shown(image)} is not an image reference; expected [registry/]name[:tag]@sha256:<digest> "
            "with a lowercase name, e.g. docker.io/library/busybox@sha256:<digest>",
        )
    archive: Path | None = None
    if archive_rel is not None:
        archive = _local_file(p, key("verify.imageArchive"), archive_rel, local_dirs)
        if archive is not None:
            problem = docker_archive_problem(archive, image if IMAGE_ID.match(image) else None)
            if problem:
                p.add(key("verify.imageArchive"), problem)
    runs = p.integer(
        key("verify.coldStartRuns"),
        obj.get("coldStartRuns"),
        COLD_START_RUNS_DEFAULT,
        COLD_START_RUNS_MIN,
        COLD_START_RUNS_MAX,
    )
    if runs % 2 == 0:
        p.add(key("verify.coldStartRuns"), f"must be odd so the median is a real run, got {runs}")
    outside = _parse_outside_probe(p, obj.get("outsideProbe"))
    nerdctl = p.boolean(key("verify.nerdctl"), obj.get("nerdctl"), default=True)
    return VerifySettings(
        image=image, image_archive=archive, cold_start_runs=runs, outside_probe=outside, nerdctl=nerdctl
    )


def _parse_outside_probe(p: _Problems, value: Any) -> tuple[str, int] | None:
    config_key = key("verify.outsideProbe")
    text = p.string(config_key, value)
    if text is None:
        return VERIFY_OUTSIDE_PROBE_DEFAULT
    if text == "none":
        return None
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:([0-9]{1,5})|([0-9.]+):([0-9]{1,5})", text)
    hint = "ADDR:PORT of an internet service every host reaches, e.g. 1.1.1.1:443 or [2606:4700::1111]:443, or none"
    if not match:
        p.add(config_key, f"{_shown(text)} is not an address and port; expected {hint}")
        return None
    addr_text = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    try:
        addr = ipaddress.ip_address(addr_text)
    except ValueError:
        p.add(config_key, f"{_shown(addr_text)} is not an IP address; expected {hint}")
        return None
    if not 1 <= port <= 65535:
        p.add(config_key, f"port {port} is out of range; expected {hint}")
    elif not addr.is_global and not any(addr in n for n in TEST_NETS) or any(addr in b for b in CONTAINER_BLOCKED_NETS):
        p.add(
            config_key,
            f"{addr} is not an internet address (containers never reach private, link-local or "
            f"CGNAT ranges, so the positive control would always fail); expected {hint}",
        )
    return str(addr), port


HCLOUD_FIELDS = ("name", "source", "count", "serverType", "location", "image")
DEDICATED_FIELDS = ("name", "source", "addresses", "sshUser", "sshPort", "sshdPort", "trustOnFirstUse")
MACHINE_FIELDS = ("name", "address", "privateAddress", "hostKey")


def _parse_hosts(
    p: _Problems,
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


def _check_dedicated_unique(p: _Problems, hosts: Sequence[HostSpec]) -> None:
    """One machine is adopted once; two endpoints never share an address.

    A machine is its SSH address and port together: two lab guests behind
    one forwarding address differ by port.
    """
    by_ssh: dict[tuple[str, int], str] = {}
    by_private: dict[str, str] = {}
    for h in hosts:
        if h.source != "dedicated":
            continue
        if h.address is not None:
            where = (_normal_address(h.address), h.ssh_port)
            if where in by_ssh:
                p.add(
                    h.config_key,
                    f"machine {h.name!r} has the address {h.address} (SSH port {h.ssh_port}) of "
                    f"{by_ssh[where]!r}: one machine is adopted once; remove the duplicate entry",
                )
            by_ssh.setdefault(where, h.name)
        if h.private_address is not None:
            private = _normal_address(h.private_address)
            if private in by_private:
                p.add(
                    h.config_key,
                    f"machine {h.name!r} has the privateAddress {h.private_address} of "
                    f"{by_private[private]!r}: two endpoints cannot listen on one address",
                )
            by_private.setdefault(private, h.name)


def _normal_address(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address.lower().rstrip(".")


def _is_host_address(address: str) -> bool:
    """An IP address, or a DNS host name (RFC 1123 labels, at most 253 characters)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        name = address[:-1] if address.endswith(".") else address
        labels = name.split(".")
        return (
            0 < len(name) <= 253
            and all(DNS_LABEL.match(label) for label in labels)
            and not labels[-1].isdigit()
        )
    return not (ip.is_unspecified or ip.is_multicast)


def _private_address_problem(private: str) -> str | None:
    try:
        ip = ipaddress.ip_address(private)
    except ValueError:
        return f"{_shown(private)} is not an IP address"
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


def _check_ports(p: _Problems, hosts: Sequence[HostSpec], endpoint: EndpointSettings) -> None:
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
    p: _Problems,
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
            f"'vm': {NO_KVM_ON_CLOUD} (no /dev/kvm on any server type), so Kata cannot run there. Adopt KVM-capable dedicated servers "
            "with source: dedicated, or set functions-runtime:isolation to 'sandbox' to "
            "run gVisor on Cloud servers",
        )
    count = p.integer(f"{group_key}.count", group.get("count"), 1, 1, MAX_HOSTS_PER_GROUP)
    if group.get("count") is None:
        p.add(f"{group_key}.count", "required: how many servers this group has (at least 1)")
    server_type = p.string(f"{group_key}.serverType", group.get("serverType"))
    if server_type is None:
        p.add(f"{group_key}.serverType", "required: a Hetzner Cloud server type such as cx23 or cpx31")
    elif not SERVER_TYPE.match(server_type):
        p.add(f"{group_key}.serverType", f"{_shown(server_type)} is not a Hetzner server type such as cx23 or cpx31")
    elif server_type.startswith(ARM_SERVER_TYPE_PREFIXES) and "arm64" not in architectures:
        p.add(f"{group_key}.serverType", arm_refusal(server_type))
    location = p.string(f"{group_key}.location", group.get("location"))
    zone_locations = ZONE_LOCATIONS.get(network.zone, ())
    if location is None:
        p.add(f"{group_key}.location", f"required: one of {', '.join(zone_locations)}")
    elif location not in zone_locations:
        all_locations = sorted(loc for locs in ZONE_LOCATIONS.values() for loc in locs)
        if location in all_locations:
            p.add(
                f"{group_key}.location",
                f"{location!r} is outside network.zone {network.zone!r}; use one of "
                f"{', '.join(zone_locations)} or change network.zone",
            )
        else:
            p.add(f"{group_key}.location", f"unknown location {location!r}; accepted: {', '.join(all_locations)}")
    image = p.string(f"{group_key}.image", group.get("image"), "debian-13")
    if image not in SUPPORTED_IMAGES:
        p.add(
            f"{group_key}.image",
            f"{image!r} is not supported: the install scripts target "
            f"{', '.join(SUPPORTED_IMAGES)}",
        )
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


def _parse_dedicated_group(
    p: _Problems, group_key: str, group: Mapping[str, Any], name: str
) -> list[HostSpec]:
    p.obj(group_key, group, DEDICATED_FIELDS)
    user = p.string(f"{group_key}.sshUser", group.get("sshUser"), "root") or "root"
    if not USER_NAME.match(user):
        p.add(
            f"{group_key}.sshUser",
            f"{_shown(user)} is not a user name (lowercase letters, digits, '_' and '-', "
            "starting with a letter or '_', at most 32 characters)",
        )
    port = p.integer(f"{group_key}.sshPort", group.get("sshPort"), 22, 1, 65535)
    sshd_port = p.integer(f"{group_key}.sshdPort", group.get("sshdPort"), port, 1, 65535)
    tofu = p.boolean(f"{group_key}.trustOnFirstUse", group.get("trustOnFirstUse"))
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
        if not m:
            if not isinstance(machine, Mapping):
                continue
        host_name = p.string(f"{machine_key}.name", m.get("name"), f"{name}-{mi + 1}") or ""
        if not HOSTNAME_LABEL.match(host_name):
            p.add(f"{machine_key}.name", f"{host_name!r} is not a valid hostname label")
        address = p.string(f"{machine_key}.address", m.get("address"))
        if address is None:
            p.add(f"{machine_key}.address", "required: the address SSH reaches the machine on")
        elif not _is_host_address(address):
            p.add(
                f"{machine_key}.address",
                f"{_shown(address)} is neither an IP address nor a host name; give the address "
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
            problem = _private_address_problem(private)
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


# The one setting that is secret; every other one is read (and used) in plain.
SECRET_KEYS = ("dedicatedSshKey",)


def configured_keys() -> set[str]:
    """Every full config key set for this run, from the SDK's own config store.

    The store is what `pulumi.Config` reads: values set in-process (the
    engine's run request, the Automation API, `set_all_config` in tests),
    the PULUMI_CONFIG bag, and one PULUMI_CONFIG_<KEY> variable per key
    (scrubbed names, which cannot be mapped back: reported with the variable).
    """
    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    known = {runtime_config.get_config_env_key(key(n)) for n in TOP_LEVEL_KEYS}
    scrubbed_prefix = runtime_config.get_config_env_key(f"{NAMESPACE}:")
    for variable in os.environ:
        if variable.startswith(scrubbed_prefix) and variable not in known:
            keys.add(f"{NAMESPACE}:{variable[len(scrubbed_prefix):].lower()} (from ${variable})")
    return keys


def _secret_config_keys() -> set[str]:
    keys = configured_keys()
    secret = set(runtime_config.get_config_secret_keys_env())
    return {k for k in keys if runtime_config.is_config_secret(k) or k in secret}


def read_settings(config: pulumi.Config | None = None, stack: str | None = None) -> Settings:
    """Read this stack's config once; the only place `pulumi.Config` is touched."""
    config = config or pulumi.Config(NAMESPACE)
    raw: dict[str, Any] = {}
    for name in TOP_LEVEL_KEYS:
        # The plain text of the secret too: it is checked here, at preview,
        # and only its secret Output (below) goes further.
        text = config.get(name)
        if text is None:
            continue
        if name in SECRET_KEYS:
            raw[name] = text
            continue
        # Structured values arrive as JSON text; plain ones as strings.
        try:
            raw[name] = json.loads(text)
        except json.JSONDecodeError:
            raw[name] = text
    prefix = f"{NAMESPACE}:"
    extra: list[str] = []
    for full in configured_keys():
        if full.startswith(prefix) and full[len(prefix):] not in TOP_LEVEL_KEYS:
            raw[full[len(prefix):]] = "(set)"
    for full in sorted(_secret_config_keys()):
        if full.startswith(prefix) and full[len(prefix):] in TOP_LEVEL_KEYS:
            if full[len(prefix):] not in SECRET_KEYS:
                extra.append(
                    f"{full}: is stored as a secret, but the program uses this setting in plain "
                    "(command inputs, state, the preview), so the secret would leak there; put "
                    "no secret in it and set it without --secret"
                )
    try:
        settings = parse_settings(raw, stack or pulumi.get_stack())
    except SettingsError as err:
        raise SettingsError([*err.problems, *extra]) from None
    if extra:
        raise SettingsError(extra)
    # Shown by `pulumi preview` (and up) as warnings, every time.
    for warning in settings.warnings:
        pulumi.log.warn(warning)
    secret = config.get_secret("dedicatedSshKey")
    token_set = bool(os.environ.get("HCLOUD_TOKEN")) or pulumi.Config("hcloud").get("token") is not None
    return dataclasses.replace(settings, dedicated_ssh_key=secret, hcloud_token_set=token_set)
