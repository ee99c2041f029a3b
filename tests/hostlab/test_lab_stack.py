"""The README's "Try it locally", end to end but for the Pulumi CLI itself.

`python -m tools.lab up` boots the lab guest in the background and
prints the `pulumi config set` lines for the `lab` stack. This test applies
exactly those lines to `Pulumi.lab.yaml` (as the CLI would store them), runs
the program under the mocks with the result, replays its remote steps over
SSH to the connection the program built (127.0.0.1 and the forwarded port,
the pinned host key, the key `lab up` made), as `pulumi up -s lab` would,
then reaches the endpoint as the README shows a consumer doing, and stops
the guest with `lab down`.

Changed for the test, through the CLI's own options and real stack
settings: free ports instead of 2222/2376 (so a developer's own lab is left
alone; `lab up` prints the sshPort line for that), its own state directory,
and `artifacts.mirror`/`artifacts.catalog` pointing at the lab's test
archives, because GitHub is unreachable here and the guest's nested
/dev/kvm makes the install step fetch Kata. The verify image is the stack's
default, built on the guest from Debian's busybox-static: no archive, no
registry. Not proven here: the Pulumi CLI, its state backend and secrets
provider, pulumi-command's own SSH client.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from pathlib import Path
from typing import Any

import pytest

from components.endpoint import docker_client, read_client_tls, read_endpoint
from tests.hostlab import testbed
from tests.hostlab.reports import add_lab_report
from tests.support.program import config_from_stack_file, run_program
from tools.lab import cli as lab_cli
from tools.lab.replay import ConnectionShell, host_steps, log_replay, replay
from tools.lab.vm import free_port

pytestmark = [pytest.mark.hostlab, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
STACK_FILE = ROOT / "Pulumi.lab.yaml"
HOST = "lab-1"
DOCKER_PY_TIMEOUT_S = 300
CONFIG_SET = re.compile(r"^\s*(pulumi config set -s lab .*)$", re.MULTILINE)


def path_value(text: str) -> Any:
    """How `pulumi config set --path` stores a value: bools and integers not
    starting with 0 typed, everything else a string."""
    if text in ("true", "false"):
        return text == "true"
    if re.fullmatch(r"-?[1-9][0-9]*|0", text):
        return int(text)
    return text


def apply_config_set(config: dict[str, Any], line: str) -> None:
    """Apply one printed `pulumi config set` line to a stack's config."""
    words = shlex.split(line)
    assert words[:5] == ["pulumi", "config", "set", "-s", "lab"], line
    if words[5] == "--secret":
        key, redirect, source = words[6:9]
        assert redirect == "<", line
        config[key] = Path(source).read_text()
        return
    assert words[5] == "--path", line
    key, rest = re.fullmatch(r"([^.\[]+)(.*)", words[6]).groups()
    parts = [int(i) if i else name for name, i in re.findall(r"\.?([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]", rest)]
    node = config[key]
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = path_value(words[7])


def test_apply_config_set_reads_the_lines_as_the_cli_stores_them(tmp_path):
    key = tmp_path / "id"
    key.write_text("PRIVATE\n")
    config = {"functions-runtime:hosts": [{"sshPort": 2222, "addresses": [{"hostKey": "old"}]}]}
    apply_config_set(config, "pulumi config set -s lab --path 'functions-runtime:hosts[0].addresses[0].hostKey' 'ssh-ed25519 AAAA x'")
    apply_config_set(config, "pulumi config set -s lab --path 'functions-runtime:hosts[0].sshPort' 40022")
    apply_config_set(config, f"pulumi config set -s lab --secret functions-runtime:dedicatedSshKey < {key}")
    assert config == {
        "functions-runtime:hosts": [{"sshPort": 40022, "addresses": [{"hostKey": "ssh-ed25519 AAAA x"}]}],
        "functions-runtime:dedicatedSshKey": "PRIVATE\n",
    }


def test_lab_up_then_the_lab_stack_provisions_and_verifies_the_guest(guest_image, hostlab_cache_dir, tmp_path, capsys):
    state = tmp_path / "lab"
    pidfile = state / "vm" / "qemu.pid"
    ssh_port, endpoint_port = free_port(), free_port()
    state_option = ["--state-dir", str(state)]
    timings: dict[str, Any] = {}
    artifacts = testbed.make_test_artifacts(tmp_path / "artifacts")
    try:
        started = time.monotonic()
        up = ["up", "--ssh-port", str(ssh_port), "--endpoint-port", str(endpoint_port)]
        assert lab_cli.main([*state_option, *up]) == 0
        timings["lab_up_s"] = round(time.monotonic() - started, 1)
        printed = capsys.readouterr().out
        assert lab_cli.main([*state_option, "status"]) == 0

        # The stack file plus the lines `lab up` printed, as the CLI stores them.
        config = config_from_stack_file(STACK_FILE)
        lines = CONFIG_SET.findall(printed)
        assert len(lines) == 3, printed  # host key, SSH key, and the non-default port
        for line in lines:
            apply_config_set(config, line)
        with testbed.Mirror(artifacts.directory) as mirror:
            config["functions-runtime:artifacts"] = {
                "mirror": mirror.url_from_guest,
                "catalog": str(artifacts.catalog),
                "localDirs": [str(artifacts.catalog.parent)],
            }
            run = run_program(config, "lab")
            steps = host_steps(run, HOST)
            connection = steps[0].connection
            assert (connection["host"], int(connection["port"])) == ("127.0.0.1", ssh_port)
            shell = ConnectionShell(connection, tmp_path / "ssh")
            started = time.monotonic()
            result = replay(shell, steps, check=False)
            timings["replay_s"] = round(time.monotonic() - started, 1)
            for r in result.results:
                timings[f"replay_{r.name.removeprefix(HOST + '-')}_s"] = round(r.seconds, 1)
        assert [r.returncode for r in result.results] == [0] * len(steps), log_replay(result)

        verify = result.results[-1]
        report = json.loads(verify.stdout)
        assert report["passed"] is True and report["defaultRuntime"] == "runsc", verify.stderr
        checks = {c["name"]: c for c in report["checks"]}
        assert checks["verify-image"]["detail"] == "built from /usr/bin/busybox"

        # The consumer of the README: the program's outputs, the forwarded endpoint.
        outputs = run_program(
            config, "lab", command_stdout=lambda name, _: verify.stdout if name.endswith("-verify") else "{}"
        ).outputs
        client = docker_client(
            read_endpoint(outputs["runtimeEndpoint"]), read_client_tls(outputs["runtimeClientTls"]),
            base_url=f"tcp://127.0.0.1:{endpoint_port}", timeout=DOCKER_PY_TIMEOUT_S,
        )
        try:
            kernel = client.containers.run(
                "functions-runtime/verify:busybox", ["uname", "-r"], remove=True,
                mem_limit="256m", pids_limit=128, nano_cpus=1_000_000_000,
            )
        finally:
            client.close()
        assert kernel.decode().strip() == report["runtimes"][0]["guestKernel"] != report["hostKernel"]

        pid = int(pidfile.read_text())
        assert lab_cli.main([*state_option, "down"]) == 0
        assert not lab_cli.pid_alive(pid), "lab down left QEMU running"
        assert lab_cli.main([*state_option, "status"]) == 1
    finally:
        lab_cli.main([*state_option, "down"])  # by PID from the pidfile, SIGKILL after a grace period
        rows = "\n".join(f"  {k:<24} {v} s" for k, v in timings.items())
        add_lab_report(f"hostlab lab stack timings\n{rows}", timings, hostlab_cache_dir, name="lab-stack")
