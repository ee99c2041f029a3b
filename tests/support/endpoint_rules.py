"""Every rule the endpoint's reader enforces, each as a way to break a valid document.

`components.endpoint.read_endpoint` (and `read_endpoint_host`, which it runs
for each host) is the consumer side of the contract. This table is what the
tests of the other sides are driven from: the program's builders
(`build_endpoint`, `build_endpoint_host`) and `tools.publish_endpoint` must
refuse what the reader refuses. `tests/unit/test_endpoint_rules.py` checks
that the table reaches every refusal in the reader's code, so a new rule in
the reader without a row here fails a test.

A rule the builders cannot break, because they write that part themselves
(the schema, the document being an object, a host's `dockerHost`), says so
in `fixed_by_*` and gives a check of what the builder writes instead.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from components.endpoint import ENDPOINT_SCHEMA, EndpointHostFacts, build_endpoint, build_endpoint_host
from tests.support.program import passing_report


def _test_ca_pem() -> str:
    """A real self-signed CA certificate (the builders read its expiry), valid 2026-2036."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "functions-runtime test endpoint CA")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2036, 1, 1, tzinfo=dt.UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


CA_PEM = _test_ca_pem()
CA_NOT_AFTER = "2036-01-01T00:00:00Z"
KEY_PEM = "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n"
HOST = "cloud-1"
FACTS = EndpointHostFacts(
    name=HOST, source="hcloud", private_address="10.0.1.5", public_address="203.0.113.5",
    ssh_host_key="ssh-ed25519 AAAA", port=2376,
)


def valid_document() -> dict[str, Any]:
    """A `sandbox` stack's runtimeEndpoint with one gVisor host, built by the program's builders."""
    entry = build_endpoint_host(FACTS, json.loads(passing_report(HOST)), "sandbox")
    return build_endpoint(CA_PEM, "sandbox", [entry])


def host_inputs(entry: Mapping[str, Any]) -> tuple[EndpointHostFacts, dict[str, Any]]:
    """The (facts, verify report) `build_endpoint_host` turns into `entry`: its inverse."""
    address, port = entry["dockerHost"].removeprefix("tcp://").rsplit(":", 1)
    facts = EndpointHostFacts(
        name=entry["name"],
        source=entry["source"],
        private_address=entry["privateAddress"],
        public_address=entry["publicAddress"],
        ssh_host_key=entry["sshHostKey"],
        port=int(port),
    )
    report = {
        "defaultRuntime": entry["defaultRuntime"],
        "runtimes": copy.deepcopy(entry["runtimes"]),
        "versions": dict(entry["versions"]),
        "hostKernel": entry["hostKernel"],
    }
    return facts, report


@dataclass(frozen=True)
class Rule:
    id: str
    # Takes a copy of valid_document() and returns it broken in one way.
    breaks: Callable[[dict[str, Any]], Any]
    # A part of the reader's message.
    message: str
    # Whether the reader refuses the entry of hosts[0] (else the document).
    host_level: bool = False
    # Why build_endpoint's inputs (CA, isolation, host entries) cannot carry
    # this break; "" when they can.
    fixed_by_build_endpoint: str = ""
    # The same for build_endpoint_host's (facts, report, isolation); only
    # host-level rules concern it.
    fixed_by_build_endpoint_host: str = ""
    # For a fixed rule: what the builders write instead, checked on
    # valid_document() (which they built).
    builder_writes: Callable[[dict[str, Any]], bool] | None = None

    def broken(self) -> Any:
        return self.breaks(copy.deepcopy(valid_document()))


def _set(**fields: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def breaks(doc: dict[str, Any]) -> dict[str, Any]:
        doc.update(fields)
        return doc

    return breaks


def _set_host(**fields: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def breaks(doc: dict[str, Any]) -> dict[str, Any]:
        doc["hosts"][0].update(fields)
        return doc

    return breaks


def _set_runtime(**fields: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def breaks(doc: dict[str, Any]) -> dict[str, Any]:
        doc["hosts"][0]["runtimes"][0].update(fields)
        return doc

    return breaks


def _key_in_versions(doc: dict[str, Any]) -> dict[str, Any]:
    doc["hosts"][0]["versions"]["note"] = KEY_PEM
    return doc


RULES: tuple[Rule, ...] = (
    # ---- the document
    Rule(
        "document-not-an-object", lambda doc: [doc], "runtimeEndpoint: expected an object",
        fixed_by_build_endpoint="build_endpoint returns a dict",
        builder_writes=lambda doc: isinstance(doc, dict),
    ),
    Rule(
        "schema", _set(schema="functions-runtime/endpoint@2"), "another contract version",
        fixed_by_build_endpoint="build_endpoint writes ENDPOINT_SCHEMA itself",
        builder_writes=lambda doc: doc["schema"] == ENDPOINT_SCHEMA,
    ),
    Rule("ca-not-text", _set(caCertPem=None), "caCertPem: expected str"),
    Rule("ca-not-pem", _set(caCertPem="nope"), "caCertPem: not a PEM certificate"),
    Rule("key-beside-the-ca", _set(caCertPem=CA_PEM + KEY_PEM), "runtimeEndpoint: holds a private key"),
    Rule("isolation-not-text", _set(isolation=None), "isolation: expected str"),
    Rule("isolation-unknown", _set(isolation="microvm"), "'microvm' is not one of"),
    Rule(
        "hosts-not-a-list", lambda doc: _set(hosts={h["name"]: h for h in doc["hosts"]})(doc),
        "hosts: expected list",
        fixed_by_build_endpoint="build_endpoint writes the hosts as a list",
        builder_writes=lambda doc: isinstance(doc["hosts"], list),
    ),
    Rule("no-hosts", _set(hosts=[]), "hosts: no verified host"),
    Rule(
        "ca-expiry-not-a-time", _set(caNotAfter="2036-01-01"), "caNotAfter: expected a UTC time",
        fixed_by_build_endpoint="build_endpoint reads it from the CA certificate",
        builder_writes=lambda doc: doc["caNotAfter"] == CA_NOT_AFTER,
    ),
    Rule(
        "client-expiry-not-a-time", _set(clientCertificateNotAfter=1767225600),
        "clientCertificateNotAfter: expected a UTC time",
        fixed_by_build_endpoint="build_endpoint reads it from the client certificate",
        builder_writes=lambda doc: doc.get("clientCertificateNotAfter") is None,
    ),
    # ---- a host's entry
    Rule(
        "host-not-an-object", lambda doc: _set(hosts=[HOST])(doc), "hosts[0]: expected an object",
        host_level=True,
        fixed_by_build_endpoint_host="build_endpoint_host returns a dict",
        builder_writes=lambda doc: isinstance(doc["hosts"][0], dict),
    ),
    Rule("key-in-a-host", _key_in_versions, "holds a private key", host_level=True),
    Rule(
        "docker-host-not-text", _set_host(dockerHost=None), "dockerHost: expected str", host_level=True,
        fixed_by_build_endpoint_host="build_endpoint_host writes tcp://<privateAddress>:<port>",
        builder_writes=lambda doc: doc["hosts"][0]["dockerHost"] == "tcp://10.0.1.5:2376",
    ),
    Rule(
        "docker-host-not-tcp", _set_host(dockerHost="10.0.1.5:2376"), "expected tcp://address:port",
        host_level=True,
        fixed_by_build_endpoint_host="build_endpoint_host writes tcp://<privateAddress>:<port>",
        builder_writes=lambda doc: doc["hosts"][0]["dockerHost"].startswith("tcp://"),
    ),
    Rule("source-not-text", _set_host(source=None), "source: expected str", host_level=True),
    Rule(
        "server-expiry-not-a-time", _set_host(serverCertificateNotAfter="next year"),
        "serverCertificateNotAfter: expected a UTC time", host_level=True,
        fixed_by_build_endpoint_host="build_endpoint_host reads it from the server certificate",
        builder_writes=lambda doc: doc["hosts"][0]["serverCertificateNotAfter"] is None,
    ),
    Rule("source-unknown", _set_host(source="aws"), "'aws' is not one of", host_level=True),
    Rule(
        "runtimes-not-a-list", lambda doc: _set_host(runtimes={"runsc": doc["hosts"][0]["runtimes"][0]})(doc),
        "runtimes: expected list", host_level=True,
        fixed_by_build_endpoint_host="build_endpoint_host writes the runtimes as a list",
        builder_writes=lambda doc: isinstance(doc["hosts"][0]["runtimes"], list),
    ),
    Rule(
        "runtime-not-an-object", _set_host(runtimes=["runsc"]), "runtimes[0]: expected an object",
        host_level=True,
        fixed_by_build_endpoint_host="build_endpoint_host writes each runtime as a dict",
        builder_writes=lambda doc: all(isinstance(rt, dict) for rt in doc["hosts"][0]["runtimes"]),
    ),
    Rule("runtime-isolation-not-text", _set_runtime(isolation=None), "isolation: expected str", host_level=True),
    Rule(
        "runtime-isolation-unknown", _set_runtime(isolation="container"),
        "'container' does not meet the stack's 'sandbox'", host_level=True,
    ),
    Rule(
        "vm-stack-with-a-sandbox-runtime", _set(isolation="vm"),
        "runtimes[0].isolation: 'sandbox' does not meet the stack's 'vm'", host_level=True,
    ),
    Rule(
        "runtime-network-unknown", _set_runtime(network="bridge"),
        "network: 'bridge' is not a network of a 'sandbox' runtime", host_level=True,
    ),
    Rule(
        "runtime-network-of-another-isolation", _set_runtime(network="vm"),
        "network: 'vm' is not a network of a 'sandbox' runtime", host_level=True,
    ),
    Rule(
        "runtime-user-network-dns-not-a-boolean", _set_runtime(userNetworkDns="yes"),
        "userNetworkDns: expected true, false or null", host_level=True,
    ),
    Rule("runtime-name-not-text", _set_runtime(name=7), "name: expected str", host_level=True),
    Rule("no-runtimes", _set_host(runtimes=[]), "runtimes: no verified runtime", host_level=True),
    Rule("default-runtime-not-text", _set_host(defaultRuntime=None), "defaultRuntime: expected str", host_level=True),
    Rule(
        "default-runtime-not-verified", _set_host(defaultRuntime="runc"), "'runc' is not a verified runtime",
        host_level=True,
    ),
    Rule("name-not-text", _set_host(name=None), "name: expected str", host_level=True),
    Rule("private-address-not-text", _set_host(privateAddress=None), "privateAddress: expected str", host_level=True),
    Rule("public-address-not-text", _set_host(publicAddress=None), "publicAddress: expected str", host_level=True),
)
