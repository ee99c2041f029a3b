"""scripts/wait_for_boot.sh and scripts/unpack_payload.sh, run the way the
program sends them: the script itself as the command (`bash -c <text>`),
with the variables the pipeline gives it, here on this machine with FR_ROOT
in a temporary directory.

Proves: the exact command string the pipeline builds works; the payload is
checked against its sha256 before anything changes; every payload directory
is swapped in whole (a file dropped from the payload disappears from the
host); cloud-init's exit codes 0 and 2 pass, others and the timeout fail with
one line. Does not prove: the SSH transport (the hostlab does).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from components.catalog import load_catalog
from components.payload import SCRIPTS_DIR, build_payload
from components.pipeline import standalone_command
from components.settings import PROJECT_ROOT

CATALOG = load_catalog(PROJECT_ROOT / "catalog" / "artifacts.tsv")


def run_standalone(script: str, env: dict[str, str], stdin: str = "", path: str | None = None) -> subprocess.CompletedProcess:
    command = standalone_command(script, (SCRIPTS_DIR / script).read_text(), env)
    return subprocess.run(
        ["/bin/bash", "-c", command],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": path or os.environ["PATH"], "LANG": "C.UTF-8"},
    )


def fake_cloud_init(tmp_path: Path, status_rc: int) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "cloud-init"
    tool.write_text(f"#!/bin/sh\n[ \"$2\" = --long ] && echo 'status: error' && exit 1\nexit {status_rc}\n")
    tool.chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


def test_wait_without_cloud_init_has_nothing_to_wait_for(tmp_path):
    # A PATH with bash alone: no cloud-init (the script needs only builtins then).
    (tmp_path / "bash").symlink_to("/bin/bash")
    r = run_standalone("wait_for_boot.sh", {"CLOUD_INIT_TIMEOUT": "5"}, path=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"boot": "finished"}


@pytest.mark.parametrize(("status_rc", "ok"), [(0, True), (2, True), (1, False), (124, False)])
def test_wait_accepts_cloud_init_done_or_warned_and_fails_otherwise(tmp_path, status_rc, ok):
    r = run_standalone("wait_for_boot.sh", {"CLOUD_INIT_TIMEOUT": "5"}, path=fake_cloud_init(tmp_path, status_rc))
    assert (r.returncode == 0) == ok, r.stderr
    if not ok:
        assert len(r.stderr.strip().splitlines()) == 1
        expected = "did not finish within 5 s" if status_rc == 124 else "cloud-init failed: status: error"
        assert expected in r.stderr


def test_wait_refuses_a_missing_timeout():
    r = run_standalone("wait_for_boot.sh", {})
    assert r.returncode != 0 and "CLOUD_INIT_TIMEOUT" in r.stderr


def unpack_env(root: Path, payload) -> dict[str, str]:
    return {
        "FR_ROOT": str(root),
        "PAYLOAD_DIRS": " ".join(payload.top_level_dirs),
        "PAYLOAD_SHA256": payload.sha256,
    }


def test_unpack_puts_every_payload_file_in_place_and_removes_stale_ones(tmp_path):
    payload = build_payload(CATALOG)
    root = tmp_path / "fr"
    (root / "scripts").mkdir(parents=True)
    (root / "scripts" / "removed_script.sh").write_text("old\n")
    (root / "state").mkdir()
    (root / "state" / "kata.version").write_text("kept\n")
    r = run_standalone("unpack_payload.sh", unpack_env(root, payload), stdin=payload.archive_base64)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"payload": payload.sha256}
    for rel, data in payload.files.items():
        assert (root / rel).read_bytes() == data, rel
    assert not (root / "scripts" / "removed_script.sh").exists()
    assert (root / "state" / "kata.version").read_text() == "kept\n", "state is not part of the payload"
    assert sorted(p.name for p in root.iterdir()) == sorted([*payload.top_level_dirs, "state"])


def test_unpack_refuses_a_payload_that_is_not_the_announced_one_and_changes_nothing(tmp_path):
    payload = build_payload(CATALOG)
    root = tmp_path / "fr"
    (root / "scripts").mkdir(parents=True)
    (root / "scripts" / "lib.sh").write_text("the running host's lib.sh\n")
    env = {**unpack_env(root, payload), "PAYLOAD_SHA256": "0" * 64}
    r = run_standalone("unpack_payload.sh", env, stdin=payload.archive_base64)
    assert r.returncode != 0
    assert "nothing was changed" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert (root / "scripts" / "lib.sh").read_text() == "the running host's lib.sh\n"
    assert not [p for p in root.iterdir() if p.name.startswith(".payload")], "temporary files removed"
