"""scripts/grant_ssh_keys.sh: the keys the program grants, with the managed
file, the account's own authorized_keys and sshd's effective config pointed
into a temporary directory (sshd itself is a stub printing what `sshd -T`
would print).

Proves: the managed file is byte for byte what the program renders (the same
bytes cloud-init writes); a key dropped from the stack is gone; bad input or
an sshd that does not read the managed file changes nothing (the lock-out
guard); on a Cloud server the stack's keys leave root's own authorized_keys
(the program's key and the machine's other keys stay); on an adopted
machine that file is never touched. Does not prove: that a real sshd then
refuses the dropped key (the hostlab does).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from components.base_os import render_granted_keys
from tests.scripts.helpers import run_script

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the script requires root")


def public_key(comment: str) -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    body = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{body} {comment}"


PROGRAM, ALICE, BOB, OWN = (public_key(c) for c in ("program", "alice", "bob", "machine-own"))


def sshd_stub(tmp_path: Path, keys_dir: Path, reads_managed: bool = True) -> str:
    stub = tmp_path / "sshd"
    files = ".ssh/authorized_keys .ssh/authorized_keys2" + (f" {keys_dir}/%u" if reads_managed else "")
    stub.write_text(f"#!/bin/sh\necho 'permitrootlogin without-password'\necho 'authorizedkeysfile {files}'\n")
    stub.chmod(0o755)
    return str(stub)


@pytest.fixture
def world(fr_env, tmp_path):
    keys_dir = tmp_path / "keys"
    own = tmp_path / "home" / ".ssh" / "authorized_keys"
    own.parent.mkdir(parents=True)
    env = {
        **fr_env,
        "FR_SSH_KEYS_DIR": str(keys_dir),
        "FR_AUTHORIZED_KEYS": str(own),
        "FR_SSHD": sshd_stub(tmp_path, keys_dir),
        "SSH_USER": "root",
        "HOST_SOURCE": "dedicated",
    }
    return env, keys_dir / "root", own


def grant(env: dict[str, str], keys: list[str]):
    r = run_script("grant_ssh_keys.sh", env, stdin=render_granted_keys(keys))
    return r, (json.loads(r.stdout) if r.rc == 0 else None)


def test_managed_file_is_what_the_program_renders_and_a_second_run_changes_nothing(world):
    env, managed, _ = world
    r, out = grant(env, [PROGRAM, ALICE, BOB])
    assert r.rc == 0, r.stderr
    assert managed.read_text() == render_granted_keys([PROGRAM, ALICE, BOB])
    assert out["keys"] == 3 and out["changed"] == [str(managed)]
    r, out = grant(env, [PROGRAM, ALICE, BOB])
    assert out["changed"] == [] and "skipping" in r.stderr


def test_a_key_dropped_from_the_stack_is_gone(world):
    env, managed, _ = world
    grant(env, [PROGRAM, ALICE, BOB])
    r, _ = grant(env, [PROGRAM, ALICE])
    assert r.rc == 0, r.stderr
    assert BOB.split()[1] not in managed.read_text()
    assert ALICE.split()[1] in managed.read_text()


@pytest.mark.parametrize(
    ("keys", "words"),
    [
        ([PROGRAM, "ssh-ed25519 AAAAnotakey bob"], "key 2 on stdin to be an OpenSSH public key"),
        (["not a key at all"], "key 1 on stdin"),
        ([], "the program's own public key as the first key"),
    ],
    ids=["garbage-admin-key", "garbage-program-key", "no-keys"],
)
def test_bad_input_changes_nothing(world, keys, words):
    env, managed, _ = world
    grant(env, [PROGRAM, ALICE])
    before = managed.read_text()
    r, _ = grant(env, keys)
    assert r.rc != 0 and words in r.stderr and "nothing was changed" in r.stderr
    assert managed.read_text() == before


def test_an_sshd_that_does_not_read_the_managed_file_changes_nothing(world, tmp_path):
    env, managed, own = world
    own.write_text(f"{PROGRAM}\n{ALICE}\n")
    env = {**env, "HOST_SOURCE": "hcloud"}
    (tmp_path / "x").mkdir()
    env["FR_SSHD"] = sshd_stub(tmp_path / "x", Path(env["FR_SSH_KEYS_DIR"]), reads_managed=False)
    r, _ = grant(env, [PROGRAM, ALICE])
    assert r.rc != 0 and "nobody is locked out" in r.stderr
    assert not managed.exists()
    assert own.read_text() == f"{PROGRAM}\n{ALICE}\n"


def test_on_a_cloud_server_the_stacks_keys_leave_roots_own_file(world):
    env, managed, own = world
    env = {**env, "HOST_SOURCE": "hcloud"}
    # What cloud-init wrote at first boot (an older program put the admin
    # keys there), plus a key someone added by hand.
    own.write_text(f"{PROGRAM}\n{ALICE}\n{BOB}\n{OWN}\n")
    r, out = grant(env, [PROGRAM, ALICE, BOB])
    assert r.rc == 0, r.stderr
    assert own.read_text() == f"{PROGRAM}\n{OWN}\n"
    assert out["removedFromAuthorizedKeys"] == 2
    # Bob was granted by this step before; dropped now, he is gone everywhere.
    own.write_text(own.read_text() + f"{BOB}\n")
    r, _ = grant(env, [PROGRAM, ALICE])
    assert r.rc == 0, r.stderr
    assert BOB.split()[1] not in own.read_text() + managed.read_text()
    assert OWN in own.read_text()


def test_on_an_adopted_machine_its_own_authorized_keys_is_never_touched(world):
    env, _, own = world
    own.write_text(f"{ALICE}\n{OWN}\n")
    r, out = grant(env, [PROGRAM, ALICE])
    assert r.rc == 0, r.stderr
    assert own.read_text() == f"{ALICE}\n{OWN}\n"
    assert out["removedFromAuthorizedKeys"] == 0
