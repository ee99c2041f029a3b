"""Facts shared by the program and the host scripts are defined once.

`components/contract.py` defines them; the scripts read them from the
payload's `contract/host.env`. These tests fail when a script (or another
module of the program) types one of the values again, and prove that the
env file the scripts source gives back exactly the Python values.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from components import contract
from components.contract import render_contract_env, shared_facts

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))
PROGRAM = [p for p in sorted((ROOT / "components").glob("*.py")) + sorted((ROOT / "tools").rglob("*.py"))
           if p.name != "contract.py"]

# Each value that must never be typed outside contract.py, and patterns for
# the allowed-value lists a script would write as a case pattern.
LITERALS = sorted(
    {
        contract.REMOTE_ROOT,
        contract.METADATA_ADDRESS,
        *contract.KERNEL_MODULES,
        *contract.CONTAINER_BLOCKED_V4,
        *contract.CONTAINER_BLOCKED_V6,
        contract.NO_KVM_ON_CLOUD,
        contract.KATA_UNTESTED_WITH_DOCKER,
        contract.VERIFY_SCHEMA,
        contract.ENDPOINT_SCHEMA,
        contract.BUSYBOX_VERIFY_IMAGE,
        contract.SSHD_DROP_IN,
        contract.MODULES_LOAD,
        contract.APT_HOOK,
        contract.APT_UPDATE_STAMP,
        contract.AUTHZ_PLUGIN_NAME,
        contract.AUTHZ_SOCKET,
        contract.AUTHZ_CONFIG,
        contract.AUTHZ_DRAIN_FILE,
        contract.AUTHZ_REFUSAL_PREFIX,
        contract.ENDPOINT_COMMAND,
        contract.GVISOR_DIR,
        contract.DEBIAN_RUNSC,
    }
)
LIST_PATTERNS = [
    re.compile(r"\s\|\s".join(map(re.escape, values)))
    for values in (contract.ISOLATIONS, contract.KATA_HYPERVISORS, contract.GVISOR_RUNSC_SOURCES)
]


def code_lines(path: Path) -> list[tuple[int, str]]:
    """Lines that are not whole-line comments (comments may name a fact)."""
    comment = "#"
    return [
        (n, line)
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if not line.lstrip().startswith(comment)
    ]


def hard_coded(paths: list[Path]) -> list[str]:
    found = []
    for path in paths:
        for n, line in code_lines(path):
            for literal in LITERALS:
                if literal in line:
                    found.append(f"{path.relative_to(ROOT)}:{n}: {literal!r}")
            for pattern in LIST_PATTERNS:
                if pattern.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{n}: {pattern.pattern!r}")
    return found


def test_no_script_hard_codes_a_contract_fact():
    found = hard_coded(SCRIPTS)
    assert not found, "use the FR_* variable from contract/host.env instead:\n" + "\n".join(found)


def test_no_program_module_retypes_a_contract_fact():
    found = hard_coded(PROGRAM)
    assert not found, "import it from components.contract instead:\n" + "\n".join(found)


def test_the_check_catches_a_hard_coded_fact(tmp_path):
    """The guard itself: a script with the metadata address typed in is caught."""
    script = tmp_path / "x.sh"
    script.write_text(f'#!/bin/bash\n# {contract.METADATA_ADDRESS} in a comment is fine\nip="{contract.METADATA_ADDRESS}"\n'
                      "case $ISOLATION in vm | sandbox) ;; esac\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        found = hard_coded([script])
    finally:
        ROOT = saved
    assert len(found) == 2 and found[0].startswith("x.sh:3:")


@pytest.mark.parametrize("fact", shared_facts(), ids=lambda f: f.variable)
def test_the_env_file_gives_the_scripts_the_python_value(tmp_path, fact):
    env_file = tmp_path / "host.env"
    env_file.write_text(render_contract_env())
    out = subprocess.run(
        ["bash", "-c", f'set -u; source "$1"; printf %s "${fact.variable}"', "bash", str(env_file)],
        capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"},
    ).stdout
    assert out == fact.value


def test_paths_can_be_pointed_elsewhere_by_tests_and_facts_cannot(tmp_path):
    env_file = tmp_path / "host.env"
    env_file.write_text(render_contract_env())
    out = subprocess.run(
        ["bash", "-c", 'source "$1"; printf "%s|%s" "$FR_APT_UPDATE_STAMP" "$FR_METADATA_ADDRESS"',
         "bash", str(env_file)],
        capture_output=True, text=True, check=True,
        env={"PATH": "/usr/bin:/bin", "FR_APT_UPDATE_STAMP": "/tmp/x", "FR_METADATA_ADDRESS": "10.9.9.9"},
    ).stdout
    assert out == f"/tmp/x|{contract.METADATA_ADDRESS}"
