#!/usr/bin/env bash
# Seal a golden-image builder before its snapshot: the disk is made safe to
# clone. The builder's last step, after wait, payload, bootstrap and install
# (the runtime packages and release files are there; configure never ran:
# no endpoint, no certificates).
#
# Taken off the disk, so that every clone makes its own or gets its own from
# its user-data: Docker's engine ID, cloud-init's state and logs, the machine
# ID (left empty: a new one at boot, without first-boot presets), D-Bus's
# copy of it, every SSH host
# key; the builder's access (root's authorized_keys and the program-managed
# keys directory); the logs, shell history and temporary files of the
# builder's life. Kept: everything installed and the install markers in
# FR_STATE_DIR, so the install step on a clone finds it all in place and
# downloads nothing.
#
# Refuses a host whose endpoint is configured: this is for builders only.
# Docker and containerd are stopped first (check, then act), so nothing
# writes to the disk while it is sealed; the result is `sync`ed.
#
# Input: no variables. Argument: --power-off schedules a poweroff a few
# seconds later (systemd-run), so the command returns before the machine
# stops and the snapshot is taken of a stopped, consistent disk.
# Output (stdout): one JSON line
#   {"sealed": true, "stopped": [...], "removed": [...], "machineId": "empty",
#    "cloudInit": "cleaned"|"absent", "truncatedLogs": N, "powerOff": true|false}
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The poweroff --power-off schedules comes this long after the step returns.
readonly POWER_OFF_DELAY_SECONDS=5
readonly RUNTIME_UNITS=(docker.socket docker.service containerd.service)

POWER_OFF=false
MACHINE_ID_STATE=""
CLOUD_INIT=absent
TRUNCATED_LOGS=0

parse_arguments() {
  while (($# > 0)); do
    case "$1" in
      --power-off) POWER_OFF=true ;;
      *) fatal "no argument or --power-off" "'$(one_line "$1")'; nothing was changed" "run $FR_SCRIPT_NAME [--power-off]" ;;
    esac
    shift
  done
}

# refuse_a_serving_host: a builder never ran configure, so it has no
# endpoint policy; a host that has one serves functions and is not sealed.
refuse_a_serving_host() {
  [[ ! -e "$FR_AUTHZ_CONFIG" ]] ||
    fatal "a golden-image builder (the configure step never ran)" \
      "$FR_AUTHZ_CONFIG: this host serves an endpoint; nothing was changed" \
      "seal only a snapshot builder; to take a serving host out, delete it from the stack (its retire step drains it)"
}

stop_runtime() {
  stop_units "${RUNTIME_UNITS[@]}" ||
    fatal "${RUNTIME_UNITS[*]} to stop" "systemctl stop failed (see above)" \
      "run 'systemctl status ${RUNTIME_UNITS[*]}' on the builder"
  info "docker and containerd stopped (${STOPPED_UNITS[*]:-none was running})"
}

forget_docker_engine_id() { remove_paths "$FR_DOCKER_ENGINE_ID"; }

# reset_cloud_init_and_machine_id: every clone runs cloud-init as a new
# instance (its own SSH host keys and keys from its own user-data) and makes
# its own machine ID. The ID is left empty, not "uninitialized": systemd
# takes an "uninitialized" ID as a first boot and applies the unit presets
# (machine-id(5)), which enable services the builder never ran (a clone in
# the lab waited two minutes for systemd-networkd-wait-online); an empty
# one gets a new ID at boot with the image's units as they were.
reset_cloud_init_and_machine_id() {
  if ! command -v cloud-init >/dev/null; then
    warn "no cloud-init on this builder: only the machine ID is reset"
  else
    run cloud-init clean --logs >&2 ||
      fatal "'cloud-init clean --logs' to succeed" "it failed (see above)" "run it on the builder to see why"
    CLOUD_INIT=cleaned
  fi
  MACHINE_ID_STATE=empty
  write_file_if_changed "$FR_MACHINE_ID" 0444 </dev/null >/dev/null || true
  remove_paths "$FR_DBUS_MACHINE_ID"
}

remove_ssh_host_keys() {
  local key
  for key in "$FR_SSH_HOST_KEY_DIR"/ssh_host_*; do
    remove_paths "$key"
  done
}

# remove_builder_access: root's own keys (cloud-init wrote the builder's
# there) and the program-managed keys directory, whole.
remove_builder_access() { remove_paths "$FR_ROOT_AUTHORIZED_KEYS" "$FR_SSH_KEYS_DIR"; }

# clear_journal: rotate, so the active files are archived, then drop every
# archive: the journal keeps nothing of the builder's boots.
clear_journal() {
  command -v journalctl >/dev/null || return 0
  run journalctl --rotate >&2 || warn "journalctl --rotate failed; vacuuming what is archived"
  run journalctl --vacuum-time=1s >&2 || warn "journalctl --vacuum-time failed; the journal keeps the builder's entries"
}

# clear_logs: rotated logs removed, the others truncated (a daemon that
# keeps its log open keeps writing to the same file). The journal's own
# files are journald's (clear_journal).
clear_logs() {
  local file
  [[ -d "$FR_LOG_DIR" ]] || return 0
  while IFS= read -r -d '' file; do
    case "$file" in
      *.gz | *.xz | *.zst | *.old | *.[0-9]) remove_paths "$file" ;;
      *)
        if [[ -s "$file" ]]; then
          run truncate -s 0 -- "$file"
          TRUNCATED_LOGS=$((TRUNCATED_LOGS + 1))
        fi
        ;;
    esac
  done < <(find "$FR_LOG_DIR" -path "$FR_LOG_DIR/journal" -prune -o -type f -print0)
}

# clear_temporary_files: /tmp's entries, the shell history, and what an
# interrupted download left in FR_WORK_BASE (make_work_dir's directories).
clear_temporary_files() {
  local entry
  remove_paths "$FR_ROOT_BASH_HISTORY"
  for entry in "$FR_TMP_DIR"/* "$FR_TMP_DIR"/.[!.]* "$FR_WORK_BASE"/functions-runtime.*; do
    remove_paths "$entry"
  done
}

schedule_power_off() {
  [[ "$POWER_OFF" == true ]] || return 0
  run systemd-run --on-active="$POWER_OFF_DELAY_SECONDS" systemctl poweroff >&2 ||
    fatal "a poweroff scheduled $POWER_OFF_DELAY_SECONDS s from now" "systemd-run failed (see above)" \
      "power the builder off from the Hetzner API or console, then take the snapshot"
  info "powering off in $POWER_OFF_DELAY_SECONDS s"
}

print_result() {
  printf '{"sealed": true, "stopped": %s, "removed": %s, "machineId": %s, "cloudInit": %s, "truncatedLogs": %s, "powerOff": %s}\n' \
    "$(json_array "${STOPPED_UNITS[@]}")" "$(json_array "${REMOVED_PATHS[@]}")" "$(json_string "$MACHINE_ID_STATE")" \
    "$(json_string "$CLOUD_INIT")" "$TRUNCATED_LOGS" "$POWER_OFF"
}

main() {
  parse_arguments "$@"
  require_root
  refuse_a_serving_host
  stop_runtime
  forget_docker_engine_id
  reset_cloud_init_and_machine_id
  remove_ssh_host_keys
  remove_builder_access
  clear_journal
  clear_logs
  clear_temporary_files
  run sync
  info "sealed: ${#REMOVED_PATHS[@]} paths removed, $TRUNCATED_LOGS logs truncated, machine ID $MACHINE_ID_STATE"
  schedule_power_off
  print_result
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
