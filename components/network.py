"""Shared Hetzner Cloud parts: private network, subnet, firewall, placement.

Hetzner Cloud Firewalls do not filter private-network traffic, so this
firewall guards the public side only; every host also runs its own packet
filter (scripts/host_firewall.sh) with the same inbound policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_hcloud as hcloud

from components.settings import Settings, stack_slug


@dataclass(frozen=True)
class NetworkArgs:
    settings: Settings
    labels: dict[str, str]


class FleetNetwork(pulumi.ComponentResource):
    """Network, subnet, firewall and spread placement groups of a fleet."""

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("functions-runtime:index:FleetNetwork", name, None, opts)
        settings = args.settings
        # Hetzner names, like the servers' and the SSH key's: the stack's slug.
        slug = stack_slug(settings.stack)
        child = pulumi.ResourceOptions(parent=self)
        self.network = hcloud.Network(
            f"{name}-net",
            name=f"{name}-{slug}",
            ip_range=settings.network.ip_range,
            labels=args.labels,
            opts=child,
        )
        self.subnet = hcloud.NetworkSubnet(
            f"{name}-subnet",
            network_id=self.network.id.apply(int),
            type="cloud",
            network_zone=settings.network.zone,
            ip_range=settings.network.subnet,
            opts=child,
        )
        self.firewall = hcloud.Firewall(
            f"{name}-fw",
            name=f"{name}-{slug}",
            labels=args.labels,
            rules=public_firewall_rules(settings),
            opts=child,
        )
        self.placement_groups: dict[tuple[str, int], hcloud.PlacementGroup] = {}
        for host in settings.hcloud_hosts:
            slot = (host.group, host.placement_index or 0)
            if slot not in self.placement_groups:
                self.placement_groups[slot] = hcloud.PlacementGroup(
                    f"{name}-{slot[0]}-spread-{slot[1]}",
                    name=f"{name}-{slug}-{slot[0]}-spread-{slot[1]}",
                    type="spread",
                    labels=args.labels,
                    opts=child,
                )
        self.register_outputs(
            {
                # Consumed by RuntimeHost (server attachment) and by operators.
                "networkId": self.network.id,
                "firewallId": self.firewall.id,
            }
        )


def public_firewall_rules(settings: Settings) -> list[hcloud.FirewallRuleArgs]:
    """Inbound SSH and ICMP from the admin sources only; nothing else.

    The Docker endpoint listens on the private address, which a Cloud
    Firewall cannot see, so no public rule exists for it.
    """
    admin = list(settings.admin.ssh_source_cidrs)
    return [
        hcloud.FirewallRuleArgs(
            direction="in",
            protocol="tcp",
            port="22",
            source_ips=admin,
            description="SSH from the admin sources (functions-runtime:admin.sshSourceCidrs)",
        ),
        hcloud.FirewallRuleArgs(
            direction="in",
            protocol="icmp",
            source_ips=admin,
            description="ICMP from the admin sources",
        ),
    ]
