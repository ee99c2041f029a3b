"""Container cold start by network path: gVisor's own netstack, gVisor on the
host kernel's network stack (runsc --network=host), and runc, as ratios.

A figure for the note, not a test. It runs on a provisioned host (the lab
guest: `python -m tools.lab up --provision`), as root over SSH, because
the endpoint's policy admits only the host's sandbox runtimes: the timing
loop runs on the host itself (`docker run --rm --network bridge IMAGE true`,
wall time from the host's clock), so SSH's cost is not in the figures.

For the host-network arm the script registers a second runtime,
`runsc-hostnet` (the same runsc binary with `--network=host`), in
/etc/docker/daemon.json and restarts dockerd; it always restores the file
and restarts dockerd before it exits, even on failure. The arms run in
alternating blocks (ABC, CBA, ...), so a drift in the machine's speed falls
on all of them.

    python bench/sandbox_networks.py --ssh "ssh -p 2222 -i KEY root@127.0.0.1" --blocks 4 --runs 5

Prints a table on stderr and one JSON document on stdout: per arm the
median and min/max in ms, and each arm's median over runc's.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from typing import Any

IMAGE = "functions-runtime/verify:busybox"
ARMS = ("runsc", "runsc-hostnet", "runc")

# On the host: N runs of one arm, one duration in ms per line.
TIMING_LOOP = r"""set -e
for i in $(seq "$2"); do
  start=$(date +%s%N)
  docker run --rm --runtime "$1" --network bridge "$3" true >/dev/null
  echo $(( ($(date +%s%N) - start) / 1000000 ))
done
"""

ADD_HOSTNET = r"""set -e
cp -p /etc/docker/daemon.json /root/daemon.json.bench-saved
python3 - <<'PY'
import json
path = "/etc/docker/daemon.json"
daemon = json.load(open(path))
runsc = daemon["runtimes"]["runsc"]
args = [a for a in runsc.get("runtimeArgs", []) if not a.startswith("--network")]
daemon["runtimes"]["runsc-hostnet"] = {"path": runsc["path"], "runtimeArgs": [*args, "--network=host"]}
json.dump(daemon, open(path, "w"), indent=2)
PY
systemctl restart docker
for i in $(seq 120); do docker info >/dev/null 2>&1 && exit 0; sleep 1; done
exit 1
"""

RESTORE = r"""set -e
if [ -f /root/daemon.json.bench-saved ]; then
  mv -f /root/daemon.json.bench-saved /etc/docker/daemon.json
  systemctl restart docker
  for i in $(seq 120); do docker info >/dev/null 2>&1 && exit 0; sleep 1; done
  exit 1
fi
"""


def on_host(ssh: list[str], script: str, *args: str, timeout: float = 1800) -> str:
    command = "bash -s -- " + " ".join(shlex.quote(a) for a in args)
    proc = subprocess.run([*ssh, command], input=script, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"on the host: exit {proc.returncode}: {proc.stderr.strip()[-400:]}")
    return proc.stdout


def measure(ssh: list[str], blocks: int, runs: int, image: str) -> dict[str, list[int]]:
    times: dict[str, list[int]] = {arm: [] for arm in ARMS}
    for block in range(blocks):
        order = ARMS if block % 2 == 0 else tuple(reversed(ARMS))
        for arm in order:
            out = on_host(ssh, TIMING_LOOP, arm, str(runs), image)
            times[arm] += [int(line) for line in out.split()]
            print(f"block {block + 1}/{blocks} {arm}: {out.split()}", file=sys.stderr)
    return times


def summary(times: dict[str, list[int]]) -> dict[str, Any]:
    base = statistics.median(times["runc"])
    arms = {
        arm: {
            "median_ms": statistics.median(values),
            "min_ms": min(values),
            "max_ms": max(values),
            "runs": len(values),
            "ratio_to_runc": round(statistics.median(values) / base, 2),
        }
        for arm, values in times.items()
    }
    return {"arms": arms}


def host_bench_arguments(doc: str | None) -> tuple[argparse.Namespace, list[str]]:
    """The options of a benchmark that runs on a provisioned host; (options, ssh command)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ssh", required=True, help="the ssh command that reaches the host as root")
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--image", default=IMAGE)
    args = parser.parse_args()
    return args, shlex.split(args.ssh)


def main() -> None:
    args, ssh = host_bench_arguments(__doc__)
    try:
        on_host(ssh, ADD_HOSTNET)
        times = measure(ssh, args.blocks, args.runs, args.image)
    finally:
        on_host(ssh, RESTORE)
    result = summary(times)
    for arm, row in result["arms"].items():
        print(
            f"{arm:14} median {row['median_ms']:7.0f} ms  (min {row['min_ms']}, max {row['max_ms']}, "
            f"n={row['runs']})  x{row['ratio_to_runc']} of runc",
            file=sys.stderr,
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
