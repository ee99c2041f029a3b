"""The pinned artifact catalog, shared with the host scripts.

The same tab-separated file is uploaded to every host and read there by
`scripts/lib.sh`, so a version bump is one edit that both sides see.

Each row's digest says its algorithm, `sha256:<hex>` or `sha512:<hex>`
(`DIGEST_HEX_LENGTHS` in the contract): Google publishes only sha512 for
gVisor's release files, Kata and nerdctl are pinned by sha256.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from components.contract import DIGEST_HEX_LENGTHS

# The artifacts the scripts download from release pages; everything else
# comes from Debian 13's archive with its own signatures.
REQUIRED_ARTIFACTS = ("kata", "nerdctl")
COLUMNS = ("name", "version", "digest", "url")
# The header catalogs had before digests said their algorithm.
OLD_COLUMNS = ("name", "version", "sha256", "url")
DIGEST = re.compile(r"^([a-z0-9]+):([0-9a-f]*)$")
# A version names a directory on the host (gVisor's <dir>/<version>/runsc):
# no slashes, no dot-dot, no spaces.
VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+~_-]{0,63}$")
# Architecture names as release files spell them, in file names
# (kata-static-...-amd64) or as a path segment (gvisor/.../x86_64/runsc).
ARCHITECTURES = {"amd64": ("amd64", "x86_64"), "arm64": ("arm64", "aarch64")}


class CatalogError(Exception):
    """The catalog file is missing or a row is malformed."""


def digest_problem(digest: str) -> str | None:
    """What is wrong with a catalog digest (`<algorithm>:<hex>`), or None."""
    match = DIGEST.match(digest)
    accepted = ", ".join(f"{a}:<{n} hex digits>" for a, n in DIGEST_HEX_LENGTHS.items())
    if match is None:
        shown = digest if len(digest) <= 24 else digest[:20] + "..."
        return f"digest {shown!r} is not <algorithm>:<lowercase hex>; expected {accepted}"
    algorithm, hexdigest = match.groups()
    if algorithm not in DIGEST_HEX_LENGTHS:
        return f"digest algorithm {algorithm!r} is not supported; expected {accepted}"
    if len(hexdigest) != DIGEST_HEX_LENGTHS[algorithm]:
        return (
            f"{algorithm} digest has {len(hexdigest)} hex digits, expected {DIGEST_HEX_LENGTHS[algorithm]} "
            "(a digest of another algorithm, or cut short?)"
        )
    return None


@dataclass(frozen=True)
class Artifact:
    name: str
    version: str
    # `<algorithm>:<hex>`, checked by parse_catalog.
    digest: str
    url: str

    @property
    def algorithm(self) -> str:
        return self.digest.split(":", 1)[0]

    @property
    def hexdigest(self) -> str:
        return self.digest.split(":", 1)[1]

    @property
    def file_name(self) -> str:
        return Path(urlparse(self.url).path).name

    @property
    def architectures(self) -> frozenset[str]:
        """The CPU architectures named in the URL's path (file name or a directory)."""
        path = urlparse(self.url).path.lower()
        return frozenset(
            arch
            for arch, spellings in ARCHITECTURES.items()
            if any(re.search(rf"(?<![a-z0-9]){re.escape(s)}(?![a-z0-9])", path) for s in spellings)
        )


@dataclass(frozen=True)
class Catalog:
    path: Path
    artifacts: dict[str, Artifact]
    text: str

    def __getitem__(self, name: str) -> Artifact:
        return self.artifacts[name]

    def __contains__(self, name: object) -> bool:
        return name in self.artifacts

    @property
    def architectures(self) -> frozenset[str]:
        """The CPU architectures every artifact has a file for, from the URLs."""
        found = [art.architectures for art in self.artifacts.values()]
        return frozenset.intersection(*found) if found else frozenset()


def parse_catalog(text: str, source: str = "catalog") -> dict[str, Artifact]:
    artifacts: dict[str, Artifact] = {}
    problems: list[str] = []
    header_seen = False
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if not header_seen:
            if tuple(fields) == OLD_COLUMNS:
                problems.append(
                    f"{source}:{lineno}: the sha256 column is now 'digest' and says its algorithm: rename "
                    f"the column and write each digest as sha256:<hex> (docs/upgrading.md)"
                )
            elif tuple(fields) != COLUMNS:
                problems.append(f"{source}:{lineno}: expected the header {' '.join(COLUMNS)}")
            header_seen = True
            continue
        if len(fields) != len(COLUMNS):
            problems.append(f"{source}:{lineno}: expected {len(COLUMNS)} tab-separated fields")
            continue
        art = Artifact(*fields)
        if not VERSION.match(art.version) or ".." in art.version:
            problems.append(
                f"{source}:{lineno}: {art.name}: version {art.version[:40]!r} must be letters, digits and . + ~ _ - "
                "(it names a directory on the host)"
            )
        problem = digest_problem(art.digest)
        if problem:
            problems.append(f"{source}:{lineno}: {art.name}: {problem}")
        if urlparse(art.url).scheme != "https" or not art.file_name:
            problems.append(f"{source}:{lineno}: {art.name}: url must be an https URL to a file")
        if art.name in artifacts:
            problems.append(f"{source}:{lineno}: {art.name} is listed twice")
        artifacts[art.name] = art
    missing = [n for n in REQUIRED_ARTIFACTS if n not in artifacts]
    if missing:
        problems.append(f"{source}: missing artifact(s) {', '.join(missing)}")
    if problems:
        raise CatalogError("; ".join(problems))
    return artifacts


def load_catalog(path: Path) -> Catalog:
    try:
        text = path.read_text()
    except OSError as err:
        raise CatalogError(f"cannot read the artifact catalog {path}: {err.strerror}") from err
    return Catalog(path=path, artifacts=parse_catalog(text, str(path)), text=text)
