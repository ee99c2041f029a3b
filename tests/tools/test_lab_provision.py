"""tools/lab/provision.py without a guest: the program's steps go, in order,
to a stand-in SSH shell; the first failing step stops the run with a
one-line reason and the log's path; a passing verify report becomes the
outputs, written with the client TLS files, all 0600.

The hostlab's test_lab_stack.py runs the same flow against a real guest.
"""

from __future__ import annotations

import io
import json
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from components.endpoint import read_stack_outputs
from tests.support.program import passing_report
from tests.tools.test_lab_program import lab_config
from tools.lab import replay
from tools.lab.progress import PhaseFailed, Progress
from tools.lab.provision import LabPaths, provision


class FakeShell:
    """Answers each step's command; records them in order."""

    commands: list[str] = []
    fail: str | None = None

    def __init__(self, connection: dict[str, Any], workdir: Path) -> None:
        assert (connection["host"], int(connection["port"])) == ("127.0.0.1", 2222)

    def ssh(self, command: str, stdin: Any = None, timeout: float = 600, check: bool = False) -> Any:
        FakeShell.commands.append(command)
        if FakeShell.fail and f"scripts/{FakeShell.fail}" in command:
            return subprocess.CompletedProcess([], 1, "", "apt: fetching\nE: Unable to locate package docker.io\n")
        stdout = passing_report("lab-1") if "verify_host.sh" in command else ""
        return subprocess.CompletedProcess([], 0, stdout, "")


@pytest.fixture
def fake_shell(monkeypatch):
    FakeShell.commands, FakeShell.fail = [], None
    monkeypatch.setattr(replay, "ConnectionShell", FakeShell)
    return FakeShell


def run(tmp_path: Path) -> tuple[dict[str, Any], LabPaths, str]:
    paths = LabPaths(tmp_path / "state")
    out, log = io.StringIO(), io.StringIO()
    try:
        return provision(lab_config(tmp_path), "lab-1", paths, Progress(out, live=False), log,
                         tmp_path / "up.log", 4242), paths, out.getvalue()
    finally:
        (tmp_path / "up.log").write_text(log.getvalue())


def test_the_steps_run_in_order_and_the_outputs_are_written_privately(tmp_path, fake_shell):
    outputs, paths, progress = run(tmp_path)
    assert any("wait" in c for c in fake_shell.commands[:1])
    assert [line for line in progress.splitlines() if line.endswith("...")][:3] == [
        "lab: program...", "lab: wait...", "lab: payload...",
    ]
    assert "lab: endpoint done in" in progress
    endpoint, tls = read_stack_outputs(paths.outputs.read_text())
    assert endpoint.default_runtime == "runsc"
    assert (paths.client / "key.pem").read_text() == tls.key_pem == outputs["runtimeClientTls"]["keyPem"]
    for path in (paths.outputs, paths.verified, *paths.client.iterdir()):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert json.loads(paths.verified.read_text())["qemuPid"] == 4242
    assert "=== lab-1-verify: exit 0" in (tmp_path / "up.log").read_text()


def test_the_first_failing_step_stops_the_run_in_one_line(tmp_path, fake_shell):
    fake_shell.fail = "install"
    with pytest.raises(PhaseFailed) as err:
        run(tmp_path)
    assert str(err.value) == (
        f"install failed: E: Unable to locate package docker.io (full log: {tmp_path / 'up.log'})"
    )
    assert not any("verify_host.sh" in c for c in fake_shell.commands)
    assert not (tmp_path / "state" / "outputs.json").exists()
