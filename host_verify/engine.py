"""Running the table: which checks (all, or a named subset with what they
need), in which order, which beside which; the report from the results.

Stage by stage (checks.Check): in a stage, each lane runs its checks in
table order and lanes run side by side; the first failure stops every lane
before its next check, and the run reports that failure. No state outlives
a run: the results and facts belong to it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from host_verify.checks import CHECKS, Check, Context, Recorder, collect_versions
from host_verify.failures import FAMILIES, Failure
from host_verify.report import CheckResult, PolicyLimits, Report, RuntimeResult

# Lanes at once (Docker's checks, ctr and nerdctl per runtime, the policy's
# creates): two per CPU, at most eight. On two emulated vCPUs four lanes
# took 85 s where eight took 89 s, and under load each lane's wait halved.
DEFAULT_JOBS = min(8, 2 * (os.cpu_count() or 1))


def select(names: Iterable[str] | None, table: Sequence[Check] = CHECKS) -> tuple[Check, ...]:
    """The named checks and, transitively, the checks they need, in table order."""
    by_name = {c.name: c for c in table}
    if names is None:
        return tuple(table)
    wanted: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in by_name:
            raise KeyError(name)
        if name not in wanted:
            wanted.add(name)
            todo.extend(by_name[name].needs)
    return tuple(c for c in table if c.name in wanted)


@dataclass(frozen=True)
class Unit:
    check: Check
    runtime: str
    order: int


@dataclass(frozen=True)
class Outcome:
    results: tuple[CheckResult, ...]
    failure: Failure | None


def run_checks(ctx: Context, checks: Sequence[Check], log: Callable[[str], None], jobs: int = DEFAULT_JOBS,
               timings: bool = False) -> Outcome:
    stop = threading.Event()
    lock = threading.Lock()
    done: dict[int, list[CheckResult]] = {}
    failures: list[Failure] = []

    def run_unit(unit: Unit) -> None:
        rec = Recorder(unit.check.family, log)
        started = ctx.runner.now_ms()
        try:
            unit.check.run(ctx, unit.runtime, rec)
        except Failure as failure:
            with lock:
                failures.append(failure)
            stop.set()
        except Exception as err:  # a defect in a check: reported as its failure, never lost
            failure = Failure(unit.check.name, FAMILIES[unit.check.family], f"check {unit.check.name} to run",
                              f"{type(err).__name__}: {err}", "report this: host_verify/checks.py")
            rec.results.append(CheckResult(unit.check.name, "failed", f"expected {failure.expected}; found {failure.found}"))
            log(f"checking {unit.check.name}... FAILED")
            with lock:
                failures.append(failure)
            stop.set()
        with lock:
            done[unit.order] = rec.results
        if timings:
            log(f"timing: {unit.check.name}{f' {unit.runtime}' if unit.runtime else ''} took "
                f"{ctx.runner.now_ms() - started} ms (stage {unit.check.stage}, lane {unit.check.lane_of(unit.runtime)})")

    def run_lane(units: Sequence[Unit]) -> None:
        for unit in units:
            if stop.is_set():
                return
            run_unit(unit)

    order = 0
    for stage in sorted({c.stage for c in checks}):
        if stop.is_set():
            break
        lanes: dict[str, list[Unit]] = {}
        for check in (c for c in checks if c.stage == stage):
            for runtime in check.runtimes(ctx):
                lanes.setdefault(check.lane_of(runtime), []).append(Unit(check, runtime, order))
                order += 1
        if len(lanes) == 1 or jobs <= 1:
            for units in lanes.values():
                run_lane(units)
        else:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                try:
                    for future in [pool.submit(run_lane, units) for units in lanes.values()]:
                        future.result()
                except BaseException:  # stopped (SIGTERM): no lane starts another check
                    stop.set()
                    raise
    results = tuple(r for key in sorted(done) for r in done[key])
    return Outcome(results, failures[0] if failures else None)


def runtime_results(ctx: Context) -> tuple[RuntimeResult, ...]:
    out = []
    for rt in ctx.wanted:
        kata = rt == "kata"
        out.append(RuntimeResult(
            name=rt,
            shim=str(ctx.paths.kata_dir / "bin/containerd-shim-kata-v2") if kata else ctx.runsc,
            isolation="vm" if kata else "sandbox",
            # Kata's containers use the network stack of its guest VM's kernel.
            network=ctx.contract["NETWORK_VM"] if kata else ctx.facts.get("network", rt),
            hypervisor=ctx.inputs.kata_hypervisor if kata else None,
            guest_kernel=ctx.facts.get("guest_kernel", rt),
            cold_start=ctx.facts.get("cold_start", rt),
            user_network_dns=ctx.facts.get("dns", rt),
        ))
    return tuple(out)


def build_report(ctx: Context, outcome: Outcome) -> Report:
    limits = ctx.facts.get("limits")
    return Report(
        schema=ctx.contract["VERIFY_SCHEMA"],
        host=ctx.inputs.host,
        passed=outcome.failure is None,
        failed_check=outcome.failure.check if outcome.failure else None,
        reason=outcome.failure.message if outcome.failure else None,
        host_kernel=ctx.host_kernel,
        default_runtime=ctx.facts.get("default_runtime") or ctx.wanted[0],
        runtimes=runtime_results(ctx),
        versions=collect_versions(ctx),
        checks=outcome.results,
        limits=limits if isinstance(limits, PolicyLimits) else None,
    )
