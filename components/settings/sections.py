"""The parsers of the stack's objects (kata, network, admin, endpoint,
egress, artifacts, gvisor, verify, canary, gc, metrics): the rules of one section each, with the
types, defaults and bounds of its declarations."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from components.catalog import CatalogError, load_catalog
from components.contract import (
    BUSYBOX_VERIFY_IMAGE,
    GVISOR_ARCHIVE,
    GVISOR_ARTIFACTS,
    KATA_DOCKER_TESTED_HYPERVISORS,
    KATA_UNTESTED_WITH_DOCKER,
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
from components.settings.addresses import (
    DOCKER_DEFAULT_BRIDGE,
    ENDPOINT_PRIVATE,
    HOST_CNI_SUBNET,
    RFC1918,
    internet_share,
    is_anywhere,
    is_internet_address,
    not_internet,
    within,
)
from components.settings.declarations import (
    VERIFY_NAME_PROBE_DEFAULT,
    VERIFY_OUTSIDE_PROBE_DEFAULT,
    ZONE_LOCATIONS,
    fields_of,
    setting,
)
from components.settings.model import (
    PROJECT_ROOT,
    AdminSettings,
    ArtifactSettings,
    CanarySettings,
    CertificateSettings,
    EgressSettings,
    EndpointLimits,
    EndpointRevocations,
    EndpointSettings,
    GcSettings,
    GoldenImageSettings,
    GvisorSettings,
    KataSettings,
    MetricsSettings,
    NetworkSettings,
    RolloutSettings,
    VerifySettings,
    key,
)
from components.settings.problems import Problems, has_control, shown
from components.ssh_keys import ssh_public_key_problem
from endpoint_authz.rules import load_registries

DEFAULT_HYPERVISOR = KATA_DOCKER_TESTED_HYPERVISORS[0]
HYPERVISOR_NAMES = {"qemu": "QEMU", "clh": "Cloud Hypervisor"}
_FIRECRACKER = "Firecracker needs the devmapper snapshotter and is not tested with Docker upstream; use qemu"
REFUSED_HYPERVISORS = {
    "firecracker": _FIRECRACKER,
    "fc": _FIRECRACKER,
    "dragonball": "Dragonball is built into the Rust runtime only, which this project does not install; use qemu",
}
IMAGE_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# A pinned image reference as Docker parses it: [registry[:port]/]path[:tag]@sha256:<digest>,
# lowercase path components (distribution's reference grammar, written out here).
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REGISTRY = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]{1,5})?/)"
IMAGE_REFERENCE = re.compile(
    rf"^{_REGISTRY}?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?"
    r"@sha256:[0-9a-f]{64}$"
)
# An image ID is the digest of the image's config: content-addressed, so
# pinned, for an image loaded from verify.imageArchive.
IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}$")
CPUS = re.compile(r"^[0-9]{1,4}(\.[0-9]{1,3})?$")
CERT_SERIAL = re.compile(r"^[0-9a-f]{1,40}$")


def _read(p: Problems, name: str, obj: dict[str, Any]) -> Any:
    """A field of a section by its declaration (`endpoint.port` reads obj["port"])."""
    decl = setting(name)
    return p.read(decl, obj.get(decl.field), key(name))


def parse_isolation(p: Problems, value: Any) -> str:
    decl = setting("isolation")
    isolation = p.string(key("isolation"), value, decl.default) or decl.default
    if isolation not in decl.choices:
        p.add(
            key("isolation"),
            f"must be 'vm' (Kata only) or 'sandbox' (Kata where the host has KVM, else gVisor), got {isolation!r}",
        )
        isolation = decl.default
    return isolation


def parse_kata(p: Problems, value: Any) -> KataSettings:
    obj = p.obj(key("kata"), value, fields_of("kata"))
    hypervisor = _read(p, "kata.hypervisor", obj) or DEFAULT_HYPERVISOR
    allow_untested = _read(p, "kata.allowUntestedHypervisor", obj)
    if hypervisor in REFUSED_HYPERVISORS:
        p.add(key("kata.hypervisor"), f"{hypervisor!r} is refused: {REFUSED_HYPERVISORS[hypervisor]}")
    elif hypervisor not in setting("kata.hypervisor").choices:
        p.add(
            key("kata.hypervisor"),
            f"unknown hypervisor {hypervisor!r}; accepted: {', '.join(setting('kata.hypervisor').choices)}",
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


def parse_network(p: Problems, value: Any) -> NetworkSettings:
    obj = p.obj(key("network"), value, fields_of("network"))
    ip_range = _read(p, "network.ipRange", obj) or ""
    subnet = _read(p, "network.subnet", obj) or ""
    zone = _read(p, "network.zone", obj) or ""
    if zone not in ZONE_LOCATIONS:
        p.add(key("network.zone"), f"unknown zone {zone!r}; accepted: {', '.join(ZONE_LOCATIONS)}")
    range_net = p.cidr(key("network.ipRange"), ip_range)
    subnet_net = p.cidr(key("network.subnet"), subnet)
    if range_net is not None:
        if not within(range_net, RFC1918):
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


def parse_admin(p: Problems, value: Any) -> AdminSettings:
    obj = p.obj(key("admin"), value, fields_of("admin"))
    keys = _read(p, "admin.sshKeys", obj)
    for i, k in enumerate(keys):
        problem = ssh_public_key_problem(k)
        if problem:
            p.add(key(f"admin.sshKeys[{i}]"), problem)
    cidrs = _read(p, "admin.sshSourceCidrs", obj)
    anywhere_ok = _read(p, "admin.allowSshFromAnywhere", obj)
    if not cidrs:
        p.add(
            key("admin.sshSourceCidrs"),
            "required: the addresses that may reach SSH, including the machine that runs "
            "`pulumi up` (for example your office or CI egress address as x.y.z.w/32)",
        )
    entries = p.cidrs(key("admin.sshSourceCidrs"), cidrs)
    nets = [net for _, _, net in entries]
    for i, c, net in entries:
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


def parse_endpoint(p: Problems, value: Any, network: NetworkSettings) -> EndpointSettings:
    obj = p.obj(key("endpoint"), value, fields_of("endpoint"))
    port = _read(p, "endpoint.port", obj)
    cidrs = _read(p, "endpoint.allowedCidrs", obj) or [network.ip_range]
    public_ok = _read(p, "endpoint.allowPublicSources", obj)
    entries = p.cidrs(key("endpoint.allowedCidrs"), cidrs)
    nets = [net for _, _, net in entries]
    for i, c, net in entries:
        if is_anywhere([net]):
            p.add(
                key(f"endpoint.allowedCidrs[{i}]"),
                f"{c} would expose the container API to everyone; list the networks of the functions service",
            )
        elif not within(net, ENDPOINT_PRIVATE) and not public_ok:
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
        limits=parse_endpoint_limits(p, obj.get("limits")),
        revoked=parse_revocations(p, obj.get("revoked")),
        registries=parse_registries(p, obj),
    )


def parse_registries(p: Problems, obj: dict[str, Any]) -> tuple[str, ...]:
    """endpoint.registries, judged by the endpoint policy's own rule (the
    plugin refuses the same list on the host)."""
    if obj.get("registries") is None:
        return setting("endpoint.registries").default
    out: list[str] = []
    for i, entry in enumerate(_read(p, "endpoint.registries", obj)):
        try:
            load_registries([entry])
        except ValueError as err:
            p.add(key(f"endpoint.registries[{i}]"), f"{str(err).removeprefix('registries: ')}; give a public "
                  "registry host such as docker.io or registry.example.com:5000")
            continue
        if entry not in out:
            out.append(entry)
    return tuple(out)


def parse_egress(p: Problems, value: Any) -> EgressSettings:
    obj = p.obj(key("egress"), value, fields_of("egress"))
    smtp = _read(p, "egress.smtp", obj)
    if smtp not in setting("egress.smtp").choices:
        p.add(
            key("egress.smtp"),
            f"must be 'block' (default: containers cannot send mail on TCP "
            f"{', '.join(str(port) for port in SMTP_PORTS)}) or 'allow', got {shown(smtp)}; "
            "to let functions reach one mail relay, keep 'block' and list it in egress.allowedCidrs",
        )
    rate = _read(p, "egress.newConnectionsPerSecond", obj)
    burst = _read(p, "egress.newConnectionsBurst", obj)
    cidrs = _read(p, "egress.allowedCidrs", obj)
    nets = []
    for i, c, net in p.cidrs(key("egress.allowedCidrs"), cidrs):
        if is_anywhere([net]):
            p.add(
                key(f"egress.allowedCidrs[{i}]"),
                f"{c} exempts the whole internet from the SMTP block and the rate limit; "
                "set egress.smtp: allow and egress.newConnectionsPerSecond: 0 if that is meant",
            )
            continue
        outside = not_internet(net)
        if outside:
            p.add(
                key(f"egress.allowedCidrs[{i}]"),
                f"{c} overlaps {', '.join(outside)}, which containers never reach or which is no internet "
                "destination (the metadata service, the private network, loopback, the host; multicast or "
                "reserved space serves nothing); the allow list only exempts internet destinations from the SMTP block "
                "and the rate limit",
            )
            continue
        nets.append(net)
    if is_anywhere(nets):
        p.add(
            key("egress.allowedCidrs"),
            f"together these ranges cover {internet_share(nets):.0%} of the internet: that exempts anywhere "
            "from the SMTP block and the rate limit however it is split; list the few destinations that need "
            "it (a mail relay, a busy API), or set egress.smtp: allow and egress.newConnectionsPerSecond: 0 if "
            "that is meant",
        )
    return EgressSettings(block_smtp=smtp != "allow", new_per_second=rate, new_burst=burst, allowed_cidrs=tuple(cidrs))


def parse_endpoint_limits(p: Problems, value: Any) -> EndpointLimits:
    obj = p.obj(key("endpoint.limits"), value, fields_of("endpoint.limits"))
    memory = _read(p, "endpoint.limits.maxMemoryMiB", obj)
    pids = _read(p, "endpoint.limits.maxPids", obj)
    decl = setting("endpoint.limits.maxCpus")
    millicpus = decl.default
    cpus = obj.get("maxCpus")
    if cpus is not None:
        text = str(cpus).strip() if isinstance(cpus, int | float | str) and not isinstance(cpus, bool) else ""
        if not CPUS.match(text):
            p.add(
                key(decl.key),
                f"expected a number of CPUs with at most 3 decimals (e.g. 2 or 0.5), got {shown(cpus)}",
            )
        else:
            whole, _, frac = text.partition(".")
            millicpus = int(whole) * 1000 + int((frac + "000")[:3])
            low, high = decl.low or 0, decl.high or 0
            if not low <= millicpus <= high:
                p.add(key(decl.key), f"must be between {low / 1000:g} and {high // 1000}, got {text}")
                millicpus = decl.default
    return EndpointLimits(max_memory_mib=memory, max_pids=pids, max_millicpus=millicpus)


def normal_serial(text: str) -> str:
    """A serial as the policy compares it: lowercase hex, no separators or
    leading zeros; `serial=` (openssl's prefix) and `0x` are dropped."""
    normal = text.strip().lower()
    if normal.startswith("serial="):
        normal = normal[len("serial="):].strip()
    normal = normal.replace(":", "")
    if normal.startswith("0x"):
        normal = normal[2:]
    if not normal:
        return ""
    return normal.lstrip("0") or "0"


def parse_revocations(p: Problems, value: Any) -> EndpointRevocations:
    obj = p.obj(key("endpoint.revoked"), value, fields_of("endpoint.revoked"))
    serials = []
    for i, serial in enumerate(_read(p, "endpoint.revoked.serials", obj)):
        normal = normal_serial(serial)
        if not CERT_SERIAL.match(normal):
            p.add(
                key(f"endpoint.revoked.serials[{i}]"),
                f"{shown(serial)} is not a certificate serial; give it in hex as "
                "`openssl x509 -noout -serial` prints it (colons allowed)",
            )
            continue
        if normal not in serials:
            serials.append(normal)
    names = []
    for i, name in enumerate(_read(p, "endpoint.revoked.commonNames", obj)):
        if not name or has_control(name):
            p.add(
                key(f"endpoint.revoked.commonNames[{i}]"),
                "expected a certificate common name without line breaks or control characters",
            )
            continue
        names.append(name)
    return EndpointRevocations(serials=tuple(serials), common_names=tuple(names))


def parse_artifacts(p: Problems, value: Any) -> tuple[ArtifactSettings | None, tuple[Path, ...]]:
    obj = p.obj(key("artifacts"), value, fields_of("artifacts"))
    mirror = _read(p, "artifacts.mirror", obj)
    if mirror is not None:
        problem = mirror_problem(mirror)
        if problem:
            p.add(key("artifacts.mirror"), problem)
    local_dirs = []
    for i, text in enumerate(_read(p, "artifacts.localDirs", obj)):
        path, problem = local_dir_problem(text)
        if problem:
            p.add(key(f"artifacts.localDirs[{i}]"), problem)
        elif path is not None:
            local_dirs.append(path)
    dirs = tuple(local_dirs)
    catalog_text = _read(p, "artifacts.catalog", obj) or setting("artifacts.catalog").default
    catalog_path = local_file(p, key("artifacts.catalog"), catalog_text, dirs)
    if catalog_path is None:
        return None, dirs
    try:
        catalog = load_catalog(catalog_path)
    except CatalogError as err:
        p.add(key("artifacts.catalog"), str(err))
        return None, dirs
    return ArtifactSettings(mirror=mirror.rstrip("/") if mirror else None, catalog=catalog, local_dirs=dirs), dirs


def mirror_problem(mirror: str) -> str | None:
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


def local_file(p: Problems, config_key: str, text: str, local_dirs: Sequence[Path]) -> Path | None:
    """A file from the project or a local-artifacts directory, resolved (symlinks followed)."""
    path = resolve(text, PROJECT_ROOT)
    if path is None:
        p.add(config_key, f"{shown(text)} is not a usable path")
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


def parse_gvisor(p: Problems, value: Any, isolation: str | None, artifacts: ArtifactSettings | None) -> GvisorSettings:
    obj = p.obj(key("gvisor"), value, fields_of("gvisor"))
    decl = setting("gvisor.runsc")
    runsc = _read(p, decl.key, obj) or decl.default
    allow_host_network = _read(p, "gvisor.allowHostNetworkStack", obj)
    if runsc not in decl.choices:
        p.add(
            key(decl.key),
            f"must be 'release' (gVisor's release pinned in the artifact catalog) or 'debian' (Debian 13's "
            f"runsc package, a 2024-07-29 build, an explicit fallback), got {shown(runsc)}",
        )
        runsc = decl.default
    if runsc == "release" and isolation == "sandbox" and artifacts is not None:
        if GVISOR_ARCHIVE not in artifacts.catalog:
            loose = [name for name in GVISOR_ARTIFACTS if name in artifacts.catalog]
            p.add(
                key("artifacts.catalog"),
                f"{artifacts.catalog.path} has no row '{GVISOR_ARCHIVE}' (gVisor's release archive, "
                "gvisor-x86_64.tar.bz2), which gvisor.runsc: release installs on every gVisor host"
                + (f"; its rows {', '.join(loose)} are the loose files of releases before 20260831, which "
                   "run without their sidecars (docs/upgrading.md)" if loose else "")
                + "; add the archive's row as catalog/artifacts.tsv pins it, or set gvisor.runsc: debian "
                "to run Debian's package instead",
            )
    return GvisorSettings(runsc=runsc, allow_host_network_stack=allow_host_network)


def parse_verify(p: Problems, value: Any, local_dirs: Sequence[Path]) -> VerifySettings:
    obj = p.obj(key("verify"), value, fields_of("verify"))
    image = _read(p, "verify.image", obj) or ""
    archive_rel = _read(p, "verify.imageArchive", obj)
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
            f"{shown(image)} is not pinned; use a reference with @sha256:<digest> (or the image "
            f"ID sha256:<id> of verify.imageArchive), or leave it unset to build "
            f"{BUSYBOX_VERIFY_IMAGE} from the host's busybox-static",
        )
    elif image != BUSYBOX_VERIFY_IMAGE and not IMAGE_REFERENCE.match(image):
        p.add(
            key("verify.image"),
            f"{shown(image)} is not an image reference; expected [registry/]name[:tag]@sha256:<digest> "
            "with a lowercase name, e.g. docker.io/library/busybox@sha256:<digest>",
        )
    archive: Path | None = None
    if archive_rel is not None:
        archive = local_file(p, key("verify.imageArchive"), archive_rel, local_dirs)
        if archive is not None:
            problem = docker_archive_problem(archive, image if IMAGE_ID.match(image) else None)
            if problem:
                p.add(key("verify.imageArchive"), problem)
    runs = _read(p, "verify.coldStartRuns", obj)
    if runs % 2 == 0:
        p.add(key("verify.coldStartRuns"), f"must be odd so the median is a real run, got {runs}")
    outside = parse_outside_probe(p, obj.get("outsideProbe"))
    nerdctl = _read(p, "verify.nerdctl", obj)
    name = parse_name_probe(p, obj.get("nameProbe"))
    return VerifySettings(
        image=image, image_archive=archive, cold_start_runs=runs, outside_probe=outside, nerdctl=nerdctl,
        name_probe=name,
    )


DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def parse_name_probe(p: Problems, value: Any) -> str | None:
    config_key = key("verify.nameProbe")
    text = p.string(config_key, value)
    if text is None:
        return VERIFY_NAME_PROBE_DEFAULT
    if text == "none":
        return None
    name = text.removesuffix(".")
    labels = name.split(".")
    hint = "a DNS name every host resolves, e.g. deb.debian.org, or none"
    if len(name) > 253 or len(labels) < 2 or not all(DNS_LABEL.fullmatch(label) for label in labels):
        p.add(config_key, f"{shown(text)} is not a DNS name; expected {hint}")
        return None
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name.lower()
    p.add(config_key, f"{shown(text)} is an address, not a name: nothing is looked up; expected {hint}")
    return None


def parse_outside_probe(p: Problems, value: Any) -> tuple[str, int] | None:
    config_key = key("verify.outsideProbe")
    text = p.string(config_key, value)
    if text is None:
        return VERIFY_OUTSIDE_PROBE_DEFAULT
    if text == "none":
        return None
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:([0-9]{1,5})|([0-9.]+):([0-9]{1,5})", text)
    hint = "ADDR:PORT of an internet service every host reaches, e.g. 1.1.1.1:443 or [2606:4700::1111]:443, or none"
    if not match:
        p.add(config_key, f"{shown(text)} is not an address and port; expected {hint}")
        return None
    addr_text = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    try:
        addr = ipaddress.ip_address(addr_text)
    except ValueError:
        p.add(config_key, f"{shown(addr_text)} is not an IP address; expected {hint}")
        return None
    if not 1 <= port <= 65535:
        p.add(config_key, f"port {port} is out of range; expected {hint}")
    elif not is_internet_address(addr):
        p.add(
            config_key,
            f"{addr} is not an internet address (containers never reach private, link-local, "
            f"CGNAT or loopback ranges, and a multicast or reserved address answers no connection, so the "
            f"positive control would always fail); expected {hint}",
        )
    return str(addr), port




def parse_canary(p: Problems, value: Any) -> CanarySettings:
    obj = p.obj(key("canary"), value, fields_of("canary"))
    return CanarySettings(interval_seconds=_read(p, "canary.intervalSeconds", obj),
                          drain_on_failure=_read(p, "canary.drainOnFailure", obj))


def parse_gc(p: Problems, value: Any) -> GcSettings:
    obj = p.obj(key("gc"), value, fields_of("gc"))
    return GcSettings(
        container_ttl_minutes=_read(p, "gc.containerTtlMinutes", obj),
        image_budget_gib=_read(p, "gc.imageBudgetGiB", obj),
        disk_watermark_percent=_read(p, "gc.diskWatermarkPercent", obj),
    )


def parse_metrics(p: Problems, value: Any, endpoint: EndpointSettings) -> MetricsSettings:
    """metrics.allowedCidrs: whoever reaches the endpoint reads the canary by
    default. Given, it must be private: the node exporter answers on the
    private address only, so a public range (or anywhere) is a mistake."""
    obj = p.obj(key("metrics"), value, fields_of("metrics"))
    cidrs = _read(p, "metrics.allowedCidrs", obj)
    if not cidrs:
        return MetricsSettings(allowed_cidrs=endpoint.allowed_cidrs)
    entries = p.cidrs(key("metrics.allowedCidrs"), cidrs)
    for i, c, net in entries:
        if is_anywhere([net]) or not within(net, ENDPOINT_PRIVATE):
            p.add(
                key(f"metrics.allowedCidrs[{i}]"),
                f"{c} is not a private range; the node exporter listens on the private network only. "
                "List your Prometheus's private address or network",
            )
    return MetricsSettings(allowed_cidrs=tuple(cidrs))


def parse_certificates(p: Problems, value: Any) -> CertificateSettings:
    obj = p.obj(key("certificates"), value, fields_of("certificates"))
    return CertificateSettings(rotate_after_days=_read(p, "certificates.rotateAfterDays", obj))


def parse_golden_image(p: Problems, value: Any, has_cloud_hosts: bool) -> GoldenImageSettings:
    obj = p.obj(key("goldenImage"), value, fields_of("goldenImage"))
    settings = GoldenImageSettings(
        enabled=_read(p, "goldenImage.enabled", obj),
        keep=_read(p, "goldenImage.keep", obj),
        max_age_days=_read(p, "goldenImage.maxAgeDays", obj),
    )
    if settings.enabled and not has_cloud_hosts:
        p.warn(
            key("goldenImage.enabled"),
            "is true but the stack has no `source: hcloud` hosts; dedicated hosts cannot boot a snapshot, "
            "so nothing is built (they fetch each release file once per fleet instead)",
        )
    return settings


def parse_rollout(p: Problems, value: Any) -> RolloutSettings:
    obj = p.obj(key("rollout"), value, fields_of("rollout"))
    return RolloutSettings(
        batch_size=_read(p, "rollout.batchSize", obj),
        drain_timeout_seconds=_read(p, "rollout.drainTimeoutSeconds", obj),
    )
