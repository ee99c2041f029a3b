"""The checks, and the table that declares them (docs/host-contract.md, The verify report).

Each check is a function of (context, runtime, recorder); the table says
what it is called, which runtimes it runs for, which client it uses, its
failure family (exit code), which checks' facts it needs, and when it may
run beside others (`stage`, `lane`: engine.py). A check records one or more
results ("checking ... passed (detail)") or raises a Failure.
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import re
import tarfile
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host_verify.clients import (
    PEER_PORT,
    PROBE_TIMEOUT,
    ContainerClient,
    Ctr,
    Docker,
    Nerdctl,
    PeerFailed,
    Result,
    Runner,
)
from host_verify.failures import FAMILIES, Failure, one_line, tail
from host_verify.inputs import CatalogRow, Contract, Inputs, Paths
from host_verify.report import CheckResult, ColdStart, PolicyLimits

BUSYBOX_APPLETS = ("sh", "uname", "wget", "nc", "true", "sleep", "awk")
# The limit checks: the bomb tries to start this many times the PID limit
# (sleepers, so the test is bounded even where the limit would not hold);
# the hog tries to hold this many times the memory limit.
BOMB_FACTOR = 2
HOG_FACTOR = 2
# The bomb: start sleepers until the limit stops it (busybox sh gives up at
# the first fork that fails), saying how many ran; "started all" only if the
# limit did not hold.
FORK_BOMB = 'n=0; while [ "$n" -lt "$0" ]; do sleep 600 & n=$((n + 1)); echo "started $n"; done; echo "started all"'
# The hog: double a string until it holds the target, saying how much it
# holds; "held all" only if the memory limit did not hold.
MEMORY_HOG = (
    'BEGIN { s = "0123456789abcdef"; while (length(s) < target) { s = s s; printf "held %d\\n", length(s); '
    'fflush() } print "held all" }'
)


class Facts:
    """What checks learn for the report and for later checks, for one run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, str], Any] = {}

    def set(self, key: str, value: Any, runtime: str = "") -> None:
        with self._lock:
            self._values[(key, runtime)] = value

    def get(self, key: str, runtime: str = "", default: Any = None) -> Any:
        with self._lock:
            return self._values.get((key, runtime), default)


@dataclass(frozen=True)
class Context:
    inputs: Inputs
    contract: Contract
    paths: Paths
    runner: Runner
    docker: Docker
    ctr: Ctr
    nerdctl: Nerdctl
    certs: Path
    work: Path
    host_kernel: str
    wanted: tuple[str, ...]
    runsc: str
    catalog: Mapping[str, CatalogRow]
    facts: Facts = field(default_factory=Facts)

    def client(self, name: str) -> ContainerClient:
        return {"docker": self.docker, "ctr": self.ctr, "nerdctl": self.nerdctl}[name]


class Recorder:
    """One check's results, each logged as one line on stderr."""

    def __init__(self, family: str, log: Callable[[str], None]) -> None:
        self.family, self.log = family, log
        self.results: list[CheckResult] = []

    def passed(self, name: str, description: str, detail: str) -> None:
        self.results.append(CheckResult(name, "passed", one_line(detail)))
        self.log(f"checking {description}... passed ({detail})")

    def skipped(self, name: str, description: str, reason: str) -> None:
        self.results.append(CheckResult(name, "skipped", one_line(reason)))
        self.log(f"checking {description}... skipped: {reason}")

    def fail(self, name: str, description: str, expected: str, found: str, todo: str, family: str = "") -> Failure:
        failure = Failure(name, FAMILIES[family or self.family], expected, found, todo)
        self.results.append(CheckResult(name, "failed", f"expected {failure.expected}; found {failure.found}"))
        self.log(f"checking {description}... FAILED")
        return failure


# ---------------------------------------------------------------- host facts


def marker_matches(paths: Paths, row: CatalogRow | None) -> bool:
    """The recorded install is the catalog's version and digest (a legacy
    sha256 marker, "<version> <hex>", counts)."""
    if row is None:
        return False
    try:
        recorded = (paths.state_dir / f"{row.name}.version").read_text().strip()
    except OSError:
        return False
    algorithm, _, hex_digest = row.digest.partition(":")
    return recorded == f"{row.version} {row.digest}" or (algorithm == "sha256" and recorded == f"{row.version} {hex_digest}")


def kvm_missing_reason(paths: Paths) -> str:
    """Empty when hardware KVM is usable: a /dev/kvm and vmx/svm CPU flags
    (a paravirtual /dev/kvm without them never boots a guest kernel)."""
    dev = paths.dev_kvm
    if not (dev.is_char_device() and os.access(dev, os.R_OK | os.W_OK)):
        return f"no usable {dev}"
    try:
        flags = set(paths.cpuinfo.read_text(errors="replace").split())
    except OSError:
        flags = set()
    if not flags & {"vmx", "svm"}:
        return f"{dev} exists but the CPU shows no vmx/svm flag"
    return ""


def kata_installed(paths: Paths, catalog: Mapping[str, CatalogRow]) -> bool:
    shim = paths.kata_dir / "bin/containerd-shim-kata-v2"
    return marker_matches(paths, catalog.get("kata")) and os.access(shim, os.X_OK)


def kata_shipped_config(paths: Paths, hypervisor: str) -> Path:
    return paths.kata_dir / f"share/defaults/kata-containers/configuration-{hypervisor}.toml"


def kata_check(runner: Runner, paths: Paths, config: Path) -> tuple[bool, str]:
    out = runner.run([str(paths.bin_dir / "kata-runtime"), "--config", str(config), "check", "--no-network-checks"],
                     timeout=120)
    return out.ok, out.output


def kata_unusable_reason(runner: Runner, paths: Paths, catalog: Mapping[str, CatalogRow], hypervisor: str) -> str:
    """Empty when Kata can run containers here, else why not (lib.sh's rule)."""
    config = kata_shipped_config(paths, hypervisor)
    if reason := kvm_missing_reason(paths):
        return reason
    if not kata_installed(paths, catalog):
        return f"Kata is not installed in {paths.kata_dir} (no matching install marker or shim)"
    if not os.access(config, os.R_OK):
        return (f"Kata's {hypervisor} configuration {config} does not exist (the release does not ship it, "
                "or the install is incomplete)")
    ok, out = kata_check(runner, paths, config)
    if not ok:
        return f"'kata-runtime check' failed with the {hypervisor} configuration {config}: {one_line(tail(out, 3))}"
    return ""


def wanted_runtimes(isolation: str, kata_usable: bool) -> tuple[str, ...]:
    """Default first: vm wants Kata always; sandbox wants Kata where it runs, then gVisor."""
    wanted = ["kata"] if isolation == "vm" or kata_usable else []
    if isolation == "sandbox":
        wanted.append("runsc")
    return tuple(wanted)


def runsc_path(contract: Contract, catalog: Mapping[str, CatalogRow], source: str) -> str:
    if source == "debian":
        return contract["DEBIAN_RUNSC"]
    archive = contract["GVISOR_ARCHIVE"]
    row = catalog.get(archive)
    version = row.version if row else ""
    if not re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z.+~_-]*", version) or ".." in version:
        raise Failure("preflight-runsc", FAMILIES["preflight"],
                      f"a version usable as a directory name in catalog row '{archive}'", f"'{version}'",
                      "fix the row's version (gVisor's release archive)")
    return f"{contract['GVISOR_DIR']}/{version}/runsc"


def sidecar_dir(ctx: Context) -> Path:
    """Where the release's runsc finds its sidecars: beside itself."""
    return Path(ctx.runsc).parent / ctx.contract["GVISOR_SIDECAR_DIR"]


def runsc_release_date(version_line: str) -> str | None:
    """`runsc version release-20260907.0` (or Debian's `0.0~20240729.0`) ->
    the release's date; None for a build that does not say it."""
    found = re.search(r"(?:release-|0\.0~)(\d{8})\.\d+", version_line)
    return found.group(1) if found else None


def upstream_version(version: str) -> str:
    return re.sub(r"[+~].*$", "", re.sub(r"^[0-9]+:", "", version))


def version_of(runner: Runner, argv: Sequence[str]) -> str | None:
    """The first token of the command's first line that looks like a version;
    Debian's gVisor (0.0~<date>.<n>) as release-<date>.<n>."""
    out = runner.run(argv, timeout=30)
    if not out.ok:
        return None
    first = (out.stdout.splitlines() or [""])[0]
    match = re.search(r"(release-)?[0-9]+\.[0-9]+(\.[0-9]+)?([.~+-][0-9A-Za-z.~+-]*)?", first)
    if not match:
        return None
    debian = re.match(r"^0\.0~([0-9]{8}\.[0-9]+)", match.group(0))
    return f"release-{debian.group(1)}" if debian else upstream_version(match.group(0)) or None


def collect_versions(ctx: Context) -> dict[str, str | None]:
    """Each component's version, the commands side by side."""
    kata = ctx.catalog["kata"].version if "kata" in ctx.catalog and kata_installed(ctx.paths, ctx.catalog) else None
    commands = {"containerd": ["containerd", "--version"], "runc": ["runc", "--version"],
                "nerdctl": [str(ctx.paths.bin_dir / "nerdctl"), "--version"]}
    if "runsc" in ctx.wanted:
        commands["runsc"] = [ctx.runsc, "--version"]
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        found = dict(zip(commands, pool.map(lambda argv: version_of(ctx.runner, argv), commands.values()), strict=True))
    return {"docker": ctx.facts.get("docker_version") or None, "containerd": found["containerd"], "runc": found["runc"],
            "runsc": found.get("runsc"), "kata": kata, "nerdctl": found["nerdctl"]}


def last_count(output: str, word: str) -> int:
    """The number on the last "WORD <n>" line, or 0."""
    count = 0
    for line in output.splitlines():
        cells = line.split()
        if len(cells) == 2 and cells[0] == word and cells[1].isdigit():
            count = int(cells[1])
    return count


def median(values: Sequence[int]) -> int:
    ordered = sorted(values)
    return ordered[(len(ordered) + 1) // 2 - 1]


def probe_result(output: str, address: str, port: int) -> str:
    """"reachable", "unreachable" or "probe failed: ..." for one target."""
    lines = set(output.splitlines())
    if f"{address} {port} unreachable" in lines:
        return "unreachable"
    if f"{address} {port} reachable" in lines:
        return "reachable"
    return f"probe failed: {one_line(output)}"


# ---------------------------------------------------------------- preflight


def check_preflight_kata(ctx: Context, _rt: str, rec: Recorder) -> None:
    name, desc = "preflight-kata", "Kata preflight (KVM, CPU flags, vhost modules, kata-runtime check)"
    inp, paths = ctx.inputs, ctx.paths
    if "kata" not in ctx.wanted:
        # sandbox without a usable Kata: say why in the report, never silently.
        reason = kata_unusable_reason(ctx.runner, paths, ctx.catalog, inp.kata_hypervisor)
        rec.skipped(name, "Kata preflight", f"Kata not usable: {reason}; gVisor (runsc) is verified instead")
        return
    if reason := kvm_missing_reason(paths):
        raise rec.fail(name, desc, f"KVM for Kata Containers (functions-runtime:isolation is {inp.isolation})",
                       f"{reason}: {ctx.contract['NO_KVM_ON_CLOUD']}",
                       "Kata needs a dedicated (Robot) server or any KVM-capable machine; or set "
                       "functions-runtime:isolation to sandbox to use gVisor")
    if not kata_installed(paths, ctx.catalog):
        version = ctx.catalog["kata"].version if "kata" in ctx.catalog else "?"
        raise rec.fail(name, desc, f"Kata {version} installed in {paths.kata_dir}", "no matching install marker or shim",
                       "re-run the install step (scripts/install_runtime.sh)")
    for module in ctx.contract.words("KERNEL_MODULES"):
        if not (paths.sys_module / module).is_dir():
            raise rec.fail(name, desc, f"kernel module {module} loaded", "it is not",
                           f"run 'modprobe {module}' on the host and check base/modules.conf")
    shipped = kata_shipped_config(paths, inp.kata_hypervisor)
    in_force = paths.kata_config
    same = shipped.is_file() and in_force.is_file() and shipped.read_bytes() == in_force.read_bytes()
    if not same:
        found = ("a different file" if in_force.exists() else "no such file") if os.access(shipped, os.R_OK) \
            else f"no {shipped} in the Kata install"
        raise rec.fail(name, desc,
                       f"the Kata configuration in force ({in_force}) to be the {inp.kata_hypervisor} one ({shipped})",
                       found, "re-run the configure step (pulumi up); it writes the chosen hypervisor's configuration")
    ok, out = kata_check(ctx.runner, paths, in_force)
    if not ok:
        raise rec.fail(name, desc,
                       f"'kata-runtime check' to pass with the {inp.kata_hypervisor} configuration in force ({in_force})",
                       tail(out, 3),
                       f"run '{paths.bin_dir}/kata-runtime --config {in_force} check --verbose' on the host")
    rec.passed(name, desc, "KVM usable, vhost modules loaded, kata-runtime check passed with the "
               f"{inp.kata_hypervisor} configuration")


def check_preflight_runsc(ctx: Context, _rt: str, rec: Recorder) -> None:
    name, desc = "preflight-runsc", "gVisor preflight (runsc present)"
    if not os.access(ctx.runsc, os.X_OK) or not Path(ctx.runsc).is_file():
        raise rec.fail(name, desc,
                       f"an executable {ctx.runsc} (functions-runtime:gvisor.runsc is {ctx.inputs.gvisor_runsc})",
                       "none", "re-run the install step (scripts/install_runtime.sh)")
    archive = ctx.contract["GVISOR_ARCHIVE"]
    if ctx.inputs.gvisor_runsc == "debian":
        origin = "Debian's runsc package, the fallback gvisor.runsc: debian chose"
    else:
        origin = f"gVisor's pinned release {ctx.catalog[archive].version if archive in ctx.catalog else '?'}"
        missing = [n for n in ctx.contract.words("GVISOR_SIDECARS") if not os.access(sidecar_dir(ctx) / n, os.X_OK)]
        if missing:
            raise rec.fail(name, desc, f"the release's sidecars beside runsc in {sidecar_dir(ctx)}",
                           f"missing: {', '.join(missing)}", "re-run the install step (it unpacks the release "
                           "archive whole; scripts/install_runtime.sh)")
        origin += f", with its sidecars in {sidecar_dir(ctx)}"
    out = ctx.runner.run([ctx.runsc, "--version"], timeout=30)
    version = (out.output.splitlines() or ["(no version)"])[0] or "(no version)"
    ctx.facts.set("runsc_version", version)
    rec.passed(name, desc, f"{ctx.runsc}: {version}; {origin}")


# ---------------------------------------------------------------- endpoint and daemon


def _curl(ctx: Context, with_cert: bool) -> list[str]:
    certs = ctx.certs
    argv = ["curl", "-fsS", "--max-time", "15", "--cacert", str(certs / "ca.pem")]
    if with_cert:
        argv += ["--cert", str(certs / "cert.pem"), "--key", str(certs / "key.pem")]
    return [*argv, f"https://{ctx.inputs.endpoint_host}:{ctx.inputs.endpoint_port}/version"]


def check_endpoint_accepts(ctx: Context, _rt: str, rec: Recorder) -> None:
    name, desc = "endpoint-accepts-client-cert", "endpoint accepts the verify client certificate"
    inp = ctx.inputs
    out = ctx.runner.run(_curl(ctx, True), timeout=30)
    if not out.ok:
        raise rec.fail(name, desc, f"the Docker API at https://{inp.endpoint_host}:{inp.endpoint_port} to answer a "
                       "client with the verify certificate", out.output,
                       f"check dockerd is running (journalctl -u docker) and the server certificate names "
                       f"{inp.private_address}")
    try:
        version = upstream_version(str(json.loads(out.stdout).get("Version", "")))
    except (ValueError, AttributeError):
        version = ""
    ctx.facts.set("docker_version", version)
    rec.passed(name, desc, f"GET /version answered over mutual TLS (Docker {version or 'unknown'})")


def check_endpoint_refuses(ctx: Context, _rt: str, rec: Recorder) -> None:
    name, desc = "endpoint-refuses-no-cert", "endpoint refuses clients without a certificate"
    out = ctx.runner.run(_curl(ctx, False), timeout=30)
    if out.ok:
        raise rec.fail(name, desc, "a TLS client without a certificate to be refused",
                       "GET /version answered without a client certificate",
                       "set tlsverify true in /etc/docker/daemon.json (configure step)")
    rec.passed(name, desc, f"refused: {out.output.strip()}")


# What the daemon checks read from `docker info` through the endpoint, one line
# each, asked once per run (each docker CLI start costs a second under emulation).
INFO_TEMPLATES = {
    "runtimes": "{{.DefaultRuntime}} {{range $k, $v := .Runtimes}}{{$k}} {{end}}",
    "runsc": '{{range $k, $v := .Runtimes}}{{if eq $k "runsc"}}{{$v.Path}}|{{range $v.Args}}{{.}} {{end}}{{end}}{{end}}',
    "daemon": "{{.LiveRestoreEnabled}} {{.LoggingDriver}}",
    "authz": "{{range .Plugins.Authorization}}{{.}} {{end}}",
}


def _docker_info(ctx: Context, rec: Recorder, name: str, desc: str, what: str) -> str:
    lines = ctx.facts.get("docker_info")
    if lines is None:
        out = ctx.docker.endpoint("info", "--format", "\n".join(INFO_TEMPLATES.values()), timeout=60)
        lines = out.stdout.split("\n")
        if not out.ok or len(lines) < len(INFO_TEMPLATES):
            raise rec.fail(name, desc, "docker info through the endpoint", out.output,
                           "check dockerd (journalctl -u docker)")
        ctx.facts.set("docker_info", lines)
    return lines[list(INFO_TEMPLATES).index(what)]


def check_registered_runtimes(ctx: Context, _rt: str, rec: Recorder) -> None:
    name, desc = "default-runtime", "Docker's default runtime and registered runtimes"
    out = _docker_info(ctx, rec, name, desc, "runtimes")
    default, _, registered = out.partition(" ")
    ctx.facts.set("default_runtime", default)
    if default != ctx.wanted[0]:
        raise rec.fail(name, desc, f"default runtime {ctx.wanted[0]}", default, "re-run the configure step")
    for rt in ctx.wanted:
        if rt not in registered.split():
            raise rec.fail(name, desc, f"runtime {rt} registered with Docker", f"runtimes: {registered}",
                           "re-run the configure step")
    rec.passed(name, desc, f"default {default}; registered: {registered}")


def check_runsc_network(ctx: Context, _rt: str, rec: Recorder) -> None:
    """Docker's runsc runtime is the chosen runsc, and on which network stack
    it runs, read from the running daemon: gVisor's own, or (runsc
    --network=host) the host kernel's, accepted only with the opt-in."""
    name, desc = "runtime-runsc-network", "Docker runs the chosen runsc on gVisor's own network stack"
    inp, c = ctx.inputs, ctx.contract
    out = _docker_info(ctx, rec, name, desc, "runsc")
    path, bar, args = out.partition("|")
    if not bar or path != ctx.runsc:
        raise rec.fail(name, desc, f"Docker's runsc runtime at {ctx.runsc} (functions-runtime:gvisor.runsc is "
                       f"{inp.gvisor_runsc})", f"'{path}'", "re-run the configure step (it writes /etc/docker/daemon.json)")
    network = ""
    for arg in args.split():
        if arg == "--network=host":
            network = c["NETWORK_HOST"]
        elif arg == "--network=sandbox":
            network = c["NETWORK_SANDBOX"]
        elif arg.startswith("--network="):
            raise rec.fail(name, desc, "runsc on gVisor's own network stack, or the host's with the opt-in",
                           f"runtime argument {arg}", "re-run the configure step (it writes /etc/docker/daemon.json)")
    network = network or c["NETWORK_SANDBOX"]
    if network == c["NETWORK_HOST"] and not inp.allow_host_network:
        raise rec.fail(name, desc, f"gVisor on its own network stack (functions-runtime:isolation is {inp.isolation})",
                       "Docker runs runsc with --network=host: socket calls reach the host kernel",
                       "re-run the configure step; or accept it with functions-runtime:gvisor.allowHostNetworkStack: true")
    ctx.facts.set("network", network, "runsc")
    if network == c["NETWORK_HOST"]:
        rec.log("WARNING: gVisor runs with --network=host (functions-runtime:gvisor.allowHostNetworkStack): "
                "socket calls reach the host kernel")
    rec.passed(name, desc, f"runsc {path}, arguments: {args.strip() or 'none'}; network {network}")


def check_daemon_hardening(ctx: Context, _rt: str, rec: Recorder) -> None:
    name, desc = "daemon-hardening", "dockerd: live-restore, log rotation, root-only socket, TLS-only TCP API"
    inp, sock = ctx.inputs, ctx.paths.docker_socket
    out = _docker_info(ctx, rec, name, desc, "daemon")
    if out != "true json-file":
        raise rec.fail(name, desc, "live-restore on and the json-file log driver (rotated by log-opts)",
                       f"LiveRestoreEnabled and LoggingDriver: {out}",
                       "re-run the configure step (it writes /etc/docker/daemon.json)")
    mode = ctx.runner.run(["stat", "-L", "-c", "%a %U %G", str(sock)], timeout=10).output.strip()
    if mode != "600 root root":
        raise rec.fail(name, desc, f"{sock} mode 600, owned by root:root", mode,
                       "re-run the configure step (docker.socket drop-in), then 'systemctl restart docker.socket'")
    ss = ctx.runner.run(["ss", "-ltnpH"], timeout=10).stdout
    listeners = sorted({line.split()[3] for line in ss.splitlines() if '"dockerd"' in line and len(line.split()) > 3})
    endpoint = f"{inp.endpoint_host}:{inp.endpoint_port}"
    metrics = f"{inp.endpoint_host}:{ctx.contract['DOCKERD_METRICS_PORT']}"
    if listeners != sorted([endpoint, metrics]):
        raise rec.fail(name, desc, f"dockerd's TCP listeners to be {endpoint} (mutual TLS) and {metrics} (its metrics, "
                       "behind the host filter) only", f"listeners: {' '.join(listeners) or 'none'}",
                       "remove other -H/hosts entries from dockerd's unit or daemon.json")
    rec.passed(name, desc, f"live-restore on, json-file logs, socket 600 root:root, TCP only on {endpoint} and "
               f"its metrics on {metrics}")


def check_policy_plugin(ctx: Context, _rt: str, rec: Recorder) -> None:
    name, desc = "endpoint-policy", "dockerd asks the endpoint policy plugin before every request"
    plugin = ctx.contract["AUTHZ_PLUGIN_NAME"]
    out = _docker_info(ctx, rec, name, desc, "authz").strip()
    if plugin not in out.split():
        raise rec.fail(name, desc, f"authorization plugin {plugin} in dockerd's running configuration",
                       f"authorization plugins: '{out}'", "re-run the configure step (daemon.json authorization-plugins)")
    rec.passed(name, desc, f"authorization plugins: {out}")


# dockerd's own connections: a pull names the registry, and dockerd dials it
# as root in the host's namespace, where only the output chain judges it.
# The host filter rejects a refused dial at once (admin-prohibited).
PULL_PROBE_IMAGE = "functions-runtime-egress-probe:none"
PULL_REFUSED = "connect: no route to host"


def pull_result(out: Result) -> str:
    """"refused" (the host filter), "connected" (dockerd reached the address:
    whatever it said next, the dial succeeded), or the failure's own words."""
    text = one_line(out.output).strip()
    if PULL_REFUSED in text:
        return "refused"
    if out.ok or ("Error response from daemon" in text and "dial tcp" not in text):
        return "connected"
    return text or f"docker pull exited {out.code} without a word"


def check_dockerd_egress(ctx: Context, _rt: str, rec: Recorder) -> None:
    name = "dockerd-egress"
    desc = "dockerd's own connections (pulls) reach the internet and no private, local or metadata address"
    inp, table, members = ctx.inputs, ctx.contract["HOST_FILTER_TABLE"], ctx.contract["DOCKERD_CGROUP_SET"]
    todo = (f"re-run the firewall and configure steps; 'nft list set inet {table} {members}' must list "
            f"{ctx.contract['DOCKERD_CGROUP']} (docker.service's drop-in has NFTSet=)")

    def pull(address: str, port: int) -> str:
        host = f"[{address}]" if ":" in address else address
        return pull_result(ctx.docker.local("pull", "-q", f"{host}:{port}/{PULL_PROBE_IMAGE}", timeout=120))

    if inp.outside:
        found = pull(*inp.outside)
        if found != "connected":
            raise rec.fail(name, desc, f"dockerd to reach {inp.outside[0]}:{inp.outside[1]} (verify.outsideProbe, "
                           "a positive control)", found, todo)
    own = pull(inp.private_address, inp.endpoint_port)
    if own != "refused":
        raise rec.fail(name, desc, f"dockerd's dial of {inp.private_address}:{inp.endpoint_port} (this host's "
                       f"private address) refused by the host filter ('{PULL_REFUSED}')",
                       "it connected" if own == "connected" else own, todo)
    control = (f"reached {inp.outside[0]}:{inp.outside[1]}" if inp.outside
               else "no positive control: verify.outsideProbe is none")
    rec.passed(name, desc, f"{control}; refused {inp.private_address}:{inp.endpoint_port}")


# ---------------------------------------------------------------- the verify image


def busybox_tar(busybox: bytes) -> bytes:
    """A rootfs of busybox-static and its applets, as a deterministic tar."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for path, kind in (("bin", "dir"), ("bin/busybox", "file"), *((f"bin/{a}", "link") for a in sorted(BUSYBOX_APPLETS))):
            info = tarfile.TarInfo(path)
            info.uid = info.gid = 0
            info.mtime = 0
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "link":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, "busybox", 0o777
                tar.addfile(info)
            else:
                info.size, info.mode = len(busybox), 0o755
                tar.addfile(info, io.BytesIO(busybox))
    return raw.getvalue()


def image_is_immutable(ref: str) -> bool:
    """An image ID or a digest-pinned reference names exactly one image."""
    return ref.startswith("sha256:") or "@sha256:" in ref


def check_verify_image(ctx: Context, _rt: str, rec: Recorder) -> None:
    inp, docker = ctx.inputs, ctx.docker
    name, desc = "verify-image", f"verify image {inp.image} present"
    busybox_image, busybox = ctx.contract["BUSYBOX_VERIFY_IMAGE"], ctx.paths.busybox

    def present() -> bool:
        return docker.endpoint("image", "inspect", inp.image, timeout=60).ok

    archive = inp.image_archive
    if archive and image_is_immutable(inp.image) and present():
        rec.passed(name, desc, "already present (the archive was loaded before)")
        return
    if archive:
        if not os.access(archive, os.R_OK):
            raise rec.fail(name, desc, f"the image archive {archive}", "no readable file",
                           "upload it or leave VERIFY_IMAGE_ARCHIVE empty")
        out = docker.local("load", "-i", archive)
        if not out.ok:
            raise rec.fail(name, desc, f"docker load of {archive}", out.output, "check the archive is a docker save output")
    if present():
        how = "already present"
    elif inp.image == busybox_image:
        if not os.access(busybox, os.X_OK):
            raise rec.fail(name, desc, f"Debian's static busybox at {busybox}", "none",
                           "install busybox-static (base/packages.txt)")
        out = docker.local("import", "--change", 'CMD ["/bin/sh"]', "-", busybox_image,
                           stdin=busybox_tar(busybox.read_bytes()))
        if not out.ok:
            raise rec.fail(name, desc, "docker import of a busybox rootfs", out.output, "check dockerd (journalctl -u docker)")
        how = f"built from {busybox}"
    elif "@sha256:" not in inp.image:
        raise rec.fail(name, desc, "VERIFY_IMAGE pinned by digest (name@sha256:...)", f"'{inp.image}'",
                       f"pin the verify image by digest or use {busybox_image}")
    else:
        out = docker.endpoint("pull", inp.image)
        if not out.ok:
            raise rec.fail(name, desc, f"docker pull {inp.image}", tail(out.output),
                           "check the host's registry access or use VERIFY_IMAGE_ARCHIVE")
        how = "pulled"
    rec.passed(name, desc, how)


def check_nerdctl_image(ctx: Context, _rt: str, rec: Recorder) -> None:
    if not ctx.inputs.nerdctl:
        rec.skipped("runtime-nerdctl", "nerdctl runs each runtime",
                    "verify.nerdctl is false: nerdctl's containers are not verified on this stack")
        return
    ns, image = ctx.contract["CONTAINERD_VERIFY_NAMESPACE"], ctx.inputs.image
    name, desc = "nerdctl-image", f"verify image {image} in containerd namespace {ns}"
    archive = ctx.work / "nerdctl-image.tar"
    saved = ctx.docker.local("save", "-o", str(archive), image)
    out = ctx.nerdctl.cmd("load", "-i", str(archive)) if saved.ok else saved
    if not out.ok:
        raise rec.fail(name, desc, "docker save | nerdctl load to succeed", tail(out.output, 2),
                       f"run 'nerdctl --namespace {ns} images' on the host; check {ctx.paths.bin_dir}/nerdctl")
    rec.passed(name, desc, "loaded from Docker")


# ---------------------------------------------------------------- endpoint policy


# What the policy must refuse, one check each: (case, what, docker options);
# a create that was allowed fails the check (and is removed as root).
POLICY_CASES = (
    ("privileged-runc", "--runtime runc with --privileged", ("--runtime", "runc", "--privileged")),
    ("host-network", "--network host", ("--network", "host")),
    ("host-mount", "a bind mount of the host's /", ("-v", "/:/host")),
    ("no-limits", "a container without limits", ()),
)


def _create(ctx: Context, opts: Sequence[str]) -> tuple[bool, str]:
    """`docker create` through the endpoint: (allowed, error); an allowed
    container is removed as root."""
    out = ctx.docker.endpoint("create", *ctx.docker.owner_opts, *opts, ctx.inputs.image, "true", timeout=60)
    if out.ok:
        ctx.docker.remove_container(out.stdout.strip())
        return True, ""
    return False, out.stderr.strip() or out.stdout.strip()


def check_policy_refusals(ctx: Context, _rt: str, rec: Recorder) -> None:
    prefix, unit, config = ctx.contract["AUTHZ_REFUSAL_PREFIX"], ctx.contract["AUTHZ_UNIT"], ctx.contract["AUTHZ_CONFIG"]
    for case, what, opts in POLICY_CASES:
        name, desc = f"policy-refuses-{case}", f"the endpoint refuses {what}"
        limits = () if case == "no-limits" else ctx.docker.limit_opts
        allowed, err = _create(ctx, [*limits, *opts])
        if allowed:
            raise rec.fail(name, desc, f"a create with {what} refused by the endpoint policy",
                           "it was allowed (container removed)", f"check {unit} (journalctl -u {unit}) and {config}")
        if prefix not in err:
            raise rec.fail(name, desc, f"a refusal from the endpoint policy ('{prefix} ...')", tail(err),
                           f"check {unit} (journalctl -u {unit})")
        rec.passed(name, desc, f"refused: {err.split(prefix, 1)[1].strip()}")


def read_policy_limits(path: Path) -> PolicyLimits:
    data = json.loads(path.read_text())
    return PolicyLimits.from_json(data["limits"])


def _cpus(millicpus: int) -> str:
    return f"{millicpus // 1000}.{millicpus % 1000:03d}"


def check_policy_limits(ctx: Context, _rt: str, rec: Recorder) -> None:
    """The maxima the policy enforces: its configuration names them, a create
    at every maximum is allowed by the policy and one just above each is
    refused by it. What passes is reported as the host's `limits`."""
    c = ctx.contract
    name, desc = "policy-limits", "the endpoint policy enforces its configured maxima"
    prefix, config = c["AUTHZ_REFUSAL_PREFIX"], Path(c["AUTHZ_CONFIG"])
    try:
        lim = read_policy_limits(config)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise rec.fail(name, desc, f"the policy's limits in {config}", f"{type(err).__name__}: {err}",
                       "re-run the configure step (it writes the policy configuration)") from None
    if lim.max_millicpus != ctx.inputs.max_millicpus:
        raise rec.fail(name, desc, f"the policy's CPU maximum to be the stack's ({ctx.inputs.max_millicpus} millicpus)",
                       f"{lim.max_millicpus} in {config}", "re-run the configure step")
    at_max = {"--memory": f"{lim.max_memory_mib}m", "--pids-limit": str(lim.max_pids), "--cpus": _cpus(lim.max_millicpus)}
    above = {"--memory": f"{lim.max_memory_mib + 1}m", "--pids-limit": str(lim.max_pids + 1),
             "--cpus": _cpus(lim.max_millicpus + 1)}

    def opts(values: Mapping[str, str]) -> list[str]:
        return [word for flag, value in values.items() for word in (flag, value)]

    allowed, err = _create(ctx, opts(at_max))
    if not allowed and prefix in err:
        raise rec.fail(name, desc, f"a create at every maximum ({' '.join(opts(at_max))}) allowed by the policy",
                       tail(err), f"check {config} and {c['AUTHZ_UNIT']}")
    # Allowed by the policy; dockerd may still refuse it for its own reasons (--cpus above the host's CPUs).
    at_max_note = "created" if allowed else f"passed by the policy, refused by dockerd: {tail(err)}"
    for flag in above:
        allowed, err = _create(ctx, opts({**at_max, flag: above[flag]}))
        if allowed or prefix not in err or flag not in err:
            found = "it was allowed (container removed)" if allowed else tail(err)
            raise rec.fail(name, desc, f"{flag} {above[flag]} (just above the maximum) refused by the policy", found,
                           f"check {config} and {c['AUTHZ_UNIT']} (journalctl -u {c['AUTHZ_UNIT']})")
    ctx.facts.set("limits", lim)
    rec.passed(name, desc, f"at most {lim.max_memory_mib} MiB, {lim.max_pids} PIDs, {_cpus(lim.max_millicpus)} CPUs: "
               f"a create at the maxima {at_max_note}; one just above each refused")


# ---------------------------------------------------------------- Docker, per runtime


@dataclass(frozen=True)
class Target:
    name: str
    address: str
    port: int
    host_reaches: bool


def plan_targets(ctx: Context) -> tuple[Target, ...]:
    """The blocked targets, and whether the host itself reaches each (a
    target it cannot reach proves nothing and is skipped)."""
    inp = ctx.inputs
    specs = (("metadata", ctx.contract["METADATA_ADDRESS"], 80), ("host-endpoint", inp.private_address, inp.endpoint_port),
             ("host-ssh", inp.private_address, inp.ssh_port))
    return tuple(Target(n, a, p, ctx.runner.reaches(a, p, PROBE_TIMEOUT)) for n, a, p in specs)


def _judge_reachable(rec: Recorder, label: str, target: str, address: str, port: int, out: str, hint: str) -> None:
    name, desc = f"reach-{label}-{target}", f"a {label} container reaches {address}:{port} ({target})"
    result = probe_result(out, address, port)
    if result == "reachable":
        rec.passed(name, desc, "reachable: the sandbox's network works, so its isolation results count")
    elif result == "unreachable":
        raise rec.fail(name, desc, f"{address}:{port} reachable from a {label} container (a positive control)",
                       "it is not: the sandbox has no working network, and 'unreachable' below would prove nothing",
                       "check the runtime's networking (a Kata guest without eth0, runsc's network mode) and "
                       "'nft list ruleset'", "isolation")
    else:
        raise rec.fail(name, desc, "the probe container to run", result, hint, "isolation")


def _judge_blocked(rec: Recorder, label: str, targets: Sequence[Target], out: str, hint: str) -> None:
    for t in targets:
        name, desc = f"isolation-{label}-{t.name}", f"{t.address}:{t.port} ({t.name}) is unreachable from a {label} container"
        if not t.host_reaches:
            rec.skipped(name, desc, f"the host itself cannot reach {t.address}:{t.port}, so the probe would prove nothing")
            continue
        result = probe_result(out, t.address, t.port)
        if result == "unreachable":
            rec.passed(name, desc, "host reaches it, the container does not")
        elif result == "reachable":
            raise rec.fail(name, desc, f"{t.address}:{t.port} unreachable from inside a {label} container",
                           "it is reachable", "re-run the firewall step and check 'nft list table inet functions_runtime'",
                           "isolation")
        else:
            raise rec.fail(name, desc, "the probe container to run", result, hint, "isolation")


def probe_isolation(ctx: Context, client: ContainerClient, rt: str, rec: Recorder) -> str:
    """The positive controls, then the blocked targets, from ONE probe
    container on the runtime's own network with its own peer; returns the
    probe's output."""
    label, inp = client.label(rt), ctx.inputs
    targets = plan_targets(ctx)
    try:
        peer = client.start_peer(rt)
    except PeerFailed as err:
        if err.runtime_failed:
            raise rec.fail(f"runtime-{label}-kernel", f"{rt} runs the verify image with its own kernel", err.expected,
                           err.found, err.todo, "kernel") from None
        raise rec.fail(f"reach-{label}-peer", f"a {label} container reaches a peer on its network",
                       err.expected, err.found, err.todo) from None
    try:
        wanted = [f"{peer.address} {PEER_PORT}"]
        if client.name == "docker":
            wanted.append(f"{peer.name} {PEER_PORT}")  # Docker's embedded DNS, measured
        if inp.outside:
            wanted.append(f"{inp.outside[0]} {inp.outside[1]}")
        wanted += [f"{t.address} {t.port}" for t in targets if t.host_reaches]
        out = client.probe(rt, peer, wanted).output
    finally:
        client.stop_peer(peer)
    hint = client.rerun_hint(rt)
    if client.name == "docker":
        _docker_kernel(ctx, rt, rec, out)
    else:
        _containerd_kernel(ctx, client, rt, rec, out)
    _judge_reachable(rec, label, "peer", peer.address, PEER_PORT, out, hint)
    if inp.outside:
        _judge_reachable(rec, label, "outside", inp.outside[0], inp.outside[1], out, hint)
    else:
        rec.skipped(f"reach-{label}-outside", f"a {label} container reaches an internet address",
                    "verify.outsideProbe is none: egress to the internet is not checked on this stack")
    if client.name == "docker":
        dns = probe_result(out, peer.name, PEER_PORT) == "reachable"
        ctx.facts.set("dns", dns, rt)
        if not dns:
            rec.log(f"WARNING: a {rt} container could not reach its peer by name on a user network (Docker's embedded "
                    "DNS at 127.0.0.11 is not reachable from this sandbox's network stack); reported as "
                    "userNetworkDns: false")
    _judge_blocked(rec, label, targets, out, hint)
    return out


SIDECAR_HOLD = ["sleep", "120"]


def sentry_processes(ctx: Context) -> list[str]:
    """The processes whose image is a gVisor sentry sidecar. Matched by the
    name's end: seen from the host, a sandbox's image path may be rendered
    from its own mount namespace."""
    sentry = f"*/{ctx.contract['GVISOR_SIDECAR_DIR']}/gvisor_sentry"
    out = ctx.runner.run(["find", "/proc", "-mindepth", "2", "-maxdepth", "2", "-name", "exe", "-lname", sentry],
                         timeout=60)
    return out.stdout.split()


def check_runsc_sidecars(ctx: Context, _rt: str, rec: Recorder) -> None:
    """From release 20260831 on, runsc runs its sandbox from the sentry
    sidecar; without it, from itself (slow, deprecated). Starting a gVisor
    container must add a process whose image is a sentry."""
    name, desc = "runtime-runsc-sidecars", "gVisor runs its sandbox from the release's sentry sidecar"
    since, version = ctx.contract["GVISOR_SIDECARS_SINCE"], ctx.facts.get("runsc_version", default="")
    released = runsc_release_date(version)
    if ctx.inputs.gvisor_runsc == "debian":
        rec.skipped(name, desc, "Debian's runsc package (gvisor.runsc: debian) is a build without sidecars")
        return
    if released is None or released < since:
        rec.skipped(name, desc, f"{ctx.runsc} says '{version}': releases before {since} run their sandbox "
                    "themselves, with no sidecar to look for")
        return
    before = len(sentry_processes(ctx))
    started = ctx.docker.endpoint("run", "-d", "--runtime", "runsc", *ctx.docker.owner_opts, *ctx.docker.limit_opts,
                                  "--network", "none", ctx.docker.image, *SIDECAR_HOLD)
    container = started.stdout.strip()
    try:
        if not started.ok or not container:
            raise rec.fail(name, desc, "a gVisor container to start through the endpoint", tail(started.output, 2),
                           "check dockerd and runsc (journalctl -u docker)")
        during = len(sentry_processes(ctx))
    finally:
        if container:
            ctx.docker.local("rm", "-f", container, timeout=120)
    sentry = sidecar_dir(ctx) / "gvisor_sentry"
    if during <= before:
        raise rec.fail(name, desc, f"one more process whose image is a sentry ({sentry}) while a gVisor "
                       "container runs", f"{before} before it started, {during} while it ran: runsc runs its "
                       "sandbox without the sidecar (its slow, deprecated fallback)",
                       "re-run the install step, and check that Docker's runsc entry is the release's "
                       f"versioned path ({ctx.runsc})")
    rec.passed(name, desc, f"sentry processes: {before} before a gVisor container started, {during} while it ran")


def check_isolation(ctx: Context, rt: str, rec: Recorder) -> None:
    probe_isolation(ctx, ctx.docker, rt, rec)


def check_pid_limit(ctx: Context, rt: str, rec: Recorder) -> None:
    name, desc = f"limits-{rt}-pids", f"a fork bomb in a {rt} container stops at the PID limit"
    pids = ctx.contract.number("VERIFY_PIDS")
    target = pids * BOMB_FACTOR
    out = ctx.docker.run(rt, ["sh", "-c", FORK_BOMB, str(target)], ["--network", "none"]).output
    started = last_count(out, "started")
    if "started all" in out.splitlines() or started >= pids:
        raise rec.fail(name, desc, f"at most {pids} processes in a container with --pids-limit {pids}",
                       f"{started} of {target} started", f"check the {rt} runtime applies the pids cgroup (journalctl -u docker)")
    if started <= 0:
        raise rec.fail(name, desc, "the bomb container to run", tail(out, 2),
                       f"run 'docker run --rm --runtime {rt} --pids-limit {pids} {ctx.inputs.image} sh' on the host")
    _host_answers(ctx, rec, name, desc, "bomb")
    rec.passed(name, desc, f"{started} of {target} sleepers started under --pids-limit {pids}, then fork failed; "
               "the host answers")


# The name lookup inside a container: its first nameserver, then busybox's
# nslookup for A records ($0 is the name), then its exit status.
NAME_LOOKUP = (
    'while read -r k v _; do if [ "$k" = nameserver ]; then echo "nameserver $v"; break; fi; done < /etc/resolv.conf; '
    'if command -v nslookup >/dev/null 2>&1; then nslookup -type=a "$0" 2>&1; else busybox nslookup -type=a "$0" 2>&1; fi; '
    'echo "exit $?"'
)
_ADDRESS_LINE = re.compile(r"^Address(?:\s+\d+)?:\s*([0-9]{1,3}(?:\.[0-9]{1,3}){3})\s*$")


def lookup_result(out: str) -> tuple[str | None, list[str]]:
    """(the container's first nameserver, the addresses its lookup printed after "Name:")."""
    server, found, named = None, [], False
    for line in out.splitlines():
        if line.startswith("nameserver ") and server is None:
            server = line.split(" ", 1)[1].strip()
        elif line.startswith("Name:"):
            named = True
        elif named and (m := _ADDRESS_LINE.match(line.strip())):
            found.append(m.group(1))
    return server, found


def check_name_lookup(ctx: Context, rt: str, rec: Recorder) -> None:
    """A container on the default bridge (a function started with no network,
    as the consumer side starts it) resolves verify.nameProbe through its own
    nameserver. The positive control: the host asks that nameserver the same
    question and gets an answer, so a failure is the sandbox's network."""
    name_probe = ctx.inputs.name_probe
    name = f"dns-{rt}"
    desc = f"a {rt} container on the default bridge resolves {name_probe or 'a name'}"
    if name_probe is None:
        rec.skipped(name, desc, "verify.nameProbe is none: name lookups are not checked on this stack")
        return
    out = ctx.docker.run(rt, ["sh", "-c", NAME_LOOKUP, name_probe]).output
    server, found = lookup_result(out)
    if server is None:
        raise rec.fail(name, desc, "the container to have a nameserver in /etc/resolv.conf", tail(out, 2),
                       "check dockerd's dns settings and the host's /etc/resolv.conf", "isolation")
    control = ctx.runner.resolve(server, name_probe)
    if not control:
        rec.skipped(name, desc, f"the container's nameserver {server} gives the host no address for {name_probe} "
                    "either, so the lookup proves nothing; check verify.nameProbe and the host's resolvers")
        return
    if not found:
        private = not _is_internet(server)
        raise rec.fail(
            name, desc,
            f"a {rt} container to resolve {name_probe} through its nameserver {server} (the host gets "
            f"{', '.join(control)} from it)", tail(out, 2),
            f"{server} is not an internet address and containers never reach private or link-local ones: point the "
            "host's /etc/resolv.conf at resolvers on the internet" if private else
            f"run 'docker run --rm --runtime {rt} {ctx.inputs.image} nslookup {name_probe}' on the host",
            "isolation",
        )
    rec.passed(name, desc, f"{name_probe} is {', '.join(found)} through {server}, as the host is told")


# The program's rule (is_internet_address in components/settings/addresses.py),
# carried here because the host side is the standard library alone; a unit
# test holds the two to one answer. The documentation ranges count (the lab
# serves its internet on one); IPv6 is its global unicast 2000::/3 only.
_DOCUMENTATION_NETS = tuple(
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)
_IPV6_UNICAST = ipaddress.ip_network("2000::/3")


def _is_internet(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if any(ip in n for n in _DOCUMENTATION_NETS if n.version == ip.version):
        return True
    if ip.version == 6 and ip not in _IPV6_UNICAST:
        return False
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


def _host_answers(ctx: Context, rec: Recorder, name: str, desc: str, what: str) -> None:
    out = ctx.docker.api("GET", "/_ping")
    if out.code != 200:
        raise rec.fail(name, desc, f"the host's dockerd to answer after the {what}", "no answer", "read journalctl -u docker")


def mem_available_mib(paths: Paths) -> int:
    try:
        for line in paths.meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def check_memory_limit(ctx: Context, rt: str, rec: Recorder) -> None:
    name, desc = f"limits-{rt}-memory", f"a memory hog in a {rt} container stays within its limit"
    mib = ctx.contract.number("VERIFY_MEMORY_MIB")
    limit = mib * 1024 * 1024
    target = limit * HOG_FACTOR
    before = mem_available_mib(ctx.paths)
    out = ctx.docker.run(rt, ["awk", "-v", f"target={target}", MEMORY_HOG], ["--network", "none"]).output
    after = mem_available_mib(ctx.paths)
    held = last_count(out, "held")
    if "held all" in out.splitlines() or held > limit:
        raise rec.fail(name, desc, f"at most {mib} MiB held in a container with --memory {mib}m",
                       f"{held // 1048576} MiB held of {target // 1048576} MiB",
                       f"check the {rt} runtime applies the memory cgroup")
    if held <= 0:
        raise rec.fail(name, desc, "the hog container to run", tail(out, 2),
                       f"run 'docker run --rm --runtime {rt} --memory {mib}m {ctx.inputs.image} awk' on the host")
    _host_answers(ctx, rec, name, desc, "hog")
    rec.passed(name, desc, f"held at most {held // 1048576} MiB of {target // 1048576} MiB under --memory {mib}m, then "
               f"stopped; host MemAvailable {before} MiB before, {after} MiB after; the host answers")


def check_cold_start(ctx: Context, rt: str, rec: Recorder) -> None:
    runs = ctx.inputs.cold_start_runs
    name, desc = f"cold-start-{rt}", f"cold start of {rt} (median of {runs} runs)"
    times = []
    for _ in range(runs):
        start = ctx.runner.now_ms()
        out = ctx.docker.run(rt, ["true"])
        if not out.ok:
            raise rec.fail(name, desc, f"docker run --runtime {rt} true to succeed", tail(out.output),
                           "read journalctl -u docker on the host")
        times.append(ctx.runner.now_ms() - start)
    ctx.facts.set("cold_start", ColdStart(median(times), runs), rt)
    rec.passed(name, desc, f"median {median(times)} ms (runs: {' '.join(map(str, times))} ms)")


def _docker_kernel(ctx: Context, rt: str, rec: Recorder, out: str) -> None:
    """The probe container's first line: its kernel, which must not be the host's."""
    name, desc = f"runtime-{rt}-kernel", f"{rt} runs the verify image with its own kernel"
    kernels = [line[len("kernel "):].strip() for line in out.splitlines() if line.startswith("kernel ")]
    if not kernels:
        raise rec.fail(name, desc, f"docker run --runtime {rt} to succeed", tail(out, 2),
                       f"run 'docker run --rm --runtime {rt} {ctx.inputs.image} uname -r' on the host and read "
                       "journalctl -u docker", "kernel")
    kernel = kernels[0]
    if not kernel or kernel == ctx.host_kernel:
        raise rec.fail(name, desc, f"a guest kernel different from the host's ({ctx.host_kernel})", f"'{kernel}'",
                       "the container is not sandboxed: check /etc/docker/daemon.json runtimes", "kernel")
    ctx.facts.set("guest_kernel", kernel, rt)
    rec.passed(name, desc, f"guest kernel {kernel}, host kernel {ctx.host_kernel}")


# ---------------------------------------------------------------- containerd directly


def _containerd_kernel(ctx: Context, client: ContainerClient, rt: str, rec: Recorder, out: str) -> None:
    label = client.label(rt)
    name = f"runtime-{label}-kernel"
    kernels = [line[len("kernel "):] for line in out.splitlines() if line.startswith("kernel ")]
    kernel = kernels[0].strip() if kernels else ""
    if not kernel:
        raise rec.fail(name, f"{client.name} runs a {rt} container", f"{client.name} run --runtime {rt} to succeed",
                       tail(out, 2), "run the container by hand on the host and read journalctl -u containerd")
    if rt == "runc":
        rec.passed(name, f"{client.name} runs a runc container (the host filter's baseline, no sandbox)", f"kernel {kernel}")
    elif kernel == ctx.host_kernel:
        raise rec.fail(name, f"{client.name} runs {rt} with its own kernel",
                       f"a guest kernel different from the host's ({ctx.host_kernel})", f"'{kernel}'",
                       f"check {client.name}'s --runtime for {rt}")
    else:
        rec.passed(name, f"{client.name} runs {rt} with its own kernel",
                   f"guest kernel {kernel}, host kernel {ctx.host_kernel}")


def containerd_runtimes(ctx: Context) -> tuple[str, ...]:
    """runc (is every containerd container filtered?) and each sandbox runtime,
    except a runsc on the host's network stack (ctr's runc shim cannot pass
    runsc --network=host: it would fail for the setting's sake)."""
    host = ctx.contract["NETWORK_HOST"]
    return ("runc", *(rt for rt in ctx.wanted if not (rt == "runsc" and ctx.facts.get("network", "runsc") == host)))


def check_containerd_skips(ctx: Context, _rt: str, rec: Recorder) -> None:
    if "runsc" in ctx.wanted and "runsc" not in containerd_runtimes(ctx):
        rec.skipped("runtime-containerd-runsc", "containerd runs runsc directly",
                    "runsc runs with --network=host here (gvisor.allowHostNetworkStack), which containerd's clients "
                    "cannot pass")


def check_ctr(ctx: Context, rt: str, rec: Recorder) -> None:
    probe_isolation(ctx, ctx.ctr, rt, rec)


def check_nerdctl(ctx: Context, rt: str, rec: Recorder) -> None:
    probe_isolation(ctx, ctx.nerdctl, rt, rec)


# ---------------------------------------------------------------- the table


def _none(_ctx: Context) -> tuple[str, ...]:
    return ("",)


def _wanted(ctx: Context) -> tuple[str, ...]:
    return ctx.wanted


def _if_runsc(ctx: Context) -> tuple[str, ...]:
    return ("",) if "runsc" in ctx.wanted else ()


def _nerdctl_runtimes(ctx: Context) -> tuple[str, ...]:
    return containerd_runtimes(ctx) if ctx.inputs.nerdctl else ()


@dataclass(frozen=True)
class Check:
    """One row of the table.

    `runtimes`: the runtimes it runs for, decided when its stage starts (""
    for a check of the host). `stage`: 0 = the host and the daemon (reads,
    and the image); 1 = containers; 2 = measurements, alone. In a stage, a
    `lane` runs its checks in table order and lanes run side by side: lanes
    never share a name, network or peer (client and runtime are in the
    lane's name). `needs`: checks whose facts or effects it uses, in an
    earlier stage or earlier in the same lane.
    """

    name: str
    family: str
    client: str
    run: Callable[[Context, str, Recorder], None]
    runtimes: Callable[[Context], tuple[str, ...]] = _none
    needs: tuple[str, ...] = ()
    stage: int = 0
    lane: str = "host"

    def lane_of(self, runtime: str) -> str:
        return self.lane.format(runtime=runtime)


CHECKS: tuple[Check, ...] = (
    Check("preflight-kata", "preflight", "host", check_preflight_kata, lane="preflight"),
    Check("preflight-runsc", "preflight", "host", check_preflight_runsc, _if_runsc, lane="preflight"),
    Check("endpoint-accepts-client-cert", "endpoint", "curl", check_endpoint_accepts, lane="endpoint"),
    # A refusal counts only where the same endpoint answers the verify certificate.
    Check("endpoint-refuses-no-cert", "endpoint", "curl", check_endpoint_refuses, needs=("endpoint-accepts-client-cert",),
          lane="endpoint"),
    Check("default-runtime", "runtimes", "docker", check_registered_runtimes, lane="daemon"),
    Check("runtime-runsc-network", "runtimes", "docker", check_runsc_network, _if_runsc, lane="daemon"),
    Check("daemon-hardening", "runtimes", "docker", check_daemon_hardening, lane="daemon"),
    Check("endpoint-policy", "policy", "docker", check_policy_plugin, lane="daemon"),
    Check("dockerd-egress", "isolation", "docker", check_dockerd_egress, lane="dockerd-egress"),
    Check("verify-image", "image", "docker", check_verify_image, lane="image"),
    Check("nerdctl-image", "containerd", "nerdctl", check_nerdctl_image, needs=("verify-image",), lane="image"),
    Check("policy-refuses", "policy", "docker", check_policy_refusals, needs=("verify-image",), stage=1, lane="policy"),
    Check("policy-limits", "policy", "docker", check_policy_limits, needs=("verify-image",), stage=1, lane="policy"),
    # The kernel check and the isolation probes share one container (runtime-<rt>-kernel, reach-*, isolation-*).
    Check("isolation", "isolation", "docker", check_isolation, _wanted, ("verify-image",), 1, "docker-{runtime}"),
    Check("runtime-runsc-sidecars", "runtimes", "docker", check_runsc_sidecars, _if_runsc,
          ("verify-image", "preflight-runsc"), 1, "docker-runsc-sidecars"),
    Check("limits-pids", "limits", "docker", check_pid_limit, _wanted, ("verify-image",), 1, "docker-{runtime}-pids"),
    Check("name-lookup", "isolation", "docker", check_name_lookup, _wanted, ("verify-image",), 1,
          "docker-{runtime}-dns"),
    Check("limits-memory", "limits", "docker", check_memory_limit, _wanted, ("verify-image",), 1,
          "docker-{runtime}-memory"),
    Check("containerd-skips", "containerd", "host", check_containerd_skips, _if_runsc, ("runtime-runsc-network",), 1,
          "policy"),
    Check("ctr", "containerd", "ctr", check_ctr, containerd_runtimes, ("runtime-runsc-network",), 1, "ctr-{runtime}"),
    Check("nerdctl", "containerd", "nerdctl", check_nerdctl, _nerdctl_runtimes, ("runtime-runsc-network", "nerdctl-image"),
          1, "nerdctl-{runtime}"),
    # Measured alone, so nothing else's load is in the figure.
    Check("cold-start", "cold-start", "docker", check_cold_start, _wanted, ("verify-image",), 2, "cold-start"),
)

# Named subsets of the table (with what they need, engine.select). The canary
# re-proves on a timer what a running host can lose: the mTLS endpoint
# answering through the endpoint policy, a sandboxed run per runtime on its
# own kernel with the isolation probes and their positive controls, and the
# name lookup. Cold starts, limits and refusals stay verify's: they cost more
# and change only when the stack does.
PROFILES: Mapping[str, tuple[str, ...]] = {
    "canary": ("endpoint-accepts-client-cert", "endpoint-refuses-no-cert", "endpoint-policy", "isolation",
               "name-lookup"),
}
