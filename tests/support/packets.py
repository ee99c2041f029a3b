"""Small Python programs that send and receive single UDP datagrams inside
network namespaces, for the host filter's traffic tests here and on the
hostlab guest (python3 runs them in both places; standard library only).
"""

# One UDP datagram as a raw Ethernet frame from eth0 (what a container with
# NET_RAW can send): argv dst_mac src_ip dst_ip sport dport payload. The
# UDP checksum is 0 (none), which IPv4 allows.
FRAME = r"""
import socket, struct, sys
dst_mac, src_ip, dst_ip, sport, dport, payload = sys.argv[1:7]
def checksum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xFFFF); s += s >> 16
    return ~s & 0xFFFF
data = payload.encode()
udp = struct.pack("!HHHH", int(sport), int(dport), 8 + len(data), 0) + data
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                 socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
src_mac = open("/sys/class/net/eth0/address").read().strip()
frame = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00"
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(("eth0", 0)); s.send(frame + ip + udp)
"""

# Prints "ready", then every UDP payload that came to port argv[1] (or "-"),
# once a datagram "end" came or argv[2] seconds passed.
RECEIVE = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[1]))); s.settimeout(0.2)
print("ready", flush=True); end = time.monotonic() + float(sys.argv[2]); got = []
while time.monotonic() < end:
    try:
        payload = s.recv(200).decode()
    except socket.timeout:
        continue
    if payload == "end":
        break
    got.append(payload)
print(" ".join(got) or "-", flush=True)
"""

# A plain UDP datagram from a bound source port (the routed packet of the flow).
SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], int(sys.argv[2])))
for _ in range(3):
    s.sendto(sys.argv[5].encode(), (sys.argv[3], int(sys.argv[4])))
"""
