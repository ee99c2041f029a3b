#!/usr/bin/env bash
# Install, from Debian's packages, what the lab (tools/lab, tests/hostlab) needs on the
# test machine: QEMU to boot the guest, debootstrap and e2fsprogs to build its
# disk, genisoimage for the NoCloud seed, the OpenSSH client to reach it.
# Idempotent: packages already installed are reported and skipped.
set -euo pipefail

# Binary -> package that provides it. A binary already on PATH means the
# package (or an equivalent) is there and nothing is installed for it.
readonly -a WANTED=(
  "qemu-system-x86_64 qemu-system-x86"
  "qemu-img qemu-utils"
  "debootstrap debootstrap"
  "genisoimage genisoimage"
  "mkfs.ext4 e2fsprogs"
  "ssh openssh-client"
  "ssh-keygen openssh-client"
  "zstd zstd"
)

info() { printf 'install-hostlab-deps: %s\n' "$*" >&2; }
fatal() { printf 'install-hostlab-deps: error: %s\n' "$*" >&2; exit 1; }

has_command() { command -v "$1" >/dev/null 2>&1; }

missing_packages() {
  local entry bin pkg
  for entry in "${WANTED[@]}"; do
    bin=${entry%% *}
    pkg=${entry##* }
    if has_command "$bin"; then
      info "$bin present, skipping $pkg"
    else
      printf '%s\n' "$pkg"
    fi
  done | sort -u
}

install_packages() {
  local -a pkgs
  mapfile -t pkgs < <(missing_packages)
  if [ "${#pkgs[@]}" -eq 0 ]; then
    info "all hostlab packages already installed"
    return 0
  fi
  [ "$(id -u)" -eq 0 ] || fatal "need root to apt-get install ${pkgs[*]}; run: sudo $0"
  info "installing ${pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
}

main() {
  install_packages
  has_command qemu-system-x86_64 || fatal "qemu-system-x86_64 still missing after install"
}

main "$@"
