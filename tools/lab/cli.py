"""`python -m tools.lab up|down|status|env`: the lab guest as a local host.

`up` builds (or reuses) the Debian 13 guest image, boots it in the
background with a base OS rendered by the program itself (its own admin key
and host key, made here and kept in the state directory) and waits until
cloud-init is done. Then, one of:

- `up --provision`: the program's own steps, run without Pulumi's engine
  (tools/lab/provision.py): the guest is installed, configured and verified,
  and the endpoint's outputs and client TLS files are written to the state
  directory. No Pulumi CLI needed.
- with the Pulumi CLI on PATH: the `lab` stack is configured (pinned host
  key, forwarded SSH port, secret SSH key) in a state backend and with a
  passphrase inside the state directory (tools/lab/stack.py); `pulumi up -s
  lab` deploys it.
- otherwise: the `pulumi config set` lines to run once the CLI is there.

`down` stops the guest by the PID in its pidfile; `status` says whether it
runs and whether the endpoint was verified on this boot and answers; `env`
prints the variables that keep the Pulumi CLI inside the lab.

Long work shows its phase and elapsed time (tools/lab/progress.py, on
stderr); everything else a step printed goes to `logs/up-<time>.log` in the
state directory, named in any error. Everything here is what a user runs: no
test archives, no mocks' fixed keys (tests/ is never imported from here).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import TextIO

from components.base_os import render_user_data
from components.contract import BUSYBOX_VERIFY_IMAGE
from tools.lab.image import default_cache_dir, ensure_guest_image
from tools.lab.progress import PhaseFailed, Progress, one_line
from tools.lab.provision import LabPaths, lab_stack_config, provision
from tools.lab.stack import StackError, configure_lab_stack, env_lines, lab_pulumi_env, pulumi_cli
from tools.lab.surroundings import INTERNET_RESPONDER, KERNEL_KEY_GUARDS
from tools.lab.vm import GuestVM

LAB_SSH_PORT = 2222
LAB_ENDPOINT_PORT = 2376
LAB_HOST_NAME = "lab-1"
# cloud-init's apt update and base packages under TCG took 57-110 s.
CLOUD_INIT_TIMEOUT_S = 900
# QEMU gets this long to exit on SIGTERM before SIGKILL.
STOP_GRACE_S = 10
# `status` asks the endpoint for /_ping for at most this long.
PING_TIMEOUT_S = 10
PROG = "python -m tools.lab"


class LabError(Exception):
    """`lab` cannot go on; one line."""


def lab_state_dir(state_dir: Path | None = None) -> Path:
    """Keys, pidfile, disk and outputs of the lab guest (default: in the cache)."""
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


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (1-65535)")
    return port


def _boot(
    state: Path, ssh_port: int, endpoint_port: int, progress: Progress, log: TextIO, log_path: Path
) -> tuple[GuestVM, Path, str]:
    """Image, keys, boot, cloud-init: the guest up in the background."""
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
    with progress.phase("image"):
        image = ensure_guest_image()
    vm = GuestVM(image, state / "vm", host_public_key=host_public, die_with_parent=False)
    try:
        with progress.phase("boot"):
            vm.start(user_data, ssh_port=ssh_port, forwards={2376: endpoint_port})
            accel = vm.accelerator[0] if vm.accelerator else "?"
            log.write(f"QEMU pid {vm.pid()}, accelerator {vm.accelerator}\n")
            progress.say(f"QEMU pid {vm.pid()} ({accel}); waiting for SSH on 127.0.0.1:{ssh_port}")
            vm.wait_for_ssh(admin_key)
        with progress.phase("cloud-init"):
            result = vm.wait_for_cloud_init(CLOUD_INIT_TIMEOUT_S)
            log.write(f"=== cloud-init status: exit {result.returncode}\n{result.stdout}\n{result.stderr}\n")
            if result.returncode not in (0, 2):  # 2: done with recoverable warnings
                raise PhaseFailed("cloud-init", one_line(result.stdout + result.stderr), log_path)
        with progress.phase("surroundings"):
            # The internet a real server has, for verify's egress control; and
            # the kernel keys guarded against TCG's stale-code panics.
            result = vm.ssh(INTERNET_RESPONDER + KERNEL_KEY_GUARDS, timeout=120)
            log.write(f"=== surroundings: exit {result.returncode}\n{result.stdout}\n{result.stderr}\n")
            if result.returncode != 0:
                raise PhaseFailed("surroundings", one_line(result.stderr or result.stdout), log_path)
    except BaseException as err:
        if not isinstance(err, PhaseFailed):
            log.write(f"=== boot failed: {err}\n{vm.diagnostics()}\n")
        vm.stop()
        raise
    return vm, admin_key, host_public


def _config_lines(host_public: str, admin_key: Path, ssh_port: int) -> str:
    port_line = (
        f"\n  pulumi config set -s lab --path 'functions-runtime:hosts[0].sshPort' {ssh_port}"
        if ssh_port != LAB_SSH_PORT else ""
    )
    return (
        f"  pulumi config set -s lab --path 'functions-runtime:hosts[0].addresses[0].hostKey' '{host_public}'\n"
        f"  pulumi config set -s lab --secret functions-runtime:dedicatedSshKey < {admin_key}{port_line}"
    )


def docker_py_snippet(state: Path, endpoint_port: int) -> str:
    """What a docker-py consumer of this lab runs (the README shows the default)."""
    return (
        "from components.endpoint import docker_client, read_stack_outputs\n"
        f'endpoint, tls = read_stack_outputs(open("{LabPaths(state).outputs}").read())\n'
        f'client = docker_client(endpoint, tls, base_url="tcp://127.0.0.1:{endpoint_port}")\n'
        # The endpoint policy requires memory, PID and CPU limits on every
        # container, and the owner label with the certificate's common name.
        f'print(client.containers.run("{BUSYBOX_VERIFY_IMAGE}", ["uname", "-r"], remove=True, labels=tls.owner_labels,\n'
        '                             mem_limit="256m", pids_limit=128, nano_cpus=1_000_000_000).decode())\n'
    )


def _print_provisioned(state: Path, outputs: dict, endpoint_port: int, ssh_port: int, state_option: str) -> None:
    paths = LabPaths(state)
    host = outputs["runtimeEndpoint"]["hosts"][0]
    runtime = host["runtimes"][0]
    print(json.dumps(outputs["runtimeEndpoint"], indent=2))
    print(
        f"""
The lab endpoint is verified: {runtime['name']} ({runtime['isolation']}, guest kernel {runtime['guestKernel']}) \
as Docker's default runtime,
Docker Engine API over mutual TLS at tcp://127.0.0.1:{endpoint_port} (the guest's {host['dockerHost']}).
This ran the program's own steps without Pulumi's engine: no Pulumi state, no diff; `pulumi up -s lab`
with the Pulumi CLI is the real thing.

  outputs:   {paths.outputs}   (as `pulumi stack output --json --show-secrets`)
  client:    {paths.client}/{{ca,cert,key}}.pem   (mode 0600)
  docker:    DOCKER_HOST=tcp://127.0.0.1:{endpoint_port} DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH={paths.client} docker info
  SSH:       ssh -p {ssh_port} -i {state / 'id_ed25519'} root@127.0.0.1
  stop it:   {PROG}{state_option} down

docker-py (from the repository, with .venv/bin/python):
{docker_py_snippet(state, endpoint_port)}"""
    )


def lab_up(
    ssh_port: int = LAB_SSH_PORT,
    endpoint_port: int = LAB_ENDPOINT_PORT,
    state_dir: Path | None = None,
    do_provision: bool = False,
    artifacts_mirror: str | None = None,
    artifacts_catalog: Path | None = None,
    progress: Progress | None = None,
) -> int:
    """Boot the lab guest in the background; provision it or configure the stack."""
    state = lab_state_dir(state_dir)
    progress = progress or Progress()
    pid = _read_pid(_pidfile(state_dir))
    if pid and pid_alive(pid):
        raise LabError(f"the lab guest is already running (QEMU pid {pid}); `{PROG} down` first")
    if artifacts_catalog is not None and not artifacts_catalog.is_file():
        raise LabError(f"--artifacts-catalog {artifacts_catalog}: no such file")
    state.mkdir(parents=True, exist_ok=True)
    paths = LabPaths(state)
    paths.logs.mkdir(parents=True, exist_ok=True)
    paths.verified.unlink(missing_ok=True)
    log_path = paths.logs / f"up-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.log"
    state_option = f" --state-dir {state}" if state_dir else ""
    with os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as log:
        progress.say(f"log: {log_path}")
        try:
            vm, admin_key, host_public = _boot(state, ssh_port, endpoint_port, progress, log, log_path)
        except PhaseFailed:
            raise
        except Exception as err:
            raise PhaseFailed("boot", one_line(str(err)), log_path) from err
        if do_provision:
            config = lab_stack_config(
                host_public, admin_key.read_text(), ssh_port, artifacts_mirror, artifacts_catalog
            )
            left = f"the guest is left running for a look, `{PROG}{state_option} down` stops it"
            try:
                outputs = provision(config, LAB_HOST_NAME, paths, progress, log, log_path, vm.pid())
            except PhaseFailed as err:
                raise LabError(f"{err}; {left}") from err
            except Exception as err:  # unexpected: the traceback goes to the log, one line here
                log.write(f"=== provisioning\n{traceback.format_exc()}\n")
                raise LabError(f"{type(err).__name__}: {one_line(str(err))} (full log: {log_path}); {left}") from err
            _print_provisioned(state, outputs, endpoint_port, ssh_port, state_option)
            return 0
        header = f"""
The lab guest is up: a Debian 13 machine for the `lab` stack (Pulumi.lab.yaml).
  SSH:      ssh -p {ssh_port} -i {admin_key} root@127.0.0.1
  host key: {host_public}
  endpoint: 127.0.0.1:{endpoint_port} -> 10.0.2.15:2376 (after pulumi up)
  stop it:  {PROG}{state_option} down
"""
        cli = pulumi_cli()
        if cli is None:
            print(
                header
                + f"""
No Pulumi CLI on PATH. Either provision the guest with the program's steps, without Pulumi's engine:
  {PROG}{state_option} down && {PROG}{state_option} up --provision
or install the CLI (bash .ci/setup tries) and configure the `lab` stack once:
  eval "$({PROG}{state_option} env)"     # the lab's own state backend and passphrase
  pulumi stack select --create lab
{_config_lines(host_public, admin_key, ssh_port)}
  pulumi up -s lab
"""
            )
            return 0
        with progress.phase("stack"):
            try:
                configure_lab_stack(state, host_public, admin_key, ssh_port, cli)
            except StackError as err:
                raise PhaseFailed("stack", str(err), log_path) from err
        backend = lab_pulumi_env(state)["PULUMI_BACKEND_URL"]
        print(
            header
            + f"""
The `lab` stack is configured (host key, SSH port, SSH key as a secret) in the lab's own
state backend ({backend}) with its own passphrase; your `pulumi login` is untouched.
  eval "$({PROG}{state_option} env)" && pulumi up -s lab
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


def _endpoint_answers(paths: LabPaths, endpoint_port: int) -> str:
    from components.endpoint import docker_client, read_stack_outputs

    try:
        endpoint, tls = read_stack_outputs(paths.outputs.read_text())
        client = docker_client(endpoint, tls, base_url=f"tcp://127.0.0.1:{endpoint_port}", timeout=PING_TIMEOUT_S)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as err:  # any failure is the answer
        return f"does not answer ({one_line(str(err), 160)})"
    return "answers over mutual TLS"


def lab_status(state_dir: Path | None = None, endpoint_port: int | None = None) -> int:
    """Is the guest up, verified on this boot, and does its endpoint answer?"""
    state = lab_state_dir(state_dir)
    paths = LabPaths(state)
    pid = _read_pid(_pidfile(state_dir))
    if pid is None or not pid_alive(pid):
        print("guest: not running" + (" (stale pidfile)" if pid is not None else ""))
        return 1
    print(f"guest: running (QEMU pid {pid})")
    try:
        verified = json.loads(paths.verified.read_text())
    except (OSError, ValueError):
        verified = None
    if not verified or verified.get("qemuPid") != pid:
        print("endpoint: not verified on this boot (`lab up --provision`, or `pulumi up -s lab`)")
        return 0
    print(f"endpoint: verified at {verified['verifiedAt']} by `lab up --provision`")
    if endpoint_port is not None:
        print(f"endpoint: 127.0.0.1:{endpoint_port} {_endpoint_answers(paths, endpoint_port)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="the local lab host for the `lab` stack")
    parser.add_argument(
        "--state-dir", type=Path, default=None,
        help="where the guest's keys, disk, pidfile and outputs live (default: lab-host/ in the hostlab cache)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="boot the lab guest in the background")
    up.add_argument("--ssh-port", type=_port, default=LAB_SSH_PORT)
    up.add_argument("--endpoint-port", type=_port, default=LAB_ENDPOINT_PORT)
    up.add_argument(
        "--provision", action="store_true",
        help="install, configure and verify it with the program's own steps, without Pulumi's engine",
    )
    up.add_argument("--artifacts-mirror", metavar="URL", help="the stack's artifacts.mirror (as the guest reaches it)")
    up.add_argument("--artifacts-catalog", metavar="FILE", type=Path, help="the stack's artifacts.catalog")
    sub.add_parser("down", help="stop the lab guest")
    status = sub.add_parser("status", help="is it running, verified, answering?")
    status.add_argument("--endpoint-port", type=_port, default=LAB_ENDPOINT_PORT)
    sub.add_parser("env", help="the variables that keep the Pulumi CLI inside the lab (for eval)")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            return lab_up(
                args.ssh_port, args.endpoint_port, args.state_dir, args.provision,
                args.artifacts_mirror, args.artifacts_catalog,
            )
        if args.command == "down":
            return lab_down(args.state_dir)
        if args.command == "env":
            sys.stdout.write(env_lines(lab_state_dir(args.state_dir)))
            return 0
        return lab_status(args.state_dir, args.endpoint_port)
    except (LabError, PhaseFailed) as err:
        print(f"{PROG} {args.command}: {err}", file=sys.stderr)
        return 1
