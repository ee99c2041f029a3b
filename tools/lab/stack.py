"""The `lab` stack for the Pulumi CLI, kept inside the lab's own directory.

With the CLI on PATH, `lab up` configures the `lab` stack itself: the
guest's pinned host key, the forwarded SSH port and the secret SSH key
(`pulumi config set`, as the README used to ask of the user). The state
backend and the secrets passphrase live in the lab's state directory and are
handed to the CLI through its environment (`PULUMI_BACKEND_URL=file://...`,
`PULUMI_CONFIG_PASSPHRASE_FILE`): the user's own `pulumi login` and any other
stack are never touched. `python -m tools.lab env` prints the same two
variables for `pulumi up -s lab`.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from tools.lab.harness import PROJECT_ROOT

LAB_STACK = "lab"
# A CLI call that takes longer than this is stuck (a local file backend).
PULUMI_TIMEOUT_S = 300
# Variables that would send the CLI elsewhere or to another passphrase.
OVERRIDDEN = ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE")


class StackError(Exception):
    """A `pulumi` call failed; one line naming the command."""


def pulumi_cli() -> str | None:
    return shutil.which("pulumi")


def lab_pulumi_env(state: Path) -> dict[str, str]:
    """The two variables that keep the CLI inside the lab (made once)."""
    backend = state / "pulumi-state"
    backend.mkdir(parents=True, exist_ok=True)
    backend.chmod(0o700)
    passphrase = state / "pulumi-passphrase"
    if not passphrase.exists():
        fd = os.open(passphrase, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
    return {"PULUMI_BACKEND_URL": f"file://{backend}", "PULUMI_CONFIG_PASSPHRASE_FILE": str(passphrase)}


def env_lines(state: Path) -> str:
    """`export` lines for a shell: `eval "$(python -m tools.lab env)"`."""
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in lab_pulumi_env(state).items())


Runner = Callable[[list[str], Mapping[str, str], str | None], subprocess.CompletedProcess]


def _run(argv: list[str], env: Mapping[str, str], stdin: str | None) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, env=dict(env), input=stdin, text=True, capture_output=True, cwd=PROJECT_ROOT, timeout=PULUMI_TIMEOUT_S
    )


def configure_lab_stack(
    state: Path, host_public_key: str, admin_key: Path, ssh_port: int, pulumi: str, run: Runner = _run
) -> list[str]:
    """Create or select `lab` in the lab's backend and set its three values.

    Returns the commands run (without the secret, which goes on stdin).
    """
    env = {k: v for k, v in os.environ.items() if k not in OVERRIDDEN}
    env.update(lab_pulumi_env(state))
    env["PULUMI_SKIP_UPDATE_CHECK"] = "true"
    calls: list[tuple[list[str], str | None]] = [
        ([pulumi, "stack", "select", "--create", LAB_STACK, "--non-interactive"], None),
        ([pulumi, "config", "set", "-s", LAB_STACK, "--path",
          "functions-runtime:hosts[0].addresses[0].hostKey", host_public_key], None),
        ([pulumi, "config", "set", "-s", LAB_STACK, "--path", "functions-runtime:hosts[0].sshPort", str(ssh_port)], None),
        ([pulumi, "config", "set", "-s", LAB_STACK, "--secret", "functions-runtime:dedicatedSshKey"],
         admin_key.read_text()),
    ]
    done = []
    for argv, stdin in calls:
        shown = " ".join(shlex.quote(a) for a in [Path(argv[0]).name, *argv[1:]])
        try:
            result = run(argv, env, stdin)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise StackError(f"`{shown}` did not run: {err}") from err
        if result.returncode != 0:
            last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise StackError(f"`{shown}` exited {result.returncode}: {last[0]}")
        done.append(shown)
    return done
