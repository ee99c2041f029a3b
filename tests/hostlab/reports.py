"""Timing tables of the lab's tests: saved as JSON under the cache's timings/
and printed at the end of the run by conftest's pytest_terminal_summary."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

_REPORTS: list[str] = []


def add_lab_report(text: str, timings: dict[str, Any], cache_dir: Path, name: str = "provisioning") -> Path:
    out = cache_dir / "timings"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(timings, indent=2) + "\n")
    _REPORTS.append(f"{text}\n  saved to {path}")
    return path


def lab_reports() -> list[str]:
    return list(_REPORTS)
