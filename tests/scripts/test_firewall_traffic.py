"""scripts/host_firewall.sh's rendered ruleset against real packets, in
private network namespaces on this machine's kernel.

A namespace stands in for the host: two container bridges (one with a random
name), containers as namespaces on veth ports, a "private network" namespace
(10.0.0.0/8) and an "outside" namespace serving a documentation address
(TEST-NET-1) and the metadata address. br_netfilter's bridge-nf-call-iptables
is on, as Docker turns it on for "icc": false.

Proves: the ruleset the script renders, loaded by this kernel's nftables,
lets containers on one bridge talk, drops a container's traffic to another
bridge, to the host, to the private network and to the metadata address,
resets SMTP to the outside and limits new connections per container address;
that a flow a container set up across its bridge (a peer answering in a
blocked address's name, raw frames as NET_RAW allows) carries nothing to the
metadata address or the host when its later packets are routed, and that a
source address the bridge does not route is dropped; that the metrics and
the artifact share answer only their allowed sources; and that these results
come from the rules (controls with the rules lifted or put back in the old
order).
Does not prove: Docker's own chains next to these (the hostlab does that
with real dockerd), Debian 13's kernel (the hostlab guest runs it), IPv6.
Needs root and `ip`/`nft`; skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from components.contract import ARTIFACT_SHARE_PORT, DOCKERD_METRICS_PORT, NODE_EXPORTER_PORT
from tests.scripts.helpers import run_bash
from tests.scripts.test_firewall import BASE
from tests.support.packets import FRAME, RECEIVE, SEND
from tools.lab.surroundings import ACCEPT_AND_CLOSE

# Opens N connections at once (non-blocking), waits up to 1.5 s, prints how
# many completed: every SYN leaves within milliseconds, so a rate limit
# shows as a count near its burst.
CONNECT = """
import selectors, socket, sys, time
addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sel = selectors.DefaultSelector(); socks = []
for _ in range(n):
    s = socket.socket(); s.setblocking(False); s.connect_ex((addr, port))
    sel.register(s, selectors.EVENT_WRITE); socks.append(s)
ok = refused = 0; deadline = time.monotonic() + 1.5; pending = n
while pending and time.monotonic() < deadline:
    for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
        err = key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        ok += err == 0; refused += err != 0
        sel.unregister(key.fileobj); pending -= 1
print(ok, refused, pending)
"""


def netns_usable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "nft"):
        if not shutil.which(tool):
            return f"needs {tool}"
    name = f"frprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    try:
        probe = subprocess.run(
            ["ip", "netns", "exec", name, "sh", "-c",
             "nft list tables && sysctl -qw net.bridge.bridge-nf-call-iptables=1"],
            capture_output=True, text=True,
        )
        if probe.returncode != 0:
            return f"no nftables or br_netfilter in a namespace: {probe.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
    return None


SKIP = netns_usable()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")


@dataclass
class Netlab:
    prefix: str
    namespaces: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)

    def ns(self, short: str) -> str:
        return f"{self.prefix}{short}"

    def sh(self, short: str, script: str) -> str:
        r = subprocess.run(
            ["ip", "netns", "exec", self.ns(short), "bash", "-ec", script],
            capture_output=True, text=True, timeout=60,
        )
        assert r.returncode == 0, f"{short}: {script}\n{r.stderr}"
        return r.stdout

    def add(self, short: str) -> None:
        subprocess.run(["ip", "netns", "add", self.ns(short)], check=True)
        self.namespaces.append(self.ns(short))
        self.sh(short, "ip link set lo up")

    def link(self, a: str, a_if: str, b: str, b_if: str) -> None:
        subprocess.run(
            ["ip", "link", "add", a_if, "netns", self.ns(a), "type", "veth",
             "peer", "name", b_if, "netns", self.ns(b)],
            check=True,
        )

    def listen(self, short: str, *ports: int) -> None:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(short), sys.executable, "-c", ACCEPT_AND_CLOSE, *map(str, ports)],
            stdout=subprocess.PIPE, text=True,
        )
        self.pids.append(proc.pid)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"

    def connect(self, short: str, addr: str, port: int, n: int = 1) -> tuple[int, int, int]:
        out = subprocess.run(
            ["ip", "netns", "exec", self.ns(short), sys.executable, "-c", CONNECT, addr, str(port), str(n)],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.split()
        return int(out[0]), int(out[1]), int(out[2])

    def py(self, short: str, code: str, *args: str) -> None:
        subprocess.run(["ip", "netns", "exec", self.ns(short), sys.executable, "-c", code, *args],
                       capture_output=True, text=True, timeout=30, check=True)

    def mac(self, short: str, dev: str = "eth0") -> str:
        return self.sh(short, f"cat /sys/class/net/{dev}/address").strip()

    def received(self, short: str, port: int, during: Callable[[], None]) -> list[str]:
        """The UDP payloads `short` got on `port` while `during` ran."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(short), sys.executable, "-c", RECEIVE, str(port), "2"],
            stdout=subprocess.PIPE, text=True,
        )
        self.pids.append(proc.pid)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        during()
        out = proc.stdout.readline().split()
        proc.wait(timeout=30)
        return [] if out == ["-"] else out

    def reaches(self, short: str, addr: str, port: int = 8080) -> str:
        ok, refused, _ = self.connect(short, addr, port)
        return "open" if ok else "refused" if refused else "dropped"

    def close(self) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        for name in self.namespaces:
            subprocess.run(["ip", "netns", "del", name], check=False)


RANDOM_BRIDGE = "x" + secrets.token_hex(5)
OUTSIDE = "192.0.2.10"
PRIVATE = "10.0.0.2"
METADATA = "169.254.169.254"


def ruleset(fr_env: dict[str, str], **egress: str) -> str:
    env = {**fr_env, **BASE, "ADMIN_CIDRS": "203.0.113.0/24", "ENDPOINT_CIDRS": "10.0.0.0/16", **egress}
    r = run_bash("render_ruleset", env, script="host_firewall.sh")
    assert r.rc == 0, r.stderr
    return r.stdout


@pytest.fixture
def lab() -> Iterator[Netlab]:
    lab = Netlab(prefix=f"fr{os.getpid() % 100000}")
    try:
        for short in ("host", "a1", "a2", "b1", "private", "outside"):
            lab.add(short)
        lab.sh("host", f"""
            sysctl -qw net.ipv4.ip_forward=1
            ip link add docker0 type bridge; ip addr add 172.17.0.1/16 dev docker0; ip link set docker0 up
            ip link add {RANDOM_BRIDGE} type bridge; ip addr add 10.88.0.1/24 dev {RANDOM_BRIDGE}
            ip link set {RANDOM_BRIDGE} up
            sysctl -qw net.bridge.bridge-nf-call-iptables=1
        """)
        for short, bridge, addr, gateway in (
            ("a1", "docker0", "172.17.0.2/16", "172.17.0.1"),
            ("a2", "docker0", "172.17.0.3/16", "172.17.0.1"),
            ("b1", RANDOM_BRIDGE, "10.88.0.2/24", "10.88.0.1"),
        ):
            lab.link("host", f"v{short}", short, "eth0")
            lab.sh("host", f"ip link set v{short} master {bridge}; ip link set v{short} up")
            lab.sh(short, f"ip addr add {addr} dev eth0; ip link set eth0 up; ip route add default via {gateway}")
        lab.link("host", "vpriv", "private", "eth0")
        lab.sh("host", "ip addr add 10.0.0.1/24 dev vpriv; ip link set vpriv up")
        lab.sh("private", f"ip addr add {PRIVATE}/24 dev eth0; ip link set eth0 up; ip route add default via 10.0.0.1")
        lab.link("host", "vout", "outside", "eth0")
        lab.sh("host", "ip addr add 192.0.2.1/24 dev vout; ip link set vout up; ip route add 169.254.169.254/32 dev vout")
        lab.sh("outside", f"""
            ip addr add {OUTSIDE}/24 dev eth0; ip addr add {METADATA}/32 dev eth0
            ip link set eth0 up; ip route add default via 192.0.2.1
        """)
        for short in ("a2", "b1", "private", "host"):
            lab.listen(short, 8080)
        lab.listen("outside", 8080, 25, 465, 587)
        yield lab
    finally:
        lab.close()


def load(lab: Netlab, text: str, tmp_path: Path) -> None:
    path = tmp_path / "ruleset.nft"
    path.write_text(text)
    lab.sh("host", f"nft -f {path}")


def test_without_the_rules_everything_is_reachable(lab):
    """The control: the namespaces route and switch; any 'dropped' below is the rules."""
    for target in ("172.17.0.3", "10.88.0.2", PRIVATE, OUTSIDE, METADATA, "172.17.0.1"):
        assert lab.reaches("a1", target) == "open", target


def test_containers_on_one_bridge_reach_each_other_and_nothing_private(lab, fr_env, tmp_path):
    load(lab, ruleset(fr_env), tmp_path)
    assert lab.reaches("a1", "172.17.0.3") == "open"  # same bridge (a sidecar)
    assert lab.reaches("a1", "10.88.0.2") == "dropped"  # another container network
    assert lab.reaches("b1", "172.17.0.3") == "dropped"
    assert lab.reaches("a1", "172.17.0.1") == "dropped"  # the host itself
    assert lab.reaches("a1", PRIVATE) == "dropped"  # the private network
    assert lab.reaches("a1", METADATA) == "dropped"
    assert lab.reaches("a1", OUTSIDE) == "open"


def test_a_bridge_of_any_name_is_a_container_bridge(lab, fr_env, tmp_path):
    load(lab, ruleset(fr_env), tmp_path)
    assert RANDOM_BRIDGE not in ruleset(fr_env)
    assert lab.reaches("b1", "10.88.0.1") == "dropped"  # the host
    assert lab.reaches("b1", PRIVATE) == "dropped"
    assert lab.reaches("b1", METADATA) == "dropped"
    assert lab.reaches("b1", OUTSIDE) == "open"


def test_same_bridge_traffic_needs_the_bridge_mark(lab, fr_env, tmp_path):
    """With br_netfilter on, bridged frames meet the inet drop: without the
    bridge table's mark, one container network breaks (the bug of issue 11)."""
    load(lab, ruleset(fr_env), tmp_path)
    lab.sh("host", "nft delete table bridge functions_runtime")
    assert lab.reaches("a1", "172.17.0.3") == "dropped"


def test_smtp_to_the_outside_is_reset_and_other_ports_are_not(lab, fr_env, tmp_path):
    load(lab, ruleset(fr_env), tmp_path)
    assert lab.reaches("a1", OUTSIDE, 25) == "refused"
    assert lab.reaches("a1", OUTSIDE, 465) == "refused"
    assert lab.reaches("a1", OUTSIDE, 587) == "open"
    load(lab, ruleset(fr_env, EGRESS_BLOCK_SMTP="false"), tmp_path)
    assert lab.reaches("a1", OUTSIDE, 25) == "open"
    load(lab, ruleset(fr_env, EGRESS_ALLOWED_CIDRS=f"{OUTSIDE}/32"), tmp_path)
    assert lab.reaches("a1", OUTSIDE, 25) == "open"


def test_new_connections_are_limited_per_container(lab, fr_env, tmp_path):
    load(lab, ruleset(fr_env, EGRESS_NEW_PER_SECOND="5", EGRESS_NEW_BURST="10"), tmp_path)
    ok, _, _ = lab.connect("a1", OUTSIDE, 8080, n=60)
    assert 8 <= ok <= 16, ok  # the burst, and a token or two refilled meanwhile
    # Another container's budget is its own.
    ok_other, _, _ = lab.connect("b1", OUTSIDE, 8080, n=10)
    assert ok_other == 10
    time.sleep(2.5)  # the bucket refills at 5/s
    ok_later, _, _ = lab.connect("a1", OUTSIDE, 8080, n=5)
    assert ok_later == 5
    load(lab, ruleset(fr_env, EGRESS_NEW_PER_SECOND="0"), tmp_path)
    ok, _, _ = lab.connect("a1", OUTSIDE, 8080, n=60)
    assert ok == 60


def smuggle(lab: Netlab, target: str, payload: str) -> Callable[[], None]:
    """a1 sets up a UDP flow to `target` across docker0 (a frame to a2's
    MAC; a2 answers in the target's name), then sends the flow's next
    packets the ordinary way, routed through the host."""

    def attack() -> None:
        a1_mac, a2_mac = lab.mac("a1"), lab.mac("a2")
        lab.py("a1", FRAME, a2_mac, "172.17.0.2", target, "40000", "8080", "setup")
        lab.py("a2", FRAME, a1_mac, target, "172.17.0.2", "8080", "40000", "answer")
        lab.py("a1", SEND, "172.17.0.2", "40000", target, "8080", payload)

    return attack


def old_order(text: str) -> str:
    """The ruleset as it was before: connection tracking's "established"
    accepted ahead of the container checks, and no bridged-flow mark."""
    lines = [line for line in text.splitlines() if "ct mark & 0x01000000 == 0x01000000 drop" not in line]
    hook = lines.index("    type filter hook forward priority filter - 10; policy accept;")
    lines.insert(hook + 1, "    ct state established,related accept")
    lines.insert(lines.index("    iif \"lo\" accept") + 1, "    ct state established,related accept")
    return "\n".join(lines) + "\n"


def test_a_flow_set_up_across_the_bridge_carries_nothing_to_the_metadata_address(lab, fr_env, tmp_path):
    """The NET_RAW path of issue 20: before, the routed packets passed as
    "established" (the control shows it); now the container's packets meet
    the blocked ranges first and the bridged flow is marked."""
    rules = ruleset(fr_env)
    load(lab, old_order(rules), tmp_path)
    assert "smuggled" in lab.received("outside", 8080, smuggle(lab, METADATA, "smuggled"))
    load(lab, rules, tmp_path)
    assert lab.received("outside", 8080, smuggle(lab, METADATA, "again")) == []


def test_a_flow_set_up_across_the_bridge_carries_nothing_to_the_host(lab, fr_env, tmp_path):
    rules = ruleset(fr_env)
    load(lab, old_order(rules), tmp_path)
    assert "smuggled" in lab.received("host", 8080, smuggle(lab, "172.17.0.1", "smuggled"))
    load(lab, rules, tmp_path)
    assert lab.received("host", 8080, smuggle(lab, "172.17.0.1", "again")) == []
    # The host's own connection into a container still gets its answers (verify's positive control).
    assert lab.sh("host", f"{sys.executable} -c 'import socket; socket.create_connection((\"172.17.0.3\", 8080), 5); print(1)'").strip() == "1"


def test_a_source_address_the_bridge_does_not_route_is_dropped(lab, fr_env, tmp_path):
    """A forged source from outside the container's subnet (another
    network's address, the internet's): dropped. A forged source inside the
    subnet is not caught by this rule (see docs/security.md)."""
    gateway_mac = lab.mac("host", "docker0")
    rules = ruleset(fr_env)

    def forged() -> None:
        lab.py("a1", FRAME, gateway_mac, "198.51.100.7", OUTSIDE, "40001", "8080", "forged")
        lab.py("a1", FRAME, gateway_mac, "172.17.0.2", OUTSIDE, "40002", "8080", "genuine")

    load(lab, "\n".join(line for line in rules.splitlines() if "fib saddr" not in line) + "\n", tmp_path)
    assert sorted(lab.received("outside", 8080, forged)) == ["forged", "genuine"]
    load(lab, rules, tmp_path)
    assert lab.received("outside", 8080, forged) == ["genuine"]


def test_the_node_exporter_port_answers_only_its_allowed_sources(lab, fr_env, tmp_path):
    """metrics.allowedCidrs: the private network's scraper reaches the host's
    node exporter and dockerd's metrics; another private address and a
    container do not."""
    lab.listen("host", NODE_EXPORTER_PORT, DOCKERD_METRICS_PORT)
    load(lab, ruleset(fr_env, METRICS_CIDRS=f"{PRIVATE}/32"), tmp_path)
    assert lab.reaches("private", "10.0.0.1", NODE_EXPORTER_PORT) == "open"
    assert lab.reaches("private", "10.0.0.1", DOCKERD_METRICS_PORT) == "open"
    assert lab.reaches("a1", "172.17.0.1", NODE_EXPORTER_PORT) == "dropped"
    load(lab, ruleset(fr_env, METRICS_CIDRS="10.0.0.99/32"), tmp_path)
    assert lab.reaches("private", "10.0.0.1", NODE_EXPORTER_PORT) == "dropped"
    assert lab.reaches("private", "10.0.0.1", DOCKERD_METRICS_PORT) == "dropped"
    load(lab, ruleset(fr_env, METRICS_CIDRS=""), tmp_path)
    assert lab.reaches("private", "10.0.0.1", NODE_EXPORTER_PORT) == "dropped"


def test_the_artifact_share_answers_only_its_peers(lab, fr_env, tmp_path):
    """ARTIFACT_PEER_CIDRS: a peer on the private network reaches the host's
    artifact share; another private address and a container do not, nor
    anyone once the list is empty."""
    lab.listen("host", ARTIFACT_SHARE_PORT)
    load(lab, ruleset(fr_env, ARTIFACT_PEER_CIDRS=f"{PRIVATE}/32 fd00::5/128"), tmp_path)
    assert lab.reaches("private", "10.0.0.1", ARTIFACT_SHARE_PORT) == "open"
    assert lab.reaches("a1", "172.17.0.1", ARTIFACT_SHARE_PORT) == "dropped"
    assert lab.reaches("private", "10.0.0.1", NODE_EXPORTER_PORT) == "dropped", "the peers' port only"
    load(lab, ruleset(fr_env, ARTIFACT_PEER_CIDRS="10.0.0.99/32"), tmp_path)
    assert lab.reaches("private", "10.0.0.1", ARTIFACT_SHARE_PORT) == "dropped"
    load(lab, ruleset(fr_env, ARTIFACT_PEER_CIDRS=""), tmp_path)
    assert lab.reaches("private", "10.0.0.1", ARTIFACT_SHARE_PORT) == "dropped"
