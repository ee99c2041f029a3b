"""Container cold start by client: Docker (the endpoint's path) against
containerd's own clients, `ctr run --cni` and nerdctl, per runtime, as ratios.

A figure for the note, not a test. It runs on a provisioned host (the lab
guest: `python -m tools.lab up --provision`), as root over SSH; the timing
loops run on the host (wall time from the host's clock), so SSH's cost is
not in the figures. Every arm starts `true` on a network (Docker's bridge,
or configure's CNI network `functions-runtime`) and removes the container:
- `docker-<rt>`: `docker run --rm --runtime <rt> --network bridge IMAGE true`;
- `ctr-<rt>`: `ctr run --rm --cni` on a busybox-static root filesystem,
  runsc through the runc shim's `--runc-binary` (as verify runs it);
- `nerdctl-<rt>`: `nerdctl run --rm --network functions-runtime IMAGE true`,
  only where nerdctl is the real release: in the lab it is a test archive,
  and the arm is left out with that reason.
The arms run in alternating blocks (ABC, CBA, ...), so a drift in the
machine's speed falls on all of them.

    python bench/container_clients.py --ssh "ssh -p 2222 -i KEY root@127.0.0.1" --blocks 4 --runs 5

Prints a table on stderr and one JSON document on stdout: per arm the
median and min/max in ms, and each arm's median over Docker's with the
same runtime.
"""

from __future__ import annotations

import json
import statistics
import sys
from typing import Any

from sandbox_networks import host_bench_arguments, on_host

RUNTIMES = ("runsc", "runc")
NAMESPACE = "functions-runtime-bench"
ROOTFS = "/var/tmp/functions-runtime-bench-rootfs"

PREPARE = rf"""set -e
rm -rf {ROOTFS}; mkdir -p {ROOTFS}/bin {ROOTFS}/proc {ROOTFS}/dev {ROOTFS}/sys {ROOTFS}/etc {ROOTFS}/tmp
cp /usr/bin/busybox {ROOTFS}/bin/busybox; ln -s busybox {ROOTFS}/bin/true; ln -s busybox {ROOTFS}/bin/sh
if nerdctl version 2>/dev/null | grep -q 'hostlab test archive'; then
  echo "nerdctl: a test archive here, not the release"
elif ! command -v nerdctl >/dev/null; then
  echo "nerdctl: not installed"
else
  docker save "$1" | nerdctl --namespace {NAMESPACE} load >/dev/null && echo "nerdctl: ok"
fi
"""

# On the host: N runs of one arm ($1 client, $2 runtime), one duration in ms per line.
TIMING_LOOP = rf"""set -e
client=$1 rt=$2 n=$3 image=$4
runsc=$(docker info --format '{{{{range $k, $v := .Runtimes}}}}{{{{if eq $k "runsc"}}}}{{{{$v.Path}}}}{{{{end}}}}{{{{end}}}}')
for i in $(seq "$n"); do
  start=$(date +%s%N)
  case "$client" in
    docker) docker run --rm --runtime "$rt" --network bridge "$image" true >/dev/null ;;
    ctr)
      if [ "$rt" = runsc ]; then set -- --runc-binary "$runsc"; else set --; fi
      ctr --namespace {NAMESPACE} run --rm --cni --runtime io.containerd.runc.v2 "$@" --rootfs {ROOTFS} \
        "bench-$rt-$i" /bin/true >/dev/null ;;
    nerdctl)
      if [ "$rt" = runsc ]; then r=io.containerd.runsc.v1; else r=io.containerd.runc.v2; fi
      nerdctl --namespace {NAMESPACE} run --rm --runtime "$r" --network functions-runtime "$image" true >/dev/null ;;
  esac
  echo $(( ($(date +%s%N) - start) / 1000000 ))
done
"""

CLEAN_UP = rf"""rm -rf {ROOTFS}
nerdctl --namespace {NAMESPACE} image rm -f "$1" >/dev/null 2>&1 || true
"""


def measure(ssh: list[str], arms: list[tuple[str, str]], blocks: int, runs: int, image: str) -> dict[str, list[int]]:
    times: dict[str, list[int]] = {f"{c}-{r}": [] for c, r in arms}
    for block in range(blocks):
        order = arms if block % 2 == 0 else list(reversed(arms))
        for client, runtime in order:
            out = on_host(ssh, TIMING_LOOP, client, runtime, str(runs), image)
            times[f"{client}-{runtime}"] += [int(line) for line in out.split()]
            print(f"block {block + 1}/{blocks} {client}-{runtime}: {out.split()}", file=sys.stderr)
    return times


def summary(times: dict[str, list[int]], left_out: str | None) -> dict[str, Any]:
    arms: dict[str, Any] = {}
    for arm, values in times.items():
        runtime = arm.split("-", 1)[1]
        base = statistics.median(times[f"docker-{runtime}"])
        arms[arm] = {
            "median_ms": statistics.median(values),
            "min_ms": min(values),
            "max_ms": max(values),
            "runs": len(values),
            "ratio_to_docker": round(statistics.median(values) / base, 2),
        }
    return {"arms": arms, "nerdctl_left_out": left_out}


def main() -> None:
    args, ssh = host_bench_arguments(__doc__)
    try:
        nerdctl = on_host(ssh, PREPARE, args.image).strip()
        clients = ["docker", "ctr"] + (["nerdctl"] if nerdctl == "nerdctl: ok" else [])
        left_out = None if "nerdctl" in clients else nerdctl
        arms = [(c, r) for r in RUNTIMES for c in clients]
        times = measure(ssh, arms, args.blocks, args.runs, args.image)
    finally:
        on_host(ssh, CLEAN_UP, args.image)
    result = summary(times, left_out)
    for arm, row in result["arms"].items():
        print(
            f"{arm:14} median {row['median_ms']:7.0f} ms  (min {row['min_ms']}, max {row['max_ms']}, "
            f"n={row['runs']})  x{row['ratio_to_docker']} of docker",
            file=sys.stderr,
        )
    if left_out:
        print(f"left out: {left_out}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
