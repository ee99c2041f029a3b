"""The verify report: its fields, its types, and the one validator.

Both sides import this module: the host's verification builds the report
from typed results (`Report.to_json`), and the program's reader
(`components/endpoint.py`, `parse_verify_report`) checks what came back with
`report_problems` before it reads a field. The schema's name
(`functions-runtime/verify@1`) is a contract fact (components/contract.py,
FR_VERIFY_SCHEMA in the payload's contract/host.env): it is passed in, not
spelled here. Fields are only ever added (a reader of verify@1 ignores what
it does not know); `limits` was added with the Python verification.

Standard library only: this file runs on the host.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("passed", "skipped", "failed")

# name -> (allowed JSON types, may be null). `bool` is checked before `int`.
REPORT_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "schema": ((str,), False),
    "host": ((str,), False),
    "passed": ((bool,), False),
    "failedCheck": ((str,), True),
    "reason": ((str,), True),
    "hostKernel": ((str,), False),
    "defaultRuntime": ((str,), True),
    "runtimes": ((list,), False),
    "versions": ((dict,), False),
    "checks": ((list,), False),
    # What the endpoint policy was proven to enforce (a create just above
    # each maximum refused, one at every maximum allowed); null until then.
    "limits": ((dict,), True),
}
RUNTIME_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "name": ((str,), False),
    "shim": ((str,), True),
    "isolation": ((str,), False),
    "network": ((str,), True),
    "hypervisor": ((str,), True),
    "guestKernel": ((str,), True),
    "coldStartMs": ((dict,), True),
    "userNetworkDns": ((bool,), True),
}
COLD_START_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {"median": ((int,), False), "runs": ((int,), False)}
CHECK_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "name": ((str,), False),
    "status": ((str,), False),
    "passed": ((bool,), False),
    "detail": ((str,), False),
}
LIMITS_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "maxMemoryMiB": ((int,), False),
    "maxPids": ((int,), False),
    "maxMilliCpus": ((int,), False),
}
VERSION_NAMES = ("docker", "containerd", "runc", "runsc", "kata", "nerdctl")


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str  # one of STATUSES
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "passed": self.status == "passed", "detail": self.detail}


@dataclass(frozen=True)
class ColdStart:
    median: int
    runs: int


@dataclass(frozen=True)
class RuntimeResult:
    name: str
    shim: str | None
    isolation: str
    network: str | None = None
    hypervisor: str | None = None
    guest_kernel: str | None = None
    cold_start: ColdStart | None = None
    user_network_dns: bool | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shim": self.shim,
            "isolation": self.isolation,
            "network": self.network,
            "hypervisor": self.hypervisor,
            "guestKernel": self.guest_kernel,
            "coldStartMs": None if self.cold_start is None else {"median": self.cold_start.median, "runs": self.cold_start.runs},
            "userNetworkDns": self.user_network_dns,
        }


@dataclass(frozen=True)
class PolicyLimits:
    max_memory_mib: int
    max_pids: int
    max_millicpus: int

    def to_json(self) -> dict[str, int]:
        return {"maxMemoryMiB": self.max_memory_mib, "maxPids": self.max_pids, "maxMilliCpus": self.max_millicpus}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> PolicyLimits:
        return cls(int(raw["maxMemoryMiB"]), int(raw["maxPids"]), int(raw["maxMilliCpus"]))


@dataclass(frozen=True)
class Report:
    schema: str
    host: str
    passed: bool
    host_kernel: str
    failed_check: str | None = None
    reason: str | None = None
    default_runtime: str | None = None
    runtimes: tuple[RuntimeResult, ...] = ()
    versions: Mapping[str, str | None] = field(default_factory=dict)
    checks: tuple[CheckResult, ...] = ()
    limits: PolicyLimits | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "host": self.host,
            "passed": self.passed,
            "failedCheck": self.failed_check,
            "reason": self.reason,
            "hostKernel": self.host_kernel,
            "defaultRuntime": self.default_runtime,
            "runtimes": [rt.to_json() for rt in self.runtimes],
            "versions": {name: self.versions.get(name) for name in VERSION_NAMES},
            "checks": [c.to_json() for c in self.checks],
            "limits": None if self.limits is None else self.limits.to_json(),
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=True)


def _field_problems(obj: Any, fields: Mapping[str, tuple[tuple[type, ...], bool]], where: str) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{where}: expected an object, found {type(obj).__name__}"]
    problems = []
    for name, (types, nullable) in fields.items():
        if name not in obj:
            problems.append(f"{where}.{name}: missing")
            continue
        value = obj[name]
        if value is None:
            if not nullable:
                problems.append(f"{where}.{name}: null")
            continue
        bad_bool = isinstance(value, bool) and bool not in types
        if bad_bool or not isinstance(value, types):
            problems.append(f"{where}.{name}: expected {'/'.join(t.__name__ for t in types)}, found {value!r}"[:200])
    return problems


def report_problems(doc: Any, schema: str) -> list[str]:
    """Every way `doc` is not a `schema` report (empty when it is one)."""
    if not isinstance(doc, dict):
        return [f"expected a {schema} document (an object), found {type(doc).__name__}"]
    if doc.get("schema") != schema:
        return [f"expected a {schema} document, found schema {doc.get('schema')!r}"]
    problems = _field_problems(doc, REPORT_FIELDS, "report")
    for i, rt in enumerate(doc.get("runtimes") or []):
        problems += _field_problems(rt, RUNTIME_FIELDS, f"report.runtimes[{i}]")
        if isinstance(rt, dict) and isinstance(rt.get("coldStartMs"), dict):
            problems += _field_problems(rt["coldStartMs"], COLD_START_FIELDS, f"report.runtimes[{i}].coldStartMs")
    for i, check in enumerate(doc.get("checks") or []):
        problems += _field_problems(check, CHECK_FIELDS, f"report.checks[{i}]")
        if isinstance(check, dict) and check.get("status") not in STATUSES:
            problems.append(f"report.checks[{i}].status: expected one of {', '.join(STATUSES)}")
    if isinstance(doc.get("limits"), dict):
        problems += _field_problems(doc["limits"], LIMITS_FIELDS, "report.limits")
    if doc.get("passed") is True and doc.get("limits") is None:
        problems.append("report.limits: a passed report says which limits the endpoint policy enforces")
    for name, value in (doc.get("versions") or {}).items() if isinstance(doc.get("versions"), dict) else ():
        if value is not None and not isinstance(value, str):
            problems.append(f"report.versions.{name}: expected str or null")
    return problems
