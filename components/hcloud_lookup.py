"""Hetzner Cloud server types and locations, looked up before anything exists.

A typo in `serverType`, a type not offered in the group's location, or an
Arm type would otherwise pass preview and fail during `up`, after the
network and firewall exist. hcloud's data sources are invokes, which run in
preview too and return before any resource is registered, so every problem
is reported at once, as settings are, each naming its config key.

Without a Hetzner token (a pull request from a fork) there is nothing to
ask: the lookup is skipped, and said so, and preview goes on with the
by-name checks of components/settings/hosts.py. Stacks with only dedicated hosts
look nothing up.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_hcloud as hcloud

from components.settings import Settings, SettingsError, arm_refusal

# hcloud's architecture names -> the names release files use (the catalog).
ARCHITECTURES = {"x86": "amd64", "arm": "arm64"}
SKIPPED = (
    "Hetzner lookup skipped: no token (HCLOUD_TOKEN or hcloud:token), so server types and "
    "locations were checked by name only; a type or location Hetzner does not offer fails "
    "during `pulumi up`"
)


def _reason(err: Exception) -> str:
    """The provider's reason, on one line."""
    text = " ".join(str(err).split())
    return text[:200] or type(err).__name__


def lookup_problems(settings: Settings, server_type: Any = None, location: Any = None) -> list[str]:
    """Problems with the Cloud hosts' server types and locations, by config key.

    `server_type`/`location` are the lookups (hcloud.get_server_type and
    hcloud.get_location by default); each raises on a name Hetzner does not know.
    """
    get_server_type = server_type or hcloud.get_server_type
    get_location = location or hcloud.get_location
    problems: list[str] = []
    architectures = settings.artifacts.catalog.architectures
    groups: dict[str, tuple[str, str]] = {}
    for spec in settings.hcloud_hosts:
        if spec.server_type and spec.location:
            groups.setdefault(spec.config_key, (spec.server_type, spec.location))
    zones: dict[str, str | None] = {}
    for group_key, (_, loc) in groups.items():
        if loc in zones:
            continue
        try:
            zones[loc] = get_location(name=loc).network_zone
        except Exception as err:  # the provider's error: unknown name, API, network
            zones[loc] = None
            problems.append(
                f"{group_key}.location: Hetzner does not offer {loc!r} ({_reason(err)}); "
                "list the locations with `hcloud location list`"
            )
    for group_key, (type_name, loc) in groups.items():
        zone = zones.get(loc)
        if zone is not None and zone != settings.network.zone:
            problems.append(
                f"{group_key}.location: {loc!r} is in network zone {zone!r}, not network.zone "
                f"{settings.network.zone!r}; pick a location of that zone or change network.zone"
            )
        try:
            found = get_server_type(name=type_name)
        except Exception as err:  # the provider's error: unknown name, API, network
            problems.append(
                f"{group_key}.serverType: Hetzner does not offer {type_name!r} ({_reason(err)}); "
                "list the types with `hcloud server-type list`"
            )
            continue
        arch = ARCHITECTURES.get(found.architecture or "", found.architecture)
        if arch not in architectures:
            problems.append(
                f"{group_key}.serverType: "
                + (arm_refusal(type_name) if arch == "arm64" else f"{type_name!r} is {arch}, which the catalog has no files for")
            )
            continue
        offered = {entry.name: entry for entry in (found.locations or [])}
        entry = offered.get(loc)
        if offered and entry is None:
            problems.append(
                f"{group_key}.serverType: {type_name!r} is not offered in {loc!r}; it is in "
                f"{', '.join(sorted(offered))}. Pick another type or location"
            )
        elif entry is not None and entry.available is False:
            # A stock-out comes and goes, and running servers keep their type:
            # said, not refused.
            pulumi.log.warn(
                f"{group_key}.serverType: {type_name!r} is temporarily unavailable in {loc!r}; "
                "creating a new server there fails until it is back"
            )
        elif entry is not None and entry.is_deprecated:
            pulumi.log.warn(
                f"{group_key}.serverType: {type_name!r} is deprecated in {loc!r} "
                f"(announced {entry.deprecation_announced}); plan a move to a current type"
            )
    return problems


def check_hcloud_hosts(settings: Settings) -> None:
    """Look up the Cloud hosts' types and locations; raise SettingsError on any problem."""
    if not settings.hcloud_hosts:
        return
    if not settings.hcloud_token_set:
        pulumi.log.warn(SKIPPED)
        return
    problems = lookup_problems(settings)
    if problems:
        raise SettingsError(problems)
