"""Texts generated from the declarations: `Pulumi.yaml`'s config block, the
README's configuration table and the variables table of
`docs/host-contract.md`. Each sits between two marker lines in its file;
`tests/static/test_generated.py` fails when a file and its rendering differ.

    python -m components.settings.generated --write   # rewrite all three
    python -m components.settings.generated --check   # exit 1 on a difference
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

from components.settings.declarations import SECTIONS, SETTINGS, TOP_LEVEL_KEYS, Setting
from components.settings.model import NAMESPACE, PROJECT_ROOT

COMMAND = "python -m components.settings.generated --write"
BEGIN = f"generated from components/settings/declarations.py by `{COMMAND}`; do not edit"
END = "end of generated text"


def _prose(text: str) -> str:
    """A doc line for YAML and tables: backticks kept, no table pipes."""
    return text.replace("|", "/")


def render_pulumi_config() -> str:
    """The `config:` block of Pulumi.yaml, one entry per top-level key."""
    lines = ["config:", f"  # {BEGIN}"]
    for top in TOP_LEVEL_KEYS:
        own = [s for s in SETTINGS if s.key == top]
        fields = [s for s in SETTINGS if s.section == top and s.key != top]
        lines.append(f"  {NAMESPACE}:{top}:")
        decl = own[0] if own else None
        if decl is not None and decl.kind == "secret":
            lines.append("    secret: true")
        elif decl is not None and decl.kind in ("choice", "string") and isinstance(decl.default, str):
            lines += ["    type: string", f"    default: {decl.default}"]
        text = SECTIONS[top]
        if decl is not None:
            text += f" {decl.doc[0].upper()}{decl.doc[1:]} (default: {decl.shown_default})."
        for s in fields:
            text += f" `{s.key}` ({s.shown_default}): {s.doc}."
        lines.append("    description: >-")
        lines += textwrap.wrap(_prose(text), width=100, initial_indent="      ", subsequent_indent="      ",
                               break_on_hyphens=False, break_long_words=False)
    lines.append(f"  # {END}")
    return "\n".join(lines) + "\n"


def render_readme_table() -> str:
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for s in SETTINGS:
        rows.append(f"| `{s.key}` | {s.shown_default} | {_prose(s.doc)} |")
    return "\n".join(rows) + "\n"


def _encoding(decl: Setting) -> str:
    if decl.encode is not None or decl.host_doc:
        return decl.host_doc
    if decl.kind == "boolean":
        return "`true` or `false`"
    if decl.kind == "cidrs":
        return "space-separated CIDRs"
    if decl.kind == "list":
        return "space-separated"
    if decl.kind == "integer":
        return f"a whole number, {decl.low} to {decl.high}"
    if decl.choices:
        return "one of " + ", ".join(f"`{c}`" for c in decl.choices)
    return "as the setting gives it"


def render_host_variables() -> str:
    """Every variable a step may read: who reads it and what it holds."""
    from components.pipeline import HOST_STEPS, VARIABLES, step_env

    used: dict[str, list[str]] = {}
    for step in HOST_STEPS:
        for name in step_env(step):
            used.setdefault(name, []).append(step.name)
    by_var = {s.host_var: s for s in SETTINGS if s.host_var}
    rows = ["| variable | used by | from | meaning |", "|---|---|---|---|"]
    for name in sorted(VARIABLES, key=lambda n: (n not in ("FR_ROOT", "FR_HOST"), n)):
        variable = VARIABLES[name]
        decl = by_var.get(name)
        if decl is not None:
            source = f"`{decl.key}`"
            meaning = _encoding(decl)
        else:
            source = variable.source
            meaning = variable.doc
        rows.append(f"| `{name}` | {', '.join(used.get(name, ['(none)']))} | {source} | {_prose(meaning)} |")
    return "\n".join(rows) + "\n"


@dataclass(frozen=True)
class Generated:
    """One generated text in a file, between its marker lines."""

    path: str
    render: Callable[[], str]
    begin: str
    end: str

    def split(self, text: str) -> tuple[str, str, str]:
        """Before (through the begin marker's line), the generated part, after (from the end marker)."""
        start = text.index(self.begin)
        start = text.index("\n", start) + 1
        stop = text.index(self.end, start)
        stop = text.rindex("\n", 0, stop) + 1
        return text[:start], text[start:stop], text[stop:]

    def current(self) -> str:
        return self.split((PROJECT_ROOT / self.path).read_text())[1]

    def write(self) -> bool:
        path = PROJECT_ROOT / self.path
        before, old, after = self.split(path.read_text())
        new = self.render()
        if new != old:
            path.write_text(before + new + after)
        return new != old


class _PulumiConfig(Generated):
    """Pulumi.yaml: the whole `config:` block, markers inside it (YAML comments)."""

    def split(self, text: str) -> tuple[str, str, str]:
        start = text.index("\nconfig:\n") + 1
        end = text.index(f"  # {END}\n", start) + len(f"  # {END}\n")
        return text[:start], text[start:end], text[end:]


GENERATED: tuple[Generated, ...] = (
    _PulumiConfig("Pulumi.yaml", render_pulumi_config, "", ""),
    Generated("README.md", render_readme_table, f"<!-- {BEGIN} -->", f"<!-- {END} -->"),
    Generated("docs/host-contract.md", render_host_variables, f"<!-- {BEGIN} -->", f"<!-- {END} -->"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="rewrite every generated text")
    mode.add_argument("--check", action="store_true", help="exit 1 when a file differs from its rendering")
    args = parser.parse_args(argv)
    stale = []
    for g in GENERATED:
        if args.write:
            if g.write():
                print(f"rewrote the generated part of {g.path}", file=sys.stderr)
        elif g.current() != g.render():
            stale.append(g.path)
    for path in stale:
        print(f"{path}: its generated part differs from the declarations; run `{COMMAND}`", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
