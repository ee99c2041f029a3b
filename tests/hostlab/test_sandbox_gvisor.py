"""gVisor's network on the real guest: the pinned release's path with the
lab's stand-in (tests/hostlab/testbed.py says what it is and proves), and
the refusal of Debian's runsc, whose own network stack cannot work on
Debian 13's kernel.

Proves: the stand-in's premise on the guest's kernel; that the verified
guest's containers run on gVisor's own network stack (the effect: a
listener inside the sandbox is not a socket of the container's namespace in
the host kernel), that the report and the program's endpoint say
`sandbox`; that a gVisor container on the default bridge resolves a name
through the lab's name server (verify's `dns-runsc`, and its failure when
the sandbox cannot reach the server), while on a user-defined network it
resolves nothing and runc on the same network does; that a `sandbox` stack
on Debian's runsc stops at configure with nothing changed unless it opts
in, and with the opt-in runs `--network=host`. Does not prove: the
release's own binary.
"""

from __future__ import annotations

import json

from components.contract import GVISOR_DIR, NETWORK_HOST, NETWORK_SANDBOX
from tests.hostlab import testbed
from tests.hostlab.shared_guest import VERIFIED, SharedGuest
from tools.lab.replay import host_steps, replay
from tools.lab.surroundings import INTERNET_ADDRESS, NAME_PROBE, NAME_SERVER_ADDRESS

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
    # The release's directory holds its sidecars (the preflight found them), but the
    # stand-in runsc is Debian's 2024 build, which never runs them: verify says so.
    details = {c["name"]: c["detail"] for c in report["checks"]}
    assert "with its sidecars in" in details["preflight-runsc"], details["preflight-runsc"]
    assert checks["runtime-runsc-sidecars"] == "skipped", checks
    assert "releases before 20260831 run their sandbox themselves" in details["runtime-runsc-sidecars"]
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


def test_a_gvisor_container_on_the_default_bridge_resolves_names_and_verify_says_so(lab):
    report = verify_report(lab)
    dns = {c["name"]: c for c in report["checks"]}["dns-runsc"]
    assert dns["status"] == "passed", dns
    assert dns["detail"] == f"{NAME_PROBE} is {INTERNET_ADDRESS} through {NAME_SERVER_ADDRESS}, as the host is told"


def test_a_sandbox_that_cannot_reach_its_nameserver_fails_the_name_lookup(lab):
    """The check's own negative: the same verify, with the host filter
    dropping containers' DNS, fails dns-runsc (isolation, exit 15) while the
    host still gets its answer."""
    lab.fresh(VERIFIED)
    verify = next(s for s in lab.steps if s.name.endswith("-verify"))
    assert verify.create
    lab.sh("nft insert rule inet functions_runtime from_container udp dport 53 drop")
    result = lab.vm.ssh(f"{verify.create} --only name-lookup", stdin=verify.stdin, timeout=600)
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert result.returncode == 15, result.stderr[-2000:]
    assert checks["dns-runsc"]["status"] == "failed"
    assert f"through its nameserver {NAME_SERVER_ADDRESS} (the host gets {INTERNET_ADDRESS}" in checks["dns-runsc"]["detail"]


def test_on_a_user_network_gvisor_resolves_nothing_and_runc_resolves(lab):
    """What docs/security.md says of user-defined networks (google/gvisor#7469):
    Docker's embedded DNS at 127.0.0.11 is not reachable from gVisor's
    netstack; runc on the same network gets the answer through it."""
    lab.at(VERIFIED)
    lookup = f"while read -r l; do echo \"$l\"; done < /etc/resolv.conf; busybox nslookup -type=a {NAME_PROBE} 2>&1; echo exit $?"
    try:
        lab.sh("docker network create frt-names >/dev/null")
        out = {
            runtime: lab.sh(f"docker run --rm --runtime {runtime} --network frt-names {lab.image.image_id} "
                            f"sh -c '{lookup}'", check=False)
            for runtime in ("runsc", "runc")
        }
    finally:
        lab.sh("docker network rm frt-names >/dev/null 2>&1 || true")
    for runtime in ("runsc", "runc"):  # Docker's embedded DNS, and only it, for both
        assert "nameserver 127.0.0.11" in out[runtime] and f"nameserver {NAME_SERVER_ADDRESS}" not in out[runtime], (
            out[runtime]
        )
    assert INTERNET_ADDRESS not in out["runsc"] and "exit 1" in out["runsc"], out["runsc"]
    assert f"Address: {INTERNET_ADDRESS}" in out["runc"] and "exit 0" in out["runc"], out["runc"]


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
