"""The files every host receives: scripts, catalog, base OS files, contract.

Packed as a deterministic tar.gz (sorted names, fixed owner, mode and
mtime) so the same inputs give the same bytes, hence the same hash in the
remote commands' triggers and no spurious re-runs on the next `pulumi up`.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from components.base_os import render_base_files
from components.catalog import Catalog
from components.contract import CONTRACT_ENV, GVISOR_DIR, REMOTE_ROOT, render_contract_env

SCRIPTS_DIR = Path(__file__).resolve().parent.parent / "scripts"
AUTHZ_DIR = Path(__file__).resolve().parent.parent / "endpoint_authz"
# The endpoint's authorization plugin, as it lands under REMOTE_ROOT.
AUTHZ_FILES = tuple(f"endpoint_authz/{name}" for name in ("__init__.py", "rules.py", "plugin.py"))
VERIFY_DIR = Path(__file__).resolve().parent.parent / "host_verify"
# The verification's check table (scripts/verify_host.sh runs it), as it lands under REMOTE_ROOT.
VERIFY_FILES = tuple(
    f"host_verify/{name}"
    for name in (
        "__init__.py", "__main__.py", "canary.py", "checks.py", "clients.py", "dns.py", "engine.py", "failures.py",
        "inputs.py", "report.py",
    )
)
GC_DIR = Path(__file__).resolve().parent.parent / "host_gc"
# The host's garbage collector (scripts/configure_upkeep.sh's timer runs it): every module of host_gc/.
# Directories under REMOTE_ROOT the scripts own: the payload step replaces
# each payload directory whole, so the payload must never hold one of them.
HOST_OWNED_DIRS = ("state", GVISOR_DIR.removeprefix(f"{REMOTE_ROOT}/"))


@dataclass(frozen=True)
class Payload:
    files: dict[str, bytes]
    archive: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.archive).hexdigest()

    @property
    def archive_base64(self) -> str:
        return base64.b64encode(self.archive).decode()

    @property
    def top_level_dirs(self) -> tuple[str, ...]:
        """What the unpack step swaps into place on the host, one directory each."""
        return tuple(sorted({path.split("/", 1)[0] for path in self.files}))


def collect_files(
    catalog: Catalog, scripts_dir: Path | None = None, admin_sources: Sequence[str] = ()
) -> dict[str, bytes]:
    """Relative path under REMOTE_ROOT -> content."""
    files: dict[str, bytes] = {}
    for script in sorted((scripts_dir or SCRIPTS_DIR).glob("*.sh")):
        files[f"scripts/{script.name}"] = script.read_bytes()
    for name in AUTHZ_FILES:
        files[name] = (AUTHZ_DIR / name.split("/", 1)[1]).read_bytes()
    for name in VERIFY_FILES:
        files[name] = (VERIFY_DIR / name.split("/", 1)[1]).read_bytes()
    for module in sorted(GC_DIR.glob("*.py")):
        files[f"host_gc/{module.name}"] = module.read_bytes()
    files["catalog/artifacts.tsv"] = catalog.text.encode()
    base = render_base_files(admin_sources)
    files["base/packages.txt"] = base.packages.encode()
    files["base/modules.conf"] = base.modules.encode()
    files["base/sshd.conf"] = base.sshd.encode()
    files["base/apt-update-stamp.conf"] = base.apt_hook.encode()
    files[CONTRACT_ENV] = render_contract_env().encode()
    return files


def pack(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            data = files[name]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.endswith(".sh") else 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def build_payload(
    catalog: Catalog, scripts_dir: Path | None = None, admin_sources: Sequence[str] = ()
) -> Payload:
    """`admin_sources`: the stack's admin.sshSourceCidrs (the sshd drop-in exempts them)."""
    files = collect_files(catalog, scripts_dir, admin_sources)
    payload = Payload(files=files, archive=pack(files))
    owned = sorted(set(payload.top_level_dirs) & set(HOST_OWNED_DIRS))
    if owned:
        raise ValueError(f"the payload must not hold {', '.join(owned)}: the host's own directories under {REMOTE_ROOT}")
    return payload
