#!/usr/bin/env bash
# Day two on a verified host (docs/operations.md): the canary (verify's own
# check table, `--profile canary`, on a systemd timer, with a client
# certificate that never leaves the host), garbage collection on a timer,
# the node exporter on the private address (its textfile collector carries
# both), and Debian security updates without reboots or runtime packages.
#
# Input: the verify step's variables (FR_VERIFY_ENV; the canary's unit reads
# them from a root-only file), CANARY_INTERVAL (seconds), CANARY_DRAIN
# (true: the canary drains the host while it fails),
# GC_CONTAINER_TTL_MINUTES, GC_IMAGE_BUDGET_GIB, GC_WATERMARK_PERCENT; on
# stdin the stack CA, the canary's client certificate and its key (PEM, in
# that order). The key goes to a 0600 root file and is never printed.
# Output (stdout): one JSON line
#   {"changed": [...], "timers": [...], "nodeExporter": "ADDR:PORT", "restarted": [...]}
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FR_SYSTEMD_DIR=${FR_SYSTEMD_DIR:-/etc/systemd/system}
FR_PYTHON=${FR_PYTHON:-/usr/bin/python3}
# The canary waits for a verify step in progress; a run never takes this long.
readonly CANARY_TIMEOUT_SECONDS=900
readonly GC_TIMEOUT_SECONDS=1800
readonly GIB=1073741824

RESTARTED=()
# true once resume_after_update lifted the install step's drain.
RESUMED=false
NODE_EXPORTER_NEEDS_RESTART=0

check_inputs() {
  local name verify_vars=()
  for name in $FR_VERIFY_ENV; do
    # The one verify variable that may be empty: no image archive.
    [[ "$name" == VERIFY_IMAGE_ARCHIVE ]] || verify_vars+=("$name")
  done
  require_var PRIVATE_ADDRESS CANARY_INTERVAL CANARY_DRAIN GC_CONTAINER_TTL_MINUTES GC_IMAGE_BUDGET_GIB GC_WATERMARK_PERCENT \
    "${verify_vars[@]}"
}

# require_packages: install put them there; without them nothing below works.
require_packages() {
  local pkg missing=()
  for pkg in prometheus-node-exporter unattended-upgrades; do
    package_installed "$pkg" || missing+=("$pkg")
  done
  ((${#missing[@]} == 0)) ||
    fatal "Debian's ${missing[*]} installed by the install step" "not installed" \
      "re-run the install step (pulumi up); its log says why apt did not install them"
}

install_canary_credentials() {
  local work
  make_secret_dir work
  read_pem_blocks "$work/pem" stack-ca.pem client-cert.pem client-key.pem
  require_pem_kinds "$work/pem" stack-ca.pem:certificate client-cert.pem:certificate client-key.pem:private-key
  run mkdir -p "$FR_CANARY_DIR"
  run chmod 0700 "$FR_CANARY_DIR"
  cat "$work/pem/stack-ca.pem" "$work/pem/client-cert.pem" "$work/pem/client-key.pem" >"$work/credentials.pem"
  write_changed "$FR_CANARY_CREDENTIALS" 0600 <"$work/credentials.pem" || true
}

# env_file_value VALUE: VALUE quoted for a systemd EnvironmentFile.
env_file_value() {
  local value=${1//\\/\\\\}
  value=${value//\"/\\\"}
  printf '"%s"' "${value//$'\n'/\\n}"
}

render_canary_env() {
  local name
  printf '# Managed by functions-runtime (scripts/configure_upkeep.sh): the verify step'"'"'s variables.\n'
  printf 'FR_ROOT=%s\nFR_HOST=%s\nFR_SCRIPT_NAME=canary\n' "$(env_file_value "$FR_ROOT")" "$(env_file_value "$FR_HOST")"
  for name in $FR_VERIFY_ENV; do
    printf '%s=%s\n' "$name" "$(env_file_value "${!name-}")"
  done
}

render_canary_service() {
  local drain=""
  [[ "$CANARY_DRAIN" == true ]] && drain=" --drain-on-failure"
  cat <<EOF
# Managed by functions-runtime (scripts/configure_upkeep.sh).
[Unit]
Description=functions-runtime canary (verify --profile canary)
After=docker.service $FR_AUTHZ_UNIT
ConditionPathExists=$FR_CANARY_CREDENTIALS

[Service]
Type=oneshot
EnvironmentFile=$FR_CANARY_ENV
StandardInput=file:$FR_CANARY_CREDENTIALS
StandardOutput=null
ExecStart=$FR_PYTHON -I $FR_ROOT/host_verify/__main__.py --profile canary --result $FR_CANARY_RESULT --textfile $FR_TEXTFILE_DIR/functions_runtime_canary.prom --interval $CANARY_INTERVAL$drain
TimeoutStartSec=$CANARY_TIMEOUT_SECONDS
Nice=5
EOF
}

# render_timer UNIT WHAT EVERY: a monotonic timer that fires EVERY seconds
# after it starts (verify has just proved the host), then EVERY seconds
# after the last run began.
render_timer() {
  cat <<EOF
# Managed by functions-runtime (scripts/configure_upkeep.sh).
[Unit]
Description=$2

[Timer]
OnActiveSec=${3}s
OnUnitActiveSec=${3}s
AccuracySec=1s
Unit=$1.service

[Install]
WantedBy=timers.target
EOF
}

render_gc_service() {
  local ttl_minutes=$GC_CONTAINER_TTL_MINUTES budget_gib=$GC_IMAGE_BUDGET_GIB
  cat <<EOF
# Managed by functions-runtime (scripts/configure_upkeep.sh).
[Unit]
Description=functions-runtime garbage collection (exited containers, unused images, build cache)
After=docker.service

[Service]
Type=oneshot
StandardOutput=journal
ExecStart=$FR_PYTHON -I $FR_ROOT/host_gc/__main__.py --container-ttl-seconds $((ttl_minutes * 60)) --image-budget-bytes $((budget_gib * GIB)) --watermark-percent $GC_WATERMARK_PERCENT --docker-socket $FR_DOCKER_SOCKET --keep-image $VERIFY_IMAGE --textfile $FR_TEXTFILE_DIR/functions_runtime_gc.prom
TimeoutStartSec=$GC_TIMEOUT_SECONDS
Nice=15
IOSchedulingClass=idle
EOF
}

configure_units() {
  write_changed "$FR_CANARY_ENV" 0600 render_canary_env || true
  write_unit_changed "$FR_SYSTEMD_DIR/$FR_CANARY_UNIT.service" render_canary_service || true
  write_unit_changed "$FR_SYSTEMD_DIR/$FR_CANARY_UNIT.timer" \
    render_timer "$FR_CANARY_UNIT" "functions-runtime canary every ${CANARY_INTERVAL}s" "$CANARY_INTERVAL" || true
  write_unit_changed "$FR_SYSTEMD_DIR/$FR_GC_UNIT.service" render_gc_service || true
  write_unit_changed "$FR_SYSTEMD_DIR/$FR_GC_UNIT.timer" \
    render_timer "$FR_GC_UNIT" "functions-runtime garbage collection" "$FR_GC_INTERVAL_SECONDS" || true
}

# The node exporter answers on the private address only (the host filter
# admits metrics.allowedCidrs to it), and reads the canary's and GC's textfiles.
render_node_exporter_defaults() {
  cat <<EOF
# Managed by functions-runtime (scripts/configure_upkeep.sh).
ARGS="--web.listen-address=$PRIVATE_ADDRESS:$FR_NODE_EXPORTER_PORT --collector.textfile.directory=$FR_TEXTFILE_DIR"
EOF
}

configure_node_exporter() {
  run mkdir -p "$FR_TEXTFILE_DIR"
  if write_changed "$FR_NODE_EXPORTER_DEFAULTS" 0644 render_node_exporter_defaults; then
    NODE_EXPORTER_NEEDS_RESTART=1
  fi
}

render_upgrades_config() {
  local pkg
  printf '// Managed by functions-runtime (scripts/configure_upkeep.sh).\n'
  printf '// Debian security updates only; never a reboot (the metrics say one is pending);\n'
  printf '// the runtime packages wait for a drained update (docs/operations.md).\n'
  # shellcheck disable=SC2016 # ${distro_codename} is unattended-upgrades' own variable
  printf 'Unattended-Upgrade::Origins-Pattern { "origin=Debian,codename=${distro_codename}-security,label=Debian-Security"; };\n'
  printf 'Unattended-Upgrade::Automatic-Reboot "false";\n'
  printf 'Unattended-Upgrade::Package-Blacklist {'
  for pkg in $FR_UPGRADES_HELD; do printf ' "%s";' "$pkg"; done
  printf ' };\n'
}

render_upgrades_periodic() {
  printf '// Managed by functions-runtime (scripts/configure_upkeep.sh).\n'
  printf 'APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "1";\n'
}

configure_upgrades() {
  write_changed "$FR_UPGRADES_CONFIG" 0644 render_upgrades_config || true
  write_changed "$FR_UPGRADES_PERIODIC" 0644 render_upgrades_periodic || true
}

start_units() {
  if ((UNITS_CHANGED)); then run systemctl daemon-reload; fi
  local timer
  for timer in "$FR_CANARY_UNIT.timer" "$FR_GC_UNIT.timer"; do
    systemctl is-enabled --quiet "$timer" 2>/dev/null || run systemctl enable "$timer" >&2
    systemctl is-active --quiet "$timer" || run systemctl start "$timer"
  done
  # The first result right away, not one interval later: consumers leave a
  # host without one out (components/host_health.py).
  [[ -e "$FR_CANARY_RESULT" ]] || run systemctl start --no-block "$FR_CANARY_UNIT.service"
  systemctl is-enabled --quiet "$FR_NODE_EXPORTER_UNIT.service" 2>/dev/null ||
    run systemctl enable "$FR_NODE_EXPORTER_UNIT.service" >&2
  if ((NODE_EXPORTER_NEEDS_RESTART)) || ! systemctl is-active --quiet "$FR_NODE_EXPORTER_UNIT.service"; then
    run systemctl restart "$FR_NODE_EXPORTER_UNIT.service" ||
      fatal "$FR_NODE_EXPORTER_UNIT to start on $PRIVATE_ADDRESS:$FR_NODE_EXPORTER_PORT" "it failed" \
        "run 'journalctl -u $FR_NODE_EXPORTER_UNIT -n 50' on the host"
    RESTARTED+=("$FR_NODE_EXPORTER_UNIT")
  fi
}

# resume_after_update: the install step drained this host for an update
# (FR_AUTHZ_UPDATE_MARK); verify passed, so it takes containers again. Any
# other drain (an operator's, the canary's, a retiring host's) stays.
resume_after_update() {
  local first
  [[ -f "$FR_AUTHZ_DRAIN_FILE" ]] || return 0
  first=$(head -n 1 "$FR_AUTHZ_DRAIN_FILE" 2>/dev/null || true)
  [[ "$first" == "$FR_AUTHZ_UPDATE_MARK:"* ]] || return 0
  run rm -f "$FR_AUTHZ_DRAIN_FILE"
  RESUMED=true
  info "resumed after the update: verify passed"
}

print_result() {
  printf '{"changed": %s, "timers": %s, "nodeExporter": %s, "restarted": %s, "resumedAfterUpdate": %s}\n' \
    "$(json_array "${CHANGED[@]}")" "$(json_array "$FR_CANARY_UNIT.timer" "$FR_GC_UNIT.timer")" \
    "$(json_string "$PRIVATE_ADDRESS:$FR_NODE_EXPORTER_PORT")" "$(json_array "${RESTARTED[@]}")" "$RESUMED"
}

main() {
  require_root
  check_inputs
  require_packages
  install_canary_credentials
  configure_units
  configure_node_exporter
  configure_upgrades
  start_units
  resume_after_update
  print_result
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
