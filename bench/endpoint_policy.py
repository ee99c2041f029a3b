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

`--per-request` measures what the policy adds to one API request, on any
machine with Python: `rules.decide` for a ping, a create (docker-py's body),
and a container call by ID, the last with its ownership lookup (the
plugin's DockerLookups, one inspect on dockerd's socket) and without it.
On a host, as root, `--docker-socket /run/docker.sock --container ID` asks
the real dockerd; otherwise it asks a stand-in on a temporary unix socket
(tests/support/docker_socket.py: a small HTTP server answering one canned
inspect document, NOT dockerd, so its figure is the plugin's side of a lookup
only). Medians in microseconds and the ratio of the lookup arm to the decision
alone; no assertion.

    python bench/endpoint_policy.py --per-request --rounds 2000
    sudo python3 bench/endpoint_policy.py --per-request --docker-socket /run/docker.sock --container fn-1
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

from endpoint_authz.plugin import DockerLookups
from endpoint_authz.rules import OWNER_LABEL, Limits, PolicyConfig, decide

CONSUMER = "functions-runtime consumer"  # components/pki.py: the consumer certificate's CN
LIMITS = {"mem_limit": "256m", "pids_limit": 128, "nano_cpus": 1_000_000_000}
LABELS = {OWNER_LABEL: CONSUMER}
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
    client.containers.run(image, ["true"], remove=True, labels=LABELS, **LIMITS)
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


def _peer_certificate() -> str:
    """A real certificate's PEM, base64 (what dockerd forwards), made with openssl."""
    import base64
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{tmp}/k.pem", "-out", f"{tmp}/c.pem", "-subj", f"/CN={CONSUMER}", "-days", "1"],
            check=True, capture_output=True,
        )
        return base64.b64encode(Path(f"{tmp}/c.pem").read_bytes()).decode()


def per_request(args: argparse.Namespace) -> int:
    import base64
    import tempfile

    config = PolicyConfig(sandbox_runtimes=("runsc", "kata"),
                          limits=Limits(2048 << 20, 1024, 2_000_000_000))
    cert = _peer_certificate()
    who = {"User": CONSUMER, "UserAuthNMethod": "TLS", "RequestPeerCertificates": [cert]}
    body = {"Image": "busybox", "Cmd": ["true"], "Labels": LABELS, "Env": None, "Tty": False,
            "HostConfig": {"Memory": 268435456, "PidsLimit": 128, "NanoCpus": 1_000_000_000, "NetworkMode": "default",
                           "AutoRemove": True, "LogConfig": {"Type": "", "Config": {}}}}
    ref = args.container or "c" * 12
    requests = {
        "ping": {**who, "RequestMethod": "GET", "RequestUri": "/v1.45/_ping"},
        "create": {**who, "RequestMethod": "POST", "RequestUri": "/v1.45/containers/create",
                   "RequestBody": base64.b64encode(json.dumps(body).encode()).decode()},
        "kill": {**who, "RequestMethod": "POST", "RequestUri": f"/v1.45/containers/{ref}/kill"},
    }
    with tempfile.TemporaryDirectory() as tmp:
        stand_in = None
        socket_path = args.docker_socket
        if socket_path is None:
            from tests.support.docker_socket import FakeDockerSocket

            socket_path = Path(tmp) / "stand-in.sock"
            inspect = {"Id": "c" * 64, "Config": {"Labels": LABELS}, "HostConfig": {"Runtime": "runsc"}}
            stand_in = FakeDockerSocket(socket_path, {}, default=inspect, backlog=64)
        lookups = DockerLookups(socket_path)

        class NoLookup:  # the decision alone: the container is found at once
            def container(self, _: str) -> dict[str, Any]:
                return {"Config": {"Labels": LABELS}, "HostConfig": {"Runtime": "runsc"}}

            def exec(self, _: str) -> None:
                return None

            def volume(self, _: str) -> None:
                return None

        arms = {
            "ping": (requests["ping"], None), "create": (requests["create"], None),
            "kill, no lookup": (requests["kill"], NoLookup()), "kill, with lookup": (requests["kill"], lookups),
        }
        times: dict[str, list[float]] = {name: [] for name in arms}
        for _ in range(args.rounds):  # interleaved, so a drift falls on every arm
            for name, (request, source) in arms.items():
                begin = time.perf_counter()
                decision = decide(request, config, False, source)
                times[name].append((time.perf_counter() - begin) * 1e6)
                if not decision.allow:
                    sys.exit(f"{name}: refused: {decision.msg}")
        if stand_in is not None:
            stand_in.close()
    result: dict[str, Any] = {name: round(statistics.median(v), 1) for name, v in times.items()}
    result = {"medianUs": result, "rounds": args.rounds,
              "dockerd": "stand-in (not dockerd)" if args.docker_socket is None else str(args.docker_socket),
              "lookupRatio": round(result["kill, with lookup"] / result["kill, no lookup"], 1),
              "lookupAddsUs": round(result["kill, with lookup"] - result["kill, no lookup"], 1)}
    for name, value in result["medianUs"].items():
        log(f"{name:>18}: median {value} us")
    print(json.dumps(result))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outputs", nargs="?", help="`pulumi stack output --json --show-secrets` of the stack")
    parser.add_argument("--per-request", action="store_true", help="time the policy's decision per request")
    parser.add_argument("--rounds", type=int, default=2000, help="--per-request: requests per arm")
    parser.add_argument("--docker-socket", type=Path, help="--per-request: dockerd's socket (default: a stand-in)")
    parser.add_argument("--container", help="--per-request: a container the lookup inspects (with --docker-socket)")
    parser.add_argument("--ssh", help="the SSH command that reaches the host as root")
    parser.add_argument("--host", help="host name (default: the first verified host)")
    parser.add_argument("--base-url", help="override the Docker host URL (an SSH tunnel, the lab's forward)")
    parser.add_argument("--image", default="functions-runtime/verify:busybox")
    parser.add_argument("--blocks", type=int, default=4, help="blocks per arm (even: ABBA order)")
    parser.add_argument("--runs", type=int, default=5, help="container starts per block")
    args = parser.parse_args()
    if args.per_request:
        return per_request(args)
    if not args.outputs or not args.ssh:
        parser.error("the container-start benchmark needs the stack outputs and --ssh")
    from components.endpoint import docker_client, read_stack_outputs

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
