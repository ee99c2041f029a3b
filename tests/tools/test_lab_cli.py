"""tools/lab/cli.py without a guest: bad input is refused in one line, the
README's docker-py snippet is the one `lab up --provision` prints (and the
hostlab test runs), `status` reads what `lab up` left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tools.lab.cli import LAB_ENDPOINT_PORT, docker_py_snippet, lab_state_dir

ROOT = Path(__file__).resolve().parents[2]


def lab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tools.lab", *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
    )


def test_bad_ports_are_refused_by_the_parser(tmp_path):
    result = lab("--state-dir", str(tmp_path), "up", "--ssh-port", "70000")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "python -m tools.lab up: error: argument --ssh-port: 70000 is not a port (1-65535)"
    )
    result = lab("--state-dir", str(tmp_path), "up", "--endpoint-port", "http")
    assert result.returncode == 2 and "'http' is not a port number" in result.stderr


def test_a_missing_catalog_is_one_line_before_anything_boots(tmp_path):
    missing = tmp_path / "nope.tsv"
    result = lab("--state-dir", str(tmp_path / "lab"), "up", "--provision", "--artifacts-catalog", str(missing))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"python -m tools.lab up: --artifacts-catalog {missing}: no such file"]
    assert not (tmp_path / "lab" / "vm").exists()


def test_the_readmes_snippet_is_the_one_lab_up_prints():
    readme = (ROOT / "README.md").read_text()
    default = lab_state_dir(Path.home() / ".cache" / "functions-runtime" / "hostlab" / "lab-host")
    assert docker_py_snippet(default, LAB_ENDPOINT_PORT) in readme


def test_status_of_a_lab_that_never_ran(tmp_path):
    result = lab("--state-dir", str(tmp_path), "status")
    assert (result.returncode, result.stdout) == (1, "guest: not running\n")


def test_status_says_a_verify_of_an_earlier_boot_does_not_count(tmp_path):
    # This process stands in for a running QEMU: its PID is alive.
    (tmp_path / "vm").mkdir()
    (tmp_path / "vm" / "qemu.pid").write_text(f"{os.getpid()}\n")
    (tmp_path / "verified.json").write_text(json.dumps({"qemuPid": 1, "verifiedAt": "2026-11-30T12:00:00Z"}))
    result = lab("--state-dir", str(tmp_path), "status")
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        f"guest: running (QEMU pid {os.getpid()})",
        "endpoint: not verified on this boot (`lab up --provision`, or `pulumi up -s lab`)",
    ]
