"""The validation toolkit: collect every problem, name its config key.

Each accessor returns a usable value after a problem (the declared default),
so parsing goes on and the stack file is fixed in one pass.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any

from components.settings.declarations import Setting

# Whole numbers as a stack file or `pulumi config set` spells them: ASCII
# digits, an optional minus, and few enough digits that int() never refuses.
WHOLE_NUMBER = re.compile(r"^-?[0-9]{1,18}$")


def has_control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def shown(value: Any) -> str:
    """A value for a message: short, so a pasted secret is never echoed whole."""
    text = repr(value)
    return text if len(text) <= 80 else text[:60] + "...(cut)"


class Problems:
    """Collects problems and warnings, each as `<config key>: <message>`."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.warnings: list[str] = []

    def add(self, config_key: str, message: str) -> None:
        self.items.append(f"{config_key}: {message}")

    def warn(self, config_key: str, message: str) -> None:
        """Accepted, but said at every preview (not a problem: nothing fails)."""
        self.warnings.append(f"{config_key}: {message}")

    def obj(self, config_key: str, value: Any, allowed: Sequence[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.add(config_key, f"expected an object, got {type(value).__name__}")
            return {}
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            self.add(
                config_key,
                f"unknown field(s) {', '.join(unknown)}; accepted: {', '.join(allowed)}",
            )
        return dict(value)

    def string(self, config_key: str, value: Any, default: str | None = None) -> str | None:
        if value is None:
            return default
        if not isinstance(value, str) or not value.strip():
            self.add(config_key, f"expected a non-empty string, got {shown(value)}")
            return default
        if has_control(value.strip()):
            self.add(config_key, "holds a line break or control character; give one plain value")
            return default
        return value.strip()

    def integer(self, config_key: str, value: Any, default: int, low: int, high: int) -> int:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            # ASCII digits only: str.isdigit() also accepts '²', which int() refuses.
            if isinstance(value, str) and WHOLE_NUMBER.match(value.strip()):
                value = int(value.strip())
            else:
                self.add(config_key, f"expected a whole number, got {shown(value)}")
                return default
        if not low <= value <= high:
            self.add(config_key, f"must be between {low} and {high}, got {value}")
            return default
        return value

    def boolean(self, config_key: str, value: Any, default: bool = False) -> bool:
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return value == "true"
        self.add(config_key, f"expected true or false, got {shown(value)}")
        return default

    def string_list(self, config_key: str, value: Any) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.add(config_key, f"expected a list of strings, got {shown(value)}")
            return []
        return [v.strip() for v in value]

    def cidr(self, config_key: str, value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        try:
            return ipaddress.ip_network(value, strict=True)
        except ValueError as err:
            hint = ""
            try:
                hint = f" (did you mean {ipaddress.ip_network(value, strict=False)}?)"
            except ValueError:
                pass
            self.add(config_key, f"{shown(value)} is not a valid CIDR: {err}{hint}")
            return None

    def cidrs(self, name: str, texts: Sequence[str]) -> list[tuple[int, str, ipaddress.IPv4Network | ipaddress.IPv6Network]]:
        """The valid entries of a CIDR list setting as (index, text, network);
        each invalid one is a problem named `<name>[<index>]`."""
        out = []
        for i, text in enumerate(texts):
            net = self.cidr(f"{name}[{i}]", text)
            if net is not None:
                out.append((i, text, net))
        return out

    def read(self, decl: Setting, value: Any, config_key: str) -> Any:
        """A value by its declaration: type, bounds and default from one place.

        Choices are not judged here: each choice setting's refusal says what
        its values mean, in its parser.
        """
        default = None if decl.default is None or decl.default_text is not None else decl.default
        if decl.kind == "integer":
            return self.integer(config_key, value, default, decl.low, decl.high)  # type: ignore[arg-type]
        if decl.kind == "boolean":
            return self.boolean(config_key, value, bool(decl.default))
        if decl.kind in ("list", "cidrs"):
            return self.string_list(config_key, value)
        return self.string(config_key, value, default if isinstance(default, str) else None)
