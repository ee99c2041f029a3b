"""The pinned artifact catalog, shared with the host scripts.

The same tab-separated file is uploaded to every host and read there by
`scripts/lib.sh`, so a version bump is one edit that both sides see.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

# The artifacts the scripts download from release pages; everything else
# comes from Debian 13's archive with its own signatures.
REQUIRED_ARTIFACTS = ("kata", "nerdctl")
COLUMNS = ("name", "version", "sha256", "url")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Architecture names as release file names spell them (kata-static-...-amd64).
ARCHITECTURES = ("amd64", "arm64")


class CatalogError(Exception):
    """The catalog file is missing or a row is malformed."""


@dataclass(frozen=True)
class Artifact:
    name: str
    version: str
    sha256: str
    url: str

    @property
    def file_name(self) -> str:
        return Path(urlparse(self.url).path).name


@dataclass(frozen=True)
class Catalog:
    path: Path
    artifacts: dict[str, Artifact]
    text: str

    def __getitem__(self, name: str) -> Artifact:
        return self.artifacts[name]

    @property
    def architectures(self) -> frozenset[str]:
        """The CPU architectures every artifact has a file for, from the file names."""
        found = [{a for a in ARCHITECTURES if a in art.file_name} for art in self.artifacts.values()]
        return frozenset.intersection(*map(frozenset, found)) if found else frozenset()


def parse_catalog(text: str, source: str = "catalog") -> dict[str, Artifact]:
    artifacts: dict[str, Artifact] = {}
    problems: list[str] = []
    header_seen = False
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if not header_seen:
            if tuple(fields) != COLUMNS:
                problems.append(f"{source}:{lineno}: expected the header {' '.join(COLUMNS)}")
            header_seen = True
            continue
        if len(fields) != len(COLUMNS):
            problems.append(f"{source}:{lineno}: expected {len(COLUMNS)} tab-separated fields")
            continue
        art = Artifact(*fields)
        if not SHA256.match(art.sha256):
            problems.append(f"{source}:{lineno}: {art.name}: sha256 must be 64 lowercase hex digits")
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
