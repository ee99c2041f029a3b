"""The README's local path, end to end through the command's own entry point.

`python -m tools.lab up --provision` is run as a user runs it (a separate
process, its stderr a pipe): it builds or reuses the guest image, boots the
guest, runs the program with fresh random keys and replays its remote steps
over SSH without Pulumi's engine, verifies the endpoint and writes the
outputs and client TLS files. Then the README's docker-py snippet, exactly
as the command printed it, runs a container through the forwarded endpoint;
`lab status` says the guest is up and verified; `lab down` stops it.

Changed for the test, through the command's own options and real stack
settings: free ports instead of 2222/2376 (a developer's own lab is left
alone), its own state directory, and `--artifacts-mirror`/`--artifacts-catalog`
(the stack's `artifacts.mirror`/`artifacts.catalog`) pointing at the test
archives with Kata's and nerdctl's real layout, because GitHub is
unreachable here and the guest's nested /dev/kvm makes the install step
fetch Kata. Not proven here: the Pulumi CLI path (`lab up` without
`--provision`; tests/tools/test_lab_stack_config.py checks its calls).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from components.endpoint import read_stack_outputs
from tests.hostlab.reports import add_lab_report
from tests.hostlab.testbed import Mirror, make_test_artifacts
from tools.lab.cli import docker_py_snippet, pid_alive
from tools.lab.vm import free_port

pytestmark = [pytest.mark.hostlab, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
LAB_UP_TIMEOUT_S = 2100
PHASES = ("image", "boot", "cloud-init", "surroundings", "program", "install", "configure", "verify", "endpoint")


def lab(state: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tools.lab", "--state-dir", str(state), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )


def test_lab_up_provision_reaches_a_verified_endpoint(guest_image, hostlab_cache_dir, tmp_path):
    state = tmp_path / "lab"
    ssh_port, endpoint_port = free_port(), free_port()
    artifacts = make_test_artifacts(tmp_path / "artifacts", hostlab_cache_dir)
    timings: dict[str, Any] = {}
    started_at = dt.datetime.now(dt.UTC)
    try:
        with Mirror(artifacts.directory) as mirror:
            started = time.monotonic()
            up = lab(
                state, "up", "--provision", "--ssh-port", str(ssh_port), "--endpoint-port", str(endpoint_port),
                "--artifacts-mirror", mirror.url_from_guest, "--artifacts-catalog", str(artifacts.catalog),
                timeout=LAB_UP_TIMEOUT_S,
            )
            timings["lab_up_provision_s"] = round(time.monotonic() - started, 1)
        assert up.returncode == 0, up.stderr[-3000:]
        for m in re.finditer(r"^lab: (\S+) done in ([0-9.]+) s$", up.stderr, re.MULTILINE):
            timings[f"{m[1]}_s"] = float(m[2])

        # Progress on a pipe: each phase starts and ends on a line of its own.
        for phase in PHASES:
            assert f"lab: {phase}...\n" in up.stderr and f"lab: {phase} done in " in up.stderr, phase
        assert "\r" not in up.stderr
        assert "without Pulumi's engine" in up.stdout

        # The outputs and client files: private, and read by the consumer side.
        outputs = state / "outputs.json"
        for path in (outputs, *(state / "client").iterdir()):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        endpoint, tls = read_stack_outputs(outputs.read_text())
        assert endpoint.default_runtime == "runsc"
        assert sorted(p.name for p in (state / "client").iterdir()) == ["ca.pem", "cert.pem", "key.pem"]
        assert (state / "client" / "cert.pem").read_text() == tls.cert_pem

        # Fresh certificates, valid from now: not the test mocks' fixed dates.
        ca = x509.load_pem_x509_certificate(endpoint.ca_cert_pem.encode())
        client = x509.load_pem_x509_certificate(tls.cert_pem.encode())
        for cert in (ca, client):
            assert started_at - dt.timedelta(minutes=10) < cert.not_valid_before_utc <= dt.datetime.now(dt.UTC)

        # The docker-py snippet the command printed, as a user pastes it.
        snippet = docker_py_snippet(state, endpoint_port)
        assert snippet in up.stdout
        run = subprocess.run(
            [sys.executable, "-c", snippet], cwd=ROOT, capture_output=True, text=True, timeout=300,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert run.returncode == 0, run.stderr[-2000:]
        guest_kernel = endpoint.host().runtimes[0].guest_kernel
        assert run.stdout.strip() == guest_kernel and guest_kernel != endpoint.host().host_kernel

        status = lab(state, "status", "--endpoint-port", str(endpoint_port))
        assert status.returncode == 0, status.stdout + status.stderr
        assert "guest: running" in status.stdout
        assert "endpoint: verified at" in status.stdout
        assert "answers over mutual TLS" in status.stdout

        pid = int((state / "vm" / "qemu.pid").read_text())
        down = lab(state, "down")
        assert down.returncode == 0, down.stderr
        assert not pid_alive(pid), "lab down left QEMU running"
        assert lab(state, "status").returncode == 1
    finally:
        lab(state, "down")  # by PID from the pidfile, SIGKILL after a grace period
        rows = "\n".join(f"  {k:<24} {v} s" for k, v in timings.items())
        add_lab_report(f"hostlab lab up --provision timings\n{rows}", timings, hostlab_cache_dir, name="lab-up")

