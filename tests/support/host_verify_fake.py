"""A stand-in host for host_verify's unit tests: an injected command runner
that answers docker, ctr, nerdctl, curl, ss and stat the way a verified lab
guest does, with every answer a test may change; and a Context built on it,
with the program's own contract (components/contract.py) and temporary
files for everything the checks read.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from components.contract import render_contract_env
from host_verify.checks import NAME_LOOKUP, Context
from host_verify.clients import PROBE, ContainerdNames, Ctr, Docker, Nerdctl, Result
from host_verify.inputs import Contract, Inputs, Paths, parse_contract_env

HOST_KERNEL = "6.12.0-host"
GUEST_KERNEL = "4.4.0"
PRIVATE = "10.0.2.15"
RUNSC = "/usr/bin/runsc"
OUTSIDE = ("192.0.2.10", 8080)
DOCKER_PEER = "172.18.0.2"
NERDCTL_PEER = "10.4.250.3"
CTR_PEER = "10.4.250.5"
NAME_PROBE = "probe.functions-runtime.test"


class FakeProcess:
    def __init__(self) -> None:
        self.killed = False
        self.code: int | None = None
        self.printed = ""

    def poll(self) -> int | None:
        return self.code

    def wait(self, timeout: float | None = None) -> int:
        self.code = 0 if self.code is None else self.code
        return self.code

    def kill(self) -> None:
        self.killed = True

    def last_line(self) -> str:
        return self.printed.strip().splitlines()[-1] if self.printed.strip() else ""


@dataclass
class FakeHost:
    """`run` answers by the command; tests set the fields or `override`."""

    cni: Path
    namespace: str = "functions-runtime-verify"
    kernels: dict[str, str] = field(default_factory=lambda: {"runsc": GUEST_KERNEL, "kata": "6.1-kata", "runc": HOST_KERNEL})
    # "ADDR PORT" a probe container reaches (what is not here is unreachable).
    container_reaches: set[str] = field(default_factory=lambda: {
        f"{DOCKER_PEER} 8080", f"{NERDCTL_PEER} 8080", f"{CTR_PEER} 8080", f"{OUTSIDE[0]} {OUTSIDE[1]}",
        "functions-runtime-verify-peer-runsc 8080",
    })
    host_reaches: set[tuple[str, int]] = field(default_factory=lambda: {
        ("169.254.169.254", 80), (PRIVATE, 2376), (PRIVATE, 22), (DOCKER_PEER, 8080), (NERDCTL_PEER, 8080),
        (CTR_PEER, 8080),
    })
    # The nameserver a default-bridge container sees, what the host gets from
    # it, and what the container's own lookup gets.
    nameserver: str = "192.0.2.53"
    host_resolves: dict[tuple[str, str], list[str] | None] = field(
        default_factory=lambda: {("192.0.2.53", NAME_PROBE): ["192.0.2.10"]})
    container_resolves: dict[str, list[str]] = field(default_factory=lambda: {"runsc": ["192.0.2.10"],
                                                                               "kata": ["192.0.2.10"],
                                                                               "runc": ["192.0.2.10"]})
    # "ADDR:PORT" registries whose dial the host filter refuses dockerd (a pull
    # from any other address connects, and fails after: there is no registry).
    dockerd_refused: set[str] = field(default_factory=lambda: {f"{PRIVATE}:2376"})
    # PID -> the image (/proc/PID/exe) of the host's processes; a detached
    # gVisor container adds `runsc_sandbox_image` (when set) while it runs.
    process_images: dict[int, str] = field(default_factory=dict)
    runsc_sandbox_image: str | None = None
    default_runtime: str = "runsc"
    runtimes: str = "io.containerd.runc.v2 runc runsc "
    runsc_entry: str = f"{RUNSC}|--network=sandbox "
    daemon: str = "true json-file"
    socket_mode: str = "600 root root"
    listeners: Sequence[str] = (f"{PRIVATE}:2376", f"{PRIVATE}:9323")
    authz: str = "functions-runtime-authz "
    images: set[str] = field(default_factory=lambda: {"functions-runtime/verify:busybox"})
    pids_started: int = 127
    memory_held: int = 128 * 1024 * 1024
    policy: Callable[[list[str]], tuple[bool, str]] | None = None
    override: Callable[[list[str]], Result | None] | None = None
    calls: list[list[str]] = field(default_factory=list)
    started: list[list[str]] = field(default_factory=list)
    clock: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    # ------------------------------------------------------------ Runner

    def run(self, argv: Sequence[str], *, timeout: float | None = None, stdin: bytes | None = None) -> Result:
        argv = list(argv)
        self.calls.append(argv)
        if self.override:
            out = self.override(argv)
            if out is not None:
                return out
        return self.answer(argv)

    def start(self, argv: Sequence[str]) -> FakeProcess:
        argv = list(argv)
        with self.lock:
            self.started.append(argv)
            index = len(self.started)
        # host-local IPAM's file for the ctr peer's address
        name = argv[argv.index("--rootfs") + 2]
        net = self.cni / "functions-runtime"
        net.mkdir(parents=True, exist_ok=True)
        # The first peer gets CTR_PEER; peers started beside it get their own addresses, reachable alike.
        address = CTR_PEER if index == 1 else f"10.4.250.{4 + index}"
        if address != CTR_PEER and f"{CTR_PEER} 8080" in self.container_reaches:
            self.container_reaches.add(f"{address} 8080")
            self.host_reaches.add((address, 8080))
        (net / address).write_text(f"{self.namespace}-{name}\r\neth0")
        return FakeProcess()

    def reaches(self, address: str, port: int, timeout: float = 5) -> bool:
        return (address, port) in self.host_reaches

    def docker_api(self, socket_path: Path, method: str, path: str) -> Result:
        argv = ["docker-api", method, path]
        self.calls.append(argv)
        if self.override:
            out = self.override(argv)
            if out is not None:
                return out
        if path == "/_ping":
            return Result(200, "OK")
        if method == "GET" and path.endswith("/json"):
            return Result(200, json.dumps({"NetworkSettings": {"Networks": {"net": {"IPAddress": DOCKER_PEER}}}}))
        return Result(204, "")

    def sleep(self, seconds: float) -> None:
        self.clock += int(seconds * 1000)

    def now_ms(self) -> int:
        self.clock += 700
        return self.clock

    def resolve(self, server: str, name: str) -> list[str] | None:
        self.calls.append(["resolve", server, name])
        return self.host_resolves.get((server, name))

    # ------------------------------------------------------------ answers

    def answer(self, argv: list[str]) -> Result:
        tool = os.path.basename(argv[0])
        if tool == "curl":
            if "--unix-socket" in argv:
                return Result(0, "OK")
            if "--cert" in argv:
                return Result(0, json.dumps({"Version": "26.1.5+dfsg1", "ApiVersion": "1.45"}))
            return Result(56, "", "curl: (56) OpenSSL SSL_read: tlsv13 alert certificate required\n")
        if tool == "stat":
            return Result(0, self.socket_mode + "\n")
        if tool == "ss":
            return Result(0, "".join(f'LISTEN 0 4096 {a} 0.0.0.0:* users:(("dockerd",pid=1,fd=3))\n' for a in self.listeners))
        if tool in ("containerd", "runc", "runsc", "nerdctl", "kata-runtime") and "--version" in argv:
            return Result(0, {"containerd": "containerd github.com/containerd/containerd 1.7.24~ds1 1.7.24~ds1",
                              "runc": "runc version 1.1.15+ds1", "runsc": "runsc version 0.0~20240729.0",
                              "nerdctl": "nerdctl version 2.0.3", "kata-runtime": "3.32.0"}[tool] + "\n")
        if tool == "docker":
            return self.docker(argv)
        if tool == "find" and "-lname" in argv:
            pattern = argv[argv.index("-lname") + 1]
            return Result(0, "".join(f"/proc/{pid}/exe\n" for pid, exe in self.process_images.items()
                                     if fnmatch.fnmatchcase(exe, pattern)))
        if tool == "ctr":
            return self.ctr(argv)
        if tool == "nerdctl":
            return self.nerdctl(argv)
        return Result(0, "")

    def container(self, runtime: str, command: list[str], peer_address: str) -> Result:
        if command[:2] == ["sh", "-c"] and command[2] == NAME_LOOKUP:
            found = self.container_resolves.get(runtime, [])
            lines = [f"nameserver {self.nameserver}", f"Server:\t\t{self.nameserver}",
                     f"Address:\t{self.nameserver}:53", ""]
            lines += [f"Name:\t{command[3]}", *[f"Address: {a}" for a in found]] if found else [
                f"** server can't find {command[3]}: NXDOMAIN"]
            return Result(0, "\n".join([*lines, f"exit {0 if found else 1}"]) + "\n")
        if command[:2] in (["sh", "-c"], ["/bin/sh", "-c"]) and command[2] == PROBE:
            lines = [f"kernel {self.kernels[runtime]}"]
            lines += [f"{t} {'reachable' if t in self.container_reaches else 'unreachable'}" for t in command[4:]]
            return Result(0, "\n".join(lines) + "\n")
        if command[:1] == ["uname"]:
            return Result(0, self.kernels[runtime] + "\n")
        if command[:2] == ["sh", "-c"] and "started" in command[2]:
            target = int(command[3])
            lines = [f"started {n}" for n in range(1, min(self.pids_started, target) + 1)]
            if self.pids_started >= target:
                lines.append("started all")
            return Result(0, "\n".join(lines) + "\n", "sh: can't fork: Resource temporarily unavailable\n")
        if command[:1] == ["awk"]:
            target = int(command[2].split("=")[1])
            size, lines = 16, []
            while size < target and size * 2 <= self.memory_held:
                size *= 2
                lines.append(f"held {size}")
            if size * 2 > self.memory_held and size < target:
                return Result(137, "\n".join(lines) + "\n")
            return Result(0, "\n".join([*lines, "held all"]) + "\n")
        return Result(0, "")

    def docker(self, argv: list[str]) -> Result:
        args = argv[argv.index("-H") + 2:]
        verb = args[0]
        if verb == "info":
            lines = []
            for template in args[2].split("\n"):
                if "DefaultRuntime" in template:
                    lines.append(f"{self.default_runtime} {self.runtimes}")
                elif "$v.Path" in template:
                    lines.append(self.runsc_entry)
                elif "LiveRestoreEnabled" in template:
                    lines.append(self.daemon)
                elif "Authorization" in template:
                    lines.append(self.authz)
            return Result(0, "\n".join(lines) + "\n")
        if verb == "image" and args[1] == "inspect":
            return Result(0 if args[2] in self.images else 1, "[]", "" if args[2] in self.images else "No such image\n")
        if verb == "pull":
            registry = args[-1].split("/")[0]
            get = f'Error response from daemon: Get "https://{registry}/v2/": '
            if registry in self.dockerd_refused:
                return Result(1, "", f"{get}dial tcp {registry}: connect: no route to host\n")
            return Result(1, "", f"{get}EOF\n")
        if verb in ("import", "load"):
            self.images.add(args[-1] if verb == "import" else "loaded")
            return Result(0, "sha256:abc\n")
        if verb == "create":
            allowed, err = self.policy(args) if self.policy else default_policy(args)
            return Result(0, "c0ffee\n") if allowed else Result(1, "", err + "\n")
        if verb == "inspect":
            return Result(0, DOCKER_PEER + "\n")
        if verb == "run":
            rt = args[args.index("--runtime") + 1]
            image_at = next(i for i, a in enumerate(args) if a in self.images or a.endswith("@sha256:" + "0" * 64))
            if "-d" in args[:image_at]:
                if rt == "runsc" and self.runsc_sandbox_image:
                    self.process_images[9000 + len(self.process_images)] = self.runsc_sandbox_image
                return Result(0, "peerid\n")
            return self.container(rt, args[image_at + 1:], DOCKER_PEER)
        return Result(0, "")

    def ctr(self, argv: list[str]) -> Result:
        if "run" in argv:
            rt = "runsc" if "--runc-binary" in argv else ("kata" if "io.containerd.kata.v2" in argv else "runc")
            at = argv.index("--rootfs") + 3
            return self.container(rt, argv[at:], CTR_PEER)
        return Result(0, "")

    def nerdctl(self, argv: list[str]) -> Result:
        if "run" in argv:
            runtime = argv[argv.index("--runtime") + 1]
            rt = "runsc" if "runsc" in runtime else ("kata" if "kata" in runtime else "runc")
            at = next(i for i, a in enumerate(argv) if a in self.images) + 1
            if "-d" in argv:
                return Result(0, "peerid\n")
            return self.container(rt, argv[at:], NERDCTL_PEER)
        if "inspect" in argv:
            return Result(0, NERDCTL_PEER + "\n")
        return Result(0, "")


PREFIX = "functions-runtime policy:"


def default_policy(args: list[str]) -> tuple[bool, str]:
    """The endpoint policy's answers for what verify creates (at most 1024 MiB, 256 PIDs, 2 CPUs)."""
    joined = " ".join(args)
    if "--privileged" in args:
        return False, f"Error response from daemon: authorization denied by plugin functions-runtime-authz: {PREFIX} --privileged is not allowed"
    if "--network host" in joined:
        return False, f"Error: {PREFIX} --network host is not allowed"
    if "/:/host" in joined:
        return False, f"Error: {PREFIX} bind mounts are not allowed"
    if "--memory" not in args:
        return False, f"Error: {PREFIX} --memory is required on this endpoint (at most 1024 MiB)"
    memory = args[args.index("--memory") + 1]
    if int(memory.rstrip("m")) > 1024:
        return False, f"Error: {PREFIX} --memory {memory} is above this endpoint's maximum of 1024 MiB"
    if int(args[args.index("--pids-limit") + 1]) > 256:
        return False, f"Error: {PREFIX} --pids-limit is above this endpoint's maximum of 256"
    if float(args[args.index("--cpus") + 1]) > 2:
        return False, f"Error: {PREFIX} --cpus is above this endpoint's maximum of 2"
    return True, ""


def contract(environ: dict[str, str] | None = None) -> Contract:
    return Contract(parse_contract_env(render_contract_env(), environ or {}))


def make_inputs(**changes: object) -> Inputs:
    base = dict(
        host="lab-1", isolation="sandbox", kata_hypervisor="qemu", gvisor_runsc="debian", allow_host_network=False,
        private_address=PRIVATE, endpoint_port=2376, ssh_port=22, image="functions-runtime/verify:busybox",
        image_archive="", cold_start_runs=3, max_millicpus=2000, outside=OUTSIDE, nerdctl=True,
        name_probe=NAME_PROBE,
    )
    base.update(changes)
    return Inputs(**base)  # type: ignore[arg-type]


def make_ctx(tmp_path: Path, fake: FakeHost | None = None, wanted: tuple[str, ...] = ("runsc",),
             environ: dict[str, str] | None = None, **input_changes: object) -> tuple[Context, FakeHost]:
    fake = fake or FakeHost(cni=tmp_path / "cni")
    tmp_path.mkdir(parents=True, exist_ok=True)
    policy = tmp_path / "endpoint-policy.json"
    if not policy.exists():
        policy.write_text(json.dumps({"sandboxRuntimes": ["runsc"],
                                      "limits": {"maxMemoryMiB": 1024, "maxPids": 256, "maxMilliCpus": 2000}}))
    env = {"FR_AUTHZ_CONFIG": str(policy), "FR_DEBIAN_RUNSC": RUNSC, **(environ or {})}
    paths_env = {"FR_CATALOG": str(tmp_path / "catalog.tsv"), "FR_STATE_DIR": str(tmp_path / "state"),
                 "FR_DEV_KVM": str(tmp_path / "kvm"), "FR_CPUINFO": str(tmp_path / "cpuinfo"),
                 "FR_KATA_DIR": str(tmp_path / "kata"), "FR_BIN_DIR": str(tmp_path / "bin"),
                 "FR_KATA_CONFIG": str(tmp_path / "kata-config.toml"),
                 "FR_BUSYBOX": str(tmp_path / "busybox"), "FR_DOCKER_SOCKET": str(tmp_path / "docker.sock"),
                 "FR_CNI_NETWORKS": str(tmp_path / "cni"), "FR_MEMINFO": str(tmp_path / "meminfo"),
                 "FR_SYS_MODULE": str(tmp_path / "sys-module"), **(environ or {})}
    c = contract({**env, **paths_env})
    paths = Paths.from_contract(tmp_path, paths_env, c)
    inputs = make_inputs(**input_changes)
    names = ContainerdNames(c["CONTAINERD_VERIFY_NAMESPACE"], c["RUNC_SHIM_RUNTIME"], c["RUNSC_SHIM_RUNTIME"],
                            c["KATA_SHIM_RUNTIME"], c["CNI_NETWORK"])
    limit_opts = ["--memory", "256m", "--pids-limit", "128", "--cpus", "1.000"]
    ctx = Context(
        inputs=inputs, contract=c, paths=paths, runner=fake,
        docker=Docker(fake, ["--tlsverify", "-H", f"tcp://{PRIVATE}:2376"], paths.docker_socket, inputs.image, limit_opts),
        ctr=Ctr(fake, names, RUNSC, tmp_path / "rootfs", paths.cni_networks),
        nerdctl=Nerdctl(fake, names, RUNSC, inputs.gvisor_runsc == "release", inputs.image),
        certs=tmp_path / "certs", work=tmp_path, host_kernel=HOST_KERNEL, wanted=wanted, runsc=RUNSC, catalog={},
    )
    return ctx, fake


def commands(fake: FakeHost, tool: str, word: str = "") -> list[list[str]]:
    return [c for c in fake.calls if os.path.basename(c[0]) == tool and (not word or word in c)]


def joined(argv: Sequence[str]) -> str:
    return " ".join(argv)


def matches(pattern: str, argv: Sequence[str]) -> bool:
    return re.search(pattern, joined(argv)) is not None


def throwaway_pems(common_name: str = "verify lab-1", with_cn: bool = True) -> str:
    """CA certificate, client certificate (CN `common_name`) and key, as the verify step's stdin."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)

    def cert(name: x509.Name) -> str:
        built = (x509.CertificateBuilder().subject_name(name).issuer_name(x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
        return built.public_bytes(serialization.Encoding.PEM).decode()

    subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "functions-runtime")]
    if with_cn:
        subject.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])) + cert(x509.Name(subject)) + key_pem
