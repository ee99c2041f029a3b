"""The hostlab guest image: Debian 13 (trixie) built here, cached by recipe.

`ensure_guest_image(cache_dir)` returns a `GuestImage` (disk, kernel, initrd).
The first call builds it with `build_guest_image.sh` (debootstrap minbase from
the Debian archive this machine's apt already uses, then apt-get inside the
chroot); later calls with the same recipe reuse it.

Cache layout (default `~/.cache/functions-runtime/hostlab`, or
`$HOSTLAB_CACHE`)::

    images/<key>/disk.qcow2   ext4 root filesystem (no partition table)
    images/<key>/vmlinuz      guest kernel, for QEMU -kernel
    images/<key>/initrd.img   its initramfs, for QEMU -initrd
    images/<key>/manifest.json  kernel version, package versions, build date
    images/.lock              flock held while checking or building
    logs/build-<key>-<time>.log  one log per build attempt

The key is a SHA-256 of the recipe: the build script's text, the package
list, the suite and the disk size. Editing any of them builds a new image;
the archive moving on does not (delete `images/<key>` to refresh).

A build runs in `images/.tmp-<key>-<pid>` and is renamed into place only when
complete, so a killed build never leaves a half image under its key.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SUITE = "trixie"
# A base Debian 13 cloud image equivalent (what Hetzner's `debian-13` image
# brings): init, kernel, cloud-init, sshd, network by DHCP, and the usual
# base tools. Nothing the provisioning itself installs (docker.io,
# containerd, runsc, ...): the lab must prove that install for real.
PACKAGES = (
    "systemd-sysv",
    "udev",
    "dbus",
    "kmod",
    "linux-image-amd64",
    "initramfs-tools",
    "e2fsprogs",
    "zstd",
    "openssh-server",
    "cloud-init",
    "ifupdown",
    "isc-dhcp-client",
    "sudo",
    "locales",
    "busybox-static",
    "ca-certificates",
    "curl",
    "python3",
    "gnupg",
    "iproute2",
    "nftables",
    "netbase",
    "procps",
)
# Room for docker.io, containerd, runsc and images; the qcow2 stays sparse.
DISK_SIZE = "12G"
BUILD_SCRIPT = Path(__file__).with_name("build_guest_image.sh")
# debootstrap + apt in the chroot measured 134-170 s here; allow for a slow
# mirror before calling the build hung.
BUILD_TIMEOUT_S = 1800
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
APT_SOURCES = Path("/etc/apt")


@dataclass(frozen=True)
class GuestImage:
    """A built guest image in the cache. Never written to: boot an overlay."""

    key: str
    directory: Path
    disk: Path
    kernel: Path
    initrd: Path
    built_now: bool
    build_seconds: float

    @property
    def manifest(self) -> dict:
        return json.loads((self.directory / "manifest.json").read_text())


def default_cache_dir() -> Path:
    if os.environ.get("HOSTLAB_CACHE"):
        return Path(os.environ["HOSTLAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "functions-runtime" / "hostlab"


def recipe_key() -> str:
    """SHA-256 of everything that goes into the image."""
    h = hashlib.sha256()
    h.update(BUILD_SCRIPT.read_bytes())
    h.update(b"\0suite=" + SUITE.encode())
    h.update(b"\0packages=" + " ".join(PACKAGES).encode())
    h.update(b"\0disk=" + DISK_SIZE.encode())
    return h.hexdigest()[:16]


def _uris_from_sources(text: str) -> list[str]:
    """URIs from one-line (`deb URI suite ...`) or deb822 (`URIs:`) sources."""
    uris: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("deb "):
            parts = [p for p in line.split() if not p.startswith("[")]
            if len(parts) > 1:
                uris.append(parts[1])
        elif line.lower().startswith("uris:"):
            uris.extend(line.split(":", 1)[1].split())
    return uris


def debian_mirrors(apt_dir: Path = APT_SOURCES) -> tuple[str, str]:
    """(archive, security archive) URIs that this machine's apt already uses."""
    files = [apt_dir / "sources.list"]
    sources_d = apt_dir / "sources.list.d"
    if sources_d.is_dir():
        files += sorted(p for p in sources_d.iterdir() if p.suffix in (".list", ".sources"))
    uris: list[str] = []
    for path in files:
        if path.is_file():
            uris += _uris_from_sources(path.read_text(errors="replace"))
    mirror = next((u for u in uris if u.rstrip("/").endswith("/debian")), DEFAULT_MIRROR)
    security = next(
        (u for u in uris if u.rstrip("/").endswith("/debian-security")), DEFAULT_SECURITY_MIRROR
    )
    return mirror.rstrip("/"), security.rstrip("/")


def _image_at(key: str, directory: Path, built_now: bool, seconds: float) -> GuestImage:
    return GuestImage(
        key=key,
        directory=directory,
        disk=directory / "disk.qcow2",
        kernel=directory / "vmlinuz",
        initrd=directory / "initrd.img",
        built_now=built_now,
        build_seconds=seconds,
    )


def _is_complete(directory: Path) -> bool:
    return all(
        (directory / name).is_file()
        for name in ("disk.qcow2", "vmlinuz", "initrd.img", "manifest.json")
    )


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def ensure_guest_image(cache_dir: Path | None = None) -> GuestImage:
    """Return the cached image for the current recipe, building it if needed.

    Concurrent callers serialize on a lock; the second one finds the image
    the first one built.
    """
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    images = cache_dir / "images"
    logs = cache_dir / "logs"
    images.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    key = recipe_key()
    final = images / key

    with open(images / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_complete(final):
            return _image_at(key, final, built_now=False, seconds=0.0)
        # Holding the lock, any leftover temp dir is from a killed build.
        for stale in images.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():
            shutil.rmtree(final)

        work = images / f".tmp-{key}-{os.getpid()}"
        work.mkdir()
        log = logs / f"build-{key}-{time.strftime('%Y%m%dT%H%M%S')}.log"
        mirror, security = debian_mirrors()
        env = dict(
            os.environ,
            HOSTLAB_SUITE=SUITE,
            HOSTLAB_MIRROR=mirror,
            HOSTLAB_SECURITY_MIRROR=security,
            HOSTLAB_PACKAGES=" ".join(PACKAGES),
            HOSTLAB_DISK_SIZE=DISK_SIZE,
        )
        started = time.monotonic()
        try:
            with open(log, "w") as out:
                result = subprocess.run(
                    ["bash", str(BUILD_SCRIPT), str(work)],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=BUILD_TIMEOUT_S,
                    check=False,
                )
        except subprocess.TimeoutExpired:
            shutil.rmtree(work, ignore_errors=True)
            raise RuntimeError(
                f"guest image build did not finish within BUILD_TIMEOUT_S={BUILD_TIMEOUT_S}s; "
                f"log {log}:\n{_tail(log)}"
            ) from None
        if result.returncode != 0 or not _is_complete(work):
            shutil.rmtree(work, ignore_errors=True)
            raise RuntimeError(
                f"guest image build failed (exit {result.returncode}); expected disk.qcow2, "
                f"vmlinuz, initrd.img, manifest.json in {work}; log {log}:\n{_tail(log)}"
            )
        os.rename(work, final)
        return _image_at(key, final, built_now=True, seconds=time.monotonic() - started)
