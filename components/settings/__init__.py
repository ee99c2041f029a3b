"""Typed stack configuration, checked before any resource exists.

One declaration per setting (`declarations.py`); the typed values
(`model.py`); the checks by concern: the toolkit (`problems.py`), address
arithmetic (`addresses.py`), the sections (`sections.py`), the host groups
(`hosts.py`), their composition (`parse.py`); reading Pulumi's config
(`stack_config.py`); the texts generated from the declarations
(`generated.py`). Every problem is collected and raised at once, each
naming its config key, so a platform engineer fixes a stack file in one
pass. No other module reads `pulumi.Config`.
"""

from components.settings.addresses import internet_share, is_anywhere
from components.settings.declarations import SECRET_KEYS, SETTINGS, TOP_LEVEL_KEYS, Setting
from components.settings.hosts import PLACEMENT_GROUP_SIZE, arm_refusal, listening_ports, stack_slug
from components.settings.model import NAMESPACE, PROJECT_ROOT, HostSpec, Settings, SettingsError, key
from components.settings.parse import checked_private_key as _checked_private_key
from components.settings.parse import parse_settings
from components.settings.stack_config import configured_keys, read_settings

__all__ = [
    "NAMESPACE",
    "PLACEMENT_GROUP_SIZE",
    "PROJECT_ROOT",
    "SECRET_KEYS",
    "SETTINGS",
    "TOP_LEVEL_KEYS",
    "HostSpec",
    "Setting",
    "Settings",
    "SettingsError",
    "_checked_private_key",
    "arm_refusal",
    "configured_keys",
    "internet_share",
    "is_anywhere",
    "key",
    "listening_ports",
    "parse_settings",
    "read_settings",
    "stack_slug",
]
