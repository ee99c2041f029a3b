"""Rolling replacement: which Cloud hosts a new golden image replaces, in which batches.

Pulumi replaces in parallel whatever does not depend on each other. A fleet
created from nothing must stay parallel, so the program adds dependencies
only between the hosts of a rollout: hosts whose server exists (a Hetzner
lookup) and boots another image than the current golden one. Batch k+1's
new servers wait for batch k's new hosts to finish their pipeline
(verified); each old host drains right after its replacement is verified
(components/pipeline.py `retire_step`). Capacity never falls below the
fleet's size: every draining host's replacement already serves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pulumi
import pulumi_hcloud as hcloud

from components.image_retention import STACK_LABEL
from components.machine import HOST_LABEL
from components.settings import HostSpec, Settings, stack_slug


def server_host(server: Any, hosts: Sequence[HostSpec]) -> str | None:
    """The stack host a server belongs to: by label, else by its name."""
    labels = getattr(server, "labels", None) or {}
    by_label = labels.get(HOST_LABEL)
    names = {h.name for h in hosts}
    if by_label in names:
        return by_label
    for spec in hosts:
        if spec.server_name and (server.name == spec.server_name or server.name.startswith(spec.server_name + "-g")):
            return spec.name
    return None


def current_images(settings: Settings, find_servers: Callable[..., Any] | None = None) -> dict[str, str]:
    """Host name -> the image its running server booted, for the stack's Cloud hosts.

    Empty without a Hetzner token (nothing can be asked; a fork's preview).
    """
    if not settings.hcloud_token_set:
        return {}
    found = (find_servers or hcloud.get_servers)(with_selector=f"{STACK_LABEL}={stack_slug(settings.stack)}")
    images: dict[str, str] = {}
    for server in found.servers or []:
        host = server_host(server, settings.hcloud_hosts)
        if host is not None:
            images[host] = str(server.image or "")
    return images


def rollout_batches(
    hosts: Sequence[HostSpec], current: Mapping[str, str], desired: str | None, batch_size: int
) -> list[list[str]]:
    """The hosts a new image replaces, in batches, in the stack's order.

    `desired` is the golden image's id, or None while it is being built (no
    running server can boot it yet). A host without a server is new: it is
    created at once, in no batch.
    """
    rolling = [h.name for h in hosts if h.name in current and (desired is None or current[h.name] != desired)]
    return in_batches(rolling, batch_size)


def in_batches(names: Sequence[str], batch_size: int) -> list[list[str]]:
    """`names` in order, `batch_size` at a time."""
    return [list(names[i : i + batch_size]) for i in range(0, len(names), batch_size)]


def batch_waits(batches: Sequence[Sequence[str]]) -> dict[str, list[str]]:
    """Host -> the hosts whose pipeline its new server waits for (the previous batch)."""
    waits: dict[str, list[str]] = {}
    for previous, batch in zip(batches, batches[1:], strict=False):
        for name in batch:
            waits[name] = list(previous)
    return waits


def log_rollout(batches: Sequence[Sequence[str]], settings: Settings) -> None:
    if batches:
        pulumi.log.info(
            f"rollout: {sum(len(b) for b in batches)} Cloud host(s) move to a new golden image in "
            f"{len(batches)} batch(es) of at most {settings.rollout.batch_size} (rollout.batchSize); "
            "each old host drains after its replacement is verified"
        )
