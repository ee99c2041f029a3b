"""One hostlab guest under QEMU, reached over real SSH on loopback.

    with GuestVM(image, workdir) as vm:
        vm.start(user_data, forwards={2376: 0})
        vm.wait_for_ssh(private_key)
        vm.ssh("cloud-init status --wait")

Networking is QEMU user networking (slirp): the guest is 10.0.2.15, the host's
loopback is 10.0.2.2 from inside the guest, and every forward listens on
127.0.0.1 only. Nothing else on the machine's network is touched.

Processes: QEMU runs as a child of the test with `-pidfile`; `stop()` kills
it by that PID (SIGTERM, then SIGKILL after a bound) and is called by the
context manager on any exit. If the test process itself dies, the kernel
sends QEMU SIGKILL (PR_SET_PDEATHSIG), so a killed pytest leaves no VM.

Diagnostics: the guest's console (ttyS0) goes to `serial.log`; the image
runs a unit that follows sshd's journal onto a second serial port (ttyS1),
which QEMU writes to `sshd.log`. A failed SSH wait or a refused connection
puts the tail of both into its error, so the reason ("drop connection ...
penalty: ...", "Received signal 15", nothing at all) is read without SSH.

Host keys: each VM has its own known_hosts in its work directory. Without a
pinned key the first connection records the key the guest generated
(`StrictHostKeyChecking=accept-new`: trust on first use, scoped to this one
VM, so a new VM's fresh key never clashes with an old one); every later
connection must present the same key. Pass `host_public_key` (the
ed25519 key the user-data installs via `ssh_keys`) to pin it from the start
with `StrictHostKeyChecking=yes`.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from tools.lab.image import GuestImage

# A stock kernel reaches its root-mount panic in ~1-3 s under working KVM;
# on a backend that cannot run a guest it never prints a line.
KVM_PROBE_TIMEOUT_S = 30
# Boot to SSH measured 47-81 s under TCG on 2 cores; allow for a loaded host.
SSH_WAIT_TIMEOUT_S = 600
SSH_CONNECT_TIMEOUT_S = 10
# One readiness probe's bound: longer than the connect timeout plus sshd's
# LoginGraceTime (30 s, components/base_os.py), so sshd, not this code,
# ends a slow handshake.
SSH_PROBE_TIMEOUT_S = 60
SSH_RETRY_INTERVAL_S = 3
# After `loadvm` the guest answers within seconds; this bounds the wait.
RESTORE_SSH_TIMEOUT_S = 120
# ssh exits 255 for its own errors (connection, host key, authentication).
SSH_CLIENT_ERROR = 255
# What the guest's console shows when its kernel died or restarted (panic=-1
# reboots at once): an oops, a panic, a BUG, or a second boot banner.
KERNEL_CRASH_MARKERS = ("Oops:", "Kernel panic", "BUG: ", "general protection fault", "Linux version ")
KERNEL_CRASH_EXCERPT_LINES = 25
# QEMU gets this long to exit on SIGTERM before SIGKILL.
STOP_GRACE_S = 10
# savevm/loadvm of a booted 4 GiB guest take a few seconds; a QMP command
# that takes this long has hung.
QMP_TIMEOUT_S = 300
# A unix socket path must fit sun_path (108 bytes with its NUL).
UNIX_SOCKET_PATH_MAX = 107
# The TCG guest CPU: x86-64-v2 plus XSAVE (gVisor's systrap platform runs
# xgetbv and dies of SIGILL without it; XSAVE without XSAVEOPT hangs this
# kernel at boot under QEMU 7.2) and SVM (the guest sees a nested /dev/kvm,
# like a KVM host, so the Kata preflight runs). Not `-cpu max`: on the same
# machine it was slower (boot to SSH 53 s vs 39 s, the install step 104 s vs
# 80 s), and under it cloud-init's python3.13 once died of a general
# protection fault. HOSTLAB_TCG_CPU overrides it (debugging only).
TCG_CPU_MODEL = "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt,+cx16,+xsave,+xsaveopt,+svm"
DEFAULT_MEMORY_MIB = 4096
DEFAULT_CPUS = 2
# Overlay size; cloud-init's resize_rootfs grows the ext4 root to fill it.
DEFAULT_DISK_SIZE = "20G"
GUEST_ADDRESS = "10.0.2.15"
GUEST_MAC = "52:54:00:12:34:56"
# net.ifnames=0: the NIC is eth0 whatever PCI slot QEMU gives it.
KERNEL_CMDLINE = "root=/dev/vda rootfstype=ext4 rw console=ttyS0,115200 net.ifnames=0 panic=-1"
# The datasource's network config, as Hetzner's metadata service gives one.
# Without it cloud-init 25.1 falls back to DHCPv4 *and* DHCPv6; QEMU user
# networking has no DHCPv6 server, and ifupdown's `inet6 dhcp` held
# networking.service (and so SSH) for minutes.
DEFAULT_NETWORK_CONFIG = f"""\
version: 1
config:
  - type: physical
    name: eth0
    mac_address: "{GUEST_MAC}"
    subnets:
      - type: dhcp4
"""

# After cloud-init is done: wait until sshd listens again after its last
# reload. The program's user-data ends with `systemctl reload ssh`; sshd
# answers SIGHUP by closing its listeners and re-executing itself, and
# systemd reports the reload done before the new sshd listens (0.5 s on an
# idle TCG guest, longer on a busy one). A connection in that window is
# closed at once ("kex_exchange_identification: Connection closed by remote
# host" through QEMU's forward). Read from sshd's own journal, in order.
SSHD_LISTENING_AFTER_RELOAD = r"""for i in $(seq 240); do
  journalctl -u ssh.service -o cat --no-pager |
    awk '/Received SIGHUP; restarting/ {r = 1} /Server listening on/ {r = 0} END {exit r}' && exit 0
  sleep 0.5
done
echo "sshd did not listen again within 120 s of its last reload" >&2
exit 1"""

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL this child when the process that started it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def host_cpu_has_virtualization(cpuinfo: str | None = None) -> bool:
    """True when the host CPU advertises vmx (Intel) or svm (AMD)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = line.split(":", 1)[1].split()
            return "vmx" in flags or "svm" in flags
    return False


def kvm_runs_a_guest(
    kernel: Path, workdir: Path, timeout: float = KVM_PROBE_TIMEOUT_S
) -> tuple[bool, str]:
    """Boot `kernel` under KVM, as GuestVM would (-cpu host), with no disk.

    Without a root device the kernel panics and, with panic=-1 and
    -no-reboot, QEMU exits: a few seconds under working KVM. KVM counts as
    working when the kernel's banner reaches the serial port within
    `timeout`. Returns (works, what happened). Seen on a paravirtual
    /dev/kvm: `-cpu host` aborts QEMU at once ("failed to set MSR 0x10a");
    the default CPU model stops in the kernel's decompressor with "KVM
    internal error ... emulation failure" and QEMU hangs.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    log, err = workdir / "kvm-probe.log", workdir / "kvm-probe.err"
    log.unlink(missing_ok=True)
    with open(err, "w") as err_file:
        proc = subprocess.Popen(
            [
                "qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "256",
                "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
                "-serial", f"file:{log}", "-kernel", str(kernel),
                "-append", "console=ttyS0 panic=-1",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err_file,
            preexec_fn=_die_with_parent,
        )

    def booted() -> bool:
        return log.exists() and b"Linux version" in log.read_bytes()

    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if booted():
                return True, "probe kernel booted under KVM"
            if proc.poll() is not None:
                if booted():
                    return True, "probe kernel booted under KVM"
                first = (err.read_text(errors="replace").strip().splitlines() or ["no output"])[0]
                return False, f"KVM probe: QEMU exited {proc.returncode} before the kernel printed: {first}"
            time.sleep(0.5)
        return False, f"KVM probe: kernel printed nothing under KVM in {timeout:.0f}s"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


_detected: dict[str, tuple[str, str]] = {}


def detect_accelerator(kernel: Path | None = None, workdir: Path | None = None) -> tuple[str, str]:
    """("kvm" | "tcg", why). Detected, not assumed; cached per process.

    1. `HOSTLAB_ACCEL=kvm|tcg` forces a choice (for debugging).
    2. No usable /dev/kvm: TCG.
    3. No vmx/svm flag on the host CPU: TCG. /dev/kvm can be a paravirtual
       backend that hangs a stock kernel in early boot (these machines).
    4. With a kernel given: boot it under KVM (`kvm_runs_a_guest`); KVM only
       if it prints its banner within KVM_PROBE_TIMEOUT_S.
    """
    forced = os.environ.get("HOSTLAB_ACCEL", "").strip().lower()
    if forced in ("kvm", "tcg"):
        return forced, f"forced by HOSTLAB_ACCEL={forced}"
    cache_key = str(kernel)
    if cache_key in _detected:
        return _detected[cache_key]
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        result = ("tcg", "no usable /dev/kvm")
    elif not host_cpu_has_virtualization():
        result = ("tcg", "/dev/kvm present but the CPU has no vmx/svm flag (paravirtual KVM)")
    elif kernel is None:
        result = ("kvm", "/dev/kvm and vmx/svm present (not probed)")
    else:
        works, detail = kvm_runs_a_guest(kernel, workdir or Path(tempfile.gettempdir()))
        result = ("kvm" if works else "tcg", detail)
    _detected[cache_key] = result
    return result


class GuestVMError(RuntimeError):
    def __init__(self, message: str, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode


def ssh_command(
    host: str, port: int, user: str, private_key: Path, known_hosts: Path, strict: str = "yes"
) -> list[str]:
    """The system ssh client, no user config, this key only, this known_hosts only."""
    return [
        "ssh", "-F", "/dev/null",
        "-p", str(port),
        "-i", str(private_key),
        "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes",
        "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", f"StrictHostKeyChecking={strict}",
        "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT_S}",
        "-o", "ServerAliveInterval=15",
        "-o", "LogLevel=ERROR",
        f"{user}@{host}",
    ]


class GuestKernelCrashed(GuestVMError):
    """The guest's kernel oopsed or restarted while a command ran.

    Under TCG this has been the emulator's fault (a stale patched instruction
    on another vCPU), not the command's; the hostlab runs such a test once
    more from a restored snapshot (tests/hostlab/conftest.py).
    """


def run_ssh(
    args: list[str], command: str, stdin: str | bytes | None, timeout: float, check: bool
) -> subprocess.CompletedProcess:
    """Run `command` as the remote shell's command line; text in, text out."""
    data = stdin.encode() if isinstance(stdin, str) else stdin
    result = subprocess.run(
        [*args, command], input=data if data is not None else b"", capture_output=True, timeout=timeout, check=False
    )
    completed = subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")
    )
    if check and completed.returncode != 0:
        raise GuestVMError(
            f"guest command failed (exit {completed.returncode}): {command}\nstderr: {completed.stderr[-2000:]}",
            returncode=completed.returncode,
        )
    return completed


class GuestVM:
    """A throwaway guest: qcow2 overlay on the cached image, NoCloud seed."""

    def __init__(
        self,
        image: GuestImage,
        workdir: Path,
        *,
        memory_mib: int = DEFAULT_MEMORY_MIB,
        cpus: int = DEFAULT_CPUS,
        disk_size: str = DEFAULT_DISK_SIZE,
        ssh_user: str = "root",
        host_public_key: str | None = None,
        die_with_parent: bool = True,
    ) -> None:
        self.image = image
        self.workdir = Path(workdir)
        self.memory_mib = memory_mib
        self.cpus = cpus
        self.disk_size = disk_size
        self.ssh_user = ssh_user
        self.host_public_key = host_public_key
        # False only for `python -m tools.lab up`: the guest outlives
        # the command and `lab down` stops it by its pidfile.
        self.die_with_parent = die_with_parent
        self.overlay = self.workdir / "overlay.qcow2"
        self.seed = self.workdir / "seed.iso"
        self.serial_log = self.workdir / "serial.log"
        self.sshd_log = self.workdir / "sshd.log"  # ttyS1: sshd's journal (the image's unit)
        self.qemu_log = self.workdir / "qemu.log"
        self.pidfile = self.workdir / "qemu.pid"
        self.known_hosts = self.workdir / "known_hosts"
        self.qmp_socket = self.workdir / "qmp.sock"
        self.ssh_port: int | None = None
        self.forwards: dict[int, int] = {}
        self.accelerator: tuple[str, str] | None = None
        self.private_key: Path | None = None
        self.started_at: float | None = None
        self.snapshots: list[str] = []  # saved with save_snapshot(), in order
        # Where on the console a crash would count: None until the boot's
        # own banner is behind (wait_for_ssh), then moved on each restore.
        self.console_mark: int | None = None
        # Each crash seen, its first console line (for the run's report).
        self.crashes: list[str] = []
        self._proc: subprocess.Popen | None = None

    # --- lifecycle -------------------------------------------------------

    def __enter__(self) -> GuestVM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(
        self,
        user_data: str,
        meta_data: str | None = None,
        *,
        ssh_port: int = 0,
        forwards: dict[int, int] | None = None,
        network_config: str | None = DEFAULT_NETWORK_CONFIG,
    ) -> None:
        """Boot the guest. Port 0 means "pick a free one"; see `self.forwards`.

        `forwards` maps guest port -> host port on 127.0.0.1 (to 10.0.2.15).
        `meta_data` defaults to a fresh instance-id; `network_config` to
        DHCPv4 on eth0 (None: leave it to cloud-init's fallback).
        """
        if self._proc is not None:
            raise GuestVMError("start() called twice on one GuestVM")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if len(str(self.qmp_socket)) > UNIX_SOCKET_PATH_MAX:
            raise GuestVMError(
                f"work directory {self.workdir} is too long for QEMU's monitor socket "
                f"({len(str(self.qmp_socket))} > {UNIX_SOCKET_PATH_MAX} bytes); use a shorter path"
            )
        self.console_mark = None  # the boot banner to come is no crash
        self.ssh_port = ssh_port or free_port()
        self.forwards = {g: (h or free_port()) for g, h in (forwards or {}).items()}
        if meta_data is None:
            meta_data = f"instance-id: hostlab-{uuid.uuid4().hex[:12]}\nlocal-hostname: hostlab\n"
        self._make_overlay()
        self._make_seed(user_data, meta_data, network_config)
        self._write_known_hosts()
        self.accelerator = detect_accelerator(self.image.kernel, self.workdir)
        for path in (self.serial_log, self.sshd_log, self.pidfile, self.qmp_socket):
            path.unlink(missing_ok=True)
        with open(self.qemu_log, "w") as qlog:
            self._proc = subprocess.Popen(
                self.qemu_command(),
                stdin=subprocess.DEVNULL,
                stdout=qlog,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if self.die_with_parent else os.setsid,
            )
        self.started_at = time.monotonic()
        # QEMU writes the pidfile after parsing its options; a bad option or
        # a taken port makes it exit instead.
        deadline = time.monotonic() + 10
        while not self.pidfile.exists() and time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise GuestVMError(
                    f"QEMU exited with {self._proc.returncode} at start: {self._tail(self.qemu_log)}"
                )
            time.sleep(0.1)

    def qemu_command(self) -> list[str]:
        accel, _ = self.accelerator or ("tcg", "")
        fwd = [f"hostfwd=tcp:127.0.0.1:{self.ssh_port}-{GUEST_ADDRESS}:22"]
        fwd += [f"hostfwd=tcp:127.0.0.1:{h}-{GUEST_ADDRESS}:{g}" for g, h in self.forwards.items()]
        if accel == "kvm":
            cpu = ["-accel", "kvm", "-cpu", "host"]
        else:
            model = os.environ.get("HOSTLAB_TCG_CPU", "").strip() or TCG_CPU_MODEL
            cpu = ["-accel", "tcg,thread=multi", "-cpu", model]
        return [
            "qemu-system-x86_64",
            "-machine", "q35",
            *cpu,
            "-smp", str(self.cpus),
            "-m", str(self.memory_mib),
            "-nodefaults", "-no-user-config", "-display", "none",
            "-kernel", str(self.image.kernel),
            "-initrd", str(self.image.initrd),
            "-append", KERNEL_CMDLINE,
            "-drive", f"file={self.overlay},if=virtio,format=qcow2,discard=unmap",
            "-drive", f"file={self.seed},if=virtio,format=raw,readonly=on",
            "-netdev", "user,id=n0," + ",".join(fwd),
            "-device", f"virtio-net-pci,netdev=n0,mac={GUEST_MAC}",
            "-device", "virtio-rng-pci",
            "-serial", f"file:{self.serial_log}",
            "-serial", f"file:{self.sshd_log}",
            "-pidfile", str(self.pidfile),
            "-qmp", f"unix:{self.qmp_socket},server=on,wait=off",
        ]

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return self._proc.pid if self._proc else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Kill QEMU by its PID; safe to call twice or before start()."""
        if self._proc is None:
            return
        pid = self.pid()
        if self._proc.poll() is None and pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self._proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                self._proc.wait()
        self._proc.wait()
        self.pidfile.unlink(missing_ok=True)

    # --- snapshots (QMP) -------------------------------------------------

    def qmp(self, execute: str, arguments: dict | None = None, timeout: float = QMP_TIMEOUT_S) -> object:
        """One QMP command on a fresh connection; its "return" value."""
        if not self.is_running():
            raise GuestVMError(f"QMP {execute}: QEMU is not running")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.qmp_socket))
            stream = sock.makefile("rwb")

            def call(name: str, args: dict | None) -> object:
                request: dict[str, object] = {"execute": name}
                if args:
                    request["arguments"] = args
                stream.write(json.dumps(request).encode() + b"\n")
                stream.flush()
                while True:  # events may come first
                    line = stream.readline()
                    if not line:
                        raise GuestVMError(f"QMP {name}: QEMU closed the monitor")
                    reply = json.loads(line)
                    if "error" in reply:
                        raise GuestVMError(f"QMP {name}: {reply['error'].get('desc', reply['error'])}")
                    if "return" in reply:
                        return reply["return"]

            json.loads(stream.readline())  # the greeting
            call("qmp_capabilities", None)
            return call(execute, arguments)

    def _human_monitor(self, command_line: str) -> None:
        # savevm/loadvm have no QMP command of their own in QEMU 7.2; through
        # the human monitor a failure comes back as text, success as "".
        out = self.qmp("human-monitor-command", {"command-line": command_line})
        if isinstance(out, str) and out.strip():
            raise GuestVMError(f"QEMU monitor '{command_line}': {out.strip()}")

    def save_snapshot(self, name: str) -> float:
        """Save the running guest (RAM, devices, disk) into the overlay; seconds taken.

        Saving again under a taken name replaces that snapshot.
        """
        start = time.monotonic()
        self._human_monitor(f"savevm {name}")
        if name not in self.snapshots:
            self.snapshots.append(name)
        return time.monotonic() - start

    def restore_snapshot(self, name: str) -> float:
        """Return the guest to snapshot `name`; seconds until SSH answers.

        The guest's clock resumes at the moment of the save; it is set to the
        test machine's time again (apt refuses Release files "not valid yet"
        on a clock that runs behind).
        """
        if name not in self.snapshots:
            raise GuestVMError(f"no snapshot {name!r} on this guest; saved: {self.snapshots or 'none'}")
        start = time.monotonic()
        self.console_mark = self._console_size()
        self._human_monitor(f"loadvm {name}")
        self._wait_for_ssh_answer(RESTORE_SSH_TIMEOUT_S, f"after restoring snapshot {name!r}")
        self.ssh(f"date -s @{int(time.time())} >/dev/null", timeout=SSH_CONNECT_TIMEOUT_S + 60, check=True)
        return time.monotonic() - start

    def add_forward(self, guest_port: int, host_port: int = 0) -> int:
        """Forward 127.0.0.1:host_port (0: a free one) to the guest's port, while running."""
        port = host_port or free_port()
        self._human_monitor(f"hostfwd_add n0 tcp:127.0.0.1:{port}-{GUEST_ADDRESS}:{guest_port}")
        self.forwards[guest_port] = port
        return port

    def remove_forward(self, guest_port: int) -> None:
        port = self.forwards.pop(guest_port)
        # The one monitor command that answers success with text.
        out = self.qmp("human-monitor-command", {"command-line": f"hostfwd_remove n0 tcp:127.0.0.1:{port}"})
        if not (isinstance(out, str) and "removed" in out):
            raise GuestVMError(f"QEMU monitor 'hostfwd_remove' for 127.0.0.1:{port}: {out!r}")

    # --- SSH -------------------------------------------------------------

    def ssh_args(self) -> list[str]:
        if self.private_key is None or self.ssh_port is None:
            raise GuestVMError("wait_for_ssh() first: no key or port yet")
        strict = "yes" if self.host_public_key else "accept-new"
        return ssh_command("127.0.0.1", self.ssh_port, self.ssh_user, self.private_key, self.known_hosts, strict)

    def ssh(
        self, command: str, stdin: str | bytes | None = None, timeout: float = 600, check: bool = False
    ) -> subprocess.CompletedProcess:
        """Run `command` in the guest (remote shell); text in, text out.

        With `check`, a failure raises; when ssh itself failed (exit 255:
        refused, closed, host key, authentication) the error carries the
        tails of sshd's journal and of the console.
        """
        try:
            result = run_ssh(self.ssh_args(), command, stdin, timeout, check)
        except subprocess.TimeoutExpired:
            self._raise_if_kernel_crashed(command)
            raise
        except GuestVMError as e:
            if getattr(e, "returncode", None) == SSH_CLIENT_ERROR:
                self._raise_if_kernel_crashed(command)
                raise GuestVMError(f"{e}\n{self.diagnostics()}", returncode=SSH_CLIENT_ERROR) from None
            raise
        if result.returncode == SSH_CLIENT_ERROR:
            self._raise_if_kernel_crashed(command)
        return result

    def kernel_crash(self) -> str | None:
        """The console from the first crash sign after `console_mark`, if any."""
        if self.console_mark is None:
            return None
        try:
            with self.serial_log.open("rb") as f:
                f.seek(self.console_mark)
                text = f.read().decode(errors="replace")
        except OSError:
            return None
        lines = [line.rstrip("\r") for line in text.splitlines()]
        for i, line in enumerate(lines):
            if any(marker in line for marker in KERNEL_CRASH_MARKERS):
                return "\n".join(lines[i : i + KERNEL_CRASH_EXCERPT_LINES])
        return None

    def _raise_if_kernel_crashed(self, command: str) -> None:
        crash = self.kernel_crash()
        if crash is None:
            return
        self.crashes.append(crash.splitlines()[0].strip())
        # Later crashes count from here; the guest is restored before reuse.
        self.console_mark = self._console_size()
        raise GuestKernelCrashed(
            f"the guest's kernel crashed while running: {command[:200]}\n"
            f"serial console ({self.serial_log}) from the crash:\n{crash}",
            returncode=SSH_CLIENT_ERROR,
        )

    def _console_size(self) -> int:
        try:
            return self.serial_log.stat().st_size
        except OSError:
            return 0

    def wait_for_ssh(self, private_key_path: Path, timeout: float = SSH_WAIT_TIMEOUT_S) -> float:
        """Wait until `ssh USER@127.0.0.1 -p PORT true` succeeds; return seconds since start."""
        self.private_key = Path(private_key_path)
        self._wait_for_ssh_answer(timeout, "after boot (SSH_WAIT_TIMEOUT_S)")
        self.console_mark = self._console_size()
        return time.monotonic() - (self.started_at or 0)

    def _wait_for_ssh_answer(self, timeout: float, what: str) -> None:
        """Probe with a real login (`ssh ... true`) until one succeeds.

        A probe is a complete, authenticated connection or none at all: the
        client is never killed mid-handshake by this code (its bound is
        longer than sshd's LoginGraceTime plus ConnectTimeout), so a slow
        guest gets no connection that sshd counts as failed.
        """
        deadline = time.monotonic() + timeout
        errors: dict[str, int] = {}
        while time.monotonic() < deadline:
            if not self.is_running():
                raise GuestVMError(
                    f"QEMU exited (code {self._proc.returncode if self._proc else None}) while "
                    f"waiting for SSH on 127.0.0.1:{self.ssh_port} {what}.\nqemu: "
                    f"{self._tail(self.qemu_log)}\n{self.diagnostics()}"
                )
            try:
                r = self.ssh("true", timeout=SSH_PROBE_TIMEOUT_S)
                if r.returncode == 0:
                    return
                error = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"
            except subprocess.TimeoutExpired:
                error = f"ssh did not finish within {SSH_PROBE_TIMEOUT_S} s"
            errors[error] = errors.get(error, 0) + 1
            time.sleep(SSH_RETRY_INTERVAL_S)
        seen = "; ".join(f"{n} x {e}" for e, n in errors.items()) or "none"
        raise GuestVMError(
            f"guest SSH did not answer as {self.ssh_user}@127.0.0.1:{self.ssh_port} with key "
            f"{self.private_key} within {timeout:.0f}s {what}; ssh errors seen: {seen}; "
            f"accelerator {self.accelerator}.\n{self.diagnostics()}"
        )

    def wait_for_cloud_init(self, timeout: float) -> subprocess.CompletedProcess:
        """`cloud-init status --wait --long`, then until sshd listens again after
        the user-data's reload (SSHD_LISTENING_AFTER_RELOAD); cloud-init's result."""
        status = self.ssh("cloud-init status --wait --long", timeout=timeout)
        self.ssh(SSHD_LISTENING_AFTER_RELOAD, timeout=300, check=True)
        return status

    def diagnostics(self, lines: int = 30) -> str:
        """The tails of sshd's journal (ttyS1) and of the console (ttyS0)."""
        return (
            f"sshd's journal ({self.sshd_log}) tail:\n{self._tail(self.sshd_log, lines)}\n"
            f"serial console ({self.serial_log}) tail:\n{self._tail(self.serial_log, lines)}"
        )

    # --- pieces ----------------------------------------------------------

    def _make_overlay(self) -> None:
        self.overlay.unlink(missing_ok=True)
        subprocess.run(
            [
                "qemu-img", "create", "-q", "-f", "qcow2",
                "-b", str(self.image.disk), "-F", "qcow2",
                str(self.overlay), self.disk_size,
            ],
            check=True,
        )

    def _make_seed(self, user_data: str, meta_data: str, network_config: str | None) -> None:
        seed_dir = self.workdir / "seed"
        shutil.rmtree(seed_dir, ignore_errors=True)
        seed_dir.mkdir()
        (seed_dir / "user-data").write_text(user_data)
        (seed_dir / "meta-data").write_text(meta_data)
        if network_config is not None:
            (seed_dir / "network-config").write_text(network_config)
        self.seed.unlink(missing_ok=True)
        subprocess.run(
            [
                "genisoimage", "-quiet", "-output", str(self.seed),
                "-volid", "cidata", "-joliet", "-rock", str(seed_dir),
            ],
            check=True,
        )

    def _write_known_hosts(self) -> None:
        if self.host_public_key:
            key = " ".join(self.host_public_key.split()[:2])
            self.known_hosts.write_text(f"[127.0.0.1]:{self.ssh_port} {key}\n")
        else:
            self.known_hosts.write_text("")

    @staticmethod
    def _tail(path: Path, lines: int = 30) -> str:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return "(none)"
        tail = [line.rstrip("\r") for line in text.splitlines()[-lines:]]
        return "\n".join(tail) if tail else "(empty)"
