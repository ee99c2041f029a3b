"""The hostlab's test bed: a stack configuration, an artifact mirror, a verify image.

Everything the replay needs besides the guest itself, all on the test
machine and reachable from the guest only through QEMU's 10.0.2.2 (the
test machine's loopback):

- `TestArtifacts`: Kata and nerdctl *test* archives with the real release
  layout (./opt/kata/bin/..., share/defaults/kata-containers/*.toml; a
  top-level `nerdctl`), a catalog pinning their digests (`sha256:<hex>`)
  under the real file names, and a tampered copy for the refusal test;
  `gvisor_row` pins a stand-in for gVisor's release (sha512) the same way. They prove
  download, hash check, unpack, markers and idempotence, not Kata: the
  test archive's `kata-runtime check` fails on purpose ("test archive, not
  Kata").
- `Mirror`: an HTTP server on 127.0.0.1 serving those files by name, with a
  request log (the "nothing downloaded twice" check reads it).
- `build_verify_image`: a `docker save` archive of Debian's busybox-static
  built here (apt-get download + dpkg-deb -x, then manifest.json, the
  config JSON and one layer), so no image is pulled from a registry; its
  image ID (sha256 of the config JSON) is the stack's `verify.image`.
- `hcloud_config` / `dedicated_config`: the stack settings the replay runs
  the program with. Every lab-specific value is a real program setting.
- The guest's surroundings (a metadata responder, a peer network namespace)
  and `private_copy` of the verify image for one session.

Test-only: none of it is imported by the lab tool (`tools/lab`, whose
`python -m tools.lab up|down|status` starts the same guest for `pulumi up -s
lab`, see `Pulumi.lab.yaml`).
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from components.catalog import load_catalog
from components.contract import GVISOR_ARCHIVE, GVISOR_SIDECAR_DIR, GVISOR_SIDECARS
from components.settings import PROJECT_ROOT
from tools.lab.image import default_cache_dir
from tools.lab.surroundings import NAME_PROBE, OUTSIDE_PROBE

# The versions, file names and URLs the test archives stand in for are the
# project's own pins (catalog/artifacts.tsv), never retyped here: the lab's
# catalog differs only in the digests of its test archives.
PINNED = load_catalog(PROJECT_ROOT / "catalog" / "artifacts.tsv")
KATA_VERSION = PINNED["kata"].version
NERDCTL_VERSION = PINNED["nerdctl"].version
KATA_FILE = PINNED["kata"].file_name
KATA_URL = PINNED["kata"].url
# gVisor's release archive: the mirror serves files by name, and the
# archive's name (gvisor-x86_64.tar.bz2) carries no version.
GVISOR_VERSION = PINNED[GVISOR_ARCHIVE].version
GVISOR_FILE = PINNED[GVISOR_ARCHIVE].file_name


def _next_patch(version: str) -> str:
    major, minor, patch = version.split(".")
    return f"{major}.{minor}.{int(patch) + 1}"


# The tampered-archive test bumps nerdctl to a version the mirror serves
# only in a tampered form.
NERDCTL_BUMP_VERSION = _next_patch(NERDCTL_VERSION)


def nerdctl_url(version: str) -> str:
    return PINNED["nerdctl"].url.replace(NERDCTL_VERSION, version)


def nerdctl_file(version: str) -> str:
    return nerdctl_url(version).rsplit("/", 1)[-1]


# The guest reaches the test machine's loopback as 10.0.2.2 (QEMU user net).
HOST_FROM_GUEST = "10.0.2.2"
GUEST_ADDRESS = "10.0.2.15"
STACK = "hostlab"
HOST_NAME = "lab-1"  # the program names hcloud hosts <group>-<n>

KATA_RUNTIME_SCRIPT = f"""#!/bin/sh
# hostlab test archive: the real layout, not Kata. Global flags come first,
# as Kata's own CLI takes them (kata-runtime --config FILE check).
while [ $# -gt 0 ]; do
  case "$1" in
    --config | --kata-config) shift; shift ;;
    --config=* | --kata-config=*) shift ;;
    *) break ;;
  esac
done
case "$1" in
  --version|version) echo "kata-runtime  : {KATA_VERSION} (hostlab test archive, not Kata)" ;;
  check) echo "kata-runtime check: this is the hostlab test archive, not Kata: it cannot start a VM" >&2; exit 1 ;;
  *) echo "kata-runtime: hostlab test archive, not Kata" >&2; exit 1 ;;
esac
"""
KATA_SHIM_SCRIPT = """#!/bin/sh
echo "containerd-shim-kata-v2: hostlab test archive, not Kata" >&2
exit 1
"""


def nerdctl_script(version: str) -> str:
    return f'#!/bin/sh\necho "nerdctl version {version} (hostlab test archive)"\n'


def _tar(members: dict[str, tuple[bytes, int]]) -> bytes:
    """A deterministic tar of files (name -> (data, mode)), parents implied."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        dirs: set[str] = set()
        for name in sorted(members):
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d in (".", "") or d in dirs:
                    continue
                dirs.add(d)
                info = tarfile.TarInfo(d + "/")
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                tar.addfile(info)
            data, mode = members[name]
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def kata_test_archive() -> bytes:
    defaults = "./opt/kata/share/defaults/kata-containers"
    members = {
        "./opt/kata/bin/containerd-shim-kata-v2": (KATA_SHIM_SCRIPT.encode(), 0o755),
        "./opt/kata/bin/kata-runtime": (KATA_RUNTIME_SCRIPT.encode(), 0o755),
        f"{defaults}/configuration-qemu.toml": (b"# hostlab test archive: qemu\n[hypervisor.qemu]\n", 0o644),
        f"{defaults}/configuration-clh.toml": (b"# hostlab test archive: clh\n[hypervisor.clh]\n", 0o644),
    }
    return subprocess.run(
        ["zstd", "-q", "-c", "--no-check"], input=_tar(members), capture_output=True, check=True
    ).stdout


def nerdctl_test_archive(version: str) -> bytes:
    members = {
        "nerdctl": (nerdctl_script(version).encode(), 0o755),
        "containerd-rootless.sh": (b"#!/bin/sh\nexit 0\n", 0o755),
    }
    return gzip.compress(_tar(members), mtime=0)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def catalog_digest(data: bytes, algorithm: str = "sha256") -> str:
    """The catalog's digest column, `<algorithm>:<hex>` (gVisor's rows are sha512)."""
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def catalog_text(rows: list[tuple[str, str, str, str]]) -> str:
    """rows: (name, version, digest as catalog_digest gives it, url)."""
    lines = [
        "# hostlab test catalog: test archives with the real layout, served by the lab's mirror.",
        "name\tversion\tdigest\turl",
    ] + ["\t".join(r) for r in rows]
    return "\n".join(lines) + "\n"


def gvisor_row(data: bytes) -> tuple[str, str, str, str]:
    """A catalog row pinning `data` as gVisor's release archive: the
    release's version and URL, a sha256 digest as its SHA256SUMS gives. The
    stand-in served under GVISOR_FILE in the mirror's directory is then
    what the install step fetches."""
    return (GVISOR_ARCHIVE, GVISOR_VERSION, catalog_digest(data, "sha256"), PINNED[GVISOR_ARCHIVE].url)


@dataclass
class TestArtifacts:
    """Files the mirror serves and the catalogs that pin them."""

    __test__ = False  # not a pytest test class

    directory: Path  # served by the mirror
    catalog: Path  # the lab catalog (kata + nerdctl 2.3.5)
    bumped_catalog: Path  # nerdctl 2.3.6, whose served file is tampered
    hashes: dict[str, str] = field(default_factory=dict)  # file name -> sha256 served


# ------------------------------------------------------------------ the gVisor stand-in
# No registry this machine reaches ships the pinned gVisor release. The
# stand-in is Debian 13's own runsc (from Debian's archive, checked against
# the archive's index) with one path changed: the 2024-07 build decides "am I
# in the root network namespace?" by whether /proc/sys/net/core/rmem_default
# exists, which every namespace has since Linux 6.11 (google/gvisor#10704),
# so it cannot use its own network stack there. The stand-in probes
# /proc/sys/net/core/message_cost, a path of the same length that only the
# root namespace has (test_gvisor_stand_in_premise_holds_on_the_guests_kernel
# checks that on the guest's kernel). What it proves: the program installs a
# runsc from the mirror by the catalog's sha512, and a runsc whose
# root-namespace check works gives containers gVisor's own network stack,
# which configure, verify and the endpoint report. What it does not prove:
# the release's own code. The shim stand-in is no shim: Docker runs runsc
# through containerd's runc shim; only containerd-direct clients use it.
# They are served as the release is, one archive (runsc and the shim at its
# top, the sidecars in gvisor-bin/), so install unpacks it whole into its
# versioned directory and verify finds the sidecars there. The sidecars are
# stand-ins too, and Debian's 2024 runsc never runs them: verify's check
# that sandboxes run the sentry is skipped on it, saying so; what the lab
# proves of the sidecars is their install, not their use.
RUNSC_PROBED_PATH = "/proc/sys/net/core/rmem_default"
RUNSC_STAND_IN_PATH = "/proc/sys/net/core/message_cost"
RUNSC_SHIM_STAND_IN = b"#!/bin/sh\necho 'the hostlab stand-in for containerd-shim-runsc-v1: not a shim' >&2\nexit 1\n"


def sidecar_stand_in(name: str) -> bytes:
    return f"#!/bin/sh\necho 'the hostlab stand-in for gVisor's {name}: not gVisor' >&2\nexit 1\n".encode()


def gvisor_test_archive(cache_dir: Path) -> bytes:
    """The stand-in release archive, in the release's layout (bzip2, as
    gvisor-x86_64.tar.bz2 is)."""
    members = {"runsc": runsc_stand_in(cache_dir), "containerd-shim-runsc-v1": RUNSC_SHIM_STAND_IN}
    members |= {f"{GVISOR_SIDECAR_DIR}/{name}": sidecar_stand_in(name) for name in GVISOR_SIDECARS}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:bz2") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o755, 0
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()
DEBIAN_ARCHIVE = "http://deb.debian.org/debian"


def _deb_member(deb: bytes, prefix: str) -> bytes:
    """A member of a .deb (an ar archive) whose name starts with `prefix`."""
    assert deb[:8] == b"!<arch>\n", "not a .deb"
    pos = 8
    while pos < len(deb):
        header = deb[pos : pos + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
        if name.startswith(prefix):
            return deb[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size % 2)
    raise AssertionError(f"no {prefix}* in the .deb")


def debian_runsc(cache_dir: Path) -> bytes:
    """Debian 13's runsc binary, fetched once into the hostlab cache."""
    cached = cache_dir / "debian-runsc"
    if cached.exists():
        return cached.read_bytes()
    import lzma
    import urllib.request

    index = lzma.decompress(
        urllib.request.urlopen(f"{DEBIAN_ARCHIVE}/dists/trixie/main/binary-amd64/Packages.xz", timeout=120).read()
    ).decode()
    stanza = next(s for s in index.split("\n\n") if s.startswith("Package: runsc\n"))
    fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line)
    deb = urllib.request.urlopen(f"{DEBIAN_ARCHIVE}/{fields['Filename']}", timeout=300).read()
    assert sha256(deb) == fields["SHA256"], f"{fields['Filename']}: not the archive's sha256"
    data = _deb_member(deb, "data.tar")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.extractfile("./usr/bin/runsc")
        assert member is not None
        binary = member.read()
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(binary)
    return binary


def runsc_stand_in(cache_dir: Path) -> bytes:
    binary = debian_runsc(cache_dir)
    probed, stand_in = RUNSC_PROBED_PATH.encode(), RUNSC_STAND_IN_PATH.encode()
    assert len(probed) == len(stand_in) and binary.count(probed) >= 1, "Debian's runsc no longer probes rmem_default"
    patched = binary.replace(probed, stand_in)
    assert probed not in patched and len(patched) == len(binary)
    return patched


def make_test_artifacts(root: Path, cache_dir: Path | None = None) -> TestArtifacts:
    """The lab's artifacts; with `cache_dir`, the gVisor stand-in too (else
    the stacks must run Debian's runsc)."""
    www = root / "mirror"
    www.mkdir(parents=True, exist_ok=True)
    kata = kata_test_archive()
    nerdctl = nerdctl_test_archive(NERDCTL_VERSION)
    bumped = nerdctl_test_archive(NERDCTL_BUMP_VERSION)
    # The mirror serves the bumped archive with one byte changed.
    tampered = bytearray(bumped)
    tampered[len(tampered) // 2] ^= 0xFF
    files = {
        KATA_FILE: kata,
        nerdctl_file(NERDCTL_VERSION): nerdctl,
        nerdctl_file(NERDCTL_BUMP_VERSION): bytes(tampered),
    }
    gvisor_rows = []
    if cache_dir is not None:
        archive = gvisor_test_archive(cache_dir)
        files[GVISOR_FILE] = archive
        gvisor_rows.append(gvisor_row(archive))
    for name, data in files.items():
        (www / name).write_bytes(data)
    kata_row = ("kata", KATA_VERSION, catalog_digest(kata), KATA_URL)
    catalog = root / "catalog" / "artifacts.tsv"
    catalog.parent.mkdir(parents=True, exist_ok=True)
    catalog.write_text(
        catalog_text(
            [kata_row, ("nerdctl", NERDCTL_VERSION, catalog_digest(nerdctl), nerdctl_url(NERDCTL_VERSION)), *gvisor_rows]
        )
    )
    bumped_catalog = root / "catalog" / "artifacts-bumped.tsv"
    bumped_catalog.write_text(
        catalog_text(
            [
                kata_row,
                ("nerdctl", NERDCTL_BUMP_VERSION, catalog_digest(bumped), nerdctl_url(NERDCTL_BUMP_VERSION)),
                *gvisor_rows,
            ]
        )
    )
    return TestArtifacts(www, catalog, bumped_catalog, {n: sha256(d) for n, d in files.items()})


# ------------------------------------------------------------------ mirror


class Mirror:
    """A static file server on 127.0.0.1 with an in-memory request log."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.requests: list[tuple[str, int]] = []
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(mirror.directory), **kwargs)

            def log_request(self, code="-", size="-"):
                mirror.requests.append((self.path, int(code) if str(code).isdigit() else 0))

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url_from_guest(self) -> str:
        return f"http://{HOST_FROM_GUEST}:{self.port}"

    def downloads(self, name: str) -> int:
        return sum(1 for path, code in self.requests if path.lstrip("/") == name and code == 200)

    def __enter__(self) -> Mirror:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


# ------------------------------------------------------------------ verify image

# What verify_host.sh runs in the image: probes, and the limit checks' sleep and awk.
BUSYBOX_APPLETS = ("sh", "uname", "wget", "nc", "true", "sleep", "awk")
VERIFY_IMAGE_TAG = "functions-runtime/verify:hostlab"
VERIFY_IMAGE_TIMEOUT_S = 300  # apt-get download of one .deb


@dataclass(frozen=True)
class VerifyImage:
    archive: Path
    image_id: str  # sha256:<sha256 of the config JSON>
    busybox_version: str


def build_verify_image(cache_dir: Path | None = None) -> VerifyImage:
    """A `docker save` archive of Debian's busybox-static, cached by .deb."""
    cache = (cache_dir or default_cache_dir()) / "verify-image"
    cache.mkdir(parents=True, exist_ok=True)
    done = cache / "image.json"
    if done.exists():
        meta = json.loads(done.read_text())
        archive = cache / "image.tar"
        if (
            archive.exists()
            and sha256(archive.read_bytes()) == meta["archiveSha256"]
            and meta.get("applets") == list(BUSYBOX_APPLETS)
        ):
            return VerifyImage(archive, meta["imageId"], meta["busyboxVersion"])
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        work = Path(tmp)
        subprocess.run(
            ["apt-get", "download", "busybox-static"],
            cwd=work, check=True, capture_output=True, timeout=VERIFY_IMAGE_TIMEOUT_S,
        )
        deb = next(work.glob("busybox-static_*.deb"))
        version = deb.name.split("_")[1]
        subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "x")], check=True)
        busybox = (work / "x" / "bin" / "busybox").read_bytes()
        members = {"bin/busybox": (busybox, 0o755)}
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
            info = tarfile.TarInfo("bin/")
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
            data, mode = members["bin/busybox"]
            info = tarfile.TarInfo("bin/busybox")
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
            for applet in BUSYBOX_APPLETS:
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname, link.mode = tarfile.SYMTYPE, "busybox", 0o777
                tar.addfile(link)
        layer = raw.getvalue()
        diff_id = "sha256:" + sha256(layer)
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "created": "1970-01-01T00:00:00Z",
                "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                "history": [{"created": "1970-01-01T00:00:00Z", "created_by": f"busybox-static {version}"}],
            },
            sort_keys=True,
        ).encode()
        image_hex = sha256(config)
        manifest = json.dumps(
            [{"Config": f"{image_hex}.json", "RepoTags": [VERIFY_IMAGE_TAG], "Layers": [f"{diff_id[7:]}/layer.tar"]}]
        ).encode()
        archive_bytes = _tar(
            {
                "manifest.json": (manifest, 0o644),
                f"{image_hex}.json": (config, 0o644),
                f"{diff_id[7:]}/layer.tar": (layer, 0o644),
            }
        )
        archive = cache / "image.tar"
        tmp_archive = cache / f".image.tar.{os.getpid()}"
        tmp_archive.write_bytes(archive_bytes)
        tmp_archive.replace(archive)
        meta = {
            "imageId": f"sha256:{image_hex}",
            "archiveSha256": sha256(archive_bytes),
            "applets": list(BUSYBOX_APPLETS),
            "busyboxVersion": version,
        }
        done.write_text(json.dumps(meta, indent=2) + "\n")
        return VerifyImage(archive, meta["imageId"], version)


def private_copy(image: VerifyImage, directory: Path) -> VerifyImage:
    """The archive copied where only this run writes, its image ID read from the copy.

    The cache is shared: another checkout's tests may rebuild the archive
    while a replay still has to upload it (seen: a `verify-image` step that
    copied a newer archive than the ID the stack was configured with).
    """
    directory.mkdir(parents=True, exist_ok=True)
    copy = directory / "verify-image.tar"
    shutil.copyfile(image.archive, copy)
    with tarfile.open(copy) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        config = tar.extractfile(manifest[0]["Config"]).read()  # type: ignore[union-attr]
    return VerifyImage(copy, f"sha256:{sha256(config)}", image.busybox_version)


# ------------------------------------------------------------------ stack config


def _common(mirror_url: str, catalog: Path, image: VerifyImage, isolation: str) -> dict:
    return {
        "functions-runtime:isolation": isolation,
        "functions-runtime:network": {"ipRange": "10.0.0.0/16", "subnet": "10.0.2.0/24", "zone": "eu-central"},
        # QEMU's gateway is the lab's operator: SSH arrives from 10.0.2.2.
        "functions-runtime:admin": {"sshKeys": [], "sshSourceCidrs": [f"{HOST_FROM_GUEST}/32"]},
        "functions-runtime:endpoint": {"port": 2376, "allowedCidrs": ["10.0.2.0/24"]},
        "functions-runtime:artifacts": {
            "mirror": mirror_url,
            "catalog": str(catalog),
            # Outside the project: the stack names them as its local artifacts.
            "localDirs": [str(catalog.parent), str(image.archive.parent)],
        },
        "functions-runtime:verify": {
            "image": image.image_id,
            "imageArchive": str(image.archive),
            "coldStartRuns": 3,
            # The lab's internet (tools/lab/surroundings.py): the positive control for egress.
            "outsideProbe": OUTSIDE_PROBE,
            # The lab's name server (the guest's resolver): the name lookup's positive control answers.
            "nameProbe": NAME_PROBE,
            # nerdctl is a test archive here (nerdctl_script): verify runs ctr only.
            "nerdctl": False,
        },
        # The canary's timer stays quiet (an hour) so it never runs beside
        # another test; its tests start it or set a short interval themselves.
        "functions-runtime:canary": {"intervalSeconds": 3600},
        # The lab's operator scrapes from QEMU's gateway (a forward to 9100).
        "functions-runtime:metrics": {"allowedCidrs": [f"{HOST_FROM_GUEST}/32"]},
    }


def hcloud_config(mirror_url: str, catalog: Path, image: VerifyImage) -> dict:
    """A Cloud-shaped stack: the program renders real user-data for the guest."""
    return {
        **_common(mirror_url, catalog, image, "sandbox"),
        "functions-runtime:hosts": [
            {"name": "lab", "source": "hcloud", "count": 1, "serverType": "cx23", "location": "fsn1"}
        ],
    }


def dedicated_config(
    mirror_url: str, catalog: Path, image: VerifyImage, isolation: str, ssh_port: int, host_key: str,
    private_key: str,
) -> dict:
    """The same guest adopted as a dedicated host (as Pulumi.lab.yaml does)."""
    return {
        **_common(mirror_url, catalog, image, isolation),
        "functions-runtime:hosts": [
            {
                "name": "lab",
                "source": "dedicated",
                "sshPort": ssh_port,
                "sshdPort": 22,
                "addresses": [
                    {"name": HOST_NAME, "address": "127.0.0.1", "privateAddress": GUEST_ADDRESS, "hostKey": host_key}
                ],
            }
        ],
        "functions-runtime:dedicatedSshKey": private_key,
    }


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True)


# ------------------------------------------------------------------ guest-side lab fixtures
# These build the lab's surroundings inside the guest (what Hetzner's network
# provides around a real server); they never touch what the program manages.

# A metadata service at 169.254.169.254:80 in its own network namespace
# behind a veth, as on Hetzner: the host (root) reaches it through a route,
# container traffic to it is *forwarded* (so the host filter's forward chain
# is what stops it, exactly as on a real server).
METADATA_RESPONDER = r"""set -eu
if ! ip netns list | grep -qw fr-metadata; then
  ip netns add fr-metadata
  ip link add fr-md0 type veth peer name fr-md1
  ip link set fr-md1 netns fr-metadata
  ip addr add 169.254.169.253 peer 169.254.169.254/32 dev fr-md0
  ip link set fr-md0 up
  ip netns exec fr-metadata ip link set lo up
  ip netns exec fr-metadata ip addr add 169.254.169.254 peer 169.254.169.253/32 dev fr-md1
  ip netns exec fr-metadata ip link set fr-md1 up
  ip netns exec fr-metadata ip route add default via 169.254.169.253
fi
mkdir -p /var/lib/hostlab-metadata/hetzner/v1
echo "hostlab metadata service" > /var/lib/hostlab-metadata/hetzner/v1/metadata
if ! ip netns exec fr-metadata ss -ltn | grep -q '169.254.169.254:80 '; then
  ip netns exec fr-metadata setsid python3 -m http.server 80 --bind 169.254.169.254 \
    --directory /var/lib/hostlab-metadata </dev/null >/dev/null 2>&1 &
fi
i=0
until curl -fsS --max-time 3 http://169.254.169.254/hetzner/v1/metadata >/dev/null 2>&1; do
  i=$((i+1)); [ "$i" -lt 60 ] || { echo "metadata responder did not answer" >&2; exit 1; }
  sleep 1
done
echo ready
"""

# Another machine on the network, as a namespace with two source addresses:
# 10.0.2.77 (inside endpoint.allowedCidrs 10.0.2.0/24, not an admin source)
# and 10.0.3.77 (outside both). Routes on both sides are /32, so nothing
# else in the guest changes.
PEER_NAMESPACE = r"""set -eu
if ! ip netns list | grep -qw fr-peer; then
  ip netns add fr-peer
  ip link add fr-p0 type veth peer name fr-p1
  ip link set fr-p1 netns fr-peer
  ip link set fr-p0 up
  ip netns exec fr-peer ip link set lo up
  ip netns exec fr-peer ip addr add 10.0.2.77/32 dev fr-p1
  ip netns exec fr-peer ip addr add 10.0.3.77/32 dev fr-p1
  ip netns exec fr-peer ip link set fr-p1 up
  ip netns exec fr-peer ip route add 10.0.2.15/32 dev fr-p1
  ip route add 10.0.2.77/32 dev fr-p0
  ip route add 10.0.3.77/32 dev fr-p0
fi
echo ready
"""
PEER_ALLOWED_SOURCE = "10.0.2.77"
PEER_OTHER_SOURCE = "10.0.3.77"
PROBE_TIMEOUT_S = 4


def peer_probe_command(source: str, port: int, target: str = GUEST_ADDRESS) -> str:
    """From the peer namespace, bound to `source`: prints open|refused|dropped."""
    script = (
        "import socket,sys\n"
        "s=socket.socket(); s.settimeout(float(sys.argv[4])); s.bind((sys.argv[1],0))\n"
        "try:\n s.connect((sys.argv[2],int(sys.argv[3]))); print('open')\n"
        "except ConnectionRefusedError: print('refused')\n"
        "except (TimeoutError, socket.timeout): print('dropped')\n"
    )
    return (
        f"ip netns exec fr-peer python3 -c {shlex_quote(script)} "
        f"{source} {target} {port} {PROBE_TIMEOUT_S}"
    )


def shlex_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)
