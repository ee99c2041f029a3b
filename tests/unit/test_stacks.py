"""Every committed stack file is valid, and the program registers for it.

Secure values are replaced by stand-ins (they cannot be decrypted here);
what this proves is that the plain settings pass validation and the program
builds the expected fleet shape, not that the secrets are right.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from components.settings import SettingsError, parse_settings
from tests.support.program import config_from_stack_file, run_program

ROOT = Path(__file__).resolve().parents[2]
STACK_FILES = sorted(ROOT.glob("Pulumi.*.yaml"))
NAMESPACE = "functions-runtime:"


def plain_settings(path: Path) -> dict:
    cfg = config_from_stack_file(path)
    return {k[len(NAMESPACE):]: v for k, v in cfg.items() if k.startswith(NAMESPACE)}


def test_the_expected_stacks_are_committed():
    assert {p.name for p in STACK_FILES} >= {"Pulumi.dev.yaml", "Pulumi.staging.yaml", "Pulumi.prod.yaml"}


@pytest.mark.parametrize("path", STACK_FILES, ids=[p.name for p in STACK_FILES])
def test_stack_file_settings_are_valid(path):
    stack = path.name.split(".")[1]
    try:
        parse_settings(plain_settings(path), stack)
    except SettingsError as err:
        pytest.fail(f"{path.name}: {err}")


@pytest.mark.parametrize("path", STACK_FILES, ids=[p.name for p in STACK_FILES])
def test_program_registers_every_host_of_the_stack(path):
    stack = path.name.split(".")[1]
    settings = parse_settings(plain_settings(path), stack)
    run = run_program(config_from_stack_file(path), stack=stack)
    hosts = {r.name for r in run.of_type("functions-runtime:index:RuntimeHost")}
    assert hosts == {h.name for h in settings.hosts}
    assert {h["name"] for h in run.outputs["runtimeEndpoint"]["hosts"]} == hosts


def test_prod_is_kata_only_on_several_dedicated_hosts():
    settings = parse_settings(plain_settings(ROOT / "Pulumi.prod.yaml"), "prod")
    assert settings.isolation == "vm"
    assert len(settings.hosts) > 1
    assert all(h.source == "dedicated" and h.host_key for h in settings.hosts)
