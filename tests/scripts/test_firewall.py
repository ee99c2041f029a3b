"""scripts/host_firewall.sh: the ruleset rendering and the lock-out guard.

Proves: CIDRs are normalized and split into IPv4/IPv6 sets; malformed CIDRs
are refused; the rendered file deletes and re-creates its own table (atomic
`nft -f`), drops container-bridge traffic to the host and, in a forward chain
ahead of Docker's, to link-local/RFC 1918/CGNAT/ULA; when `nft` is installed
here, `nft -c` (check only, nothing applied) accepts the rendered ruleset; the
lock-out guard refuses an SSH_CLIENT outside ADMIN_CIDRS or on another port;
ARTIFACT_PEER_CIDRS is split by family and admitted to the artifact share's
port only, with no rule for a family it does not name.
Does not prove: the rules' effect on real traffic next to Docker's
iptables-nft rules (verify_host.sh checks that from inside a sandbox, in the
hostlab and on real hosts), nor the systemd unit at boot.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from components.contract import ARTIFACT_SHARE_PORT
from tests.scripts.helpers import run_bash

BASE = {
    "SSH_PORT": "22",
    "ENDPOINT_PORT": "2376",
    "EGRESS_BLOCK_SMTP": "true",
    "EGRESS_NEW_PER_SECOND": "50",
    "EGRESS_NEW_BURST": "200",
    "EGRESS_ALLOWED_CIDRS": "",
}


def render(fr_env, admin: str, endpoint: str):
    return run_bash(
        "render_ruleset",
        {**fr_env, **BASE, "ADMIN_CIDRS": admin, "ENDPOINT_CIDRS": endpoint},
        script="host_firewall.sh",
    )


def set_elements(ruleset: str, name: str) -> str | None:
    block = ruleset.split(f"set {name} {{", 1)[1].split("}\n\n", 1)[0]
    for line in block.splitlines():
        if "elements" in line:
            return line.split("{", 1)[1].rsplit("}", 1)[0].strip()
    return None


@pytest.mark.parametrize(
    ("admin", "endpoint", "expected"),
    [
        (
            "203.0.113.7/24",
            "10.0.0.0/16",
            {"admin_v4": "203.0.113.0/24", "admin_v6": None, "endpoint_v4": "10.0.0.0/16"},
        ),
        (
            "198.51.100.1/32 2001:db8::5/64",
            "",
            {
                "admin_v4": "198.51.100.1/32",
                "admin_v6": "2001:db8::/64",
                "endpoint_v4": None,
                "endpoint_v6": None,
            },
        ),
        (
            "0.0.0.0/0 ::/0",
            "10.1.0.0/24 fd00::/8",
            {"admin_v4": "0.0.0.0/0", "admin_v6": "::/0", "endpoint_v6": "fd00::/8"},
        ),
    ],
)
def test_sets_are_split_by_family(fr_env, admin, endpoint, expected):
    r = render(fr_env, admin, endpoint)
    assert r.rc == 0, r.stderr
    for name, elements in expected.items():
        assert set_elements(r.stdout, name) == elements, name


def test_ruleset_shape(fr_env):
    out = render(fr_env, "203.0.113.0/24", "10.0.0.0/16").stdout
    lines = [line.strip() for line in out.splitlines()]
    # Atomic replace of our own tables only: declare, delete, define.
    for family in ("bridge", "inet"):
        assert lines.index(f"table {family} functions_runtime {{}}") < lines.index(
            f"delete table {family} functions_runtime"
        )
    assert "flush ruleset" not in out
    assert "type filter hook input priority filter; policy drop;" in lines
    assert "type filter hook forward priority filter - 10; policy accept;" in lines
    # Container bridges by kind, never by a list of today's names.
    assert 'meta iifkind "bridge" drop' in lines
    assert 'meta iifkind "bridge" jump from_container' in lines
    assert "docker0" not in out and "br-*" not in out
    # Inside one bridge: marked by the bridge family, accepted before the drops.
    assert "type filter hook forward priority -200; policy accept;" in lines
    assert "meta mark set meta mark | 0x01000000" in lines
    chain = [line for line in lines[lines.index("chain from_container {") :] if not line.startswith("#")]
    # ... and its flow is marked in connection tracking; a routed packet of a marked flow is dropped.
    assert chain[1] == "meta mark & 0x01000000 == 0x01000000 ct mark set ct mark | 0x01000000 accept"
    assert chain[2] == "ct mark & 0x01000000 == 0x01000000 drop"
    assert chain[3] == "fib saddr . iif oif missing drop"
    assert chain[4] == 'meta oifkind "bridge" drop'
    # A container's packets meet the blocked ranges before "established" (not after, as before).
    inet_forward = len(lines) - 1 - lines[::-1].index("chain forward {")
    forward = lines[inet_forward : lines.index("chain from_container {")]
    assert "ct state established,related accept" not in forward
    assert (
        chain.index("ip daddr @blocked_from_containers_v4 drop")
        < chain.index("ct state established,related accept")
        < chain.index("ip daddr @egress_allowed_v4 accept")
    )
    assert set_elements(out, "blocked_from_containers_v4") == (
        "169.254.0.0/16, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10"
    )
    assert set_elements(out, "blocked_from_containers_v6") == "fc00::/7, fe80::/10"
    assert "ip saddr @admin_v4 tcp dport 22 accept" in lines
    assert "ip saddr @endpoint_v4 tcp dport 2376 accept" in lines
    # Only root on the host may read the metadata service (user-data holds the host key).
    assert "type filter hook output priority filter; policy accept;" in lines
    assert "ip daddr 169.254.169.254 meta skuid != 0 drop" in lines
    # dockerd's own new connections (its pulls) go through from_dockerd, by its cgroup.
    assert "socket cgroupv2 level 2 @dockerd ct state new jump from_dockerd" in lines
    dockerd = lines[lines.index("chain from_dockerd {") : lines.index("chain refuse_dockerd {")]
    # A resolver on loopback first, then loopback, the metadata service and private ranges refused.
    assert dockerd[1:] == [
        "ip daddr 127.0.0.0/8 meta l4proto { tcp, udp } th dport { 53 } return",
        "ip6 daddr ::1 meta l4proto { tcp, udp } th dport { 53 } return",
        "ip daddr 127.0.0.0/8 goto refuse_dockerd",
        "ip6 daddr ::1 goto refuse_dockerd",
        "ip daddr @blocked_from_containers_v4 goto refuse_dockerd",
        "ip6 daddr @blocked_from_containers_v6 goto refuse_dockerd",
        "}",
        "",
    ]
    refuse = lines[lines.index("chain refuse_dockerd {") :]
    assert refuse[2] == "counter reject with icmpx admin-prohibited"
    assert refuse[1].startswith("limit rate 6/minute") and "log prefix" in refuse[1]
    # established/related before the bridge drop (replies to the host's own connections),
    # but never for a flow set up across a bridge.
    assert (
        lines.index('meta iifkind "bridge" ct mark & 0x01000000 == 0x01000000 drop')
        < lines.index("ct state established,related accept")
        < lines.index('meta iifkind "bridge" drop')
    )


def test_egress_defaults_block_smtp_and_limit_new_connections(fr_env):
    lines = [line.strip() for line in render(fr_env, "203.0.113.0/24", "").stdout.splitlines()]
    assert "tcp dport { 25, 465 } reject with tcp reset" in lines
    assert (
        "ct state new update @new_connections_v4 { ip saddr limit rate over 50/second burst 200 packets } drop"
        in lines
    )
    assert (
        "ct state new update @new_connections_v6 { ip6 saddr limit rate over 50/second burst 200 packets } drop"
        in lines
    )
    # The allow list comes before both.
    assert lines.index("ip daddr @egress_allowed_v4 accept") < lines.index(
        "tcp dport { 25, 465 } reject with tcp reset"
    )


def test_egress_settings_turn_smtp_block_and_rate_limit_off(fr_env):
    env = {**fr_env, **BASE, "ADMIN_CIDRS": "203.0.113.0/24", "ENDPOINT_CIDRS": ""}
    env.update({"EGRESS_BLOCK_SMTP": "false", "EGRESS_NEW_PER_SECOND": "0", "EGRESS_ALLOWED_CIDRS": "198.51.100.7/32 2001:db8::/48"})
    out = run_bash("render_ruleset", env, script="host_firewall.sh").stdout
    assert "dport { 25, 465 }" not in out and "limit rate over" not in out
    assert set_elements(out, "egress_allowed_v4") == "198.51.100.7/32"
    assert set_elements(out, "egress_allowed_v6") == "2001:db8::/48"


def test_the_artifact_share_admits_its_peers_by_family_on_its_port_only(fr_env):
    """ARTIFACT_PEER_CIDRS: the fleet's peers reach the artifact share
    (FR_ARTIFACT_SHARE_PORT), split into a set per family like METRICS_CIDRS."""
    env = {**fr_env, **BASE, "ADMIN_CIDRS": "203.0.113.0/24", "ENDPOINT_CIDRS": "",
           "ARTIFACT_PEER_CIDRS": "10.0.1.7 10.0.2.0/24 fd00::5/128"}
    out = run_bash("render_ruleset", env, script="host_firewall.sh").stdout
    lines = [line.strip() for line in out.splitlines()]
    assert set_elements(out, "artifact_peers_v4") == "10.0.1.7/32, 10.0.2.0/24"
    assert set_elements(out, "artifact_peers_v6") == "fd00::5/128"
    input_chain = lines[lines.index("chain input {") : lines.index("chain output {")]
    assert f"ip saddr @artifact_peers_v4 tcp dport {ARTIFACT_SHARE_PORT} accept" in input_chain
    assert f"ip6 saddr @artifact_peers_v6 tcp dport {ARTIFACT_SHARE_PORT} accept" in input_chain
    # After the container-bridge drop: a container never reaches the share.
    assert input_chain.index('meta iifkind "bridge" drop') < input_chain.index(
        f"ip saddr @artifact_peers_v4 tcp dport {ARTIFACT_SHARE_PORT} accept"
    )


@pytest.mark.parametrize(("peers", "families"), [("", ()), ("10.0.1.7/32", ("ip ",)), ("fd00::5", ("ip6 ",))])
def test_no_peer_of_a_family_means_no_share_rule_for_it(fr_env, peers, families):
    env = {**fr_env, **BASE, "ADMIN_CIDRS": "203.0.113.0/24", "ENDPOINT_CIDRS": "", "ARTIFACT_PEER_CIDRS": peers}
    out = run_bash("render_ruleset", env, script="host_firewall.sh").stdout
    rules = [line.strip() for line in out.splitlines() if f"dport {ARTIFACT_SHARE_PORT}" in line]
    assert [rule.split("saddr")[0] for rule in rules] == list(families)
    unset = {k: v for k, v in env.items() if k != "ARTIFACT_PEER_CIDRS"}
    if not peers:
        assert run_bash("render_ruleset", unset, script="host_firewall.sh").stdout == out


@pytest.mark.parametrize("variable", ["ADMIN_CIDRS", "EGRESS_BLOCK_SMTP", "EGRESS_NEW_PER_SECOND", "SSH_PORT"])
def test_a_missing_variable_fails_closed_naming_it(fr_env, variable):
    """The program checks every value (components/settings); the script
    trusts them and stops only when one is missing."""
    env = {**fr_env, **BASE, "ADMIN_CIDRS": "203.0.113.0/24", "ENDPOINT_CIDRS": "", variable: ""}
    r = run_bash("check_inputs", env, script="host_firewall.sh")
    assert r.rc != 0 and f"variable {variable} to be set" in r.stderr and "test-host-1" in r.stderr


def nft_check_works() -> bool:
    if not shutil.which("nft"):
        return False
    probe = subprocess.run(
        ["nft", "-c", "-f", "-"], input="table inet fr_probe {}\n", capture_output=True, text=True
    )
    return probe.returncode == 0


@pytest.mark.skipif(
    not nft_check_works(), reason="nft -c unavailable here (apt-get install nftables; needs CAP_NET_ADMIN)"
)
@pytest.mark.parametrize(
    ("admin", "endpoint", "peers"),
    [
        ("203.0.113.0/24 10.0.0.0/8 10.1.0.0/16", "10.0.0.0/16", ""),
        ("2001:db8::/32", "", ""),
        ("203.0.113.0/24", "10.0.0.0/16", "10.0.1.7/32 10.0.2.0/24 fd00::5/128"),
    ],
)
def test_nft_accepts_rendered_ruleset(fr_env, tmp_path, admin, endpoint, peers):
    path = tmp_path / "ruleset.nft"
    path.write_text(render({**fr_env, "ARTIFACT_PEER_CIDRS": peers}, admin, endpoint).stdout)
    check = subprocess.run(["nft", "-c", "-f", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize(
    ("ssh_client", "admin", "allowed"),
    [
        ("203.0.113.9 51000 22", "203.0.113.0/24", True),
        ("198.51.100.9 51000 22", "203.0.113.0/24", False),
        ("203.0.113.9 51000 2222", "203.0.113.0/24", False),  # connection on another port than SSH_PORT
        ("2001:db8::9 51000 22", "203.0.113.0/24 2001:db8::/32", True),
        ("::ffff:203.0.113.9 51000 22", "203.0.113.0/24", True),  # v4-mapped
        ("10.0.2.2 51000 22", "0.0.0.0/0", True),
        ("", "203.0.113.0/24", True),  # not over SSH: guard not applicable
    ],
)
def test_lockout_guard(fr_env, ssh_client, admin, allowed):
    r = run_bash(
        "guard_against_lockout && echo ok",
        {**fr_env, **BASE, "ADMIN_CIDRS": admin, "ENDPOINT_CIDRS": "", "SSH_CLIENT": ssh_client},
        script="host_firewall.sh",
    )
    if allowed:
        assert r.rc == 0 and r.stdout.strip() == "ok", r.stderr
    else:
        assert r.rc != 0
        addr = ssh_client.split()[0]
        assert f"would lock out the provisioning connection from {addr}" in r.stderr
        assert "functions-runtime:admin.sshSourceCidrs" in r.stderr


def test_lockout_guard_runs_before_any_change(fr_env, tmp_path):
    """main refuses before writing the ruleset file (FR_NFT_FILE stays absent)."""
    nft_file = tmp_path / "etc" / "functions-runtime.nft"
    r = run_bash(
        "main",
        {
            **fr_env,
            **BASE,
            "ADMIN_CIDRS": "203.0.113.0/24",
            "ENDPOINT_CIDRS": "",
            "SSH_CLIENT": "198.51.100.9 5 22",
            "FR_NFT_FILE": str(nft_file),
            "FR_DRY_RUN": "1",
        },
        script="host_firewall.sh",
    )
    assert r.rc != 0 and not nft_file.exists() and r.stdout == ""


def _enroll(fr_env, tmp_path, listed: str):
    """enroll_dockerd with a stand-in `nft` that records its arguments and
    lists the set as `listed`. Proves what the step writes and asks nft to
    do; not that the kernel matches dockerd's sockets (tests/hostlab)."""
    fake = tmp_path / "fake-bin"
    fake.mkdir(exist_ok=True)
    calls = tmp_path / "nft-calls"
    (fake / "nft").write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {calls}\n'
        f'if [ "$1" = list ]; then printf "%s\\n" \'{listed}\'; fi\n'
    )
    (fake / "nft").chmod(0o755)
    env = {
        **fr_env, **BASE, "ADMIN_CIDRS": "203.0.113.0/24", "ENDPOINT_CIDRS": "",
        "FR_CGROUP_ROOT": str(tmp_path / "cgroup"), "FR_NFT_DOCKERD_FILE": str(tmp_path / "dockerd.nft"),
        "PATH": f"{fake}:/usr/bin:/bin",
    }
    r = run_bash('enroll_dockerd && printf "%s\\n" "${CHANGED[@]}"', env, script="host_firewall.sh")
    assert r.rc == 0, r.stderr
    return r, (calls.read_text().splitlines() if calls.exists() else []), tmp_path / "dockerd.nft"


def test_without_a_running_dockerd_the_enrolment_waits_for_systemd(fr_env, tmp_path):
    r, calls, file = _enroll(fr_env, tmp_path, "")
    assert calls == [] and "systemd puts its cgroup in the set when it starts" in r.stderr
    assert 'add element inet functions_runtime dockerd { "system.slice/docker.service" }' in file.read_text()


def test_a_running_dockerd_is_put_in_the_set_once(fr_env, tmp_path):
    (tmp_path / "cgroup" / "system.slice" / "docker.service").mkdir(parents=True)
    r, calls, file = _enroll(fr_env, tmp_path, "")
    assert calls[-1] == f"-f {file}" and str(file) in r.stdout
    # Listed already: nothing applied, nothing reported changed.
    (tmp_path / "nft-calls").unlink()
    r, calls, _ = _enroll(fr_env, tmp_path, 'elements = { "system.slice/docker.service" }')
    assert [c for c in calls if c.startswith("-f")] == [] and r.stdout.strip() == ""


def test_the_unit_puts_a_running_dockerd_back_after_a_reload(fr_env):
    unit = run_bash("render_unit", {**fr_env, **BASE}, script="host_firewall.sh").stdout.splitlines()
    post = next(line for line in unit if line.startswith("ExecStartPost="))
    assert "/sys/fs/cgroup/system.slice/docker.service" in post and "nft -f" in post
