"""The real program (`__main__.py`) under Pulumi's mocks, recorded: one harness.

Two callers stand in for the providers differently and share everything
else here:

- the tests (tests/support/program.py): keys derived from resource names,
  certificates dated to a fixed day, a simulated Hetzner; two runs give
  identical bytes;
- the lab (tools/lab/program.py): fresh random keys and certificates valid
  from now, kept in the lab's state directory; Hetzner is refused.

What is shared: running the program with a stack's configuration, recording
each registration (inputs, parent, dependencies, options the mocks' own
arguments drop), collecting the exports and whether they are secret,
dispatching a resource to its stand-in, answering remote commands with a
caller's stdout, and the parts of an X.509 certificate both build alike.

Nothing here may come from tests/ (tests/hostlab/test_lab_parts.py checks):
the tests' deterministic keys and fixed dates never reach a user's lab.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import runpy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MAIN = PROJECT_ROOT / "__main__.py"
PROJECT = "functions-runtime"
SECRET_KEYS = ("functions-runtime:dedicatedSshKey",)

# Called with a Command's name and inputs; returns its stdout (None: no output).
CommandStdout = Callable[[str, Mapping[str, Any]], "str | None"]


def is_secret(value: Any) -> bool:
    """A value the engine marks secret (the mocks see it wrapped)."""
    return isinstance(value, dict) and value.get(rpc._special_sig_key) == rpc._special_secret_sig


def unwrap(value: Any) -> Any:
    """Remove secret markers, recursively."""
    if is_secret(value):
        return unwrap(value["value"])
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


@dataclass
class Registration:
    """One resource as the program registered it (the lab replays its commands)."""

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
    # ResourceOptions.delete_before_replace as set (None: the provider's default).
    delete_before_replace: bool | None = None
    retain_on_delete: bool = False

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


# ------------------------------------------------------------------ X.509 parts both build alike


def x509_name(subject: Mapping[str, Any] | None) -> x509.Name:
    """The tls provider's `subject` block as a name (organization, common name)."""
    attrs = []
    if subject and subject.get("organization"):
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, subject["organization"]))
    if subject and subject.get("commonName"):
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, subject["commonName"]))
    return x509.Name(attrs)


def extended_key_usages(uses: set[str]) -> list[x509.ObjectIdentifier]:
    """The extended key usages among the tls provider's `allowedUses`."""
    known = {"server_auth": ExtendedKeyUsageOID.SERVER_AUTH, "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH}
    return [oid for use, oid in known.items() if use in uses]


def alt_names(ip_addresses: list[str], dns_names: list[str]) -> x509.SubjectAlternativeName | None:
    """The tls provider's `ipAddresses` and `dnsNames` as one extension (None: neither)."""
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    sans += [x509.DNSName(d) for d in dns_names]
    return x509.SubjectAlternativeName(sans) if sans else None


def certificate(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: Any,
    serial: int,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.CertificateBuilder:
    """A certificate's subject, issuer, key, serial and validity; callers add the extensions."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )


def signed_pem(builder: x509.CertificateBuilder, signer: Any, deterministic: bool = False) -> str:
    """Sign (ed25519, else SHA-256; `deterministic`: RFC 6979 ECDSA) and return the PEM."""
    algorithm = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    kwargs = {"ecdsa_deterministic": True} if deterministic and algorithm is not None else {}
    return builder.sign(signer, algorithm, **kwargs).public_bytes(serialization.Encoding.PEM).decode()


def public_pem(public_key: Any) -> str:
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode()


def public_openssh(key: Any) -> str:
    """A private key's public half in OpenSSH's one-line form (no newline)."""
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return line.decode()


def private_openssh(key: Any) -> str:
    """A private key in OpenSSH's format (which carries a random check number)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()


# ------------------------------------------------------------------ the mocks


class ProgramMocks(pulumi.runtime.Mocks):
    """Sends a resource of a provider in `PROVIDERS` to the handler named after
    its type (`_PrivateKey`, `_Command`, ...), whose result is merged into the
    outputs; commands answer with what `command_stdout` says (nothing in a
    preview). Subclasses stand in for the providers' resources."""

    PROVIDERS: tuple[str, ...] = ("tls", "command")

    def __init__(self, command_stdout: CommandStdout | None, preview: bool) -> None:
        self.command_stdout = command_stdout
        self.preview = preview

    def resource_id(self, provider: str, name: str) -> str:
        raise NotImplementedError

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        provider = args.typ.split(":")[0]
        outputs = dict(args.inputs)
        handler = getattr(self, "_" + args.typ.split(":")[-1], None)
        if handler is not None and provider in self.PROVIDERS:
            outputs.update(handler(args.name, unwrap(args.inputs)))
        return self.resource_id(provider, args.name), outputs

    # ---- command
    def _Command(self, name: str, inputs: dict) -> dict:
        if self.preview or self.command_stdout is None:
            return {}
        stdout = self.command_stdout(name, inputs)
        return {"stdout": stdout if stdout is not None else "", "stderr": ""}


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """Keeps parents, dependencies and options that MockResourceArgs drops."""

    def __init__(self, mocks: ProgramMocks, registrations: list[Registration] | None = None) -> None:
        super().__init__(mocks)
        self.registrations: list[Registration] = [] if registrations is None else registrations

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
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
                    delete_before_replace=(
                        bool(request.deleteBeforeReplace) if request.deleteBeforeReplaceDefined else None
                    ),
                    retain_on_delete=bool(request.retainOnDelete),
                )
            )
        return response


def run_main(
    mocks: ProgramMocks,
    config: Mapping[str, Any],
    stack: str,
    secret_keys: tuple[str, ...] = SECRET_KEYS,
    registrations: list[Registration] | None = None,
) -> ProgramRun:
    """Run __main__.py under `mocks` with `config` (full keys -> values).

    `registrations`, when given, receives each registration as it happens,
    so a caller sees them even when the program raises.
    """
    monitor = RecordingMonitor(mocks, registrations)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=mocks.preview, monitor=monitor)
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

        return pulumi.Output.from_input(
            asyncio.ensure_future(
                asyncio.gather(
                    collect("runtimeEndpoint", fleet.runtime_endpoint),
                    collect("runtimeClientTls", fleet.runtime_client_tls),
                    collect("artifactDownloads", fleet.artifact_downloads),
                )
            )
        )

    body()
    return ProgramRun(resources=monitor.registrations, outputs=outputs, output_secret=secret, stack=stack)
