"""The program's own cost under Pulumi's mocks, for 1, 10 and 100 hosts.

Measures what the Python program spends building the resource graph
(settings, payload, user-data, TLS stand-ins, registrations), not provider
or network time: that is what grows with fleet size on every `pulumi
preview`. Reports the median wall time of several runs, the resources
registered, and the cost per resource. Run: `python bench/program_cost.py`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.program import config_from_stack_file, run_program

ROOT = Path(__file__).resolve().parents[1]


def config_for(hosts: int) -> dict[str, Any]:
    cfg = config_from_stack_file(ROOT / "Pulumi.dev.yaml")
    cfg["functions-runtime:hosts"] = [
        {"name": "cloud", "source": "hcloud", "count": hosts, "serverType": "cx23", "location": "fsn1"}
    ]
    return cfg


def measure(hosts: int, runs: int) -> dict[str, Any]:
    times = []
    resources = 0
    for _ in range(runs):
        start = time.perf_counter()
        result = run_program(config_for(hosts), stack="bench")
        times.append(time.perf_counter() - start)
        resources = len(result.resources)
    median = statistics.median(times)
    return {
        "hosts": hosts,
        "runs": runs,
        "resources": resources,
        "median_s": round(median, 3),
        "ms_per_resource": round(1000 * median / resources, 3),
        "ms_per_host": round(1000 * median / hosts, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--runs", type=int, default=5, help="runs per size (median reported)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    rows = [measure(h, args.runs if h < 100 else max(3, args.runs // 2)) for h in args.hosts]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'hosts':>6} {'resources':>10} {'median s':>9} {'ms/resource':>12} {'ms/host':>8}")
    for r in rows:
        print(f"{r['hosts']:>6} {r['resources']:>10} {r['median_s']:>9} {r['ms_per_resource']:>12} {r['ms_per_host']:>8}")
    base = rows[0]
    for r in rows[1:]:
        ratio = (r["ms_per_resource"] / base["ms_per_resource"]) if base["ms_per_resource"] else float("nan")
        print(f"cost per resource at {r['hosts']} hosts vs {base['hosts']}: x{ratio:.2f}")


if __name__ == "__main__":
    main()
