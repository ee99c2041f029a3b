"""tools/lab/stack.py: `lab up` configures the `lab` stack with the CLI,
inside the lab's own directory.

The Pulumi CLI cannot be installed on these machines, so a stand-in
`pulumi` records its arguments, the variables that choose a backend and a
passphrase, and its stdin. What this proves: the calls and their
environment. Not proven: the real CLI's behaviour with them.
"""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from tools.lab.stack import StackError, configure_lab_stack, env_lines

FAKE_PULUMI = """#!/usr/bin/env python3
import json, os, sys
record = {"argv": sys.argv[1:], "stdin": "" if sys.stdin.isatty() else sys.stdin.read(),
          "env": {k: os.environ.get(k) for k in ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE",
                                                  "PULUMI_CONFIG_PASSPHRASE_FILE", "PULUMI_SKIP_UPDATE_CHECK")}}
with open(os.environ["FAKE_PULUMI_LOG"], "a") as log:
    log.write(json.dumps(record) + "\\n")
fail = os.environ.get("FAKE_PULUMI_FAIL")
if fail and fail in sys.argv:
    print("error: no stack named 'lab' found\\nerror: could not select it", file=sys.stderr)
    sys.exit(255)
"""


@pytest.fixture
def fake_pulumi(tmp_path, monkeypatch):
    path = tmp_path / "bin" / "pulumi"
    path.parent.mkdir()
    path.write_text(FAKE_PULUMI)
    path.chmod(0o755)
    log = tmp_path / "pulumi.log"
    monkeypatch.setenv("FAKE_PULUMI_LOG", str(log))
    # The user's own settings must not leak into the lab's calls.
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "the user's own passphrase")
    monkeypatch.setenv("PULUMI_BACKEND_URL", "s3://the-users-own-bucket")
    return path, log


def admin_key(tmp_path: Path) -> Path:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def test_the_stack_is_configured_in_the_labs_backend_with_its_own_passphrase(tmp_path, fake_pulumi):
    pulumi, log = fake_pulumi
    state = tmp_path / "state"
    key = admin_key(tmp_path)
    done = configure_lab_stack(state, "ssh-ed25519 AAAAhost", key, 40022, str(pulumi))
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c["argv"] for c in calls] == [
        ["stack", "select", "--create", "lab", "--non-interactive"],
        ["config", "set", "-s", "lab", "--path", "functions-runtime:hosts[0].addresses[0].hostKey", "ssh-ed25519 AAAAhost"],
        ["config", "set", "-s", "lab", "--path", "functions-runtime:hosts[0].sshPort", "40022"],
        ["config", "set", "-s", "lab", "--secret", "functions-runtime:dedicatedSshKey"],
    ]
    assert not any("login" in c["argv"] for c in calls)
    passphrase = state / "pulumi-passphrase"
    for c in calls:
        assert c["env"] == {
            "PULUMI_BACKEND_URL": f"file://{state / 'pulumi-state'}",
            "PULUMI_CONFIG_PASSPHRASE": None,
            "PULUMI_CONFIG_PASSPHRASE_FILE": str(passphrase),
            "PULUMI_SKIP_UPDATE_CHECK": "true",
        }
    # The private key travels on stdin only, never as an argument.
    assert calls[-1]["stdin"] == key.read_text()
    assert all(key.read_text() not in " ".join(c["argv"]) for c in calls)
    assert all(key.read_text() not in line for line in done)
    assert stat.S_IMODE(passphrase.stat().st_mode) == 0o600
    assert len(passphrase.read_text().strip()) >= 32

    # A second `lab up` keeps the passphrase (the stack's secrets stay readable).
    before = passphrase.read_text()
    configure_lab_stack(state, "ssh-ed25519 AAAAhost", key, 2222, str(pulumi))
    assert passphrase.read_text() == before


def test_a_failing_call_is_one_line_naming_the_command(tmp_path, fake_pulumi, monkeypatch):
    pulumi, _ = fake_pulumi
    monkeypatch.setenv("FAKE_PULUMI_FAIL", "select")
    with pytest.raises(StackError) as err:
        configure_lab_stack(tmp_path / "state", "ssh-ed25519 AAAAhost", admin_key(tmp_path), 2222, str(pulumi))
    assert str(err.value) == "`pulumi stack select --create lab --non-interactive` exited 255: error: could not select it"


def test_env_prints_the_two_variables_for_a_shell(tmp_path):
    state = tmp_path / "lab dir"
    text = env_lines(state)
    assert text == (
        f"export PULUMI_BACKEND_URL='file://{state}/pulumi-state'\n"
        f"export PULUMI_CONFIG_PASSPHRASE_FILE='{state}/pulumi-passphrase'\n"
    )
    out = subprocess.run(["bash", "-c", f'{text}printf %s "$PULUMI_BACKEND_URL"'], capture_output=True, text=True)
    assert out.stdout == f"file://{state}/pulumi-state"
