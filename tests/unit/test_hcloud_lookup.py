"""Server types and locations looked up at Hetzner (issue 12, class 9).

The program runs under the mocks of tests/support/program.py, whose `call`
answers hcloud's getServerType/getLocation from a small simulated catalog
(SERVER_TYPES, LOCATION_ZONES) and fails, as the provider does, for a name
it does not know. What this proves: the program looks them up when a token
is configured (in preview too), refuses what Hetzner does not offer and Arm
types before registering anything, says when it skipped the lookup, and
asks nothing for dedicated-only stacks. What it does not prove: the real
provider's answers or error texts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from components.settings import SettingsError, parse_settings
from tests.support.program import Registration, config_from_stack_file, run_program
from tests.unit.test_settings import with_change

ROOT = Path(__file__).resolve().parents[2]
DEV = config_from_stack_file(ROOT / "Pulumi.dev.yaml")
PROD = config_from_stack_file(ROOT / "Pulumi.prod.yaml")
TOKEN = {"hcloud:token": "test-token"}
SERVER_TYPE_CALL = "hcloud:index/getServerType:getServerType"


@pytest.fixture(autouse=True)
def no_token_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HCLOUD_TOKEN", raising=False)


def dev_with(group: dict[str, Any], **extra: Any) -> dict[str, Any]:
    cfg = {**DEV, **TOKEN, **extra}
    cfg["functions-runtime:hosts"] = [{**DEV["functions-runtime:hosts"][0], **group}]
    return cfg


def refused_before_registering(cfg: dict[str, Any], preview: bool = False) -> tuple[str, list[Registration]]:
    recorded: list[Registration] = []
    with pytest.raises(SettingsError) as err:
        run_program(cfg, stack="dev", preview=preview, registrations=recorded)
    return str(err.value), recorded


def test_9_a_server_type_hetzner_does_not_offer_is_refused_before_anything_exists():
    message, recorded = refused_before_registering(dev_with({"serverType": "cx99"}))
    assert "functions-runtime:hosts[0].serverType" in message and "'cx99'" in message
    assert "hcloud server-type list" in message
    assert recorded == [], [r.name for r in recorded]


def test_9_the_lookup_runs_in_preview():
    calls: list[tuple[str, dict[str, Any]]] = []
    run_program({**DEV, **TOKEN}, stack="dev", preview=True, calls=calls)
    assert (SERVER_TYPE_CALL, {"name": "cx23"}) in calls
    _, recorded = refused_before_registering(dev_with({"serverType": "cx99"}), preview=True)
    assert recorded == []


def test_9_arm_types_are_refused_by_name_without_a_token():
    problems = []
    try:
        parse_settings(with_change("hosts.0.serverType", "cax11"), "test")
    except SettingsError as err:
        problems = err.problems
    (message,) = [p for p in problems if p.startswith("functions-runtime:hosts[0].serverType:")]
    assert "Arm" in message and "amd64" in message


def test_9_arm_types_are_refused_by_the_lookups_architecture():
    message, recorded = refused_before_registering(dev_with({"serverType": "cx99a"}))
    assert "functions-runtime:hosts[0].serverType" in message and "Arm" in message
    assert recorded == []


def test_9_a_type_not_offered_in_the_location_is_refused():
    cfg = dev_with({"serverType": "cx23", "location": "ash"})
    cfg["functions-runtime:network"] = {"ipRange": "10.0.0.0/16", "subnet": "10.0.1.0/24", "zone": "us-east"}
    message, recorded = refused_before_registering(cfg)
    assert "not offered in 'ash'" in message and "fsn1" in message
    assert recorded == []


def test_9_a_temporarily_unavailable_type_is_said_not_refused(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING):
        run = run_program(dev_with({"serverType": "ccx13", "location": "nbg1"}), stack="dev")
    assert run.of_type("hcloud:index/server:Server")
    assert any("temporarily unavailable" in r.getMessage() for r in caplog.records)


def test_9_without_a_token_the_lookup_is_skipped_and_said(caplog: pytest.LogCaptureFixture):
    calls: list[tuple[str, dict[str, Any]]] = []
    with caplog.at_level(logging.WARNING):
        run = run_program(DEV, stack="dev", preview=True, calls=calls)
    assert run.of_type("hcloud:index/server:Server")
    assert not [c for c in calls if c[0].startswith("hcloud:")]
    assert any("lookup skipped" in r.getMessage() for r in caplog.records)


def test_9_dedicated_only_stacks_look_nothing_up(caplog: pytest.LogCaptureFixture):
    calls: list[tuple[str, dict[str, Any]]] = []
    with caplog.at_level(logging.WARNING):
        run_program({**PROD, **TOKEN}, stack="prod", calls=calls)
    assert calls == []
    assert not any("lookup skipped" in r.getMessage() for r in caplog.records)
