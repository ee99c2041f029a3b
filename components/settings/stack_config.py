"""Reading this stack's config from Pulumi: the only place `pulumi.Config`
is touched."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config

from components.settings.declarations import SECRET_KEYS, TOP_LEVEL_KEYS
from components.settings.model import NAMESPACE, Settings, SettingsError, key
from components.settings.parse import parse_settings


def configured_keys() -> set[str]:
    """Every full config key set for this run, from the SDK's own config store.

    The store is what `pulumi.Config` reads: values set in-process (the
    engine's run request, the Automation API, `set_all_config` in tests),
    the PULUMI_CONFIG bag, and one PULUMI_CONFIG_<KEY> variable per key
    (scrubbed names, which cannot be mapped back: reported with the variable).
    """
    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    known = {runtime_config.get_config_env_key(key(n)) for n in TOP_LEVEL_KEYS}
    scrubbed_prefix = runtime_config.get_config_env_key(f"{NAMESPACE}:")
    for variable in os.environ:
        if variable.startswith(scrubbed_prefix) and variable not in known:
            keys.add(f"{NAMESPACE}:{variable[len(scrubbed_prefix):].lower()} (from ${variable})")
    return keys


def _secret_config_keys() -> set[str]:
    keys = configured_keys()
    secret = set(runtime_config.get_config_secret_keys_env())
    return {k for k in keys if runtime_config.is_config_secret(k) or k in secret}


def read_settings(config: pulumi.Config | None = None, stack: str | None = None) -> Settings:
    """Read this stack's config once, check it, log its warnings."""
    config = config or pulumi.Config(NAMESPACE)
    raw: dict[str, Any] = {}
    for name in TOP_LEVEL_KEYS:
        # The plain text of the secret too: it is checked here, at preview,
        # and only its secret Output (below) goes further.
        text = config.get(name)
        if text is None:
            continue
        if name in SECRET_KEYS:
            raw[name] = text
            continue
        # Structured values arrive as JSON text; plain ones as strings.
        try:
            raw[name] = json.loads(text)
        except json.JSONDecodeError:
            raw[name] = text
    prefix = f"{NAMESPACE}:"
    extra: list[str] = []
    for full in configured_keys():
        if full.startswith(prefix) and full[len(prefix):] not in TOP_LEVEL_KEYS:
            raw[full[len(prefix):]] = "(set)"
    for full in sorted(_secret_config_keys()):
        name = full[len(prefix):] if full.startswith(prefix) else None
        if name in TOP_LEVEL_KEYS and name not in SECRET_KEYS:
            extra.append(
                f"{full}: is stored as a secret, but the program uses this setting in plain "
                "(command inputs, state, the preview), so the secret would leak there; put "
                "no secret in it and set it without --secret"
            )
    try:
        settings = parse_settings(raw, stack or pulumi.get_stack())
    except SettingsError as err:
        raise SettingsError([*err.problems, *extra]) from None
    if extra:
        raise SettingsError(extra)
    # Shown by `pulumi preview` (and up) as warnings, every time.
    for warning in settings.warnings:
        pulumi.log.warn(warning)
    secret = config.get_secret("dedicatedSshKey")
    token_set = bool(os.environ.get("HCLOUD_TOKEN")) or pulumi.Config("hcloud").get("token") is not None
    return dataclasses.replace(settings, dedicated_ssh_key=secret, hcloud_token_set=token_set)
