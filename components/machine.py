"""How a host is obtained: a new Hetzner Cloud server, or an adopted machine.

Both give the pipeline the same `Machine`: an identity that changes exactly
when the machine is replaced, its addresses, its SSH host key and a
connection that pins that key from the first dial. Resources are created as
children of the host component that asks, so their URNs do not depend on
this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_command as command
import pulumi_hcloud as hcloud
import pulumi_tls as tls

from components.base_os import render_user_data
from components.network import FleetNetwork
from components.settings import HostSpec

# SSH waits: a new Cloud server answers SSH within a minute or two; allow
# 60 dials of 10 s each (about 10 minutes) before calling it unreachable.
DIAL_ERROR_LIMIT = 60
PER_DIAL_TIMEOUT_SECONDS = 10
# Each Cloud server of a golden-image stack names its host here, so a
# rollout finds a host's server whatever its (image-suffixed) name.
HOST_LABEL = "functions-runtime-host"
# The part of a golden image's fingerprint in its hosts' server names.
GOLDEN_NAME_DIGITS = 8


@dataclass(frozen=True)
class Machine:
    """What the pipeline needs of a host, whatever made it."""

    id: pulumi.Output[str]
    public_address: pulumi.Output[str]
    private_address: pulumi.Output[str]
    host_key: pulumi.Output[str]
    connection: command.remote.ConnectionArgs


@dataclass(frozen=True)
class CloudServerArgs:
    """What a new Cloud server is built from, besides its settings."""

    network: FleetNetwork
    labels: dict[str, str]
    # Public keys cloud-init grants root on first boot: the program's first.
    authorized_keys: Sequence[pulumi.Input[str]]
    hcloud_ssh_key_ids: Sequence[pulumi.Input[str]]
    # admin.sshSourceCidrs, exempted from sshd's per-source penalties.
    admin_sources: Sequence[str] = ()


@dataclass(frozen=True)
class GoldenBoot:
    """A Cloud host booting the stack's golden image (components/golden_image.py)."""

    image_id: pulumi.Input[str]
    # The image's fingerprint: it names the server, so a replacement's name
    # is free while the server it replaces still runs.
    digest: str


def _connection(
    spec: HostSpec, address: pulumi.Input[str], host_key: pulumi.Input[str], private_key: pulumi.Input[str] | None
) -> command.remote.ConnectionArgs:
    return command.remote.ConnectionArgs(
        host=address,
        port=spec.ssh_port,
        user=spec.ssh_user,
        private_key=private_key,
        host_key=host_key,
        dial_error_limit=DIAL_ERROR_LIMIT,
        per_dial_timeout=PER_DIAL_TIMEOUT_SECONDS,
    )


def adopt_machine(spec: HostSpec, private_key: pulumi.Input[str] | None) -> Machine:
    """An existing machine (a dedicated server), reached by its address.

    Its identity is address and port: pointing a host entry at another
    machine re-runs every step there.
    """
    address = pulumi.Output.from_input(spec.address or "")
    # None with trustOnFirstUse: the connection then accepts the key that answers.
    host_key: pulumi.Output[Any] = pulumi.Output.from_input(spec.host_key)
    return Machine(
        id=pulumi.Output.from_input(f"{spec.address}:{spec.ssh_port}"),
        public_address=address,
        private_address=pulumi.Output.from_input(spec.private_address or ""),
        host_key=host_key,
        connection=_connection(spec, address, host_key, private_key),
    )


def golden_server_name(server_name: str, digest: str) -> str:
    """A host's server name for one golden image: create-before-delete needs
    the replacement's name free while the old server still exists."""
    return f"{server_name}-g{digest[:GOLDEN_NAME_DIGITS]}"


def first_network_ip(networks: Any) -> str:
    for net in networks or []:
        ip = net.get("ip") if isinstance(net, dict) else getattr(net, "ip", None)
        if ip:
            return ip
    raise ValueError("the server has no private network address")


def create_cloud_server(
    owner: pulumi.Resource,
    name: str,
    spec: HostSpec,
    args: CloudServerArgs,
    private_key: pulumi.Input[str] | None,
    golden: GoldenBoot | None = None,
    after: Sequence[pulumi.Resource] = (),
    in_placement_group: bool = True,
) -> Machine:
    """A new Hetzner Cloud server on the fleet's network, behind its firewall.

    With `golden`, the server boots the golden image and a new image
    replaces it (create before delete); without, it boots `spec.image` and
    an image change never replaces it. `after`: what the server waits for (a
    rollout's previous batch).
    """
    server_name = spec.server_name or name
    if golden is not None:
        server_name = golden_server_name(server_name, golden.digest)
    child = pulumi.ResourceOptions(parent=owner)
    # The program generates the server's SSH host key so every connection
    # can pin it from the first dial: no trust on first use.
    host_key = tls.PrivateKey(f"{name}-ssh-host-key", algorithm="ED25519", opts=child)
    host_key_public = host_key.public_key_openssh.apply(lambda k: k.strip())
    user_data = pulumi.Output.secret(
        pulumi.Output.all(host_key.private_key_openssh, host_key_public, *args.authorized_keys).apply(
            lambda v: render_user_data(
                authorized_keys=[k.strip() for k in v[2:]],
                host_key_private=v[0],
                host_key_public=v[1],
                hostname=server_name,
                admin_sources=args.admin_sources,
                golden=golden is not None,
            )
        )
    )
    net = args.network
    placement = net.placement_groups[(spec.group, spec.placement_index or 0)] if in_placement_group else None
    # These apply only when a server is created. Changing them on a running
    # host would replace it (and kill its functions); the bootstrap step
    # re-applies the base configuration over SSH instead. Replace a host on
    # purpose with `pulumi up --replace <urn>`. A golden image is the one
    # exception: a new image is a rollout, so its change must show.
    ignored = ["user_data", "ssh_keys"] if golden is not None else ["user_data", "image", "ssh_keys"]
    server = hcloud.Server(
        f"{name}-server",
        name=server_name,
        server_type=spec.server_type,
        image=golden.image_id if golden is not None else spec.image,
        location=spec.location,
        ssh_keys=list(args.hcloud_ssh_key_ids),
        user_data=user_data,
        firewall_ids=[net.firewall.id.apply(int)],
        placement_group_id=placement.id.apply(int) if placement is not None else None,
        networks=[hcloud.ServerNetworkArgs(network_id=net.network.id.apply(int))],
        public_nets=[hcloud.ServerPublicNetArgs(ipv4_enabled=True, ipv6_enabled=True)],
        labels={
            **args.labels,
            "functions-runtime-group": spec.group,
            **({HOST_LABEL: spec.name} if golden is not None else {}),
        },
        opts=pulumi.ResourceOptions(
            parent=owner,
            depends_on=[net.subnet, *after],
            ignore_changes=ignored,
            # The replacement first, verified, then the old server retires.
            delete_before_replace=False if golden is not None else None,
        ),
    )
    return Machine(
        id=server.id,
        public_address=server.ipv4_address,
        private_address=server.networks.apply(first_network_ip),
        host_key=host_key_public,
        connection=_connection(spec, server.ipv4_address, host_key_public, private_key),
    )

