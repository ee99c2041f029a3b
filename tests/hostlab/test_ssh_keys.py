"""The keys the program grants, on the real guest's sshd.

The program runs with an admin key in `admin.sshKeys`, and only its `keys`
step is replayed (the one step a key change re-runs, tests/unit/
test_pipeline.py): the admin can log in. Then the key is dropped from the
stack and the `keys` step replayed again: the same key is refused by the real
sshd, while the program's own key still works (the lock-out guard keeps it).
What is real: Debian 13's sshd reading the program's AuthorizedKeysFile
drop-in, the managed file, root's own authorized_keys as cloud-init left it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.hostlab import testbed
from tests.hostlab.shared_guest import VERIFIED, SharedGuest
from tools.lab.replay import host_steps, run_step
from tools.lab.vm import ssh_command

SSH_TIMEOUT_S = 90


def keys_step(lab: SharedGuest, admin_keys: list[str]):
    config = lab.hcloud_config()
    config["functions-runtime:admin"] = {**config["functions-runtime:admin"], "sshKeys": admin_keys}
    steps = host_steps(lab.program(config), testbed.HOST_NAME)
    return next(s for s in steps if s.name == f"{testbed.HOST_NAME}-keys")


def login(lab: SharedGuest, key: Path, known_hosts: Path) -> subprocess.CompletedProcess:
    args = ssh_command("127.0.0.1", lab.vm.ssh_port, "root", key, known_hosts)
    return subprocess.run([*args, "true"], capture_output=True, text=True, timeout=SSH_TIMEOUT_S)


def test_an_admin_key_dropped_from_the_stack_is_refused_by_sshd(lab, tmp_path):
    lab.fresh(VERIFIED)
    admin = tmp_path / "admin_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hostlab-admin", "-f", str(admin)], check=True)
    admin_public = admin.with_suffix(".pub").read_text().strip()
    known_hosts = tmp_path / "known_hosts"
    host_key = " ".join(lab.steps[0].connection["hostKey"].split()[:2])
    known_hosts.write_text(f"[127.0.0.1]:{lab.vm.ssh_port} {host_key}\n")

    granted = run_step(lab.vm, keys_step(lab, [admin_public]))
    assert granted.returncode == 0, granted.stderr
    assert json.loads(granted.stdout)["keys"] == 2
    first = login(lab, admin, known_hosts)
    assert first.returncode == 0, f"the granted admin key must log in: {first.stderr}"

    revoked = run_step(lab.vm, keys_step(lab, []))
    assert revoked.returncode == 0, revoked.stderr
    second = login(lab, admin, known_hosts)
    assert second.returncode != 0 and "Permission denied" in second.stderr, second.stderr
    assert admin_public.split()[1] not in lab.sh("cat /etc/ssh/functions-runtime-keys/root /root/.ssh/authorized_keys")
    # The program's own key (the one this shell uses) still works.
    assert lab.sh("echo still-in").strip() == "still-in"
