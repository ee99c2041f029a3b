"""`python -m tools.lab up|down|status`: the lab guest as a local host.

`up` builds (or reuses) the Debian 13 guest image, boots it in the
background with a base OS rendered by the program itself (its own admin key
and host key, made here and kept in the state directory), waits until
cloud-init is done and prints the `pulumi config set` lines that make the
`lab` stack (`Pulumi.lab.yaml`) adopt it as a dedicated host. `down` stops
it by the PID in its pidfile; `status` says whether it runs.

Everything here is what a user runs: no test archives, no mocks, no fixed
keys (tests/ must never be imported from this package; a test checks).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import time
from pathlib import Path

from components.base_os import render_user_data
from tools.lab.image import default_cache_dir, ensure_guest_image
from tools.lab.vm import GuestVM

LAB_SSH_PORT = 2222
LAB_ENDPOINT_PORT = 2376
LAB_HOST_NAME = "lab-1"
# cloud-init's apt update and base packages under TCG took 57-110 s.
CLOUD_INIT_TIMEOUT_S = 900
# QEMU gets this long to exit on SIGTERM before SIGKILL.
STOP_GRACE_S = 10
PROG = "python -m tools.lab"


def lab_state_dir(state_dir: Path | None = None) -> Path:
    """Keys, pidfile and disk of the lab guest (default: in the hostlab cache)."""
    return state_dir or default_cache_dir() / "lab-host"


def ensure_key(path: Path, comment: str) -> str:
    """An ed25519 key pair at `path` (made once); its public key, two words."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def pid_alive(pid: int) -> bool:
    """True when `pid` is a live process (a zombie is not a guest)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _pidfile(state_dir: Path | None) -> Path:
    return lab_state_dir(state_dir) / "vm" / "qemu.pid"


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def lab_up(
    ssh_port: int = LAB_SSH_PORT, endpoint_port: int = LAB_ENDPOINT_PORT, state_dir: Path | None = None
) -> int:
    """Boot the lab guest in the background for `pulumi up -s lab`."""
    state = lab_state_dir(state_dir)
    pid = _read_pid(_pidfile(state_dir))
    if pid and pid_alive(pid):
        print(f"the lab guest is already running (pid {pid}); `lab down` first")
        return 1
    admin_key = state / "id_ed25519"
    admin_public = ensure_key(admin_key, "functions-runtime-lab-admin")
    host_key = state / "ssh_host_ed25519_key"
    host_public = ensure_key(host_key, LAB_HOST_NAME)
    user_data = render_user_data(
        authorized_keys=[admin_public],
        host_key_private=host_key.read_text(),
        host_key_public=host_public,
        hostname=LAB_HOST_NAME,
    )
    print("building or reusing the Debian 13 guest image (first time: a few minutes)...", flush=True)
    image = ensure_guest_image()
    vm = GuestVM(image, state / "vm", host_public_key=host_public, die_with_parent=False)
    vm.start(user_data, ssh_port=ssh_port, forwards={2376: endpoint_port})
    accel = vm.accelerator[0] if vm.accelerator else "?"
    print(f"booting (QEMU pid {vm.pid()}, {accel}); waiting for SSH...", flush=True)
    try:
        vm.wait_for_ssh(admin_key)
        vm.wait_for_cloud_init(CLOUD_INIT_TIMEOUT_S)
    except Exception:
        vm.stop()
        raise
    state_option = f" --state-dir {state}" if state_dir else ""
    # Pulumi.lab.yaml says 2222; another forwarded port needs its own line.
    port_line = (
        f"\n  pulumi config set -s lab --path 'functions-runtime:hosts[0].sshPort' {ssh_port}"
        if ssh_port != LAB_SSH_PORT else ""
    )
    print(
        f"""
The lab guest is up: a Debian 13 machine for the `lab` stack (Pulumi.lab.yaml).
  SSH:      ssh -p {ssh_port} -i {admin_key} root@127.0.0.1
  host key: {host_public}
  endpoint: 127.0.0.1:{endpoint_port} -> 10.0.2.15:2376 (after pulumi up)
  stop it:  {PROG}{state_option} down

Then, with the Pulumi CLI and a local state backend:
  pulumi login --local
  pulumi stack init lab            # once; or: pulumi stack select lab
  pulumi config set -s lab --path 'functions-runtime:hosts[0].addresses[0].hostKey' '{host_public}'
  pulumi config set -s lab --secret functions-runtime:dedicatedSshKey < {admin_key}{port_line}
  pulumi up -s lab
"""
    )
    return 0


def lab_down(state_dir: Path | None = None) -> int:
    """Stop the guest by the PID in its pidfile: SIGTERM, SIGKILL after a grace."""
    pidfile = _pidfile(state_dir)
    pid = _read_pid(pidfile)
    if pid is None:
        print("the lab guest is not running (no pidfile)")
        return 0
    if pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        print(f"stopped the lab guest (QEMU pid {pid})")
    pidfile.unlink(missing_ok=True)
    return 0


def lab_status(state_dir: Path | None = None) -> int:
    pid = _read_pid(_pidfile(state_dir))
    if pid is None:
        print("not running")
        return 1
    alive = pid_alive(pid)
    print(f"running (QEMU pid {pid})" if alive else "not running (stale pidfile)")
    return 0 if alive else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="the local lab host for the `lab` stack")
    parser.add_argument(
        "--state-dir", type=Path, default=None,
        help="where the guest's keys, disk and pidfile live (default: lab-host/ in the hostlab cache)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="boot the lab guest in the background")
    up.add_argument("--ssh-port", type=int, default=LAB_SSH_PORT)
    up.add_argument("--endpoint-port", type=int, default=LAB_ENDPOINT_PORT)
    sub.add_parser("down", help="stop the lab guest")
    sub.add_parser("status", help="is it running?")
    args = parser.parse_args(argv)
    if args.command == "up":
        return lab_up(args.ssh_port, args.endpoint_port, args.state_dir)
    if args.command == "down":
        return lab_down(args.state_dir)
    return lab_status(args.state_dir)
