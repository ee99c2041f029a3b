"""Smoke test of the hostlab machine layer, on a real guest.

Proves: the Debian 13 image builds from Debian's archive (or is reused from
the cache), boots under QEMU with a NoCloud seed, cloud-init applies the
user-data (our key for root) and finishes, and sshd answers on a forwarded
loopback port. It does not provision anything: that is the replay's job.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.hostlab.vm import GuestVM

pytestmark = [pytest.mark.hostlab, pytest.mark.timeout(3600)]

# cloud-init's final stage runs after sshd is up; measured 65-110 s after
# start under TCG here.
CLOUD_INIT_TIMEOUT_S = 600


def minimal_user_data(public_key: str) -> str:
    return (
        "#cloud-config\n"
        "disable_root: false\n"
        "ssh_pwauth: false\n"
        f"ssh_authorized_keys:\n  - {public_key}\n"
    )


def write_timings(timings: dict, cache_dir: Path) -> Path:
    out = cache_dir / "timings"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"smoke-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(timings, indent=2) + "\n")
    return path


def test_guest_boots_with_cloud_init_and_answers_ssh(
    guest_image, ssh_keypair, hostlab_cache_dir, tmp_path
):
    private_key, public_key = ssh_keypair
    timings = {
        "image": "fresh" if guest_image.built_now else "cached",
        "image_key": guest_image.key,
        "image_build_s": round(guest_image.build_seconds, 1),
    }
    with GuestVM(guest_image, tmp_path / "vm") as vm:
        vm.start(minimal_user_data(public_key), forwards={2376: 0})
        timings["accelerator"] = vm.accelerator[0]
        timings["accelerator_reason"] = vm.accelerator[1]
        timings["boot_to_ssh_s"] = round(vm.wait_for_ssh(private_key), 1)

        status = vm.ssh("cloud-init status --wait --long", timeout=CLOUD_INIT_TIMEOUT_S)
        timings["boot_to_cloud_init_done_s"] = round(time.monotonic() - vm.started_at, 1)
        assert status.returncode == 0, f"cloud-init did not finish cleanly:\n{status.stdout}{status.stderr}"
        assert "status: done" in status.stdout, status.stdout

        os_release = vm.ssh("cat /etc/os-release", check=True).stdout
        assert "VERSION_CODENAME=trixie" in os_release, os_release

        # The key cloud-init installed is ours and we are root.
        assert vm.ssh("id -u", check=True).stdout.strip() == "0"
        # The guest sees the pinned host key recorded on first connection.
        assert vm.known_hosts.read_text().strip(), "known_hosts empty after first connection"
        pid = vm.pid()

    assert not vm.is_running(), f"QEMU (pid {pid}) still running after stop()"
    path = write_timings(timings, hostlab_cache_dir)
    width = max(len(k) for k in timings)
    print("\nhostlab smoke timings")
    for k, v in timings.items():
        print(f"  {k:<{width}}  {v}")
    print(f"  saved to {path}")
