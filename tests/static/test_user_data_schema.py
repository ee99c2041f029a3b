"""The user-data the program renders, checked by cloud-init's own schema.

Uses Debian's `cloud-init` package (installed by .ci/run; it is not on
PyPI). Its `schema` command accepts unknown top-level keys, so the test
also checks every key against the schema's own list. This proves the
document is well-formed cloud-config; that cloud-init applies it on Debian
13 is the hostlab's job.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.program import config_from_stack_file, run_program
from tools.lab.harness import unwrap

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Path("/usr/lib/python3/dist-packages/cloudinit/config/schemas/schema-cloud-config-v1.json")


@pytest.fixture(scope="module")
def user_data() -> str:
    run = run_program(config_from_stack_file(ROOT / "Pulumi.dev.yaml"), stack="dev")
    return unwrap(run.named("cloud-1-server").inputs["userData"])


def require_cloud_init() -> str:
    path = shutil.which("cloud-init")
    assert path, "cloud-init is not installed: `apt-get install cloud-init` (.ci/run does this)"
    return path


def test_rendered_user_data_passes_cloud_init_schema(user_data, tmp_path):
    cloud_init = require_cloud_init()
    f = tmp_path / "user-data"
    f.write_text(user_data)
    result = subprocess.run(
        [cloud_init, "schema", "--config-file", str(f)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid" in result.stdout + result.stderr


def test_every_top_level_key_is_known_to_cloud_init(user_data):
    require_cloud_init()
    schema = json.loads(SCHEMA.read_text())
    known: set[str] = set(schema.get("properties", {}))
    for definition in schema.get("$defs", {}).values():
        known |= set(definition.get("properties", {}))
    doc = yaml.safe_load(user_data)
    unknown = sorted(set(doc) - known)
    assert not unknown, f"cloud-init would silently ignore: {unknown}"


def test_schema_check_is_not_vacuous(tmp_path):
    cloud_init = require_cloud_init()
    f = tmp_path / "user-data"
    f.write_text("#cloud-config\npackages: 5\nssh_pwauth: maybe\n")
    result = subprocess.run(
        [cloud_init, "schema", "--config-file", str(f)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
