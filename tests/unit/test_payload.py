"""The payload every host receives, and the catalog both sides read.

Proves the archive is byte-for-byte reproducible (so triggers do not
change between runs), holds every script and the rendered base config, and
that catalog mistakes are refused with the file and line named.
"""

from __future__ import annotations

import io
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from components.base_os import BASE_PACKAGES, render_base_files
from components.catalog import CatalogError, load_catalog, parse_catalog
from components.payload import SCRIPTS_DIR, build_payload
from components.settings import PROJECT_ROOT

CATALOG = load_catalog(PROJECT_ROOT / "catalog" / "artifacts.tsv")


def test_payload_is_reproducible_byte_for_byte():
    assert build_payload(CATALOG).archive == build_payload(CATALOG).archive


def test_payload_holds_every_script_catalog_and_base_file():
    payload = build_payload(CATALOG)
    with tarfile.open(fileobj=io.BytesIO(payload.archive)) as tar:
        names = set(tar.getnames())
        modes = {m.name: m.mode for m in tar.getmembers()}
    scripts = {f"scripts/{p.name}" for p in SCRIPTS_DIR.glob("*.sh")}
    assert scripts and scripts <= names
    assert {"catalog/artifacts.tsv", "base/packages.txt", "base/modules.conf", "base/sshd.conf"} <= names
    assert all(modes[s] == 0o755 for s in scripts)


def test_payload_changes_when_a_script_changes(tmp_path: Path):
    for script in SCRIPTS_DIR.glob("*.sh"):
        (tmp_path / script.name).write_bytes(script.read_bytes())
    before = build_payload(CATALOG, tmp_path).sha256
    (tmp_path / "lib.sh").write_text((tmp_path / "lib.sh").read_text() + "\n# changed\n")
    assert build_payload(CATALOG, tmp_path).sha256 != before


def test_the_payload_never_holds_a_directory_the_host_owns(monkeypatch):
    """The payload step replaces each payload directory whole: one named like
    the install markers' or gVisor's release directory would wipe them."""
    from components import payload as payload_module
    from components.contract import GVISOR_DIR, REMOTE_ROOT

    assert GVISOR_DIR.startswith(f"{REMOTE_ROOT}/")
    assert set(payload_module.HOST_OWNED_DIRS) == {"state", GVISOR_DIR.rsplit("/", 1)[1]}
    assert not set(build_payload(CATALOG).top_level_dirs) & set(payload_module.HOST_OWNED_DIRS)
    real = payload_module.collect_files
    monkeypatch.setattr(payload_module, "collect_files", lambda *a, **k: {**real(*a, **k), "gvisor/x": b""})
    with pytest.raises(ValueError, match="must not hold gvisor"):
        build_payload(CATALOG)


def test_base_files_and_user_data_share_one_package_list():
    assert render_base_files().packages.split() == list(BASE_PACKAGES)


def test_catalog_pins_kata_and_nerdctl_with_published_digests():
    assert CATALOG["kata"].version == "3.32.0"
    assert CATALOG["kata"].digest == "sha256:1449ecea50bd91fa73a94648db195d18950fe869ba4b1f12d05f55f1fa7c1b01"
    assert CATALOG["kata"].file_name == "kata-static-3.32.0-amd64.tar.zst"
    assert CATALOG["nerdctl"].digest == "sha256:de3206aeb7cbd5f20f5fb1f55c1e3bf2db1be567812a8a3f5e65eba2488347ee"


HEADER = "name\tversion\tdigest\turl\n"
GOOD_ROWS = (
    "kata\t3.32.0\tsha256:" + "a" * 64 + "\thttps://example.invalid/kata.tar.zst\n"
    "nerdctl\t2.3.5\tsha256:" + "b" * 64 + "\thttps://example.invalid/nerdctl.tar.gz\n"
)


@pytest.mark.parametrize(
    "text,message",
    [
        ("bad header\n" + GOOD_ROWS, "expected the header"),
        (HEADER + GOOD_ROWS.replace("a" * 64, "A" * 64), "kata: digest 'sha256:AAAA"),
        (HEADER + GOOD_ROWS.replace("https://example.invalid/kata", "http://example.invalid/kata"), "https URL"),
        (HEADER + GOOD_ROWS.split("\n")[0] + "\n", "missing artifact(s) nerdctl"),
        (HEADER + GOOD_ROWS + GOOD_ROWS.split("\n")[0] + "\n", "listed twice"),
        (HEADER + "kata\t3.32.0\n", "4 tab-separated fields"),
    ],
    ids=["header", "digest-case", "plain-http", "missing", "duplicate", "short-row"],
)
def test_catalog_mistakes_are_refused_with_line(text, message):
    with pytest.raises(CatalogError, match=re.escape(message)):
        parse_catalog(text, "cat.tsv")


def test_missing_catalog_file_names_the_path(tmp_path: Path):
    with pytest.raises(CatalogError, match="nope.tsv"):
        load_catalog(tmp_path / "nope.tsv")


def test_scripts_read_the_apt_hook_and_stamp_paths_from_the_contract(tmp_path):
    """cloud-init writes the hook from Python; lib.sh and bootstrap_base.sh
    read the same paths from the payload's contract file: one definition."""
    from components.contract import APT_HOOK, APT_UPDATE_STAMP
    from tests.scripts.helpers import write_contract

    write_contract(tmp_path)
    scripts = Path(__file__).resolve().parents[2] / "scripts"
    out = subprocess.run(
        ["bash", "-c", 'source "$1"; printf "%s\\n%s\\n" "$FR_APT_UPDATE_STAMP" "$FR_APT_HOOK"', "bash",
         str(scripts / "bootstrap_base.sh")],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "FR_ROOT": str(tmp_path)}, check=True,
    ).stdout.splitlines()
    assert out == [APT_UPDATE_STAMP, APT_HOOK]
    assert f'"touch {APT_UPDATE_STAMP} || true"' in render_base_files().apt_hook
