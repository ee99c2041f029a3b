"""One download per fleet: scripts/lib.sh fetch_artifact asks the fleet's
peers (ARTIFACT_PEERS) first, scripts/install_runtime.sh accounts for every
download and, with ARTIFACT_SHARE, keeps the verified archives and serves
them (a systemd unit running Python's http.server).

Against tiny HTTP servers on 127.0.0.1 (the mirror of test_install.py's
world, and peers started here, each stopped by its PID):

Proves: a peer serving the pinned file is used and accounted as `peer` with
its bytes, the mirror never asked; a peer that is closed, answers 404 or
serves a file with another digest is skipped with a warning naming it and
what was wrong, leaves nothing behind, and the file comes from the mirror as
before (a bad peer never makes a bad install); a run with everything
installed downloads nothing and says `"downloads": []`; ARTIFACT_SHARE keeps
each verified archive in the cache by the file name peers ask for, writes a
hardened unit serving exactly ADDRESS:PORT, starts it once and changes
nothing the second time; an installed archive not cached is fetched once
more for the share; an empty ARTIFACT_SHARE removes unit and cache; a
malformed one is refused before anything is written; and end to end: the
unit's own command over a seed host's cache serves a second host, which
installs everything from it without touching the mirror.
Does not prove: systemd running the unit with its hardening (systemctl is a
recording stand-in here; the hostlab and a dedicated fleet do), the host
filter in front of it (test_firewall*.py), or real Kata/gVisor archives.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from components.contract import ARTIFACT_SHARE_PORT, ARTIFACT_SHARE_UNIT
from tests.scripts.helpers import free_port, run_bash, sha256, wait_for_listener
from tests.scripts.test_install import GVISOR_ARCHIVE_FILE, KATA_FILE, NERDCTL_FILE, world  # noqa: F401

STEPS = "install_kata; install_gvisor; install_nerdctl; configure_artifact_share; print_result"
FILES = {"kata": KATA_FILE, "gvisor": GVISOR_ARCHIVE_FILE, "nerdctl": NERDCTL_FILE}
UNIT = f"{ARTIFACT_SHARE_UNIT}.service"

# systemctl as a recording stand-in that remembers what it enabled and started.
FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >>"$SYSTEMCTL_LOG"
mkdir -p "$SYSTEMCTL_STATE"
verb=$1; shift
[ "$1" = --quiet ] && shift
case "$verb" in
  is-enabled) [ -e "$SYSTEMCTL_STATE/enabled-$1" ] ;;
  is-active) [ -e "$SYSTEMCTL_STATE/active-$1" ] ;;
  enable) touch "$SYSTEMCTL_STATE/enabled-$1" ;;
  start | restart) touch "$SYSTEMCTL_STATE/active-$1" ;;
  disable) [ "$1" = --now ] && shift; rm -f "$SYSTEMCTL_STATE/enabled-$1" "$SYSTEMCTL_STATE/active-$1" ;;
esac
"""


@contextmanager
def serve(directory: Path, argv: list[str] | None = None, port: int | None = None) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 over `directory` (by default Python's
    http.server; `argv` to run another command line), stopped by its PID."""
    port = port or free_port()
    argv = argv or [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(directory),
                    str(port)]
    log = directory.parent / f"serve-{port}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out)
    try:
        wait_for_listener(port, proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def gets(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if '"GET ' in line] if log.exists() else []


def peer_dir(tmp: Path, name: str = "peer") -> Path:
    path = tmp / name / "www"
    path.mkdir(parents=True)
    return path


def copy_archives(server, directory: Path, *names: str) -> None:
    for name in names or FILES:
        shutil.copy(server.directory / FILES[name], directory / FILES[name])


def share_env(env: dict[str, str], tmp: Path, share: str = f"127.0.0.1:{ARTIFACT_SHARE_PORT}") -> dict[str, str]:
    bin_dir = tmp / "fake-bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "systemctl").write_text(FAKE_SYSTEMCTL)
    (bin_dir / "systemctl").chmod(0o755)
    return {
        **env,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SYSTEMCTL_LOG": str(tmp / "systemctl.log"),
        "SYSTEMCTL_STATE": str(tmp / "systemctl-state"),
        "FR_SYSTEMD_DIR": str(tmp / "systemd"),
        "FR_ARTIFACT_CACHE_DIR": str(tmp / "cache" / "artifacts"),
        "FR_PYTHON": sys.executable,
        "ARTIFACT_SHARE": share,
    }


@pytest.fixture
def site(request):
    """(env, mirror, tmp) of test_install.py's world: kata, gVisor's release
    and nerdctl on a mirror on 127.0.0.1, a catalog whose own URLs are
    unreachable, a usable "KVM"."""
    return request.getfixturevalue("world")


def systemctl_log(env: dict[str, str]) -> list[str]:
    path = Path(env["SYSTEMCTL_LOG"])
    return path.read_text().splitlines() if path.exists() else []


def install(env: dict[str, str], steps: str = STEPS) -> dict:
    r = run_bash(steps, env, script="install_runtime.sh")
    assert r.rc == 0, r.stderr
    result = json.loads(r.stdout)
    result["_stderr"] = r.stderr
    return result


def test_a_peer_serving_the_pinned_file_is_used_and_accounted(site, tmp_path):
    env, mirror, tmp = site
    www = peer_dir(tmp)
    copy_archives(mirror, www, "nerdctl")
    size = (www / NERDCTL_FILE).stat().st_size
    with serve(www) as peer:
        result = install({**env, "ARTIFACT_PEERS": f"{peer}/"}, "install_nerdctl; print_result")
    assert result["nerdctl"] == "installed"
    assert result["downloads"] == [
        {"artifact": "nerdctl", "source": "peer", "url": f"{peer}/{NERDCTL_FILE}", "bytes": size}
    ]
    assert result["downloadedBytes"] == {"internet": 0, "mirror": 0, "peer": size}
    assert mirror.requests() == [], "the mirror is not asked when a peer has the file"
    assert len(gets(www.parent / f"serve-{peer.rsplit(':', 1)[1]}.log")) == 1
    assert "WARNING" not in result["_stderr"]


def test_a_closed_or_empty_peer_is_skipped_with_a_warning_naming_it(site, tmp_path):
    env, mirror, tmp = site
    closed = f"http://127.0.0.1:{free_port()}"
    www = peer_dir(tmp)  # serves nothing: 404 for every file
    with serve(www) as empty:
        started = time.monotonic()
        result = install({**env, "ARTIFACT_PEERS": f"{closed} {empty}"}, "install_nerdctl; print_result")
        took = time.monotonic() - started
    warnings = [line for line in result["_stderr"].splitlines() if "WARNING" in line]
    assert len(warnings) == 2, warnings
    assert f"peer {closed} skipped for nerdctl" in warnings[0] and "Failed to connect" in warnings[0]
    assert f"peer {empty} skipped for nerdctl" in warnings[1] and "404" in warnings[1]
    size = (mirror.directory / NERDCTL_FILE).stat().st_size
    assert result["downloads"] == [
        {"artifact": "nerdctl", "source": "mirror", "url": f"{mirror.url}/{NERDCTL_FILE}", "bytes": size}
    ]
    assert result["downloadedBytes"] == {"internet": 0, "mirror": size, "peer": 0}
    assert took < 30, "a dead peer costs seconds, not the run"


def test_a_peer_serving_another_file_is_skipped_and_nothing_of_it_remains(site, tmp_path):
    env, mirror, tmp = site
    www = peer_dir(tmp)
    evil = (mirror.directory / NERDCTL_FILE).read_bytes() + b"evil"
    (www / NERDCTL_FILE).write_bytes(evil)
    with serve(www) as peer:
        env = {**env, "ARTIFACT_PEERS": peer}
        result = install(env, "install_nerdctl; print_result")
        warning = next(line for line in result["_stderr"].splitlines() if "WARNING" in line)
        assert f"peer {peer} skipped for nerdctl" in warning and f"sha256 {sha256(evil)}" in warning
        assert result["downloads"][0]["source"] == "mirror"
        assert (tmp / "bin" / "nerdctl").read_text() == "#!/bin/sh\necho nerdctl version 2.3.5\n"
        assert list((tmp / "work").iterdir()) == []

        # fetch_artifact alone, into a directory of ours: the peer's file is
        # gone the moment it is refused; with the mirror failing too, the
        # existing failure stands and the directory stays empty.
        (mirror.directory / NERDCTL_FILE).unlink()
        target = tmp / "fetch-here"
        r = run_bash(f'mkdir -p {shlex.quote(str(target))}; fetch_artifact nerdctl {shlex.quote(str(target))} path',
                     env, script="install_runtime.sh")
    assert r.rc != 0
    assert f"peer {peer} skipped for nerdctl" in r.stderr
    failure = [line for line in r.stderr.splitlines() if "FAILED" in line]
    assert len(failure) == 1 and "ARTIFACT_MIRROR" in failure[0] and NERDCTL_FILE in failure[0]
    assert list(target.iterdir()) == []


def test_every_artifact_from_the_peer_and_a_second_run_downloads_nothing(site, tmp_path):
    """A golden image host, or a host installed before: nothing fetched, `[]`."""
    env, mirror, tmp = site
    www = peer_dir(tmp)
    copy_archives(mirror, www)
    with serve(www) as peer:
        env = {**env, "ARTIFACT_PEERS": peer}
        first = install(env)
        assert [(d["artifact"], d["source"]) for d in first["downloads"]] == [
            ("kata", "peer"), ("gvisor", "peer"), ("nerdctl", "peer")
        ]
        assert first["downloadedBytes"]["peer"] == sum((www / f).stat().st_size for f in FILES.values())
        assert mirror.requests() == []
        second = install(env)
    assert second["downloads"] == []
    assert second["downloadedBytes"] == {"internet": 0, "mirror": 0, "peer": 0}
    assert second["changed"] == [] and second["kata"] == second["gvisor"] == second["nerdctl"] == "present"
    assert len(gets(www.parent / f"serve-{peer.rsplit(':', 1)[1]}.log")) == 3, "the second run asks no peer"


def test_without_a_mirror_the_catalog_url_is_accounted_as_internet(site, tmp_path):
    env, mirror, tmp = site
    catalog = tmp / "fr" / "catalog" / "artifacts.tsv"
    catalog.write_text(catalog.read_text().replace(f"https://github.invalid/nerdctl/v2.3.5/{NERDCTL_FILE}",
                                                   f"{mirror.url}/{NERDCTL_FILE}"))
    result = install({**env, "ARTIFACT_MIRROR": ""}, "install_nerdctl; print_result")
    size = (mirror.directory / NERDCTL_FILE).stat().st_size
    assert result["downloads"] == [
        {"artifact": "nerdctl", "source": "internet", "url": f"{mirror.url}/{NERDCTL_FILE}", "bytes": size}
    ]
    assert result["downloadedBytes"] == {"internet": size, "mirror": 0, "peer": 0}


def test_fetch_artifact_refuses_a_subshell(site):
    env, _, tmp = site
    r = run_bash(f'x=$(fetch_artifact nerdctl {shlex.quote(str(tmp))} p)', env, script="install_runtime.sh")
    assert r.rc != 0 and "download record would be lost" in r.stderr


def test_the_share_keeps_the_verified_archives_and_serves_exactly_its_address(site, tmp_path):
    env, mirror, tmp = site
    env = share_env(env, tmp, share="10.0.1.5:9180")
    first = install(env)
    cache = Path(env["FR_ARTIFACT_CACHE_DIR"])
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILES.values())
    for name in FILES.values():
        assert (cache / name).read_bytes() == (mirror.directory / name).read_bytes()
        assert oct((cache / name).stat().st_mode & 0o777) == "0o644"
    assert oct(cache.stat().st_mode & 0o777) == "0o755"
    unit_file = Path(env["FR_SYSTEMD_DIR"]) / UNIT
    unit = unit_file.read_text().splitlines()
    assert f"ExecStart={sys.executable} -I -m http.server --bind 10.0.1.5 --directory {cache} 9180" in unit
    for line in ("DynamicUser=yes", "ProtectSystem=strict", f"ReadOnlyPaths={cache}", "NoNewPrivileges=yes",
                 "CapabilityBoundingSet=", "ProtectHome=yes", "PrivateDevices=yes"):
        assert line in unit, line
    assert [line for line in unit if line.startswith("ExecStart")] == [unit[unit.index("[Service]") + 1]]
    assert systemctl_log(env) == [
        "daemon-reload", f"is-enabled --quiet {UNIT}", f"enable {UNIT}", f"restart {UNIT}"
    ]
    assert str(unit_file) in first["changed"] and f"{cache}/{KATA_FILE}" in first["changed"]
    assert [d["source"] for d in first["downloads"]] == ["mirror"] * 3
    assert list((tmp / "work").iterdir()) == []

    second = install(env)
    assert second["changed"] == [] and second["downloads"] == []
    assert systemctl_log(env)[4:] == [f"is-enabled --quiet {UNIT}", f"is-active --quiet {UNIT}"]
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILES.values())


def test_an_ipv6_share_binds_the_bare_address(site):
    env, _, tmp = site
    env = share_env(env, tmp, share="[fd00::5]:9180")
    assert install(env, "install_nerdctl; configure_artifact_share; print_result")["nerdctl"] == "installed"
    unit = (Path(env["FR_SYSTEMD_DIR"]) / UNIT).read_text()
    assert f"--bind fd00::5 --directory {env['FR_ARTIFACT_CACHE_DIR']} 9180\n" in unit


@pytest.mark.parametrize("share", ["10.0.1.5", "10.0.1.5:0", "10.0.1.5:70000", "10.0.1.5:9180\nUser=root",
                                   "host.example:9180", "fd00::5:9180"])
def test_a_malformed_share_is_refused_before_anything_changes(site, share):
    env, mirror, tmp = site
    env = share_env(env, tmp, share=share)
    r = run_bash('require_kvm_if_kata_wanted() { :; }; install_runtime_packages() { :; }; main',
                 {**env, "FR_DRY_RUN": "1"}, script="install_runtime.sh")
    assert r.rc != 0 and "ARTIFACT_SHARE empty or ADDRESS:PORT" in r.stderr and r.stdout == ""
    assert mirror.requests() == []
    assert not Path(env["FR_SYSTEMD_DIR"]).exists() and not Path(env["FR_ARTIFACT_CACHE_DIR"]).exists()


def test_an_installed_archive_not_cached_is_fetched_once_more_for_the_share(site):
    """Sharing turned on after the install unpacked and deleted the archives."""
    env, mirror, tmp = site
    assert install(env)["kata"] == "installed"
    assert len(mirror.requests()) == 3
    env = share_env(env, tmp)
    again = install(env)
    assert again["kata"] == again["gvisor"] == again["nerdctl"] == "present"
    assert [d["artifact"] for d in again["downloads"]] == ["kata", "gvisor", "nerdctl"]
    assert "not cached (removed after unpacking): fetching it once more" in again["_stderr"]
    cache = Path(env["FR_ARTIFACT_CACHE_DIR"])
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILES.values())
    # A cached file that is not the catalog's is replaced; an older file goes.
    (cache / NERDCTL_FILE).write_bytes(b"not nerdctl")
    (cache / "nerdctl-2.3.0-linux-amd64.tar.gz").write_bytes(b"old")
    third = install(env)
    assert [d["artifact"] for d in third["downloads"]] == ["nerdctl"]
    assert (cache / NERDCTL_FILE).read_bytes() == (mirror.directory / NERDCTL_FILE).read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILES.values())
    assert install(env)["downloads"] == []


def test_an_empty_share_removes_the_unit_and_the_cache(site):
    env, _, tmp = site
    env = share_env(env, tmp)
    install(env)
    unit_file = Path(env["FR_SYSTEMD_DIR"]) / UNIT
    cache = Path(env["FR_ARTIFACT_CACHE_DIR"])
    assert unit_file.exists() and cache.exists()
    before = len(systemctl_log(env))
    off = install({**env, "ARTIFACT_SHARE": ""})
    assert not unit_file.exists() and not cache.exists()
    assert systemctl_log(env)[before:] == [f"disable --now {UNIT}", "daemon-reload"]
    assert off["changed"] == [str(unit_file), str(cache)] and off["downloads"] == []
    # Unset is the same as empty, and a second run has nothing to remove.
    unset = {k: v for k, v in env.items() if k != "ARTIFACT_SHARE"}
    assert install(unset)["changed"] == []
    assert len(systemctl_log(env)) == before + 2


def test_end_to_end_a_second_host_installs_from_the_seeds_share(site, tmp_path):
    """The seed's own unit command over its cache serves the layout peers ask for."""
    env, mirror, tmp = site
    port = free_port()
    seed = share_env(env, tmp, share=f"127.0.0.1:{port}")
    assert [d["source"] for d in install(seed)["downloads"]] == ["mirror"] * 3
    unit = (Path(seed["FR_SYSTEMD_DIR"]) / UNIT).read_text().splitlines()
    exec_start = shlex.split(next(line for line in unit if line.startswith("ExecStart="))[len("ExecStart="):])
    assert exec_start[-1] == str(port) and exec_start[exec_start.index("--bind") + 1] == "127.0.0.1"
    served = len(mirror.requests())

    other = tmp / "host2"
    (other / "fr" / "state").mkdir(parents=True)
    shutil.copytree(tmp / "fr" / "catalog", other / "fr" / "catalog")
    shutil.copytree(tmp / "fr" / "contract", other / "fr" / "contract")
    second = {**env, "FR_ROOT": str(other / "fr"), "FR_WORK_BASE": str(other / "work"),
              "FR_KATA_DIR": str(other / "opt-kata"), "FR_BIN_DIR": str(other / "bin"),
              "FR_GVISOR_DIR": str(other / "opt-gvisor"), "FR_HOST": "test-host-2"}
    cache = Path(seed["FR_ARTIFACT_CACHE_DIR"])
    with serve(cache, argv=exec_start, port=port) as peer:
        result = install({**second, "ARTIFACT_PEERS": f"http://127.0.0.2:{free_port()} {peer}"},
                         "install_kata; install_gvisor; install_nerdctl; print_result")
    assert [(d["artifact"], d["source"], d["url"]) for d in result["downloads"]] == [
        (name, "peer", f"{peer}/{file}") for name, file in FILES.items()
    ]
    assert result["downloadedBytes"]["peer"] == sum((cache / f).stat().st_size for f in FILES.values())
    assert result["downloadedBytes"]["mirror"] == 0 and len(mirror.requests()) == served
    assert result["kata"] == result["gvisor"] == result["nerdctl"] == "installed"
    assert os.access(other / "bin" / "nerdctl", os.X_OK)
    assert (other / "opt-kata" / "bin" / "containerd-shim-kata-v2").exists()
