"""Container start through the endpoint, with the endpoint policy and without it.

A figure for the note, not a test: how much the authorization plugin adds
to what a functions service waits for, `containers.run(image, ["true"],
remove=True)` with limits through the mutual-TLS endpoint (create, attach,
start, wait, remove: every call goes through the plugin when it is on).

The two arms run in one invocation, in alternating blocks (with, without,
without, with, ...: ABBA, so a drift in the machine's speed falls on both),
switched on the host over SSH: "without" takes `authorization-plugins` out
of /etc/docker/daemon.json and restarts dockerd; the script always puts the
policy back and restarts dockerd before it exits, even on failure.

    pulumi stack output --json --show-secrets -s lab > outputs.json
    python bench/endpoint_policy.py outputs.json --base-url tcp://127.0.0.1:2376 \\
        --ssh "ssh -p 2222 -i ~/.ssh/lab root@127.0.0.1" --blocks 4 --runs 5

Prints a table on stderr and one JSON document on stdout: per arm the
median, the interquartile range and min/max in ms, and the ratio of the
medians (with policy / without; the issue's goal is at most 1.05).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.endpoint import docker_client, read_stack_outputs

LIMITS = {"mem_limit": "256m", "pids_limit": 128, "nano_cpus": 1_000_000_000}
DOCKER_READY_TIMEOUT_S = 120  # dockerd answering after a restart (TCG guests are slow)
SSH_TIMEOUT_S = 300

# Runs on the host as root: put the policy in or take it out of daemon.json,
# restart dockerd, wait for it. Python, since the hosts have python3.
TOGGLE = r"""
import json, subprocess, sys, time
path = "/etc/docker/daemon.json"
want = sys.argv[1] == "on"
doc = json.load(open(path))
has = "authorization-plugins" in doc
if want and not has:
    doc["authorization-plugins"] = ["functions-runtime-authz"]
if not want and has:
    del doc["authorization-plugins"]
if want != has:
    open(path, "w").write(json.dumps(doc, indent=2) + "\n")
    subprocess.run(["systemctl", "restart", "docker.service"], check=True)
deadline = time.monotonic() + float(sys.argv[2])
while subprocess.run(["curl", "-fsS", "--max-time", "5", "--unix-socket", "/run/docker.sock",
                      "http://localhost/_ping"], capture_output=True).returncode != 0:
    if time.monotonic() > deadline:
        sys.exit("dockerd did not answer after its restart")
    time.sleep(1)
print(json.dumps({"policy": want}))
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def set_policy(ssh: list[str], on: bool) -> None:
    command = f"python3 -c {shlex.quote(TOGGLE)} {'on' if on else 'off'} {DOCKER_READY_TIMEOUT_S}"
    subprocess.run([*ssh, command], check=True, timeout=SSH_TIMEOUT_S, capture_output=True, text=True)


def start_ms(client: Any, image: str) -> float:
    begin = time.perf_counter()
    client.containers.run(image, ["true"], remove=True, **LIMITS)
    return (time.perf_counter() - begin) * 1000


def summary(values: list[float]) -> dict[str, Any]:
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return {
        "runs": len(values),
        "medianMs": round(statistics.median(values), 1),
        "iqrMs": [round(q[0], 1), round(q[2], 1)],
        "minMs": round(min(values), 1),
        "maxMs": round(max(values), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outputs", help="`pulumi stack output --json --show-secrets` of the stack")
    parser.add_argument("--ssh", required=True, help="the SSH command that reaches the host as root")
    parser.add_argument("--host", help="host name (default: the first verified host)")
    parser.add_argument("--base-url", help="override the Docker host URL (an SSH tunnel, the lab's forward)")
    parser.add_argument("--image", default="functions-runtime/verify:busybox")
    parser.add_argument("--blocks", type=int, default=4, help="blocks per arm (even: ABBA order)")
    parser.add_argument("--runs", type=int, default=5, help="container starts per block")
    args = parser.parse_args()
    endpoint, tls = read_stack_outputs(Path(args.outputs).read_text())
    ssh = shlex.split(args.ssh)
    times: dict[str, list[float]] = {"with": [], "without": []}
    order = []
    for i in range(args.blocks):
        pair = ("with", "without") if i % 2 == 0 else ("without", "with")
        order.extend(pair)
    try:
        for arm in order:
            set_policy(ssh, arm == "with")
            client = docker_client(endpoint, tls, host=args.host, base_url=args.base_url, timeout=300)
            try:
                start_ms(client, args.image)  # warm-up, not counted: the first start after a restart
                block = [start_ms(client, args.image) for _ in range(args.runs)]
            finally:
                client.close()
            times[arm].extend(block)
            log(f"{arm:>7} policy: {', '.join(f'{t:.0f}' for t in block)} ms")
    finally:
        set_policy(ssh, True)
    result = {arm: summary(values) for arm, values in times.items()}
    result["ratio"] = round(result["with"]["medianMs"] / result["without"]["medianMs"], 3)
    result["order"] = order
    log(
        f"median with {result['with']['medianMs']} ms (IQR {result['with']['iqrMs']}), "
        f"without {result['without']['medianMs']} ms (IQR {result['without']['iqrMs']}): "
        f"ratio {result['ratio']}"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
