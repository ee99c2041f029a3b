#!/usr/bin/env bash
# The delete-time step of a host (the `delete` of its retire command): the
# host leaves the stack or is replaced.
#
# 1. Drain: the endpoint policy's drain file, marked as a retiring host's
#    (FR_AUTHZ_RETIRE_MARK), so container creates are refused from now on
#    and the canary, which lifts only its own drain, never lifts this one.
# 2. Wait for the running containers (`docker ps -q` on the local socket, as
#    root) to finish, every FR_RETIRE_POLL_SECONDS, for at most DRAIN_TIMEOUT
#    seconds. A timeout is reported, never fatal: a failed delete would keep
#    Pulumi from ever letting the host go. No docker (the host never finished
#    its install) means nothing runs.
# 3. A Cloud server (HOST_SOURCE=hcloud) is deleted right after this step:
#    nothing more. A dedicated server cannot be deleted, so it is
#    decommissioned: dockerd listens on its local socket only again (the
#    endpoint's settings out of daemon.json, configure's drop-in removed,
#    dockerd restarted; running containers survive it, live-restore), the
#    endpoint policy, the canary and GC timers and the node exporter stopped
#    and disabled, the stack's CA trust and the host's certificates and keys
#    removed (the TLS directory, which holds the verifier CA too, and the
#    canary's credentials), the drain file taken away again (nothing reads
#    it once the policy is gone, and a machine adopted again must not come
#    back draining), and last the program-managed SSH keys, so the fleet's
#    keys open the machine no more. The packages and the runtimes' own
#    configuration stay: the operator owns the machine.
#
# Every decommissioning step is best effort: one that fails is a warning in
# the result, and the next still runs.
#
# Input: DRAIN_TIMEOUT (seconds, a whole number), HOST_SOURCE (hcloud or
# dedicated). A value the program would never send is a warning, not a
# failure (the drain then waits 0 s; an unknown source is only drained).
# Output (stdout): one JSON line
#   {"drained": true, "waitedSeconds": N, "running": K|null, "timedOut": true|false,
#    "decommissioned": true|false, "removed": [...], "changed": [...], "stopped": [...], "warnings": [...]}
# ("running": still running at the end; null when dockerd never answered.)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Tests poll faster; on a host every 5 s is plenty for containers that take minutes.
FR_RETIRE_POLL_SECONDS=${FR_RETIRE_POLL_SECONDS:-5}
# Where configure_runtime.sh and configure_upkeep.sh write (theirs, the same defaults).
FR_DOCKER_DIR=${FR_DOCKER_DIR:-/etc/docker}
FR_SYSTEMD_DIR=${FR_SYSTEMD_DIR:-/etc/systemd/system}
FR_PYTHON=${FR_PYTHON:-/usr/bin/python3}
# A `docker ps` that takes longer is a dockerd that does not answer.
readonly DOCKER_CALL_TIMEOUT=30
# configure_runtime.sh's drop-in for docker.service (ExecStart without -H,
# the private address awaited, the host filter's cgroup set).
readonly DOCKER_DROP_IN_NAME=functions-runtime.conf
# The keys daemon.json has only for the endpoint (render_daemon_json in
# configure_runtime.sh): the TCP listener, its TLS, dockerd's metrics on the
# private address, the endpoint policy.
readonly ENDPOINT_DAEMON_KEYS=(hosts tls tlsverify tlscacert tlscert tlskey metrics-addr authorization-plugins)
readonly RETIRE_REASON="the host leaves the stack or is replaced: container create is refused; running containers finish"

TIMEOUT=0
SOURCE=""
DRAINED=false
WAITED=0
RUNNING=null
TIMED_OUT=false
DECOMMISSIONED=false
WARNINGS=()

note_warning() {
  warn "$1"
  WARNINGS+=("$1")
}

# read_inputs: the program checked both; a value it would never send must
# still not keep the host from being deleted.
read_inputs() {
  if [[ "${DRAIN_TIMEOUT:-}" =~ ^[0-9]{1,6}$ ]]; then
    TIMEOUT=$((10#$DRAIN_TIMEOUT))
  else
    note_warning "DRAIN_TIMEOUT is '$(one_line "${DRAIN_TIMEOUT:-}")', not a whole number of seconds: not waiting for running containers"
  fi
  SOURCE=${HOST_SOURCE:-}
  if [[ "$SOURCE" != hcloud && "$SOURCE" != dedicated ]]; then
    note_warning "HOST_SOURCE is '$(one_line "$SOURCE")', neither hcloud nor dedicated: draining only, nothing decommissioned"
  fi
}

# ---------------------------------------------------------------- drain

drain_mark() { printf '%s: %s\n' "$FR_AUTHZ_RETIRE_MARK" "$RETIRE_REASON"; }

# drain: whatever drained the host before (an operator, the canary, whose
# mark the canary would lift), it is a retiring host's drain from now on.
drain() {
  if mkdir -p "$(dirname "$FR_AUTHZ_DRAIN_FILE")" && drain_mark | write_file_if_changed "$FR_AUTHZ_DRAIN_FILE" 0644 >/dev/null; then
    info "draining: container create is refused from now on ($FR_AUTHZ_DRAIN_FILE)"
  elif [[ "$(cat "$FR_AUTHZ_DRAIN_FILE" 2>/dev/null)" == "$(drain_mark)" ]]; then
    info "already draining as a retiring host ($FR_AUTHZ_DRAIN_FILE)"
  else
    note_warning "could not write the drain file $FR_AUTHZ_DRAIN_FILE: new containers may still be created"
    return 0
  fi
  DRAINED=true
}

# ---------------------------------------------------------------- wait

docker_cli() { timeout "$DOCKER_CALL_TIMEOUT" docker --host "unix://$FR_DOCKER_SOCKET" "$@"; }

# running_containers: how many run now, or status 1 when dockerd does not answer.
running_containers() {
  local ids
  ids=$(docker_cli ps -q 2>/dev/null) || return 1
  grep -c . <<<"$ids" || true
}

# now_us: microseconds since the epoch (EPOCHREALTIME; any locale's separator).
now_us() { printf '%s' "${EPOCHREALTIME//[.,]/}"; }

# wait_for_running_containers: RUNNING (null while dockerd does not answer),
# WAITED, TIMED_OUT. A dockerd that does not answer and is not running
# either leaves nothing to wait for.
wait_for_running_containers() {
  local start elapsed=0 count last=""
  if ! command -v docker >/dev/null; then
    info "no docker CLI on this host (its install never finished): no container to wait for"
    RUNNING=0
    return 0
  fi
  start=$(now_us)
  while true; do
    if count=$(running_containers); then
      RUNNING=$count
    else
      RUNNING=null
      if ! unit_active docker.service; then
        note_warning "dockerd does not answer on $FR_DOCKER_SOCKET and docker.service is not running: not waiting"
        break
      fi
    fi
    elapsed=$((($(now_us) - start) / 1000000))
    [[ "$RUNNING" != 0 ]] || break
    if ((elapsed >= TIMEOUT)); then
      TIMED_OUT=true
      break
    fi
    if [[ "$RUNNING" != "$last" ]]; then
      info "$([[ "$RUNNING" == null ]] && echo "dockerd does not answer" || echo "$RUNNING container(s) still running"); waited ${elapsed}s of ${TIMEOUT}s"
      last=$RUNNING
    fi
    sleep "$FR_RETIRE_POLL_SECONDS"
  done
  WAITED=$elapsed
  if [[ "$TIMED_OUT" == true ]]; then
    warn "gave up after ${WAITED}s (DRAIN_TIMEOUT): $([[ "$RUNNING" == null ]] && echo "dockerd never answered" || echo "$RUNNING container(s) still running"); the host goes anyway"
  elif [[ "$RUNNING" == 0 ]]; then
    info "no container running after ${WAITED}s"
  fi
}

# ---------------------------------------------------------------- decommission (dedicated)

# try WHAT COMMAND...: run a decommissioning step; a failure is a warning.
try() {
  local what=$1
  shift
  "$@" || note_warning "$what failed; the rest of the decommissioning goes on (see above)"
}

# strip_daemon_json FILE: FILE without the endpoint's keys, on stdout.
strip_daemon_json() {
  "$FR_PYTHON" -I -c '
import json, sys
config = json.load(open(sys.argv[1]))
for key in sys.argv[2:]:
    config.pop(key, None)
print(json.dumps(config, indent=2))
' "$1" "${ENDPOINT_DAEMON_KEYS[@]}"
}

# local_socket_only: dockerd without the TCP listener, its TLS and the
# endpoint policy, restarted when that changed anything (live-restore keeps
# running containers). daemon.json keeps the rest (runtimes, default
# runtime, logging); Debian's own ExecStart (-H fd://) comes back with the
# drop-in gone. The root-only socket drop-in stays: it only narrows.
local_socket_only() {
  local daemon_json=$FR_DOCKER_DIR/daemon.json stripped restart=0
  if [[ -f "$daemon_json" ]]; then
    stripped=$(strip_daemon_json "$daemon_json") || {
      note_warning "could not read $daemon_json as JSON: moving it aside to $daemon_json.retired (dockerd starts with its defaults)"
      run mv -f -- "$daemon_json" "$daemon_json.retired"
      CHANGED+=("$daemon_json")
      stripped=""
      restart=1
    }
    if [[ -n "$stripped" ]] && printf '%s\n' "$stripped" | write_file_if_changed "$daemon_json" 0644; then
      CHANGED+=("$daemon_json")
      restart=1
    fi
  fi
  local before=${#REMOVED_PATHS[@]}
  remove_paths "$FR_SYSTEMD_DIR/docker.service.d/$DOCKER_DROP_IN_NAME" || return 1
  ((${#REMOVED_PATHS[@]} == before)) || restart=1
  ((restart)) || return 0
  run systemctl daemon-reload || return 1
  if unit_active docker.service || unit_enabled docker.service; then
    run systemctl restart docker.service || return 1
    info "dockerd restarted: it listens on its local socket only"
  fi
}

stop_endpoint_policy() {
  disable_units "$FR_AUTHZ_UNIT" || return 1
  remove_paths "$FR_SYSTEMD_DIR/$FR_AUTHZ_UNIT" "$FR_AUTHZ_CONFIG" "$FR_ENDPOINT_COMMAND" \
    "$FR_STATE_DIR/endpoint-policy.sha256" || return 1
  run systemctl daemon-reload
}

# stop_upkeep: the canary and GC timers (and a run in progress), the node
# exporter, and what they wrote. The node exporter's defaults go only when
# they are the upkeep step's, and the package itself stays.
stop_upkeep() {
  local unit
  disable_units "$FR_CANARY_UNIT.timer" "$FR_GC_UNIT.timer" "$FR_NODE_EXPORTER_UNIT.service" || return 1
  stop_units "$FR_CANARY_UNIT.service" "$FR_GC_UNIT.service" || return 1
  for unit in "$FR_CANARY_UNIT.timer" "$FR_CANARY_UNIT.service" "$FR_GC_UNIT.timer" "$FR_GC_UNIT.service"; do
    remove_paths "$FR_SYSTEMD_DIR/$unit" || return 1
  done
  if grep -qs '^# Managed by functions-runtime' "$FR_NODE_EXPORTER_DEFAULTS"; then
    remove_paths "$FR_NODE_EXPORTER_DEFAULTS" || return 1
  fi
  remove_paths "$FR_CANARY_RESULT" "$FR_TEXTFILE_DIR"/functions_runtime_*.prom || return 1
  run systemctl daemon-reload
}

# remove_trust_and_keys: the stack's CA and this host's verifier CA
# (dockerd's ca.pem holds both), the server certificate and key, the canary's
# credentials (stack CA, client certificate and key) and its variables.
remove_trust_and_keys() { remove_paths "$FR_DOCKER_DIR/tls" "$FR_CANARY_DIR"; }

# lift_our_drain: only a retiring host's mark; an operator's own stays.
lift_our_drain() {
  [[ "$(head -c "${#FR_AUTHZ_RETIRE_MARK}" "$FR_AUTHZ_DRAIN_FILE" 2>/dev/null)" == "$FR_AUTHZ_RETIRE_MARK" ]] || return 0
  remove_paths "$FR_AUTHZ_DRAIN_FILE"
}

# remove_fleet_ssh_keys: last, so a failure before it leaves the machine
# reachable for another try. The whole directory is the program's (every
# account's file in it); the account's own authorized_keys is the machine's.
remove_fleet_ssh_keys() { remove_paths "$FR_SSH_KEYS_DIR" "$FR_STATE_DIR/granted-ssh-keys"; }

decommission() {
  [[ "$SOURCE" == dedicated ]] || return 0
  info "decommissioning this dedicated server (it cannot be deleted): the endpoint, upkeep, trust and the fleet's keys go; the packages stay"
  try "restarting dockerd on its local socket only" local_socket_only
  try "stopping the endpoint policy" stop_endpoint_policy
  try "stopping the canary, GC and the node exporter" stop_upkeep
  try "removing the certificates and keys" remove_trust_and_keys
  try "lifting the retiring drain" lift_our_drain
  try "removing the fleet's SSH keys" remove_fleet_ssh_keys
  DECOMMISSIONED=true
}

print_result() {
  printf '{"drained": %s, "waitedSeconds": %s, "running": %s, "timedOut": %s, "decommissioned": %s, "removed": %s, "changed": %s, "stopped": %s, "warnings": %s}\n' \
    "$DRAINED" "$WAITED" "$RUNNING" "$TIMED_OUT" "$DECOMMISSIONED" "$(json_array "${REMOVED_PATHS[@]}")" \
    "$(json_array "${CHANGED[@]}")" "$(json_array "${STOPPED_UNITS[@]}")" "$(json_array "${WARNINGS[@]}")"
}

main() {
  require_root
  read_inputs
  drain
  wait_for_running_containers
  decommission
  print_result
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
