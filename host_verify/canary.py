"""The canary's outputs: its latest result for consumers and operators, and
the node exporter's textfile (docs/operations.md, Metrics).

The canary is verify itself run with `--profile canary` (checks.PROFILES) by
a systemd timer; this module adds what a running host must also say: when
it last ran, whether a reboot is pending, how long its certificates have
left, how many sandboxes run per runtime, whether the endpoint policy is up.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from host_verify.clients import Docker, Runner

CANARY_SCHEMA = "functions-runtime/canary@1"
PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----\n.*?\n-----END CERTIFICATE-----\n?", re.S)


@dataclass(frozen=True)
class HostState:
    """What the canary reads of the running host beside its checks."""

    reboot_required: bool
    policy_up: bool
    # certificate name -> notAfter (Unix time); a certificate that cannot be read is left out.
    certificates: Mapping[str, int] = field(default_factory=dict)
    # runtime -> running containers; None when dockerd could not say.
    sandboxes: Mapping[str, int] | None = None
    artifacts: Mapping[str, str] = field(default_factory=dict)


def certificate_not_after(pem: str, work: Path) -> int:
    """notAfter of one PEM certificate, with the standard library only (the
    ssl module decodes a certificate from a file)."""
    fd, name = tempfile.mkstemp(dir=work, suffix=".pem")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(pem)
        decoded = ssl._ssl._test_decode_cert(name)  # type: ignore[attr-defined]
    finally:
        os.unlink(name)
    return int(ssl.cert_time_to_seconds(decoded["notAfter"]))


def certificate_expiries(files: Mapping[str, tuple[Path, int]], work: Path) -> dict[str, int]:
    """name -> notAfter, for the `index`-th certificate of each file."""
    expiries: dict[str, int] = {}
    for name, (path, index) in files.items():
        try:
            blocks = PEM_CERT.findall(path.read_text())
            expiries[name] = certificate_not_after(blocks[index], work)
        except (OSError, IndexError, ValueError, ssl.SSLError):
            continue
    return expiries


def running_sandboxes(docker: Docker, runtimes: Sequence[str] = ()) -> dict[str, int] | None:
    """Running containers per runtime (each of `runtimes` counted, if only as
    0), as root on the local socket."""
    ids = docker.local("ps", "--quiet", "--no-trunc", timeout=30)
    if not ids.ok:
        return None
    counts: dict[str, int] = dict.fromkeys(runtimes, 0)
    listed = ids.output.split()
    if not listed:
        return counts
    runtimes = docker.local("inspect", "--format", "{{.HostConfig.Runtime}}", *listed, timeout=60)
    # A container that exited between the two calls is simply not counted.
    for line in runtimes.output.splitlines():
        if re.fullmatch(r"[A-Za-z0-9_.-]+", line.strip()):
            counts[line.strip()] = counts.get(line.strip(), 0) + 1
    return counts


def policy_up(runner: Runner, unit: str) -> bool:
    return runner.run(["systemctl", "is-active", "--quiet", unit], timeout=10).ok


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def _number(value: float) -> str:
    """Every digit: a Unix time in `%g` would lose hours."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _gauge(lines: list[str], name: str, help_text: str, samples: Sequence[tuple[Mapping[str, str], float]]) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} gauge")
    for labels, value in samples:
        text = ",".join(f'{k}="{_label(v)}"' for k, v in sorted(labels.items()))
        lines.append(f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}")


def render_metrics(report: Mapping[str, Any], state: HostState, interval: int, finished: float,
                   duration: float) -> str:
    """The textfile collector's view of one canary run (Prometheus text format)."""
    lines: list[str] = []
    _gauge(lines, "functions_runtime_canary_success", "1 when the host's last canary run passed.",
           [({}, 1 if report.get("passed") else 0)])
    _gauge(lines, "functions_runtime_canary_last_run_timestamp_seconds", "When the last canary run finished.",
           [({}, round(finished, 3))])
    _gauge(lines, "functions_runtime_canary_duration_seconds", "How long the last canary run took.",
           [({}, round(duration, 3))])
    _gauge(lines, "functions_runtime_canary_interval_seconds", "The canary timer's interval.", [({}, interval)])
    checks = [({"check": c["name"]}, 1 if c["status"] == "passed" else 0)
              for c in report.get("checks", []) if c.get("status") in ("passed", "failed")]
    _gauge(lines, "functions_runtime_canary_check_success", "1 when this check passed in the last canary run.",
           checks)
    _gauge(lines, "functions_runtime_reboot_required", "1 when an update waits for a reboot.",
           [({}, 1 if state.reboot_required else 0)])
    _gauge(lines, "functions_runtime_endpoint_policy_up", "1 when the endpoint policy plugin's unit is active.",
           [({}, 1 if state.policy_up else 0)])
    _gauge(lines, "functions_runtime_certificate_expiry_timestamp_seconds", "The certificate's notAfter.",
           [({"certificate": name}, at) for name, at in sorted(state.certificates.items())])
    if state.sandboxes is not None:
        _gauge(lines, "functions_runtime_sandboxes_running", "Running containers per runtime.",
               [({"runtime": rt}, n) for rt, n in sorted(state.sandboxes.items())])
    versions = [({"component": name, "version": v}, 1) for name, v in sorted(report.get("versions", {}).items()) if v]
    versions += [({"component": f"catalog:{name}", "version": v}, 1) for name, v in sorted(state.artifacts.items())]
    _gauge(lines, "functions_runtime_version_info", "The versions this host runs (runtimes, catalog rows).", versions)
    return "\n".join(lines) + "\n"


def canary_result(report: Mapping[str, Any], state: HostState, interval: int, finished: float,
                  duration: float) -> dict[str, Any]:
    """What a consumer or an operator reads: healthy or not, and why."""
    return {
        "schema": CANARY_SCHEMA,
        "host": report.get("host"),
        "healthy": bool(report.get("passed")) and state.policy_up,
        "finishedAt": datetime.fromtimestamp(finished, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "durationSeconds": round(duration, 3),
        "intervalSeconds": interval,
        "rebootRequired": state.reboot_required,
        "endpointPolicyUp": state.policy_up,
        "failedCheck": report.get("failedCheck"),
        "reason": report.get("reason"),
        "report": report,
    }


CANARY_DRAIN_MARK = "drained by the canary"


def follow_health(drain_file: Path, healthy: bool, reason: str | None) -> str:
    """canary.drainOnFailure: drain while the canary fails, resume when it
    passes again; an operator's drain (any other content) is never lifted."""
    ours = drain_file.is_file() and drain_file.read_text(errors="replace").startswith(CANARY_DRAIN_MARK)
    if not healthy and not drain_file.exists():
        write_atomically(drain_file, f"{CANARY_DRAIN_MARK}: {reason or 'the endpoint policy is down'}\n")
        return "drained"
    if healthy and ours:
        drain_file.unlink(missing_ok=True)
        return "resumed"
    return "unchanged"


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Readers (the node exporter, a consumer) never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_outputs(result_path: Path | None, textfile: Path | None, report: Mapping[str, Any], state: HostState,
                  interval: int, finished: float, duration: float) -> None:
    if result_path is not None:
        write_atomically(result_path, json.dumps(canary_result(report, state, interval, finished, duration)) + "\n")
    if textfile is not None:
        write_atomically(textfile, render_metrics(report, state, interval, finished, duration))
