"""A server's inputs do not move under an upgrade of the program or a provider.

Hetzner replaces a Cloud server (a new machine: every function on it gone)
when some of its inputs change, and pulumi-hcloud decides which. The program
keeps the create-only inputs (user data, image, SSH keys) out of every diff
with `ignore_changes`; the rest are recorded per committed stack in
`data/server_inputs.json`. This test runs the program under mocks with the
pinned SDKs (requirements.txt) and compares: an upgrade of pulumi-hcloud or
pulumi-command that changes what the program registers for a server fails
here, before its pull request's preview (whose server gate, tools/drift.py
`--servers`, catches what only the provider's own diff can show).

Resource IDs of other resources (firewall, network, placement group) are
the mocks' and recorded as a placeholder. A change on purpose: regenerate
with `python -m tests.unit.test_server_inputs --write`, and add the
replacement to docs/upgrading.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.program import config_from_stack_file, run_program

ROOT = Path(__file__).resolve().parents[2]
RECORDED_FILE = Path(__file__).parent / "data" / "server_inputs.json"
SERVER = "hcloud:index/server:Server"
# Inputs that hold another resource's ID (the mocks make those up).
REFERENCES = {"firewallIds", "placementGroupId", "networkId"}
REFERENCE = "<id of another resource>"
# What a server must keep out of every diff: these change only when a host is created.
CREATE_ONLY = ["userData", "image", "sshKeys"]


def _without_references(value: Any, key: str = "") -> Any:
    if key in REFERENCES:
        return [REFERENCE for _ in value] if isinstance(value, list) else REFERENCE
    if isinstance(value, dict):
        return {k: _without_references(v, k) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_without_references(v) for v in value]
    return value


def server_inputs(stack: str) -> dict[str, Any]:
    run = run_program(config_from_stack_file(ROOT / f"Pulumi.{stack}.yaml"), stack=stack)
    return {
        r.urn: {
            "ignoreChanges": sorted(r.ignore_changes),
            "inputs": {k: _without_references(v, k) for k, v in sorted(r.plain.items()) if k not in r.ignore_changes},
        }
        for r in run.of_type(SERVER)
    }


def committed_stacks() -> list[str]:
    return sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in ROOT.glob("Pulumi.*.yaml"))


RECORDED: dict[str, Any] = json.loads(RECORDED_FILE.read_text()) if RECORDED_FILE.exists() else {}


def test_every_committed_stack_with_cloud_servers_is_recorded():
    with_servers = {s for s in committed_stacks() if server_inputs(s)}
    assert with_servers and with_servers == set(RECORDED), "regenerate: python -m tests.unit.test_server_inputs --write"


@pytest.mark.parametrize("stack", sorted(RECORDED))
def test_a_servers_inputs_are_what_was_recorded(stack):
    now = server_inputs(stack)
    assert sorted(now) == sorted(RECORDED[stack]), f"stack {stack}: servers added or gone"
    changed = {
        urn: sorted(k for k in set(now[urn]["inputs"]) | set(was["inputs"]) if now[urn]["inputs"].get(k) != was["inputs"].get(k))
        for urn, was in RECORDED[stack].items()
    }
    changed = {urn: keys for urn, keys in changed.items() if keys}
    assert not changed, f"stack {stack}: these server inputs changed (a replacement or an update of live hosts): {changed}"
    for urn, server in now.items():
        assert server["ignoreChanges"] == sorted(CREATE_ONLY), f"{urn}: the create-only inputs must stay ignored"


def test_a_changed_input_is_caught(monkeypatch):
    """The control: a server type the program did not record fails the comparison."""
    stack = sorted(RECORDED)[0]
    urn = sorted(RECORDED[stack])[0]
    altered = json.loads(json.dumps(RECORDED))
    altered[stack][urn]["inputs"]["serverType"] = "ccx63"
    monkeypatch.setattr(sys.modules[__name__], "RECORDED", altered)
    with pytest.raises(AssertionError, match="serverType"):
        test_a_servers_inputs_are_what_was_recorded(stack)


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.unit.test_server_inputs --write")
    recorded = {s: inputs for s in committed_stacks() if (inputs := server_inputs(s))}
    RECORDED_FILE.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")
    print(f"wrote {RECORDED_FILE.relative_to(ROOT)}: {', '.join(f'{s} ({len(v)})' for s, v in recorded.items())}")
