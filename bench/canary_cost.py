"""What one canary run costs a host: CPU time per run, as a share of one core
at the canary's interval.

A figure for the note, not a test. Over SSH, as root on a provisioned host
(the lab guest, or a real one), it runs the canary's unit N times
(`systemctl start functions-runtime-canary.service`, which waits for the
run) and reads, around each run, the CPU time of everything systemd runs
(`/sys/fs/cgroup/system.slice/cpu.stat`: the canary's own unit, dockerd,
containerd, the shims and the sandboxes, whose cgroups are gone after the
run but whose time stays in the parent's count). The same wall time with no
run, measured right after, is the host's idle baseline and is subtracted.

    python bench/canary_cost.py --ssh "ssh -p 2222 -i KEY -o UserKnownHostsFile=KNOWN root@127.0.0.1" \\
        --runs 5 --interval 60

Prints a table on stderr and one JSON document on stdout: the medians of the
run's wall time, its CPU seconds (all of system.slice, baseline subtracted)
and the canary unit's own, and that CPU as a share of one core at
`--interval`; no assertion.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.contract import CANARY_UNIT

SSH_TIMEOUT_S = 900
# One round: the slice's CPU, a run, the slice's CPU and the unit's (systemd
# counts a oneshot's CPU per activation), then the same wall time idle and
# the slice's CPU once more (microseconds, nanoseconds).
ROUND = f"""set -e
slice() {{ awk '$1 == "usage_usec" {{print $2}}' /sys/fs/cgroup/system.slice/cpu.stat; }}
unit() {{ systemctl show -P CPUUsageNSec {CANARY_UNIT}.service; }}
s0=$(slice); t0=$(date +%s%N)
systemctl start {CANARY_UNIT}.service
t1=$(date +%s%N); s1=$(slice); u1=$(unit)
sleep $(awk -v a=$t0 -v b=$t1 'BEGIN {{printf "%.3f", (b - a) / 1e9}}')
s2=$(slice)
echo "$s0 $s1 $s2 $u1 $t0 $t1"
"""


def one_round(ssh: list[str]) -> dict[str, float]:
    out = subprocess.run([*ssh, ROUND], check=True, capture_output=True, text=True, timeout=SSH_TIMEOUT_S).stdout
    s0, s1, s2, unit, t0, t1 = (int(v) for v in out.split())
    busy, idle = (s1 - s0) / 1e6, (s2 - s1) / 1e6
    return {"wall_s": (t1 - t0) / 1e9, "cpu_s": max(busy - idle, 0.0), "idle_cpu_s": idle,
            "unit_cpu_s": unit / 1e9}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--ssh", required=True, help="the SSH command that reaches the host as root")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--interval", type=int, default=60, help="the canary's interval, for the share of a core")
    args = parser.parse_args()
    ssh = shlex.split(args.ssh)
    cores = int(subprocess.run([*ssh, "nproc"], check=True, capture_output=True, text=True,
                               timeout=SSH_TIMEOUT_S).stdout)
    rounds = []
    for i in range(args.runs):
        r = one_round(ssh)
        rounds.append(r)
        print(f"run {i + 1}: wall {r['wall_s']:.1f} s, CPU {r['cpu_s']:.2f} s (idle baseline {r['idle_cpu_s']:.2f} s), "
              f"canary unit {r['unit_cpu_s']:.2f} s", file=sys.stderr)
    median = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    share = median["cpu_s"] / args.interval
    print(f"median: wall {median['wall_s']:.1f} s, CPU {median['cpu_s']:.2f} s per run = {share:.1%} of one core "
          f"at {args.interval} s ({cores} cores)", file=sys.stderr)
    print(json.dumps({"runs": args.runs, "interval_s": args.interval, "cores": cores,
                      "median": {k: round(v, 3) for k, v in median.items()},
                      "share_of_one_core": round(share, 4), "rounds": rounds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
