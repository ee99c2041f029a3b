"""Container networks on the verified guest, with the real dockerd (its
`"icc": false`, so br_netfilter is on) and the host filter the firewall step
applied: what issue 11 found broken and what it must keep blocked.

Containers run as root on the local socket (the endpoint policy is not what
is tested here), with the stack's sandbox runtime (runsc) and runc, whose
network namespaces are the same bridge ports. The internet is the lab's
TEST-NET namespace (tools/lab/surroundings.py), routed through the guest.
Proves on Debian 13's kernel and Docker 26: two containers on one user
network reach each other by address and by name; a second network, the
host, the metadata service and the private network stay unreachable; SMTP
to the internet is reset and 587 is not; new connections are limited per
container; a CNI bridge of a random name, as nerdctl and `ctr run --cni`
make, is filtered like Docker's; the verify step ran `ctr run --cni` with
runc and runsc past Docker, passed, and left no container and no CNI
address behind; a flow a runc container set up across its bridge with raw
frames (a peer answering in a blocked address's name) carries nothing to
that address when its later packets are routed, where the old rule order let
them by. Does not prove: Kata's or gVisor's own
netstack beyond what verify measured (the stand-in, test_sandbox_gvisor.py).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import pytest

from tests.hostlab import testbed
from tests.hostlab.shared_guest import VERIFIED, SharedGuest
from tests.support.packets import FRAME, RECEIVE, SEND
from tools.lab.replay import host_steps, run_step
from tools.lab.surroundings import INTERNET_ADDRESS, INTERNET_PORT

NET_A = "frt-a"
NET_B = "frt-b"
SERVER = "frt-server"
PORT = 8080
# Probes each "ADDR PORT" in turn: "ADDR PORT open|closed".
PROBE = 'for t in "$@"; do if nc -w 4 ${t% *} ${t#* } -e true; then echo "$t open"; else echo "$t closed"; fi; done'


def docker(lab: SharedGuest, args: str, check: bool = True) -> str:
    return lab.sh(f"docker {args}", check=check)


def probe(lab: SharedGuest, runtime: str, network: str, *targets: str) -> dict[str, str]:
    quoted = " ".join(f"'{t}'" for t in targets)
    out = docker(
        lab,
        f"run --rm --runtime {runtime} --network {network} {lab.image.image_id} sh -c '{PROBE}' _ {quoted}",
    )
    return {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] for line in out.splitlines() if line.strip()}


@pytest.fixture
def networks(lab: SharedGuest) -> Iterator[str]:
    """Two user networks and a server on the first; its address is yielded."""
    lab.at(VERIFIED)
    try:
        docker(lab, f"network create {NET_A} >/dev/null && docker network create {NET_B} >/dev/null")
        docker(
            lab,
            f"run -d --name {SERVER} --runtime runsc --network {NET_A} {lab.image.image_id} "
            f"sh -c 'while true; do nc -l -p {PORT} -e true; done' >/dev/null",
        )
        address = docker(lab, "inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' " + SERVER)
        yield address.strip()
    finally:
        docker(lab, f"rm -f {SERVER} >/dev/null 2>&1; docker network rm {NET_A} {NET_B} >/dev/null 2>&1", check=False)
        lab.current = None  # containers and networks came and went


@pytest.mark.parametrize("runtime", ["runsc", "runc"])
def test_containers_on_one_network_reach_each_other_and_nothing_private(lab, networks, runtime):
    server = networks
    targets = {
        "peer-by-name": f"{SERVER} {PORT}",
        "peer-by-address": f"{server} {PORT}",
        "internet": f"{INTERNET_ADDRESS} {INTERNET_PORT}",
        "metadata": "169.254.169.254 80",
        "host-endpoint": f"{testbed.GUEST_ADDRESS} 2376",
        "private-network": f"{testbed.HOST_FROM_GUEST} {lab.mirror.port}",
    }
    # The controls: the host itself reaches the targets the container must not.
    for what in ("metadata", "host-endpoint", "private-network", "internet"):
        addr, port = targets[what].split()
        assert lab.sh(f"timeout 5 bash -c 'exec 3<>/dev/tcp/{addr}/{port}' && echo open", check=False).strip() == "open", what
    seen = probe(lab, runtime, NET_A, *targets.values())
    got = {what: seen.get(t) for what, t in targets.items()}
    # Docker's embedded DNS lives in the container's namespace: runc reaches
    # it; gVisor's own netstack may not (google/gvisor#7469), and verify
    # measured which (userNetworkDns), so the name must agree with that.
    assert lab.first is not None
    report = json.loads(lab.first.by_step()["verify"].stdout)
    dns = {rt["name"]: rt["userNetworkDns"] for rt in report["runtimes"]}.get(runtime, True)
    print(f"{runtime}: Docker's embedded DNS on a user network: {'answers' if dns else 'unreachable'}")
    assert got == {
        "peer-by-name": "open" if dns else "closed",
        "peer-by-address": "open",  # issue 11: timed out before the bridge mark
        "internet": "open",
        "metadata": "closed",
        "host-endpoint": "closed",
        "private-network": "closed",
    }, seen
    # Another network: never.
    assert probe(lab, runtime, NET_B, f"{server} {PORT}") == {f"{server} {PORT}": "closed"}


def test_smtp_is_reset_and_submission_is_not(lab, networks):
    seen = probe(lab, "runsc", NET_A, f"{INTERNET_ADDRESS} 25", f"{INTERNET_ADDRESS} 465", f"{INTERNET_ADDRESS} 587")
    assert seen == {f"{INTERNET_ADDRESS} 25": "closed", f"{INTERNET_ADDRESS} 465": "closed", f"{INTERNET_ADDRESS} 587": "open"}
    # The control: the host itself reaches port 25 (the filter is on the forward path only).
    assert lab.sh(f"timeout 5 bash -c 'exec 3<>/dev/tcp/{INTERNET_ADDRESS}/25' && echo open").strip() == "open"


def firewall_with(lab: SharedGuest, egress: dict) -> None:
    """The program's own firewall step, for a stack with these egress settings."""
    config = lab.hcloud_config()
    config["functions-runtime:egress"] = egress
    steps = {s.name.rsplit("-", 1)[-1]: s for s in host_steps(lab.program(config), testbed.HOST_NAME)}
    result = run_step(lab.vm, steps["firewall"])
    assert result.returncode == 0, result.stderr


def test_new_connections_are_limited_per_container(lab, networks):
    lab.current = None  # the firewall changes below
    firewall_with(lab, {"newConnectionsPerSecond": 2, "newConnectionsBurst": 5})
    burst = (
        f"i=0; while [ $i -lt 40 ]; do (nc -w 3 {INTERNET_ADDRESS} {INTERNET_PORT} -e true && echo ok) & "
        "i=$((i+1)); done; wait"
    )
    out = docker(lab, f"run --rm --runtime runc --network {NET_A} {lab.image.image_id} sh -c '{burst}'")
    limited = out.split().count("ok")
    # The burst, plus what refilled at 2/s while 40 processes started.
    assert 5 <= limited < 30, out
    # The control: without the limit every connection opens.
    firewall_with(lab, {"newConnectionsPerSecond": 0})
    out = docker(lab, f"run --rm --runtime runc --network {NET_A} {lab.image.image_id} sh -c '{burst}'")
    assert out.split().count("ok") == 40, out


# A private address (10.0.0.0/8 is blocked from containers) served by the
# lab's internet namespace, so a datagram that got past the filter is seen.
BLOCKED = "10.99.0.10"


def received_while(lab: SharedGuest, steps: str) -> str:
    """What the internet namespace's UDP port 8080 got while `steps` ran
    ("-" for nothing): the guest itself sends "end" after them, through no filter."""
    script = f"""set -e
ip netns exec fr-internet python3 /tmp/frt-receive.py 8080 60 > /tmp/frt-received &
for _ in $(seq 100); do grep -q ready /tmp/frt-received && break; sleep 0.2; done
{steps}
sleep 1; python3 /tmp/frt-send.py 0.0.0.0 0 {INTERNET_ADDRESS} 8080 end
wait
tail -n1 /tmp/frt-received
"""
    return lab.sh(script, timeout=180).strip()


def test_a_flow_set_up_across_a_docker_bridge_carries_nothing_to_a_blocked_address(lab):
    """Issue 20's NET_RAW path, with Docker's own chains and Debian 13's
    kernel: two runc containers on one user network (runc keeps NET_RAW by
    default). The frames are crafted in the attacker's network namespace by
    the guest's python3 (nsenter), which the filter cannot tell from the
    container itself sending them (the busybox image has no way to)."""
    lab.fresh(VERIFIED)
    for name, script in (("frame", FRAME), ("receive", RECEIVE), ("send", SEND)):
        lab.vm.ssh(f"cat > /tmp/frt-{name}.py", stdin=script, check=True)
    lab.sh(f"ip netns exec fr-internet ip addr add {BLOCKED}/32 dev fr-in1; ip route add {BLOCKED}/32 dev fr-in0")
    docker(lab, f"network create {NET_A} >/dev/null")
    box: dict[str, tuple[str, str, str]] = {}
    for name in ("frt-attacker", "frt-peer"):
        docker(lab, f"run -d --runtime runc --network {NET_A} --name {name} {lab.image.image_id} sleep 600 >/dev/null")
        info = json.loads(docker(lab, f"inspect {name}"))[0]
        net = info["NetworkSettings"]["Networks"][NET_A]
        box[name] = (str(info["State"]["Pid"]), net["MacAddress"], net["IPAddress"])
    (a_pid, a_mac, a_ip), (p_pid, p_mac, _) = box["frt-attacker"], box["frt-peer"]

    def smuggle(target: str, sport: int, payload: str) -> str:
        steps = "\n".join((
            f"nsenter -t {a_pid} -n python3 /tmp/frt-frame.py {p_mac} {a_ip} {target} {sport} 8080 setup",
            f"nsenter -t {p_pid} -n python3 /tmp/frt-frame.py {a_mac} {target} {a_ip} 8080 {sport} answer",
            f"nsenter -t {a_pid} -n python3 /tmp/frt-send.py {a_ip} {sport} {target} 8080 {payload}",
        ))
        return received_while(lab, steps)

    def plain(target: str, payload: str) -> str:
        step = f"nsenter -t {a_pid} -n python3 /tmp/frt-send.py {a_ip} 40100 {target} 8080 {payload}"
        return received_while(lab, step)

    assert "routed" in plain(INTERNET_ADDRESS, "routed").split()  # the control: the receiver and the route work
    assert plain(BLOCKED, "direct") == "-"  # the filter as it always was
    # The old order (established accepted first): the smuggled packets arrive.
    lab.sh("nft insert rule inet functions_runtime forward ct state established,related accept")
    assert "smuggled" in smuggle(BLOCKED, 40001, "smuggled").split()
    lab.sh("nft -f /etc/nftables.d/functions-runtime.nft")
    assert smuggle(BLOCKED, 40002, "again") == "-"


def test_a_cni_bridge_of_any_name_is_filtered(lab):
    """A bridge as the CNI bridge plugin makes one (nerdctl0, or any name),
    with a namespace on it as `ctr run --cni` would attach a container."""
    lab.fresh(VERIFIED)
    bridge = "cni" + secrets.token_hex(4)
    setup = f"""set -e
ip link add {bridge} type bridge; ip addr add 10.77.0.1/24 dev {bridge}; ip link set {bridge} up
ip netns add frt-cni; ip link add frt-c0 type veth peer name eth0 netns frt-cni
ip link set frt-c0 master {bridge}; ip link set frt-c0 up
ip netns exec frt-cni ip addr add 10.77.0.2/24 dev eth0; ip netns exec frt-cni ip link set eth0 up
ip netns exec frt-cni ip link set lo up; ip netns exec frt-cni ip route add default via 10.77.0.1
# What the CNI bridge plugin's ipMasq and firewall plugin add: NAT out, and
# ACCEPT in iptables' FORWARD ahead of Docker's (whose policy is DROP). So
# whatever is dropped below, the host filter's table dropped.
iptables -t nat -A POSTROUTING -s 10.77.0.0/24 ! -o {bridge} -j MASQUERADE
iptables -I FORWARD 1 -i {bridge} -j ACCEPT
iptables -I FORWARD 1 -o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
"""
    lab.sh(setup)

    def reaches(addr: str, port: int) -> str:
        return lab.sh(
            f"ip netns exec frt-cni timeout 6 bash -c 'exec 3<>/dev/tcp/{addr}/{port}' 2>/dev/null && echo open || echo closed",
            check=False,
        ).strip()

    assert reaches(INTERNET_ADDRESS, INTERNET_PORT) == "open"  # the control: the bridge routes
    assert reaches("169.254.169.254", 80) == "closed"
    assert reaches(testbed.GUEST_ADDRESS, 2376) == "closed"
    assert reaches("10.77.0.1", 22) == "closed"  # the host on the bridge itself
    assert reaches(testbed.HOST_FROM_GUEST, lab.mirror.port) == "closed"
    assert reaches(INTERNET_ADDRESS, 25) == "closed"


# A CNI network as nerdctl writes one (bridge plugin with ipMasq, then the
# firewall plugin), for Debian's own ctr (it finds the plugins in /usr/lib/cni).
CTR_CONFLIST = (
    '{"cniVersion":"1.0.0","name":"frt-ctr","plugins":[{"type":"bridge","bridge":"frt-ctr0","isGateway":true,'
    '"ipMasq":true,"hairpinMode":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.4.201.0/24"}]],'
    '"routes":[{"dst":"0.0.0.0/0"}]}},{"type":"firewall"}]}'
)
CTR_PROBE = (
    'uname -r; for t in "$@"; do if nc -w 4 $t -e true; then echo "$t open"; else echo "$t closed"; fi; done'
)


@pytest.mark.parametrize("runtime", ["runc", "runsc"])
def test_containerd_direct_containers_are_filtered(lab, runtime):
    """`ctr run --cni` (containerd's default namespace, a CNI bridge, no
    Docker), with runc and with gVisor through `--runc-binary`: the operator's
    path meets the host filter like Docker's containers. The rootfs is the
    guest's busybox-static (ctr cannot see Docker's images)."""
    lab.fresh(VERIFIED)
    setup = f"""set -e
mkdir -p /tmp/frt-bb/bin /tmp/frt-bb/proc /tmp/frt-bb/dev /tmp/frt-bb/sys /tmp/frt-bb/etc
cp /usr/bin/busybox /tmp/frt-bb/bin/
for a in sh nc true uname; do ln -sf busybox /tmp/frt-bb/bin/$a; done
mkdir -p /etc/cni/net.d
# Sorts before configure's 10-functions-runtime.conflist: ctr takes the first.
echo '{CTR_CONFLIST}' > /etc/cni/net.d/00-frt-ctr.conflist
"""
    lab.sh(setup)
    binary = "" if runtime == "runc" else "--runc-binary \"$(ls -d /opt/functions-runtime/gvisor/*/runsc | tail -n1)\""
    targets = {
        "internet": f"{INTERNET_ADDRESS} {INTERNET_PORT}",
        "metadata": "169.254.169.254 80",
        "host-endpoint": f"{testbed.GUEST_ADDRESS} 2376",
        "private-network": f"{testbed.HOST_FROM_GUEST} {lab.mirror.port}",
        "smtp": f"{INTERNET_ADDRESS} 25",
    }
    quoted = " ".join(f"'{t}'" for t in targets.values())
    out = lab.sh(
        f"timeout 240 ctr run --rm --cni {binary} --rootfs /tmp/frt-bb frt-ctr-{runtime} "
        f"/bin/sh -c '{CTR_PROBE}' _ {quoted}",
        timeout=300,
    )
    lines = out.splitlines()
    kernel = lines[0].strip()
    host_kernel = lab.sh("uname -r").strip()
    assert (kernel == host_kernel) == (runtime == "runc"), (kernel, host_kernel)
    seen = {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] for line in lines[1:] if line.strip()}
    got = {what: seen.get(t) for what, t in targets.items()}
    assert got == {
        "internet": "open",  # the control: the CNI bridge routes and masquerades
        "metadata": "closed",
        "host-endpoint": "closed",
        "private-network": "closed",
        "smtp": "closed",
    }, out
    assert "frt-ctr0" in lab.sh("ip -br link show type bridge")


def test_verify_ran_containerd_directly_and_left_nothing_behind(lab):
    """The first replay's verify ran Debian's ctr on configure's CNI network
    (runc, and runsc through --runc-binary) with the kernel probe, the
    positive controls and the blocked targets; nerdctl is a test archive
    here, so its checks are skipped with the stack's reason. Afterwards its
    containerd namespace is empty and host-local IPAM holds no address."""
    lab.at(VERIFIED)
    assert lab.first is not None
    report = json.loads(lab.first.by_step()["verify"].stdout)
    checks = {c["name"]: c for c in report["checks"]}
    for runtime in ("runc", "runsc"):
        for name in (f"runtime-ctr-{runtime}-kernel", f"reach-ctr-{runtime}-peer", f"reach-ctr-{runtime}-outside",
                     f"isolation-ctr-{runtime}-metadata", f"isolation-ctr-{runtime}-host-endpoint",
                     f"isolation-ctr-{runtime}-host-ssh"):
            assert checks[name]["status"] == "passed", checks.get(name)
            print(f"{name}: {checks[name]['detail']}")
    assert "guest kernel" in checks["runtime-ctr-runsc-kernel"]["detail"]
    assert checks["runtime-nerdctl"]["status"] == "skipped"
    assert "verify.nerdctl is false" in checks["runtime-nerdctl"]["detail"]
    assert lab.sh("ctr --namespace functions-runtime-verify containers ls -q").strip() == ""
    leased = lab.sh("ls /var/lib/cni/networks/functions-runtime/ 2>/dev/null || true").split()
    assert [f for f in leased if f not in ("lock",) and not f.startswith("last_reserved_ip")] == [], leased
    assert "fr-cni0" in lab.sh("ip -br link show type bridge")
