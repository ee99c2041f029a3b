"""Local files a stack names: where they may come from, and what they must be.

The program reads the artifact catalog and pushes the verify image archive
to every host, so a setting naming a file names what is trusted (the
catalog's hashes) or what leaves this machine (the archive). Such files
come from the project, or from directories the stack names explicitly for
local artifacts (`artifacts.localDirs`); never from system or home roots.
Each check returns None when fine, else one sentence saying what to do.
"""

from __future__ import annotations

import hashlib
import json
import pwd
import stat
import tarfile
from collections.abc import Sequence
from pathlib import Path

# Never a local-artifacts directory, nor anything under one: kernel and
# device views (/proc/self/environ is the deploying process's secrets),
# system configuration, boot files, runtime state.
SYSTEM_ROOTS = tuple(Path(p) for p in ("/proc", "/sys", "/dev", "/etc", "/run", "/boot"))
# Directories that hold credentials wherever they are (a home's .ssh, the
# Pulumi CLI's access token, cloud and registry logins).
CREDENTIAL_DIRS = frozenset({".ssh", ".gnupg", ".aws", ".kube", ".docker", ".pulumi", ".password-store"})
# A verify image is a small pinned image (Debian's busybox-static is about
# 2 MB); the archive is copied to every host each time it changes.
MAX_ARCHIVE_BYTES = 512 * 1024 * 1024
MAX_MANIFEST_BYTES = 1024 * 1024


def home_roots() -> set[Path]:
    """Every account's home directory on this machine, and the caller's."""
    homes = {Path.home()}
    try:
        homes |= {Path(entry.pw_dir) for entry in pwd.getpwall() if entry.pw_dir.startswith("/")}
    except OSError:
        pass
    resolved = set()
    for home in homes:
        try:
            resolved.add(home.resolve())
        except (OSError, RuntimeError):
            resolved.add(home)
    return resolved


def resolve(path_text: str, base: Path) -> Path | None:
    """`path_text` made absolute (relative to `base`, `~` expanded), symlinks followed."""
    try:
        path = Path(path_text).expanduser()
        return (path if path.is_absolute() else base / path).resolve()
    except (OSError, RuntimeError, ValueError):
        return None


def local_dir_problem(path_text: str) -> tuple[Path | None, str | None]:
    """A local-artifacts directory, resolved, or what is wrong with it."""
    if not Path(path_text).expanduser().is_absolute():
        return None, f"{path_text!r} must be an absolute path (a directory outside the project)"
    path = resolve(path_text, Path("/"))
    if path is None:
        return None, f"{path_text!r} is not a usable path"
    for root in SYSTEM_ROOTS:
        if path == root or root in path.parents:
            return None, (
                f"{path} is under {root}, which holds system state (and, in /proc, the deploying "
                "process's own secrets); name a directory of your own, e.g. ~/.cache/functions-runtime"
            )
    held = CREDENTIAL_DIRS.intersection(path.parts)
    if held:
        return None, (
            f"{path} is in a {sorted(held)[0]} directory, which holds credentials; name a directory "
            "that holds only artifacts"
        )
    homes = home_roots()
    if path in homes or any(path in home.parents for home in homes):
        return None, (
            f"{path} is a home directory's root (or holds one), with its keys and credentials; "
            "name a directory inside it that holds only artifacts"
        )
    if len(path.parts) <= 2:
        return None, f"{path} is too broad (the root or a top-level directory); name the directory that holds the artifacts"
    try:
        if not path.is_dir():
            return None, f"{path} is not an existing directory"
    except OSError as err:
        return None, f"{path} cannot be read: {err.strerror}"
    return path, None


def contained(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def regular_file_problem(path: Path) -> str | None:
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        return f"no such file: {path}"
    if not stat.S_ISREG(mode):
        return f"{path} is not a regular file"
    return None


def docker_archive_problem(path: Path, image_id: str | None) -> str | None:
    """What keeps `path` from being a `docker save` archive (holding `image_id`, if given)."""
    problem = regular_file_problem(path)
    if problem:
        return problem
    size = path.stat().st_size
    if size > MAX_ARCHIVE_BYTES:
        return (
            f"{path} is {size // (1024 * 1024)} MiB, over the {MAX_ARCHIVE_BYTES // (1024 * 1024)} MiB "
            "limit for a verify image (it is copied to every host); use a small image such as busybox"
        )
    not_archive = f"{path} is not a `docker save` archive (a tar with manifest.json); create one with `docker save IMAGE -o FILE`"
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
            manifest_member = members.get("manifest.json")
            if manifest_member is None or not manifest_member.isfile() or manifest_member.size > MAX_MANIFEST_BYTES:
                return not_archive
            manifest = json.loads(_read(tar, manifest_member))
            if not isinstance(manifest, list) or not manifest:
                return not_archive
            configs = []
            for entry in manifest:
                if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
                    return not_archive
                layers = entry.get("Layers")
                if not isinstance(layers, list) or not all(isinstance(x, str) and x in members for x in layers):
                    return f"{path}: manifest.json names layers the archive does not hold; save the image again"
                config = members.get(entry["Config"])
                if config is None or not config.isfile() or config.size > MAX_MANIFEST_BYTES:
                    return f"{path}: manifest.json names a config the archive does not hold; save the image again"
                configs.append(config)
            if image_id is not None:
                ids = {"sha256:" + hashlib.sha256(_read(tar, c)).hexdigest() for c in configs}
                if image_id not in ids:
                    return (
                        f"{path} does not hold the image {image_id} named by verify.image (it holds "
                        f"{', '.join(sorted(ids))}); set verify.image to the archive's image ID"
                    )
    except Exception:  # any failure to read it means it is not an archive
        return not_archive
    return None


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    if handle is None:
        raise ValueError(member.name)
    with handle:
        return handle.read()
