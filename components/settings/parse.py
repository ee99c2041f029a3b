"""From plain config values to `Settings`: every section parsed, every
problem collected, raised once before any resource exists."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi

from components.settings.declarations import TOP_LEVEL_KEYS
from components.settings.hosts import (
    check_golden_server_names,
    check_ports,
    leave_room_for_replacements,
    parse_hosts,
)
from components.settings.model import Settings, SettingsError, key
from components.settings.problems import Problems
from components.settings.sections import (
    parse_admin,
    parse_artifacts,
    parse_canary,
    parse_certificates,
    parse_egress,
    parse_endpoint,
    parse_gc,
    parse_golden_image,
    parse_gvisor,
    parse_isolation,
    parse_kata,
    parse_metrics,
    parse_network,
    parse_rollout,
    parse_verify,
)
from components.ssh_keys import ssh_private_key_problem


def parse_settings(raw: Mapping[str, Any], stack: str) -> Settings:
    """Build `Settings` from plain config values (key without namespace -> value)."""
    p = Problems()
    for name in sorted(set(raw) - set(TOP_LEVEL_KEYS)):
        p.add(key(name), f"unknown setting; accepted: {', '.join(key(k) for k in TOP_LEVEL_KEYS)}")

    isolation = parse_isolation(p, raw.get("isolation"))
    kata = parse_kata(p, raw.get("kata"))
    network = parse_network(p, raw.get("network"))
    admin = parse_admin(p, raw.get("admin"))
    endpoint = parse_endpoint(p, raw.get("endpoint"), network)
    artifacts, local_dirs = parse_artifacts(p, raw.get("artifacts"))
    gvisor = parse_gvisor(p, raw.get("gvisor"), isolation, artifacts)
    verify = parse_verify(p, raw.get("verify"), local_dirs)
    egress = parse_egress(p, raw.get("egress"))
    canary = parse_canary(p, raw.get("canary"))
    gc = parse_gc(p, raw.get("gc"))
    metrics = parse_metrics(p, raw.get("metrics"), endpoint)
    certificates = parse_certificates(p, raw.get("certificates"))
    architectures = artifacts.catalog.architectures if artifacts else frozenset({"amd64"})
    hosts = parse_hosts(p, raw.get("hosts"), stack, isolation, network, architectures)
    check_ports(p, hosts, endpoint)
    golden_image = parse_golden_image(p, raw.get("goldenImage"), any(h.source == "hcloud" for h in hosts))
    rollout = parse_rollout(p, raw.get("rollout"))
    if golden_image.enabled:
        check_golden_server_names(p, hosts)
        hosts = leave_room_for_replacements(hosts)
    dedicated_key = _dedicated_key(p, raw.get("dedicatedSshKey"), any(h.source == "dedicated" for h in hosts))

    if p.items:
        raise SettingsError(p.items)
    return Settings(
        stack=stack,
        isolation=isolation,  # type: ignore[arg-type]
        kata=kata,
        network=network,
        admin=admin,
        endpoint=endpoint,
        artifacts=artifacts,  # type: ignore[arg-type]
        verify=verify,
        egress=egress,
        hosts=tuple(hosts),
        dedicated_ssh_key=dedicated_key,
        warnings=tuple(p.warnings),
        gvisor=gvisor,
        canary=canary,
        gc=gc,
        metrics=metrics,
        certificates=certificates,
        golden_image=golden_image,
        rollout=rollout,
    )


def _dedicated_key(p: Problems, value: Any, needed: bool) -> pulumi.Output[str] | None:
    if needed and value is None:
        p.add(
            key("dedicatedSshKey"),
            "dedicated hosts are configured but no SSH private key to reach them; "
            "run `pulumi config set --secret functions-runtime:dedicatedSshKey "
            "< ~/.ssh/id_ed25519` with a key root on those hosts accepts",
        )
    elif isinstance(value, pulumi.Output):
        # Known only inside apply: checked there, failing with the key's name only.
        return value.apply(checked_private_key)
    elif value is not None:
        problem = ssh_private_key_problem(value) if isinstance(value, str) else "expected the private key's text"
        if problem:
            # Never the value, nor a part of it: only what is wrong.
            p.add(key("dedicatedSshKey"), problem)
    return None


def checked_private_key(text: str) -> str:
    problem = ssh_private_key_problem(text)
    if problem:
        raise SettingsError([f"{key('dedicatedSshKey')}: {problem}"])
    return text
