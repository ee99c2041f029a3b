"""Real-cloud acceptance through Pulumi's Automation API.

What it proves that nothing else can: on real Hetzner, `pulumi up` creates a
Cloud host that verifies with gVisor, the exported endpoint runs a container
through docker-py (over an SSH tunnel to the private address, the host key
pinned from the endpoint), a second `up` changes nothing, and `destroy`
removes everything. The dedicated variant proves Kata on a real KVM host.

Budget: one cx23 for about 15-25 minutes (well under one euro cent per run
at Hetzner's hourly price); the dedicated variant adopts an existing server
and costs nothing extra. Stacks are ephemeral (unique names, local state in
a temporary directory) and always destroyed and removed in `finally`.

The golden-image variant proves what the mocks cannot: the plan of a build
(the first `up` builds and boots the image, the second plans only the
builder's removal, the third nothing), and a rollout to a new image that
retires each old host through its drain step. Budget: two cx23
and a builder for about 40 minutes, and snapshots deleted in `finally`.

Skipped, with the reason printed, without the Pulumi CLI, `HCLOUD_TOKEN`,
and `ACCEPTANCE_SSH_SOURCE_CIDR` (the egress address of the machine running
the test, as x.y.z.w/32, so the firewall lets it in).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.contract import AUTHZ_OWNER_LABEL, CONSUMER_COMMON_NAME
from components.endpoint import EndpointHost, docker_client, read_client_tls, read_endpoint

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.acceptance
TUNNEL_WAIT_SECONDS = 30


def require(*names: str) -> dict[str, str]:
    if shutil.which("pulumi") is None:
        pytest.skip("acceptance needs the Pulumi CLI on PATH (not installable on this machine)")
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        pytest.skip(f"acceptance needs {', '.join(missing)} in the environment")
    return {n: os.environ[n] for n in names}


@contextlib.contextmanager
def ephemeral_stack(tmp_path: Path, config: dict[str, Any], secrets: dict[str, str]) -> Iterator[Any]:
    from pulumi import automation as auto

    name = f"accept-{uuid.uuid4().hex[:8]}"
    env = {
        "PULUMI_BACKEND_URL": f"file://{tmp_path / 'state'}",
        "PULUMI_CONFIG_PASSPHRASE": uuid.uuid4().hex,
    }
    (tmp_path / "state").mkdir()
    stack = auto.create_stack(name, work_dir=str(ROOT), opts=auto.LocalWorkspaceOptions(env_vars=env))
    try:
        for key, value in config.items():
            stack.set_config(key, auto.ConfigValue(value=value if isinstance(value, str) else _json(value)))
        for key, value in secrets.items():
            stack.set_config(key, auto.ConfigValue(value=value, secret=True))
        yield stack
    finally:
        try:
            stack.destroy(on_output=print)
        finally:
            stack.workspace.remove_stack(name)


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def tunnel(host: EndpointHost, key_file: Path, port: int, tmp_path: Path) -> Iterator[str]:
    """ssh -L to the host's private endpoint, pinning the exported host key."""
    known = tmp_path / "known_hosts"
    known.write_text(f"{host.public_address} {host.ssh_host_key}\n")
    local = _free_port()
    proc = subprocess.Popen(
        [
            "ssh", "-N", "-i", str(key_file), "-o", f"UserKnownHostsFile={known}",
            "-o", "StrictHostKeyChecking=yes", "-o", "ExitOnForwardFailure=yes",
            "-L", f"127.0.0.1:{local}:{host.private_address}:{port}", f"root@{host.public_address}",
        ]
    )
    try:
        deadline = time.monotonic() + TUNNEL_WAIT_SECONDS
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", local), timeout=1):
                break
            time.sleep(0.5)
        yield f"tcp://127.0.0.1:{local}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def admin_key(tmp_path: Path) -> tuple[Path, str]:
    key = tmp_path / "admin_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key, (tmp_path / "admin_ed25519.pub").read_text().strip()


def run_through_endpoint(outputs: dict[str, Any], key_file: Path, tmp_path: Path) -> tuple[str, str]:
    endpoint = read_endpoint(outputs["runtimeEndpoint"].value)
    tls = read_client_tls(outputs["runtimeClientTls"].value)
    host = endpoint.host()
    with tunnel(host, key_file, 2376, tmp_path) as url:
        client = docker_client(endpoint, tls, base_url=url)
        kernel = client.containers.run("functions-runtime/verify:busybox", ["uname", "-r"], remove=True)
        client.close()
    return kernel.decode().strip(), host.host_kernel or ""


def assert_second_up_changes_nothing(stack: Any) -> None:
    again = stack.up(on_output=print)
    changes = {k: v for k, v in (again.summary.resource_changes or {}).items() if k != "same"}
    assert not changes, f"second `pulumi up` changed {changes}"


def cloud_config(group: str, count: int, admin_public_key: str, ssh_source: str) -> dict[str, Any]:
    """A gVisor stack of `count` cx23 servers the test machine may SSH into."""
    return {
        "functions-runtime:isolation": "sandbox",
        "functions-runtime:hosts": [
            {"name": group, "source": "hcloud", "count": count, "serverType": "cx23", "location": "fsn1"}
        ],
        "functions-runtime:admin": {"sshKeys": [admin_public_key], "sshSourceCidrs": [ssh_source]},
    }


def test_cloud_host_verifies_serves_a_container_and_is_idempotent(tmp_path):
    env = require("HCLOUD_TOKEN", "ACCEPTANCE_SSH_SOURCE_CIDR")
    key_file, public_key = admin_key(tmp_path)
    config = cloud_config("accept", 1, public_key, env["ACCEPTANCE_SSH_SOURCE_CIDR"])
    with ephemeral_stack(tmp_path, config, {"hcloud:token": env["HCLOUD_TOKEN"]}) as stack:
        result = stack.up(on_output=print)
        guest_kernel, host_kernel = run_through_endpoint(result.outputs, key_file, tmp_path)
        assert guest_kernel and guest_kernel != host_kernel
        assert_second_up_changes_nothing(stack)


def test_dedicated_kvm_host_runs_kata(tmp_path):
    env = require(
        "ACCEPTANCE_SSH_SOURCE_CIDR",
        "ACCEPTANCE_KVM_ADDRESS",
        "ACCEPTANCE_KVM_PRIVATE_ADDRESS",
        "ACCEPTANCE_KVM_HOST_KEY",
        "ACCEPTANCE_KVM_SSH_KEY_FILE",
    )
    key_file = Path(env["ACCEPTANCE_KVM_SSH_KEY_FILE"])
    config = {
        "functions-runtime:isolation": "vm",
        "functions-runtime:hosts": [
            {
                "name": "kvm",
                "source": "dedicated",
                "addresses": [
                    {
                        "address": env["ACCEPTANCE_KVM_ADDRESS"],
                        "privateAddress": env["ACCEPTANCE_KVM_PRIVATE_ADDRESS"],
                        "hostKey": env["ACCEPTANCE_KVM_HOST_KEY"],
                    }
                ],
            }
        ],
        "functions-runtime:admin": {"sshSourceCidrs": [env["ACCEPTANCE_SSH_SOURCE_CIDR"]]},
        "functions-runtime:endpoint": {"allowedCidrs": [f"{env['ACCEPTANCE_KVM_PRIVATE_ADDRESS']}/32"]},
    }
    secrets = {"functions-runtime:dedicatedSshKey": key_file.read_text()}
    with ephemeral_stack(tmp_path, config, secrets) as stack:
        result = stack.up(on_output=print)
        endpoint = read_endpoint(result.outputs["runtimeEndpoint"].value)
        assert [r.name for r in endpoint.host().runtimes] == ["kata"]
        assert endpoint.host().runtimes[0].isolation == "vm"
        guest_kernel, host_kernel = run_through_endpoint(result.outputs, key_file, tmp_path)
        assert guest_kernel != host_kernel
        assert_second_up_changes_nothing(stack)


def delete_golden_images(token: str, stack_slug: str) -> None:
    """Snapshots outlive `destroy` (retain_on_delete): the test removes its own."""
    from components.image_retention import GOLDEN_LABEL, STACK_LABEL, HetznerAPI

    api = HetznerAPI(os.environ.get("HCLOUD_ENDPOINT", "https://api.hetzner.cloud/v1"), token)
    selector = f"{STACK_LABEL}={stack_slug},{GOLDEN_LABEL}"
    for image in api.list_all("/images", "images", {"type": "snapshot", "label_selector": selector}):
        api.delete_image(int(image["id"]))


def changes_of(preview: Any) -> dict[str, int]:
    return {k: v for k, v in (preview.change_summary or {}).items() if k != "same"}


def test_golden_image_builds_once_and_a_rollout_retires_old_hosts_through_their_drain(tmp_path):
    env = require("HCLOUD_TOKEN", "ACCEPTANCE_SSH_SOURCE_CIDR")
    key_file, public_key = admin_key(tmp_path)
    config = {
        **cloud_config("gold", 2, public_key, env["ACCEPTANCE_SSH_SOURCE_CIDR"]),
        "functions-runtime:goldenImage": {"enabled": True, "maxAgeDays": 365},
        "functions-runtime:rollout": {"batchSize": 1, "drainTimeoutSeconds": 300},
    }
    slug = None
    try:
        with ephemeral_stack(tmp_path, config, {"hcloud:token": env["HCLOUD_TOKEN"]}) as stack:
            slug = stack.name
            built = stack.up(on_output=print)
            downloads = built.outputs["artifactDownloads"].value
            assert downloads["bytes"]["internet"] == 0, f"golden hosts fetched release files: {downloads}"
            first_image = built.outputs["goldenImage"].value["imageId"]
            # The next up removes the builder and nothing else; the one after plans nothing.
            plan = changes_of(stack.preview(on_output=print))
            assert set(plan) == {"delete"}, plan
            stack.up(on_output=print)
            assert_second_up_changes_nothing(stack)

            # A function running on each host when a new image rolls in.
            endpoint = read_endpoint(built.outputs["runtimeEndpoint"].value)
            tls = read_client_tls(built.outputs["runtimeClientTls"].value)
            running = []
            for host in endpoint.hosts:
                with tunnel(host, key_file, 2376, tmp_path) as url:
                    client = docker_client(endpoint, tls, base_url=url)
                    c = client.containers.run(
                        "functions-runtime/verify:busybox", ["sh", "-c", "sleep 120; echo done"], detach=True,
                        mem_limit="64m", pids_limit=32, nano_cpus=100_000_000,
                        labels={AUTHZ_OWNER_LABEL: CONSUMER_COMMON_NAME},
                    )
                    running.append((host, c.id))
                    client.close()
            stack.set_config("functions-runtime:goldenImage", auto_value({"enabled": True, "maxAgeDays": 364}))
            lines: list[str] = []
            rolled = stack.up(on_output=lambda line: (print(line), lines.append(line)))
            assert rolled.outputs["goldenImage"].value["imageId"] != first_image
            new_hosts = read_endpoint(rolled.outputs["runtimeEndpoint"].value).hosts
            assert {h.name for h in new_hosts} == {h.name for h in endpoint.hosts}
            assert not {h.private_address for h in new_hosts} & {h.private_address for h, _ in running}
            # Each old host was retired through its drain step (the hostlab proves what the step does).
            summary = rolled.summary.resource_changes or {}
            assert summary.get("replace", 0) >= 2, summary
            assert sum("-retire" in line and "delet" in line for line in lines) >= 2, "no host was retired"
    finally:
        if slug is not None:
            delete_golden_images(env["HCLOUD_TOKEN"], slug)


def auto_value(value: Any) -> Any:
    from pulumi import automation as auto

    return auto.ConfigValue(value=_json(value))
