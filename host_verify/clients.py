"""Commands and container clients: docker (through the mutual-TLS endpoint,
or root on the local socket), ctr and nerdctl behind one interface.

Everything that touches the host goes through a `Runner`, so the checks run
in tests against a fake one. Names are derived from the client and runtime,
so clients and runtimes can run side by side without meeting.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from host_verify import dns

# Bounds: a sandbox that hangs must not hang `pulumi up`.
RUN_TIMEOUT = 300  # seconds for one container run (TCG guests are slow)
PROBE_TIMEOUT = 5  # seconds for one TCP connect probe
# Seconds for a containerd peer's address and server to appear: a guard
# against a hang, as long as one run's, not a speed limit. Beside the other
# lanes on two emulated vCPUs a healthy peer took 105 s, and a busier machine
# passed 120 s; a run that ended is reported at once.
CNI_PEER_WAIT = RUN_TIMEOUT
NAME_PREFIX = "functions-runtime-verify"
PEER_PORT = 8080

# The peer answers every connection on PEER_PORT and closes it.
PEER_SERVER = 'while true; do nc -l -p "$0" -e true; done'
# What every probe container runs: its kernel, then every target at once
# ($0 is the timeout, each argument "ADDR PORT"): one line per target,
# "ADDR PORT reachable|unreachable". Anything else is an error to report.
PROBE = (
    'echo "kernel $(uname -r)"; w=$0; for t in "$@"; do\n'
    '  (if nc -w "$w" "${t% *}" "${t#* }" -e true; then echo "$t reachable"; else echo "$t unreachable"; fi) &\n'
    "done; wait"
)


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class Process(Protocol):
    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def kill(self) -> None: ...
    def last_line(self) -> str:
        """The last line it printed (stdout and stderr), for a failure's message."""
        ...


class Runner(Protocol):
    """How checks touch the host: commands, background commands, TCP connects, time."""

    def run(self, argv: Sequence[str], *, timeout: float | None = None, stdin: bytes | None = None) -> Result: ...
    def start(self, argv: Sequence[str]) -> Process: ...
    def reaches(self, address: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool: ...
    def sleep(self, seconds: float) -> None: ...
    def now_ms(self) -> int: ...
    def resolve(self, server: str, name: str) -> list[str] | None:
        """`name`'s A records as the host gets them from `server`; None: no answer."""
        ...
    def docker_api(self, socket_path: Path, method: str, path: str) -> Result:
        """Docker's API as root on the local socket: the status as `code`, the body as `stdout`."""
        ...


class SystemRunner:
    """The real host. `env` is the whole environment the commands get."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)

    def run(self, argv: Sequence[str], *, timeout: float | None = None, stdin: bytes | None = None) -> Result:
        try:
            proc = subprocess.run(list(argv), input=stdin if stdin is not None else b"", capture_output=True,
                                  timeout=timeout, env=self.env, check=False)
        except subprocess.TimeoutExpired as err:
            out = (err.stdout or b"").decode(errors="replace")
            return Result(124, out, f"timed out after {timeout} s: {argv[0]}\n")
        except OSError as err:
            return Result(127, "", f"{argv[0]}: {err.strerror}\n")
        return Result(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))

    def start(self, argv: Sequence[str]) -> Process:
        return Background(argv, self.env)

    def reaches(self, address: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
        try:
            with socket.create_connection((address, port), timeout=timeout):
                return True
        except OSError:
            return False

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def resolve(self, server: str, name: str) -> list[str] | None:
        return dns.ask(server, name)

    def now_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000

    def docker_api(self, socket_path: Path, method: str, path: str) -> Result:
        conn = _UnixHTTPConnection(str(socket_path))
        try:
            conn.request(method, path)
            response = conn.getresponse()
            return Result(response.status, response.read().decode(errors="replace"))
        except OSError as err:
            return Result(0, "", f"{socket_path}: {err}\n")
        finally:
            conn.close()


class Background:
    """A command in the background whose output goes to a temporary file (a
    pipe nobody reads could fill and stall it), so a failure can say what it
    printed."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self._out = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT,
                                      env=dict(env))

    def poll(self) -> int | None:
        return self._proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self._proc.wait(timeout=timeout)

    def kill(self) -> None:
        self._proc.kill()

    def last_line(self) -> str:
        self._out.seek(0)
        return _last(self._out.read()[-4096:].decode(errors="replace"))

    def __del__(self) -> None:
        self._out.close()


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP on dockerd's unix socket (no docker CLI start: a second each under emulation)."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=60)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(60)
        sock.connect(self.path)
        self.sock = sock


@dataclass(frozen=True)
class Peer:
    name: str
    address: str
    network: str | None = None
    process: Process | None = None


class PeerFailed(Exception):
    """A peer did not come up: what was expected, what was found, what to do."""

    def __init__(self, expected: str, found: str, todo: str, runtime_failed: bool = False) -> None:
        super().__init__(found)
        self.expected, self.found, self.todo = expected, found, todo
        # The runtime could not run a container at all (not a network problem).
        self.runtime_failed = runtime_failed


class ContainerClient(Protocol):
    """What the kernel and isolation checks need of docker, ctr or nerdctl."""

    name: str

    def label(self, runtime: str) -> str: ...
    def start_peer(self, runtime: str) -> Peer: ...
    def probe(self, runtime: str, peer: Peer, targets: Sequence[str]) -> Result: ...
    def stop_peer(self, peer: Peer) -> None: ...
    def rerun_hint(self, runtime: str) -> str: ...


class Docker:
    """Docker through the endpoint (the consumers' path, under the policy) and
    as root on the local socket (image loads, clean-up)."""

    name = "docker"

    def __init__(self, runner: Runner, endpoint_args: Sequence[str], socket_path: Path, image: str,
                 limit_opts: Sequence[str], owner_opts: Sequence[str] = ()) -> None:
        self.runner, self.endpoint_args, self.socket_path = runner, tuple(endpoint_args), socket_path
        # Every create through the endpoint carries limits and the owner label
        # the policy asks for (the verify client's common name).
        self.image, self.limit_opts, self.owner_opts = image, tuple(limit_opts), tuple(owner_opts)

    def endpoint(self, *args: str, timeout: float | None = RUN_TIMEOUT) -> Result:
        return self.runner.run(["docker", *self.endpoint_args, *args], timeout=timeout)

    def local(self, *args: str, timeout: float | None = RUN_TIMEOUT, stdin: bytes | None = None) -> Result:
        return self.runner.run(["docker", "-H", f"unix://{self.socket_path}", *args], timeout=timeout, stdin=stdin)

    def run(self, runtime: str, command: Sequence[str], opts: Sequence[str] = ()) -> Result:
        """One container through the endpoint, with limits, bounded in time."""
        return self.endpoint("run", "--rm", "--runtime", runtime, *self.owner_opts, *self.limit_opts, *opts, self.image,
                             *command)

    def label(self, runtime: str) -> str:
        return runtime

    def start_peer(self, runtime: str) -> Peer:
        network, name = f"{NAME_PREFIX}-{runtime}", f"{NAME_PREFIX}-peer-{runtime}"
        self._remove(name, network)  # a run that was killed may have left them
        out = self.endpoint("network", "create", network)
        if not out.ok:
            self._remove(name, network)
            raise PeerFailed("docker network create through the endpoint", _last(out.output), "read journalctl -u docker")
        out = self.run(runtime, ["sh", "-c", PEER_SERVER, str(PEER_PORT)], ["-d", "--name", name, "--network", network])
        if not out.ok:
            self._remove(name, network)
            raise PeerFailed(f"docker run --runtime {runtime} to succeed (a peer container on {network})",
                             _last(out.output), f"run 'docker run --rm --runtime {runtime} {self.image} uname -r' on the "
                             "host and read journalctl -u docker", runtime_failed=True)
        addr = self.address_of(name)
        if not addr:
            self._remove(name, network)
            raise PeerFailed(f"the peer to have an address on {network}", "none", "read journalctl -u docker")
        return Peer(name, addr, network)

    def api(self, method: str, path: str) -> Result:
        return self.runner.docker_api(self.socket_path, method, path)

    def address_of(self, name: str) -> str:
        out = self.api("GET", f"/containers/{quote(name)}/json")
        try:
            networks = json.loads(out.stdout)["NetworkSettings"]["Networks"] if out.code == 200 else {}
        except (ValueError, KeyError, TypeError):
            networks = {}
        return "".join(str(n.get("IPAddress") or "") for n in networks.values() if isinstance(n, dict))

    def remove_container(self, name: str) -> None:
        self.api("DELETE", f"/containers/{quote(name)}?force=1")

    def probe(self, runtime: str, peer: Peer, targets: Sequence[str]) -> Result:
        opts = ["--network", peer.network] if peer.network else []
        return self.run(runtime, ["sh", "-c", PROBE, str(PROBE_TIMEOUT), *targets], opts)

    def stop_peer(self, peer: Peer) -> None:
        self._remove(peer.name, peer.network)

    def _remove(self, name: str, network: str | None) -> None:
        self.remove_container(name)
        if network:
            self.api("DELETE", f"/networks/{quote(network)}")

    def rerun_hint(self, runtime: str) -> str:
        return f"run 'docker run --rm --runtime {runtime} {self.image} nc' on the host"


@dataclass(frozen=True)
class ContainerdNames:
    """The contract's containerd facts (components/contract.py)."""

    namespace: str
    runc_shim: str
    runsc_shim: str
    kata_shim: str
    cni_network: str


class Ctr:
    """Debian's `ctr run --cni` in verify's own containerd namespace, on a
    busybox-static rootfs (ctr cannot see Docker's images)."""

    name = "ctr"

    def __init__(self, runner: Runner, names: ContainerdNames, runsc: str, rootfs: Path, cni_networks: Path) -> None:
        self.runner, self.names, self.runsc, self.rootfs, self.cni_networks = runner, names, runsc, rootfs, cni_networks
        self._lock = threading.Lock()

    def runtime_args(self, runtime: str) -> list[str]:
        if runtime == "kata":
            return ["--runtime", self.names.kata_shim]
        if runtime == "runsc":  # the runc shim running runsc: every host has it
            return ["--runtime", self.names.runc_shim, "--runc-binary", self.runsc]
        return ["--runtime", self.names.runc_shim]

    def run_argv(self, runtime: str, container_id: str, command: Sequence[str]) -> list[str]:
        return ["ctr", "--namespace", self.names.namespace, "run", "--rm", "--cni", *self.runtime_args(runtime),
                "--rootfs", str(self.rootfs), container_id, *command]

    def label(self, runtime: str) -> str:
        return f"ctr-{runtime}"

    def address_of(self, container_id: str) -> str | None:
        """The address host-local IPAM gave the container: its file holds
        "<namespace>-<ID>\\r\\n<ifname>" (ctr joins the first CNI network)."""
        owner = f"{self.names.namespace}-{container_id}"
        for path in sorted(self.cni_networks.glob("*/*")):
            try:
                first = path.read_text(errors="replace").split("\n", 1)[0].strip("\r")
            except OSError:
                continue
            if first == owner:
                return path.name
        return None

    def start_peer(self, runtime: str) -> Peer:
        # ctr's peer runs in the foreground of a background process, so `ctr
        # run --rm` tears its CNI attachment down when it ends (a detached
        # ctr container would leak its address).
        name = f"{NAME_PREFIX}-peer-{self.label(runtime)}"
        self.remove(name)
        proc = self.runner.start(self.run_argv(runtime, name, ["/bin/sh", "-c", PEER_SERVER, str(PEER_PORT)]))
        waited, addr = 0, None
        while (addr := self.address_of(name)) is None:
            if waited >= CNI_PEER_WAIT or proc.poll() is not None:
                self.remove(name, proc)
                raise PeerFailed("a peer container through ctr run --cni", f"no address after {waited} s",
                                 "run 'ctr run --rm --cni --rootfs DIR id sh' on the host and read journalctl -u containerd")
            self.runner.sleep(1)
            waited += 1
        peer = Peer(name, addr, None, proc)
        _wait_for_server(self.runner, peer, waited, lambda: self.remove(name, proc), proc)
        return peer

    def probe(self, runtime: str, peer: Peer, targets: Sequence[str]) -> Result:
        name = f"{NAME_PREFIX}-probe-{self.label(runtime)}"
        self.remove(name)  # a run that was killed may have left it
        return self.runner.run(self.run_argv(runtime, name, ["/bin/sh", "-c", PROBE, str(PROBE_TIMEOUT), *targets]),
                               timeout=RUN_TIMEOUT)

    def stop_peer(self, peer: Peer) -> None:
        self.remove(peer.name, peer.process)

    def remove(self, container_id: str, process: Process | None = None) -> None:
        """Kill the container's task from the host (Debian's ctr 1.7 `task
        kill` looks for CNI plugins in /opt/cni/bin and fails before it kills
        a --cni container), wait for its `ctr run --rm`, then remove what a
        killed run would have left."""
        ns = ["ctr", "--namespace", self.names.namespace]
        if process is None and container_id not in self.runner.run([*ns, "container", "ls", "-q"], timeout=60).stdout.split():
            return  # nothing left by an earlier run (the usual case: one ctr call, not four)
        tasks = self.runner.run([*ns, "task", "ls"], timeout=60)
        for line in tasks.stdout.splitlines():
            cells = line.split()
            if len(cells) >= 2 and cells[0] == container_id and cells[1].isdigit() and int(cells[1]) > 0:
                self.runner.run(["kill", "-KILL", cells[1]], timeout=10)
        if process is not None:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        # What a killed run left (`ctr run --rm` removes its own otherwise): each ctr call costs a second under TCG.
        if container_id in self.runner.run([*ns, "container", "ls", "-q"], timeout=60).stdout.split():
            self.runner.run([*ns, "task", "delete", container_id], timeout=60)
            self.runner.run([*ns, "container", "rm", container_id], timeout=60)

    def rerun_hint(self, runtime: str) -> str:
        return "run 'ctr run --rm --cni --rootfs DIR id nc' on the host (DIR: a busybox-static rootfs) and read journalctl -u containerd"


class Nerdctl:
    """nerdctl in verify's containerd namespace, on the contract's CNI network."""

    name = "nerdctl"

    def __init__(self, runner: Runner, names: ContainerdNames, runsc: str, runsc_from_release: bool, image: str) -> None:
        self.runner, self.names, self.runsc, self.image = runner, names, runsc, image
        self.runsc_from_release = runsc_from_release

    def runtime(self, runtime: str) -> str:
        if runtime == "kata":
            return self.names.kata_shim
        if runtime == "runsc":
            # The release's shim; Debian's package ships none, so nerdctl runs its runsc binary.
            return self.names.runsc_shim if self.runsc_from_release else self.runsc
        return self.names.runc_shim

    def cmd(self, *args: str, timeout: float | None = RUN_TIMEOUT, stdin: bytes | None = None) -> Result:
        return self.runner.run(["nerdctl", "--namespace", self.names.namespace, *args], timeout=timeout, stdin=stdin)

    def run(self, runtime: str, command: Sequence[str], opts: Sequence[str] = ()) -> Result:
        return self.cmd("run", "--rm", "--runtime", self.runtime(runtime), "--network", self.names.cni_network,
                        *opts, self.image, *command)

    def label(self, runtime: str) -> str:
        return f"nerdctl-{runtime}"

    def start_peer(self, runtime: str) -> Peer:
        name = f"{NAME_PREFIX}-peer-{self.label(runtime)}"
        self.cmd("rm", "-f", name, timeout=60)
        out = self.run(runtime, ["/bin/sh", "-c", PEER_SERVER, str(PEER_PORT)], ["-d", "--name", name])
        if not out.ok:
            self.cmd("rm", "-f", name, timeout=60)
            raise PeerFailed("a peer container through nerdctl run", _last(out.output), "read journalctl -u containerd")
        addr = self.cmd("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name, timeout=60)
        if not addr.stdout.strip():
            self.cmd("rm", "-f", name, timeout=60)
            raise PeerFailed(f"the peer to have an address on {self.names.cni_network}", "none",
                             "read journalctl -u containerd")
        peer = Peer(name, addr.stdout.strip())
        _wait_for_server(self.runner, peer, 0, lambda: self.cmd("rm", "-f", name, timeout=60))
        return peer

    def probe(self, runtime: str, peer: Peer, targets: Sequence[str]) -> Result:
        return self.run(runtime, ["/bin/sh", "-c", PROBE, str(PROBE_TIMEOUT), *targets])

    def stop_peer(self, peer: Peer) -> None:
        self.cmd("rm", "-f", peer.name, timeout=60)

    def rerun_hint(self, runtime: str) -> str:
        return f"run 'nerdctl run --rm --network {self.names.cni_network} {self.image} nc' on the host"


def _wait_for_server(runner: Runner, peer: Peer, waited: int, cleanup: Callable[[], object],
                     process: Process | None = None) -> None:
    """Until the peer's server answers the host (an address is given before
    the sandbox has booted), so a slow start is not taken for a broken
    network by the positive control. `waited`: seconds already spent on the
    address; the bound is wall time, since a refused connect returns at once
    and one that is dropped takes PROBE_TIMEOUT."""
    deadline = runner.now_ms() + max(0, CNI_PEER_WAIT - waited) * 1000
    expected = f"the peer at {peer.address}:{PEER_PORT} to answer the host"
    todo = "read journalctl -u containerd; check the CNI network"
    while not runner.reaches(peer.address, PEER_PORT):
        if process is not None and (code := process.poll()) is not None:
            said = process.last_line()
            cleanup()
            raise PeerFailed(expected, f"its run ended (exit {code}){': ' + said if said else ''}", todo)
        if runner.now_ms() >= deadline:
            said = process.last_line() if process is not None else ""
            cleanup()
            raise PeerFailed(expected, f"no answer after {CNI_PEER_WAIT} s{'; its run printed: ' + said if said else ''}",
                             todo)
        runner.sleep(1)


def _last(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""
