"""Verify's wall time, today's script against an older one, on one lab guest.

A figure for the note, not a test: one run each (or --runs N), reported,
never asserted. It needs a provisioned lab guest (`python -m tools.lab up
--provision`, with the same --artifacts-mirror/--artifacts-catalog if the
guest was provisioned with them). The verify step is the program's own:
the lab program runs under Pulumi's mocks with the lab's keys and settings
(as `lab up --provision` does), and its verify command and stdin (the
verify client's PEM material) are replayed over SSH, once with the old
verify (its scripts from git at --old-rev, copied beside the guest's
payload under a directory of its own) and once with today's (this tree's
verify_host.sh, host_verify/ and contract, copied into the guest's payload).

    .venv/bin/python bench/verify_host.py --old-rev fe5cabe [--runs 1] [--artifacts-catalog FILE]

Prints each run's seconds and exit status on stderr and one JSON document on
stdout.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components.contract import CONTRACT_ENV, REMOTE_ROOT, render_contract_env  # noqa: E402
from components.payload import VERIFY_FILES  # noqa: E402
from tools.lab.cli import LAB_HOST_NAME, LAB_SSH_PORT, lab_state_dir  # noqa: E402
from tools.lab.program import run_lab_program  # noqa: E402
from tools.lab.provision import lab_stack_config  # noqa: E402
from tools.lab.replay import ConnectionShell, host_steps  # noqa: E402

# The old verify lives beside today's payload, sharing its contract and catalog.
OLD_ROOT = f"{REMOTE_ROOT}-bench-old"


def git_files(rev: str, paths: list[str]) -> dict[str, bytes]:
    """Files at `rev` (a directory: every file under it)."""
    out: dict[str, bytes] = {}
    for path in paths:
        listing = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, "--", path], cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout.split()
        for name in listing:
            out[name] = subprocess.run(["git", "show", f"{rev}:{name}"], cwd=ROOT, capture_output=True,
                                       check=True).stdout
    return out


def tar_of(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755 if name.endswith(".sh") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old-rev", required=True, help="the git revision whose verify is the baseline")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--ssh-port", type=int, default=LAB_SSH_PORT)
    parser.add_argument("--artifacts-mirror")
    parser.add_argument("--artifacts-catalog", type=Path)
    parser.add_argument("--owner-label-patch", action="store_true",
                        help="add the policy's owner label to the old script's containers (a shell verify from "
                        "before it knew the label)")
    parser.add_argument("--arms", default="old,new", help="which to run, in order (old, new)")
    args = parser.parse_args()
    state = lab_state_dir(args.state_dir)
    host_public = (state / "ssh_host_ed25519_key.pub").read_text().strip()
    config = lab_stack_config(host_public, (state / "id_ed25519").read_text(), args.ssh_port, args.artifacts_mirror,
                              args.artifacts_catalog)
    run = run_lab_program(config, state)
    steps = host_steps(run, LAB_HOST_NAME)
    verify = next(s for s in steps if s.name == f"{LAB_HOST_NAME}-verify")
    assert verify.create is not None
    shell = ConnectionShell(steps[0].connection, state / "ssh")
    old = git_files(args.old_rev, ["scripts"])
    if args.owner_label_patch:
        # The endpoint policy asks every create for the owner label (the client
        # certificate's CN) since 69f710f; the shell verify of that time sends
        # none, so the baseline gets it added to its containers' options.
        from endpoint_authz.rules import OWNER_LABEL
        from host_verify.inputs import certificate_common_name, pem_blocks

        cn = certificate_common_name(pem_blocks(verify.stdin or "")[1])
        script = old["scripts/verify_host.sh"].decode()
        assert "LIMIT_OPTS=(--memory" in script, "the old script has no LIMIT_OPTS to patch"
        old["scripts/verify_host.sh"] = script.replace(
            "LIMIT_OPTS=(--memory", f"LIMIT_OPTS=(--label '{OWNER_LABEL}={cn}' --memory").encode()
    unpack = (f"rm -rf {OLD_ROOT} && mkdir -p {OLD_ROOT} && tar -xf - -C {OLD_ROOT} && "
              f"ln -s {REMOTE_ROOT}/contract {REMOTE_ROOT}/catalog {OLD_ROOT}/")
    put = shell.ssh(unpack, stdin=tar_of(old), timeout=120)
    if put.returncode != 0:
        print(f"could not stage the old verify: {put.stderr}", file=sys.stderr)
        return 1
    # Today's verify and contract into the guest's payload (the contract only
    # gains facts, so the old script reads it too).
    today = {name: (ROOT / name).read_bytes() for name in ("scripts/verify_host.sh", *VERIFY_FILES)}
    today[CONTRACT_ENV] = render_contract_env().encode()
    put = shell.ssh(f"tar -xf - -C {REMOTE_ROOT}", stdin=tar_of(today), timeout=120)
    if put.returncode != 0:
        print(f"could not stage today's verify: {put.stderr}", file=sys.stderr)
        return 1
    commands = {"old": verify.create.replace(f"{REMOTE_ROOT}/scripts/", f"{OLD_ROOT}/scripts/"), "new": verify.create}
    arms = {arm: commands[arm] for arm in args.arms.split(",")}
    results: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    for _ in range(args.runs):
        for arm, command in arms.items():
            start = time.monotonic()
            out = shell.ssh(command, stdin=verify.stdin, timeout=1800)
            seconds = round(time.monotonic() - start, 1)
            try:
                report = json.loads(out.stdout)
                passed, checks = report.get("passed"), len(report.get("checks") or [])
            except ValueError:
                passed, checks = None, 0
            results[arm].append({"seconds": seconds, "exit": out.returncode, "passed": passed, "checks": checks})
            print(f"{arm}: {seconds} s, exit {out.returncode}, passed {passed}, {checks} checks", file=sys.stderr)
            if out.returncode != 0:
                print(out.stderr[-2000:], file=sys.stderr)
    shell.ssh(f"rm -rf {OLD_ROOT}", timeout=60)
    best = {arm: min(r["seconds"] for r in runs) for arm, runs in results.items()}
    ratio = round(best["new"] / best["old"], 2) if len(best) == 2 else None
    print(json.dumps({"oldRev": args.old_rev, "runs": results, "ratioNewOverOld": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
