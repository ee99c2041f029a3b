"""Two ways sshd closes a connection at once, which the client reports as
"kex_exchange_identification: Connection closed by remote host" (the
hostlab's flake), each reproduced on purpose with sshd's journal as the
witness, each with its fix.

1. A reload. The program's user-data ends with `systemctl reload ssh`;
sshd answers SIGHUP by closing its listeners and re-executing itself, and
systemd reports the reload done before the new sshd listens. Through QEMU's
forward a connection in that window is accepted on the test machine's side
and closed at once. The reproduction holds the window open: a second sshd
reads its configuration from a FIFO, so after SIGHUP it blocks re-reading
it with no listener until the test writes it. The fix, in the lab: after
cloud-init is done, wait until sshd's journal shows it listening again after
its last reload (`GuestVM.wait_for_cloud_init`).

2. Per-source penalties.

OpenSSH 10 (Debian 13) has `PerSourcePenalties` on by default: a source
address whose connections fail authentication (5 s each), close without
authenticating (1 s) or exceed LoginGraceTime (10 s) collects penalty time,
and once it holds 15 s, sshd drops *every* new connection from that address
until the time has run off ("drop connection #0 from [ADDR]:PORT on ...
penalty: failed authentication"). Through QEMU's user network every
connection from the test machine comes from one address, 10.0.2.2; a
deploying machine dials every host from one address too.

The reproduction runs a second sshd in the shared guest (the guest's own
sshd_config and the program's drop-in, port 2200, the lab image's exemption
switched off on its command line), reached through a forward added at run
time, so the guest's real sshd is never locked out. The same failed logins
then meet the fix: the stack's admin sources (`admin.sshSourceCidrs`, the
lab's 10.0.2.2/32) exempted with `PerSourcePenaltyExemptList`.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.hostlab import testbed
from tests.hostlab.shared_guest import CLOUD_INIT_DONE, SharedGuest
from tests.support.archives import write_docker_archive
from tests.support.program import run_program
from tools.lab.replay import user_data
from tools.lab.vm import ssh_command

PENALTY_SSHD_PORT = 2200
PENALTY_UNIT = "hostlab-penalty-sshd"
RELOAD_UNIT = "hostlab-reload-sshd"
RELOAD_CONFIG_FIFO = "/run/hostlab-reload-sshd.conf"
RELOAD_PIDFILE = "/run/hostlab-reload-sshd.pid"
# One line of configuration, as the FIFO gives it: the guest's own.
RELOAD_CONFIG = "Include /etc/ssh/sshd_config"
JOURNAL_WAIT_S = 120
# Each failed login adds 5 s; sshd refuses from 15 s on. Attempts stop at
# the first refused one; this only bounds a guest that never refuses.
MAX_FAILED_LOGINS = 30
SSH_TIMEOUT_S = 90
REFUSED = "kex_exchange_identification: Connection closed by remote host"
# Through QEMU's forward a connection with no listener behind it ends one of
# two ways, depending on whether the client's banner was already sent.
NO_LISTENER = (REFUSED, "kex_exchange_identification: read: Connection reset by peer")
DENIED = "Permission denied (publickey)"
DROP_LINE = re.compile(
    r"drop connection #\d+ from \[10\.0\.2\.2\]:\d+ on \[10\.0\.2\.15\]:2200 penalty: failed authentication"
)


ROOT = Path(__file__).resolve().parents[2]


def lab_stack_config(work: Path) -> dict:
    """The hostlab stack's settings; the mirror, catalog and image archive are stand-ins."""
    archive = work / "image.tar"
    image_id = write_docker_archive(archive)
    image = testbed.VerifyImage(archive, image_id, "none")
    return testbed.hcloud_config(f"http://{testbed.HOST_FROM_GUEST}:1", ROOT / "catalog" / "artifacts.tsv", image)


def admin_sources(work: Path) -> list[str]:
    return lab_stack_config(work)["functions-runtime:admin"]["sshSourceCidrs"]


def start_second_sshd(lab: SharedGuest, exempt: str) -> None:
    lab.sh(
        f"systemctl stop {PENALTY_UNIT} 2>/dev/null || true; systemctl reset-failed {PENALTY_UNIT} 2>/dev/null || true; "
        f"systemd-run --unit={PENALTY_UNIT} /usr/sbin/sshd -D -p {PENALTY_SSHD_PORT} "
        f"-o PidFile=/run/{PENALTY_UNIT}.pid -o PerSourcePenaltyExemptList={exempt} && "
        f"for i in $(seq 60); do ss -ltnH 'sport = :{PENALTY_SSHD_PORT}' | grep -q . && exit 0; sleep 1; done; "
        f"journalctl -u {PENALTY_UNIT} --no-pager >&2; exit 1"
    )


def login(lab: SharedGuest, port: int, key: Path, known_hosts: Path) -> subprocess.CompletedProcess:
    args = ssh_command("127.0.0.1", port, "root", key, known_hosts, strict="yes")
    return subprocess.run([*args, "true"], capture_output=True, text=True, timeout=SSH_TIMEOUT_S)


def fail_logins_until_refused(lab: SharedGuest, port: int, wrong_key: Path, known_hosts: Path) -> list[str]:
    """Log in with a key the guest does not know until sshd refuses; each outcome."""
    outcomes = []
    for _ in range(MAX_FAILED_LOGINS):
        result = login(lab, port, wrong_key, known_hosts)
        assert result.returncode == 255, result
        outcomes.append("refused" if REFUSED in result.stderr else "denied" if DENIED in result.stderr else result.stderr)
        if outcomes[-1] == "refused":
            break
    return outcomes


@pytest.mark.hostlab
def test_failed_logins_from_the_one_lab_address_lock_out_the_next_login_until_exempted(lab, tmp_path):
    lab.fresh(CLOUD_INIT_DONE)  # no host filter yet: port 2200 is reachable
    wrong_key = tmp_path / "not_authorized"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong_key)], check=True)
    known_hosts = tmp_path / "known_hosts"
    port = lab.vm.add_forward(PENALTY_SSHD_PORT)
    known_hosts.write_text(f"[127.0.0.1]:{port} {' '.join(lab.steps[0].connection['hostKey'].split()[:2])}\n")
    try:
        # 1. Penalties as Debian 13 ships them: the failed logins lock the
        #    lab's one address out, the next real login included.
        start_second_sshd(lab, exempt="none")
        assert login(lab, port, lab.key_path, known_hosts).returncode == 0, "the second sshd does not take the key"
        outcomes = fail_logins_until_refused(lab, port, wrong_key, known_hosts)
        assert outcomes[-1] == "refused" and set(outcomes[:-1]) == {"denied"}, outcomes
        real = login(lab, port, lab.key_path, known_hosts)
        assert real.returncode == 255 and REFUSED in real.stderr, real.stderr
        journal = lab.sh(f"journalctl -u {PENALTY_UNIT} --no-pager -o cat")
        drops = DROP_LINE.findall(journal)
        assert len(drops) >= 2, journal  # the refused wrong-key login and the real one
        print(f"\nlocked out after {len(outcomes) - 1} failed logins; sshd's journal says:\n  {drops[-1]}")

        # 2. The fix: the stack's admin sources are exempt. The same failed
        #    logins (and more) leave the real login working.
        exempt = ",".join(admin_sources(tmp_path))
        assert exempt == f"{testbed.HOST_FROM_GUEST}/32"
        start_second_sshd(lab, exempt=exempt)
        for _ in range(len(outcomes) + 3):
            failed = login(lab, port, wrong_key, known_hosts)
            assert failed.returncode == 255 and DENIED in failed.stderr, failed.stderr
        real = login(lab, port, lab.key_path, known_hosts)
        assert real.returncode == 0, real.stderr
        journal = lab.sh(f"journalctl -u {PENALTY_UNIT} --no-pager -o cat")
        assert len(DROP_LINE.findall(journal)) == len(drops), "a connection was dropped despite the exemption"
    finally:
        lab.sh(f"systemctl stop {PENALTY_UNIT} || true", check=False)
        lab.vm.remove_forward(PENALTY_SSHD_PORT)


def test_the_programs_sshd_drop_in_exempts_the_admin_sources(tmp_path):
    """No VM: the program's own rendered user-data for the hostlab stack."""
    run = run_program(lab_stack_config(tmp_path), testbed.STACK, server_private_address=testbed.GUEST_ADDRESS)
    rendered = user_data(run, testbed.HOST_NAME)
    assert f"PerSourcePenaltyExemptList {','.join(admin_sources(tmp_path))}" in rendered


def listening(lab: SharedGuest, port: int) -> bool:
    return bool(lab.sh(f"ss -ltnH 'sport = :{port}'").strip())


def wait_in_guest(lab: SharedGuest, condition: str, what: str) -> None:
    """Until the shell `condition` holds in the guest (bounded, polled there)."""
    lab.sh(
        f"for i in $(seq {JOURNAL_WAIT_S * 2}); do {condition} && exit 0; sleep 0.5; done; "
        f"echo 'not within {JOURNAL_WAIT_S} s: {what}' >&2; exit 1",
        timeout=JOURNAL_WAIT_S + 60,
    )


@pytest.mark.hostlab
def test_a_reload_leaves_no_listener_and_the_client_sees_the_connection_closed(lab, tmp_path):
    lab.fresh(CLOUD_INIT_DONE)
    known_hosts = tmp_path / "known_hosts"
    port = lab.vm.add_forward(PENALTY_SSHD_PORT)
    known_hosts.write_text(f"[127.0.0.1]:{port} {' '.join(lab.steps[0].connection['hostKey'].split()[:2])}\n")
    journal = f"journalctl -u {RELOAD_UNIT} -o cat --no-pager"
    try:
        lab.sh(
            f"rm -f {RELOAD_CONFIG_FIFO} && mkfifo -m 0600 {RELOAD_CONFIG_FIFO} && "
            f"systemd-run --unit={RELOAD_UNIT} /usr/sbin/sshd -D -f {RELOAD_CONFIG_FIFO} -p {PENALTY_SSHD_PORT} "
            f"-o PidFile={RELOAD_PIDFILE} && echo '{RELOAD_CONFIG}' > {RELOAD_CONFIG_FIFO}"
        )
        wait_in_guest(lab, f"ss -ltnH 'sport = :{PENALTY_SSHD_PORT}' | grep -q .", "the second sshd listens")
        assert login(lab, port, lab.key_path, known_hosts).returncode == 0

        # The reload, as systemd's ExecReload sends it; sshd re-executes and
        # waits for its configuration: no listener until the FIFO is written.
        lab.sh(f"kill -HUP $(cat {RELOAD_PIDFILE})")
        wait_in_guest(lab, f"{journal} | grep -q 'Received SIGHUP; restarting'", "sshd took the SIGHUP")
        wait_in_guest(lab, f"! ss -ltnH 'sport = :{PENALTY_SSHD_PORT}' | grep -q .", "sshd closed its listener")
        refused = login(lab, port, lab.key_path, known_hosts)
        assert refused.returncode == 255 and any(m in refused.stderr for m in NO_LISTENER), refused.stderr
        said = lab.sh(journal).strip().splitlines()
        assert said[-1].endswith("Received SIGHUP; restarting."), said  # and nothing since: no listener
        print(f"\nduring a reload: {refused.stderr.strip().splitlines()[-1]!r}; sshd's journal ends: {said[-1]!r}")

        # The window closes when sshd has read its configuration again; the
        # lab's wait (GuestVM.wait_for_cloud_init) waits for this line.
        lab.sh(f"echo '{RELOAD_CONFIG}' > {RELOAD_CONFIG_FIFO}")
        wait_in_guest(
            lab,
            f"{journal} | awk '/Received SIGHUP; restarting/ {{r = 1}} /Server listening on/ {{r = 0}} END {{exit r}}'",
            "sshd listens again",
        )
        assert login(lab, port, lab.key_path, known_hosts).returncode == 0
    finally:
        lab.sh(f"systemctl stop {RELOAD_UNIT} || true; rm -f {RELOAD_CONFIG_FIFO}", check=False)
        lab.vm.remove_forward(PENALTY_SSHD_PORT)
