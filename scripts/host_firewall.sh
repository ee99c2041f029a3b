#!/usr/bin/env bash
# The host's own packet filter (Hetzner Cloud Firewalls do not filter the
# private network). One nftables table, `inet functions_runtime`, that this
# script owns entirely; Docker's iptables-nft tables are left alone.
#
#   input:   policy drop; lo, established/related, essential ICMP/ICMPv6,
#            DHCP replies, SSH from ADMIN_CIDRS, the Docker endpoint from
#            ENDPOINT_CIDRS, the metrics from METRICS_CIDRS, the artifact
#            share (FR_ARTIFACT_SHARE_PORT) from ARTIFACT_PEER_CIDRS (no rule
#            when empty); anything from a container bridge to the host: drop.
#   forward: at priority filter - 10 (before Docker's chains), for traffic
#            that enters from a container bridge:
#            - switched inside one bridge (one container network): accepted
#              here, so a sidecar or a compose-shaped function works;
#            - routed into another bridge (another container network): drop;
#            - to link-local (metadata service), RFC 1918, CGNAT, IPv6 ULA
#              and link-local: drop;
#            - to EGRESS_ALLOWED_CIDRS: accepted here (neither rule below);
#            - SMTP (FR_SMTP_PORTS) when EGRESS_BLOCK_SMTP=true: reset;
#            - new connections over EGRESS_NEW_PER_SECOND (burst
#              EGRESS_NEW_BURST) per container address: drop (no scans).
#            Containers' packets are judged before connection tracking's
#            "established": a flow set up across a bridge is marked and
#            never routed, and a source address the bridge does not route
#            (forged) is dropped.
#            A drop is final across tables; Docker's own accepts and
#            isolation rules still apply to everything this chain lets by.
#   output:  the metadata service for root only; dockerd's own new
#            connections (pulls, as root in the host's namespace, where the
#            forward chain does not apply) to loopback (except a local
#            resolver on FR_DOCKERD_LOOPBACK_PORTS), link-local (metadata
#            service), RFC 1918, CGNAT, IPv6 ULA and link-local: rejected
#            (admin-prohibited: the pull fails at once with "no route to
#            host") and logged, rate-limited. dockerd's sockets are known by
#            docker.service's cgroup: systemd adds it to the set
#            FR_DOCKERD_CGROUP_SET whenever dockerd starts (NFTSet= in
#            configure's drop-in), and this script adds it when it reloads
#            the table under a running dockerd.
#
# "A container bridge" is any Linux bridge (meta iifkind "bridge"): Docker's
# docker0 and br-*, the CNI bridges nerdctl and `ctr run --cni` make
# (nerdctl0, nerdctl-*), and any a later tool names differently. A second
# table, `bridge functions_runtime`, marks frames the bridge itself forwards
# between two of its ports; with br_netfilter (Docker turns it on for
# "icc": false) those frames also pass the inet forward hook, where only the
# mark tells them from routed traffic.
#
# The file /etc/nftables.d/functions-runtime.nft deletes and re-creates the
# table, so `nft -f` applies it atomically. It is loaded at boot by its own
# unit (functions-runtime-firewall.service), not by nftables.service: Debian's
# /etc/nftables.conf starts with `flush ruleset`, which would also remove
# Docker's tables whenever that service is reloaded, and it belongs to the admin.
#
# Input: ADMIN_CIDRS, SSH_PORT, ENDPOINT_CIDRS, ENDPOINT_PORT,
# EGRESS_BLOCK_SMTP, EGRESS_NEW_PER_SECOND, EGRESS_NEW_BURST,
# EGRESS_ALLOWED_CIDRS, METRICS_CIDRS (who may read the node exporter's and dockerd's metrics),
# ARTIFACT_PEER_CIDRS (the fleet's peers that may fetch from this host's artifact share, may be empty);
# SSH_CLIENT (set by sshd) for the lock-out guard.
# Output (stdout): one JSON line {"changed": [...], "table": "inet functions_runtime"}.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FR_NFT_FILE=${FR_NFT_FILE:-/etc/nftables.d/functions-runtime.nft}
FR_FIREWALL_UNIT=${FR_FIREWALL_UNIT:-/etc/systemd/system/functions-runtime-firewall.service}
# Puts a running dockerd's cgroup in the table's dockerd set (enroll_dockerd).
FR_NFT_DOCKERD_FILE=${FR_NFT_DOCKERD_FILE:-/etc/nftables.d/functions-runtime-dockerd.nft}
readonly NFT_TABLE=$FR_HOST_FILTER_TABLE
# Every container network is a Linux bridge (see above): matched by kind.
readonly FROM_CONTAINER='meta iifkind "bridge"'
# Set on frames a bridge forwards between its own ports. veth and tap scrub
# the mark when a packet leaves a container's namespace, so a container
# cannot forge it.
readonly BRIDGED_MARK=0x01000000
# What containers never reach, and the cloud metadata service (contract).
readonly BLOCKED_FROM_CONTAINERS_V4=$FR_CONTAINER_BLOCKED_V4
readonly BLOCKED_FROM_CONTAINERS_V6=$FR_CONTAINER_BLOCKED_V6
readonly METADATA_ADDRESS=$FR_METADATA_ADDRESS

CHANGED=()

# cidr_tool: the one place that parses addresses (python3's ipaddress, so
# IPv6 is handled correctly). Subcommands:
#   split CIDR...          -> lines "4 <net>" / "6 <net>", fatal-worthy input -> exit 2
#   contains ADDR CIDR...  -> exit 0 when ADDR is inside one of the CIDRs
cidr_tool() {
  python3 - "$@" <<'PY'
import ipaddress, sys
cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "split":
    for arg in args:
        try:
            net = ipaddress.ip_network(arg, strict=False)
        except ValueError:
            print(arg)
            sys.exit(2)
        print(net.version, net)
elif cmd == "contains":
    addr = ipaddress.ip_address(args[0].split("%")[0])
    if getattr(addr, "ipv4_mapped", None):
        addr = addr.ipv4_mapped
    nets = [ipaddress.ip_network(a, strict=False) for a in args[1:]]
    sys.exit(0 if any(addr.version == n.version and addr in n for n in nets) else 1)
PY
}

# cidrs_of_family FAMILY LIST: the CIDRs of one family, comma-separated.
cidrs_of_family() {
  local family=$1 list=$2 out bad
  # shellcheck disable=SC2086 # word splitting of the space-separated list is intended
  if ! out=$(cidr_tool split $list); then
    bad=$(tail -n1 <<<"$out")
    fatal "CIDRs like 203.0.113.0/24 or 2001:db8::/32" "'$bad'" \
      "fix functions-runtime:admin.sshSourceCidrs / the endpoint CIDRs in the stack config"
  fi
  awk -v f="$family" '$1 == f { print $2 }' <<<"$out" | paste -sd, - | sed 's/,/, /g'
}

# The program checked every value (components/settings); the script fails
# closed only when one is missing (no contract), and never re-judges them.
check_inputs() {
  require_var ADMIN_CIDRS SSH_PORT ENDPOINT_PORT EGRESS_BLOCK_SMTP EGRESS_NEW_PER_SECOND EGRESS_NEW_BURST
}

# provisioning_connection_allowed: the SSH connection running this script
# would still be accepted by the new rules (its address and its port).
provisioning_connection_allowed() {
  local client_addr local_port
  read -r client_addr _ local_port <<<"$SSH_CLIENT"
  [[ "$local_port" == "$SSH_PORT" ]] || return 1
  # shellcheck disable=SC2086 # the CIDR list is space-separated by contract
  cidr_tool contains "$client_addr" $ADMIN_CIDRS
}

guard_against_lockout() {
  if [[ -z "${SSH_CLIENT:-}" ]]; then
    info "not running over SSH (SSH_CLIENT unset): lock-out guard not applicable"
    return 0
  fi
  local client_addr local_port
  read -r client_addr _ local_port <<<"$SSH_CLIENT"
  provisioning_connection_allowed ||
    fatal "the provisioning connection ($client_addr to port $local_port) to be allowed by ADMIN_CIDRS ($ADMIN_CIDRS) on SSH_PORT $SSH_PORT" \
      "it is not: the new rules would lock out the provisioning connection from $client_addr; nothing was changed" \
      "add it to functions-runtime:admin.sshSourceCidrs (or fix the SSH port)"
}

# render_set NAME TYPE ELEMENTS
render_set() {
  local name=$1 type=$2 elements=$3
  printf '  set %s {\n    type %s\n    flags interval\n    auto-merge\n' "$name" "$type"
  if [[ -n "$elements" ]]; then
    printf '    elements = { %s }\n' "$elements"
  fi
  printf '  }\n\n'
}

# render_egress_rules: what new connections from containers may do once
# they are past the blocked ranges (SMTP, the per-container rate).
render_egress_rules() {
  printf '    ip daddr @egress_allowed_v4 accept\n'
  printf '    ip6 daddr @egress_allowed_v6 accept\n'
  if [[ "$EGRESS_BLOCK_SMTP" == true ]]; then
    printf '    tcp dport { %s } reject with tcp reset\n' "$FR_SMTP_PORTS"
  fi
  if ((EGRESS_NEW_PER_SECOND > 0)); then
    printf '    ct state new update @new_connections_v4 { ip saddr limit rate over %s/second burst %s packets } drop\n' \
      "$EGRESS_NEW_PER_SECOND" "$EGRESS_NEW_BURST"
    printf '    ct state new update @new_connections_v6 { ip6 saddr limit rate over %s/second burst %s packets } drop\n' \
      "$EGRESS_NEW_PER_SECOND" "$EGRESS_NEW_BURST"
  fi
}

# render_peer_rules V4 V6: the artifact share's port for the peers'
# addresses of each family; no rule for a family without one.
render_peer_rules() {
  if [[ -n "$1" ]]; then printf '    ip saddr @artifact_peers_v4 tcp dport %s accept\n' "$FR_ARTIFACT_SHARE_PORT"; fi
  if [[ -n "$2" ]]; then printf '    ip6 saddr @artifact_peers_v6 tcp dport %s accept\n' "$FR_ARTIFACT_SHARE_PORT"; fi
  return 0
}

# render_meter NAME TYPE: a per-address rate table; idle entries expire.
render_meter() {
  printf '  set %s {\n    type %s\n    size 65536\n    flags dynamic, timeout\n    timeout 1m\n  }\n\n' "$1" "$2"
}

# render_ruleset: the whole file, on stdout, from the environment.
render_ruleset() {
  local admin_v4 admin_v6 endpoint_v4 endpoint_v6 allowed_v4 allowed_v6 metrics_v4 metrics_v6 peers_v4 peers_v6
  admin_v4=$(cidrs_of_family 4 "$ADMIN_CIDRS")
  admin_v6=$(cidrs_of_family 6 "$ADMIN_CIDRS")
  endpoint_v4=$(cidrs_of_family 4 "${ENDPOINT_CIDRS:-}")
  endpoint_v6=$(cidrs_of_family 6 "${ENDPOINT_CIDRS:-}")
  allowed_v4=$(cidrs_of_family 4 "${EGRESS_ALLOWED_CIDRS:-}")
  allowed_v6=$(cidrs_of_family 6 "${EGRESS_ALLOWED_CIDRS:-}")
  metrics_v4=$(cidrs_of_family 4 "${METRICS_CIDRS:-}")
  metrics_v6=$(cidrs_of_family 6 "${METRICS_CIDRS:-}")
  peers_v4=$(cidrs_of_family 4 "${ARTIFACT_PEER_CIDRS:-}")
  peers_v6=$(cidrs_of_family 6 "${ARTIFACT_PEER_CIDRS:-}")
  cat <<EOF
# Managed by functions-runtime (scripts/host_firewall.sh); edits are overwritten.
# Applied atomically with: nft -f $FR_NFT_FILE
table bridge $NFT_TABLE {}
delete table bridge $NFT_TABLE
table bridge $NFT_TABLE {
  chain forward {
    type filter hook forward priority -200; policy accept;
    # A frame this bridge switches between two of its ports: one container network.
    meta mark set meta mark | $BRIDGED_MARK
  }
}

table inet $NFT_TABLE {}
delete table inet $NFT_TABLE
table inet $NFT_TABLE {
EOF
  render_set admin_v4 ipv4_addr "$admin_v4"
  render_set admin_v6 ipv6_addr "$admin_v6"
  render_set endpoint_v4 ipv4_addr "$endpoint_v4"
  render_set endpoint_v6 ipv6_addr "$endpoint_v6"
  render_set blocked_from_containers_v4 ipv4_addr "$BLOCKED_FROM_CONTAINERS_V4"
  render_set blocked_from_containers_v6 ipv6_addr "$BLOCKED_FROM_CONTAINERS_V6"
  render_set egress_allowed_v4 ipv4_addr "$allowed_v4"
  render_set egress_allowed_v6 ipv6_addr "$allowed_v6"
  render_set metrics_v4 ipv4_addr "$metrics_v4"
  render_set metrics_v6 ipv6_addr "$metrics_v6"
  render_set artifact_peers_v4 ipv4_addr "$peers_v4"
  render_set artifact_peers_v6 ipv6_addr "$peers_v6"
  printf '  set %s {\n    type cgroupsv2\n  }\n\n' "$FR_DOCKERD_CGROUP_SET"
  render_meter new_connections_v4 ipv4_addr
  render_meter new_connections_v6 ipv6_addr
  cat <<EOF
  chain input {
    type filter hook input priority filter; policy drop;
    iif "lo" accept
    # A flow set up across a container bridge is never the host's, whatever
    # connection tracking says of it (see from_container).
    $FROM_CONTAINER ct mark & $BRIDGED_MARK == $BRIDGED_MARK drop
    ct state established,related accept
    ct state invalid drop
    # Containers never talk to the host itself (sshd, the endpoint, anything listening).
    $FROM_CONTAINER drop
    icmp type { echo-request, destination-unreachable, time-exceeded, parameter-problem } accept
    icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem, echo-request, nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-query } accept
    # DHCP replies (Hetzner Cloud and the hostlab configure addresses by DHCP).
    udp sport 67 udp dport 68 accept
    ip6 saddr $FR_IPV6_LINK_LOCAL udp sport 547 udp dport 546 accept
    ip saddr @admin_v4 tcp dport $SSH_PORT accept
    ip6 saddr @admin_v6 tcp dport $SSH_PORT accept
    ip saddr @endpoint_v4 tcp dport $ENDPOINT_PORT accept
    ip6 saddr @endpoint_v6 tcp dport $ENDPOINT_PORT accept
    ip saddr @metrics_v4 tcp dport { $FR_NODE_EXPORTER_PORT, $FR_DOCKERD_METRICS_PORT } accept
    ip6 saddr @metrics_v6 tcp dport { $FR_NODE_EXPORTER_PORT, $FR_DOCKERD_METRICS_PORT } accept
EOF
  render_peer_rules "$peers_v4" "$peers_v6"
  cat <<EOF
  }

  chain output {
    type filter hook output priority filter; policy accept;
    # The metadata service serves the user-data, which holds the host's own
    # SSH host key: only root on the host may ask it.
    ip daddr $METADATA_ADDRESS meta skuid != 0 drop
    # dockerd connects out for a client (a pull names the registry): never
    # to the host itself, the metadata service or a private network, even
    # when a registry's name resolves there.
    socket cgroupv2 level 2 @$FR_DOCKERD_CGROUP_SET ct state new jump from_dockerd
  }

  chain from_dockerd {
    ip daddr 127.0.0.0/8 meta l4proto { tcp, udp } th dport { $FR_DOCKERD_LOOPBACK_PORTS } return
    ip6 daddr ::1 meta l4proto { tcp, udp } th dport { $FR_DOCKERD_LOOPBACK_PORTS } return
    ip daddr 127.0.0.0/8 goto refuse_dockerd
    ip6 daddr ::1 goto refuse_dockerd
    ip daddr @blocked_from_containers_v4 goto refuse_dockerd
    ip6 daddr @blocked_from_containers_v6 goto refuse_dockerd
  }

  chain refuse_dockerd {
    limit rate 6/minute burst 5 packets log prefix "functions-runtime dockerd refused: " level warn
    counter reject with icmpx admin-prohibited
  }

  chain forward {
    type filter hook forward priority filter - 10; policy accept;
    # Only traffic from containers is this chain's concern, and it is judged
    # before connection tracking's "established": bridged and routed packets
    # share one table, so a flow is not proof that its destination was allowed.
    $FROM_CONTAINER jump from_container
  }

  chain from_container {
    # Inside one container network: the bridge switched it (a sidecar, a
    # compose service). Its flow is marked, so no later packet of it that is
    # routed (a container with NET_RAW, a peer answering in a blocked
    # address's name) passes as established.
    meta mark & $BRIDGED_MARK == $BRIDGED_MARK ct mark set ct mark | $BRIDGED_MARK accept
    ct mark & $BRIDGED_MARK == $BRIDGED_MARK drop
    # A source address the bridge it came in on does not route: forged.
    fib saddr . iif oif missing drop
    # Into another container network: never.
    meta oifkind "bridge" drop
    ip daddr @blocked_from_containers_v4 drop
    ip6 daddr @blocked_from_containers_v6 drop
    ct state established,related accept
EOF
  render_egress_rules
  cat <<EOF
  }
}
EOF
}

render_unit() {
  cat <<EOF
# Managed by functions-runtime (scripts/host_firewall.sh).
[Unit]
Description=functions-runtime host packet filter (nftables table inet $NFT_TABLE)
DefaultDependencies=no
Wants=network-pre.target
Before=network-pre.target shutdown.target docker.service
After=nftables.service
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/nft -f $FR_NFT_FILE
# Reloaded under a running dockerd: its cgroup back into the set (at boot
# dockerd starts later, and systemd adds it then).
ExecStartPost=/bin/sh -c 'if [ -d $FR_CGROUP_ROOT/$FR_DOCKERD_CGROUP ]; then exec /usr/sbin/nft -f $FR_NFT_DOCKERD_FILE; fi'

[Install]
WantedBy=sysinit.target
EOF
}

table_loaded() { nft list table inet "$NFT_TABLE" >/dev/null 2>&1 && nft list table bridge "$NFT_TABLE" >/dev/null 2>&1; }

apply_ruleset() {
  local work check
  make_work_dir work
  render_ruleset >"$work/ruleset.nft"
  if ! check=$(nft -c -f "$work/ruleset.nft" 2>&1); then
    fatal "a ruleset nft accepts" "nft -c said: $check" \
      "report this: the rendered ruleset in scripts/host_firewall.sh is invalid for this nft"
  fi
  if write_file_if_changed "$FR_NFT_FILE" 0600 <"$work/ruleset.nft"; then
    CHANGED+=("$FR_NFT_FILE")
  elif table_loaded; then
    info "nftables table inet $NFT_TABLE already current, skipping"
    return 0
  fi
  run nft -f "$FR_NFT_FILE"
  info "applied nftables table inet $NFT_TABLE"
  CHANGED+=("table inet $NFT_TABLE")
}

# enroll_dockerd: docker.service's cgroup in the filter's dockerd set, so a
# reloaded table judges a dockerd that is already running (systemd adds it
# only when dockerd starts). Adding an element that is there changes nothing.
render_dockerd_enrolment() {
  cat <<EOF
# Managed by functions-runtime (scripts/host_firewall.sh).
# nft reads a cgroupsv2 element as a path under the cgroup root; the cgroup
# must exist (dockerd running).
add element inet $NFT_TABLE $FR_DOCKERD_CGROUP_SET { "$FR_DOCKERD_CGROUP" }
EOF
}

enroll_dockerd() {
  if render_dockerd_enrolment | write_file_if_changed "$FR_NFT_DOCKERD_FILE" 0600; then
    CHANGED+=("$FR_NFT_DOCKERD_FILE")
  fi
  if [[ ! -d "$FR_CGROUP_ROOT/$FR_DOCKERD_CGROUP" ]]; then
    info "dockerd is not running: systemd puts its cgroup in the set when it starts"
    return 0
  fi
  if nft list set inet "$NFT_TABLE" "$FR_DOCKERD_CGROUP_SET" 2>/dev/null | grep -qF "\"$FR_DOCKERD_CGROUP\""; then
    info "dockerd's cgroup already in set $FR_DOCKERD_CGROUP_SET, skipping"
    return 0
  fi
  run nft -f "$FR_NFT_DOCKERD_FILE"
  CHANGED+=("dockerd in set $FR_DOCKERD_CGROUP_SET")
}

enable_at_boot() {
  if render_unit | write_file_if_changed "$FR_FIREWALL_UNIT" 0644; then
    run systemctl daemon-reload
    CHANGED+=("$FR_FIREWALL_UNIT")
  fi
  if systemctl is-enabled --quiet "$(basename "$FR_FIREWALL_UNIT")" 2>/dev/null; then
    return 0
  fi
  run systemctl enable "$(basename "$FR_FIREWALL_UNIT")" >&2
  CHANGED+=("enabled $(basename "$FR_FIREWALL_UNIT")")
}

print_result() {
  printf '{"changed": %s, "table": %s}\n' "$(json_array "${CHANGED[@]}")" \
    "$(json_string "inet $NFT_TABLE")"
}

main() {
  require_root
  check_inputs
  guard_against_lockout
  apply_ruleset
  enroll_dockerd
  enable_at_boot
  print_result
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
