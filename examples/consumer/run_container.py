"""Run one container on a verified host, as a functions service would.

    pulumi stack output --json --show-secrets -s dev > outputs.json
    python examples/consumer/run_container.py outputs.json

Prints the kernel the container sees (the sandbox's, not the host's). Without
`--host` it picks the first host whose canary passed lately
(components/host_health.py reads each host's node exporter, which
`metrics.allowedCidrs` must admit the caller to) and says why it left any
out; `--any-host` skips that, for a caller outside the private network.
The endpoint's policy refuses a container without memory, PID and CPU
limits (docs/endpoint-policy.md), so every create names them, and lets a
certificate act only on containers labelled with its own common name
(`tls.owner_labels`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from components.endpoint import docker_client, read_stack_outputs
from components.host_health import healthy_hosts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outputs", help="file with `pulumi stack output --json --show-secrets`")
    parser.add_argument("--host", help="host name (default: the first healthy host)")
    parser.add_argument("--any-host", action="store_true", help="do not read the hosts' canaries")
    parser.add_argument("--image", default="functions-runtime/verify:busybox")
    parser.add_argument("--base-url", help="override the Docker host URL (an SSH tunnel, the lab's forward)")
    args = parser.parse_args()
    endpoint, tls = read_stack_outputs(Path(args.outputs).read_text())
    host = args.host
    if host is None and not args.any_host:
        healthy = healthy_hosts(endpoint, log=lambda line: print(line, file=sys.stderr))
        if not healthy:
            sys.exit("no healthy host: every host's canary failed or could not be read (see above)")
        host = healthy[0].name
    client = docker_client(endpoint, tls, host=host, base_url=args.base_url)
    out = client.containers.run(
        args.image, ["uname", "-r"], remove=True, labels=tls.owner_labels,
        mem_limit="256m", pids_limit=128, nano_cpus=1_000_000_000,
    )
    print(out.decode().strip())


if __name__ == "__main__":
    main()
