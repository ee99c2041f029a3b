"""What a real server's network gives it and the guest lacks, built inside
the guest beside what the program manages (never in it).

The internet: the guest reaches nothing outside this machine, so a network
namespace answers for it on documentation addresses (TEST-NET-1, RFC 5737),
routed through the guest like any internet address: a TCP service and a
name server, which the guest's /etc/resolv.conf names. Container traffic to it
is forwarded through the host's filter, as on a real server: it is the
verify step's positive control for egress (`verify.outsideProbe`) and the
target of the SMTP and rate-limit proofs.
"""

from __future__ import annotations

INTERNET_ADDRESS = "192.0.2.10"
# A plain TCP service, and the SMTP ports the host filter resets by default
# (587, submission, stays open): every port accepts and closes.
INTERNET_PORT = 8080
INTERNET_PORTS = (INTERNET_PORT, 25, 465, 587)
# As the stack spells it (functions-runtime:verify.outsideProbe).
OUTSIDE_PROBE = f"{INTERNET_ADDRESS}:{INTERNET_PORT}"

# A TCP service on each port given: accepts every connection and closes it;
# prints "ready" once all ports listen. Shared with the firewall's traffic
# tests (tests/scripts/test_firewall_traffic.py). Single quotes only: the
# responder below passes it to `python3 -c "..."`.
ACCEPT_AND_CLOSE = """
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in map(int, sys.argv[1:]):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', port)); s.listen(1024); s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
print('ready', flush=True)
while True:
    for key, _ in sel.select():
        try:
            conn, _ = key.fileobj.accept(); conn.close()
        except BlockingIOError:
            pass
"""

# The internet's name server, on a documentation address as a Hetzner
# server's resolvers are on public ones: the guest's /etc/resolv.conf names
# it, so Docker hands it to containers on the default bridge (QEMU's own
# resolver, 10.0.2.3, is private and the host filter keeps containers from
# it). Names under NAME_PROBE_ZONE get INTERNET_ADDRESS, but PRIVATE_NAME
# gets a private address the guest reaches (QEMU's gateway, where the
# hostlab's mirror listens): a registry name that resolves into a private
# network. Every other name is refused (REFUSED: the asker tries its next
# resolver; nothing leaves this machine from here). Single quotes only, as above.
NAME_SERVER_ADDRESS = "192.0.2.53"
NAME_PROBE_ZONE = "functions-runtime.test"
# As the stack spells it (functions-runtime:verify.nameProbe).
NAME_PROBE = f"probe.{NAME_PROBE_ZONE}"
PRIVATE_NAME = f"private.{NAME_PROBE_ZONE}"
PRIVATE_NAME_ADDRESS = "10.0.2.2"
NAME_SERVER = f"""
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('{NAME_SERVER_ADDRESS}', 53))
while True:
    q, peer = s.recvfrom(512)
    at, labels = 12, []
    while 12 <= at < len(q) and q[at]:
        labels.append(q[at + 1:at + 1 + q[at]].decode('ascii', 'replace').lower()); at += 1 + q[at]
    if len(q) < 12 or at + 5 > len(q):
        continue
    name, qtype = '.'.join(labels), struct.unpack('!H', q[at + 1:at + 3])[0]
    ours = name == '{NAME_PROBE_ZONE}' or name.endswith('.{NAME_PROBE_ZONE}')
    records = 1 if ours and qtype == 1 else 0
    head = q[:2] + struct.pack('!HHHHH', 0x8180 | (0 if ours else 5), 1, records, 0, 0)
    body = q[12:at + 5]
    if records:
        address = '{PRIVATE_NAME_ADDRESS}' if name == '{PRIVATE_NAME}' else '{INTERNET_ADDRESS}'
        body += bytes([0xC0, 0x0C]) + struct.pack('!HHIH', 1, 1, 60, 4) + socket.inet_aton(address)
    s.sendto(head + body, peer)
"""

# Idempotent; prints "ready" once the service answers from the guest.
INTERNET_RESPONDER = rf"""set -eu
if ! ip netns list | grep -qw fr-internet; then
  ip netns add fr-internet
  ip link add fr-in0 type veth peer name fr-in1
  ip link set fr-in1 netns fr-internet
  ip addr add 192.0.2.1/32 dev fr-in0
  ip link set fr-in0 up
  ip route add {INTERNET_ADDRESS}/32 dev fr-in0
  ip netns exec fr-internet ip link set lo up
  ip netns exec fr-internet ip addr add {INTERNET_ADDRESS}/32 dev fr-in1
  ip netns exec fr-internet ip link set fr-in1 up
  ip netns exec fr-internet ip route add 192.0.2.1/32 dev fr-in1
  ip netns exec fr-internet ip route add default via 192.0.2.1
fi
if ! ip netns exec fr-internet ip -o addr show dev fr-in1 | grep -q ' {NAME_SERVER_ADDRESS}/32 '; then
  ip netns exec fr-internet ip addr add {NAME_SERVER_ADDRESS}/32 dev fr-in1
  ip route add {NAME_SERVER_ADDRESS}/32 dev fr-in0
fi
if ! ip netns exec fr-internet ss -lun | grep -q '{NAME_SERVER_ADDRESS}:53 '; then
  ip netns exec fr-internet setsid python3 -c "{NAME_SERVER}" </dev/null >/dev/null 2>&1 &
fi
# The internet's name server first in the guest's resolv.conf, the guest's
# own after it: it refuses names outside its zone, so the guest's apt goes on
# to QEMU's resolver (a refusal, unlike NXDOMAIN, sends glibc to the next).
if ! grep -qx 'nameserver {NAME_SERVER_ADDRESS}' /etc/resolv.conf 2>/dev/null; then
  others=$(grep '^nameserver' /etc/resolv.conf 2>/dev/null || true)
  rm -f /etc/resolv.conf
  printf 'nameserver %s\n%s\n' {NAME_SERVER_ADDRESS} "$others" > /etc/resolv.conf
fi
if ! ip netns exec fr-internet ss -ltn | grep -q ':{INTERNET_PORT} '; then
  ip netns exec fr-internet setsid python3 -c "{ACCEPT_AND_CLOSE}" {" ".join(map(str, INTERNET_PORTS))} \
    </dev/null >/dev/null 2>&1 &
fi
i=0
until timeout 3 bash -c 'exec 3<>/dev/tcp/{INTERNET_ADDRESS}/{INTERNET_PORT}' 2>/dev/null; do
  i=$((i+1)); [ "$i" -lt 60 ] || {{ echo "the lab's internet did not answer" >&2; exit 1; }}
  sleep 1
done
i=0
until ip netns exec fr-internet ss -lun | grep -q '{NAME_SERVER_ADDRESS}:53 '; do
  i=$((i+1)); [ "$i" -lt 60 ] || {{ echo "the lab's name server did not start" >&2; exit 1; }}
  sleep 1
done
echo ready
"""

# Under TCG with several vCPUs (QEMU's multi-threaded TCG), a guest kernel
# that rewrites its own code while another vCPU runs it can execute a stale
# int3 and panic ("Oops: int3" in dequeue_entities, seen in the hostlab when
# verify's first container with a CPU limit started). The scheduler's
# cfs_bandwidth_used key flips each time the first CPU quota appears and the
# last one goes, i.e. at container starts and stops. A cgroup that holds a
# quota for the guest's lifetime (10 CPUs: limits nothing) keeps that key on,
# so it is patched once, here, while the guest is idle. A lab measure only:
# real hosts run on hardware virtualization or bare metal.
SCHEDULER_KEY_PIN = r"""set -eu
test -f /sys/fs/cgroup/cgroup.controllers || { echo "not cgroup v2 at /sys/fs/cgroup" >&2; exit 1; }
cg=/sys/fs/cgroup/functions-runtime-lab-pin
grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control || echo +cpu > /sys/fs/cgroup/cgroup.subtree_control
mkdir -p "$cg"
echo "1000000 100000" > "$cg/cpu.max"
grep -q '^1000000 100000$' "$cg/cpu.max"
"""

# nf_conntrack seeds its hash with get_random_once() at the first packet it
# tracks: a static key, patched once. On a fresh guest that packet came in
# the firewall step, and a CI guest crashed there ("Oops: int3" in
# hash_conntrack_raw). A throwaway table sends one connection attempt
# through conntrack while the guest is idle, so that once is spent here;
# the table is removed again. Hook keys still flip later (every key cannot
# be pinned); tests/hostlab reruns a test whose guest crashed.
CONNTRACK_WARM = r"""set -eu
nft -f - <<'NFT'
table inet functions_runtime_lab_warm {
  chain out { type filter hook output priority 0; policy accept; ct state new counter; }
}
NFT
timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/9' 2>/dev/null || true
nft delete table inet functions_runtime_lab_warm
"""

# Both guards, applied once before the guest's first snapshot (and by `lab up`).
KERNEL_KEY_GUARDS = SCHEDULER_KEY_PIN + CONNTRACK_WARM + "echo ready\n"
