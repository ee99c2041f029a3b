"""RuntimeFleet: the shared parts, N independent hosts, and the endpoint."""

from __future__ import annotations

import ipaddress
from typing import Any

import pulumi
import pulumi_hcloud as hcloud
import pulumi_tls as tls

from components.contract import ARTIFACT_SHARE_PORT
from components.endpoint import build_client_tls, build_endpoint, url_host, verified_limits
from components.golden_image import GoldenImage, GoldenImageArgs
from components.hcloud_lookup import check_hcloud_hosts
from components.host import RuntimeHost, RuntimeHostArgs
from components.image_retention import STACK_LABEL
from components.machine import CloudServerArgs, GoldenBoot
from components.network import FleetNetwork, NetworkArgs
from components.payload import build_payload
from components.pki import FleetPki
from components.rollout import batch_waits, current_images, in_batches, log_rollout, rollout_batches
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
        labels = {STACK_LABEL: stack_slug(settings.stack)}
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

        golden: GoldenImage | None = None
        waits: dict[str, list[str]] = {}
        if cloud is not None and settings.golden_image.enabled:
            golden = GoldenImage(
                f"{name}-golden",
                GoldenImageArgs(
                    settings=settings,
                    payload=payload,
                    cloud=cloud,
                    private_key=cloud_private_key,  # type: ignore[arg-type]
                    template=settings.hcloud_hosts[0],
                ),
                opts=child,
            )
            # Only the hosts a new image replaces wait for each other.
            batches = rollout_batches(
                settings.hcloud_hosts,
                current_images(settings),
                golden.found_image,
                settings.rollout.batch_size,
            )
            log_rollout(batches, settings)
            waits = batch_waits(batches)
        sharing = artifact_sharing(settings)
        # Dedicated hosts are updated in place, one batch at a time: a host's
        # install waits until the previous batch is verified again (and resumed).
        in_place = batch_waits(in_batches([h.name for h in settings.dedicated_hosts], settings.rollout.batch_size))

        self.hosts: list[RuntimeHost] = []
        by_name: dict[str, RuntimeHost] = {}
        for spec in settings.hosts:
            # Hosts depend on the shared parts only, never on each other
            # (one failing host does not hold the others back), except
            # within a rollout of Cloud hosts, and for dedicated hosts: their
            # one peer for release files, and their batches of in-place updates.
            key = cloud_private_key if spec.source == "hcloud" else settings.dedicated_ssh_key
            program_key = cloud_program_key if spec.source == "hcloud" else dedicated_program_key
            peers, share, peer_cidrs, seed = sharing.get(spec.name, ("", "", "", None))
            host = RuntimeHost(
                spec.name,
                RuntimeHostArgs(
                    spec=spec,
                    settings=settings,
                    payload=payload,
                    pki=pki,
                    ssh_private_key=key,
                    granted_keys=[program_key, *settings.admin.ssh_keys] if program_key is not None else [],
                    cloud=cloud,
                    golden=(
                        GoldenBoot(golden.image_id, golden.fingerprint)
                        if golden is not None and spec.source == "hcloud"
                        else None
                    ),
                    after=[by_name[w].ready for w in waits.get(spec.name, ())],
                    artifact_peers=peers,
                    artifact_share=share,
                    artifact_peer_cidrs=peer_cidrs,
                    install_after=[
                        *([by_name[seed].install] if seed is not None else []),
                        *(by_name[w].ready for w in in_place.get(spec.name, ())),
                    ],
                ),
                opts=child,
            )
            self.hosts.append(host)
            by_name[spec.name] = host

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
        self.artifact_downloads = pulumi.Output.all(*[h.install_report for h in self.hosts]).apply(
            lambda reports: download_totals([spec.name for spec in settings.hosts], reports)
        )
        self.golden_image = (
            pulumi.Output.from_input({"imageId": golden.image_id, "fingerprint": golden.fingerprint})
            if golden is not None
            else None
        )
        self.register_outputs(
            {
                # Exported as the stack's runtimeEndpoint; read by consumer stacks.
                "runtimeEndpoint": self.runtime_endpoint,
                # Exported as the secret runtimeClientTls; read by the functions service.
                "runtimeClientTls": self.runtime_client_tls,
            }
        )


def artifact_sharing(settings: Settings) -> dict[str, tuple[str, str, str, str | None]]:
    """One download per fleet for dedicated hosts: host -> (ARTIFACT_PEERS,
    ARTIFACT_SHARE, ARTIFACT_PEER_CIDRS, the peer whose install it waits for).

    The first dedicated host fetches from the internet and serves the files
    on its private address; the others fetch from it first. Nothing to share
    with one dedicated host, or when artifacts.mirror already serves the fleet.
    """
    dedicated = [h for h in settings.dedicated_hosts if h.private_address]
    if len(dedicated) < 2 or settings.artifacts.mirror:
        return {}
    seed, others = dedicated[0], dedicated[1:]
    seed_address = str(seed.private_address)
    cidrs = " ".join(_host_cidr(str(h.private_address)) for h in others)
    sharing: dict[str, tuple[str, str, str, str | None]] = {
        seed.name: ("", f"{url_host(seed_address)}:{ARTIFACT_SHARE_PORT}", cidrs, None)
    }
    for h in others:
        sharing[h.name] = (f"http://{url_host(seed_address)}:{ARTIFACT_SHARE_PORT}", "", "", seed.name)
    return sharing


def _host_cidr(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"{ip}/{ip.max_prefixlen}"


def download_totals(names: list[str], reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Bytes the fleet's install steps fetched, by source, in all and per host."""
    totals = {"internet": 0, "mirror": 0, "peer": 0}
    per_host: dict[str, dict[str, int]] = {}
    for name, report in zip(names, reports, strict=True):
        counted = {k: int((report.get("downloadedBytes") or {}).get(k) or 0) for k in totals}
        per_host[name] = counted
        for k, v in counted.items():
            totals[k] += v
    return {"bytes": totals, "hosts": per_host}
