"""GuestVM tells a guest kernel crash from an ordinary SSH failure.

No guest runs here: the console is a file written by the test and ssh is
replaced by a function returning ssh's own exit code (255). What this proves:
which console text counts as a crash and from where; what it does not prove:
that a real crash under TCG prints these lines (the hostlab shows that).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tools.lab import vm as vm_module
from tools.lab.vm import SSH_CLIENT_ERROR, GuestKernelCrashed, GuestVM, GuestVMError

BOOT = "[    0.000000] Linux version 6.12.48+deb13-amd64 (debian-kernel@lists.debian.org)\n[    1.2] systemd[1]: started\n"
OOPS = (
    "[  812.31] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\n"
    "[  812.32] RIP: 0010:dequeue_entities+0x1a/0x9c0\n"
    "[  812.40] Kernel panic - not syncing: Fatal exception\n"
)


@pytest.fixture
def guest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> GuestVM:
    g = GuestVM(image=None, workdir=tmp_path)  # type: ignore[arg-type] # never started
    g.private_key, g.ssh_port = tmp_path / "key", 2222
    g.serial_log.write_text(BOOT)
    return g


def ssh_exits(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    def run_ssh(args, command, stdin, timeout, check):
        if check and code:
            raise GuestVMError(f"guest command failed (exit {code}): {command}", returncode=code)
        return subprocess.CompletedProcess(args, code, "", "Connection to 127.0.0.1 closed by remote host.\n")

    monkeypatch.setattr(vm_module, "run_ssh", run_ssh)


def arm(guest: GuestVM) -> None:
    """As wait_for_ssh does once the boot is behind."""
    guest.console_mark = guest.serial_log.stat().st_size


def console_after_boot(guest: GuestVM, text: str) -> None:
    """The console prints `text` once the guest has booted."""
    arm(guest)
    with guest.serial_log.open("a") as f:
        f.write(text)


def test_the_boot_banner_before_the_mark_is_no_crash(guest: GuestVM, monkeypatch):
    arm(guest)
    ssh_exits(monkeypatch, SSH_CLIENT_ERROR)
    assert guest.kernel_crash() is None
    assert guest.ssh("true").returncode == SSH_CLIENT_ERROR
    assert guest.crashes == []


def test_an_unarmed_console_never_counts_while_the_guest_boots(guest: GuestVM, monkeypatch):
    guest.serial_log.write_text(BOOT + OOPS)
    ssh_exits(monkeypatch, SSH_CLIENT_ERROR)
    assert guest.console_mark is None
    assert guest.ssh("true").returncode == SSH_CLIENT_ERROR


def test_an_oops_after_the_mark_turns_a_lost_connection_into_a_kernel_crash(guest: GuestVM, monkeypatch):
    console_after_boot(guest, OOPS)
    ssh_exits(monkeypatch, SSH_CLIENT_ERROR)
    with pytest.raises(GuestKernelCrashed) as e:
        guest.ssh("bash /opt/functions-runtime/scripts/host_firewall.sh")
    assert "host_firewall.sh" in str(e.value)
    assert "Oops: int3" in str(e.value) and "dequeue_entities" in str(e.value)
    assert guest.crashes == ["[  812.31] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI"]
    # Counted once: the next lost connection needs a new crash.
    assert guest.ssh("true").returncode == SSH_CLIENT_ERROR


def test_a_second_boot_banner_is_a_crash_with_check_too(guest: GuestVM, monkeypatch):
    console_after_boot(guest, BOOT)
    ssh_exits(monkeypatch, SSH_CLIENT_ERROR)
    with pytest.raises(GuestKernelCrashed):
        guest.ssh("true", check=True)


def test_a_command_that_fails_on_its_own_is_never_a_crash(guest: GuestVM, monkeypatch):
    console_after_boot(guest, OOPS)
    ssh_exits(monkeypatch, 1)
    assert guest.ssh("false").returncode == 1
    with pytest.raises(GuestVMError) as e:
        guest.ssh("false", check=True)
    assert not isinstance(e.value, GuestKernelCrashed)
