"""One booted guest for the provisioning tests, with named snapshots.

The guest boots once per test session with the program's own user-data
(a Cloud-shaped `hostlab` stack, `testbed.hcloud_config`) and is then put
into named states by restoring a snapshot (`loadvm`, seconds) instead of
provisioning again (minutes):

- `cloud-init-done`: the guest as the program's first step finds it
  (cloud-init done, the lab's metadata responder running);
- `installed`: after the program's install step (first replay);
- `verified`: after the whole first replay, verify passed.

`installed` and `verified` are taken during the first replay, the first time
a test asks for either; that replay's results are kept (`first`) for the
tests that assert on them. A test that only reads the guest, or leaves it as
it found it, calls `at(name)`: a restore only if the guest was changed since
the last save or restore. A test that changes the guest on purpose calls
`fresh(name)`: always a restore, and the next `at()` restores again. After
the guest's kernel crashed (`GuestKernelCrashed`), the next `at()` restores
too, whatever the test was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.contract import CANARY_UNIT
from tests.hostlab import testbed
from tests.support.program import ProgramRun, run_program, stdout_passing
from tools.lab.replay import RemoteStep, Replay, StepResult, log_replay, replay
from tools.lab.surroundings import INTERNET_RESPONDER, KERNEL_KEY_GUARDS
from tools.lab.vm import SSH_CLIENT_ERROR, GuestVM

CLOUD_INIT_DONE = "cloud-init-done"
INSTALLED = "installed"
VERIFIED = "verified"
SNAPSHOTS = (CLOUD_INIT_DONE, INSTALLED, VERIFIED)
GUEST_COMMAND_TIMEOUT_S = 120
# A canary run took 25-28 s on the emulated CPU; a busy machine may triple it.
CANARY_SETTLE_S = 300
# What the guest says about a step that failed, for the assertion message: a
# failure on a busy CI machine is seen once, so its evidence travels with it.
FAILURE_EVIDENCE = (
    "uptime; journalctl -u containerd -u docker -n 40 --no-pager -o short-monotonic; ip -br link; "
    "ls -l /var/lib/cni/networks/*/ 2>&1; ctr --namespace functions-runtime-verify task ls 2>&1"
)


@dataclass
class SharedGuest:
    vm: GuestVM
    mirror: testbed.Mirror
    artifacts: testbed.TestArtifacts
    image: testbed.VerifyImage
    run: ProgramRun
    steps: list[RemoteStep]
    key_path: Path
    cloud_init_status: Any = None
    first: Replay | None = None
    timings: dict[str, Any] = field(default_factory=dict)
    # The snapshot the guest is known to be in, unchanged; None once a test
    # called fresh() (it changes the guest on purpose).
    current: str | None = None
    # Results shared between tests that read them (the endpoint run, ...).
    notes: dict[str, Any] = field(default_factory=dict)
    # How many of the guest's kernel crashes `at()` has already answered.
    crashes_seen: int = 0
    # The first replay's log and the guest's evidence, when it failed.
    first_failure: str = ""

    # ---- states

    def at(self, name: str) -> None:
        """The guest in state `name`: restored only if it may have changed since."""
        if name not in SNAPSHOTS:
            raise ValueError(f"unknown snapshot {name!r}; have {SNAPSHOTS}")
        if len(self.vm.crashes) > self.crashes_seen:
            self.crashes_seen = len(self.vm.crashes)
            self.current = None
        if name not in self.vm.snapshots:
            self._provision_to(name)
        if self.current != name:
            self.restore(name)

    def fresh(self, name: str) -> None:
        """The guest in state `name`, restored now; for a test that changes it."""
        self.at(name)
        self.current = None

    def restore(self, name: str) -> None:
        seconds = self.vm.restore_snapshot(name)
        self.timings.setdefault("snapshot_restores", []).append({name: round(seconds, 1)})
        self.current = name

    def save(self, name: str) -> None:
        seconds = self.vm.save_snapshot(name)
        self.timings[f"snapshot_save_{name}_s"] = round(seconds, 1)
        self.current = name

    def _provision_to(self, name: str) -> None:
        """Take the `installed` and `verified` snapshots during the first replay."""
        assert name in (INSTALLED, VERIFIED), f"{name} is saved at boot"
        assert self.first is None, f"the first replay ran but did not reach {name}:\n{self.first_failure}"
        self.at(CLOUD_INIT_DONE)

        def save_after(result: StepResult) -> None:
            step = result.name.removeprefix(f"{testbed.HOST_NAME}-")
            if result.returncode == 0 and step == "install":
                self.save(INSTALLED)

        self.current = None
        self.first = replay(self.vm, self.steps, on_result=save_after, check=False)
        for result in self.first.results:
            step = result.name.removeprefix(f"{testbed.HOST_NAME}-")
            self.timings[f"first_{step}_s"] = round(result.seconds, 1)
        self.timings["first_replay_s"] = round(sum(r.seconds for r in self.first.results), 1)
        if all(r.returncode == 0 for r in self.first.results) and len(self.first.results) == len(self.steps):
            self.settle_canary()
            self.save(VERIFIED)
        lost = any(r.returncode == SSH_CLIENT_ERROR for r in self.first.results)
        if VERIFIED not in self.vm.snapshots:  # a step failed: read the evidence while the guest is as it left it
            evidence = self.vm.diagnostics(60) if lost else self.evidence()
            self.first_failure = f"{log_replay(self.first)}\n{evidence}"
        assert name in self.vm.snapshots, f"the first replay did not reach {name}:\n{self.first_failure}"

    def settle_canary(self) -> None:
        """The upkeep step starts the canary's first run in the background:
        `verified` is saved after it, so no test starts beside a canary run."""
        start = time.monotonic()
        self.sh(f"for i in $(seq {CANARY_SETTLE_S // 2}); do systemctl list-jobs --no-legend | grep -q {CANARY_UNIT} || "
                f"[ \"$(systemctl show -P ActiveState {CANARY_UNIT}.service)\" = activating ] || exit 0; sleep 2; "
                "done; exit 1", timeout=CANARY_SETTLE_S + 60)
        self.timings["first_canary_settle_s"] = round(time.monotonic() - start, 1)

    def evidence(self) -> str:
        """The guest's own account after a failed step (never raises)."""
        try:
            result = self.vm.ssh(FAILURE_EVIDENCE, timeout=GUEST_COMMAND_TIMEOUT_S, check=False)
        except Exception as err:  # the evidence must not hide the failure
            return f"--- guest evidence: not read ({type(err).__name__}: {err})"
        return f"--- guest evidence\n{result.stdout}{result.stderr}"

    # ---- helpers

    def sh(self, command: str, timeout: float = GUEST_COMMAND_TIMEOUT_S, check: bool = True) -> str:
        return self.vm.ssh(command, timeout=timeout, check=check).stdout

    def program(self, config: dict, verify_stdout: str | None = None) -> ProgramRun:
        def stdout(name: str, inputs: Any) -> str | None:
            if verify_stdout is None:
                return stdout_passing(name, inputs)  # steps only; no endpoint read
            return verify_stdout if name.endswith("-verify") else "{}"

        return run_program(
            config, testbed.STACK, command_stdout=stdout, server_private_address=testbed.GUEST_ADDRESS
        )

    def hcloud_config(self, catalog: Path | None = None) -> dict:
        return testbed.hcloud_config(self.mirror.url_from_guest, catalog or self.artifacts.catalog, self.image)

    def dedicated_config(self, isolation: str) -> dict:
        conn = self.steps[0].connection
        return testbed.dedicated_config(
            self.mirror.url_from_guest, self.artifacts.catalog, self.image, isolation,
            self.vm.ssh_port, conn["hostKey"], conn["privateKey"],
        )

    def docker_service(self) -> str:
        return self.sh("systemctl show docker.service -p MainPID -p ExecMainStartTimestampMonotonic").strip()


def boot(guest_image: Any, work: Path, mirror: testbed.Mirror, artifacts: testbed.TestArtifacts,
         image: testbed.VerifyImage, cloud_init_timeout: float) -> SharedGuest:
    """Boot the guest with the program's user-data, to the `cloud-init-done` snapshot.

    The caller stops `guest.vm` (by PID) when done, on any exit.
    """
    from tools.lab.replay import host_steps, user_data

    config = testbed.hcloud_config(mirror.url_from_guest, artifacts.catalog, image)
    # Recording run: the remote steps' inputs do not depend on any stdout.
    run = run_program(config, testbed.STACK, server_private_address=testbed.GUEST_ADDRESS)
    steps = host_steps(run, testbed.HOST_NAME)
    conn = steps[0].connection
    key_path = work / "provisioning_key"
    key_path.write_text(conn["privateKey"])
    key_path.chmod(0o600)
    # The guest's host key is the one the program generated and put in the
    # user-data: pinned before the first dial (StrictHostKeyChecking=yes).
    vm = GuestVM(guest_image, work / "vm", host_public_key=conn["hostKey"])
    guest = SharedGuest(vm, mirror, artifacts, image, run, steps, key_path)
    try:
        vm.start(user_data(run, testbed.HOST_NAME), forwards={2376: 0})
        guest.timings["accelerator"] = vm.accelerator[0] if vm.accelerator else None
        guest.timings["boot_to_ssh_s"] = round(vm.wait_for_ssh(key_path), 1)
        guest.cloud_init_status = vm.wait_for_cloud_init(cloud_init_timeout)
        guest.timings["boot_to_cloud_init_done_s"] = round(time.monotonic() - (vm.started_at or 0), 1)
        # Hetzner's metadata service, for the verify step's isolation probe:
        # running before the first snapshot, so every snapshot has it.
        assert guest.sh(testbed.METADATA_RESPONDER).strip().endswith("ready")
        # The internet, for verify's egress control and the egress proofs.
        assert guest.sh(INTERNET_RESPONDER).strip().endswith("ready")
        assert guest.sh(KERNEL_KEY_GUARDS).strip().endswith("ready")  # against TCG's stale-code panics
        guest.save(CLOUD_INIT_DONE)
    except BaseException:
        vm.stop()
        raise
    return guest
