#!/usr/bin/env bash
# Grant exactly the SSH keys the stack lists: the program's own key and
# admin.sshKeys, for the account the program connects as (SSH_USER), in a
# file the program owns: $FR_SSH_KEYS_DIR/<user>, which the base sshd drop-in
# adds to sshd's AuthorizedKeysFile. A key dropped from the stack is gone
# from that file on the next `pulumi up`.
#
# The account's own ~/.ssh/authorized_keys belongs to the machine (an
# adopted server's keys are left alone), with one exception: on a Hetzner
# Cloud server (HOST_SOURCE=hcloud) cloud-init wrote the stack's keys there
# at first boot, so the stack's keys (those listed now and those this step
# granted before) are taken out of it, except the program's own key.
#
# Lock-out guard: nothing changes unless every key parses, the program's own
# key is among them, and sshd reads the managed file for SSH_USER.
#
# Input: SSH_USER, HOST_SOURCE; on stdin the file as the program renders it
# (components/base_os.py, render_granted_keys: a comment, then the program's
# own public key, then the admin keys, one a line; public keys, not secret).
# Output (stdout): {"changed": [...], "keys": N, "removedFromAuthorizedKeys": N}
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FR_SSHD=${FR_SSHD:-sshd}
# Where the account's own authorized_keys is (tests point it elsewhere).
FR_AUTHORIZED_KEYS=${FR_AUTHORIZED_KEYS:-}

CHANGED=()
KEYS=()
PROGRAM_KEY=""
REMOVED=0

# key_id LINE: "type body" of an authorized_keys line (no options, no comment).
key_id() {
  local line=$1 word prev=""
  for word in $line; do
    if [[ -n "$prev" ]]; then
      printf '%s %s\n' "$prev" "$word"
      return 0
    fi
    case "$word" in ssh-* | ecdsa-* | sk-*) prev=$word ;; esac
  done
  return 1
}

# in_list NEEDLE ITEM...: NEEDLE is one of the ITEMs.
in_list() {
  local needle=$1 item
  shift
  for item in "$@"; do [[ "$item" == "$needle" ]] && return 0; done
  return 1
}

key_parses() { ssh-keygen -l -f - <<<"$1" >/dev/null 2>&1; }

# read_keys: stdin is the managed file as the program renders it (comment
# lines, then one key a line, the program's own first); kept verbatim in
# CONTENT once every key line parses.
CONTENT=""
read_keys() {
  local line n=0
  CONTENT=$(cat)
  while IFS= read -r line; do
    line=${line%$'\r'}
    [[ -n "${line// /}" && "$line" != \#* ]] || continue
    n=$((n + 1))
    key_parses "$line" ||
      fatal "key $n on stdin to be an OpenSSH public key" "a line ssh-keygen cannot read (nothing was changed)" \
        "fix functions-runtime:admin.sshKeys (the first key is the program's own)"
    if ((n == 1)); then PROGRAM_KEY=$(key_id "$line"); fi
    KEYS+=("$line")
  done <<<"$CONTENT"
  [[ -n "$PROGRAM_KEY" ]] ||
    fatal "the program's own public key as the first key on stdin" "no key (nothing was changed)" \
      "re-run pulumi up; the program always sends its own key first"
}

managed_keys_file() { printf '%s/%s\n' "$FR_SSH_KEYS_DIR" "$SSH_USER"; }

# sshd_reads_managed_keys: sshd's effective AuthorizedKeysFile for SSH_USER
# names the managed directory (the base sshd drop-in from bootstrap).
sshd_reads_managed_keys() {
  local effective
  effective=$("$FR_SSHD" -T -C "user=$SSH_USER,host=localhost,addr=127.0.0.1" 2>/dev/null |
    awk '$1 == "authorizedkeysfile" { $1 = ""; print }') || return 1
  [[ " $effective " == *" $FR_SSH_KEYS_DIR/%u "* ]]
}

require_sshd_reads_managed_keys() {
  is_dry_run && return 0
  sshd_reads_managed_keys ||
    fatal "sshd's AuthorizedKeysFile for $SSH_USER to include $FR_SSH_KEYS_DIR/%u" \
      "it does not (nothing was changed, so nobody is locked out)" \
      "re-run the bootstrap step (it writes the sshd drop-in), then pulumi up"
}

write_managed_keys() {
  local file
  file=$(managed_keys_file)
  run mkdir -p "$FR_SSH_KEYS_DIR"
  run chmod 0755 "$FR_SSH_KEYS_DIR"
  if printf '%s\n' "$CONTENT" | write_file_if_changed "$file" 0644; then
    info "wrote $file (${#KEYS[@]} keys)"
    CHANGED+=("$file")
  else
    info "$file already lists exactly the stack's ${#KEYS[@]} keys, skipping"
  fi
}

granted_state() { printf '%s/granted-ssh-keys\n' "$FR_STATE_DIR"; }

account_authorized_keys() {
  local home
  if [[ -n "$FR_AUTHORIZED_KEYS" ]]; then
    printf '%s\n' "$FR_AUTHORIZED_KEYS"
    return 0
  fi
  home=$(getent passwd "$SSH_USER" | cut -d: -f6)
  printf '%s/.ssh/authorized_keys\n' "${home:-/nonexistent}"
}

# take_stack_keys_out_of_authorized_keys: Cloud servers only (see the top).
take_stack_keys_out_of_authorized_keys() {
  local file work line id kept=() stack=()
  [[ "${HOST_SOURCE:-}" == hcloud ]] || return 0
  file=$(account_authorized_keys)
  [[ -f "$file" ]] || return 0
  for line in "${KEYS[@]}"; do stack+=("$(key_id "$line")"); done
  if [[ -f "$(granted_state)" ]]; then mapfile -t -O "${#stack[@]}" stack <"$(granted_state)"; fi
  while IFS= read -r line || [[ -n "$line" ]]; do
    id=$(key_id "$line") || id=""
    if [[ -n "$id" && "$id" != "$PROGRAM_KEY" ]] && in_list "$id" "${stack[@]}"; then
      REMOVED=$((REMOVED + 1))
      continue
    fi
    kept+=("$line")
  done <"$file"
  ((REMOVED > 0)) || return 0
  make_work_dir work
  printf '%s\n' "${kept[@]}" >"$work/authorized_keys"
  write_file_if_changed "$file" "$(stat -c '%a' "$file")" <"$work/authorized_keys" >/dev/null || true
  info "took $REMOVED of the stack's keys out of $file (they live in $(managed_keys_file))"
  CHANGED+=("$file")
}

record_granted_keys() {
  local line
  run mkdir -p "$FR_STATE_DIR"
  for line in "${KEYS[@]}"; do key_id "$line"; done | write_file_if_changed "$(granted_state)" 0600 >/dev/null || true
}

print_result() {
  printf '{"changed": %s, "keys": %s, "removedFromAuthorizedKeys": %s}\n' \
    "$(json_array "${CHANGED[@]}")" "${#KEYS[@]}" "$REMOVED"
}

main() {
  require_root
  require_var SSH_USER
  read_keys
  require_sshd_reads_managed_keys
  write_managed_keys
  take_stack_keys_out_of_authorized_keys
  record_granted_keys
  print_result
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
