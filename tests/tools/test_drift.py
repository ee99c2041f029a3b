"""tools/drift.py on preview documents.

The documents in data/preview/ are shaped as Pulumi 3.272's `pulumi preview
--json` prints them (display.PreviewDigest: steps with op, urn, diffReasons,
replaceReasons, detailedDiff; diagnostics; changeSummary), on the dev stack's
recorded URNs. They are not recorded from a live CLI (it cannot run here):
what this proves is the reader's judgement of such documents, the exit codes
and the report; whether the CLI prints exactly this shape is seen on GitHub.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tools.drift import NotAPreview, judge, main, read_preview

ROOT = Path(__file__).resolve().parents[2]
PREVIEWS = Path(__file__).parent / "data" / "preview"


def preview(name: str) -> str:
    return (PREVIEWS / name).read_text()


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_refreshing_preview_that_plans_nothing_is_no_drift(capsys):
    code, out, _ = run(capsys, str(PREVIEWS / "no-changes.json"), "--stack", "dev")
    assert code == 0 and out == "## dev: no drift\n"


@pytest.mark.parametrize(
    "name, op, resource, because",
    [
        ("server-resized-in-console.json", "update", "cloud-1-server", "serverType"),
        ("firewall-rule-added-by-hand.json", "update", "runtime-fw", "rules"),
        ("host-step-rerun.json", "update", "cloud-1-firewall", "triggers"),
    ],
)
def test_any_planned_step_after_a_refresh_is_drift_named_with_its_reason(capsys, name, op, resource, because):
    code, out, _ = run(capsys, str(PREVIEWS / name), "--stack", "prod")
    assert code == 1
    assert out.startswith("## prod: drift\n")
    row = next(line for line in out.splitlines() if f"`{resource}`" in line)
    assert row.startswith(f"| {op} |") and row.endswith(f"| {because} |")


def test_a_replaced_server_is_called_a_new_machine(capsys):
    code, out, _ = run(capsys, str(PREVIEWS / "provider-upgrade-replaces-a-server.json"), "--stack", "dev")
    assert code == 1 and "**(a server: new machine)**" in out and "| location |" in out


def test_pull_request_mode_fails_only_when_a_server_is_replaced(capsys):
    code, out, _ = run(capsys, str(PREVIEWS / "provider-upgrade-replaces-a-server.json"), "--stack", "dev", "--servers")
    assert code == 1
    assert "replaces or deletes 1 server(s)" in out  # one server, in the three steps of its replacement
    assert "label the pull request `replaces-servers`" in out
    # A change that re-runs a host step, or updates a server in place, passes.
    for name in ("host-step-rerun.json", "server-resized-in-console.json"):
        code, out, _ = run(capsys, str(PREVIEWS / name), "--stack", "dev", "--servers")
        assert code == 0 and out.startswith("## dev: no server replacements"), name
    # The label says the replacement is meant.
    code, _, _ = run(capsys, str(PREVIEWS / "provider-upgrade-replaces-a-server.json"), "--stack", "dev", "--servers",
                     "--servers-allowed")
    assert code == 0


def test_a_failed_preview_is_not_taken_for_no_drift(capsys):
    code, out, err = run(capsys, str(PREVIEWS / "preview-failed.json"), "--stack", "staging")
    assert code == 2 and out == ""
    assert err.strip() == (
        "python -m tools.drift: stack staging: the preview failed: error: hcloud: unable to authenticate your "
        "account (unauthorized)"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "not JSON"),
        ("Previewing update (dev)\n", "not JSON"),
        ("[]", "not a `pulumi preview --json` document"),
        ('{"outputs": {}}', "not a `pulumi preview --json` document"),
        ('{"steps": {"op": "same"}}', "`steps` is not a list"),
        ('{"steps": [{"urn": "urn:pulumi:a::b::c::d"}]}', "a step without op and urn"),
    ],
)
def test_input_that_is_not_a_preview_is_refused_naming_what_it_is(text, message):
    with pytest.raises(NotAPreview, match=message.replace("`", ".").replace("(", ".").replace(")", ".")):
        read_preview(text)


def test_the_json_report_lists_every_finding_and_the_verdict(capsys):
    code, out, _ = run(capsys, str(PREVIEWS / "provider-upgrade-replaces-a-server.json"), "--stack", "dev", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["drift"] is True and doc["stack"] == "dev"
    assert {f["op"] for f in doc["findings"]} == {"create-replacement", "replace", "delete-replaced"}
    assert all(f["because"] == ["location"] for f in doc["findings"])


def test_judge_keeps_only_lost_machines_in_pull_request_mode():
    findings = read_preview(preview("provider-upgrade-replaces-a-server.json"))
    assert judge(findings, servers_only=True, servers_allowed=False) == findings
    updates = read_preview(preview("server-resized-in-console.json"))
    assert judge(updates, servers_only=True, servers_allowed=False) == []
    assert judge(updates, servers_only=False, servers_allowed=False) == updates


def test_the_command_reads_stdin_and_exits_2_on_a_missing_file():
    cmd = [sys.executable, "-m", "tools.drift"]
    ok = subprocess.run([*cmd, "-", "--stack", "dev"], input=preview("no-changes.json"), capture_output=True,
                        text=True, cwd=ROOT, timeout=60)
    assert ok.returncode == 0 and ok.stdout == "## dev: no drift\n"
    missing = subprocess.run([*cmd, "/nonexistent/preview.json", "--stack", "dev"], capture_output=True, text=True,
                             cwd=ROOT, timeout=60)
    assert missing.returncode == 2
    assert missing.stderr.strip() == "python -m tools.drift: /nonexistent/preview.json: No such file or directory"
