#!/usr/bin/env bash
# Wait until the machine's first boot is done: cloud-init finished on a
# Hetzner Cloud server; nothing to wait for on a host without cloud-init
# (an adopted dedicated machine).
# Runs before the payload exists, so it stands alone (no lib.sh); the program
# sends it as the remote command itself.
# Input: CLOUD_INIT_TIMEOUT (seconds).
# Output (stdout): {"boot": "finished"}.
#
# Debian's cloud-init exits 2 for recoverable warnings (deprecated keys);
# only 1 (error) and 124 (our timeout) stop the chain.
set -euo pipefail

fail() {
  printf 'wait_for_boot.sh [%s]: FAILED: %s\n' "$(hostname 2>/dev/null || echo unknown-host)" "$*" >&2
  exit 1
}

has_cloud_init() { command -v cloud-init >/dev/null 2>&1; }

wait_for_cloud_init() {
  local rc=0
  timeout "$CLOUD_INIT_TIMEOUT" cloud-init status --wait >/dev/null 2>&1 || rc=$?
  case "$rc" in
    0 | 2) ;;
    124) fail "cloud-init did not finish within $CLOUD_INIT_TIMEOUT s; see /var/log/cloud-init-output.log" ;;
    *) fail "cloud-init failed: $(cloud-init status --long 2>&1 | tr '\n' ' ')" ;;
  esac
}

main() {
  [[ "${CLOUD_INIT_TIMEOUT:-}" =~ ^[0-9]+$ ]] ||
    fail "CLOUD_INIT_TIMEOUT to be a number of seconds, found '${CLOUD_INIT_TIMEOUT:-}'"
  if has_cloud_init; then wait_for_cloud_init; fi
  echo '{"boot": "finished"}'
}

main "$@"
