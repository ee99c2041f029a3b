"""`lab up --provision`: a verified local endpoint without the Pulumi CLI.

The program's own steps, run without Pulumi's engine: the real program
(`__main__.py`) runs with the `lab` stack's settings under Pulumi's mocks
(tools/lab/program.py: fresh random keys and certificates, kept in the lab's
state directory), and its remote commands are replayed over SSH to the guest
in dependency order, as pulumi-command runs them (tools/lab/replay.py). Then
the program runs once more with the verify step's real report, and what it
would export is written where a Docker client can use it:

    <state>/outputs.json            both outputs, as `pulumi stack output --json
                                    --show-secrets` prints them (0600)
    <state>/client/{ca,cert,key}.pem  the consumers' client TLS files (0600), for
                                    DOCKER_CERT_PATH, dockerode, curl
    <state>/verified.json           which guest (QEMU pid) passed verify, when
    <state>/logs/up-<time>.log      every step's output

No state backend, no diff: every `lab up --provision` replays every step
(the scripts are idempotent; a second run changes nothing on the guest).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from tools.lab.harness import PROJECT_ROOT
from tools.lab.program import run_lab_program
from tools.lab.progress import PhaseFailed, Progress, one_line

LAB_STACK_FILE = PROJECT_ROOT / "Pulumi.lab.yaml"
LAB_STACK = "lab"
CLIENT_FILES = ("ca.pem", "cert.pem", "key.pem")


@dataclass(frozen=True)
class LabPaths:
    state: Path

    @property
    def outputs(self) -> Path:
        return self.state / "outputs.json"

    @property
    def client(self) -> Path:
        return self.state / "client"

    @property
    def verified(self) -> Path:
        return self.state / "verified.json"

    @property
    def logs(self) -> Path:
        return self.state / "logs"


def lab_stack_config(
    host_public_key: str,
    admin_private_key: str,
    ssh_port: int,
    artifacts_mirror: str | None = None,
    artifacts_catalog: Path | None = None,
    stack_file: Path = LAB_STACK_FILE,
) -> dict[str, Any]:
    """The `lab` stack's settings (Pulumi.lab.yaml) with this lab's values,
    as the `pulumi config set` lines `lab up` prints would make them."""
    config = dict((yaml.safe_load(stack_file.read_text()) or {}).get("config") or {})
    hosts = json.loads(json.dumps(config["functions-runtime:hosts"]))
    hosts[0]["sshPort"] = ssh_port
    hosts[0]["addresses"][0]["hostKey"] = host_public_key
    config["functions-runtime:hosts"] = hosts
    config["functions-runtime:dedicatedSshKey"] = admin_private_key
    if artifacts_mirror or artifacts_catalog:
        artifacts: dict[str, Any] = dict(config.get("functions-runtime:artifacts") or {})
        if artifacts_mirror:
            artifacts["mirror"] = artifacts_mirror
        if artifacts_catalog:
            artifacts["catalog"] = str(artifacts_catalog)
            artifacts["localDirs"] = [str(artifacts_catalog.parent)]
        config["functions-runtime:artifacts"] = artifacts
    return config


def flatten(message: str) -> str:
    """A multi-line message (the settings list every problem) on one line."""
    return " ".join(line.strip() for line in message.splitlines() if line.strip()) or "(no message)"


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(path)


def write_outputs(paths: LabPaths, outputs: Mapping[str, Any], qemu_pid: int | None) -> None:
    """Both outputs, the client TLS files (all 0600), the verified record."""
    endpoint, tls = outputs["runtimeEndpoint"], outputs["runtimeClientTls"]
    doc = {"runtimeEndpoint": endpoint, "runtimeClientTls": tls}
    _write_private(paths.outputs, json.dumps(doc, indent=2) + "\n")
    for name, pem in zip(CLIENT_FILES, (tls["caCertPem"], tls["certPem"], tls["keyPem"]), strict=True):
        _write_private(paths.client / name, pem)
    _write_private(
        paths.verified,
        json.dumps({"qemuPid": qemu_pid, "verifiedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n",
    )


def provision(
    config: Mapping[str, Any],
    host: str,
    paths: LabPaths,
    progress: Progress,
    log: TextIO,
    log_path: Path,
    qemu_pid: int | None,
) -> dict[str, Any]:
    """Replay the program's steps for `host` over SSH, then write its outputs.

    Raises PhaseFailed (one line, and where the log is) at the first step
    that fails, as `pulumi up` stops there.
    """
    from tools.lab.replay import ConnectionShell, host_steps, run_step

    with progress.phase("program"):
        try:
            run = run_lab_program(config, paths.state)
        except Exception as err:  # settings refused, a resource the lab cannot stand in for
            log.write(f"=== program\n{traceback.format_exc()}\n")
            raise PhaseFailed("program", flatten(str(err)), log_path) from err
        steps = host_steps(run, host)
    shell = ConnectionShell(steps[0].connection, paths.state / "ssh")
    verify_stdout = ""
    for step in steps:
        phase = step.name.removeprefix(f"{host}-")
        with progress.phase(phase):
            try:
                result = run_step(shell, step)
            except (subprocess.TimeoutExpired, OSError) as err:
                raise PhaseFailed(phase, flatten(str(err)), log_path) from err
            log.write(
                f"=== {step.name}: exit {result.returncode}, {result.seconds:.1f} s\n"
                f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}\n"
            )
            log.flush()
            if result.returncode != 0:
                raise PhaseFailed(phase, one_line(result.stderr or result.stdout), log_path)
        if phase == "verify":
            verify_stdout = result.stdout
    with progress.phase("endpoint"):
        try:
            done = run_lab_program(
                config, paths.state, command_stdout=lambda name, _: verify_stdout if name == f"{host}-verify" else ""
            )
        except Exception as err:  # the program's own refusal, e.g. VerificationFailed
            log.write(f"=== endpoint\n{traceback.format_exc()}\n")
            raise PhaseFailed("endpoint", flatten(str(err)), log_path) from err
        if "runtimeEndpoint" not in done.outputs or "runtimeClientTls" not in done.outputs:
            raise PhaseFailed("endpoint", "the program exported no endpoint", log_path)
        write_outputs(paths, done.outputs, qemu_pid)
    return done.outputs
