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

The harness itself (running the program, recording registrations and
exports) is tools/lab/harness.py, shared with the lab tool; this module
holds the tests' deterministic stand-ins, which the lab must never load.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pulumi
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tools.lab.harness import (
    PROJECT_ROOT,
    SECRET_KEYS,
    CommandStdout,
    ProgramMocks,
    ProgramRun,
    Registration,
    alt_names,
    certificate,
    extended_key_usages,
    private_openssh,
    public_openssh,
    public_pem,
    run_main,
    signed_pem,
    x509_name,
)

NOT_BEFORE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

_OPENSSH_CACHE: dict[str, str] = {}


def stand_in_ssh_key(name: str = "dedicated") -> str:
    """A real, unencrypted ed25519 private key in OpenSSH format, the same for one name.

    The settings parse dedicatedSshKey for real, so stand-ins must be keys.
    (OpenSSH's format has a random check number: one value per process.)
    """
    if f"stand-in:{name}" not in _OPENSSH_CACHE:
        key = ed25519.Ed25519PrivateKey.from_private_bytes(_seed(f"stand-in:{name}"))
        _OPENSSH_CACHE[f"stand-in:{name}"] = private_openssh(key)
    return _OPENSSH_CACHE[f"stand-in:{name}"]


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


def _serial_and_validity(name: str, hours: int) -> tuple[int, dt.datetime, dt.datetime]:
    """A certificate's serial (from its resource name) and validity (from NOT_BEFORE for `hours`)."""
    return int.from_bytes(_seed(name)[:16], "big") >> 1, NOT_BEFORE, NOT_BEFORE + dt.timedelta(hours=hours)


class FleetMocks(ProgramMocks):
    """Stand-ins for hcloud, tls and command resources."""

    PROVIDERS = ("tls", "hcloud", "command")

    def __init__(
        self, command_stdout: CommandStdout | None, preview: bool, server_private_address: str | None = None
    ) -> None:
        super().__init__(command_stdout, preview)
        self.server_private_address = server_private_address
        self.keys: dict[str, Any] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        # What getImages and getServers find (golden images, a rollout's running servers).
        self.images: list[dict[str, Any]] = []
        self.servers: list[dict[str, Any]] = []

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
        if args.token == "hcloud:index/getImages:getImages":
            return {"images": list(self.images)}, []
        if args.token == "hcloud:index/getServers:getServers":
            return {"servers": list(self.servers)}, []
        return {}, []

    def resource_id(self, provider: str, name: str) -> str:
        if provider == "hcloud":
            # Hetzner ids are numbers; the program converts them with int().
            return str(int.from_bytes(_seed(name)[:3], "big"))
        return f"{name}-id"

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
        openssh = _OPENSSH_CACHE.setdefault(name, private_openssh(key))
        public = public_openssh(key)
        return {
            "privateKeyPem": pulumi.Output.secret(private_pem),
            "privateKeyOpenssh": pulumi.Output.secret(openssh),
            "publicKeyOpenssh": public + "\n",
            "publicKeyPem": public_pem(key.public_key()),
            "publicKeyFingerprintSha256": hashlib.sha256(public.encode()).hexdigest(),
        }

    def _key(self, pem: str) -> Any:
        if pem not in self.keys:
            self.keys[pem] = serialization.load_pem_private_key(pem.encode(), None)
        return self.keys[pem]

    def _SelfSignedCert(self, name: str, inputs: dict) -> dict:
        key = self._key(inputs["privateKeyPem"])
        subject = x509_name(inputs.get("subject"))
        validity = _serial_and_validity(name, inputs["validityPeriodHours"])
        builder = (
            certificate(subject, subject, key.public_key(), *validity)
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
        return {"certPem": signed_pem(builder, key, deterministic=True)}

    def _CertRequest(self, name: str, inputs: dict) -> dict:
        # The CSR's content is carried to the signing mock as JSON: the
        # signer needs the public key, subject and addresses, as the real
        # provider reads them from the PEM.
        request = {
            "publicKeyPem": public_pem(self._key(inputs["privateKeyPem"]).public_key()),
            "subject": inputs.get("subject"),
            "ipAddresses": inputs.get("ipAddresses") or [],
            "dnsNames": inputs.get("dnsNames") or [],
        }
        return {"certRequestPem": "MOCK-CSR " + json.dumps(request, sort_keys=True)}

    def _LocallySignedCert(self, name: str, inputs: dict) -> dict:
        request = json.loads(inputs["certRequestPem"].removeprefix("MOCK-CSR "))
        ca_key = self._key(inputs["caPrivateKeyPem"])
        ca_cert = x509.load_pem_x509_certificate(inputs["caCertPem"].encode())
        public = serialization.load_pem_public_key(request["publicKeyPem"].encode())
        subject = x509_name(request.get("subject"))
        validity = _serial_and_validity(name, inputs["validityPeriodHours"])
        uses = set(inputs.get("allowedUses") or [])
        builder = (
            certificate(subject, ca_cert.subject, public, *validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(x509.ExtendedKeyUsage(extended_key_usages(uses)), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
                False,
            )
        )
        sans = alt_names(request["ipAddresses"], request["dnsNames"])
        if sans is not None:
            builder = builder.add_extension(sans, False)
        return {"certPem": signed_pem(builder, ca_key, deterministic=True), "readyForRenewal": False}


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
                    "userNetworkDns": runtime != "runsc",
                }
            ],
            "versions": {"docker": "26.1.5", "containerd": "1.7.24"},
            "checks": [],
            # What the policy-limits check proved: the stack's default endpoint.limits.
            "limits": {"maxMemoryMiB": 2048, "maxPids": 1024, "maxMilliCpus": 2000},
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


def stack_config(stack: str) -> dict[str, Any]:
    """The values of the project's own Pulumi.<stack>.yaml (a fresh copy each call)."""
    return config_from_stack_file(PROJECT_ROOT / f"Pulumi.{stack}.yaml")


def run_program(
    config: Mapping[str, Any],
    stack: str = "test",
    command_stdout: CommandStdout | None = stdout_passing,
    preview: bool = False,
    secret_keys: tuple[str, ...] = SECRET_KEYS,
    server_private_address: str | None = None,
    registrations: list[Registration] | None = None,
    calls: list[tuple[str, dict[str, Any]]] | None = None,
    hcloud_images: list[dict[str, Any]] | None = None,
    hcloud_servers: list[dict[str, Any]] | None = None,
) -> ProgramRun:
    """Run __main__.py under mocks with `config` (full keys -> values).

    `server_private_address` is the private address the simulated Hetzner
    assigns to Cloud servers (the hostlab's guest address); by default one
    derived from the server's name. `registrations` and `calls`, when given,
    receive each registration and invoke (data source lookups) as it happens,
    so a caller sees them even when the program raises. Hetzner lookups run
    only when the config sets `hcloud:token` (as a real run needs a token);
    `hcloud_images` and `hcloud_servers` are what getImages and getServers
    find (each a dict of the data source's fields).
    """
    mocks = FleetMocks(command_stdout, preview, server_private_address)
    if calls is not None:
        mocks.calls = calls
    mocks.images = list(hcloud_images or [])
    mocks.servers = list(hcloud_servers or [])
    return run_main(mocks, config, stack, secret_keys, registrations)
