#!/usr/bin/env bash
# Configure Docker as the runtime endpoint: mutual TLS on the private
# address, the sandbox runtimes registered, the sandbox runtime as default,
# the endpoint policy (a Docker authorization plugin, endpoint_authz/ in the
# payload, run by systemd) asked before every API request.
# Also Kata's configuration (chosen hypervisor), nerdctl's CNI path and the
# host's CNI network for containerd's own clients (ctr --cni, nerdctl).
# Before anything is written, `kata-runtime check` runs with the configuration
# of the chosen hypervisor (the file that is then put in force), so a `vm`
# host whose Kata cannot run with it fails with nothing changed.
#
# Input: ISOLATION, KATA_HYPERVISOR, GVISOR_RUNSC, GVISOR_ALLOW_HOST_NETWORK,
# PRIVATE_ADDRESS, ENDPOINT_PORT,
# LIMIT_MAX_MEMORY_MIB, LIMIT_MAX_PIDS, LIMIT_MAX_MILLICPUS, REVOKED_SERIALS
# (space-separated hex), REVOKED_NAMES (one a line), ENDPOINT_REGISTRIES
# (space-separated registry hosts the consumer may pull from); on stdin
# the CA certificate, the server certificate and the server key (PEM, in that
# order). The key goes to a 0600 root file and is never printed.
# Output (stdout): one JSON line
#   {"changed": [...], "restarted": true|false, "defaultRuntime": "runsc", "runtimes": [...],
#    "runscNetwork": "sandbox"|"host"|null, "policyRestarted": true|false}
# A gVisor host whose runsc cannot use gVisor's own network stack is refused
# (one line, nothing changed) unless GVISOR_ALLOW_HOST_NETWORK is true.
#
# Docker reads "hosts" from daemon.json, and refuses to start when -H is also
# given on its command line, so a drop-in replaces Debian's ExecStart (which
# passes -H fd://). dockerd has no setting for the minimum TLS version: its
# TLS server (go-connections) already refuses anything below TLS 1.2.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FR_DOCKER_DIR=${FR_DOCKER_DIR:-/etc/docker}
FR_SYSTEMD_DIR=${FR_SYSTEMD_DIR:-/etc/systemd/system}
FR_NERDCTL_CONFIG=${FR_NERDCTL_CONFIG:-/etc/nerdctl/nerdctl.toml}
readonly DOCKER_SOCKET=/run/docker.sock
readonly DOCKER_READY_TIMEOUT=90 # seconds for dockerd to answer after a restart
readonly ADDRESS_WAIT_SECONDS=120 # dockerd's ExecStartPre waits this long for PRIVATE_ADDRESS
readonly PLUGIN_READY_TIMEOUT=30  # seconds for the policy plugin to answer after a (re)start
FR_PYTHON=${FR_PYTHON:-/usr/bin/python3}

DOCKER_NEEDS_RESTART=0
SOCKET_CHANGED=0
RESTARTED=false
RUNTIMES=()
POLICY_NEEDS_RESTART=0
POLICY_RESTARTED=false

tls_dir() { printf '%s/tls\n' "$FR_DOCKER_DIR"; }

# wait_until_answers PROBE LIMIT STEP WHAT TODO: PROBE every STEP s until
# it succeeds; fatal ("WHAT within LIMIT s", TODO) once LIMIT s have passed.
wait_until_answers() {
  local probe=$1 limit=$2 step=$3 what=$4 todo=$5 waited=0
  until "$probe"; do
    ((waited < limit)) || fatal "$what within $limit s" "no answer" "$todo"
    sleep "$step"
    waited=$((waited + step))
  done
}

# The program checked every value (components/settings); the script fails
# closed only when one is missing (no contract), and never re-judges them.
check_inputs() {
  require_var PRIVATE_ADDRESS ENDPOINT_PORT LIMIT_MAX_MEMORY_MIB LIMIT_MAX_PIDS LIMIT_MAX_MILLICPUS \
    ISOLATION KATA_HYPERVISOR GVISOR_RUNSC GVISOR_ALLOW_HOST_NETWORK
}

install_tls_material() {
  local work dir
  make_secret_dir work
  read_pem_blocks "$work/pem" stack-ca.pem verifier-ca.pem server-cert.pem server-key.pem
  require_pem_kinds "$work/pem" stack-ca.pem:certificate verifier-ca.pem:certificate \
    server-cert.pem:certificate server-key.pem:private-key
  # dockerd trusts both: the stack CA (consumers) and this host's own
  # verifier CA (its verify step's client certificate only).
  cat "$work/pem/stack-ca.pem" "$work/pem/verifier-ca.pem" >"$work/pem/ca.pem"
  dir=$(tls_dir)
  run mkdir -p "$dir"
  run chmod 0755 "$dir"
  if write_changed "$dir/ca.pem" 0644 <"$work/pem/ca.pem"; then DOCKER_NEEDS_RESTART=1; fi
  if write_changed "$dir/server-cert.pem" 0644 <"$work/pem/server-cert.pem"; then DOCKER_NEEDS_RESTART=1; fi
  if write_changed "$dir/server-key.pem" 0600 <"$work/pem/server-key.pem"; then DOCKER_NEEDS_RESTART=1; fi
  run chown root:root "$dir/ca.pem" "$dir/server-cert.pem" "$dir/server-key.pem"
}

# runsc_sandbox_network_broken: this runsc cannot give containers its own
# network stack on this kernel. gVisor builds up to at least 2024-07-29
# (Debian 13's runsc) decide "am I in the root network namespace?" by whether
# /proc/sys/net/core/rmem_default exists; since Linux 6.11 (Debian 13 runs
# 6.12) that file is in every namespace, so every networked container fails
# with "cannot run with network enabled in root network namespace"
# (google/gvisor#10704, found by the hostlab). Both halves are checked: the
# binary holds that path, and a new network namespace shows the file. So a
# fixed runsc, or an older kernel, keeps gVisor's netstack.
runsc_sandbox_network_broken() {
  [[ -x "$RUNSC" ]] || return 1
  grep -qa 'proc/sys/net/core/rmem_default' "$RUNSC" 2>/dev/null || return 1
  unshare --net test -e /proc/sys/net/core/rmem_default 2>/dev/null
}

# RUNSC: the runsc Docker runs (lib.sh's runsc_path: gvisor.runsc), by its
# path; for the release that path names the version, so an upgrade changes
# daemon.json and restarts dockerd. Set by choose_runsc.
RUNSC=""
choose_runsc() {
  RUNSC=$(runsc_path)
  [[ -x "$RUNSC" ]] ||
    fatal "an executable runsc at $RUNSC (functions-runtime:gvisor.runsc is $GVISOR_RUNSC)" "none; nothing was changed" \
      "re-run the install step (scripts/install_runtime.sh), which installs it"
}

# RUNSC_NETWORK: the contract's network names (components/contract.py):
# "sandbox" (gVisor's own netstack) or "host" (runsc --network=host: the
# sandbox uses the kernel's network stack of the container's own network
# namespace: Docker's bridge, the host filter and the isolation checks still
# apply, but socket calls reach the host kernel). Set by choose_runsc_network.
RUNSC_NETWORK=""
choose_runsc_network() {
  local found todo
  RUNSC_NETWORK=$FR_NETWORK_SANDBOX
  runsc_sandbox_network_broken || return 0
  found="$RUNSC ($(runsc_version "$RUNSC")) cannot use it on kernel $(uname -r): it takes /proc/sys/net/core/rmem_default, present in every network namespace since Linux 6.11, as the sign of the root namespace (google/gvisor#10704), so it would run with --network=host, where socket calls reach the host kernel; nothing was changed"
  if [[ "$GVISOR_RUNSC" == debian ]]; then
    todo="set functions-runtime:gvisor.runsc to release (the pinned gVisor release has the fix)"
  else
    todo="pin a gVisor release from August 2024 or later in the catalog's runsc and containerd-shim-runsc-v1 rows"
  fi
  if [[ "$GVISOR_ALLOW_HOST_NETWORK" != true ]]; then
    fatal "gVisor's own network stack for containers (functions-runtime:isolation is $ISOLATION)" "$found" \
      "$todo; or accept the host kernel's network stack with functions-runtime:gvisor.allowHostNetworkStack: true"
  fi
  RUNSC_NETWORK=$FR_NETWORK_HOST
  warn "$RUNSC ($(runsc_version "$RUNSC")) cannot use gVisor's own network stack on kernel $(uname -r): running it with --network=host in each container's namespace, as functions-runtime:gvisor.allowHostNetworkStack allows (socket calls reach the host kernel; the verify report and the endpoint say network '$FR_NETWORK_HOST'); to get the netstack back: $todo"
}

# render_daemon_json DEFAULT RUNTIME...: /etc/docker/daemon.json on stdout.
render_daemon_json() {
  local default=$1 dir runtime first=1
  shift
  dir=$(tls_dir)
  cat <<EOF
{
  "hosts": ["fd://", $(json_string "tcp://$PRIVATE_ADDRESS:$ENDPOINT_PORT")],
  "metrics-addr": $(json_string "$PRIVATE_ADDRESS:$FR_DOCKERD_METRICS_PORT"),
  "tls": true,
  "tlsverify": true,
  "tlscacert": $(json_string "$dir/ca.pem"),
  "tlscert": $(json_string "$dir/server-cert.pem"),
  "tlskey": $(json_string "$dir/server-key.pem"),
  "containerd": "/run/containerd/containerd.sock",
  "runtimes": {
EOF
  for runtime in "$@"; do
    ((first)) || printf ',\n'
    first=0
    case "$runtime" in
      runsc)
        if [[ "$RUNSC_NETWORK" == "$FR_NETWORK_HOST" ]]; then
          printf '    "runsc": {"path": %s, "runtimeArgs": ["--platform=systrap", "--network=host"]}' "$(json_string "$RUNSC")"
        else
          printf '    "runsc": {"path": %s, "runtimeArgs": ["--platform=systrap"]}' "$(json_string "$RUNSC")"
        fi
        ;;
      kata) printf '    "kata": {"runtimeType": "io.containerd.kata.v2"}' ;;
    esac
  done
  cat <<EOF

  },
  "default-runtime": $(json_string "$default"),
  "authorization-plugins": [$(json_string "$FR_AUTHZ_PLUGIN_NAME")],
  "no-new-privileges": true,
  "live-restore": true,
  "icc": false,
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "3"}
}
EOF
}

# render_docker_drop_in: ExecStart without -H (daemon.json has "hosts"), and
# start only once the private address exists (Docker binds to it) and the
# policy plugin answers (dockerd refuses to start without its authorization
# plugins). Wants, not Requires: restarting the plugin must not restart dockerd.
# Each start puts dockerd's cgroup in the host filter's set, whose rules keep
# dockerd's own connections (pulls) off loopback, the metadata service and
# private networks (scripts/host_firewall.sh, chain from_dockerd).
render_docker_drop_in() {
  cat <<EOF
# Managed by functions-runtime (scripts/configure_runtime.sh).
[Unit]
Wants=network-online.target $FR_AUTHZ_UNIT
After=network-online.target containerd.service $FR_AUTHZ_UNIT

[Service]
NFTSet=cgroup:inet:$FR_HOST_FILTER_TABLE:$FR_DOCKERD_CGROUP_SET
ExecStartPre=/bin/sh -c 'i=0; until ip -o address show to $PRIVATE_ADDRESS | grep -q .; do i=\$\$((i+1)); if [ \$\$i -ge $ADDRESS_WAIT_SECONDS ]; then echo "address $PRIVATE_ADDRESS not configured after $ADDRESS_WAIT_SECONDS s" >&2; exit 1; fi; sleep 1; done'
ExecStart=
ExecStart=/usr/sbin/dockerd
EOF
}

# render_socket_drop_in: the local API socket is root's only (no docker group).
render_socket_drop_in() {
  cat <<'EOF'
# Managed by functions-runtime (scripts/configure_runtime.sh).
[Socket]
SocketMode=0600
SocketUser=root
SocketGroup=root
EOF
}

# ---------------------------------------------------------------- endpoint policy

# render_policy_config RUNTIME...: the plugin's configuration
# (load_config in endpoint_authz/rules.py).
render_policy_config() {
  local names=() name
  if [[ -n "${REVOKED_NAMES:-}" ]]; then
    while IFS= read -r name; do [[ -z "$name" ]] || names+=("$name"); done <<<"$REVOKED_NAMES"
  fi
  # shellcheck disable=SC2086 # REVOKED_SERIALS and ENDPOINT_REGISTRIES are space-separated lists
  printf '{"sandboxRuntimes": %s, "limits": {"maxMemoryMiB": %s, "maxPids": %s, "maxMilliCpus": %s}, "revokedSerials": %s, "revokedNames": %s, "registries": %s}\n' \
    "$(json_array "$@")" "$LIMIT_MAX_MEMORY_MIB" "$LIMIT_MAX_PIDS" "$LIMIT_MAX_MILLICPUS" \
    "$(json_array ${REVOKED_SERIALS:-})" "$(json_array "${names[@]}")" "$(json_array ${ENDPOINT_REGISTRIES:-})"
}

# render_policy_unit: the plugin as a systemd service, ready (sd_notify) once
# its socket answers, before dockerd; restarted whenever it stops. It needs
# its socket and to read its files, nothing else. Its socket's directory is
# a RuntimeDirectory (kept across restarts: dockerd's plugins live there
# too), so it exists before the read-only file system is set up.
render_policy_unit() {
  local socket_dir
  socket_dir=$(dirname "$FR_AUTHZ_SOCKET")
  cat <<EOF
# Managed by functions-runtime (scripts/configure_runtime.sh).
[Unit]
Description=functions-runtime endpoint policy (Docker authorization plugin)
Before=docker.service

[Service]
Type=notify
ExecStart=$FR_PYTHON -I $FR_ROOT/endpoint_authz/plugin.py serve --socket $FR_AUTHZ_SOCKET --config $FR_AUTHZ_CONFIG --drain-file $FR_AUTHZ_DRAIN_FILE
Restart=always
RestartSec=1
RuntimeDirectory=${socket_dir#/run/}
RuntimeDirectoryPreserve=yes
RuntimeDirectoryMode=0755
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=$socket_dir
ProtectHome=yes
PrivateTmp=yes
PrivateNetwork=yes

[Install]
WantedBy=multi-user.target
EOF
}

# render_endpoint_command: the operator's one command on the host.
render_endpoint_command() {
  cat <<EOF
#!/bin/sh
# Managed by functions-runtime (scripts/configure_runtime.sh).
set -eu
case "\${1:-}" in
  drain | resume | status)
    exec $FR_PYTHON -I $FR_ROOT/endpoint_authz/plugin.py "\$1" --drain-file $FR_AUTHZ_DRAIN_FILE ;;
  recover)
    systemctl restart $FR_AUTHZ_UNIT
    exec $FR_PYTHON -I $FR_ROOT/endpoint_authz/plugin.py status --drain-file $FR_AUTHZ_DRAIN_FILE ;;
  *)
    echo "usage: \$(basename "\$0") drain|resume|status|recover" >&2
    echo "  drain    refuse new containers through the endpoint; running ones keep running" >&2
    echo "  resume   accept new containers again" >&2
    echo "  status   print whether the host drains" >&2
    echo "  recover  restart the policy plugin (dockerd refuses every request while it is down)" >&2
    exit 2 ;;
esac
EOF
}

# plugin_code_hash: the plugin's code, so a new version restarts it.
plugin_code_hash() { cat "$FR_ROOT"/endpoint_authz/*.py | sha256sum | awk '{print $1}'; }

configure_policy() {
  local work
  make_work_dir work
  render_policy_config "${RUNTIMES[@]}" >"$work/policy.json"
  if [[ -x "$FR_PYTHON" ]] && ! "$FR_PYTHON" -I "$FR_ROOT/endpoint_authz/plugin.py" check-config "$work/policy.json" >/dev/null; then
    fatal "a policy configuration the plugin accepts" "it refused it (see above); nothing was changed" \
      "report this: render_policy_config in scripts/configure_runtime.sh"
  fi
  run mkdir -p "$(dirname "$FR_AUTHZ_CONFIG")" "$(dirname "$FR_AUTHZ_DRAIN_FILE")" "$FR_STATE_DIR"
  # The plugin re-reads this file when it changes: a revocation needs no restart.
  if ! write_changed "$FR_AUTHZ_CONFIG" 0644 <"$work/policy.json"; then
    info "endpoint policy configuration already current, skipping"
  fi
  if write_unit_changed "$FR_SYSTEMD_DIR/$FR_AUTHZ_UNIT" render_policy_unit; then
    POLICY_NEEDS_RESTART=1
  fi
  if write_changed "$FR_STATE_DIR/endpoint-policy.sha256" 0644 plugin_code_hash; then
    POLICY_NEEDS_RESTART=1
  fi
  write_changed "$FR_ENDPOINT_COMMAND" 0755 render_endpoint_command || true
}

plugin_answers() {
  curl -fsS --max-time 5 --unix-socket "$FR_AUTHZ_SOCKET" -X POST http://localhost/Plugin.Activate 2>/dev/null |
    grep -q '"authz"'
}

# start_policy_if_changed: the plugin runs, and answers, before dockerd
# (re)starts with it: dockerd refuses to start without its plugins.
start_policy_if_changed() {
  if ((UNITS_CHANGED)); then run systemctl daemon-reload; fi
  run systemctl enable "$FR_AUTHZ_UNIT" >&2
  if ((POLICY_NEEDS_RESTART)); then
    run systemctl restart "$FR_AUTHZ_UNIT" ||
      fatal "$FR_AUTHZ_UNIT to start" "it failed" "run 'journalctl -u $FR_AUTHZ_UNIT -n 50' on the host"
    POLICY_RESTARTED=true
    info "endpoint policy plugin (re)started"
  else
    run systemctl start "$FR_AUTHZ_UNIT"
  fi
  is_dry_run && return 0
  wait_until_answers plugin_answers "$PLUGIN_READY_TIMEOUT" 1 "the policy plugin to answer on $FR_AUTHZ_SOCKET" \
    "run 'journalctl -u $FR_AUTHZ_UNIT -n 50' on the host"
}

render_nerdctl_toml() {
  cat <<'EOF'
# Managed by functions-runtime (scripts/configure_runtime.sh).
address = "unix:///run/containerd/containerd.sock"
cni_path = "/usr/lib/cni"
EOF
}

# fatal_kata_unusable: ISOLATION=vm on a host where Kata cannot run with the
# chosen hypervisor. choose_runtimes runs before anything is written.
fatal_kata_unusable() {
  local config todo
  if ! has_kvm; then fatal_isolation_unmet; fi
  config=$(kata_shipped_config)
  todo="run '$FR_BIN_DIR/kata-runtime --config $config check --verbose' on the host to see which check fails; Kata needs working hardware KVM (not nested)"
  if kata_hypervisor_untested; then
    todo+="; or set functions-runtime:kata.hypervisor to ${FR_KATA_DOCKER_TESTED_HYPERVISORS%% *}, the hypervisor Kata tests with Docker"
  fi
  todo+="; or set functions-runtime:isolation to sandbox to use gVisor"
  fatal "Kata Containers usable (functions-runtime:isolation is vm) with hypervisor $KATA_HYPERVISOR (functions-runtime:kata.hypervisor)" \
    "$(kata_unusable_reason); nothing was changed" "$todo"
}

# choose_runtimes: RUNTIMES, default first, by lib.sh's wanted_runtimes;
# fatal when the stack's isolation cannot be met on this host.
choose_runtimes() {
  wanted_runtimes
  if runtime_wanted kata && ! kata_usable; then fatal_kata_unusable; fi
  if runtime_wanted kata && kata_hypervisor_untested; then
    warn "Kata runs with $KATA_HYPERVISOR, an experiment the stack accepted (functions-runtime:kata.allowUntestedHypervisor): $FR_KATA_UNTESTED_WITH_DOCKER"
  fi
  if ! runtime_wanted kata; then
    info "Kata not registered: $(kata_unusable_reason); gVisor (runsc) is the runtime"
  fi
  RUNTIMES=("${WANTED_RUNTIMES[@]}")
}

# plan_runtimes: RUNTIMES (default first) and, with gVisor, RUNSC and
# RUNSC_NETWORK. Fatal, before anything on the host is written, when the
# stack cannot be served as it asks.
plan_runtimes() {
  choose_runtimes
  if [[ " ${RUNTIMES[*]} " == *" runsc "* ]]; then
    choose_runsc
    choose_runsc_network
  fi
}

# configure_docker: daemon.json and the drop-ins for RUNTIMES (choose_runtimes).
configure_docker() {
  local work default
  default=${RUNTIMES[0]}
  make_work_dir work
  render_daemon_json "$default" "${RUNTIMES[@]}" >"$work/daemon.json"
  if command -v dockerd >/dev/null && ! dockerd --validate --config-file "$work/daemon.json" >&2; then
    fatal "a daemon.json dockerd accepts" "dockerd --validate rejected it (see above); nothing was changed" \
      "report this: render_daemon_json in scripts/configure_runtime.sh"
  fi
  if write_changed "$FR_DOCKER_DIR/daemon.json" 0644 <"$work/daemon.json"; then
    DOCKER_NEEDS_RESTART=1
  else
    info "daemon.json already current (default runtime $default), skipping"
  fi
  if write_unit_changed "$FR_SYSTEMD_DIR/docker.service.d/functions-runtime.conf" render_docker_drop_in; then
    DOCKER_NEEDS_RESTART=1
  fi
  if write_unit_changed "$FR_SYSTEMD_DIR/docker.socket.d/functions-runtime.conf" render_socket_drop_in; then
    SOCKET_CHANGED=1
  fi
}

configure_kata() {
  local source
  if [[ " ${RUNTIMES[*]} " != *" kata "* ]]; then
    info "Kata not registered on this host, skipping its configuration"
    return 0
  fi
  # The file kata_usable checked `kata-runtime check` with.
  source=$(kata_shipped_config)
  [[ -r "$source" ]] ||
    fatal "Kata's $KATA_HYPERVISOR configuration at $source" "no such file" \
      "re-run install (rm $(marker_path kata)) or choose a hypervisor the Kata release ships"
  if write_changed "$FR_KATA_CONFIG" 0644 <"$source"; then
    info "Kata configured for $KATA_HYPERVISOR"
  else
    info "Kata configuration already current ($KATA_HYPERVISOR), skipping"
  fi
}

configure_nerdctl() { write_changed "$FR_NERDCTL_CONFIG" 0644 render_nerdctl_toml || true; }

# render_cni_conflist: the host's CNI network for containers containerd runs
# past Docker, shaped as nerdctl writes its own: the bridge plugin (gateway,
# masquerade out, host-local addresses), then the firewall plugin, which
# accepts the network's traffic in FORWARD (Docker's policy there is DROP).
# The host filter covers it as it covers every bridge.
render_cni_conflist() {
  cat <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$FR_CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$FR_CNI_BRIDGE",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "$FR_CNI_SUBNET"}]], "routes": [{"dst": "0.0.0.0/0"}]}
    },
    {"type": "firewall"}
  ]
}
EOF
}

configure_cni_network() { write_changed "$FR_CNI_CONFLIST" 0644 render_cni_conflist || true; }

docker_answers() { curl -fsS --max-time 5 --unix-socket "$DOCKER_SOCKET" http://localhost/_ping >/dev/null 2>&1; }

wait_for_docker() {
  is_dry_run && return 0
  wait_until_answers docker_answers "$DOCKER_READY_TIMEOUT" 2 "dockerd to answer on $DOCKER_SOCKET" \
    "run 'journalctl -u docker -n 50' on the host (a wrong PRIVATE_ADDRESS or certificate stops dockerd)"
}

restart_docker_if_changed() {
  if ((SOCKET_CHANGED)); then
    # The socket's mode applies only when it is re-created; live-restore keeps containers.
    run systemctl stop docker.service docker.socket
    run systemctl start docker.socket
    DOCKER_NEEDS_RESTART=1
  fi
  if ((DOCKER_NEEDS_RESTART == 0)) && docker_answers; then
    info "docker configuration unchanged, not restarting"
    return 0
  fi
  run systemctl enable docker.service docker.socket containerd.service >&2
  run systemctl restart docker.service ||
    fatal "docker.service to restart with the new configuration" "it failed" \
      "run 'journalctl -u docker -n 50' on the host"
  RESTARTED=true
  info "docker restarted"
  wait_for_docker
}

print_result() {
  printf '{"changed": %s, "restarted": %s, "defaultRuntime": %s, "runtimes": %s, "runscNetwork": %s, "policyRestarted": %s}\n' \
    "$(json_array "${CHANGED[@]}")" "$RESTARTED" "$(json_string "${RUNTIMES[0]}")" \
    "$(json_array "${RUNTIMES[@]}")" "$(json_string_or_null "$RUNSC_NETWORK")" "$POLICY_RESTARTED"
}

main() {
  require_root
  check_inputs
  # Before anything is written: a Kata that fails its check with the chosen
  # hypervisor's configuration stops a vm host here, and a runsc that cannot
  # be served as the stack asks stops it too, with nothing changed.
  plan_runtimes
  install_tls_material
  configure_docker
  configure_policy
  configure_kata
  configure_nerdctl
  configure_cni_network
  start_policy_if_changed
  restart_docker_if_changed
  print_result
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
