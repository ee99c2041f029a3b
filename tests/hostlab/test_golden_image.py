"""A golden image, baked and booted on real guests.

The shared guest, restored to `installed` (the pipeline run through install
by the program's own steps), runs the program's seal step for a golden
builder (`seal_image.sh`, the command the program gives its builder). Its
disk, paused, is copied as the golden disk (as Hetzner snapshots a running
server). A fresh guest boots from that disk with the program's own
user-data for a new host of a golden stack (no package update) and the
program's remaining steps run on it: install finds everything and downloads
nothing, verify passes. A second clone boots to SSH to show each clone is a
machine of its own.

What it proves: sealing leaves no identity behind, a clone boots with the
program's user-data and host key, and installs nothing. What it does not:
Hetzner's snapshot API (the disk copy stands in for it), or the plan of a
real rollout (tests/unit/test_golden_image.py shows the graph; the
acceptance test the plan). Power-on to verified is measured for the golden
guest and taken from the same session's stock guest; the ratio is reported,
never asserted.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.hostlab import testbed
from tests.hostlab.reports import add_lab_report
from tests.hostlab.shared_guest import INSTALLED, SharedGuest
from tools.lab.replay import Replay, host_steps, log_replay, replay, user_data
from tools.lab.surroundings import INTERNET_RESPONDER, KERNEL_KEY_GUARDS
from tools.lab.vm import GuestVM

pytestmark = [pytest.mark.hostlab, pytest.mark.timeout(3600)]

CLOUD_INIT_TIMEOUT_S = 600
GUEST_COMMAND_TIMEOUT_S = 120
# The stock guest's steps from power-on to a verified host.
TO_VERIFIED = ("wait", "payload", "bootstrap", "install", "firewall", "configure", "verify-image", "verify")
# The machine-id, then the fingerprint of every SSH host key the machine has.
IDENTITY = "cat /etc/machine-id; for k in /etc/ssh/ssh_host_*_key.pub; do ssh-keygen -lf $k | cut -d' ' -f2; done"


def golden_config(lab: SharedGuest) -> dict[str, Any]:
    """The lab's Cloud stack with golden images on, and a group of two new hosts."""
    config = lab.hcloud_config()
    config["functions-runtime:hosts"] = [{**config["functions-runtime:hosts"][0], "name": "gold", "count": 2}]
    config["functions-runtime:goldenImage"] = {"enabled": True}
    return config


def guest_rx_bytes(sh: Any) -> int:
    """Bytes the guest received on its one network interface since boot."""
    out = sh("awk '/eth0|enp|ens/ {print $2; exit}' /proc/net/dev")
    return int(out.strip() or 0)


def step_json(stdout: str) -> dict:
    lines = [line for line in stdout.strip().splitlines() if line.strip()]
    return json.loads(lines[-1])


@dataclasses.dataclass
class Golden:
    builder: dict[str, str]
    seal: dict
    disk: Path
    image: Any
    copy_s: float


@pytest.fixture(scope="module")
def golden(shared_guest: SharedGuest, guest_image: Any, tmp_path_factory: Any) -> Any:
    """The sealed golden disk, copied from the shared guest at `installed`."""
    lab = shared_guest
    run = lab.program(golden_config(lab))
    (seal,) = [r for r in run.resources if r.name.endswith("-seal") and "-golden-builder-" in r.name]
    lab.fresh(INSTALLED)
    ident = lab.sh(IDENTITY).split()
    builder = {
        "machineId": ident[0],
        "hostKeys": " ".join(ident[1:]),
        "engineId": lab.sh("docker info --format '{{.ID}}'").strip(),
    }
    lab.timings["stock_rx_bytes_through_install"] = guest_rx_bytes(lab.sh)
    sealed = step_json(lab.sh(seal.plain["create"], timeout=300))
    # The builder is sealed: its access is gone with it (restores need no SSH).
    work = tmp_path_factory.mktemp("gold")
    disk = work / "golden.qcow2"
    start = time.monotonic()
    lab.vm.qmp("stop")
    try:
        subprocess.run(
            ["qemu-img", "convert", "-U", "-O", "qcow2", "-B", str(guest_image.disk), "-F", "qcow2",
             str(lab.vm.overlay), str(disk)],
            check=True, timeout=900,
        )
    finally:
        lab.vm.qmp("cont")
        lab.current = None
    copy_s = time.monotonic() - start
    yield Golden(builder, sealed, disk, dataclasses.replace(guest_image, disk=disk), copy_s)
    disk.unlink(missing_ok=True)


def boot_clone(golden: Golden, run: Any, host: str, workdir: Path) -> GuestVM:
    """A guest booted from the golden disk with the program's user-data for `host`.

    The caller stops it (by PID); a boot that fails is stopped here.
    """
    conn = host_steps(run, host)[0].connection
    key = workdir / "key"
    key.write_text(conn["privateKey"])
    key.chmod(0o600)
    vm = GuestVM(golden.image, workdir / "vm", host_public_key=conn["hostKey"])
    try:
        vm.start(user_data(run, host))
        vm.wait_for_ssh(key)
    except BaseException:
        vm.stop()
        raise
    return vm


def test_sealing_leaves_no_identity_and_no_builder_access(golden):
    assert golden.seal["sealed"] is True, golden.seal
    assert golden.seal["machineId"] in ("uninitialized", "empty"), golden.seal
    removed = " ".join(golden.seal["removed"])
    assert "ssh_host_" in removed and "authorized_keys" in removed, golden.seal


def test_a_golden_clone_installs_nothing_and_verifies(lab, golden, tmp_path_factory, hostlab_cache_dir):
    run = lab.program(golden_config(lab))
    steps = host_steps(run, "gold-1")
    names = [s.name.removeprefix("gold-1-") for s in steps]
    assert names[: len(TO_VERIFIED)] == list(TO_VERIFIED)
    config_user_data = user_data(run, "gold-1")
    assert "package_update: false" in config_user_data and "packages:" not in config_user_data
    served = {name: lab.mirror.downloads(name) for name in lab.artifacts.hashes}
    timings: dict[str, Any] = {"golden_disk_copy_s": round(golden.copy_s, 1)}
    # The shared guest waits, paused, so the clone has the machine to itself as the stock guest had.
    lab.vm.qmp("stop")
    lab.current = None
    try:
        first = clone_to_verified(lab, golden, run, steps, tmp_path_factory.mktemp("clone1"), timings)
        assert {name: lab.mirror.downloads(name) for name in served} == served, "the clone fetched a release file"
        # A second clone: its own machine-id and host key again.
        vm2 = boot_clone(golden, run, "gold-2", tmp_path_factory.mktemp("clone2"))
        try:
            second = vm2.ssh(IDENTITY, timeout=GUEST_COMMAND_TIMEOUT_S, check=True).stdout.split()
        finally:
            vm2.stop()
    finally:
        lab.vm.qmp("cont")
    assert second[0] not in (first[0], golden.builder["machineId"]) and len(second[0]) == 32
    assert not set(second[1:]) & (set(first[1:]) | set(golden.builder["hostKeys"].split())), second
    timings["stock_rx_bytes_through_install"] = lab.timings.get("stock_rx_bytes_through_install")
    lab.timings.update(timings)
    add_lab_report(
        "golden image: " + ", ".join(f"{k} {v}" for k, v in timings.items()), timings, hostlab_cache_dir, name="golden"
    )


def clone_to_verified(
    lab: SharedGuest, golden: Golden, run: Any, steps: list, workdir: Path, timings: dict[str, Any]
) -> list[str]:
    """Boot the first clone and run the program's steps on it; its identity."""
    vm = boot_clone(golden, run, "gold-1", workdir)
    try:
        vm.wait_for_cloud_init(CLOUD_INIT_TIMEOUT_S)
        timings["golden_boot_to_cloud_init_done_s"] = round(time.monotonic() - (vm.started_at or 0), 1)

        def sh(command: str, timeout: float = GUEST_COMMAND_TIMEOUT_S) -> str:
            return vm.ssh(command, timeout=timeout, check=True).stdout

        # The lab's surroundings, as the shared guest has them (Hetzner's metadata service, the internet).
        assert sh(testbed.METADATA_RESPONDER).strip().endswith("ready")
        assert sh(INTERNET_RESPONDER).strip().endswith("ready")
        assert sh(KERNEL_KEY_GUARDS).strip().endswith("ready")
        rx: dict[str, int] = {}

        def after(result: Any) -> None:
            if result.name == "gold-1-install":
                rx["install"] = guest_rx_bytes(sh)

        rep: Replay = replay(vm, steps, on_result=after, check=False)
        assert all(r.returncode == 0 for r in rep.results), log_replay(rep)
        by = {r.name.removeprefix("gold-1-"): r for r in rep.results}
        install = step_json(by["install"].stdout)
        assert install["downloads"] == [] and install["downloadedBytes"] == {"internet": 0, "mirror": 0, "peer": 0}
        assert install["installedPackages"] == [] and install["changed"] == [], install
        assert json.loads(by["verify"].stdout)["passed"] is True

        # A machine of its own: not the builder's machine-id, Docker engine or host key.
        ident = sh(IDENTITY).split()
        assert ident[0] != golden.builder["machineId"] and len(ident[0]) == 32
        assert ident[1:] and not set(ident[1:]) & set(golden.builder["hostKeys"].split()), ident
        engine = sh("docker info --format '{{.ID}}'").strip()
        assert engine and engine != golden.builder["engineId"]

        golden_s = timings["golden_boot_to_cloud_init_done_s"] + sum(by[s].seconds for s in TO_VERIFIED)
        stock_s = lab.timings.get("boot_to_cloud_init_done_s", 0) + sum(
            lab.timings.get(f"first_{s}_s", 0) for s in TO_VERIFIED
        )
        timings.update(
            {
                **{f"golden_{s}_s": round(by[s].seconds, 1) for s in TO_VERIFIED},
                "golden_power_on_to_verified_s": round(golden_s, 1),
                "stock_power_on_to_verified_s": round(stock_s, 1),
                "golden_to_stock_ratio": round(golden_s / stock_s, 2) if stock_s else None,
                "golden_rx_bytes_through_install": rx.get("install"),
                "golden_install_downloaded_bytes": sum(install["downloadedBytes"].values()),
            }
        )
        return ident
    finally:
        vm.stop()
