"""Read a `pulumi preview --json` document and say whether the stack drifted.

The scheduled drift workflow (.github/workflows/drift.yml) runs a refreshing
preview of each deployed stack and expects it to plan nothing: after
`--refresh`, any planned step means the live fleet differs from what the
stack says (a server resized in the console, a firewall rule added by hand,
a host deleted) or the program changed without a deploy. The pull-request
preview runs the same reader to refuse a change that replaces or deletes a
server unless the pull request says so (the label `replaces-servers`): a
replaced server is a new machine, and every function on it is gone. A
provider upgrade (pulumi-hcloud, pulumi-command) is caught there before it
merges.

Input: the document `pulumi preview --json` prints (Pulumi's
display.PreviewDigest: `steps` with `op`, `urn`, `diffReasons`,
`replaceReasons`, `detailedDiff`; `diagnostics`; `changeSummary`), from a
file or `-` for stdin. Output: a Markdown report on stdout (for the job
summary and the drift issue); `--json` prints the findings instead.

    pulumi preview --refresh --json -s prod > preview.json
    python -m tools.drift preview.json --stack prod            # drift: any step
    python -m tools.drift preview.json --stack prod --servers  # pull request: servers only

Exit codes: 0 nothing to report, 1 drift (or a server replaced), 2 the input
is not a preview document or the preview itself failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

# Steps that change nothing: the resource as it is, a read of an existing
# resource, the refresh of its state before the plan.
UNCHANGED_OPS = frozenset({"same", "read", "refresh"})
# Steps that make a new machine or remove one.
LOSES_THE_MACHINE = frozenset({"replace", "create-replacement", "delete-replaced", "delete", "discard", "discard-replaced"})
SERVER_TYPES = frozenset({"hcloud:index/server:Server"})
SERVERS_LABEL = "replaces-servers"


class NotAPreview(Exception):
    """The input cannot be judged: not JSON, not a preview, or the preview failed."""


@dataclass(frozen=True)
class Finding:
    op: str
    urn: str
    type: str
    name: str
    # The properties that differ (update) or force the replacement (replace).
    because: tuple[str, ...]

    @property
    def server(self) -> bool:
        return self.type in SERVER_TYPES

    @property
    def loses_the_machine(self) -> bool:
        return self.server and self.op in LOSES_THE_MACHINE


def urn_parts(urn: str) -> tuple[str, str]:
    """(type, name) of a URN `urn:pulumi:<stack>::<project>::<parent$>type::name`."""
    parts = urn.split("::")
    if len(parts) < 4 or not parts[0].startswith("urn:pulumi:"):
        return "", urn
    return parts[2].rsplit("$", 1)[-1], "::".join(parts[3:])


def read_preview(text: str) -> list[Finding]:
    """The planned steps that change something. Raises NotAPreview for
    anything that is not a preview that ran (one with error diagnostics
    included)."""
    try:
        doc = json.loads(text)
    except ValueError as err:
        raise NotAPreview(f"not JSON ({err}); pass what `pulumi preview --json` printed") from None
    if not isinstance(doc, Mapping) or not ({"steps", "changeSummary", "diagnostics"} & set(doc)):
        raise NotAPreview("not a `pulumi preview --json` document (no steps, changeSummary or diagnostics)")
    errors = [
        str(d.get("message", "")).strip()
        for d in doc.get("diagnostics") or []
        if isinstance(d, Mapping) and d.get("severity") == "error"
    ]
    steps = doc.get("steps") or []
    if not isinstance(steps, list):
        raise NotAPreview("`steps` is not a list")
    findings = []
    for step in steps:
        if not isinstance(step, Mapping) or not isinstance(step.get("op"), str) or not isinstance(step.get("urn"), str):
            raise NotAPreview(f"a step without op and urn: {json.dumps(step)[:200]}")
        if step["op"] in UNCHANGED_OPS:
            continue
        typ, name = urn_parts(step["urn"])
        reasons = step.get("replaceReasons") or step.get("diffReasons") or sorted(step.get("detailedDiff") or {})
        findings.append(Finding(step["op"], step["urn"], typ, name, tuple(str(r) for r in reasons)))
    if errors:  # a preview that failed cannot say there is no drift
        raise NotAPreview("the preview failed: " + "; ".join(e.splitlines()[0] for e in errors if e))
    return findings


def judge(findings: Sequence[Finding], servers_only: bool, servers_allowed: bool) -> list[Finding]:
    """What fails the run: every finding for drift; for a pull request, a
    server replaced or deleted, unless the pull request carries the label."""
    if not servers_only:
        return list(findings)
    return [] if servers_allowed else [f for f in findings if f.loses_the_machine]


def report(stack: str, findings: Sequence[Finding], failing: Sequence[Finding], servers_only: bool) -> str:
    what = "server replacements" if servers_only else "drift"
    if not failing:
        head = f"## {stack}: no {what}\n"
        if findings:
            head += f"\n{len(findings)} planned change(s), none replacing or deleting a server.\n"
        return head
    lines = [f"## {stack}: {what}", ""]
    if servers_only:
        lines += [f"This change replaces or deletes {len({f.urn for f in failing})} server(s): each is a new machine, and every function "
                  f"on it is gone. If that is intended, label the pull request `{SERVERS_LABEL}`; otherwise keep the "
                  "server's inputs (tests/unit/test_server_inputs.py) or pin the provider.", ""]
    else:
        lines += ["A refreshing preview planned changes: the live fleet differs from the stack, or `main` was not "
                  "deployed. Read `pulumi preview --refresh --diff` for this stack, then either deploy or put the "
                  "fleet back.", ""]
    lines += ["| step | resource | type | because |", "|---|---|---|---|"]
    for f in failing:
        mark = " **(a server: new machine)**" if f.loses_the_machine else ""
        lines.append(f"| {f.op}{mark} | `{f.name}` | `{f.type}` | {', '.join(f.because) or '-'} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.drift", description=__doc__.split("\n\n")[0])
    parser.add_argument("preview", help="what `pulumi preview --json` printed: a file, or - for stdin")
    parser.add_argument("--stack", required=True, help="the stack's name, for the report")
    parser.add_argument("--servers", action="store_true",
                        help="pull-request mode: fail only on a server replaced or deleted")
    parser.add_argument("--servers-allowed", action="store_true",
                        help=f"the pull request carries the label {SERVERS_LABEL}")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON instead of Markdown")
    args = parser.parse_args(argv)
    try:
        text = sys.stdin.read() if args.preview == "-" else open(args.preview, encoding="utf-8").read()
    except OSError as err:
        print(f"python -m tools.drift: {args.preview}: {err.strerror}", file=sys.stderr)
        return 2
    try:
        findings = read_preview(text)
    except NotAPreview as err:
        print(f"python -m tools.drift: stack {args.stack}: {err}", file=sys.stderr)
        return 2
    failing = judge(findings, args.servers, args.servers_allowed)
    if args.json:
        out: dict[str, Any] = {"stack": args.stack, "drift": bool(failing),
                               "findings": [asdict(f) for f in findings]}
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        print(report(args.stack, findings, failing, args.servers), end="")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
