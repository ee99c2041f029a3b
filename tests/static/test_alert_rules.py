"""Static checks of the fleet's Prometheus alert rules (monitoring/alerts.yml).

`promtool check rules` must accept the rules, and `promtool test rules` must
pass monitoring/alerts_test.yml: recorded-looking series for which each alert
fires when it should, with its exact labels and annotations, and stays quiet
in the healthy and boundary cases. The Python checks here add that every
alert has a severity, a summary and a description, that every alert (at each
severity) is tested firing and tested quiet, and that the rules and the tests
name only the metrics the hosts publish. Proves the rules do what their tests
say against promtool's engine; proves nothing about what a host really
writes (the hostlab does) or about Alertmanager's routing.

promtool comes from Debian's `prometheus` package, which `.ci/setup`
installs; without it these tests fail, they do not skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "monitoring" / "alerts.yml"
RULE_TESTS = ROOT / "monitoring" / "alerts_test.yml"
PROMTOOL_TIMEOUT = 120

# The metric names each host writes for its node exporter's textfile
# collector (job functions-runtime-node). The rules may use no other.
HOST_METRICS = frozenset({
    "functions_runtime_canary_success",
    "functions_runtime_canary_last_run_timestamp_seconds",
    "functions_runtime_canary_interval_seconds",
    "functions_runtime_canary_check_success",
    "functions_runtime_reboot_required",
    "functions_runtime_certificate_expiry_timestamp_seconds",
    "functions_runtime_endpoint_policy_up",
    "functions_runtime_disk_used_ratio",
    "functions_runtime_disk_watermark_ratio",
    "functions_runtime_gc_last_run_timestamp_seconds",
})
METRIC_NAME = re.compile(r"\bfunctions_runtime_[a-z0-9_]+")
GROUP = "functions-runtime"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: run `bash .ci/setup` (it installs Debian's prometheus package)")
    return path


def run_promtool(*args: str) -> None:
    proc = subprocess.run(
        [promtool(), *args], cwd=ROOT, capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT,
    )
    assert proc.returncode == 0, f"promtool {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alert_rules() -> list[dict[str, Any]]:
    groups = load(RULES)["groups"]
    assert [g["name"] for g in groups] == [GROUP]
    rules = groups[0]["rules"]
    assert rules, "no rules"
    return rules


def test_promtool_checks_the_rules():
    run_promtool("check", "rules", str(RULES.relative_to(ROOT)))


def test_promtool_unit_tests_pass():
    run_promtool("test", "rules", str(RULE_TESTS.relative_to(ROOT)))


def test_every_alert_has_a_severity_a_summary_and_a_description():
    for rule in alert_rules():
        assert "alert" in rule, f"not an alert: {rule}"
        name = rule["alert"]
        assert rule.get("labels", {}).get("severity") in {"warning", "critical"}, name
        annotations = rule.get("annotations", {})
        for key in ("summary", "description"):
            assert annotations.get(key, "").strip(), f"{name}: no {key}"
        assert "{{ $labels.instance }}" in annotations["summary"], f"{name}: the summary names no host"
        assert "{{ $labels.instance }}" in annotations["description"], f"{name}: the description names no host"


def test_the_rules_use_only_the_metrics_the_hosts_publish():
    used = set()
    for rule in alert_rules():
        text = " ".join([rule["expr"], *rule.get("annotations", {}).values()])
        used |= set(METRIC_NAME.findall(text))
    assert used, "the rules use no functions_runtime_* metric"
    assert used <= HOST_METRICS, f"not published by the hosts: {sorted(used - HOST_METRICS)}"


def test_the_unit_tests_feed_only_the_metrics_the_hosts_publish():
    tests = load(RULE_TESTS)["tests"]
    names = {
        METRIC_NAME.match(series["series"]).group(0)
        for test in tests for series in test["input_series"]
        if METRIC_NAME.match(series["series"])
    }
    assert names <= HOST_METRICS, f"not published by the hosts: {sorted(names - HOST_METRICS)}"


def test_every_alert_is_tested_firing_and_quiet():
    cases = [case for test in load(RULE_TESTS)["tests"] for case in test["alert_rule_test"]]
    fired = {
        (case["alertname"], alert["exp_labels"]["severity"])
        for case in cases for alert in case.get("exp_alerts") or []
    }
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    wanted = {(rule["alert"], rule["labels"]["severity"]) for rule in alert_rules()}
    assert wanted - fired == set(), f"never tested firing: {sorted(wanted - fired)}"
    assert {name for name, _ in wanted} - quiet == set(), "never tested quiet"
