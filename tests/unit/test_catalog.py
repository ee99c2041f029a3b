"""The catalog's digest column: `<algorithm>:<hex>`, sha256 or sha512.

Pure parsing (components/catalog.py): both algorithms are read, an unknown
algorithm, a hex of the wrong length and the old bare-hex column are refused
with the file, line and row named; architectures come from the URL's path
(a file name like Kata's, or a directory like gVisor's x86_64/). What the
host scripts do with the same column is proven in tests/scripts/test_lib.py.
"""

from __future__ import annotations

import re

import pytest

from components.catalog import CatalogError, digest_problem, parse_catalog
from components.contract import DIGEST_HEX_LENGTHS

HEADER = "name\tversion\tdigest\turl\n"
KATA = "kata\t3.32.0\tsha256:" + "a" * 64 + "\thttps://example.invalid/3.32.0/kata-static-3.32.0-amd64.tar.zst\n"
NERDCTL = "nerdctl\t2.3.5\tsha256:" + "b" * 64 + "\thttps://example.invalid/nerdctl-2.3.5-linux-amd64.tar.gz\n"
RUNSC = "runsc\t20260817.0\tsha512:" + "c" * 128 + "\thttps://example.invalid/release/20260817.0/x86_64/runsc\n"


def test_both_algorithms_are_read_with_their_hex():
    artifacts = parse_catalog(HEADER + KATA + NERDCTL + RUNSC)
    assert (artifacts["kata"].algorithm, artifacts["kata"].hexdigest) == ("sha256", "a" * 64)
    assert (artifacts["runsc"].algorithm, artifacts["runsc"].hexdigest) == ("sha512", "c" * 128)
    assert artifacts["runsc"].file_name == "runsc"


@pytest.mark.parametrize(
    ("digest", "message"),
    [
        ("md5:" + "d" * 32, "digest algorithm 'md5' is not supported; expected sha256:<64 hex digits>, sha512:<128 hex digits>"),
        ("sha1:" + "d" * 40, "digest algorithm 'sha1' is not supported"),
        ("sha512:" + "d" * 64, "sha512 digest has 64 hex digits, expected 128"),
        ("sha256:" + "d" * 128, "sha256 digest has 128 hex digits, expected 64"),
        ("sha256:" + "d" * 63, "sha256 digest has 63 hex digits, expected 64"),
        ("d" * 64, "is not <algorithm>:<lowercase hex>"),
        ("SHA256:" + "d" * 64, "is not <algorithm>:<lowercase hex>"),
        ("sha256:" + "D" * 64, "is not <algorithm>:<lowercase hex>"),
    ],
    ids=["md5", "sha1", "sha512-too-short", "sha256-too-long", "sha256-one-short", "bare-hex", "upper-algorithm", "upper-hex"],
)
def test_a_bad_digest_is_refused_naming_file_line_and_row(digest, message):
    row = RUNSC.replace("sha512:" + "c" * 128, digest)
    with pytest.raises(CatalogError) as err:
        parse_catalog(HEADER + KATA + NERDCTL + row, "cat.tsv")
    assert re.search(rf"cat\.tsv:4: runsc: .*{re.escape(message)}", str(err.value)), str(err.value)


def test_every_algorithm_of_the_contract_has_a_length_the_parser_checks():
    for algorithm, length in DIGEST_HEX_LENGTHS.items():
        assert digest_problem(f"{algorithm}:" + "0" * length) is None
        assert digest_problem(f"{algorithm}:" + "0" * (length + 2)) is not None


def test_the_old_sha256_column_is_refused_with_how_to_convert():
    old = "name\tversion\tsha256\turl\n" + KATA.replace("sha256:", "") + NERDCTL.replace("sha256:", "")
    with pytest.raises(CatalogError, match=re.escape("cat.tsv:1: the sha256 column is now 'digest'")) as err:
        parse_catalog(old, "cat.tsv")
    assert "sha256:<hex>" in str(err.value)


def test_a_digest_is_never_echoed_whole():
    """A pasted value in the wrong column is cut, as settings cut values."""
    long_value = "x" * 200
    problem = digest_problem(long_value)
    assert problem is not None and long_value not in problem


@pytest.mark.parametrize(
    ("url", "architectures"),
    [
        ("https://example.invalid/kata-static-3.32.0-amd64.tar.zst", {"amd64"}),
        ("https://storage.googleapis.com/gvisor/releases/release/20260817.0/x86_64/runsc", {"amd64"}),
        ("https://storage.googleapis.com/gvisor/releases/release/20260817.0/aarch64/runsc", {"arm64"}),
        ("https://github.com/google/gvisor/releases/download/release-20260907.0/gvisor-x86_64.tar.bz2", {"amd64"}),
        ("https://github.com/google/gvisor/releases/download/release-20260907.0/gvisor-aarch64.tar.bz2", {"arm64"}),
        ("https://example.invalid/tool-linux-arm64.tar.gz", {"arm64"}),
        ("https://example.invalid/tool.tar.gz", set()),
        ("https://example.invalid/x86_640/tool", set()),
    ],
)
def test_architectures_come_from_the_urls_path(url, architectures):
    artifacts = parse_catalog(HEADER + KATA + NERDCTL + f"tool\t1\tsha256:{'e' * 64}\t{url}\n")
    assert artifacts["tool"].architectures == architectures


@pytest.mark.parametrize("version", ["../../etc", "2026/08", "1 2", "..", ""])
def test_a_version_that_is_no_directory_name_is_refused(version):
    """gVisor's release is installed in <dir>/<version>/: the version is a path component."""
    with pytest.raises(CatalogError, match=r"cat\.tsv:4: runsc: version .* names a directory"):
        parse_catalog(HEADER + KATA + NERDCTL + RUNSC.replace("20260817.0\t", f"{version}\t", 1), "cat.tsv")
