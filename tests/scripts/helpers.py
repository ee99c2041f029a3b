"""Helpers for the host-script tests: run functions of scripts/*.sh in bash
with every path pointed into a temporary directory (no root-level side
effects), and a throwaway HTTP server on 127.0.0.1 standing in for GitHub or
an artifact mirror. The fixtures are re-exported by conftest.py."""

from __future__ import annotations

import hashlib
import io
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.contract import CONTRACT_ENV, GVISOR_SIDECAR_DIR, GVISOR_SIDECARS, render_contract_env

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str


def _run(argv: list[str], env: dict[str, str], stdin: str, timeout: int) -> Result:
    """Run `argv` with only PATH, HOME (/nonexistent unless `env` sets it), LANG and `env`."""
    full_env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent", "LANG": "C.UTF-8", **env}
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=full_env, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def run_bash(snippet: str, env: dict[str, str], stdin: str = "", script: str = "lib.sh") -> Result:
    """Source scripts/<script> (its main does not run) and run `snippet`."""
    return _run(["bash", "-c", f'source "$1"; {snippet}', "bash", str(SCRIPTS / script)], env, stdin, 120)


def run_script(script: str, env: dict[str, str], stdin: str = "", args: list[str] | None = None) -> Result:
    return _run(["bash", str(SCRIPTS / script), *(args or [])], env, stdin, 180)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha512(data: bytes) -> str:
    return hashlib.sha512(data).hexdigest()


def digest(algorithm: str, data: bytes) -> str:
    """A catalog digest: `<algorithm>:<hex>`."""
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def tar_bytes(members: dict[str, bytes], compress: str) -> bytes:
    """A tar archive of executable files; compress is 'gz', 'bz2' or 'zst'."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    if compress == "gz":
        import gzip

        return gzip.compress(raw.getvalue())
    if compress == "bz2":
        import bz2

        return bz2.compress(raw.getvalue())
    return subprocess.run(["zstd", "-q", "-c"], input=raw.getvalue(), capture_output=True, check=True).stdout


def write_catalog(root: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    """rows: (name, version, digest as <algorithm>:<hex>, url)."""
    path = root / "catalog" / "artifacts.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# test catalog", "name\tversion\tdigest\turl"] + ["\t".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


GVISOR_VERSION = "20260907.0"
KATA_VERSION = "3.32.0"
# The string Debian's 2024-07-29 runsc decides "root network namespace?" by
# (google/gvisor#10704); configure looks for it in the runsc binary.
ROOT_NS_CHECK = "proc/sys/net/core/rmem_default"


def catalog_rows(gvisor_version: str = GVISOR_VERSION) -> list[tuple[str, str, str, str]]:
    """A catalog as the project's, with made-up (well-formed) digests: for
    tests that read versions and paths, never download."""
    return [
        ("kata", KATA_VERSION, "sha256:" + "ab" * 32, "https://github.invalid/kata-static-3.32.0-amd64.tar.zst"),
        ("nerdctl", "2.3.5", "sha256:" + "cd" * 32, "https://github.invalid/nerdctl-2.3.5-linux-amd64.tar.gz"),
        ("gvisor", gvisor_version, "sha256:" + "ef" * 32,
         f"https://github.invalid/gvisor/releases/download/release-{gvisor_version}/gvisor-x86_64.tar.bz2"),
    ]


def write_runsc(path: Path, version: str = f"release-{GVISOR_VERSION}", root_ns_check: bool = False) -> Path:
    """A stand-in runsc: a shell script printing `runsc version <version>`.
    With root_ns_check it also holds the /proc path Debian's 2024 build
    checks, which is all configure reads of the binary. Proves the scripts'
    decisions about a runsc, not gVisor."""
    path.parent.mkdir(parents=True, exist_ok=True)
    comment = f"# {ROOT_NS_CHECK}\n" if root_ns_check else ""
    path.write_text(f"#!/bin/sh\n{comment}echo 'runsc version {version}'\necho 'spec: 1.1.0'\n")
    path.chmod(0o755)
    return path


def write_sidecars(runsc: Path) -> None:
    """Stand-in sidecars beside a stand-in runsc, as the release archive puts them."""
    for name in GVISOR_SIDECARS:
        path = runsc.parent / GVISOR_SIDECAR_DIR / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"#!/bin/sh\necho '{name} (test file, not gVisor)'\n")
        path.chmod(0o755)


def release_runsc_path(env: dict[str, str], version: str = GVISOR_VERSION) -> Path:
    """Where install_runtime.sh puts the release's runsc (FR_GVISOR_DIR/<version>/runsc)."""
    return Path(env["FR_GVISOR_DIR"]) / version / "runsc"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class HttpServer:
    url: str
    directory: Path
    log: Path

    def requests(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if '"GET ' in line]


def wait_for_listener(port: int, proc: subprocess.Popen, log: Path, timeout_s: float = 10) -> None:
    """Until something accepts on 127.0.0.1:`port`; fails with the server's log if it exited."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert proc.poll() is None, log.read_text()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def http_server(tmp_path):
    """python -m http.server on 127.0.0.1, stopped by its PID afterwards."""
    directory = tmp_path / "www"
    directory.mkdir()
    log = tmp_path / "http.log"
    port = free_port()
    with log.open("w") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "http.server",
                str(port),
                "--bind",
                "127.0.0.1",
                "--directory",
                str(directory),
            ],
            stdout=log_file,
            stderr=log_file,
        )
    try:
        wait_for_listener(port, proc, log)
        yield HttpServer(f"http://127.0.0.1:{port}", directory, log)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def write_contract(root: Path) -> Path:
    """The contract env file as the payload step puts it under FR_ROOT."""
    path = root / CONTRACT_ENV
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_contract_env())
    return path


@pytest.fixture
def fr_env(tmp_path):
    """FR_* variables pointing every path the scripts write into tmp_path."""
    root = tmp_path / "fr"
    (root / "state").mkdir(parents=True)
    write_contract(root)
    cpuinfo = tmp_path / "cpuinfo-novmx"
    cpuinfo.write_text("flags\t\t: fpu sse2 hypervisor\n")
    return {
        "FR_ROOT": str(root),
        "FR_HOST": "test-host-1",
        "FR_WORK_BASE": str(tmp_path / "work"),
        "FR_SECRET_BASE": str(tmp_path / "secret"),
        "FR_KATA_DIR": str(tmp_path / "opt-kata"),
        "FR_KATA_CONFIG": str(tmp_path / "etc-kata" / "configuration.toml"),
        "FR_BIN_DIR": str(tmp_path / "bin"),
        "FR_DEV_KVM": str(tmp_path / "no-kvm"),
        "FR_CPUINFO": str(cpuinfo),
        "FR_APT_UPDATE_STAMP": str(tmp_path / "apt-periodic" / "functions-runtime-update-success"),
        "FR_APT_SOURCES": str(tmp_path / "apt-sources"),
        "FR_GVISOR_DIR": str(tmp_path / "opt-gvisor"),
        "FR_DEBIAN_RUNSC": str(tmp_path / "usr-bin-runsc"),
        "FR_CNI_CONFLIST": str(tmp_path / "etc-cni" / "net.d" / "10-functions-runtime.conflist"),
        "ISOLATION": "sandbox",
        "KATA_HYPERVISOR": "qemu",
        "GVISOR_RUNSC": "release",
        "GVISOR_ALLOW_HOST_NETWORK": "false",
    }


def kvm_env(tmp_path, usable: bool) -> dict[str, str]:
    """/dev/null stands in for a usable /dev/kvm (a read-write char device)."""
    cpuinfo = tmp_path / "cpuinfo-vmx"
    cpuinfo.write_text("flags\t\t: fpu vmx sse2\n")
    if usable:
        return {"FR_DEV_KVM": "/dev/null", "FR_CPUINFO": str(cpuinfo)}
    return {}


# The fake kata-runtime: records each call, then answers `check` by the
# configuration named with the global --config flag (Kata's own CLI shape:
# `kata-runtime --config FILE check`). @LOG@: where calls go; @FAILING@: the
# sections whose configuration fails (one a line, such as "[hypervisor.clh]").
FAKE_KATA_RUNTIME = r"""#!/bin/sh
printf '%s\n' "$*" >>@LOG@
config=""
while [ $# -gt 0 ]; do
  case "$1" in
    --config | --kata-config) config=$2; shift 2 ;;
    --config=* | --kata-config=*) config=${1#*=}; shift ;;
    *) break ;;
  esac
done
[ "$1" = check ] || { echo "fake kata-runtime: only 'check' is faked, got '$1'" >&2; exit 2; }
[ -n "$config" ] || { echo "fake kata-runtime: no --config: real Kata would read whichever configuration is in force" >&2; exit 3; }
[ -r "$config" ] || { echo "Cannot find usable config file ($config)" >&2; exit 1; }
while IFS= read -r section; do
  if [ -n "$section" ] && grep -qxF "$section" "$config"; then
    echo "ERROR: kvm is not usable (nested)" >&2; exit 1
  fi
done <@FAILING@
exit 0
"""


@dataclass
class FakeKata:
    """Kata as the install step leaves it, with a kata-runtime test double.

    The double records every command line (`calls`) and answers `check` by
    the configuration file it is given with --config: it fails, with the
    words of Kata's nested-KVM failure, when that file is the configuration
    of a hypervisor in `failing`; it refuses to answer without --config. It
    proves which configuration a script asks Kata about; it does not prove
    what real Kata decides for that configuration (the hostlab's archive and
    a dedicated host do)."""

    root: Path
    log: Path
    shipped: Path

    @property
    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def config(self, hypervisor: str) -> Path:
        return self.shipped / f"configuration-{hypervisor}.toml"


def install_fake_kata(tmp_path: Path, failing: tuple[str, ...] = (), ships: tuple[str, ...] = ("qemu", "clh")) -> FakeKata:
    """The fr_env layout: shim and configurations under opt-kata, kata-runtime
    in bin, the install marker matching the catalog's kata row (written when
    the catalog has none)."""
    kata_dir = tmp_path / "opt-kata"
    shim = kata_dir / "bin" / "containerd-shim-kata-v2"
    shim.parent.mkdir(parents=True, exist_ok=True)
    shim.write_text("#!/bin/sh\n")
    shim.chmod(0o755)
    shipped = kata_dir / "share" / "defaults" / "kata-containers"
    shipped.mkdir(parents=True, exist_ok=True)
    for hypervisor in ships:
        # Each as the release ships it: its own hypervisor section.
        (shipped / f"configuration-{hypervisor}.toml").write_text(f"# test double\n[hypervisor.{hypervisor}]\n")
    runtime = tmp_path / "bin" / "kata-runtime"
    runtime.parent.mkdir(parents=True, exist_ok=True)
    log, failing_file = tmp_path / "kata-runtime.log", tmp_path / "kata-failing"
    failing_file.write_text("".join(f"[hypervisor.{h}]\n" for h in failing))
    runtime.write_text(
        FAKE_KATA_RUNTIME.replace("@LOG@", shlex.quote(str(log))).replace("@FAILING@", shlex.quote(str(failing_file)))
    )
    runtime.chmod(0o755)
    catalog = tmp_path / "fr" / "catalog" / "artifacts.tsv"
    rows = catalog.read_text().splitlines() if catalog.exists() else []
    kata_row = next((r.split("\t") for r in rows if r.startswith("kata\t")), None)
    if kata_row is None:
        kata_row = ["kata", "3.32.0", "sha256:" + "ab" * 32, "http://x/k"]
        catalog.parent.mkdir(parents=True, exist_ok=True)
        catalog.write_text("\n".join(rows or ["name\tversion\tdigest\turl"]) + "\n" + "\t".join(kata_row) + "\n")
    state = tmp_path / "fr" / "state"
    state.mkdir(parents=True, exist_ok=True)
    (state / "kata.version").write_text(f"{kata_row[1]} {kata_row[2]}\n")
    return FakeKata(root=kata_dir, log=log, shipped=shipped)


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


@dataclass
class Pki:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    directory: Path


def make_pki(directory: Path, server_ip: str = "127.0.0.1") -> Pki:
    """A throwaway CA with a server cert (SAN IP) and a client cert (openssl CLI)."""
    d = directory
    d.mkdir(parents=True, exist_ok=True)

    def ossl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    ossl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=test-ca", "-days", "1")
    for name, ext in (
        ("server", f"subjectAltName=IP:{server_ip}\nextendedKeyUsage=serverAuth"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        (d / f"{name}.ext").write_text(ext + "\n")
        ossl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        ossl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "1",
            "-extfile",
            f"{name}.ext",
        )
    read = lambda n: (d / n).read_text()  # noqa: E731
    return Pki(
        read("ca.pem"), read("server.pem"), read("server.key"), read("client.pem"), read("client.key"), d
    )


def paths_left_on_the_host(script: str, env: dict[str, str]) -> list[str]:
    """The host paths `script` names (overridable contract facts, and its own
    `FR_X=${FR_X:-/...}` defaults) that `env` does not point elsewhere: a
    test that runs a script which removes files must leave none, or it would
    remove this machine's own."""
    import re

    from components.contract import shared_facts

    text = (SCRIPTS / script).read_text()
    named = set(re.findall(r"\$\{?(FR_[A-Z0-9_]+)", text))
    overridable = {f.variable for f in shared_facts() if f.overridable}
    own_defaults = set(re.findall(r"^(FR_[A-Z0-9_]+)=\$\{\1:-/", text, re.M))
    return sorted(((named & overridable) | own_defaults) - set(env))
