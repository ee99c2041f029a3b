"""scripts/install_runtime.sh: Kata, gVisor's release and nerdctl from the
catalog, for real, against a tiny HTTP server on 127.0.0.1 standing in for
GitHub, Google's storage and the mirror.

Proves: the download -> digest check -> move into place order (a tampered
file installs nothing, leaves no marker, and the one-line message names the
artifact, the algorithm, the expected and the found digest; for gVisor a
for gVisor the archive is refused whole); the Kata layout (./opt/kata/...)
lands in the Kata dir with the shim and kata-runtime linked into the bin dir;
gVisor's release archive (runsc, containerd-shim-runsc-v1, gvisor-bin/
sidecars) lands whole in <gvisor dir>/<version>/, runsc and the shim linked
into the bin dir (containerd's PATH), a new version beside the old one, an
archive without a sidecar or with an entry outside its layout (dot-dot,
absolute, links) refused with nothing written; markers record the digest's algorithm and make a second run
skip without any HTTP request; ARTIFACT_MIRROR is used by file name; Kata is
skipped without KVM under ISOLATION=sandbox and refused before any download
under ISOLATION=vm; gVisor's release is installed only where gVisor runs and
gvisor.runsc is release (with debian, Debian's runsc package instead).
Does not prove: apt-get installs of docker.io/runsc (not run here: no root
side effects), or that the real 1.5 GB Kata release or the real gVisor
binaries work; the files here are test files with the real names and
layout. The hostlab runs the real packages.
"""

from __future__ import annotations

import bz2
import io
import json
import os
import re
import tarfile
import time
from pathlib import Path

import pytest

from components.contract import GVISOR_ARTIFACTS, GVISOR_SIDECAR_DIR, GVISOR_SIDECARS
from tests.scripts.helpers import (
    GVISOR_VERSION,
    digest,
    kvm_env,
    run_bash,
    sha256,
    tar_bytes,
    write_catalog,
)

KATA_FILE = "kata-static-3.32.0-amd64.tar.zst"
NERDCTL_FILE = "nerdctl-2.3.5-linux-amd64.tar.gz"


def gvisor_file(name: str, version: str = GVISOR_VERSION) -> bytes:
    return f"#!/bin/sh\necho '{name} version release-{version} (test file, not gVisor)'\n".encode()


@pytest.fixture
def world(fr_env, tmp_path, http_server):
    kata = tar_bytes(
        {
            "./opt/kata/bin/containerd-shim-kata-v2": b"#!/bin/sh\necho shim\n",
            "./opt/kata/bin/kata-runtime": b"#!/bin/sh\necho kata-runtime 3.32.0\n",
            "./opt/kata/share/defaults/kata-containers/configuration-qemu.toml": b"[hypervisor.qemu]\n",
        },
        "zst",
    )
    nerdctl = tar_bytes(
        {"nerdctl": b"#!/bin/sh\necho nerdctl version 2.3.5\n", "containerd-rootless.sh": b""}, "gz"
    )
    (http_server.directory / KATA_FILE).write_bytes(kata)
    (http_server.directory / NERDCTL_FILE).write_bytes(nerdctl)
    gvisor = gvisor_archive()
    (http_server.directory / GVISOR_ARCHIVE_FILE).write_bytes(gvisor)
    # Catalog URLs point at an unreachable origin: only the mirror can serve them.
    write_catalog(
        tmp_path / "fr",
        [
            ("kata", "3.32.0", digest("sha256", kata), f"https://github.invalid/kata/3.32.0/{KATA_FILE}"),
            ("nerdctl", "2.3.5", digest("sha256", nerdctl), f"https://github.invalid/nerdctl/v2.3.5/{NERDCTL_FILE}"),
            gvisor_row(gvisor),
        ],
    )
    env = {**fr_env, **kvm_env(tmp_path, True), "ARTIFACT_MIRROR": http_server.url}
    return env, http_server, tmp_path


STEPS = "install_kata; install_gvisor; install_nerdctl; print_result"


def test_first_run_installs_then_second_run_skips_without_download(world):
    env, server, tmp = world
    first = run_bash(STEPS, env, script="install_runtime.sh")
    assert first.rc == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["kata"] == "installed" and result["nerdctl"] == "installed" and result["gvisor"] == "installed"
    assert os.access(tmp / "opt-kata" / "bin" / "containerd-shim-kata-v2", os.X_OK)
    assert os.readlink(tmp / "bin" / "containerd-shim-kata-v2") == str(
        tmp / "opt-kata" / "bin" / "containerd-shim-kata-v2"
    )
    assert os.readlink(tmp / "bin" / "kata-runtime") == str(tmp / "opt-kata" / "bin" / "kata-runtime")
    assert os.access(tmp / "bin" / "nerdctl", os.X_OK)
    kata_digest = (tmp / "fr" / "catalog" / "artifacts.tsv").read_text().split("kata\t3.32.0\t")[1].split("\t")[0]
    assert (tmp / "fr" / "state" / "kata.version").read_text() == f"3.32.0 {kata_digest}\n"
    assert kata_digest.startswith("sha256:"), "the marker records the digest's algorithm"
    assert len(server.requests()) == 3
    assert [p for p in (tmp / "work").iterdir()] == []  # work dirs removed on exit

    second = run_bash(STEPS, env, script="install_runtime.sh")
    assert second.rc == 0, second.stderr
    assert json.loads(second.stdout) == {
        "changed": [],
        "installedPackages": [],
        "kata": "present",
        "gvisor": "present",
        "nerdctl": "present",
        "downloads": [],
        "downloadedBytes": {"internet": 0, "mirror": 0, "peer": 0},
        "drainedForUpdate": False,
    }
    assert "Kata already at 3.32.0, skipping" in second.stderr
    assert f"gVisor already at {GVISOR_VERSION}, skipping" in second.stderr
    assert "nerdctl already at 2.3.5, skipping" in second.stderr
    assert len(server.requests()) == 3, "the second run must not download"


def test_tampered_archive_installs_nothing(world):
    env, server, tmp = world
    tampered = (server.directory / KATA_FILE).read_bytes() + b"evil"
    (server.directory / KATA_FILE).write_bytes(tampered)
    r = run_bash(STEPS, env, script="install_runtime.sh")
    assert r.rc != 0
    expected = [
        line.split("\t")[2]
        for line in (tmp / "fr" / "catalog" / "artifacts.tsv").read_text().splitlines()
        if line.startswith("kata\t")
    ][0]
    failure = [line for line in r.stderr.splitlines() if "FAILED" in line]
    assert len(failure) == 1
    assert "test-host-1" in failure[0] and "artifact kata" in failure[0]
    assert f"with sha256 {expected.removeprefix('sha256:')}" in failure[0]
    assert f"found sha256 {sha256(tampered)}" in failure[0]
    assert not (tmp / "opt-kata").exists()
    assert not (tmp / "bin" / "containerd-shim-kata-v2").exists()
    assert not (tmp / "fr" / "state" / "kata.version").exists()
    assert [p for p in (tmp / "work").iterdir()] == []


def test_a_legacy_marker_without_the_algorithm_counts_and_is_rewritten_without_download(world):
    """Markers written before digests said their algorithm read "<version> <hex>"
    (always sha256): the same install, so nothing is downloaded again."""
    env, server, tmp = world
    assert run_bash(STEPS, env, script="install_runtime.sh").rc == 0
    marker = tmp / "fr" / "state" / "kata.version"
    current = marker.read_text()
    marker.write_text(current.replace("sha256:", ""))
    r = run_bash(STEPS, env, script="install_runtime.sh")
    assert r.rc == 0, r.stderr
    assert json.loads(r.stdout)["kata"] == "present"
    assert marker.read_text() == current
    assert len(server.requests()) == 3, "a legacy marker must not cost a download"


def test_changed_catalog_version_reinstalls(world):
    env, server, tmp = world
    assert run_bash(STEPS, env, script="install_runtime.sh").rc == 0
    (tmp / "fr" / "state" / "nerdctl.version").write_text("2.3.0 deadbeef\n")  # an older install
    r = run_bash("install_nerdctl; print_result", env, script="install_runtime.sh")
    assert r.rc == 0, r.stderr
    assert json.loads(r.stdout)["nerdctl"] == "installed"
    assert len(server.requests()) == 4


def test_sandbox_without_kvm_skips_kata_without_download(world):
    env, server, tmp = world
    env = {**env, "FR_DEV_KVM": str(tmp / "no-kvm")}
    r = run_bash("install_kata; print_result", env, script="install_runtime.sh")
    assert r.rc == 0, r.stderr
    assert json.loads(r.stdout)["kata"] == "skipped-no-kvm"
    assert "Kata not installed" in r.stderr
    assert server.requests() == []


def test_vm_without_kvm_fails_before_any_download(world):
    env, server, tmp = world
    env = {**env, "FR_DEV_KVM": str(tmp / "no-kvm"), "ISOLATION": "vm"}
    r = run_bash("main", {**env, "FR_DRY_RUN": "1"}, script="install_runtime.sh")
    assert r.rc != 0
    assert "test-host-1" in r.stderr
    assert "Hetzner Cloud servers have no nested virtualization" in r.stderr
    assert "set functions-runtime:isolation to sandbox" in r.stderr
    assert r.stdout == ""
    assert server.requests() == []


def test_download_failure_is_one_clear_line(world):
    env, server, tmp = world
    (server.directory / NERDCTL_FILE).unlink()
    r = run_bash("install_nerdctl", env, script="install_runtime.sh")
    assert r.rc != 0
    failure = [line for line in r.stderr.splitlines() if "FAILED" in line]
    assert len(failure) == 1 and NERDCTL_FILE in failure[0] and "ARTIFACT_MIRROR" in failure[0]
    assert not (tmp / "bin" / "nerdctl").exists()


# ---------------------------------------------------------------- gVisor's release


GVISOR_ARCHIVE_FILE = "gvisor-x86_64.tar.bz2"


def gvisor_dir(env) -> Path:
    return Path(env["FR_GVISOR_DIR"])


def gvisor_members(version: str = GVISOR_VERSION) -> dict[str, bytes]:
    """The release archive's layout (runsc and the shim at the top, the
    sidecars in gvisor-bin/), with test files for contents."""
    names = [*GVISOR_ARTIFACTS, *(f"{GVISOR_SIDECAR_DIR}/{s}" for s in GVISOR_SIDECARS)]
    return {name: gvisor_file(name, version) for name in names}


def gvisor_archive(version: str = GVISOR_VERSION, members: dict[str, bytes] | None = None) -> bytes:
    return tar_bytes(gvisor_members(version) if members is None else members, "bz2")


def gvisor_row(archive: bytes, version: str = GVISOR_VERSION) -> tuple[str, str, str, str]:
    """The catalog's gVisor row; the URL's origin is unreachable, so only the mirror serves it."""
    return ("gvisor", version, digest("sha256", archive),
            f"https://github.invalid/google/gvisor/releases/download/release-{version}/{GVISOR_ARCHIVE_FILE}")


def serve_gvisor(server, tmp, archive: bytes, version: str = GVISOR_VERSION) -> None:
    """The mirror serves `archive`, and the catalog pins `archive`'s digest."""
    (server.directory / GVISOR_ARCHIVE_FILE).write_bytes(archive)
    catalog = tmp / "fr" / "catalog" / "artifacts.tsv"
    kept = [line for line in catalog.read_text().splitlines()[2:] if not line.startswith("gvisor\t")]
    write_catalog(tmp / "fr", [tuple(line.split("\t")) for line in kept] + [gvisor_row(archive, version)])


def assert_no_gvisor_installed(env, tmp) -> None:
    assert not gvisor_dir(env).exists()
    assert not any((tmp / "bin" / name).exists() or (tmp / "bin" / name).is_symlink() for name in GVISOR_ARTIFACTS)
    assert not (tmp / "fr" / "state" / "gvisor.version").exists()
    assert [p for p in (tmp / "work").iterdir()] == []


def test_gvisor_release_archive_lands_whole_in_its_version_directory_and_on_path(world):
    env, server, tmp = world
    r = run_bash("install_gvisor; print_result", env, script="install_runtime.sh")
    assert r.rc == 0, r.stderr
    assert json.loads(r.stdout)["gvisor"] == "installed" and "gvisor" in json.loads(r.stdout)["changed"]
    release = gvisor_dir(env) / GVISOR_VERSION
    for name, data in gvisor_members().items():
        installed = release / name
        assert installed.read_bytes() == data and os.access(installed, os.X_OK), name
    # runsc finds its sidecars beside itself; containerd (nerdctl's io.containerd.runsc.v1) finds both on PATH.
    for name in GVISOR_ARTIFACTS:
        assert os.readlink(tmp / "bin" / name) == str(release / name)
    archive = (server.directory / GVISOR_ARCHIVE_FILE).read_bytes()
    assert (tmp / "fr" / "state" / "gvisor.version").read_text() == f"{GVISOR_VERSION} sha256:{sha256(archive)}\n"
    assert f"gvisor: sha256 {sha256(archive)} verified" in r.stderr
    fetched = [line.split('"GET ')[1].split()[0] for line in server.requests()]
    assert fetched == [f"/{GVISOR_ARCHIVE_FILE}"], "one archive, fetched through the mirror by file name"
    assert sorted(p.name for p in gvisor_dir(env).iterdir()) == [GVISOR_VERSION], "no temporary directory left"


def test_a_tampered_gvisor_archive_installs_nothing(world):
    env, server, tmp = world
    good = (server.directory / GVISOR_ARCHIVE_FILE).read_bytes()
    (server.directory / GVISOR_ARCHIVE_FILE).write_bytes(good + b"evil")
    r = run_bash("install_gvisor; print_result", env, script="install_runtime.sh")
    assert r.rc != 0 and r.stdout == ""
    failure = [line for line in r.stderr.splitlines() if "FAILED" in line]
    assert len(failure) == 1 and "test-host-1" in failure[0] and "artifact gvisor" in failure[0]
    assert f"with sha256 {sha256(good)}" in failure[0] and f"found sha256 {sha256(good + b'evil')}" in failure[0]
    assert "nothing was installed" in failure[0]
    assert_no_gvisor_installed(env, tmp)


@pytest.mark.parametrize("missing", ["gvisor-bin/gvisor_sentry", "gvisor-bin/runsc-metric-server",
                                     "containerd-shim-runsc-v1"])
def test_a_gvisor_archive_without_a_sidecar_or_the_shim_installs_nothing(world, missing):
    """Pinned by its own digest (the digest is right): the layout is what is wrong."""
    env, server, tmp = world
    members = gvisor_members()
    del members[missing]
    serve_gvisor(server, tmp, gvisor_archive(members=members))
    r = run_bash("install_gvisor; print_result", env, script="install_runtime.sh")
    assert r.rc != 0 and r.stdout == ""
    failure = [line for line in r.stderr.splitlines() if "FAILED" in line]
    assert len(failure) == 1 and f"it lacks {missing}; nothing was installed" in failure[0]
    assert "pin a gVisor release from 20260831 on" in failure[0]
    assert_no_gvisor_installed(env, tmp)


def test_a_gvisor_archive_whose_sidecar_is_a_directory_installs_nothing(world):
    env, server, tmp = world
    members = gvisor_members()
    del members["gvisor-bin/gvisor_sentry"]
    members["gvisor-bin/gvisor_sentry/inside"] = b"#!/bin/sh\n"
    serve_gvisor(server, tmp, gvisor_archive(members=members))
    r = run_bash("install_gvisor; print_result", env, script="install_runtime.sh")
    assert r.rc != 0 and "it lacks gvisor-bin/gvisor_sentry; nothing was installed" in r.stderr
    assert_no_gvisor_installed(env, tmp)


def _archive_with(entry: tarfile.TarInfo, data: bytes = b"") -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, body in gvisor_members().items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(body), 0o755
            tar.addfile(info, io.BytesIO(body))
        entry.size = len(data)
        tar.addfile(entry, io.BytesIO(data) if entry.isfile() else None)
    return bz2.compress(raw.getvalue())


def _link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        (tarfile.TarInfo("../../etc/cron.d/evil"), "file '../../etc/cron.d/evil'"),
        (tarfile.TarInfo("/etc/cron.d/evil"), "file '/etc/cron.d/evil'"),
        (_link("gvisor-bin/checkpointgofer2", "/etc/shadow"), "link 'gvisor-bin/checkpointgofer2'"),
        (tarfile.TarInfo("extra-tool"), "file 'extra-tool'"),
        (tarfile.TarInfo("gvisor-bin/../../escape"), "file 'gvisor-bin/../../escape'"),
    ],
    ids=["dot-dot", "absolute", "symlink", "unknown-top-file", "dot-dot-inside"],
)
def test_a_gvisor_archive_with_an_entry_outside_its_layout_installs_nothing(world, entry, words):
    env, server, tmp = world
    serve_gvisor(server, tmp, _archive_with(entry, b"#!/bin/sh\n" if entry.isfile() else b""))
    r = run_bash("install_gvisor; print_result", env, script="install_runtime.sh")
    assert r.rc != 0 and r.stdout == ""
    failure = [line for line in r.stderr.splitlines() if "FAILED" in line]
    assert len(failure) == 1 and f"an entry outside the release's layout: {words}" in failure[0], r.stderr
    assert_no_gvisor_installed(env, tmp)
    assert not (tmp / "etc").exists()


def test_a_gvisor_archive_with_a_dot_entry_and_a_nested_sidecar_directory_installs(world):
    """What a later release may add inside its layout: a "./" entry, a directory in gvisor-bin/."""
    env, server, tmp = world
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name in (".", "gvisor-bin", "gvisor-bin/helpers"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, body in {**gvisor_members(), "gvisor-bin/helpers/tool": b"#!/bin/sh\n"}.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size, info.mode = len(body), 0o755
            tar.addfile(info, io.BytesIO(body))
    serve_gvisor(server, tmp, bz2.compress(raw.getvalue()))
    r = run_bash("install_gvisor; print_result", env, script="install_runtime.sh")
    assert r.rc == 0 and json.loads(r.stdout)["gvisor"] == "installed", r.stderr
    assert (gvisor_dir(env) / GVISOR_VERSION / "gvisor-bin" / "helpers" / "tool").exists()
    assert (gvisor_dir(env) / GVISOR_VERSION / "gvisor-bin" / "gvisor_sentry").exists()


def test_a_new_gvisor_version_installs_beside_the_old_and_moves_the_links(world):
    """A container started with the old runsc keeps its binary and its sidecars."""
    env, server, tmp = world
    assert run_bash("install_gvisor", env, script="install_runtime.sh").rc == 0
    bumped = "20260914.0"
    serve_gvisor(server, tmp, gvisor_archive(bumped), bumped)
    r = run_bash("install_gvisor; print_result", env, script="install_runtime.sh")
    assert r.rc == 0, r.stderr
    assert json.loads(r.stdout)["gvisor"] == "installed"
    for name in gvisor_members():
        assert (gvisor_dir(env) / GVISOR_VERSION / name).exists(), "the old version stays whole"
        assert (gvisor_dir(env) / bumped / name).read_bytes() == gvisor_file(name, bumped)
    for name in GVISOR_ARTIFACTS:
        assert os.readlink(tmp / "bin" / name) == str(gvisor_dir(env) / bumped / name)


def test_an_installed_release_missing_a_sidecar_is_installed_again(world):
    env, server, tmp = world
    assert run_bash("install_gvisor", env, script="install_runtime.sh").rc == 0
    (gvisor_dir(env) / GVISOR_VERSION / GVISOR_SIDECAR_DIR / "gvisor_sentry").unlink()
    r = run_bash("install_gvisor; print_result", env, script="install_runtime.sh")
    assert r.rc == 0 and json.loads(r.stdout)["gvisor"] == "installed", r.stderr
    assert (gvisor_dir(env) / GVISOR_VERSION / GVISOR_SIDECAR_DIR / "gvisor_sentry").exists()


def test_upgrading_from_the_loose_files_installs_the_archive_beside_them(world):
    """A host of 20260817.0 (loose runsc and shim, their markers) gets the
    archive's directory and links; the old files and markers stay for the
    sandboxes that run them."""
    env, server, tmp = world
    old = gvisor_dir(env) / "20260817.0"
    old.mkdir(parents=True)
    for name in GVISOR_ARTIFACTS:
        (old / name).write_bytes(gvisor_file(name, "20260817.0"))
        (old / name).chmod(0o755)
        (tmp / "bin").mkdir(exist_ok=True)
        (tmp / "bin" / name).symlink_to(old / name)
        (tmp / "fr" / "state" / f"{name}.version").write_text("20260817.0 sha512:" + "0" * 128 + "\n")
    r = run_bash("install_gvisor; print_result", env, script="install_runtime.sh")
    assert r.rc == 0 and json.loads(r.stdout)["gvisor"] == "installed", r.stderr
    for name in GVISOR_ARTIFACTS:
        assert os.readlink(tmp / "bin" / name) == str(gvisor_dir(env) / GVISOR_VERSION / name)
        assert (old / name).exists()


def test_with_gvisor_runsc_debian_no_release_is_fetched_and_our_links_go(world):
    env, server, tmp = world
    assert run_bash("install_gvisor", env, script="install_runtime.sh").rc == 0
    requests = len(server.requests())
    r = run_bash("install_gvisor; print_result", {**env, "GVISOR_RUNSC": "debian"}, script="install_runtime.sh")
    assert r.rc == 0, r.stderr
    assert json.loads(r.stdout)["gvisor"] == "debian-package"
    assert "WARNING: gVisor from Debian's runsc package (functions-runtime:gvisor.runsc is debian)" in r.stderr
    assert len(server.requests()) == requests
    assert not any((tmp / "bin" / name).is_symlink() for name in GVISOR_ARTIFACTS)
    assert (gvisor_dir(env) / GVISOR_VERSION / "runsc").exists(), "files stay for running containers"


def test_a_vm_stack_installs_no_gvisor(world):
    env, server, tmp = world
    r = run_bash("install_gvisor; print_result", {**env, "ISOLATION": "vm"}, script="install_runtime.sh")
    assert r.rc == 0, r.stderr
    assert json.loads(r.stdout)["gvisor"] == "not-wanted"
    assert server.requests() == [] and not gvisor_dir(env).exists()


@pytest.mark.parametrize(
    ("isolation", "gvisor_runsc", "debian_package"),
    [("sandbox", "debian", True), ("sandbox", "release", False), ("vm", "debian", False)],
)
def test_debians_runsc_package_is_installed_only_where_chosen(fr_env, isolation, gvisor_runsc, debian_package):
    snippet = "package_installed() { false; }; missing_runtime_packages"
    env = {**fr_env, "ISOLATION": isolation, "GVISOR_RUNSC": gvisor_runsc}
    r = run_bash(snippet, env, script="install_runtime.sh")
    assert r.rc == 0, r.stderr
    assert ("runsc" in r.stdout.split()) is debian_package
    assert "docker.io" in r.stdout.split()


def test_a_missing_gvisor_runsc_fails_before_anything(world):
    env, server, tmp = world
    r = run_bash("main", {**env, "GVISOR_RUNSC": "", "FR_DRY_RUN": "1"}, script="install_runtime.sh")
    assert r.rc != 0 and r.stdout == ""
    assert "variable GVISOR_RUNSC to be set" in r.stderr
    assert server.requests() == []


# ---------------------------------------------------------------- service starts during apt


@pytest.fixture
def apt_world(fr_env, tmp_path):
    """A fake apt-get on PATH that records what a maintainer script's
    `deb-systemd-invoke start docker.service` would be told by policy-rc.d
    at that moment; its `update` touches the update stamp as the base apt
    hook does, and its `install` fails while the file INSTALL_FAILS_ONCE
    exists (removing it). Proves the hold, its release and when the lists are
    refreshed; not apt itself."""
    fake_bin = tmp_path / "fake-bin"
    fake_bin.mkdir()
    calls = tmp_path / "apt-calls"
    policy = tmp_path / "policy-rc.d"
    stamp = Path(fr_env["FR_APT_UPDATE_STAMP"])
    stamp.parent.mkdir(parents=True, exist_ok=True)
    fails_once = tmp_path / "install-fails-once"
    apt = fake_bin / "apt-get"
    apt.write_text(
        "#!/bin/sh\n"
        f'if [ -x "{policy}" ]; then "{policy}" docker.service start; echo "$1 policy=$?"; '
        f'else echo "$1 policy=none"; fi >> "{calls}"\n'
        f'if [ "$1" = update ]; then touch "{stamp}"; fi\n'
        f'if [ "$1" = install ] && [ -e "{fails_once}" ]; then rm "{fails_once}"; exit 100; fi\n'
    )
    apt.chmod(0o755)
    env = {**fr_env, "PATH": f"{fake_bin}:{os.environ['PATH']}", "FR_POLICY_RC_D": str(policy)}
    return env, calls, policy


def test_services_do_not_start_during_apt_and_the_hold_is_released(apt_world):
    env, calls, policy = apt_world
    snippet = "package_installed() { false; }; dpkg_was_interrupted() { false; }; install_runtime_packages"
    r = run_bash(snippet, env, script="install_runtime.sh")
    assert r.rc == 0, r.stderr
    # 101: "action forbidden by policy", so docker.io's postinst does not start dockerd.
    assert calls.read_text().splitlines() == ["update policy=101", "install policy=101"]
    assert not policy.exists(), "policy-rc.d left behind after the install step"


def test_a_policy_rc_d_that_is_not_ours_is_left_alone(apt_world):
    env, calls, policy = apt_world
    policy.write_text("#!/bin/sh\n# the operator's own\nexit 0\n")
    policy.chmod(0o755)
    snippet = "package_installed() { false; }; dpkg_was_interrupted() { false; }; install_runtime_packages"
    r = run_bash(snippet, env, script="install_runtime.sh")
    assert r.rc == 0 and "is not ours; leaving it" in r.stderr
    assert calls.read_text().splitlines() == ["update policy=0", "install policy=0"]
    assert policy.read_text() == "#!/bin/sh\n# the operator's own\nexit 0\n"


# ---------------------------------------------------------------- package lists

NOTHING_INSTALLED = "package_installed() { false; }; dpkg_was_interrupted() { false; }; install_runtime_packages"


def age_file(path: Path, seconds_ago: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    when = time.time() - seconds_ago
    os.utime(path, (when, when))


def apt_calls(calls: Path) -> list[str]:
    return [line.split()[0] for line in calls.read_text().splitlines()]


def test_lists_refreshed_minutes_ago_are_installed_from_without_an_update(apt_world):
    """As on a new Cloud server: cloud-init's package_update ran minutes before."""
    env, calls, _ = apt_world
    age_file(Path(env["FR_APT_UPDATE_STAMP"]), 300)
    r = run_bash(NOTHING_INSTALLED, env, script="install_runtime.sh")
    assert r.rc == 0, r.stderr
    assert apt_calls(calls) == ["install"]
    # The script reads the clock a moment after the test aged the file.
    assert re.search(r"package lists refreshed 30[0-9] s ago, skipping apt-get update", r.stderr), r.stderr


@pytest.mark.parametrize(
    ("stamp_age_s", "why"),
    [(None, "never stamped"), (2 * 3600, "two hours old"), (-600, "stamp from the future")],
)
def test_lists_without_a_fresh_stamp_are_refreshed_first(apt_world, stamp_age_s, why):
    env, calls, _ = apt_world
    if stamp_age_s is not None:
        age_file(Path(env["FR_APT_UPDATE_STAMP"]), stamp_age_s)
    r = run_bash(NOTHING_INSTALLED, env, script="install_runtime.sh")
    assert r.rc == 0, r.stderr
    assert apt_calls(calls) == ["update", "install"], why


def test_an_apt_source_edited_after_the_update_makes_the_lists_stale(apt_world):
    env, calls, _ = apt_world
    age_file(Path(env["FR_APT_UPDATE_STAMP"]), 300)
    age_file(Path(env["FR_APT_SOURCES"]) / "debian.sources", 60)
    r = run_bash(NOTHING_INSTALLED, env, script="install_runtime.sh")
    assert r.rc == 0, r.stderr
    assert apt_calls(calls) == ["update", "install"]


def test_an_install_that_fails_on_fresh_lists_refreshes_them_and_retries_once(apt_world, tmp_path):
    """A .deb superseded since the last update 404s; a refresh fixes that."""
    env, calls, _ = apt_world
    age_file(Path(env["FR_APT_UPDATE_STAMP"]), 300)
    (tmp_path / "install-fails-once").touch()
    r = run_bash(NOTHING_INSTALLED, env, script="install_runtime.sh")
    assert r.rc == 0, r.stderr
    assert apt_calls(calls) == ["install", "update", "install"]
    assert "refreshing them and retrying once" in r.stderr


def test_an_install_that_fails_on_just_refreshed_lists_is_not_retried(apt_world, tmp_path):
    env, calls, _ = apt_world
    (tmp_path / "install-fails-once").touch()
    r = run_bash(NOTHING_INSTALLED, env, script="install_runtime.sh")
    assert r.rc != 0
    assert apt_calls(calls) == ["update", "install"]
    failure = [line for line in r.stderr.splitlines() if "FAILED" in line]
    assert len(failure) == 1 and "apt-get install" in failure[0] and "test-host-1" in failure[0]


def test_a_hold_left_by_a_killed_run_is_removed_even_with_nothing_to_install(apt_world):
    env, calls, policy = apt_world
    policy.write_text(
        "#!/bin/sh\n# functions-runtime: no service starts while the install step runs\nexit 101\n"
    )
    snippet = "package_installed() { true; }; dpkg_was_interrupted() { false; }; install_runtime_packages"
    r = run_bash(snippet, env, script="install_runtime.sh")
    assert r.rc == 0 and "already installed, skipping" in r.stderr
    assert not policy.exists() and not calls.exists()


# ---------------------------------------------------------------- dedicated hosts updated in place

UP_TO_DATE = "missing_runtime_packages() { :; }; dpkg_was_interrupted() { return 1; }; "


def serving(env: dict, tmp: Path) -> dict:
    """A host whose endpoint policy is configured (it serves functions)."""
    config = tmp / "authz" / "endpoint-policy.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("{}")
    return {**env, "FR_AUTHZ_CONFIG": str(config), "FR_AUTHZ_DRAIN_FILE": str(tmp / "authz" / "draining")}


def test_a_serving_host_drains_before_its_runtime_is_updated(world):
    env, server, tmp = world
    env = serving(env, tmp)
    assert run_bash(STEPS, env, script="install_runtime.sh").rc == 0  # installed, up to date
    assert not (tmp / "authz" / "draining").exists()
    (tmp / "fr" / "state" / "nerdctl.version").write_text("2.3.0 deadbeef\n")  # the catalog moved on
    r = run_bash(UP_TO_DATE + "drain_before_update; install_nerdctl; print_result", env, script="install_runtime.sh")
    assert r.rc == 0, r.stderr
    assert json.loads(r.stdout)["drainedForUpdate"] is True
    assert (tmp / "authz" / "draining").read_text().startswith("updating: ")


def test_an_up_to_date_or_not_yet_serving_host_is_not_drained(world):
    env, server, tmp = world
    assert run_bash(STEPS, env, script="install_runtime.sh").rc == 0
    up_to_date = run_bash(UP_TO_DATE + "drain_before_update; print_result", serving(env, tmp), script="install_runtime.sh")
    assert up_to_date.rc == 0 and json.loads(up_to_date.stdout)["drainedForUpdate"] is False
    (tmp / "fr" / "state" / "nerdctl.version").write_text("2.3.0 deadbeef\n")
    fresh = {**env, "FR_AUTHZ_CONFIG": str(tmp / "none.json"), "FR_AUTHZ_DRAIN_FILE": str(tmp / "draining")}
    first_install = run_bash(UP_TO_DATE + "drain_before_update; print_result", fresh, script="install_runtime.sh")
    assert first_install.rc == 0 and json.loads(first_install.stdout)["drainedForUpdate"] is False
    assert not (tmp / "draining").exists()


def test_an_operators_drain_is_kept_through_an_update(world):
    env, server, tmp = world
    env = serving(env, tmp)
    assert run_bash(STEPS, env, script="install_runtime.sh").rc == 0
    (tmp / "authz" / "draining").write_text("draining: maintenance\n")
    (tmp / "fr" / "state" / "nerdctl.version").write_text("2.3.0 deadbeef\n")
    r = run_bash(UP_TO_DATE + "drain_before_update; print_result", env, script="install_runtime.sh")
    assert r.rc == 0 and json.loads(r.stdout)["drainedForUpdate"] is False
    assert (tmp / "authz" / "draining").read_text() == "draining: maintenance\n"
