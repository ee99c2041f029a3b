"""RuntimeFleet: the shared parts, N independent hosts, and the endpoint."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_hcloud as hcloud
import pulumi_tls as tls

from components.endpoint import build_client_tls, build_endpoint, verified_limits
from components.hcloud_lookup import check_hcloud_hosts
from components.host import RuntimeHost, RuntimeHostArgs
from components.machine import CloudServerArgs
from components.network import FleetNetwork, NetworkArgs
from components.payload import build_payload
from components.pki import FleetPki
from components.settings import Settings, stack_slug
from components.ssh_keys import ssh_public_key_line


class RuntimeFleet(pulumi.ComponentResource):
    """Every host of a stack, verified, behind one endpoint document."""

    runtime_endpoint: pulumi.Output[dict[str, Any]]
    runtime_client_tls: pulumi.Output[dict[str, Any]]

    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None) -> None:
        # Before anything is registered: a type or location Hetzner does not offer stops here.
        check_hcloud_hosts(settings)
        super().__init__("functions-runtime:index:RuntimeFleet", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = {"functions-runtime-stack": stack_slug(settings.stack)}
        payload = build_payload(settings.artifacts.catalog, admin_sources=settings.admin.ssh_source_cidrs)
        pki = FleetPki(f"{name}-pki", settings.stack, settings.certificates.rotate_after_days, opts=child)

        cloud: CloudServerArgs | None = None
        cloud_private_key: pulumi.Input[str] | None = None
        cloud_program_key: pulumi.Input[str] | None = None
        dedicated_program_key: pulumi.Input[str] | None = None
        if settings.dedicated_ssh_key is not None:
            # A public key is not secret: the keys step's stdin and
            # fingerprint stay readable in previews.
            dedicated_program_key = pulumi.Output.unsecret(
                settings.dedicated_ssh_key.apply(lambda k: ssh_public_key_line(k, "functions-runtime:dedicatedSshKey"))
            )
        if settings.hcloud_hosts:
            # The program's own key for Cloud servers; it lives only in state,
            # as a secret.
            provisioning_key = tls.PrivateKey(f"{name}-provisioning-key", algorithm="ED25519", opts=child)
            hcloud_key = hcloud.SshKey(
                f"{name}-provisioning",
                name=f"{name}-{stack_slug(settings.stack)}-provisioning",
                public_key=provisioning_key.public_key_openssh,
                labels=labels,
                opts=child,
            )
            network = FleetNetwork(name, NetworkArgs(settings=settings, labels=labels), opts=child)
            cloud = CloudServerArgs(
                network=network,
                labels=labels,
                authorized_keys=[provisioning_key.public_key_openssh, *settings.admin.ssh_keys],
                hcloud_ssh_key_ids=[hcloud_key.id],
                admin_sources=settings.admin.ssh_source_cidrs,
            )
            cloud_private_key = pulumi.Output.secret(provisioning_key.private_key_openssh)
            cloud_program_key = provisioning_key.public_key_openssh

        self.hosts: list[RuntimeHost] = []
        for spec in settings.hosts:
            # Hosts depend on the shared parts only, never on each other: one
            # failing host does not hold the others back.
            key = cloud_private_key if spec.source == "hcloud" else settings.dedicated_ssh_key
            program_key = cloud_program_key if spec.source == "hcloud" else dedicated_program_key
            self.hosts.append(
                RuntimeHost(
                    spec.name,
                    RuntimeHostArgs(
                        spec=spec,
                        settings=settings,
                        payload=payload,
                        pki=pki,
                        ssh_private_key=key,
                        granted_keys=[program_key, *settings.admin.ssh_keys] if program_key is not None else [],
                        cloud=cloud,
                    ),
                    opts=child,
                )
            )

        ca = pki.ca_cert.cert_pem
        n = len(self.hosts)
        # The limits are what each host's verification proved its policy enforces (they must agree).
        self.runtime_endpoint = pulumi.Output.all(
            ca, pki.client.cert_pem, *[h.endpoint_entry for h in self.hosts], *[h.verify_report for h in self.hosts]
        ).apply(
            lambda v: build_endpoint(
                v[0], settings.isolation, v[2 : 2 + n], verified_limits(v[2 + n :]), client_cert_pem=v[1]
            )
        )
        self.runtime_client_tls = pulumi.Output.secret(
            pulumi.Output.all(ca, pki.client.cert_pem, pki.client.private_key_pem).apply(
                lambda v: build_client_tls(v[0], v[1], v[2])
            )
        )
        self.register_outputs(
            {
                # Exported as the stack's runtimeEndpoint; read by consumer stacks.
                "runtimeEndpoint": self.runtime_endpoint,
                # Exported as the secret runtimeClientTls; read by the functions service.
                "runtimeClientTls": self.runtime_client_tls,
            }
        )
