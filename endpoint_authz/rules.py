"""The endpoint policy: one AuthZ request in, one decision out (no I/O).

dockerd sends every API request to its authorization plugins before it acts
(`/AuthZPlugin.AuthZReq`), as JSON (moby's pkg/authorization/api.go, empty
fields omitted): `User` (the client certificate's common name; absent on
the local socket), `UserAuthNMethod` ("TLS"), `RequestMethod`,
`RequestUri` (as the client sent it: version prefix, percent-escapes,
query), `RequestBody` (base64 of the body: only for `Content-Type:
application/json` bodies under 1 MiB, chunked ones included; otherwise
absent), `RequestHeaders`, `RequestPeerCertificates` (each the base64 of
its PEM).

`decide` denies by default. A client with a certificate may do what a
functions service needs (ROUTES) and nothing that weakens the sandbox:
`check_create` refuses every HostConfig field that reaches the host, and
requires memory, PID and CPU limits within the stack's maxima (an AuthZ
plugin can allow or deny, never change a request, so a missing limit is
refused, not defaulted). The local socket (root on the host) is not
restricted; anything that is not provably the local socket is a remote
client and needs a readable certificate (identity fails closed).

A client acts only on the containers and volumes it created: creates carry
the label OWNER_LABEL with the certificate's common name, and a call that
names a container, exec or volume is checked against dockerd's answer
about it (`Lookups`, which the plugin answers on dockerd's socket; this
module does no I/O itself). A pull takes no body and names a registry of
the configuration's `registries`, never a local or private address.

Bodies are read the way dockerd's Go decoder reads them: keys match struct
fields exactly or case-insensitively on ASCII (a key outside ASCII is
refused anywhere in a body: Go's folding there differs from Python's and
between Go releases; see go_fold), null leaves a field unset, a number
into a string field is an error. Where Go's
answer depends on order (a field given twice: last wins, and two objects
for one field merge), the body is refused instead: no client sends a
field twice. An unknown field is refused unless its value is empty (newer
clients send zero values of fields dockerd 26 does not know; a field this
policy does not know must not carry a value it never checked).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote, unquote_to_bytes

# Every refusal starts with this, then names the rule in one line.
REFUSAL_PREFIX = "functions-runtime policy:"
# dockerd forwards no body of this size or more to a plugin (pkg/authorization).
MAX_FORWARDED_BODY = 1048576
# dockerd 26's oldest API version; an older prefix is refused by dockerd too.
MIN_API_VERSION = (1, 24)
INT64 = (-(2**63), 2**64 - 1)
# endpoint.registries' default: the registry hosts a consumer may pull from.
# The large public registries, each run by its operator on public addresses
# (docker.io is Docker Hub; dockerd itself rewrites index.docker.io to it,
# and registry-1.docker.io is the host Hub's API answers on). A stack's own
# mirror, or any other registry, is named in the setting. Whatever the list
# says, an address on loopback, a private, link-local or CGNAT range (or
# "localhost") is refused.
DEFAULT_REGISTRIES = (
    "docker.io", "registry-1.docker.io", "ghcr.io", "quay.io", "registry.k8s.io", "public.ecr.aws",
    "mcr.microsoft.com", "gcr.io",
)
# The label that says which client certificate (its common name) a
# container or volume belongs to: required on create, checked on every
# later call that names it.
OWNER_LABEL = "functions-runtime.owner"
# A health check probe (an exec through dockerd, containerd and the shim,
# outside the container's cgroup) at most this often: Docker's default is
# 30 s, its own floor 1 ms. 10 s keeps a host's probe work bounded by its
# containers (1000 containers: 100 probes a second at most).
MIN_HEALTHCHECK_INTERVAL_NS = 10_000_000_000


@dataclass(frozen=True)
class Limits:
    """The largest memory, PID and CPU limits a container may ask for."""

    max_memory_bytes: int
    max_pids: int
    max_nano_cpus: int


@dataclass(frozen=True)
class PolicyConfig:
    sandbox_runtimes: tuple[str, ...]
    limits: Limits
    revoked_serials: frozenset[int] = frozenset()
    revoked_names: frozenset[str] = frozenset()
    registries: tuple[str, ...] = DEFAULT_REGISTRIES


class Lookups(Protocol):
    """What the policy asks dockerd (on the local socket) about the objects a
    request names: the inspect documents, or None when there is no such
    object. Raise LookupFailed when dockerd cannot be asked."""

    def container(self, ref: str) -> Mapping[str, Any] | None: ...

    def exec(self, exec_id: str) -> Mapping[str, Any] | None: ...

    def volume(self, name: str) -> Mapping[str, Any] | None: ...


class LookupFailed(Exception):
    """dockerd could not be asked (the request is refused, never allowed)."""


@dataclass(frozen=True)
class Decision:
    allow: bool
    msg: str = ""


def refuse(rule: str) -> Decision:
    # One line whatever a rule quoted from the request (control characters included).
    line = "".join(ch if ch.isprintable() else " " for ch in rule)
    return Decision(False, f"{REFUSAL_PREFIX} {' '.join(line.split())}")


ALLOW = Decision(True)


class Refused(Exception):
    """A rule refused the request; the message is the rule, one line."""


# ---------------------------------------------------------------- Go's JSON decoding

STR, BOOL, INT, ANY = "string", "boolean", "whole number", "any"


@dataclass(frozen=True)
class ListOf:
    item: Any


@dataclass(frozen=True)
class MapOf:
    value: Any


@dataclass(frozen=True)
class Struct:
    name: str
    fields: Mapping[str, Any]


class _Pairs(list):  # type: ignore[type-arg]
    """A JSON object as its key-value pairs, in order, duplicates kept."""


def _pairs(pairs: list[tuple[str, Any]]) -> _Pairs:
    """object_pairs_hook: every object's keys must be ASCII (see go_fold)."""
    for key, _ in pairs:
        if not key.isascii():
            raise Refused(
                f"the JSON key {ascii(key)[:80]} has a character outside ASCII; no Docker API field has one, "
                "and Go's decoder folds such keys unlike this policy, so keys outside ASCII are refused"
            )
    return _Pairs(pairs)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(data: bytes) -> Any:
    """JSON as Go reads it: UTF-8 only, no NaN/Infinity, one value."""
    text = data.decode("utf-8")
    return json.loads(text, object_pairs_hook=_pairs, parse_constant=_reject_constant)


def go_fold(name: str) -> str:
    """encoding/json's key folding, for the keys this policy reads: ASCII
    only (parse_json refuses any other key, anywhere in a body).

    Go matches a key to a field exactly, else case-insensitively. On ASCII
    every Go version agrees with this (a-z to A-Z, nothing else). Outside
    ASCII they do not agree with Python, nor with each other: before Go
    1.21, bytes.EqualFold-style simple folding (unicode.SimpleFold orbits:
    U+017F long s is 's', U+212A Kelvin is 'k', U+0131 dotless i is only
    itself); from 1.21, foldName's ToUpper(ToLower(r)); Python's
    str.upper makes U+0131 an 'I'. No Docker API field has a key outside
    ASCII, so refusing them is exact whichever Go built dockerd."""
    if not name.isascii():
        raise Refused(f"the JSON key {ascii(name)[:80]} has a character outside ASCII")
    return name.upper()


def is_zero(value: Any) -> bool:
    if value is None or value is False or value == "" or (isinstance(value, int) and value == 0):
        return True
    if isinstance(value, _Pairs):
        return all(is_zero(v) for _, v in value)
    if isinstance(value, dict):
        return all(is_zero(v) for v in value.values())
    if isinstance(value, list):
        return len(value) == 0
    return False


def decode(value: Any, kind: Any, where: str) -> Any:
    """`value` (from parse_json) as Go would decode it into `kind`; None for
    absent/null. Raises Refused for what dockerd would not accept or what
    this policy cannot read unambiguously."""
    if value is None:
        return None
    if kind == ANY:
        return value
    if kind == STR:
        if not isinstance(value, str):
            raise Refused(f"{where}: expected a {STR}")
        return value
    if kind == BOOL:
        if not isinstance(value, bool):
            raise Refused(f"{where}: expected a {BOOL}")
        return value
    if kind == INT:
        if isinstance(value, bool) or not isinstance(value, int) or not INT64[0] <= value <= INT64[1]:
            raise Refused(f"{where}: expected a {INT}")
        return value
    if isinstance(kind, ListOf):
        if not isinstance(value, list):
            raise Refused(f"{where}: expected a list")
        return [decode(v, kind.item, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(kind, MapOf):
        if not isinstance(value, _Pairs):
            raise Refused(f"{where}: expected an object")
        return {k: decode(v, kind.value, f"{where}.{k}") for k, v in value}
    if isinstance(kind, Struct):
        return _decode_struct(value, kind, where)
    raise AssertionError(f"unknown kind {kind!r}")


def _decode_struct(value: Any, kind: Struct, where: str) -> dict[str, Any]:
    if not isinstance(value, _Pairs):
        raise Refused(f"{where or kind.name}: expected an object")
    exact = {name: name for name in kind.fields}
    folded = {go_fold(name): name for name in kind.fields}
    out: dict[str, Any] = {}
    seen: set[str] = set()
    prefix = f"{where}." if where else ""
    for key, item in value:
        name = exact.get(key) or folded.get(go_fold(key))
        if name is None:
            if not is_zero(item):
                raise Refused(
                    f"{prefix}{key}: a field this endpoint's policy does not know, with a value; "
                    "it is refused rather than passed unchecked"
                )
            continue
        if name in seen:
            raise Refused(f"{prefix}{name}: given more than once (keys match case-insensitively)")
        seen.add(name)
        decoded = decode(item, kind.fields[name], f"{prefix}{name}")
        if decoded is not None:
            out[name] = decoded
    return out


def decode_body(body: bytes | None, kind: Struct, what: str) -> dict[str, Any]:
    if not body:
        raise Refused(
            f"{what} needs a JSON body (Content-Type: application/json) under 1 MiB; "
            "dockerd forwarded none, so the policy cannot check it"
        )
    try:
        value = parse_json(body)
    except (UnicodeDecodeError, ValueError) as err:
        raise Refused(f"{what} body is not valid JSON ({_short(str(err))})") from None
    if not isinstance(value, _Pairs):
        raise Refused(f"{what} body must be a JSON object")
    try:
        return _decode_struct(value, kind, "")
    except Refused as err:
        raise Refused(f"{what} body: {err}") from None


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 120 else text[:117] + "..."


# ---------------------------------------------------------------- Docker 26's request types

_RESOURCES = {
    "CpuShares": INT, "Memory": INT, "NanoCpus": INT, "CgroupParent": STR, "BlkioWeight": INT,
    "BlkioWeightDevice": ANY, "BlkioDeviceReadBps": ANY, "BlkioDeviceWriteBps": ANY,
    "BlkioDeviceReadIOps": ANY, "BlkioDeviceWriteIOps": ANY, "CpuPeriod": INT, "CpuQuota": INT,
    "CpuRealtimePeriod": INT, "CpuRealtimeRuntime": INT, "CpusetCpus": STR, "CpusetMems": STR,
    "Devices": ANY, "DeviceCgroupRules": ANY, "DeviceRequests": ANY, "KernelMemory": INT,
    "KernelMemoryTCP": INT, "MemoryReservation": INT, "MemorySwap": INT, "MemorySwappiness": INT,
    "OomKillDisable": BOOL, "PidsLimit": INT, "Ulimits": ANY, "CpuCount": INT, "CpuPercent": INT,
    "IOMaximumIOps": INT, "IOMaximumBandwidth": INT,
}
_DRIVER_CONFIG = Struct("DriverConfig", {"Name": STR, "Options": MapOf(STR)})
_MOUNT = Struct(
    "Mount",
    {
        "Type": STR, "Source": STR, "Target": STR, "ReadOnly": BOOL, "Consistency": STR,
        "BindOptions": ANY, "TmpfsOptions": ANY, "ClusterOptions": ANY,
        "VolumeOptions": Struct(
            "VolumeOptions",
            {"NoCopy": BOOL, "Labels": MapOf(STR), "Subpath": STR, "DriverConfig": _DRIVER_CONFIG},
        ),
    },
)
HOST_CONFIG = Struct(
    "HostConfig",
    {
        "Binds": ListOf(STR), "ContainerIDFile": STR,
        "LogConfig": Struct("LogConfig", {"Type": STR, "Config": MapOf(STR)}),
        "NetworkMode": STR, "PortBindings": ANY,
        "RestartPolicy": Struct("RestartPolicy", {"Name": STR, "MaximumRetryCount": INT}),
        "AutoRemove": BOOL, "VolumeDriver": STR, "VolumesFrom": ListOf(STR), "ConsoleSize": ANY,
        "Annotations": MapOf(STR), "CapAdd": ANY, "CapDrop": ANY, "CgroupnsMode": STR,
        "Dns": ListOf(STR), "DnsOptions": ListOf(STR), "DnsSearch": ListOf(STR),
        "ExtraHosts": ListOf(STR), "GroupAdd": ListOf(STR), "IpcMode": STR, "Cgroup": STR,
        "Links": ListOf(STR), "OomScoreAdj": INT, "PidMode": STR, "Privileged": BOOL,
        "PublishAllPorts": BOOL, "ReadonlyRootfs": BOOL, "SecurityOpt": ListOf(STR),
        "StorageOpt": MapOf(STR), "Tmpfs": MapOf(STR), "UTSMode": STR, "UsernsMode": STR,
        "ShmSize": INT, "Sysctls": MapOf(STR), "Runtime": STR, "Isolation": STR,
        **_RESOURCES,
        "Mounts": ListOf(_MOUNT), "MaskedPaths": ANY, "ReadonlyPaths": ANY, "Init": BOOL,
    },
)
# container.HealthConfig: durations in nanoseconds (Go's time.Duration).
HEALTHCHECK = Struct(
    "Healthcheck",
    {"Test": ListOf(STR), "Interval": INT, "Timeout": INT, "StartPeriod": INT, "StartInterval": INT, "Retries": INT},
)
ENDPOINT_SETTINGS = Struct(
    "EndpointSettings",
    {
        "IPAMConfig": ANY, "Links": ListOf(STR), "Aliases": ListOf(STR), "MacAddress": STR,
        "DriverOpts": MapOf(STR), "NetworkID": STR, "EndpointID": STR, "Gateway": STR,
        "IPAddress": STR, "IPPrefixLen": INT, "IPv6Gateway": STR, "GlobalIPv6Address": STR,
        "GlobalIPv6PrefixLen": INT, "DNSNames": ListOf(STR),
    },
)
CONTAINER_CREATE = Struct(
    "ContainerCreate",
    {
        # container.Config, embedded: its fields are top-level keys.
        "Hostname": STR, "Domainname": STR, "User": STR, "AttachStdin": BOOL, "AttachStdout": BOOL,
        "AttachStderr": BOOL, "ExposedPorts": ANY, "Tty": BOOL, "OpenStdin": BOOL, "StdinOnce": BOOL,
        "Env": ListOf(STR), "Cmd": ANY, "Healthcheck": HEALTHCHECK, "ArgsEscaped": BOOL, "Image": STR,
        "Volumes": ANY, "WorkingDir": STR, "Entrypoint": ANY, "NetworkDisabled": BOOL,
        "MacAddress": STR, "OnBuild": ListOf(STR), "Labels": MapOf(STR), "StopSignal": STR,
        "StopTimeout": INT, "Shell": ANY,
        "HostConfig": HOST_CONFIG,
        "NetworkingConfig": Struct("NetworkingConfig", {"EndpointsConfig": MapOf(ENDPOINT_SETTINGS)}),
    },
)
EXEC_CREATE = Struct(
    "ExecCreate",
    {
        # docker-py still sends the container's ID in the body (API 1.x's
        # ExecConfig had it); dockerd takes it from the path and ignores it.
        "Container": STR,
        "User": STR, "Privileged": BOOL, "Tty": BOOL, "ConsoleSize": ANY, "AttachStdin": BOOL,
        "AttachStderr": BOOL, "AttachStdout": BOOL, "Detach": BOOL, "DetachKeys": STR,
        "Env": ListOf(STR), "WorkingDir": STR, "Cmd": ANY,
    },
)
NETWORK_CREATE = Struct(
    "NetworkCreate",
    {
        "Name": STR, "CheckDuplicate": BOOL, "Driver": STR, "Scope": STR, "EnableIPv6": BOOL,
        "IPAM": Struct("IPAM", {"Driver": STR, "Options": MapOf(STR), "Config": ANY}),
        "Internal": BOOL, "Attachable": BOOL, "Ingress": BOOL, "ConfigOnly": BOOL,
        "ConfigFrom": ANY, "Options": MapOf(STR), "Labels": MapOf(STR),
    },
)
NETWORK_CONNECT = Struct("NetworkConnect", {"Container": STR, "EndpointConfig": ENDPOINT_SETTINGS})
NETWORK_DISCONNECT = Struct("NetworkDisconnect", {"Container": STR, "Force": BOOL})
VOLUME_CREATE = Struct(
    "VolumeCreate",
    {"Name": STR, "Driver": STR, "DriverOpts": MapOf(STR), "Labels": MapOf(STR), "ClusterVolumeSpec": ANY},
)


# ---------------------------------------------------------------- the request

@dataclass(frozen=True)
class ApiCall:
    """One Docker API request, read the way dockerd's router reads it."""

    method: str
    path: str  # percent-decoded, without the /v1.xx prefix
    query: Mapping[str, str]
    body: bytes | None
    version: str | None = None
    # The client certificate's common name (dockerd's `User`).
    user: str = ""
    # The request's headers as dockerd forwards them (Go's canonical names).
    headers: Mapping[str, str] = field(default_factory=dict)
    # How to ask dockerd about a named object; None: nothing can be asked.
    lookups: Lookups | None = None

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers.items():
            if isinstance(key, str) and key.lower() == wanted:
                return str(value)
        return None


_VERSION = re.compile(r"/v([0-9.]+)(/.*)", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def parse_call(method: str, uri: str, body: bytes | None) -> ApiCall:
    if not uri.startswith("/") or "#" in uri:
        raise Refused(f"request URI {_short(uri)!r} is not a plain path")
    raw_path, _, raw_query = uri.partition("?")
    if _BAD_ESCAPE.search(raw_path) or _BAD_ESCAPE.search(raw_query):
        raise Refused("request URI has a malformed percent-escape")
    try:
        path = unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("request path is not UTF-8") from None
    if _CONTROL.search(path):
        raise Refused("request path has a control character")
    segments = path.split("/")[1:]
    inner = segments[:-1] if len(segments) > 1 else segments
    if any(s in ("", ".", "..") for s in inner) or segments[-1] in (".", ".."):
        raise Refused(f"request path {_short(path)!r} is not in canonical form")
    version = None
    m = _VERSION.fullmatch(path)
    if m:
        version, path = m.group(1), m.group(2)
        parts = version.split(".")
        if len(parts) != 2 or not all(parts) or tuple(int(p) for p in parts) < MIN_API_VERSION:
            raise Refused(f"API version {version!r} is not allowed (at least 1.24)")
    query: dict[str, str] = {}
    for part in raw_query.split("&") if raw_query else ():
        if part == "":
            continue
        if ";" in part:
            raise Refused("a ';' in the query string is not allowed")
        key, _, value = part.partition("=")
        try:
            key = unquote(key.replace("+", " "), errors="strict")
            value = unquote(value.replace("+", " "), errors="strict")
        except UnicodeDecodeError:
            raise Refused("query string is not UTF-8") from None
        if key in query:
            raise Refused(f"query parameter {key!r} given more than once")
        query[key] = value
    return ApiCall(method=method, path=path, query=query, body=body or None, version=version)


# ---------------------------------------------------------------- rules

Check = Callable[[ApiCall, PolicyConfig], None]


def no_query_but(*allowed: str) -> Check:
    def check(call: ApiCall, config: PolicyConfig) -> None:
        extra = sorted(set(call.query) - set(allowed))
        if extra:
            raise Refused(f"query parameter(s) {', '.join(extra)} are not allowed on {call.method} {call.path}")

    return check


def _binds(binds: Sequence[str]) -> None:
    for bind in binds:
        source = bind.split(":", 1)[0]
        if source.startswith("/") or source.startswith(".") or "\\" in source or not source:
            raise Refused(f"bind mounts of host paths are not allowed on this endpoint (-v {_short(bind)})")
        if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", source):
            raise Refused(f"volume name {source!r} in -v is not a plain named volume")


def _mounts(mounts: Sequence[Mapping[str, Any]]) -> None:
    for m in mounts:
        kind = m.get("Type", "")
        if kind == "bind":
            raise Refused(
                f"bind mounts of host paths are not allowed on this endpoint (--mount type=bind,source={_short(str(m.get('Source', '')))})"
            )
        if kind not in ("volume", "tmpfs"):
            raise Refused(f"--mount type={kind or '(none)'} is not allowed on this endpoint (volume and tmpfs only)")
        if m.get("BindOptions") is not None and not is_zero(m.get("BindOptions")):
            raise Refused("--mount bind options are not allowed on this endpoint")
        options = m.get("VolumeOptions", {})
        if kind == "tmpfs" and (not is_zero(options) or m.get("Source")):
            raise Refused("--mount type=tmpfs takes no source or volume options")
        if options.get("Subpath"):
            raise Refused("--mount volume-subpath is not allowed on this endpoint")
        driver = options.get("DriverConfig", {})
        if driver.get("Name", "local") not in ("", "local") or driver.get("Options"):
            raise Refused(
                "volume driver options are not allowed on this endpoint (a local volume with "
                "o=bind or type=nfs mounts a host path or reaches the host's network)"
            )


def _namespace_modes(hc: Mapping[str, Any]) -> None:
    modes = {
        "NetworkMode": ("--network", None),
        "PidMode": ("--pid", ("",)),
        "IpcMode": ("--ipc", ("", "private", "none", "shareable")),
        "UTSMode": ("--uts", ("",)),
        "UsernsMode": ("--userns", ("",)),
        "CgroupnsMode": ("--cgroupns", ("", "private")),
        "Cgroup": ("--cgroup", ("",)),
    }
    for name, (flag, allowed) in modes.items():
        value = hc.get(name, "")
        if allowed is None:  # the network: its own, none, or a user-defined one
            if value.lower() == "host" or ":" in value:
                raise Refused(
                    f"{flag} {_short(value)} is not allowed on this endpoint (the host's or another "
                    "container's network namespace)"
                )
            continue
        if value not in allowed:
            what = "the host's namespace" if value.lower() == "host" else "a shared namespace"
            raise Refused(f"{flag} {_short(value)} is not allowed on this endpoint ({what})")


_NNP = re.compile(r"^no-new-privileges(?:[=:]true)?$")


def _security_opts(opts: Sequence[str]) -> None:
    for opt in opts:
        if _NNP.match(opt):
            continue
        if opt.startswith("systempaths"):
            raise Refused(
                f"--security-opt {_short(opt)} is not allowed on this endpoint (masked and read-only "
                "paths stay as the runtime sets them)"
            )
        raise Refused(
            f"--security-opt {_short(opt)} is not allowed on this endpoint (seccomp, AppArmor, labels "
            "and no-new-privileges stay as the host sets them)"
        )


def _limits(hc: Mapping[str, Any], limits: Limits) -> None:
    mib = limits.max_memory_bytes // (1024 * 1024)
    memory = hc.get("Memory", 0)
    if memory <= 0:
        raise Refused(f"--memory is required on this endpoint (at most {mib} MiB)")
    if memory > limits.max_memory_bytes:
        raise Refused(f"--memory {memory} bytes is above this endpoint's maximum of {mib} MiB")
    swap = hc.get("MemorySwap", 0)
    if swap not in (0, memory):
        raise Refused("--memory-swap is not allowed on this endpoint (leave it unset or equal to --memory)")
    if hc.get("MemoryReservation", 0) > memory:
        raise Refused("--memory-reservation above --memory is not allowed")
    pids = hc.get("PidsLimit", 0)
    if pids <= 0:
        raise Refused(f"--pids-limit is required on this endpoint (at most {limits.max_pids})")
    if pids > limits.max_pids:
        raise Refused(f"--pids-limit {pids} is above this endpoint's maximum of {limits.max_pids}")
    cpus = _fmt_cpus(limits.max_nano_cpus)
    nano = hc.get("NanoCpus", 0)
    quota, period = hc.get("CpuQuota", 0), hc.get("CpuPeriod", 0)
    if nano < 0 or quota < 0 or period < 0:
        raise Refused("negative CPU limits are not allowed")
    if nano == 0 and (quota <= 0 or period <= 0):
        raise Refused(f"--cpus (or --cpu-quota with --cpu-period) is required on this endpoint (at most {cpus})")
    effective = nano if nano else quota * 1_000_000_000 // period
    if effective > limits.max_nano_cpus:
        raise Refused(f"--cpus {_fmt_cpus(effective)} is above this endpoint's maximum of {cpus}")
    if hc.get("CpuRealtimePeriod", 0) or hc.get("CpuRealtimeRuntime", 0):
        raise Refused("--cpu-rt-period and --cpu-rt-runtime are not allowed on this endpoint")


def _fmt_cpus(nano: int) -> str:
    return f"{nano / 1_000_000_000:g}"


def _host_config(hc: Mapping[str, Any], config: PolicyConfig) -> None:
    runtime = hc.get("Runtime", "")
    if runtime and runtime not in config.sandbox_runtimes:
        raise Refused(
            f"--runtime {_short(runtime)} is not allowed on this endpoint; use "
            f"{' or '.join(config.sandbox_runtimes)} (or leave it unset for the default)"
        )
    if hc.get("Privileged"):
        raise Refused("--privileged is not allowed on this endpoint")
    _namespace_modes(hc)
    _binds(hc.get("Binds", []))
    _mounts(hc.get("Mounts", []))
    if hc.get("VolumesFrom"):
        raise Refused("--volumes-from is not allowed on this endpoint (another container's mounts)")
    if hc.get("VolumeDriver", "") not in ("", "local"):
        raise Refused(f"--volume-driver {_short(hc['VolumeDriver'])} is not allowed on this endpoint")
    simple = (
        ("Devices", "--device is not allowed on this endpoint"),
        ("DeviceRequests", "--gpus and device requests are not allowed on this endpoint"),
        ("DeviceCgroupRules", "--device-cgroup-rule is not allowed on this endpoint"),
        ("CapAdd", "--cap-add is not allowed on this endpoint"),
        ("Sysctls", "--sysctl is not allowed on this endpoint"),
        ("CgroupParent", "--cgroup-parent is not allowed on this endpoint"),
        ("OomKillDisable", "--oom-kill-disable is not allowed on this endpoint"),
        ("PortBindings", "-p/--publish is not allowed on this endpoint (Docker publishes ports past the host's input filter)"),
        ("PublishAllPorts", "-P/--publish-all is not allowed on this endpoint (Docker publishes ports past the host's input filter)"),
        ("Annotations", "--annotation is not allowed on this endpoint (runtime annotations change the sandbox)"),
        ("StorageOpt", "--storage-opt is not allowed on this endpoint"),
    )
    for name, rule in simple:
        if name in hc and not is_zero(hc[name]):
            raise Refused(rule)
    # MaskedPaths/ReadonlyPaths: any value replaces the runtime's list (an
    # empty one unmasks everything), so only their absence is allowed.
    for name, what in (("MaskedPaths", "masked"), ("ReadonlyPaths", "read-only")):
        if hc.get(name) is not None:
            raise Refused(
                f"{what} paths cannot be changed on this endpoint (as --security-opt systempaths=unconfined does)"
            )
    _security_opts(hc.get("SecurityOpt", []))
    if hc.get("OomScoreAdj", 0) < 0:
        raise Refused("--oom-score-adj below 0 is not allowed on this endpoint (the host's processes would die first)")
    log = hc.get("LogConfig", {})
    if log.get("Type", "") not in ("", "json-file") or log.get("Config"):
        raise Refused(
            "--log-driver and --log-opt are not allowed on this endpoint (json-file with the host's "
            "rotation only; other drivers make dockerd connect out from the host)"
        )
    if hc.get("Isolation", "") not in ("", "default"):
        raise Refused(f"--isolation {_short(hc['Isolation'])} is not allowed on this endpoint")
    _limits(hc, config.limits)


def _endpoints(endpoints: Mapping[str, Mapping[str, Any]], where: str) -> None:
    for network, settings in endpoints.items():
        if network.lower() == "host" or ":" in network:
            raise Refused(f"{where} network {_short(network)} is not allowed on this endpoint (the host's network)")
        if settings.get("DriverOpts"):
            raise Refused(f"{where} driver options (--network {_short(network)},driver-opt=...) are not allowed on this endpoint")


def _owner_label(labels: Mapping[str, str], call: ApiCall, what: str) -> None:
    if labels.get(OWNER_LABEL) != call.user:
        raise Refused(
            f"{what} needs the label {OWNER_LABEL}={call.user} on this endpoint (the common name of the "
            "client certificate that creates it: only it may act on it later)"
        )


def _healthcheck(health: Mapping[str, Any]) -> None:
    floor_s = MIN_HEALTHCHECK_INTERVAL_NS // 1_000_000_000
    for name, flag in (("Interval", "--health-interval"), ("StartInterval", "--health-start-interval")):
        value = health.get(name, 0)
        if value < 0 or 0 < value < MIN_HEALTHCHECK_INTERVAL_NS:
            raise Refused(
                f"{flag} under {floor_s}s is not allowed on this endpoint (each probe is work for dockerd, "
                "containerd and the shim, outside the container's limits; 0 means Docker's 30s)"
            )


def _volume_names(hc: Mapping[str, Any]) -> list[str]:
    names = [bind.split(":", 1)[0] for bind in hc.get("Binds", [])]
    names += [m["Source"] for m in hc.get("Mounts", []) if m.get("Type") == "volume" and m.get("Source")]
    return names


def check_create(call: ApiCall, config: PolicyConfig) -> None:
    no_query_but("name", "platform")(call, config)
    body = decode_body(call.body, CONTAINER_CREATE, "container create")
    if "HostConfig" not in body:
        raise Refused(
            "container create needs a HostConfig with --memory, --pids-limit and --cpus on this endpoint"
        )
    _host_config(body["HostConfig"], config)
    _endpoints(body.get("NetworkingConfig", {}).get("EndpointsConfig", {}), "--network")
    _healthcheck(body.get("Healthcheck", {}))
    _owner_label(body.get("Labels", {}), call, "container create")
    for name in _volume_names(body["HostConfig"]):
        _own_volume(call, name, must_exist=True)


# ---------------------------------------------------------------- ownership (asks dockerd)

def _lookup(call: ApiCall, kind: str, ref: str) -> Mapping[str, Any] | None:
    if call.lookups is None:
        raise Refused(f"the policy cannot look up {kind} {_short(ref)!r} on this host, so the request is refused")
    try:
        found = getattr(call.lookups, kind)(ref)
    except LookupFailed as err:
        raise Refused(f"the policy could not ask dockerd about {kind} {_short(ref)!r} ({_short(str(err))})") from None
    if found is not None and not isinstance(found, Mapping):
        raise Refused(f"dockerd's answer about {kind} {_short(ref)!r} is not an object")
    return found


def _labels(info: Mapping[str, Any], *path: str) -> Mapping[str, Any]:
    node: Any = info
    for step in path:
        node = node.get(step) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}


def _own_container(call: ApiCall, config: PolicyConfig, ref: str, what: str) -> None:
    """`ref` (an ID, a prefix or a name) is a container this client created,
    running a sandbox runtime. One that does not exist is left to dockerd
    (it answers 404)."""
    info = _lookup(call, "container", ref)
    if info is None:
        return
    runtime = _labels(info, "HostConfig").get("Runtime") or ""
    if runtime not in config.sandbox_runtimes:
        raise Refused(
            f"{what} on container {_short(ref)} is not allowed on this endpoint: it runs "
            f"{_short(str(runtime)) or 'no'} runtime, not a sandbox runtime ({' or '.join(config.sandbox_runtimes)})"
        )
    if _labels(info, "Config", "Labels").get(OWNER_LABEL) != call.user:
        raise Refused(
            f"{what} on container {_short(ref)} is not allowed on this endpoint: it was not created by this "
            f"client certificate (label {OWNER_LABEL})"
        )


def _own_volume(call: ApiCall, name: str, must_exist: bool) -> None:
    info = _lookup(call, "volume", name)
    if info is None:
        if must_exist:
            raise Refused(
                f"volume {_short(name)} does not exist; create it first (POST /volumes/create with the label "
                f"{OWNER_LABEL}={call.user}): dockerd would create it unlabelled, owned by no one"
            )
        return
    if _labels(info, "Labels").get(OWNER_LABEL) != call.user:
        raise Refused(
            f"volume {_short(name)} is not allowed on this endpoint: it was not created by this client "
            f"certificate (label {OWNER_LABEL})"
        )


def check_container(call: ApiCall, config: PolicyConfig) -> None:
    """Any /containers/{id}/... call: only on this client's sandboxed containers."""
    _own_container(call, config, call.path.split("/")[2], f"{call.method} {_route_name(call.path)}")


def _route_name(path: str) -> str:
    parts = path.split("/")
    return "/".join(["", parts[1], "{id}", *parts[3:]])


def check_exec_id(call: ApiCall, config: PolicyConfig) -> None:
    info = _lookup(call, "exec", call.path.split("/")[2])
    if info is not None:
        container = info.get("ContainerID")
        if not isinstance(container, str) or not container:
            raise Refused("dockerd's answer about the exec names no container")
        _own_container(call, config, container, f"{call.method} {_route_name(call.path)}")


def check_exec(call: ApiCall, config: PolicyConfig) -> None:
    no_query_but()(call, config)
    check_container(call, config)
    body = decode_body(call.body, EXEC_CREATE, "exec create")
    if body.get("Privileged"):
        raise Refused("exec --privileged is not allowed on this endpoint")
    if body.get("User"):
        raise Refused(
            f"exec --user {_short(body['User'])} is not allowed on this endpoint (an exec runs as the "
            "container's own user, chosen when it was created)"
        )


def check_start(call: ApiCall, config: PolicyConfig) -> None:
    no_query_but("detachKeys")(call, config)
    check_container(call, config)
    if call.body and not is_zero(_parsed_or_refuse(call.body)):
        raise Refused("container start takes no body on this endpoint (HostConfig belongs in create)")


def _parsed_or_refuse(body: bytes) -> Any:
    try:
        return parse_json(body)
    except (UnicodeDecodeError, ValueError):
        raise Refused("request body is not valid JSON") from None


# What a request without a body may say it is: Docker's Go client sends
# "text/plain" with every bodiless POST; docker-py sends none.
_EMPTY_BODY_TYPES = ("", "text/plain", "application/json")


def _no_body(call: ApiCall, what: str) -> None:
    """Refuse a request that has a body, whatever its Content-Type. dockerd
    forwards only JSON bodies, so the headers are the evidence: a length,
    a transfer coding, or a type Go's ParseForm reads (a chunked body's
    length and coding never reach the plugin: net/http removes them)."""
    length = (call.header("Content-Length") or "0").strip()
    media = (call.header("Content-Type") or "").split(";", 1)[0].strip().lower()
    if call.body or length != "0" or call.header("Transfer-Encoding") is not None or media not in _EMPTY_BODY_TYPES:
        raise Refused(
            f"{what} takes no body on this endpoint (dockerd reads a form body's fromSrc and fromImage "
            "before the query's, and does not forward it to the policy)"
        )


def registry_of(reference: str) -> str:
    """The registry host[:port] dockerd pulls `reference` from (the
    distribution reference's domain: a first component with '.' or ':',
    "localhost" or an upper-case letter; else Docker Hub)."""
    first, slash, _ = reference.partition("/")
    if not slash or not ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        return "docker.io"
    return "docker.io" if first == "index.docker.io" else first


def _registry_host(registry: str) -> str:
    if registry.startswith("["):
        return registry[1:].partition("]")[0]
    return registry.rpartition(":")[0] if registry.count(":") == 1 else registry


def local_registry_reason(registry: str) -> str | None:
    """Why dockerd must not connect to `registry` from the host, or None."""
    host = _registry_host(registry).lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return "the host's loopback"
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not address.is_global or address.is_multicast:
        return "a loopback, private, link-local or CGNAT address"
    return None


def check_pull(call: ApiCall, config: PolicyConfig) -> None:
    extra = sorted(set(call.query) - {"fromImage", "tag", "platform"})
    if extra or not call.query.get("fromImage"):
        raise Refused(
            "POST /images/create is allowed as a pull only (fromImage, tag, platform); "
            f"{'import (fromSrc) and ' if 'fromSrc' in call.query else ''}other parameters are not allowed"
        )
    _no_body(call, "POST /images/create")
    registry = registry_of(call.query["fromImage"])
    reason = local_registry_reason(registry)
    if reason:
        raise Refused(f"pulls from {_short(registry)} are not allowed on this endpoint ({reason}, reached from the host)")
    if registry.lower() not in config.registries:
        raise Refused(
            f"pulls from {_short(registry)} are not allowed on this endpoint (endpoint.registries: "
            f"{', '.join(config.registries) or 'none'})"
        )


def check_network_create(call: ApiCall, config: PolicyConfig) -> None:
    body = decode_body(call.body, NETWORK_CREATE, "network create")
    if body.get("Driver", "") not in ("", "bridge"):
        raise Refused(f"network driver {_short(body['Driver'])} is not allowed on this endpoint (bridge only)")
    if body.get("Scope", "") not in ("", "local"):
        raise Refused("network scope other than local is not allowed on this endpoint")
    for name in ("Ingress", "ConfigOnly", "Attachable", "ConfigFrom"):
        if not is_zero(body.get(name)):
            raise Refused(f"network {name} is not allowed on this endpoint (swarm networks)")
    if body.get("Options"):
        raise Refused("network driver options (-o) are not allowed on this endpoint (they configure the host's bridge)")
    if not is_zero(body.get("EnableIPv6")):
        raise Refused(
            "IPv6 container networks (--ipv6) are not allowed on this endpoint (the host filter gives containers "
            "IPv4 egress only; docs/security.md, \"IPv6\")"
        )
    ipam = body.get("IPAM", {})
    if ipam.get("Driver", "") not in ("", "default") or ipam.get("Options") or not is_zero(ipam.get("Config")):
        raise Refused(
            "network IPAM settings (--subnet, --ip-range, --gateway, --ipam-*) are not allowed on this "
            "endpoint (addresses come from dockerd's pools, so no network overlaps the host's)"
        )


def check_network_connect(call: ApiCall, config: PolicyConfig) -> None:
    network = call.path.split("/")[2]
    body = decode_body(call.body, NETWORK_CONNECT, "network connect")
    _endpoints({network: body.get("EndpointConfig", {})}, "network connect to")
    _own_container(call, config, body.get("Container", ""), "network connect")


def check_network_disconnect(call: ApiCall, config: PolicyConfig) -> None:
    body = decode_body(call.body, NETWORK_DISCONNECT, "network disconnect")
    _own_container(call, config, body.get("Container", ""), "network disconnect")


def check_volume_create(call: ApiCall, config: PolicyConfig) -> None:
    body = decode_body(call.body, VOLUME_CREATE, "volume create")
    if body.get("Driver", "") not in ("", "local"):
        raise Refused(f"volume driver {_short(body['Driver'])} is not allowed on this endpoint (local only)")
    if body.get("DriverOpts"):
        raise Refused(
            "volume driver options (-o) are not allowed on this endpoint (a local volume with o=bind "
            "mounts a host path; type=nfs reaches the host's network)"
        )
    if not is_zero(body.get("ClusterVolumeSpec")):
        raise Refused("cluster volumes are not allowed on this endpoint (swarm)")
    _owner_label(body.get("Labels", {}), call, "volume create")
    if body.get("Name"):  # dockerd answers an existing name with that volume: it must be this client's
        _own_volume(call, body["Name"], must_exist=False)


def check_volume(call: ApiCall, config: PolicyConfig) -> None:
    _own_volume(call, call.path.split("/")[2], must_exist=False)


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    what: str
    check: Check | None = None
    creates: bool = False


def _route(method: str, path: str, what: str, check: Check | None = None, creates: bool = False) -> Route:
    regex = re.sub(r"\{(\w+)\}", lambda m: "(?:.+)" if m.group(1) == "image" else "[^/]+", path)
    return Route(method, re.compile(regex, re.DOTALL), what, check, creates)


# What a functions service needs, and nothing else (docs/security.md).
ROUTES: tuple[Route, ...] = (
    _route("GET", "/_ping", "ping"),
    _route("HEAD", "/_ping", "ping"),
    _route("GET", "/version", "version"),
    _route("GET", "/info", "info"),
    _route("GET", "/events", "events"),
    _route("POST", "/images/create", "image pull", check_pull),
    _route("GET", "/images/json", "image list"),
    _route("GET", "/images/{image}/json", "image inspect"),
    _route("DELETE", "/images/{image}", "image remove"),
    _route("POST", "/containers/create", "container create", check_create, creates=True),
    _route("GET", "/containers/json", "container list"),
    _route("GET", "/containers/{id}/json", "container inspect", check_container),
    _route("POST", "/containers/{id}/start", "container start", check_start),
    _route("POST", "/containers/{id}/wait", "container wait", check_container),
    _route("POST", "/containers/{id}/attach", "container attach", check_container),
    _route("GET", "/containers/{id}/logs", "container logs", check_container),
    # A sandbox's CPU, memory and PIDs as its runtime accounts them (cAdvisor
    # sees nothing inside gVisor or Kata): docs/operations.md, Per-sandbox usage.
    _route("GET", "/containers/{id}/stats", "container stats", check_container),
    _route("POST", "/containers/{id}/resize", "container resize", check_container),
    _route("POST", "/containers/{id}/stop", "container stop", check_container),
    _route("POST", "/containers/{id}/kill", "container kill", check_container),
    _route("DELETE", "/containers/{id}", "container remove", check_container),
    _route("POST", "/containers/{id}/exec", "exec create", check_exec),
    _route("POST", "/exec/{id}/start", "exec start", check_exec_id),
    _route("POST", "/exec/{id}/resize", "exec resize", check_exec_id),
    _route("GET", "/exec/{id}/json", "exec inspect", check_exec_id),
    _route("GET", "/networks", "network list"),
    _route("GET", "/networks/{id}", "network inspect"),
    _route("POST", "/networks/create", "network create", check_network_create),
    _route("POST", "/networks/{id}/connect", "network connect", check_network_connect),
    _route("POST", "/networks/{id}/disconnect", "network disconnect", check_network_disconnect),
    _route("DELETE", "/networks/{id}", "network remove"),
    _route("GET", "/volumes", "volume list"),
    _route("GET", "/volumes/{id}", "volume inspect", check_volume),
    _route("POST", "/volumes/create", "volume create", check_volume_create),
    _route("DELETE", "/volumes/{id}", "volume remove", check_volume),
)

# Refusals that name their reason (anything else is "not allowed").
_NAMED_REFUSALS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^/build(/|\Z)"), "image builds are not allowed on this endpoint (the builder runs code outside the sandbox runtime)"),
    (re.compile(r"^/session\Z"), "BuildKit sessions are not allowed on this endpoint (the builder runs code outside the sandbox runtime)"),
    (re.compile(r"^/grpc\Z"), "BuildKit is not allowed on this endpoint (the builder runs code outside the sandbox runtime)"),
    (re.compile(r"^/(swarm|services|nodes|tasks|secrets|configs)(/|\Z)"), "swarm is not allowed on this endpoint"),
    (re.compile(r"^/plugins(/|\Z)"), "plugins are not allowed on this endpoint"),
    (re.compile(r"^/images/(load|get)\Z|^/images/[^/].*/get\Z"), "image load and save are not allowed on this endpoint (root loads images on the host)"),
    (re.compile(r"^/commit\Z"), "commit is not allowed on this endpoint"),
    (re.compile(r"^/containers/[^/]+/update\Z"), "container update is not allowed on this endpoint (limits are fixed at create)"),
    (re.compile(r"^/containers/[^/]+/(archive|export)\Z"), "copying files in or out of containers is not allowed on this endpoint"),
)


@dataclass(frozen=True)
class PeerIdentity:
    name: str
    serials: tuple[int, ...] = field(default_factory=tuple)


def identity(request: Mapping[str, Any]) -> PeerIdentity | None:
    """The client, or None for the local socket (root on the host).

    Fails closed: only a request with no user, no authentication method and
    no peer certificate (what dockerd sends for its unix socket) is the
    local socket; anything else is a remote client, which must have come
    over TLS with a certificate the policy can read."""
    name = request.get("User")
    certs = request.get("RequestPeerCertificates")
    method = request.get("UserAuthNMethod")
    if not name and not certs and not method:
        return None
    if method != "TLS" or not isinstance(name, str) or not name:
        raise Refused("a remote request without a client certificate's name over TLS is refused")
    if not isinstance(certs, list) or not certs:
        raise Refused("a remote request without its peer certificate is refused (nothing to check revocation on)")
    serials = []
    for cert in certs:
        serial = certificate_serial(cert)
        if serial is None:
            raise Refused("the client certificate could not be read")
        serials.append(serial)
    return PeerIdentity(name=name, serials=tuple(serials))


def decide(
    request: Mapping[str, Any], config: PolicyConfig, draining: bool = False, lookups: Lookups | None = None
) -> Decision:
    """Allow or refuse one AuthZ request (the plugin's only decision).
    `lookups` answers the ownership rules' questions (the plugin asks
    dockerd on the local socket); without it those requests are refused."""
    try:
        return _decide(request, config, draining, lookups)
    except Refused as err:
        return refuse(str(err))
    except Exception as err:  # a bug in a rule must refuse, never allow
        return refuse(f"internal policy error ({type(err).__name__}); the request is refused")


def _decide(request: Mapping[str, Any], config: PolicyConfig, draining: bool, lookups: Lookups | None) -> Decision:
    if not isinstance(request, Mapping):
        raise Refused("malformed authorization request")
    who = identity(request)
    if who is None:
        return ALLOW
    if who.name in config.revoked_names:
        raise Refused(f"the client certificate {who.name!r} is revoked on this endpoint")
    revoked = [s for s in who.serials[:1] if s in config.revoked_serials]
    if revoked:
        raise Refused(f"the client certificate with serial {revoked[0]:x} is revoked on this endpoint")
    method = request.get("RequestMethod")
    uri = request.get("RequestUri")
    if not isinstance(method, str) or not isinstance(uri, str):
        raise Refused("malformed authorization request (no method or URI)")
    headers = request.get("RequestHeaders") or {}
    if not isinstance(headers, Mapping):
        raise Refused("malformed authorization request (RequestHeaders)")
    call = dataclasses.replace(
        parse_call(method, uri, request_body(request)), user=who.name, headers=headers, lookups=lookups
    )
    for route in ROUTES:
        if route.method == call.method and route.pattern.fullmatch(call.path):
            if route.creates and draining:
                raise Refused(
                    "this host is draining: new containers are not accepted here; running ones "
                    "keep running (use another host of the endpoint)"
                )
            if route.check is not None:
                route.check(call, config)
            return ALLOW
    for pattern, rule in _NAMED_REFUSALS:
        if pattern.search(call.path):
            raise Refused(rule)
    raise Refused(f"{call.method} {_short(call.path)} is not allowed on this endpoint")


def request_body(request: Mapping[str, Any]) -> bytes | None:
    body = request.get("RequestBody")
    if body is None:
        return None
    if not isinstance(body, str):
        raise Refused("malformed authorization request (RequestBody)")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise Refused("malformed authorization request (RequestBody is not base64)") from None


# ---------------------------------------------------------------- certificates

def certificate_serial(encoded: Any) -> int | None:
    """The serial number of one entry of RequestPeerCertificates (base64 of
    a PEM certificate, as dockerd marshals it), or None if unreadable."""
    if not isinstance(encoded, str):
        return None
    try:
        pem = base64.b64decode(encoded, validate=True).decode("ascii")
        lines = [ln.strip() for ln in pem.strip().splitlines()]
        if lines[0] != "-----BEGIN CERTIFICATE-----" or lines[-1] != "-----END CERTIFICATE-----":
            return None
        der = base64.b64decode("".join(lines[1:-1]), validate=True)
        cert, _ = _der_item(der, 0, 0x30)
        tbs, _ = _der_item(cert, 0, 0x30)
        pos = 0
        if tbs[:1] == b"\xa0":  # [0] EXPLICIT version
            _, pos = _der_item(tbs, 0, 0xA0)
        serial, _ = _der_item(tbs, pos, 0x02)
        return int.from_bytes(serial, "big", signed=True)
    except (binascii.Error, ValueError, IndexError, UnicodeDecodeError):
        return None


def _der_item(data: bytes, pos: int, tag: int) -> tuple[bytes, int]:
    """The content of the DER item with `tag` at `pos`, and the position after it."""
    if data[pos] != tag:
        raise ValueError(f"expected DER tag {tag:#x}")
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4:
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return data[pos : pos + length], pos + length


# ---------------------------------------------------------------- configuration

def load_config(data: Mapping[str, Any]) -> PolicyConfig:
    """The plugin's configuration file (written by the configure step)."""
    limits = data["limits"]
    serials = frozenset(int(str(s).replace(":", ""), 16) for s in data.get("revokedSerials", []))
    return PolicyConfig(
        sandbox_runtimes=tuple(str(r) for r in data["sandboxRuntimes"]),
        limits=Limits(
            max_memory_bytes=int(limits["maxMemoryMiB"]) * 1024 * 1024,
            max_pids=int(limits["maxPids"]),
            max_nano_cpus=int(limits["maxMilliCpus"]) * 1_000_000,
        ),
        revoked_serials=serials,
        revoked_names=frozenset(str(n) for n in data.get("revokedNames", [])),
        registries=load_registries(data.get("registries", DEFAULT_REGISTRIES)),
    )


_REGISTRY = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?::[0-9]{1,5})?")


def load_registries(entries: Any) -> tuple[str, ...]:
    """The configuration's `registries`: host names (with a port if the
    registry needs one), lower case; none on the host's loopback or a
    private, link-local or CGNAT address."""
    if not isinstance(entries, (list, tuple)):
        raise ValueError("registries: expected a list of registry hosts")
    out = []
    for entry in entries:
        if not isinstance(entry, str) or not _REGISTRY.fullmatch(entry):
            raise ValueError(f"registries: {entry!r} is not a lower-case registry host[:port]")
        reason = local_registry_reason(entry)
        if reason:
            raise ValueError(f"registries: {entry!r} is {reason}; the endpoint never pulls from one")
        out.append(entry)
    return tuple(out)
