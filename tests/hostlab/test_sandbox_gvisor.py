"""gVisor's network on the real guest: the pinned release's path with the
lab's stand-in (tests/hostlab/testbed.py says what it is and proves), and
the refusal of Debian's runsc, whose own network stack cannot work on
Debian 13's kernel.

Proves: the stand-in's premise on the guest's kernel; that the verified
guest's containers run on gVisor's own network stack (the effect: a
listener inside the sandbox is not a socket of the container's namespace in
the host kernel), that the report and the program's endpoint say
`sandbox`; that a `sandbox` stack on Debian's runsc stops at configure with
nothing changed unless it opts in, and with the opt-in runs
`--network=host`. Does not prove: the release's own binary.
"""

from __future__ import annotations

import json

from components.contract import GVISOR_DIR, NETWORK_HOST, NETWORK_SANDBOX
from tests.hostlab import testbed
from tests.hostlab.shared_guest import VERIFIED, SharedGuest
from tools.lab.replay import host_steps, replay

SERVER = "frt-gvisor-listener"


def verify_report(lab: SharedGuest) -> dict:
    lab.at(VERIFIED)
    assert lab.first is not None
    return json.loads(lab.first.by_step()["verify"].stdout)


def test_gvisor_stand_in_premise_holds_on_the_guests_kernel(lab):
    lab.at(VERIFIED)
    script = f"""set -e
ip netns add frt-premise
trap 'ip netns del frt-premise' EXIT
test -e {testbed.RUNSC_PROBED_PATH} && echo root-probed
test -e {testbed.RUNSC_STAND_IN_PATH} && echo root-stand-in
ip netns exec frt-premise test -e {testbed.RUNSC_PROBED_PATH} && echo ns-probed
ip netns exec frt-premise test -e {testbed.RUNSC_STAND_IN_PATH} && echo ns-stand-in || true
"""
    assert lab.sh(script).split() == ["root-probed", "root-stand-in", "ns-probed"]


def test_the_verified_guest_runs_gvisors_own_network_stack(lab):
    report = verify_report(lab)
    runsc = next(rt for rt in report["runtimes"] if rt["name"] == "runsc")
    assert runsc["network"] == NETWORK_SANDBOX, runsc
    assert runsc["shim"].startswith(f"{GVISOR_DIR}/"), runsc
    checks = {c["name"]: c["status"] for c in report["checks"]}
    assert checks["reach-runsc-peer"] == "passed" and checks["reach-runsc-outside"] == "passed", checks
    # The effect, not the flag: a listener in the sandbox is served by
    # gVisor's netstack, so the container's namespace has no such socket in
    # the host kernel. The control is runc, whose listener is one.
    try:
        for runtime, kernel_socket in (("runsc", False), ("runc", True)):
            lab.sh(
                f"docker run -d --name {SERVER} --runtime {runtime} {lab.image.image_id} nc -l -p 7070 >/dev/null && "
                f"for i in $(seq 30); do docker logs {SERVER} >/dev/null 2>&1 && break; sleep 1; done"
            )
            pid = lab.sh(f"docker inspect -f '{{{{.State.Pid}}}}' {SERVER}").strip()
            listening = lab.sh(
                f"for i in $(seq 20); do nsenter -t {pid} -n ss -ltnH | grep -q ':7070 ' && {{ echo yes; exit 0; }}; "
                "sleep 1; done; echo no"
            ).strip()
            assert listening == ("yes" if kernel_socket else "no"), runtime
            lab.sh(f"docker rm -f {SERVER} >/dev/null")
    finally:
        lab.sh(f"docker rm -f {SERVER} >/dev/null 2>&1 || true")
        lab.current = None
    # The program reads the report into the endpoint it exports.
    run = lab.program(lab.hcloud_config(), verify_stdout=json.dumps(report))
    endpoint = run.outputs["runtimeEndpoint"]
    host = endpoint["hosts"][0]
    assert {rt["name"]: rt["network"] for rt in host["runtimes"]}["runsc"] == NETWORK_SANDBOX


def debian_config(lab: SharedGuest, allow_host_network: bool) -> dict:
    config = lab.hcloud_config()
    config["functions-runtime:gvisor"] = {"runsc": "debian", "allowHostNetworkStack": allow_host_network}
    return config


def test_debian_runsc_is_refused_without_the_opt_in_and_runs_host_networking_with_it(lab):
    lab.fresh(VERIFIED)
    daemon_before = lab.sh("sha256sum /etc/docker/daemon.json")
    steps = [s for s in host_steps(lab.program(debian_config(lab, False)), testbed.HOST_NAME)]
    result = replay(lab.vm, steps, check=False)
    by = result.by_step()
    assert by["install"].returncode == 0, by["install"].stderr
    configure = by["configure"]
    assert configure.returncode != 0 and result.results[-1] is configure
    assert "gvisor.allowHostNetworkStack" in configure.stderr and "nothing was changed" in configure.stderr, (
        configure.stderr
    )
    assert lab.sh("sha256sum /etc/docker/daemon.json") == daemon_before
    # With the opt-in: Debian's runsc, on the host kernel's network stack, said so.
    steps = host_steps(lab.program(debian_config(lab, True)), testbed.HOST_NAME)
    result = replay(lab.vm, [s for s in steps if not s.name.endswith(("-verify", "-keys"))], check=False)
    assert all(r.returncode == 0 for r in result.results), [(r.name, r.stderr[-500:]) for r in result.results]
    out = json.loads(result.by_step()["configure"].stdout)
    assert out["runscNetwork"] == NETWORK_HOST, out
    daemon = json.loads(lab.sh("cat /etc/docker/daemon.json"))
    assert daemon["runtimes"]["runsc"]["path"] == "/usr/bin/runsc"
    assert "--network=host" in daemon["runtimes"]["runsc"]["runtimeArgs"]
