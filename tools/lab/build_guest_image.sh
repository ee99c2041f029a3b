#!/usr/bin/env bash
# Build the hostlab guest: a base Debian cloud-image equivalent (cloud-init,
# openssh-server, a kernel and initrd for direct boot), from Debian's archive.
#
# Usage: build_guest_image.sh OUT_DIR
# Environment (all required, set by tools/lab/image.py):
#   HOSTLAB_SUITE            e.g. trixie
#   HOSTLAB_MIRROR           e.g. http://deb.debian.org/debian
#   HOSTLAB_SECURITY_MIRROR  e.g. http://deb.debian.org/debian-security
#   HOSTLAB_PACKAGES         space-separated packages installed in the chroot
#   HOSTLAB_DISK_SIZE        ext4 size for mkfs.ext4, e.g. 12G
#
# Writes into OUT_DIR (which must be empty): disk.qcow2, vmlinuz, initrd.img,
# manifest.json. Runs as root (debootstrap, chroot); needs no loop devices:
# the disk is made with `mkfs.ext4 -d`. Logs go to stderr.
set -euo pipefail

info() { printf 'build-guest-image: %s\n' "$*" >&2; }
fatal() { printf 'build-guest-image: error: %s\n' "$*" >&2; exit 1; }

OUT_DIR=${1:?usage: build_guest_image.sh OUT_DIR}
ROOTFS="$OUT_DIR/rootfs"
MOUNTED=()

require_env() {
  local name
  for name in HOSTLAB_SUITE HOSTLAB_MIRROR HOSTLAB_SECURITY_MIRROR HOSTLAB_PACKAGES HOSTLAB_DISK_SIZE; do
    [ -n "${!name:-}" ] || fatal "$name is not set (run through tools/lab/image.py)"
  done
  [ "$(id -u)" -eq 0 ] || fatal "must run as root (debootstrap and chroot)"
  local tool
  for tool in debootstrap mkfs.ext4 qemu-img; do
    command -v "$tool" >/dev/null || fatal "$tool missing; run: .ci/install-hostlab-deps.sh"
  done
}

unmount_chroot() {
  local i
  for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
    umount -l "${MOUNTED[i]}" 2>/dev/null || true
  done
  MOUNTED=()
}
trap unmount_chroot EXIT

in_chroot() {
  LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive chroot "$ROOTFS" "$@"
}

bootstrap_minbase() {
  # --include=cloud-init fails on a dependency debootstrap cannot resolve;
  # minbase first, then apt-get inside the chroot (tests/hostlab/README.md,
  # Problems met and their fixes).
  info "debootstrap --variant=minbase $HOSTLAB_SUITE from $HOSTLAB_MIRROR"
  debootstrap --variant=minbase --components=main \
    "$HOSTLAB_SUITE" "$ROOTFS" "$HOSTLAB_MIRROR" >&2
}

mount_chroot() {
  mount -t proc proc "$ROOTFS/proc" && MOUNTED+=("$ROOTFS/proc")
  mount -t sysfs sysfs "$ROOTFS/sys" && MOUNTED+=("$ROOTFS/sys")
  mount --bind /dev "$ROOTFS/dev" && MOUNTED+=("$ROOTFS/dev")
  mount -t devpts devpts "$ROOTFS/dev/pts" && MOUNTED+=("$ROOTFS/dev/pts")
  cp -L /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
}

write_apt_sources() {
  rm -f "$ROOTFS/etc/apt/sources.list"
  cat >"$ROOTFS/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $HOSTLAB_MIRROR
Suites: $HOSTLAB_SUITE $HOSTLAB_SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $HOSTLAB_SECURITY_MIRROR
Suites: $HOSTLAB_SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  # No daemon starts inside the build chroot.
  printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
  chmod 0755 "$ROOTFS/usr/sbin/policy-rc.d"
}

configure_initramfs() {
  # A small initramfs: only the modules a virtio guest needs to mount /.
  # MODULES=dep would inspect the build machine's kernel, not the guest's.
  mkdir -p "$ROOTFS/etc/initramfs-tools/conf.d"
  printf 'MODULES=list\n' >"$ROOTFS/etc/initramfs-tools/conf.d/hostlab.conf"
}

install_packages() {
  info "apt-get install $HOSTLAB_PACKAGES"
  in_chroot apt-get update -qq >&2
  # shellcheck disable=SC2086 # the package list is meant to split
  in_chroot apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    $HOSTLAB_PACKAGES >&2
}

build_initramfs() {
  local m
  for m in virtio_pci virtio_blk virtio_net virtio_rng ext4; do
    grep -qx "$m" "$ROOTFS/etc/initramfs-tools/modules" 2>/dev/null ||
      printf '%s\n' "$m" >>"$ROOTFS/etc/initramfs-tools/modules"
  done
  in_chroot update-initramfs -u -k all >&2
}

configure_locale() {
  printf 'en_US.UTF-8 UTF-8\n' >"$ROOTFS/etc/locale.gen"
  in_chroot locale-gen >&2
  printf 'LANG=en_US.UTF-8\n' >"$ROOTFS/etc/default/locale"
}

configure_system() {
  printf '/dev/vda / ext4 defaults,errors=remount-ro 0 1\n' >"$ROOTFS/etc/fstab"
  printf 'debian\n' >"$ROOTFS/etc/hostname"
  printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' >"$ROOTFS/etc/hosts"
  # Lab-only cloud-init settings; everything about the host itself comes from
  # the user-data under test. NoCloud only: no 2-minute probe of EC2 & co.
  cat >"$ROOTFS/etc/cloud/cloud.cfg.d/05_hostlab.cfg" <<'CFG'
# hostlab image (tools/lab): lab-only settings.
datasource_list: [NoCloud, None]
# RSA host key generation costs ~40 s under TCG; the program asks for ed25519.
ssh_genkeytypes: [ed25519]
manage_etc_hosts: true
CFG
  configure_lab_sshd
  # A fresh machine-id and fresh SSH host keys on every first boot.
  : >"$ROOTFS/etc/machine-id"
  rm -f "$ROOTFS/var/lib/dbus/machine-id" "$ROOTFS"/etc/ssh/ssh_host_*
  passwd_lock_root
}

configure_lab_sshd() {
  # Lab-only. Every connection through QEMU's user network arrives from its
  # gateway 10.0.2.2, so OpenSSH 10's PerSourcePenalties (on by default)
  # would turn a few failed or unauthenticated connections (a readiness
  # probe, the host-key refusal test) into refusing *every* connection from
  # the test machine for a while ("drop connection ... penalty: failed
  # authentication"). The lab stack's admin source is exactly 10.0.2.2/32;
  # a first value wins in sshd_config.d, so the program's own drop-in (50-)
  # comes after this one.
  cat >"$ROOTFS/etc/ssh/sshd_config.d/05-hostlab.conf" <<'SSHD'
# hostlab image (tools/lab): lab-only. QEMU's gateway, where every SSH connection comes from.
PerSourcePenaltyExemptList 10.0.2.2/32
SSHD
  # Lab-only diagnostics: sshd's journal, live, on the second serial port
  # (QEMU writes it to sshd.log in the VM's work directory), so a refused SSH
  # connection can be explained without an SSH connection.
  cat >"$ROOTFS/etc/systemd/system/hostlab-sshd-log.service" <<'UNIT'
[Unit]
Description=hostlab: sshd's journal on the second serial port (ttyS1)
After=systemd-journald.service
Before=ssh.service

[Service]
Environment=SYSTEMD_COLORS=0
ExecStart=/usr/bin/journalctl --boot --follow --lines=all --no-pager --output=short-precise --unit=ssh.service
StandardOutput=tty
TTYPath=/dev/ttyS1
TTYVHangup=no
Restart=always

[Install]
WantedBy=multi-user.target
UNIT
  mkdir -p "$ROOTFS/etc/systemd/system/multi-user.target.wants"
  ln -sf /etc/systemd/system/hostlab-sshd-log.service \
    "$ROOTFS/etc/systemd/system/multi-user.target.wants/hostlab-sshd-log.service"
}

passwd_lock_root() {
  in_chroot passwd -l root >&2
}

clean_rootfs() {
  rm -f "$ROOTFS/usr/sbin/policy-rc.d" "$ROOTFS/etc/resolv.conf"
  in_chroot apt-get clean
  rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
    "$ROOTFS"/var/log/*.log "$ROOTFS"/tmp/* "$ROOTFS"/var/tmp/*
}

export_boot_files() {
  local kernel initrd
  kernel=$(find "$ROOTFS/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n1)
  initrd=$(find "$ROOTFS/boot" -maxdepth 1 -name 'initrd.img-*' | sort -V | tail -n1)
  [ -n "$kernel" ] || fatal "no kernel in $ROOTFS/boot after installing linux-image-amd64"
  [ -n "$initrd" ] || fatal "no initrd in $ROOTFS/boot; update-initramfs failed"
  cp "$kernel" "$OUT_DIR/vmlinuz"
  cp "$initrd" "$OUT_DIR/initrd.img"
  KERNEL_VERSION=${kernel##*/vmlinuz-}
}

write_manifest() {
  local packages
  # shellcheck disable=SC2016 # dpkg-query's own ${Package} format
  packages=$(in_chroot dpkg-query -W -f '${Package}=${Version}\n' | sort | tr '\n' ' ')
  python3 - "$OUT_DIR/manifest.json" "$KERNEL_VERSION" "$packages" <<'PY'
import json, sys, datetime
path, kernel, packages = sys.argv[1], sys.argv[2], sys.argv[3].split()
with open(path, "w") as f:
    json.dump({"kernel": kernel,
               "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "packages": packages}, f, indent=2)
PY
}

make_disk() {
  info "mkfs.ext4 -d rootfs ($HOSTLAB_DISK_SIZE) and convert to qcow2"
  mkfs.ext4 -q -F -L root -d "$ROOTFS" "$OUT_DIR/disk.raw" "$HOSTLAB_DISK_SIZE" >&2
  qemu-img convert -O qcow2 "$OUT_DIR/disk.raw" "$OUT_DIR/disk.qcow2"
  rm -f "$OUT_DIR/disk.raw"
}

main() {
  require_env
  [ -d "$OUT_DIR" ] && [ -z "$(ls -A "$OUT_DIR")" ] || fatal "$OUT_DIR must be an empty directory"
  bootstrap_minbase
  mount_chroot
  write_apt_sources
  configure_initramfs
  install_packages
  configure_locale
  build_initramfs
  configure_system
  export_boot_files
  write_manifest
  clean_rootfs
  unmount_chroot
  make_disk
  rm -rf "$ROOTFS"
  info "built kernel $KERNEL_VERSION into $OUT_DIR"
}

main "$@"
