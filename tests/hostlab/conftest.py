"""Fixtures for hostlab tests: the cached guest image, a throwaway SSH key,
and the one shared guest of the provisioning tests (shared_guest.py).

Tests here need QEMU, debootstrap, genisoimage and root (the image build uses
debootstrap and chroot). `.ci/install-hostlab-deps.sh` installs the tools.
Without them a test is skipped with the reason, except under CI (CI=true),
where a missing tool is a failure: CI must not pass by skipping the lab.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hostlab import testbed
from tests.hostlab.reports import add_lab_report, lab_reports
from tests.hostlab.shared_guest import SharedGuest, boot
from tools.lab.image import GuestImage, default_cache_dir, ensure_guest_image
from tools.lab.vm import GuestKernelCrashed

# cloud-init's first boot (apt update, base packages) took 57-120 s under TCG.
CLOUD_INIT_TIMEOUT_S = 600

REQUIRED_TOOLS = ("qemu-system-x86_64", "qemu-img", "debootstrap", "genisoimage", "ssh", "ssh-keygen")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "hostlab: boots a real Debian 13 guest under QEMU (minutes under TCG); "
        "deselect with -m 'not hostlab'",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A hostlab test during which the guest's kernel crashed runs once more.

    Only for `GuestKernelCrashed` (an oops or reboot on the guest's console),
    which under multi-threaded TCG has been the emulator's: a stale patched
    instruction on another vCPU ("Oops: int3"). Any other failure fails at
    once, and a crash that repeats fails the test. The rerun starts from a
    restored snapshot (SharedGuest.at); the crash is in the timings report.
    """
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.flaky(reruns=1, only_rerun=[GuestKernelCrashed]))


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


@pytest.fixture(scope="session")
def shared_guest(guest_image: GuestImage, hostlab_cache_dir: Path, tmp_path_factory: Any) -> Iterator[SharedGuest]:
    """The provisioning tests' one guest, booted at first use, stopped (by PID) at the end.

    Booted only when a test asks for it, so a module that boots its own
    guest (test_lab_stack.py) and sorts before the first user never runs
    beside it.
    """
    work = tmp_path_factory.mktemp("shared")
    timings: dict[str, Any] = {
        "image": "fresh" if guest_image.built_now else "cached",
        "image_build_s": round(guest_image.build_seconds, 1),
    }
    started = time.monotonic()
    # The cached path, measured in the same run as a fresh build would be.
    again = ensure_guest_image(hostlab_cache_dir)
    assert again.key == guest_image.key and not again.built_now, "the image was not reused"
    timings["image_cached_s"] = round(time.monotonic() - started, 1)
    started = time.monotonic()
    image = testbed.private_copy(testbed.build_verify_image(hostlab_cache_dir), work / "verify-image")
    timings["verify_image_archive_s"] = round(time.monotonic() - started, 1)
    artifacts = testbed.make_test_artifacts(work / "artifacts", hostlab_cache_dir)
    with testbed.Mirror(artifacts.directory) as mirror:
        guest = boot(guest_image, work, mirror, artifacts, image, CLOUD_INIT_TIMEOUT_S)
        guest.timings = {**timings, **guest.timings}
        try:
            yield guest
        finally:
            guest.vm.stop()
            if guest.vm.crashes:
                guest.timings["guest_kernel_crashes"] = list(guest.vm.crashes)
            guest.timings["total_session_guest_s"] = round(time.monotonic() - started, 1)
            add_lab_report(format_timings(guest.timings), guest.timings, hostlab_cache_dir)


@pytest.fixture
def lab(shared_guest: SharedGuest) -> SharedGuest:
    """The shared guest, as the provisioning tests call it."""
    return shared_guest


def format_timings(t: dict[str, Any]) -> str:
    rows = [
        ("image build", f"{t.get('image_build_s')} s ({t.get('image')})"),
        ("image reuse (cached)", f"{t.get('image_cached_s')} s"),
        ("verify image archive", f"{t.get('verify_image_archive_s')} s"),
        ("boot to SSH", f"{t.get('boot_to_ssh_s')} s ({t.get('accelerator')})"),
        ("cloud-init done", f"{t.get('boot_to_cloud_init_done_s')} s"),
    ]
    for step in ("wait", "payload", "bootstrap", "install", "firewall", "configure", "verify-image", "verify"):
        if f"first_{step}_s" in t:
            rows.append((f"first replay: {step}", f"{t[f'first_{step}_s']} s"))
    for key, label in (
        ("snapshot_save_cloud-init-done_s", "snapshot saved: cloud-init-done"),
        ("snapshot_save_installed_s", "snapshot saved: installed"),
        ("snapshot_save_verified_s", "snapshot saved: verified"),
        ("first_replay_s", "first replay, all steps"),
        ("second_replay_s", "second replay, all steps (nothing to do)"),
        ("second_verify_s", "  of which verify (always runs)"),
        ("converge_replay_s", "replay after an interrupted install"),
        ("total_session_guest_s", "shared guest, first use to stop"),
    ):
        if key in t:
            rows.append((label, f"{t[key]} s"))
    restores = t.get("snapshot_restores", [])
    if restores:
        listed = ", ".join(f"{name} {s}" for r in restores for name, s in r.items())
        rows.append((f"snapshot restores ({len(restores)}), to SSH", f"{listed} s"))
    for crash in t.get("guest_kernel_crashes", []):
        rows.append(("guest kernel crash (test run again)", crash))
    width = max(len(r[0]) for r in rows)
    return "hostlab provisioning timings (shared guest)\n" + "\n".join(f"  {a:<{width}}  {b}" for a, b in rows)
