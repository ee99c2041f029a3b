#!/usr/bin/env bash
# Put the payload (scripts, catalog, base OS files, contract) in place under
# FR_ROOT. It arrives base64-encoded on stdin as a tar.gz; each top-level
# directory is swapped in whole, so a host never runs a mix of two payloads'
# scripts. Runs before lib.sh exists on the host: stands alone, sent as the
# remote command itself.
# Input: FR_ROOT, PAYLOAD_DIRS (space-separated top-level directories),
# PAYLOAD_SHA256 (echoed back); the archive on stdin.
# Output (stdout): {"payload": "<sha256>"}.
set -euo pipefail

fail() {
  printf 'unpack_payload.sh [%s]: FAILED: %s\n' "$(hostname 2>/dev/null || echo unknown-host)" "$*" >&2
  exit 1
}

require_inputs() {
  local name
  for name in FR_ROOT PAYLOAD_DIRS PAYLOAD_SHA256; do
    [[ -n "${!name:-}" ]] || fail "$name to be set"
  done
  [[ "$PAYLOAD_SHA256" =~ ^[0-9a-f]{64}$ ]] || fail "PAYLOAD_SHA256 to be a sha256, found '$PAYLOAD_SHA256'"
}

# unpack_into DIR: the archive from stdin, checked against PAYLOAD_SHA256.
unpack_into() {
  local dir=$1 found
  base64 -d >"$dir/payload.tar.gz" || fail "a base64 payload on stdin"
  found=$(sha256sum "$dir/payload.tar.gz" | awk '{print $1}')
  [[ "$found" == "$PAYLOAD_SHA256" ]] ||
    fail "the payload with sha256 $PAYLOAD_SHA256, received $found (nothing was changed); re-run pulumi up"
  mkdir "$dir/tree"
  tar -xzf "$dir/payload.tar.gz" -C "$dir/tree"
}

# swap_in TREE: replace each payload directory under FR_ROOT with TREE's.
swap_in() {
  local tree=$1 d
  for d in $PAYLOAD_DIRS; do
    [[ -d "$tree/$d" ]] || fail "directory $d in the payload"
  done
  for d in $PAYLOAD_DIRS; do
    rm -rf "${FR_ROOT:?}/$d.old"
    if [[ -e "$FR_ROOT/$d" ]]; then mv "$FR_ROOT/$d" "$FR_ROOT/$d.old"; fi
    mv "$tree/$d" "$FR_ROOT/$d"
    rm -rf "${FR_ROOT:?}/$d.old"
  done
}

WORK_DIR=""
remove_work_dir() { if [[ -n "$WORK_DIR" ]]; then rm -rf "$WORK_DIR"; fi; }

main() {
  require_inputs
  mkdir -p "$FR_ROOT/state"
  WORK_DIR=$(mktemp -d "$FR_ROOT/.payload.XXXXXX")
  trap remove_work_dir EXIT
  unpack_into "$WORK_DIR"
  swap_in "$WORK_DIR/tree"
  printf '{"payload": "%s"}\n' "$PAYLOAD_SHA256"
}

main "$@"
