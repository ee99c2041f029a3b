"""Upgrading the program must not change who a resource is.

A resource's URN is its identity in state: a changed parent type or name
makes Pulumi delete the old resource and create a new one, which for a
server means a new machine and every function on it gone. The recorded set
(`data/stack_urns.json`, taken from the committed stacks before the host
pipeline was split into modules) must stay a subset of what the program
registers today. New resources are fine; a vanished URN is a replacement
unless an alias carries it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.program import config_from_stack_file, run_program

ROOT = Path(__file__).resolve().parents[2]
RECORDED = json.loads((Path(__file__).parent / "data" / "stack_urns.json").read_text())


@pytest.mark.parametrize("stack", sorted(RECORDED))
def test_committed_stacks_keep_every_recorded_urn(stack):
    run = run_program(config_from_stack_file(ROOT / f"Pulumi.{stack}.yaml"), stack=stack)
    current = {r.urn for r in run.resources}
    aliased = {alias for r in run.resources for alias in r.aliases}
    vanished = sorted(set(RECORDED[stack]) - current - aliased)
    assert not vanished, f"stack {stack}: these resources would be replaced: {vanished}"
