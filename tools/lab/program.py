"""The program's own steps for the lab, without Pulumi's engine.

`lab up --provision` runs the real program (`__main__.py`) under Pulumi's
mocks through the harness the tests use (tools/lab/harness.py), but with
stand-ins a user can live with: every key the TLS provider would make is a
fresh random key, every certificate is signed for real and valid from the
moment it is made, and both are kept in
the lab's state directory (`<state>/program/`, files mode 0600), so a second
`lab up` finds the same CA, server and client certificates and the guest's
Docker endpoint keeps trusting the client files written the first time.

What this is not: Pulumi's engine. No state backend, no diff, no secrets
provider, no provider plugins. The program registers its resources; the
harness records them (their inputs, dependencies), and the lab replays the
remote commands over SSH (tools/lab/replay.py) in dependency order, as
pulumi-command would run them. Only the dedicated-host (adopted machine)
path is supported: Hetzner resources are refused.

Nothing here may come from tests/: the test mocks derive keys from resource
names and date certificates to a fixed day, which is right for tests and
wrong for anyone's lab.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pulumi
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tools.lab import harness

# Certificates are valid from the moment they are made; this much earlier
# covers a guest clock a little behind this machine's (seconds under TCG).
CLOCK_SKEW = dt.timedelta(minutes=5)


class LabProgramError(Exception):
    """The program cannot be run for the lab as configured (one line)."""


# ------------------------------------------------------------------ the key store


class KeyStore:
    """Private keys and certificates by resource name, one JSON file each."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, kind: str, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise LabProgramError(f"unexpected resource name {name!r}")
        return self.directory / f"{name}.{kind}.json"

    def load(self, kind: str, name: str) -> dict[str, str] | None:
        try:
            return json.loads(self._path(kind, name).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise LabProgramError(f"cannot read {self._path(kind, name)}: {err}") from err

    def save(self, kind: str, name: str, value: dict[str, str]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        path = self._path(kind, name)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(value, out, indent=1, sort_keys=True)
        tmp.replace(path)


def _new_key(algorithm: str, curve: str | None) -> Any:
    if algorithm == "ED25519":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "ECDSA":
        curves = {"P224": ec.SECP224R1(), "P256": ec.SECP256R1(), "P384": ec.SECP384R1(), "P521": ec.SECP521R1()}
        if (curve or "P224") not in curves:  # P224: the provider's default
            raise LabProgramError(f"ECDSA curve {curve!r} is not supported by the lab")
        return ec.generate_private_key(curves[curve or "P224"])
    raise LabProgramError(f"key algorithm {algorithm!r} is not supported by the lab")


def _private_pem(key: Any) -> str:
    fmt = (
        serialization.PrivateFormat.PKCS8
        if isinstance(key, ed25519.Ed25519PrivateKey)
        else serialization.PrivateFormat.TraditionalOpenSSL
    )
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


def _key_usage(uses: set[str]) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature="digital_signature" in uses,
        content_commitment=False,
        key_encipherment="key_encipherment" in uses,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign="cert_signing" in uses,
        crl_sign="crl_signing" in uses,
        encipher_only=False,
        decipher_only=False,
    )


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _still_valid(cert: x509.Certificate, renew_hours: int) -> bool:
    return cert.not_valid_after_utc - dt.timedelta(hours=renew_hours) > dt.datetime.now(dt.UTC)


def _serial_and_validity(hours: int) -> tuple[int, dt.datetime, dt.datetime]:
    """A fresh certificate's random serial and validity: from now (less CLOCK_SKEW) for `hours`."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return x509.random_serial_number(), now - CLOCK_SKEW, now + dt.timedelta(hours=hours)


# ------------------------------------------------------------------ the mocks


class LabMocks(harness.ProgramMocks):
    """Real, random, persisted stand-ins for the tls provider; commands
    answer with what `command_stdout` says; Hetzner is refused."""

    def __init__(self, store: KeyStore, command_stdout: harness.CommandStdout | None, preview: bool) -> None:
        super().__init__(command_stdout, preview)
        self.store = store

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list]:
        return {}, [("token", f"{args.token}: the lab runs without providers")]

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        if args.typ.split(":")[0] == "hcloud":
            raise LabProgramError(
                f"{args.typ} {args.name}: the lab adopts its guest as a dedicated host; "
                "Hetzner resources need `pulumi up` with the Pulumi CLI"
            )
        return super().new_resource(args)

    def resource_id(self, provider: str, name: str) -> str:
        return f"{name}-lab"

    # ---- tls
    def _PrivateKey(self, name: str, inputs: dict) -> dict:
        stored = self.store.load("key", name)
        if stored is None or stored.get("algorithm") != inputs.get("algorithm"):
            key = _new_key(inputs.get("algorithm", "RSA"), inputs.get("ecdsaCurve"))
            stored = {
                "algorithm": inputs["algorithm"],
                "privateKeyPem": _private_pem(key),
                "privateKeyOpenssh": harness.private_openssh(key),
            }
            self.store.save("key", name, stored)
        key = serialization.load_pem_private_key(stored["privateKeyPem"].encode(), None)
        return {
            "privateKeyPem": pulumi.Output.secret(stored["privateKeyPem"]),
            "privateKeyOpenssh": pulumi.Output.secret(stored["privateKeyOpenssh"]),
            "publicKeyOpenssh": harness.public_openssh(key) + "\n",
            "publicKeyPem": harness.public_pem(key.public_key()),
        }

    def _SelfSignedCert(self, name: str, inputs: dict) -> dict:
        key = serialization.load_pem_private_key(inputs["privateKeyPem"].encode(), None)
        stored = self.store.load("cert", name)
        if stored is not None:
            cert = x509.load_pem_x509_certificate(stored["certPem"].encode())
            same_key = harness.public_pem(cert.public_key()) == harness.public_pem(key.public_key())
            if same_key and _still_valid(cert, 0):
                return {"certPem": stored["certPem"]}
        subject = harness.x509_name(inputs.get("subject"))
        validity = _serial_and_validity(inputs["validityPeriodHours"])
        builder = (
            harness.certificate(subject, subject, key.public_key(), *validity)
            .add_extension(x509.BasicConstraints(ca=bool(inputs.get("isCaCertificate")), path_length=None), True)
            .add_extension(_key_usage(set(inputs.get("allowedUses") or [])), True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)  # type: ignore[arg-type]
        )
        pem = harness.signed_pem(builder, key)
        self.store.save("cert", name, {"certPem": pem})
        return {"certPem": pem}

    def _CertRequest(self, name: str, inputs: dict) -> dict:
        key = serialization.load_pem_private_key(inputs["privateKeyPem"].encode(), None)
        subject = harness.x509_name(inputs.get("subject"))
        builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
        sans = harness.alt_names(inputs.get("ipAddresses") or [], inputs.get("dnsNames") or [])
        if sans is not None:
            builder = builder.add_extension(sans, False)
        algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
        csr = builder.sign(key, algorithm)  # type: ignore[arg-type]
        return {"certRequestPem": csr.public_bytes(serialization.Encoding.PEM).decode()}

    def _LocallySignedCert(self, name: str, inputs: dict) -> dict:
        csr = x509.load_pem_x509_csr(inputs["certRequestPem"].encode())
        ca_key = serialization.load_pem_private_key(inputs["caPrivateKeyPem"].encode(), None)
        ca_cert = x509.load_pem_x509_certificate(inputs["caCertPem"].encode())
        try:
            sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            sans = None
        stored = self.store.load("cert", name)
        if stored is not None:
            cert = x509.load_pem_x509_certificate(stored["certPem"].encode())
            try:
                stored_sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            except x509.ExtensionNotFound:
                stored_sans = None
            if (
                harness.public_pem(cert.public_key()) == harness.public_pem(csr.public_key())
                and cert.subject == csr.subject
                and stored_sans == sans
                and _signed_by(cert, ca_cert)
                and _still_valid(cert, int(inputs.get("earlyRenewalHours") or 0))
            ):
                return {"certPem": stored["certPem"], "readyForRenewal": False}
        uses = set(inputs.get("allowedUses") or [])
        ekus = harness.extended_key_usages(uses)
        validity = _serial_and_validity(inputs["validityPeriodHours"])
        builder = (
            harness.certificate(csr.subject, ca_cert.subject, csr.public_key(), *validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(_key_usage(uses), True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
                False,
            )
        )
        if ekus:
            builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), False)
        if sans is not None:
            builder = builder.add_extension(sans, False)
        pem = harness.signed_pem(builder, ca_key)
        self.store.save("cert", name, {"certPem": pem})
        return {"certPem": pem, "readyForRenewal": False}


def run_lab_program(
    config: Mapping[str, Any],
    state_dir: Path,
    command_stdout: harness.CommandStdout | None = None,
    stack: str = "lab",
) -> harness.ProgramRun:
    """Run __main__.py with `config`; keys and certificates from `state_dir`.

    Without `command_stdout` the run is a preview (commands have no output
    yet): enough for their inputs, which is what the replay runs. With it,
    the program also turns the verify step's report into its outputs.
    """
    mocks = LabMocks(KeyStore(state_dir / "program"), command_stdout, preview=command_stdout is None)
    return harness.run_main(mocks, config, stack)
