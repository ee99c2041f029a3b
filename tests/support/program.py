"""Run the real program (`__main__.py`) under Pulumi's mocks and record it.

What this proves: which resources the program registers, with which inputs,
parents, dependencies and secret markings, and what it exports, for a given
stack configuration. What it does not prove: anything a provider or a host
does. Hetzner is simulated (addresses derived from names); the TLS provider
is simulated with real, deterministic cryptography (keys derived from the
resource name, RFC 6979 ECDSA signatures, fixed validity dates), so the
certificates are valid for real TLS (the hostlab uses them with a real
dockerd) and two runs give identical bytes, as state does between runs.
Remote commands are not run: their stdout comes from `command_stdout`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import runpy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pulumi.runtime import mocks as pulumi_mocks

# The lab tool's, re-exported: one definition of what a secret looks like in mocks.
from tools.lab.program import is_secret as is_secret
from tools.lab.program import unwrap as unwrap

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MAIN = PROJECT_ROOT / "__main__.py"
PROJECT = "functions-runtime"
NOT_BEFORE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

_OPENSSH_CACHE: dict[str, str] = {}


def stand_in_ssh_key(name: str = "dedicated") -> str:
    """A real, unencrypted ed25519 private key in OpenSSH format, the same for one name.

    The settings parse dedicatedSshKey for real, so stand-ins must be keys.
    (OpenSSH's format has a random check number: one value per process.)
    """
    if f"stand-in:{name}" not in _OPENSSH_CACHE:
        key = ed25519.Ed25519PrivateKey.from_private_bytes(_seed(f"stand-in:{name}"))
        _OPENSSH_CACHE[f"stand-in:{name}"] = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ).decode()
    return _OPENSSH_CACHE[f"stand-in:{name}"]

CommandStdout = Callable[[str, Mapping[str, Any]], "str | None"]


@dataclass
class Registration:
    type: str
    name: str
    urn: str
    inputs: dict[str, Any]
    parent: str
    dependencies: list[str]
    custom: bool
    ignore_changes: list[str]
    # URNs this resource answers to besides its own (ResourceOptions.aliases).
    aliases: list[str] = field(default_factory=list)

    @property
    def plain(self) -> dict[str, Any]:
        return unwrap(self.inputs)

    def secret_inputs(self) -> set[str]:
        return {k for k, v in self.inputs.items() if is_secret(v)}


@dataclass
class ProgramRun:
    resources: list[Registration]
    outputs: dict[str, Any]
    output_secret: dict[str, bool]
    stack: str
    errors: list[BaseException] = field(default_factory=list)

    def of_type(self, typ: str) -> list[Registration]:
        return [r for r in self.resources if r.type == typ]

    def named(self, name: str) -> Registration:
        for r in self.resources:
            if r.name == name:
                return r
        raise KeyError(f"no resource named {name!r}; have {[r.name for r in self.resources]}")

    def by_urn(self) -> dict[str, Registration]:
        return {r.urn: r for r in self.resources}


def _type_locations(*names: str, unavailable: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return [
        {"name": n, "available": n not in unavailable, "isDeprecated": False, "deprecationAnnounced": "",
         "id": i, "recommended": True, "unavailableAfter": ""}
        for i, n in enumerate(names, start=1)
    ]


# The simulated Hetzner catalog the data sources read (getServerType, getLocation).
LOCATION_ZONES = {"eu-central": ("fsn1", "nbg1", "hel1"), "us-east": ("ash",), "us-west": ("hil",), "ap-southeast": ("sin",)}
SERVER_TYPES: dict[str, dict[str, Any]] = {
    "cx23": {"name": "cx23", "architecture": "x86", "locations": _type_locations("fsn1", "nbg1", "hel1")},
    "cpx31": {"name": "cpx31", "architecture": "x86", "locations": _type_locations("fsn1", "nbg1", "hel1", "ash", "hil", "sin")},
    "ccx13": {"name": "ccx13", "architecture": "x86", "locations": _type_locations("fsn1", "nbg1", unavailable=("nbg1",))},
    "cax11": {"name": "cax11", "architecture": "arm", "locations": _type_locations("fsn1", "nbg1", "hel1")},
    # An Arm type with an x86-looking name: only the lookup can tell.
    "cx99a": {"name": "cx99a", "architecture": "arm", "locations": _type_locations("fsn1")},
}


def _seed(name: str) -> bytes:
    return hashlib.sha256(f"functions-runtime-mock:{name}".encode()).digest()


class FleetMocks(pulumi.runtime.Mocks):
    """Stand-ins for hcloud, tls and command resources."""

    def __init__(
        self, command_stdout: CommandStdout | None, preview: bool, server_private_address: str | None = None
    ) -> None:
        self.command_stdout = command_stdout
        self.preview = preview
        self.server_private_address = server_private_address
        self.keys: dict[str, Any] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list]:
        self.calls.append((args.token, dict(args.args)))
        if args.token == "hcloud:index/getServerType:getServerType":
            found = SERVER_TYPES.get(args.args.get("name"))
            if found is None:
                return {}, [("name", f"no Server Type found with name {args.args.get('name')}")]
            return found, []
        if args.token == "hcloud:index/getLocation:getLocation":
            zone = next((z for z, locs in LOCATION_ZONES.items() if args.args.get("name") in locs), None)
            if zone is None:
                return {}, [("name", f"no Location found with name {args.args.get('name')}")]
            return {"name": args.args["name"], "networkZone": zone}, []
        return {}, []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        inputs = unwrap(args.inputs)
        outputs = dict(args.inputs)
        handler = getattr(self, "_" + args.typ.split(":")[-1], None)
        if handler is not None and args.typ.split(":")[0] in ("tls", "hcloud", "command"):
            outputs.update(handler(args.name, inputs))
        if args.typ.startswith("hcloud:"):
            # Hetzner ids are numbers; the program converts them with int().
            return str(int.from_bytes(_seed(args.name)[:3], "big")), outputs
        return f"{args.name}-id", outputs

    # ---- hcloud
    def _Server(self, name: str, inputs: dict) -> dict:
        n = _seed(name)[0] % 200 + 10
        return {
            "ipv4Address": f"203.0.113.{n}",
            "ipv6Address": f"2001:db8::{n:x}",
            "networks": [{"networkId": 1, "ip": self.server_private_address or f"10.0.1.{n}", "aliasIps": []}],
            "status": "running",
        }

    # ---- tls
    def _PrivateKey(self, name: str, inputs: dict) -> dict:
        if inputs.get("algorithm") == "ED25519":
            key: Any = ed25519.Ed25519PrivateKey.from_private_bytes(_seed(name))
            private_pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode()
        else:
            key = ec.derive_private_key(int.from_bytes(_seed(name), "big") % (2**255), ec.SECP256R1())
            private_pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            ).decode()
        self.keys[private_pem] = key
        # OpenSSH's format carries a random check number; state keeps the
        # first value, and so does this cache across runs of one process.
        openssh = _OPENSSH_CACHE.setdefault(
            name,
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
            ).decode(),
        )
        public_openssh = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ).decode()
        public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        return {
            "privateKeyPem": pulumi.Output.secret(private_pem),
            "privateKeyOpenssh": pulumi.Output.secret(openssh),
            "publicKeyOpenssh": public_openssh + "\n",
            "publicKeyPem": public_pem,
            "publicKeyFingerprintSha256": hashlib.sha256(public_openssh.encode()).hexdigest(),
        }

    def _key(self, pem: str) -> Any:
        if pem not in self.keys:
            self.keys[pem] = serialization.load_pem_private_key(pem.encode(), None)
        return self.keys[pem]

    @staticmethod
    def _subject(subject: Mapping[str, Any] | None) -> x509.Name:
        attrs = []
        if subject and subject.get("organization"):
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, subject["organization"]))
        if subject and subject.get("commonName"):
            attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, subject["commonName"]))
        return x509.Name(attrs)

    def _sign(self, builder: x509.CertificateBuilder, signer: Any) -> str:
        algorithm = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
        kwargs = {} if algorithm is None else {"ecdsa_deterministic": True}
        cert = builder.sign(signer, algorithm, **kwargs)
        return cert.public_bytes(serialization.Encoding.PEM).decode()

    def _SelfSignedCert(self, name: str, inputs: dict) -> dict:
        key = self._key(inputs["privateKeyPem"])
        subject = self._subject(inputs.get("subject"))
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(int.from_bytes(_seed(name)[:16], "big") >> 1)
            .not_valid_before(NOT_BEFORE)
            .not_valid_after(NOT_BEFORE + dt.timedelta(hours=inputs["validityPeriodHours"]))
            .add_extension(x509.BasicConstraints(ca=bool(inputs.get("isCaCertificate")), path_length=None), True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )
        return {"certPem": self._sign(builder, key)}

    def _CertRequest(self, name: str, inputs: dict) -> dict:
        # The CSR's content is carried to the signing mock as JSON: the
        # signer needs the public key, subject and addresses, as the real
        # provider reads them from the PEM.
        key = self._key(inputs["privateKeyPem"])
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        request = {
            "publicKeyPem": public,
            "subject": inputs.get("subject"),
            "ipAddresses": inputs.get("ipAddresses") or [],
            "dnsNames": inputs.get("dnsNames") or [],
        }
        return {"certRequestPem": "MOCK-CSR " + json.dumps(request, sort_keys=True)}

    def _LocallySignedCert(self, name: str, inputs: dict) -> dict:
        import ipaddress

        request = json.loads(inputs["certRequestPem"].removeprefix("MOCK-CSR "))
        ca_key = self._key(inputs["caPrivateKeyPem"])
        ca_cert = x509.load_pem_x509_certificate(inputs["caCertPem"].encode())
        public = serialization.load_pem_public_key(request["publicKeyPem"].encode())
        uses = set(inputs.get("allowedUses") or [])
        ekus = []
        if "server_auth" in uses:
            ekus.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if "client_auth" in uses:
            ekus.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(self._subject(request.get("subject")))
            .issuer_name(ca_cert.subject)
            .public_key(public)  # type: ignore[arg-type]
            .serial_number(int.from_bytes(_seed(name)[:16], "big") >> 1)
            .not_valid_before(NOT_BEFORE)
            .not_valid_after(NOT_BEFORE + dt.timedelta(hours=inputs["validityPeriodHours"]))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(x509.ExtendedKeyUsage(ekus), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
                False,
            )
        )
        sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in request["ipAddresses"]]
        sans += [x509.DNSName(d) for d in request["dnsNames"]]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), False)
        return {"certPem": self._sign(builder, ca_key), "readyForRenewal": False}

    # ---- command
    def _Command(self, name: str, inputs: dict) -> dict:
        if self.preview or self.command_stdout is None:
            return {}
        stdout = self.command_stdout(name, inputs)
        return {"stdout": stdout if stdout is not None else "", "stderr": ""}

    def _CopyToRemote(self, name: str, inputs: dict) -> dict:
        return {}


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """Keeps parents, dependencies and options that MockResourceArgs drops."""

    def __init__(self, mocks: FleetMocks, registrations: list[Registration] | None = None) -> None:
        super().__init__(mocks)
        self.registrations: list[Registration] = [] if registrations is None else registrations

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            from pulumi.runtime import rpc

            self.registrations.append(
                Registration(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    inputs=dict(rpc.deserialize_properties(request.object)),
                    parent=request.parent,
                    dependencies=list(request.dependencies),
                    custom=request.custom,
                    ignore_changes=list(request.ignoreChanges),
                    aliases=list(request.aliasURNs),
                )
            )
        return response


_PEM_BLOCK = re.compile(r"-----BEGIN [^-]+-----.*?-----END [^-]+-----\n", re.S)


def pem_blocks(text: str) -> list[str]:
    """The PEM blocks of a step's stdin, in order."""
    return _PEM_BLOCK.findall(text)


def passing_report(host: str, runtime: str = "runsc") -> str:
    """A verify report as the real script prints it for a gVisor host."""
    return json.dumps(
        {
            "schema": "functions-runtime/verify@1",
            "host": host,
            "passed": True,
            "failedCheck": None,
            "reason": None,
            "hostKernel": "6.12.48+deb13-amd64",
            "defaultRuntime": runtime,
            "runtimes": [
                {
                    "name": runtime,
                    "shim": "/usr/bin/runsc" if runtime == "runsc" else "containerd-shim-kata-v2",
                    "isolation": "sandbox" if runtime == "runsc" else "vm",
                    "network": "sandbox" if runtime == "runsc" else "vm",
                    "hypervisor": None if runtime == "runsc" else "qemu",
                    "guestKernel": "4.4.0" if runtime == "runsc" else "6.12.28",
                    "coldStartMs": {"median": 812, "runs": 5},
                }
            ],
            "versions": {"docker": "26.1.5", "containerd": "1.7.24"},
            "checks": [],
        }
    )


def stdout_passing(name: str, inputs: Mapping[str, Any]) -> str | None:
    """Every verify step passes with gVisor (or Kata in a `vm` stack)."""
    if name.endswith("-verify"):
        host = name[: -len("-verify")]
        runtime = "kata" if "ISOLATION=vm" in inputs.get("create", "") else "runsc"
        return passing_report(host, runtime)
    return '{"ok": true}'


# The stand-in for a secure dedicatedSshKey (the program derives its public key).
STAND_IN_SSH_KEY = stand_in_ssh_key()


def config_from_stack_file(path: Path) -> dict[str, Any]:
    """The `functions-runtime:` values of a Pulumi.<stack>.yaml, secure ones replaced."""
    import yaml

    doc = yaml.safe_load(path.read_text()) or {}
    values = {}
    for k, v in (doc.get("config") or {}).items():
        if isinstance(v, dict) and set(v) == {"secure"}:
            v = STAND_IN_SSH_KEY
        values[k] = v
    return values


def run_program(
    config: Mapping[str, Any],
    stack: str = "test",
    command_stdout: CommandStdout | None = stdout_passing,
    preview: bool = False,
    secret_keys: tuple[str, ...] = ("functions-runtime:dedicatedSshKey",),
    server_private_address: str | None = None,
    registrations: list[Registration] | None = None,
    calls: list[tuple[str, dict[str, Any]]] | None = None,
) -> ProgramRun:
    """Run __main__.py under mocks with `config` (full keys -> values).

    `server_private_address` is the private address the simulated Hetzner
    assigns to Cloud servers (the hostlab's guest address); by default one
    derived from the server's name. `registrations` and `calls`, when given,
    receive each registration and invoke (data source lookups) as it happens,
    so a caller sees them even when the program raises. Hetzner lookups run
    only when the config sets `hcloud:token` (as a real run needs a token).
    """
    mocks = FleetMocks(command_stdout, preview, server_private_address)
    monitor = RecordingMonitor(mocks, registrations)
    if calls is not None:
        mocks.calls = calls
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=preview, monitor=monitor)
    pulumi.runtime.set_all_config(
        {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()},
        [k for k in secret_keys if k in config],
    )
    outputs: dict[str, Any] = {}
    secret: dict[str, bool] = {}

    @pulumi.runtime.test
    def body() -> Any:
        ns = runpy.run_path(str(MAIN), run_name="__pulumi_main__")
        fleet = ns["fleet"]

        async def collect(name: str, out: pulumi.Output) -> None:
            secret[name] = await out.is_secret()
            if await out.is_known():
                outputs[name] = await out.future()

        import asyncio

        return pulumi.Output.from_input(
            asyncio.ensure_future(
                asyncio.gather(
                    collect("runtimeEndpoint", fleet.runtime_endpoint),
                    collect("runtimeClientTls", fleet.runtime_client_tls),
                )
            )
        )

    body()
    return ProgramRun(resources=monitor.registrations, outputs=outputs, output_secret=secret, stack=stack)
