"""Typed stack configuration, checked before any resource exists.

Every problem is collected and raised at once, each naming its config key,
so a platform engineer fixes a stack file in one pass instead of one
`pulumi preview` per typo. No other module reads `pulumi.Config`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pulumi
from pulumi.runtime.config import get_config_env

from components.catalog import Catalog, CatalogError, load_catalog
from components.contract import (
    BUSYBOX_VERIFY_IMAGE,
    CGNAT,
    COLD_START_RUNS_DEFAULT,
    COLD_START_RUNS_MAX,
    COLD_START_RUNS_MIN,
    IPV6_ULA,
    ISOLATIONS,
    KATA_HYPERVISORS,
    NO_KVM_ON_CLOUD,
)
from components.contract import RFC1918 as RFC1918_RANGES

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
REFUSED_HYPERVISORS = {
    "firecracker": "Firecracker needs the devmapper snapshotter and is not tested "
    "with Docker upstream; use qemu or clh",
    "fc": "Firecracker needs the devmapper snapshotter and is not tested "
    "with Docker upstream; use qemu or clh",
    "dragonball": "Dragonball is built into the Rust runtime only, which this "
    "project does not install; use qemu or clh",
}
# Docker's default bridge; a private network overlapping it makes the host's
# routes ambiguous for containers.
DOCKER_DEFAULT_BRIDGE = ipaddress.ip_network("172.17.0.0/16")
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
SSH_PUBLIC_KEY = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+( \S.*)?$"
)
IMAGE_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# An image ID is the digest of the image's config: content-addressed, so
# pinned, for an image loaded from verify.imageArchive.
IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}$")

TOP_LEVEL_KEYS = (
    "hosts",
    "isolation",
    "kata",
    "network",
    "admin",
    "endpoint",
    "artifacts",
    "verify",
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
class EndpointSettings:
    port: int
    allowed_cidrs: tuple[str, ...]


@dataclass(frozen=True)
class ArtifactSettings:
    mirror: str | None
    catalog_path: Path
    catalog: Catalog


@dataclass(frozen=True)
class VerifySettings:
    image: str
    image_archive: Path | None
    cold_start_runs: int


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
    dedicated_ssh_key: pulumi.Output[str] | None = None

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

    def add(self, config_key: str, message: str) -> None:
        self.items.append(f"{config_key}: {message}")

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
            self.add(config_key, f"expected a non-empty string, got {value!r}")
            return default
        return value.strip()

    def integer(
        self, config_key: str, value: Any, default: int, low: int, high: int
    ) -> int:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                value = int(value)
            else:
                self.add(config_key, f"expected a whole number, got {value!r}")
                return default
        if not low <= value <= high:
            self.add(config_key, f"must be between {low} and {high}, got {value}")
            return default
        return value

    def boolean(self, config_key: str, value: Any) -> bool:
        if value is None:
            return False
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return value == "true"
        self.add(config_key, f"expected true or false, got {value!r}")
        return False

    def string_list(self, config_key: str, value: Any) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.add(config_key, f"expected a list of strings, got {value!r}")
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
            self.add(config_key, f"{value!r} is not a valid CIDR: {err}{hint}")
            return None


def _within(net: ipaddress.IPv4Network | ipaddress.IPv6Network, ranges: Sequence[Any]) -> bool:
    return any(net.version == r.version and net.subnet_of(r) for r in ranges)


def _is_anywhere(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    return net.prefixlen == 0


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
    artifacts = _parse_artifacts(p, raw.get("artifacts"))
    verify = _parse_verify(p, raw.get("verify"))
    hosts = _parse_hosts(p, raw.get("hosts"), stack, isolation, network)

    dedicated_key = raw.get("dedicatedSshKey")
    if any(h.source == "dedicated" for h in hosts) and dedicated_key is None:
        p.add(
            key("dedicatedSshKey"),
            "dedicated hosts are configured but no SSH private key to reach them; "
            "run `pulumi config set --secret functions-runtime:dedicatedSshKey "
            "< ~/.ssh/id_ed25519` with a key root on those hosts accepts",
        )

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
        hosts=tuple(hosts),
        dedicated_ssh_key=dedicated_key if isinstance(dedicated_key, pulumi.Output) else None,
    )


def _parse_kata(p: _Problems, value: Any) -> KataSettings:
    obj = p.obj(key("kata"), value, ("hypervisor",))
    hypervisor = p.string(key("kata.hypervisor"), obj.get("hypervisor"), "qemu") or "qemu"
    if hypervisor in REFUSED_HYPERVISORS:
        p.add(key("kata.hypervisor"), f"{hypervisor!r} is refused: {REFUSED_HYPERVISORS[hypervisor]}")
    elif hypervisor not in HYPERVISORS:
        p.add(
            key("kata.hypervisor"),
            f"unknown hypervisor {hypervisor!r}; accepted: {', '.join(HYPERVISORS)}",
        )
    return KataSettings(hypervisor=hypervisor)


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
    if range_net is not None and subnet_net is not None:
        if subnet_net.version != range_net.version or not subnet_net.subnet_of(range_net):  # type: ignore[arg-type]
            p.add(key("network.subnet"), f"{subnet} must lie inside network.ipRange {ip_range}")
    return NetworkSettings(ip_range=ip_range, subnet=subnet, zone=zone)


def _parse_admin(p: _Problems, value: Any) -> AdminSettings:
    obj = p.obj(key("admin"), value, ("sshKeys", "sshSourceCidrs", "allowSshFromAnywhere"))
    keys = p.string_list(key("admin.sshKeys"), obj.get("sshKeys"))
    for i, k in enumerate(keys):
        if not SSH_PUBLIC_KEY.match(k):
            p.add(
                key(f"admin.sshKeys[{i}]"),
                "expected an OpenSSH public key line ('ssh-ed25519 AAAA... comment'); "
                "never a private key",
            )
    cidrs = p.string_list(key("admin.sshSourceCidrs"), obj.get("sshSourceCidrs"))
    anywhere_ok = p.boolean(key("admin.allowSshFromAnywhere"), obj.get("allowSshFromAnywhere"))
    if not cidrs:
        p.add(
            key("admin.sshSourceCidrs"),
            "required: the addresses that may reach SSH, including the machine that runs "
            "`pulumi up` (for example your office or CI egress address as x.y.z.w/32)",
        )
    for i, c in enumerate(cidrs):
        net = p.cidr(key(f"admin.sshSourceCidrs[{i}]"), c)
        if net is not None and _is_anywhere(net) and not anywhere_ok:
            p.add(
                key(f"admin.sshSourceCidrs[{i}]"),
                f"{c} opens SSH to the whole internet; list your own addresses, or set "
                "admin.allowSshFromAnywhere: true to accept that on purpose",
            )
    return AdminSettings(ssh_keys=tuple(keys), ssh_source_cidrs=tuple(cidrs))


def _parse_endpoint(p: _Problems, value: Any, network: NetworkSettings) -> EndpointSettings:
    obj = p.obj(key("endpoint"), value, ("port", "allowedCidrs", "allowPublicSources"))
    port = p.integer(key("endpoint.port"), obj.get("port"), 2376, 1024, 65535)
    if port == 22:
        p.add(key("endpoint.port"), "must not be the SSH port")
    cidrs = p.string_list(key("endpoint.allowedCidrs"), obj.get("allowedCidrs")) or [
        network.ip_range
    ]
    public_ok = p.boolean(key("endpoint.allowPublicSources"), obj.get("allowPublicSources"))
    for i, c in enumerate(cidrs):
        net = p.cidr(key(f"endpoint.allowedCidrs[{i}]"), c)
        if net is None:
            continue
        if _is_anywhere(net):
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
    return EndpointSettings(port=port, allowed_cidrs=tuple(cidrs))


def _parse_artifacts(p: _Problems, value: Any) -> ArtifactSettings | None:
    obj = p.obj(key("artifacts"), value, ("mirror", "catalog"))
    mirror = p.string(key("artifacts.mirror"), obj.get("mirror"))
    if mirror is not None and not re.match(r"^https?://[^\s/]+(/\S*)?$", mirror):
        p.add(
            key("artifacts.mirror"),
            f"expected an http(s) base URL such as https://mirror.example/kata, got {mirror!r}",
        )
    catalog_rel = p.string(key("artifacts.catalog"), obj.get("catalog"), DEFAULT_CATALOG)
    catalog_path = (PROJECT_ROOT / (catalog_rel or DEFAULT_CATALOG)).resolve()
    try:
        catalog = load_catalog(catalog_path)
    except CatalogError as err:
        p.add(key("artifacts.catalog"), str(err))
        return None
    return ArtifactSettings(
        mirror=mirror.rstrip("/") if mirror else None,
        catalog_path=catalog_path,
        catalog=catalog,
    )


def _parse_verify(p: _Problems, value: Any) -> VerifySettings:
    obj = p.obj(key("verify"), value, ("image", "imageArchive", "coldStartRuns"))
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
            f"{image!r} is not pinned; use a reference with @sha256:<digest> (or the image "
            f"ID sha256:<id> of verify.imageArchive), or leave it unset to build "
            f"{BUSYBOX_VERIFY_IMAGE} from the host's busybox-static",
        )
    archive: Path | None = None
    if archive_rel is not None:
        archive = (PROJECT_ROOT / archive_rel).resolve()
        if not archive.is_file():
            p.add(key("verify.imageArchive"), f"no such file: {archive}")
    runs = p.integer(
        key("verify.coldStartRuns"),
        obj.get("coldStartRuns"),
        COLD_START_RUNS_DEFAULT,
        COLD_START_RUNS_MIN,
        COLD_START_RUNS_MAX,
    )
    if runs % 2 == 0:
        p.add(key("verify.coldStartRuns"), f"must be odd so the median is a real run, got {runs}")
    return VerifySettings(image=image, image_archive=archive, cold_start_runs=runs)


HCLOUD_FIELDS = ("name", "source", "count", "serverType", "location", "image")
DEDICATED_FIELDS = ("name", "source", "addresses", "sshUser", "sshPort", "sshdPort", "trustOnFirstUse")
MACHINE_FIELDS = ("name", "address", "privateAddress", "hostKey")


def _parse_hosts(
    p: _Problems, value: Any, stack: str, isolation: str | None, network: NetworkSettings
) -> list[HostSpec]:
    k = key("hosts")
    if value is None or value == []:
        p.add(k, "required: a list of host groups (source: hcloud or source: dedicated)")
        return []
    if not isinstance(value, list):
        p.add(k, f"expected a list of host groups, got {type(value).__name__}")
        return []
    hosts: list[HostSpec] = []
    group_names: set[str] = set()
    for gi, group in enumerate(value):
        gk = f"{k}[{gi}]"
        if not isinstance(group, Mapping):
            p.add(gk, "expected an object with name and source")
            continue
        source = group.get("source")
        name = p.string(f"{gk}.name", group.get("name")) or f"group{gi}"
        if not HOSTNAME_LABEL.match(name) or len(name) > 40:
            p.add(
                f"{gk}.name",
                f"{name!r} is not a valid hostname label (lowercase letters, digits and "
                "hyphens, at most 40 characters)",
            )
        if name in group_names:
            p.add(f"{gk}.name", f"{name!r} is used by another host group")
        group_names.add(name)
        if source == "hcloud":
            hosts.extend(_parse_hcloud_group(p, gk, group, name, stack, isolation, network))
        elif source == "dedicated":
            hosts.extend(_parse_dedicated_group(p, gk, group, name))
        else:
            p.add(f"{gk}.source", f"must be 'hcloud' or 'dedicated', got {source!r}")
    seen: set[str] = set()
    for h in hosts:
        if h.name in seen:
            p.add(k, f"host name {h.name!r} appears twice; rename a group or machine")
        seen.add(h.name)
    return hosts


def _parse_hcloud_group(
    p: _Problems,
    gk: str,
    group: Mapping[str, Any],
    name: str,
    stack: str,
    isolation: str | None,
    network: NetworkSettings,
) -> list[HostSpec]:
    p.obj(gk, group, HCLOUD_FIELDS)
    if isolation == "vm":
        p.add(
            gk,
            f"host group {name!r} is on Hetzner Cloud, but functions-runtime:isolation is "
            f"'vm': {NO_KVM_ON_CLOUD} (no /dev/kvm on any server type), so Kata cannot run there. Adopt KVM-capable dedicated servers "
            "with source: dedicated, or set functions-runtime:isolation to 'sandbox' to "
            "run gVisor on Cloud servers",
        )
    count = p.integer(f"{gk}.count", group.get("count"), 1, 1, MAX_HOSTS_PER_GROUP)
    if group.get("count") is None:
        p.add(f"{gk}.count", "required: how many servers this group has (at least 1)")
    server_type = p.string(f"{gk}.serverType", group.get("serverType"))
    if server_type is None:
        p.add(f"{gk}.serverType", "required: a Hetzner Cloud server type such as cx23 or cpx31")
    elif not SERVER_TYPE.match(server_type):
        p.add(f"{gk}.serverType", f"{server_type!r} is not a Hetzner server type such as cx23 or cpx31")
    location = p.string(f"{gk}.location", group.get("location"))
    zone_locations = ZONE_LOCATIONS.get(network.zone, ())
    if location is None:
        p.add(f"{gk}.location", f"required: one of {', '.join(zone_locations)}")
    elif location not in zone_locations:
        all_locations = sorted(loc for locs in ZONE_LOCATIONS.values() for loc in locs)
        if location in all_locations:
            p.add(
                f"{gk}.location",
                f"{location!r} is outside network.zone {network.zone!r}; use one of "
                f"{', '.join(zone_locations)} or change network.zone",
            )
        else:
            p.add(f"{gk}.location", f"unknown location {location!r}; accepted: {', '.join(all_locations)}")
    image = p.string(f"{gk}.image", group.get("image"), "debian-13")
    if image not in SUPPORTED_IMAGES:
        p.add(
            f"{gk}.image",
            f"{image!r} is not supported: the install scripts target "
            f"{', '.join(SUPPORTED_IMAGES)}",
        )
    slug = stack_slug(stack)
    hosts = []
    for i in range(count):
        host_name = f"{name}-{i + 1}"
        server_name = f"{slug}-{host_name}"
        if len(server_name) > 63:
            p.add(f"{gk}.name", f"server name {server_name!r} is longer than 63 characters")
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
            )
        )
    return hosts


def _parse_dedicated_group(
    p: _Problems, gk: str, group: Mapping[str, Any], name: str
) -> list[HostSpec]:
    p.obj(gk, group, DEDICATED_FIELDS)
    user = p.string(f"{gk}.sshUser", group.get("sshUser"), "root") or "root"
    port = p.integer(f"{gk}.sshPort", group.get("sshPort"), 22, 1, 65535)
    sshd_port = p.integer(f"{gk}.sshdPort", group.get("sshdPort"), port, 1, 65535)
    tofu = p.boolean(f"{gk}.trustOnFirstUse", group.get("trustOnFirstUse"))
    machines = group.get("addresses")
    if not isinstance(machines, list) or not machines:
        p.add(
            f"{gk}.addresses",
            "required: the existing KVM-capable Debian 13 machines to adopt, each as "
            "{address, privateAddress, hostKey}",
        )
        return []
    hosts = []
    for mi, machine in enumerate(machines):
        mk = f"{gk}.addresses[{mi}]"
        m = p.obj(mk, machine, MACHINE_FIELDS)
        if not m:
            if not isinstance(machine, Mapping):
                continue
        host_name = p.string(f"{mk}.name", m.get("name"), f"{name}-{mi + 1}") or ""
        if not HOSTNAME_LABEL.match(host_name):
            p.add(f"{mk}.name", f"{host_name!r} is not a valid hostname label")
        address = p.string(f"{mk}.address", m.get("address"))
        if address is None:
            p.add(f"{mk}.address", "required: the address SSH reaches the machine on")
        private = p.string(f"{mk}.privateAddress", m.get("privateAddress"))
        if private is None:
            p.add(
                f"{mk}.privateAddress",
                "required: the address the Docker endpoint listens on (the machine's "
                "private network or vSwitch address)",
            )
        else:
            try:
                ipaddress.ip_address(private)
            except ValueError:
                p.add(f"{mk}.privateAddress", f"{private!r} is not an IP address")
        host_key = p.string(f"{mk}.hostKey", m.get("hostKey"))
        if host_key is not None and not SSH_PUBLIC_KEY.match(host_key):
            p.add(
                f"{mk}.hostKey",
                "expected the machine's SSH host public key ('ssh-ed25519 AAAA...'), as "
                "printed by `ssh-keyscan -t ed25519 <address>` or "
                "/etc/ssh/ssh_host_ed25519_key.pub",
            )
        if host_key is None and not tofu:
            p.add(
                f"{mk}.hostKey",
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
            )
        )
    return hosts


def read_settings(config: pulumi.Config | None = None, stack: str | None = None) -> Settings:
    """Read this stack's config once; the only place `pulumi.Config` is touched."""
    config = config or pulumi.Config(NAMESPACE)
    raw: dict[str, Any] = {}
    for name in TOP_LEVEL_KEYS:
        if name == "dedicatedSshKey":
            secret = config.get_secret(name)
            if secret is not None:
                raw[name] = secret
            continue
        text = config.get(name)
        if text is not None:
            # Structured values arrive as JSON text; plain ones as strings.
            try:
                raw[name] = json.loads(text)
            except json.JSONDecodeError:
                raw[name] = text
    prefix = f"{NAMESPACE}:"
    for full in get_config_env():
        if full.startswith(prefix) and full[len(prefix):] not in TOP_LEVEL_KEYS:
            raw[full[len(prefix):]] = "(set)"
    return parse_settings(raw, stack or pulumi.get_stack())
