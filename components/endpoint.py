"""The endpoint contract, both sides of it.

Producer side: turn each host's verify report into the `runtimeEndpoint`
document, refusing any host whose report did not pass, and any entry or
document the consumer side's reader would refuse (the producer runs that
reader before anything is exported). Consumer side: read
the two stack outputs back (from a `StackReference` or from
`pulumi stack output --json --show-secrets`), validate them, and open a
docker-py client to a host.

`runtimeEndpoint` is not secret (addresses, CA certificate, host keys);
`runtimeClientTls` is (the consumers' client key).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from components.contract import (
    AUTHZ_OWNER_LABEL,
    DOCKERD_METRICS_PORT,
    ENDPOINT_SCHEMA,
    ISOLATION_NETWORKS,
    ISOLATIONS,
    NETWORK_HOST,
    NODE_EXPORTER_PORT,
    VERIFY_SCHEMA,
)
from host_verify.report import PolicyLimits, report_problems

CLIENT_TLS_SCHEMA = "functions-runtime/client-tls@1"
DOCKER_API_VERSION = "1.45"
SOURCES = ("hcloud", "dedicated")


def url_host(address: str) -> str:
    """An address as a URL's host: IPv6 in brackets (the verify script's
    `endpoint_host` does the same on the host)."""
    return f"[{address}]" if isinstance(address, str) and ":" in address else address


def metrics_url(address: str, port: int = NODE_EXPORTER_PORT) -> str:
    """Where a host's node exporter answers (its canary's result among its
    gauges), or with DOCKERD_METRICS_PORT dockerd's own metrics."""
    return f"http://{url_host(address)}:{port}/metrics"


def docker_host_url(address: str, port: int) -> str:
    return f"tcp://{url_host(address)}:{port}"


class VerificationFailed(Exception):
    """A host's verify step did not pass; the update must stop."""

    def __init__(self, host: str, check: str, reason: str) -> None:
        self.host, self.check, self.reason = host, check, reason
        super().__init__(f"host {host}: verification failed at {check!r}: {reason}")


class EndpointError(ValueError):
    """A runtimeEndpoint or runtimeClientTls document does not fit the contract."""


class EndpointRefused(Exception):
    """The program built an endpoint document its own reader refuses; the update must stop.

    `host` names the host whose entry is refused (None for a problem of the
    document as a whole); `problem` is the reader's message. Not a ValueError
    (as EndpointError is): Pulumi's SDK rewraps a ValueError raised in an
    exported output as a generic "While processing input" ValueError.
    """

    def __init__(self, host: str | None, problem: str) -> None:
        self.host, self.problem = host, problem
        subject = f"host {host}" if host is not None else "runtimeEndpoint"
        super().__init__(f"{subject}: not exported, the endpoint's own reader refuses it: {problem}")


# ---------------------------------------------------------------- producer


def parse_verify_report(host: str, stdout: str, host_network_allowed: bool = False) -> dict[str, Any]:
    """The verify script's JSON, or VerificationFailed naming host and check.

    `host_network_allowed` is the stack's gvisor.allowHostNetworkStack: a
    runtime on the host kernel's network stack (`host`) is refused without
    it, whatever the host's script decided.
    """
    try:
        report = json.loads(stdout)
    except (TypeError, json.JSONDecodeError) as err:
        first = (stdout or "").strip().splitlines()[:1]
        raise VerificationFailed(
            host, "report", f"verify printed no JSON report ({err}); first line: {first}"
        ) from err
    if not isinstance(report, dict) or report.get("schema") != VERIFY_SCHEMA:
        raise VerificationFailed(host, "report", f"expected a {VERIFY_SCHEMA} document")
    if report.get("host") != host:
        raise VerificationFailed(
            host, "report", f"the report is for host {report.get('host')!r}, not {host!r}"
        )
    if report.get("passed") is not True:
        raise VerificationFailed(
            host,
            str(report.get("failedCheck") or "unknown"),
            str(report.get("reason") or "the report says it did not pass"),
        )
    # The report's fields and types: host_verify/report.py, the one schema
    # the host's verification builds its report from.
    problems = report_problems(report, VERIFY_SCHEMA)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise VerificationFailed(host, "report", f"the report does not fit {VERIFY_SCHEMA}: {'; '.join(problems[:3])}{more}")
    runtimes = report.get("runtimes")
    if not isinstance(runtimes, list) or not runtimes:
        raise VerificationFailed(host, "runtimes", "the report lists no verified runtime")
    for rt in runtimes:
        if not isinstance(rt, dict) or rt.get("isolation") not in ISOLATIONS:
            raise VerificationFailed(host, "runtimes", f"malformed runtime entry {rt!r}")
        if rt.get("guestKernel") == report.get("hostKernel"):
            raise VerificationFailed(
                host, "kernel-differs", f"runtime {rt.get('name')} shares the host kernel"
            )
        networks = ISOLATION_NETWORKS[rt["isolation"]]
        if rt.get("network") not in networks:
            raise VerificationFailed(
                host,
                "runtimes",
                f"runtime {rt.get('name')} reports network {rt.get('network')!r}; a {rt['isolation']!r} "
                f"runtime's network is one of {', '.join(networks)}",
            )
        if rt["network"] == NETWORK_HOST and not host_network_allowed:
            raise VerificationFailed(
                host,
                f"runtime-{rt.get('name')}-network",
                f"runtime {rt.get('name')} runs on the host kernel's network stack (runsc --network=host), "
                "which functions-runtime:gvisor.allowHostNetworkStack does not allow; re-run configure, or "
                "set it to true to accept that",
            )
    if report.get("defaultRuntime") not in {rt["name"] for rt in runtimes}:
        raise VerificationFailed(
            host, "default-runtime", "Docker's default runtime is not a verified runtime"
        )
    return report


@dataclass(frozen=True)
class EndpointHostFacts:
    """What the program knows of a host besides its verify report."""

    name: str
    source: str
    private_address: str
    public_address: str
    ssh_host_key: str | None
    port: int
    # The endpoint's server certificate (public): its expiry goes in the entry.
    server_cert_pem: str | None = None


def certificate_not_after(pem: str, where: str) -> str:
    """A PEM certificate's last valid moment, RFC 3339 in UTC (what the
    endpoint document says, so a consumer or an alert needs no X.509 parser),
    or EndpointError naming `where` when X.509 cannot read it."""
    try:
        if not isinstance(pem, str):
            raise ValueError
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        raise EndpointError(f"{where}: not a certificate X.509 can read") from None
    return cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def _read_not_after(raw: Any, where: str) -> dt.datetime | None:
    if raw is None:
        return None
    try:
        if not isinstance(raw, str) or not raw.endswith("Z"):
            raise ValueError
        return dt.datetime.strptime(raw, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise EndpointError(f"{where}: expected a UTC time like 2028-12-04T10:00:00Z, got {raw!r}") from None


def build_endpoint_host(facts: EndpointHostFacts, report: Mapping[str, Any], isolation: str) -> dict[str, Any]:
    """A host's entry in `runtimeEndpoint`, or EndpointRefused naming the host.

    `isolation` is the stack's (`vm` | `sandbox`): the entry is checked by the
    consumer's own per-host reader against it, so a `vm` stack never lists a
    host whose runtimes are not all `vm`.
    """
    entry = {
        "name": facts.name,
        "source": facts.source,
        "dockerHost": docker_host_url(facts.private_address, facts.port),
        "privateAddress": facts.private_address,
        "publicAddress": facts.public_address,
        "sshHostKey": facts.ssh_host_key,
        "defaultRuntime": report["defaultRuntime"],
        "runtimes": [
            {
                "name": rt["name"],
                "shim": rt.get("shim"),
                "isolation": rt["isolation"],
                # Additive in endpoint@1: vm | sandbox | host (components/contract.py).
                "network": rt.get("network"),
                "hypervisor": rt.get("hypervisor"),
                "guestKernel": rt.get("guestKernel"),
                "coldStartMs": rt.get("coldStartMs"),
                # Additive in endpoint@1: whether a container reached a peer by
                # name through Docker's embedded DNS on a user network.
                "userNetworkDns": rt.get("userNetworkDns"),
            }
            for rt in report["runtimes"]
        ],
        "versions": dict(report.get("versions") or {}),
        "hostKernel": report.get("hostKernel"),
        # Additive in endpoint@1: when this host's server certificate expires
        # (a `pulumi up` in its last 30 days re-issues it; docs/certificates.md).
        "serverCertificateNotAfter": None,
        # Additive in endpoint@1: the node exporter, with the canary's result
        # (components/host_health.py reads it; docs/operations.md).
        "metricsUrl": metrics_url(facts.private_address),
        "dockerdMetricsUrl": metrics_url(facts.private_address, DOCKERD_METRICS_PORT),
    }
    if facts.server_cert_pem is not None:
        try:
            entry["serverCertificateNotAfter"] = certificate_not_after(facts.server_cert_pem, "the endpoint's server certificate")
        except EndpointError as err:
            raise EndpointRefused(facts.name, str(err)) from None
    _refuse_unreadable_host(entry, isolation, facts.name, f"runtimeEndpoint.hosts[{facts.name!r}]")
    return entry


def limits_document(max_memory_mib: int, max_pids: int, max_millicpus: int) -> dict[str, Any]:
    """The endpoint document's `limits`, in the consumers' units."""
    cpus = max_millicpus / 1000
    return {"maxMemoryMiB": max_memory_mib, "maxPids": max_pids, "maxCpus": int(cpus) if cpus.is_integer() else cpus}


def verified_limits(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The endpoint document's `limits`: what every host's verification proved
    its endpoint policy enforces (host_verify's `policy-limits` check), or
    EndpointRefused naming the hosts when they disagree. None without hosts."""
    by_limits: dict[PolicyLimits, list[str]] = {}
    for report in reports:
        raw = report.get("limits")
        if not isinstance(raw, Mapping):
            raise EndpointRefused(str(report.get("host")), "its verify report proves no endpoint policy limits")
        by_limits.setdefault(PolicyLimits.from_json(raw), []).append(str(report.get("host")))
    if len(by_limits) > 1:
        sides = "; ".join(
            f"{', '.join(sorted(hosts))}: {lim.max_memory_mib} MiB, {lim.max_pids} PIDs, {lim.max_millicpus} millicpus"
            for lim, hosts in sorted(by_limits.items(), key=lambda kv: sorted(kv[1]))
        )
        raise EndpointRefused(None, f"the hosts' endpoint policies enforce different limits ({sides}); re-run "
                              "configure on every host so they agree")
    if not by_limits:
        return None
    (lim,) = by_limits
    return limits_document(lim.max_memory_mib, lim.max_pids, lim.max_millicpus)


def build_endpoint(
    ca_cert_pem: str,
    isolation: str,
    hosts: Sequence[Mapping[str, Any]],
    limits: Mapping[str, Any] | None = None,
    client_cert_pem: str | None = None,
) -> dict[str, Any]:
    """The `runtimeEndpoint` document from verified hosts only.

    Checked by the consumer's reader before it is returned: each host's entry
    first (so the error names the host), then the whole document. Raises
    EndpointRefused; nothing the reader refuses is ever exported.
    """
    for i, h in enumerate(hosts):
        name = h.get("name") if isinstance(h, Mapping) else None
        if isinstance(name, str):
            _refuse_unreadable_host(h, isolation, name, f"runtimeEndpoint.hosts[{name!r}]")
        else:
            _refuse_unreadable_host(h, isolation, f"#{i}", f"runtimeEndpoint.hosts[{i}]")
    defaults = {h["defaultRuntime"] for h in hosts}
    doc = {
        "schema": ENDPOINT_SCHEMA,
        "isolation": isolation,
        "caCertPem": ca_cert_pem,
        # One value when every host agrees (the usual case); otherwise each
        # host's own `defaultRuntime` applies.
        "defaultRuntime": defaults.pop() if len(defaults) == 1 else None,
        "hosts": sorted((dict(h) for h in hosts), key=lambda h: h["name"]),
    }
    if limits is not None:
        # What the endpoint policy lets one container ask for (docs/endpoint-policy.md).
        doc["limits"] = dict(limits)
    # Additive in endpoint@1: when the stack CA and the consumers' client
    # certificate expire (docs/certificates.md); each host says its own.
    # Written before the reader's one pass, so it checks them as well. A
    # certificate X.509 cannot read is refused only once the reader has
    # passed: a CA that is not text, or not PEM, gets the reader's message.
    unreadable: EndpointError | None = None
    expiries = [("caNotAfter", ca_cert_pem, "runtimeEndpoint.caCertPem")]
    if client_cert_pem is not None:
        expiries.append(("clientCertificateNotAfter", client_cert_pem, "runtimeClientTls.certPem"))
    for key, pem, where in expiries:
        try:
            doc[key] = certificate_not_after(pem, where)
        except EndpointError as err:
            unreadable = unreadable or err
    try:
        read_endpoint(doc)
        if unreadable is not None:
            raise unreadable
    except EndpointError as err:
        raise EndpointRefused(None, str(err)) from None
    return doc


def _refuse_unreadable_host(entry: Any, isolation: str, host: str, where: str) -> None:
    try:
        read_endpoint_host(entry, isolation, where)
    except EndpointError as err:
        raise EndpointRefused(host, str(err)) from None


def build_client_tls(ca_cert_pem: str, cert_pem: str, key_pem: str) -> dict[str, Any]:
    return {
        "schema": CLIENT_TLS_SCHEMA,
        "caCertPem": ca_cert_pem,
        "certPem": cert_pem,
        "keyPem": key_pem,
    }


# ---------------------------------------------------------------- consumer


@dataclass(frozen=True)
class RuntimeInfo:
    name: str
    isolation: str
    shim: str | None
    hypervisor: str | None
    guest_kernel: str | None
    cold_start_ms: Mapping[str, Any] | None
    # The network stack its containers' socket calls reach: `vm` (Kata's
    # guest kernel), `sandbox` (gVisor's own netstack) or `host` (runsc
    # --network=host: the host kernel's, accepted by the stack's
    # gvisor.allowHostNetworkStack). None in documents from before it.
    network: str | None = None
    # Whether verify's container resolved its peer's name on a user network
    # (Docker's embedded DNS); None in documents from before it.
    user_network_dns: bool | None = None


@dataclass(frozen=True)
class EndpointHost:
    name: str
    source: str
    docker_host: str
    private_address: str
    public_address: str
    ssh_host_key: str | None
    default_runtime: str
    runtimes: tuple[RuntimeInfo, ...]
    versions: Mapping[str, Any] = field(default_factory=dict)
    host_kernel: str | None = None
    # None in documents from before it.
    server_certificate_not_after: dt.datetime | None = None
    # The node exporter's URL (the canary's result) and dockerd's metrics; None
    # in documents from before them.
    metrics_url: str | None = None
    dockerd_metrics_url: str | None = None


@dataclass(frozen=True)
class FunctionLimits:
    """The most one container may ask for through the endpoint; its policy
    refuses a create without memory, PID and CPU limits, or above these."""

    max_memory_mib: int
    max_pids: int
    max_cpus: float

    def docker_py(self) -> dict[str, Any]:
        """docker-py `containers.run` arguments for the largest container allowed."""
        return {
            "mem_limit": f"{self.max_memory_mib}m",
            "pids_limit": self.max_pids,
            "nano_cpus": round(self.max_cpus * 1_000_000_000),
        }


@dataclass(frozen=True)
class RuntimeEndpoint:
    isolation: str
    ca_cert_pem: str
    default_runtime: str | None
    hosts: tuple[EndpointHost, ...]
    # Absent in documents from before the endpoint policy (an additive field).
    limits: FunctionLimits | None = None
    # Absent in documents from before them.
    ca_not_after: dt.datetime | None = None
    client_certificate_not_after: dt.datetime | None = None

    def host(self, name: str | None = None) -> EndpointHost:
        if name is None:
            return self.hosts[0]
        for h in self.hosts:
            if h.name == name:
                return h
        raise EndpointError(f"no host {name!r} in the endpoint; hosts: {[h.name for h in self.hosts]}")


@dataclass(frozen=True)
class ClientTls:
    ca_cert_pem: str
    cert_pem: str
    key_pem: str = field(repr=False)

    @property
    def owner_labels(self) -> dict[str, str]:
        """The label every container and volume created with this certificate
        carries: the endpoint policy lets it act only on what has its own
        common name (docs/endpoint-policy.md)."""
        try:
            cert = x509.load_pem_x509_certificate(self.cert_pem.encode())
        except ValueError as err:
            raise EndpointError(f"runtimeClientTls.certPem: not a PEM certificate ({err})") from None
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not names:
            raise EndpointError("runtimeClientTls.certPem: the client certificate has no common name")
        return {AUTHZ_OWNER_LABEL: str(names[0].value)}


def _require(doc: Mapping[str, Any], name: str, kind: type, where: str) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind):
        raise EndpointError(f"{where}.{name}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _refuse_private_keys(value: Any, where: str) -> None:
    if "PRIVATE KEY" in json.dumps(value):
        raise EndpointError(f"{where}: holds a private key; it must never be published")


def read_endpoint(doc: Any) -> RuntimeEndpoint:
    """Validate a `runtimeEndpoint` document (a dict or its JSON text)."""
    if isinstance(doc, str):
        doc = json.loads(doc)
    if not isinstance(doc, Mapping):
        raise EndpointError("runtimeEndpoint: expected an object")
    if doc.get("schema") != ENDPOINT_SCHEMA:
        raise EndpointError(
            f"runtimeEndpoint.schema: expected {ENDPOINT_SCHEMA!r}, got {doc.get('schema')!r}; "
            "the producing stack is of another contract version"
        )
    ca = _require(doc, "caCertPem", str, "runtimeEndpoint")
    if "BEGIN CERTIFICATE" not in ca:
        raise EndpointError("runtimeEndpoint.caCertPem: not a PEM certificate")
    # The hosts are checked one by one below, so a key there is named by host.
    _refuse_private_keys({k: v for k, v in doc.items() if k != "hosts"}, "runtimeEndpoint")
    isolation = _require(doc, "isolation", str, "runtimeEndpoint")
    if isolation not in ISOLATIONS:
        raise EndpointError(f"runtimeEndpoint.isolation: {isolation!r} is not one of {ISOLATIONS}")
    hosts_raw = _require(doc, "hosts", list, "runtimeEndpoint")
    if not hosts_raw:
        raise EndpointError("runtimeEndpoint.hosts: no verified host")
    hosts = tuple(
        read_endpoint_host(h, isolation, f"runtimeEndpoint.hosts[{i}]") for i, h in enumerate(hosts_raw)
    )
    return RuntimeEndpoint(
        isolation=isolation,
        ca_cert_pem=ca,
        default_runtime=doc.get("defaultRuntime"),
        hosts=hosts,
        limits=_read_limits(doc.get("limits")),
        ca_not_after=_read_not_after(doc.get("caNotAfter"), "runtimeEndpoint.caNotAfter"),
        client_certificate_not_after=_read_not_after(
            doc.get("clientCertificateNotAfter"), "runtimeEndpoint.clientCertificateNotAfter"
        ),
    )


def _read_limits(raw: Any) -> FunctionLimits | None:
    if raw is None:
        return None
    where = "runtimeEndpoint.limits"
    if not isinstance(raw, Mapping):
        raise EndpointError(f"{where}: expected an object")
    memory, pids, cpus = raw.get("maxMemoryMiB"), raw.get("maxPids"), raw.get("maxCpus")
    for name, value in (("maxMemoryMiB", memory), ("maxPids", pids), ("maxCpus", cpus)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise EndpointError(f"{where}.{name}: expected a positive number, got {value!r}")
    if not isinstance(memory, int) or not isinstance(pids, int):
        raise EndpointError(f"{where}: maxMemoryMiB and maxPids are whole numbers")
    return FunctionLimits(max_memory_mib=memory, max_pids=pids, max_cpus=float(cpus))


def read_endpoint_host(h: Any, isolation: str, where: str) -> EndpointHost:
    """Validate one host's entry against the stack's `isolation`; `where` prefixes errors.

    The reader runs it for each host; the producer runs it on each entry it
    builds, so both sides refuse the same entries.
    """
    if not isinstance(h, Mapping):
        raise EndpointError(f"{where}: expected an object")
    _refuse_private_keys(h, where)
    docker_host = _require(h, "dockerHost", str, where)
    if not docker_host.startswith("tcp://"):
        raise EndpointError(f"{where}.dockerHost: expected tcp://address:port")
    source = _require(h, "source", str, where)
    if source not in SOURCES:
        raise EndpointError(f"{where}.source: {source!r} is not one of {SOURCES}")
    runtimes = []
    for j, rt in enumerate(_require(h, "runtimes", list, where)):
        rwhere = f"{where}.runtimes[{j}]"
        if not isinstance(rt, Mapping):
            raise EndpointError(f"{rwhere}: expected an object")
        iso = _require(rt, "isolation", str, rwhere)
        if iso not in ISOLATIONS or (isolation == "vm" and iso != "vm"):
            raise EndpointError(f"{rwhere}.isolation: {iso!r} does not meet the stack's {isolation!r}")
        network = rt.get("network")
        if network is not None and network not in ISOLATION_NETWORKS[iso]:
            raise EndpointError(
                f"{rwhere}.network: {network!r} is not a network of a {iso!r} runtime; "
                f"expected one of {', '.join(ISOLATION_NETWORKS[iso])}"
            )
        dns = rt.get("userNetworkDns")
        if dns is not None and not isinstance(dns, bool):
            raise EndpointError(f"{rwhere}.userNetworkDns: expected true, false or null, got {dns!r}")
        runtimes.append(
            RuntimeInfo(
                name=_require(rt, "name", str, rwhere),
                isolation=iso,
                shim=rt.get("shim"),
                hypervisor=rt.get("hypervisor"),
                guest_kernel=rt.get("guestKernel"),
                cold_start_ms=rt.get("coldStartMs"),
                network=network,
                user_network_dns=dns,
            )
        )
    if not runtimes:
        raise EndpointError(f"{where}.runtimes: no verified runtime")
    default_runtime = _require(h, "defaultRuntime", str, where)
    if default_runtime not in {r.name for r in runtimes}:
        raise EndpointError(f"{where}.defaultRuntime: {default_runtime!r} is not a verified runtime")
    return EndpointHost(
        name=_require(h, "name", str, where),
        source=source,
        docker_host=docker_host,
        private_address=_require(h, "privateAddress", str, where),
        public_address=_require(h, "publicAddress", str, where),
        ssh_host_key=h.get("sshHostKey"),
        default_runtime=default_runtime,
        runtimes=tuple(runtimes),
        versions=dict(h.get("versions") or {}),
        host_kernel=h.get("hostKernel"),
        server_certificate_not_after=_read_not_after(
            h.get("serverCertificateNotAfter"), f"{where}.serverCertificateNotAfter"
        ),
        metrics_url=_read_metrics_url(h.get("metricsUrl"), f"{where}.metricsUrl"),
        dockerd_metrics_url=_read_metrics_url(h.get("dockerdMetricsUrl"), f"{where}.dockerdMetricsUrl"),
    )


def _read_metrics_url(raw: Any, where: str) -> str | None:
    if raw is not None and (not isinstance(raw, str) or not raw.startswith("http://")):
        raise EndpointError(f"{where}: expected http://address:port/metrics, got {raw!r}")
    return raw


def read_client_tls(doc: Any) -> ClientTls:
    """Validate a `runtimeClientTls` document (a dict or its JSON text)."""
    if isinstance(doc, str):
        doc = json.loads(doc)
    if not isinstance(doc, Mapping) or doc.get("schema") != CLIENT_TLS_SCHEMA:
        raise EndpointError(
            f"runtimeClientTls: expected a {CLIENT_TLS_SCHEMA} document; read it with "
            "`pulumi stack output --json --show-secrets` (it is a secret output)"
        )
    where = "runtimeClientTls"
    key = _require(doc, "keyPem", str, where)
    if key.startswith("[secret]") or "PRIVATE KEY" not in key:
        raise EndpointError(
            "runtimeClientTls.keyPem: the key is masked; pass --show-secrets to "
            "`pulumi stack output`"
        )
    return ClientTls(
        ca_cert_pem=_require(doc, "caCertPem", str, where),
        cert_pem=_require(doc, "certPem", str, where),
        key_pem=key,
    )


def read_stack_outputs(text: str) -> tuple[RuntimeEndpoint, ClientTls]:
    """Both documents from `pulumi stack output --json --show-secrets`."""
    outputs = json.loads(text)
    if "runtimeEndpoint" not in outputs:
        raise EndpointError("the stack has no runtimeEndpoint output; did `pulumi up` finish?")
    return read_endpoint(outputs["runtimeEndpoint"]), read_client_tls(outputs.get("runtimeClientTls"))


def from_stack_reference(ref: Any) -> Any:
    """`Output[tuple[RuntimeEndpoint, ClientTls]]` for a consumer stack."""
    import pulumi

    return pulumi.Output.all(
        ref.require_output("runtimeEndpoint"), ref.require_output("runtimeClientTls")
    ).apply(lambda docs: (read_endpoint(docs[0]), read_client_tls(docs[1])))


def docker_client(
    endpoint: RuntimeEndpoint,
    tls: ClientTls,
    host: str | None = None,
    base_url: str | None = None,
    timeout: int = 60,
    version: str = DOCKER_API_VERSION,
) -> Any:
    """A docker-py client for one verified host, over mutual TLS.

    `base_url` overrides the host's `dockerHost` (an SSH tunnel, the lab's
    port forward); the server certificate also names 127.0.0.1 for that.
    `version` is the Docker API version the client speaks: 1.45 is Docker
    26.1's (Debian 13), which newer daemons also accept. It is fixed rather
    than asked of the daemon so that no request leaves before the client is
    configured.
    The key is written to a private temporary directory that is removed
    when the client is garbage-collected or closed.
    """
    import shutil

    import docker

    target = endpoint.host(host)
    tmp = Path(tempfile.mkdtemp(prefix="functions-runtime-tls-"))
    os.chmod(tmp, 0o700)
    paths = {}
    for name, pem in (("ca.pem", endpoint.ca_cert_pem), ("cert.pem", tls.cert_pem), ("key.pem", tls.key_pem)):
        path = tmp / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(pem)
        paths[name] = str(path)
    tls_config = docker.tls.TLSConfig(
        client_cert=(paths["cert.pem"], paths["key.pem"]),
        ca_cert=paths["ca.pem"],
        verify=True,
    )
    url = (base_url or target.docker_host).replace("tcp://", "https://", 1)
    try:
        client = docker.DockerClient(base_url=url, tls=tls_config, timeout=timeout, version=version)
        # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (set on many
        # machines) override the session's CA file, which then fails every
        # call with "unable to get local issuer certificate". The endpoint
        # is on a private network: no environment CA bundle, no proxy.
        client.api.trust_env = False
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    weakref.finalize(client, shutil.rmtree, tmp, True)
    return client
