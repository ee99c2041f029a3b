"""Replay the program's own remote steps against a real guest.

The steps come from a record of the program's resource registrations (the
tests record a mocked run of the real program; anything with the same shape
will do: `ProgramRecord` below): each `command:remote:Command` is executed as pulumi-command
does it (one SSH session, the `create` string as the remote command, `stdin`
piped in, no extra environment), each `CopyToRemote` of a file writes that
file at its `remote_path`, in the order their `dependsOn` edges give. The
test never rewrites a command: any value it needs differently (addresses,
mirror, catalog, verify image) comes from a stack setting.

What differs from a real `pulumi up`: for a Cloud-shaped stack the SSH
connection goes to the guest's forwarded port on 127.0.0.1 instead of
`connection.host` (a GuestVM as the runner), with the connection's own
private key and pinned host key; a dedicated host reachable as the program
names it (the `lab` stack) is dialled at the connection's own host and port
(`ConnectionShell`). pulumi-command copies files over SFTP, where this writes
them with `cat` over SSH.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tools.lab.vm import run_ssh, ssh_command

COMMAND = "command:remote:Command"
COPY = "command:remote:CopyToRemote"
STEP_TIMEOUT_S = 1800


class Registration(Protocol):
    """One registered resource, as a record of the program's run holds it."""

    type: str
    name: str
    urn: str
    dependencies: list[str]

    @property
    def plain(self) -> dict[str, Any]:
        """Its inputs with secret markers removed."""
        ...


class ProgramRecord(Protocol):
    """The program's registrations, in registration order."""

    @property
    def resources(self) -> Sequence[Registration]: ...


class ReplayError(AssertionError):
    """A step failed; carries its name, exit code and output."""

    def __init__(self, step: str, returncode: int, stdout: str, stderr: str) -> None:
        self.step, self.returncode, self.stdout, self.stderr = step, returncode, stdout, stderr
        super().__init__(f"step {step} exited {returncode}: {stderr.strip()[-3000:]}")


@dataclass
class RemoteStep:
    name: str
    urn: str
    kind: str
    create: str | None
    stdin: str | None
    source: str | None
    remote_path: str | None
    connection: dict[str, Any]


@dataclass
class StepResult:
    name: str
    seconds: float
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Replay:
    results: list[StepResult] = field(default_factory=list)

    def by_step(self) -> dict[str, StepResult]:
        return {r.name.rsplit("-", 1)[-1]: r for r in self.results}


def log_replay(rep: Replay) -> str:
    """Each step's name, exit code, time and stderr tail: an assertion's message."""
    return "\n".join(f"--- {r.name} (exit {r.returncode}, {r.seconds:.1f} s)\n{r.stderr[-1500:]}" for r in rep.results)


class ConnectionShell:
    """SSH to a step's own `connection` (host, port, user, private key, the
    pinned host key), as pulumi-command dials it; `ssh()` as GuestVM's."""

    def __init__(self, connection: dict[str, Any], workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        key = workdir / "connection_key"
        key.write_text(connection["privateKey"])
        key.chmod(0o600)
        host, port = connection["host"], int(connection.get("port", 22))
        known_hosts = workdir / "known_hosts"
        known_hosts.write_text(f"[{host}]:{port} {' '.join(connection['hostKey'].split()[:2])}\n")
        self.args = ssh_command(host, port, connection.get("user", "root"), key, known_hosts, strict="yes")

    def ssh(self, command: str, stdin: str | bytes | None = None, timeout: float = 600, check: bool = False) -> Any:
        return run_ssh(self.args, command, stdin, timeout, check)


def _order(regs: Sequence[Registration]) -> list[Registration]:
    """Topological order by dependsOn; registration order breaks ties."""
    urns = {r.urn for r in regs}
    by_urn = {r.urn: r for r in regs}
    index = {r.urn: i for i, r in enumerate(regs)}

    def deps(r: Registration) -> set[str]:
        return {d for d in r.dependencies if d in urns}

    done: list[Registration] = []
    placed: set[str] = set()
    while len(done) < len(regs):
        ready = [u for u in urns - placed if deps(by_urn[u]) <= placed]
        if not ready:
            raise ValueError(f"dependency cycle among {sorted(urns - placed)}")
        nxt = min(ready, key=index.__getitem__)
        placed.add(nxt)
        done.append(by_urn[nxt])
    return done


def host_steps(run: ProgramRecord, host: str) -> list[RemoteStep]:
    """The remote steps of one host, in the order Pulumi would run them."""
    regs = [
        r for r in run.resources
        if r.type in (COMMAND, COPY) and r.name.startswith(f"{host}-")
    ]
    steps = []
    for r in _order(regs):
        plain = r.plain
        source = plain.get("source")
        steps.append(
            RemoteStep(
                name=r.name,
                urn=r.urn,
                kind="copy" if r.type == COPY else "command",
                create=plain.get("create"),
                stdin=plain.get("stdin"),
                source=getattr(source, "path", None),
                remote_path=plain.get("remotePath"),
                connection=plain["connection"],
            )
        )
    return steps


def user_data(run: ProgramRecord, host: str) -> str:
    """The user-data the program gives the host's Cloud server."""
    (server,) = [r for r in run.resources if r.name == f"{host}-server"]
    return server.plain["userData"]


def connection(run: ProgramRecord, host: str) -> dict[str, Any]:
    return host_steps(run, host)[0].connection


def run_step(vm: Any, step: RemoteStep) -> StepResult:
    start = time.monotonic()
    if step.kind == "copy":
        assert step.source and step.remote_path, step
        data = Path(step.source).read_bytes()
        parent = str(Path(step.remote_path).parent)
        result = vm.ssh(f"mkdir -p '{parent}' && cat > '{step.remote_path}'", stdin=data, timeout=STEP_TIMEOUT_S)
    else:
        assert step.create is not None, step
        result = vm.ssh(step.create, stdin=step.stdin, timeout=STEP_TIMEOUT_S)
    return StepResult(step.name, time.monotonic() - start, result.returncode, result.stdout, result.stderr)


def replay(
    vm: Any,
    steps: list[RemoteStep],
    on_result: Callable[[StepResult], None] | None = None,
    check: bool = True,
) -> Replay:
    """Run the steps in order; stop at the first failure (as Pulumi does)."""
    out = Replay()
    for step in steps:
        result = run_step(vm, step)
        out.results.append(result)
        if on_result:
            on_result(result)
        if result.returncode != 0:
            if check:
                raise ReplayError(step.name, result.returncode, result.stdout, result.stderr)
            break
    return out
