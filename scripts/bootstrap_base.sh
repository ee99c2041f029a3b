#!/usr/bin/env bash
# Base OS for a runtime host: apt's update stamp, packages, kernel modules,
# sshd hardening.
# Input: $FR_ROOT/base/{packages.txt,modules.conf,sshd.conf,apt-update-stamp.conf} (rendered by
# components/base_os.py, the same source as the cloud-init user-data).
# Output (stdout): one JSON line {"changed": [...], "installedPackages": [...],
# "missingModules": [...]}.
#
# A kernel module that does not exist (Kata's vsock module on a Hetzner Cloud VM,
# which has no KVM) is a warning here, not a failure: only Kata needs those
# modules, and install_runtime.sh / verify_host.sh fail with the real reason
# (no KVM) when Kata is required.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Where the base files go: FR_MODULES_LOAD, FR_SSHD_DROP_IN, FR_APT_HOOK
# (the contract, components/contract.py).

CHANGED=()
INSTALLED=()
MISSING_MODULES=()

# list_entries FILE: non-empty, non-comment lines, trimmed.
list_entries() {
  sed -e 's/#.*//' -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' "$1" | awk 'NF'
}

# missing_packages FILE: the listed packages that are not installed.
missing_packages() {
  local pkg
  while read -r pkg; do
    package_installed "$pkg" || printf '%s\n' "$pkg"
  done < <(list_entries "$1")
}

# The apt hook that stamps each successful `apt-get update` (lib.sh,
# apt_lists_fresh). Written before this step's own update so that one counts.
configure_apt_update_stamp() {
  if write_file_if_changed "$FR_APT_HOOK" 0644 <"$FR_ROOT/base/apt-update-stamp.conf"; then
    info "wrote $FR_APT_HOOK"
    CHANGED+=("$FR_APT_HOOK")
  fi
}

install_base_packages() {
  local missing=()
  mapfile -t missing < <(missing_packages "$FR_ROOT/base/packages.txt")
  if ((${#missing[@]} == 0)); then
    info "base packages already installed, skipping"
    return 0
  fi
  info "installing ${missing[*]}"
  apt_get_install -- "${missing[@]}"
  INSTALLED=("${missing[@]}")
  CHANGED+=(packages)
}

module_loaded() { [[ -d "/sys/module/$1" ]]; }

configure_kernel_modules() {
  local module
  # The file as rendered (header comment included), byte for byte what
  # cloud-init's write_files put there: a Cloud host's first bootstrap
  # then has nothing to change.
  if write_file_if_changed "$FR_MODULES_LOAD" 0644 <"$FR_ROOT/base/modules.conf"; then
    info "wrote $FR_MODULES_LOAD"
    CHANGED+=("$FR_MODULES_LOAD")
  fi
  while read -r module; do
    if module_loaded "$module"; then
      continue
    fi
    if is_dry_run; then
      info "dry-run: would load kernel module $module"
      continue
    fi
    if run modprobe "$module" 2>/dev/null; then
      info "loaded kernel module $module"
      CHANGED+=("module:$module")
    else
      warn "kernel module $module is not available on this kernel (expected on hosts without KVM; only Kata needs it)"
      MISSING_MODULES+=("$module")
    fi
  done < <(list_entries "$FR_ROOT/base/modules.conf")
}

# sshd answers a reload by closing its listeners and re-executing itself;
# systemd reports the reload done before the new sshd listens. The next
# step's connection must not land in that gap (found by the hostlab: it
# fails with "kex_exchange_identification: Connection reset by peer").
# (FR_SSHD_RELOAD_WAIT_S: tests, whose sshd is a stub that never logs, shorten it.)
readonly SSHD_RELOAD_WAIT_S=${FR_SSHD_RELOAD_WAIT_S:-30}

# wait_for_sshd_listening_since EPOCH: until sshd's journal says it listens
# again after EPOCH; a warning, not a failure, when it does not say so in time.
wait_for_sshd_listening_since() {
  local since=$1 i
  is_dry_run && return 0
  for ((i = 0; i < SSHD_RELOAD_WAIT_S * 2; i++)); do
    if journalctl -u ssh.service --since "@$since" -o cat 2>/dev/null | grep -q '^Server listening'; then
      return 0
    fi
    sleep 0.5
  done
  warn "sshd did not report listening within ${SSHD_RELOAD_WAIT_S} s of its reload; the next step may need to dial again"
}

configure_sshd() {
  local work backup="" check reloaded_at
  if [[ -f "$FR_SSHD_DROP_IN" ]] && cmp -s "$FR_ROOT/base/sshd.conf" "$FR_SSHD_DROP_IN"; then
    info "sshd drop-in already current, skipping"
    return 0
  fi
  make_work_dir work
  if [[ -f "$FR_SSHD_DROP_IN" ]]; then
    backup="$work/sshd-drop-in.previous"
    cp -p "$FR_SSHD_DROP_IN" "$backup"
  fi
  write_file_if_changed "$FR_SSHD_DROP_IN" 0644 <"$FR_ROOT/base/sshd.conf" || true
  is_dry_run && return 0
  if ! check=$(sshd -t 2>&1); then
    # Put the previous drop-in back: a broken config never reaches a reload.
    if [[ -n "$backup" ]]; then cp -p "$backup" "$FR_SSHD_DROP_IN"; else rm -f "$FR_SSHD_DROP_IN"; fi
    fatal "base/sshd.conf to pass 'sshd -t'" "sshd -t said: $check (the previous drop-in was restored)" \
      "fix SSHD_SETTINGS in components/base_os.py"
  fi
  # Debian's unit is ssh.service; reload keeps existing sessions (ours too).
  reloaded_at=$(date +%s)
  run systemctl reload ssh
  wait_for_sshd_listening_since "$reloaded_at"
  info "sshd drop-in updated and sshd reloaded"
  CHANGED+=("$FR_SSHD_DROP_IN")
}

print_result() {
  printf '{"changed": %s, "installedPackages": %s, "missingModules": %s}\n' \
    "$(json_array "${CHANGED[@]}")" "$(json_array "${INSTALLED[@]}")" \
    "$(json_array "${MISSING_MODULES[@]}")"
}

main() {
  require_root
  configure_apt_update_stamp
  install_base_packages
  configure_kernel_modules
  configure_sshd
  print_result
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
