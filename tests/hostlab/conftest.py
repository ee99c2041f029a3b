"""Fixtures for hostlab tests: the cached guest image and a throwaway SSH key.

Tests here need QEMU, debootstrap, genisoimage and root (the image build uses
debootstrap and chroot). `.ci/install-hostlab-deps.sh` installs the tools.
Without them a test is skipped with the reason, except under CI (CI=true),
where a missing tool is a failure: CI must not pass by skipping the lab.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.hostlab.image import GuestImage, default_cache_dir, ensure_guest_image
from tests.hostlab.reports import lab_reports

REQUIRED_TOOLS = ("qemu-system-x86_64", "qemu-img", "debootstrap", "genisoimage", "ssh", "ssh-keygen")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "hostlab: boots a real Debian 13 guest under QEMU (minutes under TCG); "
        "deselect with -m 'not hostlab'",
    )


def _missing_prerequisites() -> list[str]:
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if os.geteuid() != 0:
        missing.append("root (debootstrap/chroot)")
    return missing


@pytest.fixture(scope="session")
def hostlab_cache_dir() -> Path:
    return default_cache_dir()


@pytest.fixture(scope="session")
def guest_image(hostlab_cache_dir: Path) -> GuestImage:
    missing = _missing_prerequisites()
    if missing:
        message = f"hostlab needs {', '.join(missing)}; run .ci/install-hostlab-deps.sh as root"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return ensure_guest_image(hostlab_cache_dir)


@pytest.fixture
def ssh_keypair(tmp_path: Path) -> tuple[Path, str]:
    """(private key path, public key line) of a fresh ed25519 key."""
    key = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hostlab-test", "-f", str(key)],
        check=True,
    )
    return key, key.with_suffix(".pub").read_text().strip()



def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The lab's timing tables (pytest captures a passing test's output)."""
    for text in lab_reports():
        terminalreporter.write_sep("-", "hostlab")
        terminalreporter.write_line(text)
