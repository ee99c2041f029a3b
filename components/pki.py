"""The endpoint's PKI: one CA per stack for consumers, and per host a
private verifier CA.

Every host's dockerd trusts the stack CA (which signs the consumers' client
certificate and the hosts' server certificates) plus its own verifier CA,
which signs only the client certificate that host's verify step uses. The
verify key therefore opens that one host's endpoint and no other: a host
whose root is compromised while it verifies cannot reach the rest of the
fleet with it. The consumers' client key never reaches a host. Keys live
only in Pulumi state, as secrets.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_tls as tls

from components.contract import CANARY_CLIENT_NAME_PREFIX, CONSUMER_COMMON_NAME, VERIFY_CLIENT_NAME_PREFIX

# ECDSA P-256: supported by Go's crypto/tls (dockerd) and by OpenSSL (docker-py).
KEY_ALGORITHM = "ECDSA"
KEY_CURVE = "P256"
CA_VALIDITY_HOURS = 10 * 365 * 24
LEAF_VALIDITY_HOURS = 2 * 365 * 24


def early_renewal_hours(rotate_after_days: int) -> int:
    """certificates.rotateAfterDays as the provider's window: a leaf is ready
    for renewal (re-issued by the next `pulumi up`) this long before it
    expires. A fixed number: the provider compares it with the certificate's
    own dates, so nothing time-based enters an input."""
    return LEAF_VALIDITY_HOURS - rotate_after_days * 24
ORGANIZATION = "functions-runtime"


@dataclass(frozen=True)
class IssuedCert:
    cert_pem: pulumi.Output[str]
    private_key_pem: pulumi.Output[str]


@dataclass(frozen=True)
class Authority:
    key: tls.PrivateKey
    cert: tls.SelfSignedCert


def create_authority(name: str, common_name: str, parent: pulumi.Resource) -> Authority:
    opts = pulumi.ResourceOptions(parent=parent)
    key = tls.PrivateKey(f"{name}-key", algorithm=KEY_ALGORITHM, ecdsa_curve=KEY_CURVE, opts=opts)
    cert = tls.SelfSignedCert(
        name,
        private_key_pem=key.private_key_pem,
        is_ca_certificate=True,
        validity_period_hours=CA_VALIDITY_HOURS,
        allowed_uses=["cert_signing", "crl_signing"],
        subject=tls.SelfSignedCertSubjectArgs(common_name=common_name, organization=ORGANIZATION),
        opts=opts,
    )
    return Authority(key=key, cert=cert)


@dataclass(frozen=True)
class VerifierCredentials:
    """A host's own verifier CA and the client certificates it signs: the
    verify step's, and the canary's (it stays on the host, root-only)."""

    ca_cert_pem: pulumi.Output[str]
    client: IssuedCert
    canary: IssuedCert


class FleetPki(pulumi.ComponentResource):
    """A stack's certificate authority and the certificates it issues."""

    def __init__(self, name: str, stack: str, rotate_after_days: int,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("functions-runtime:index:FleetPki", name, None, opts)
        self._name = name
        self._early_renewal_hours = early_renewal_hours(rotate_after_days)
        self.ca = create_authority(f"{name}-ca", f"functions-runtime {stack} endpoint CA", self)
        self.ca_cert = self.ca.cert
        self.client = self.issue_client("consumer", CONSUMER_COMMON_NAME)
        self.register_outputs({"caCertPem": self.ca_cert.cert_pem})

    def _issue(
        self,
        name: str,
        common_name: str,
        uses: list[str],
        ip_addresses: list[pulumi.Input[str]] | None,
        parent: pulumi.Resource,
        authority: Authority | None = None,
    ) -> IssuedCert:
        authority = authority or self.ca
        opts = pulumi.ResourceOptions(parent=parent)
        key = tls.PrivateKey(f"{name}-key", algorithm=KEY_ALGORITHM, ecdsa_curve=KEY_CURVE, opts=opts)
        csr = tls.CertRequest(
            f"{name}-csr",
            private_key_pem=key.private_key_pem,
            subject=tls.CertRequestSubjectArgs(common_name=common_name, organization=ORGANIZATION),
            ip_addresses=ip_addresses,
            opts=opts,
        )
        cert = tls.LocallySignedCert(
            f"{name}-cert",
            cert_request_pem=csr.cert_request_pem,
            ca_private_key_pem=authority.key.private_key_pem,
            ca_cert_pem=authority.cert.cert_pem,
            validity_period_hours=LEAF_VALIDITY_HOURS,
            early_renewal_hours=self._early_renewal_hours,
            allowed_uses=uses,
            opts=opts,
        )
        return IssuedCert(cert_pem=cert.cert_pem, private_key_pem=pulumi.Output.secret(key.private_key_pem))

    def issue_client(self, name: str, common_name: str) -> IssuedCert:
        return self._issue(
            f"{self._name}-{name}",
            common_name,
            ["digital_signature", "key_encipherment", "client_auth"],
            None,
            self,
        )

    def issue_host_verifier(self, host: str, parent: pulumi.Resource) -> VerifierCredentials:
        """A CA only `host` trusts, and the verify and canary client
        certificates it signs: neither opens another host's endpoint, and
        the policy gives both only what it gives any client."""
        authority = create_authority(f"{host}-verifier-ca", f"functions-runtime verifier for {host}", parent)
        uses = ["digital_signature", "key_encipherment", "client_auth"]
        client = self._issue(f"{host}-verifier", f"{VERIFY_CLIENT_NAME_PREFIX}{host}", uses, None, parent, authority)
        canary = self._issue(f"{host}-canary", f"{CANARY_CLIENT_NAME_PREFIX}{host}", uses, None, parent, authority)
        return VerifierCredentials(ca_cert_pem=authority.cert.cert_pem, client=client, canary=canary)

    def issue_server(
        self, name: str, ip_addresses: list[pulumi.Input[str]], parent: pulumi.Resource
    ) -> IssuedCert:
        """A server certificate for the Docker endpoint at these addresses."""
        return self._issue(
            name,
            name,
            ["digital_signature", "key_encipherment", "server_auth"],
            ip_addresses,
            parent,
        )
