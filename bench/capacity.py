"""Capacity through the endpoint: concurrent sandbox starts, gVisor against
runc on the same host, and what clients see when the policy plugin dies and
dockerd restarts under load.

A figure for the note, not a test. Every start goes through the mutual-TLS
endpoint and the endpoint policy, as a functions service's would. runc is
not a sandbox, so the policy refuses it; for the runc arm the bench adds
`runc` to the policy's sandbox runtimes over SSH (the plugin re-reads its
file) and always puts the file back, even on failure.

    python bench/capacity.py OUTPUTS_JSON --base-url tcp://127.0.0.1:2376 \\
        --ssh "ssh -p 2222 -i KEY -o UserKnownHostsFile=KNOWN root@127.0.0.1" --sandboxes 6 --rounds 3 --faults

Starts: per arm and round, `--sandboxes` detached `sleep` containers at once;
a start is `containers.run(..., detach=True)` (create and start) returning.
Reports p50 and p95 start time, the start rate (starts per second of the
round's wall time), and runsc/runc ratios. Faults (`--faults`): two
sandboxes run throughout; starts keep coming from `--sandboxes` workers
while the plugin is killed, then dockerd is restarted; every call is
bounded in time. Reports each outcome's count with its first words, whether
the two sandboxes survived (same ID, same start time), and whether the
fleet's count adds up: every name at most once, every successful start's
container there. One JSON document on stdout; no assertion.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.contract import AUTHZ_CONFIG, AUTHZ_UNIT
from components.endpoint import docker_client, read_stack_outputs

SSH_TIMEOUT_S = 300
CALL_TIMEOUT_S = 180
FAILED_CALL_PAUSE_S = 1.0
# The fault phases: load alone, the plugin killed (systemd restarts it), dockerd restarted, load after.
PHASE_S = (20, 20, 30)
MARK = "functions-runtime-bench"
ALLOW_RUNC = (f"python3 -c \"import json,sys; p='{AUTHZ_CONFIG}'; d=json.load(open(p)); "
              "d['sandboxRuntimes']=sorted(set(d['sandboxRuntimes'])|{'runc'}); json.dump(d, open(p+'.bench','w'))\" && "
              f"cp -p {AUTHZ_CONFIG} {AUTHZ_CONFIG}.orig && mv {AUTHZ_CONFIG}.bench {AUTHZ_CONFIG}")
RESTORE = f"if [ -f {AUTHZ_CONFIG}.orig ]; then mv {AUTHZ_CONFIG}.orig {AUTHZ_CONFIG}; fi"


def ssh_run(ssh: list[str], command: str) -> str:
    return subprocess.run([*ssh, command], check=True, capture_output=True, text=True, timeout=SSH_TIMEOUT_S).stdout


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Bench:
    def __init__(self, outputs: Path, base_url: str, image: str) -> None:
        self.endpoint, self.tls = read_stack_outputs(outputs.read_text())
        self.base_url, self.image = base_url, image
        limits = self.endpoint.limits
        self.limits = {"mem_limit": "256m", "pids_limit": 128, "nano_cpus": 500_000_000} if limits is None else {
            "mem_limit": f"{min(256, limits.max_memory_mib)}m", "pids_limit": min(128, limits.max_pids),
            "nano_cpus": 500_000_000}
        self.local = threading.local()

    def client(self) -> Any:
        if not hasattr(self.local, "client"):
            self.local.client = docker_client(self.endpoint, self.tls, base_url=self.base_url, timeout=CALL_TIMEOUT_S)
        return self.local.client

    def start(self, runtime: str, name: str) -> tuple[str, float, str]:
        """(outcome, seconds, detail) of one detached start."""
        began = time.monotonic()
        try:
            self.client().containers.run(self.image, ["sleep", "300"], detach=True, name=name, runtime=runtime,
                                         labels={**self.tls.owner_labels, MARK: "1"}, **self.limits)
            return "ok", time.monotonic() - began, ""
        except Exception as err:  # every failure is an outcome to report
            kind = "timeout" if "timed out" in str(err).lower() else "error"
            return kind, time.monotonic() - began, " ".join(str(err).split())[:160]

    def clean(self, ssh: list[str]) -> None:
        ssh_run(ssh, f"docker ps -aq --filter label={MARK} | xargs -r docker rm -f >/dev/null")


def starts(bench: Bench, runtime: str, n: int) -> dict[str, Any]:
    with ThreadPoolExecutor(n) as pool:
        began = time.monotonic()
        results = list(pool.map(lambda i: bench.start(runtime, f"{MARK}-{runtime}-{uuid.uuid4().hex[:8]}"), range(n)))
        wall = time.monotonic() - began
    ok = [s for kind, s, _ in results if kind == "ok"]
    return {"ok": len(ok), "failed": [d for kind, _, d in results if kind != "ok"], "times_s": ok, "wall_s": wall}


def capacity(bench: Bench, ssh: list[str], n: int, rounds: int) -> dict[str, Any]:
    arms: dict[str, list[dict[str, Any]]] = {"runsc": [], "runc": []}
    try:
        ssh_run(ssh, ALLOW_RUNC)
        for i in range(rounds):
            # ABBA: a drift in the machine's speed falls on both arms.
            for runtime in ("runsc", "runc") if i % 2 == 0 else ("runc", "runsc"):
                arms[runtime].append(starts(bench, runtime, n))
                bench.clean(ssh)
    finally:
        ssh_run(ssh, RESTORE)
        bench.clean(ssh)
    summary = {}
    for runtime, rs in arms.items():
        times = [t for r in rs for t in r["times_s"]]
        summary[runtime] = {
            "starts": len(times), "failed": sum(len(r["failed"]) for r in rs),
            "p50_s": round(statistics.median(times), 3) if times else None,
            "p95_s": round(percentile(times, 0.95), 3) if times else None,
            "rate_per_s": round(sum(r["ok"] for r in rs) / sum(r["wall_s"] for r in rs), 3),
        }
    runsc, runc = summary["runsc"], summary["runc"]
    if runsc["p50_s"] and runc["p50_s"]:
        summary["ratio_p50"] = round(runsc["p50_s"] / runc["p50_s"], 2)
        summary["ratio_p95"] = round(runsc["p95_s"] / runc["p95_s"], 2)
        summary["ratio_rate"] = round(runsc["rate_per_s"] / runc["rate_per_s"], 2)
    return summary


def faults(bench: Bench, ssh: list[str], n: int) -> dict[str, Any]:
    survivors = [f"{MARK}-survivor-{i}" for i in range(2)]
    for name in survivors:
        assert bench.start("runsc", name)[0] == "ok", f"could not start {name}"
    before = {name: ssh_run(ssh, f"docker inspect -f '{{{{.Id}}}} {{{{.State.StartedAt}}}}' {name}").strip()
              for name in survivors}
    attempts: list[tuple[str, str, float, str, float]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            name = f"{MARK}-load-{uuid.uuid4().hex[:8]}"
            began = time.time()
            kind, seconds, detail = bench.start("runsc", name)
            with lock:
                attempts.append((name, kind, seconds, detail, began))
            if kind != "ok":
                time.sleep(FAILED_CALL_PAUSE_S)  # as a client backs off; the count stays readable

    events = []
    with ThreadPoolExecutor(n) as pool:
        for _ in range(n):
            pool.submit(worker)
        events.append(("load", time.time()))
        time.sleep(PHASE_S[0])
        events.append(("plugin killed", time.time()))
        ssh_run(ssh, f"systemctl kill -s KILL {AUTHZ_UNIT}")
        time.sleep(PHASE_S[1])
        events.append(("dockerd restarted", time.time()))
        ssh_run(ssh, "systemctl restart docker")
        time.sleep(PHASE_S[2])
        stop.set()
    after = {name: ssh_run(ssh, f"docker inspect -f '{{{{.Id}}}} {{{{.State.StartedAt}}}}' {name} 2>&1 || true").strip()
             for name in survivors}
    names = ssh_run(ssh, f"docker ps -a --filter label={MARK} --format '{{{{.Names}}}} {{{{.State}}}}'").split("\n")
    present = Counter(line.split()[0] for line in names if line.strip())
    states = dict(line.split()[:2] for line in names if line.strip())
    ok_names = [a[0] for a in attempts if a[1] == "ok"]
    bench.clean(ssh)
    starts = [at for _, at in events]

    def phase(at: float) -> str:
        return next((events[i][0] for i in range(len(starts) - 1, -1, -1) if at >= starts[i]), events[0][0])

    outcomes = Counter((phase(a[4]), a[1], a[3][:120]) for a in attempts)
    return {
        "attempts": len(attempts),
        "outcomes": [{"phase": p, "kind": k, "detail": d, "count": c} for (p, k, d), c in sorted(outcomes.items())],
        "slowest_call_s": round(max((a[2] for a in attempts), default=0.0), 1),
        "survived_dockerd_restart": {name: before[name] == after[name] for name in survivors},
        "names_twice": [n for n, c in present.items() if c > 1],
        "ok_but_missing": [n for n in ok_names if n not in present],
        "failed_but_present": sorted(
            f"{a[0]} ({states.get(a[0])})" for a in attempts if a[1] != "ok" and a[0] in present),
        "events": events,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("outputs", type=Path, help="`pulumi stack output --json --show-secrets` (the lab's outputs.json)")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--ssh", required=True, help="the SSH command that reaches the host as root")
    parser.add_argument("--image", default="functions-runtime/verify:busybox")
    parser.add_argument("--sandboxes", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--faults", action="store_true")
    parser.add_argument("--faults-only", action="store_true", help="skip the capacity rounds")
    args = parser.parse_args()
    ssh = shlex.split(args.ssh)
    bench = Bench(args.outputs, args.base_url, args.image)
    result: dict[str, Any] = {"sandboxes": args.sandboxes, "rounds": args.rounds}
    if not args.faults_only:
        result["capacity"] = capacity(bench, ssh, args.sandboxes, args.rounds)
        print(json.dumps(result["capacity"]), file=sys.stderr)
    if args.faults or args.faults_only:
        result["faults"] = faults(bench, ssh, args.sandboxes)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
