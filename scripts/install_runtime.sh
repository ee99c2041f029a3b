#!/usr/bin/env bash
# Install the container runtimes: Debian packages (Docker Engine, containerd,
# runc, CNI plugins; Debian's runsc only with gvisor.runsc: debian), Kata
# Containers from the pinned release archive when this host can run it,
# gVisor's pinned release archive (runsc, containerd-shim-runsc-v1 and the
# gvisor-bin/ sidecars, unpacked whole into a versioned directory) when it runs
# gVisor, and nerdctl from its pinned release archive. Each archive comes from
# a peer of ARTIFACT_PEERS first, else the mirror or its release URL, its
# digest always checked (lib.sh fetch_artifact). With ARTIFACT_SHARE the
# host keeps the verified archives and serves them to its peers.
# Input: ISOLATION, GVISOR_RUNSC, ARTIFACT_MIRROR, ARTIFACT_PEERS, ARTIFACT_SHARE
# (docs/host-contract.md).
# Output (stdout): one JSON line
#   {"changed": [...], "installedPackages": [...], "kata": "installed|present|skipped-no-kvm",
#    "gvisor": "installed|present|debian-package|not-wanted", "nerdctl": "installed|present",
#    "downloads": [{"artifact": ..., "source": "peer|mirror|internet", "url": ..., "bytes": N}, ...],
#    "downloadedBytes": {"internet": N, "mirror": N, "peer": N}}
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# docker-cli is only a Recommends of docker.io in Debian 13, and we install
# without recommends (needrestart, git, ...); the verify step needs the CLI.
# apparmor: Debian's kernel enables AppArmor, and dockerd cannot load its
# docker-default profile without apparmor_parser.
# prometheus-node-exporter and unattended-upgrades: day two (configure_upkeep.sh).
RUNTIME_PACKAGES=(docker.io docker-cli containerd runc containernetworking-plugins apparmor
  prometheus-node-exporter unattended-upgrades)
# Debian's gVisor, installed only where the stack chose it (gvisor.runsc: debian).
readonly DEBIAN_RUNSC_PACKAGE=runsc

# While apt installs Docker and containerd, their maintainer scripts must not
# start them: dockerd would run, however briefly, with Debian's defaults (an
# API socket for the docker group) before the configure step writes ours,
# and every start is tens of seconds that configure's own start repeats.
# policy-rc.d is what deb-systemd-invoke and invoke-rc.d consult.
FR_POLICY_RC_D=${FR_POLICY_RC_D:-/usr/sbin/policy-rc.d}
readonly POLICY_RC_D_MARK="# functions-runtime: no service starts while the install step runs"
# The artifact share's unit (ARTIFACT_SHARE), and the python3 that serves it.
FR_SYSTEMD_DIR=${FR_SYSTEMD_DIR:-/etc/systemd/system}
FR_PYTHON=${FR_PYTHON:-/usr/bin/python3}

CHANGED=()
# true once drain_before_update drained a serving host for this update.
DRAINED_FOR_UPDATE=false
INSTALLED=()
KATA_STATUS=""
GVISOR_STATUS=""
NERDCTL_STATUS=""
# The archives' file names this run keeps in the share's cache.
SHARED_FILES=()

policy_rc_d_is_ours() { [[ -f "$FR_POLICY_RC_D" ]] && grep -qxF "$POLICY_RC_D_MARK" "$FR_POLICY_RC_D"; }

# hold_service_starts: our policy-rc.d for the rest of this run (removed on
# exit). Someone else's policy-rc.d is left alone.
hold_service_starts() {
  if [[ -e "$FR_POLICY_RC_D" ]] && ! policy_rc_d_is_ours; then
    warn "$FR_POLICY_RC_D is not ours; leaving it, so packages may start their services now"
    return 0
  fi
  is_dry_run && return 0
  printf '#!/bin/sh\n%s\nexit 101\n' "$POLICY_RC_D_MARK" >"$FR_POLICY_RC_D.new"
  chmod 0755 "$FR_POLICY_RC_D.new"
  mv -f "$FR_POLICY_RC_D.new" "$FR_POLICY_RC_D"
  add_exit_hook release_service_starts
}

# release_service_starts: remove our policy-rc.d, also one a killed run left.
release_service_starts() {
  if policy_rc_d_is_ours; then run rm -f "$FR_POLICY_RC_D"; fi
}

# debian_runsc_wanted: this host runs gVisor from Debian's package.
debian_runsc_wanted() {
  [[ "$GVISOR_RUNSC" == debian ]] || return 1
  wanted_runtimes_before_install
  runtime_wanted runsc
}

# missing_runtime_packages: the runtime packages not installed, one per line.
missing_runtime_packages() {
  local pkg packages=("${RUNTIME_PACKAGES[@]}")
  if debian_runsc_wanted; then packages+=("$DEBIAN_RUNSC_PACKAGE"); fi
  for pkg in "${packages[@]}"; do
    package_installed "$pkg" || echo "$pkg"
  done
}

install_runtime_packages() {
  local missing=() fix=()
  release_service_starts # one a killed run left behind
  mapfile -t missing < <(missing_runtime_packages)
  if ((${#missing[@]} == 0)) && ! dpkg_was_interrupted; then
    info "runtime packages already installed, skipping"
    return 0
  fi
  hold_service_starts
  if recover_interrupted_dpkg; then
    fix=(--fix-broken)
    CHANGED+=(dpkg-recovered)
    mapfile -t missing < <(missing_runtime_packages)
    if ((${#missing[@]} == 0)); then
      info "the interrupted installation is complete"
      return 0
    fi
  fi
  info "installing ${missing[*]}"
  apt_get_install "${fix[@]}" -- "${missing[@]}"
  INSTALLED=("${missing[@]}")
  CHANGED+=(packages)
}

# replace_dir NEW DEST: swap a fully unpacked tree into place.
replace_dir() {
  local new=$1 dest=$2 old
  old="$dest.previous.$$"
  run mkdir -p "$(dirname "$dest")"
  if [[ -e "$dest" ]]; then run mv "$dest" "$old"; fi
  run mv "$new" "$dest"
  if [[ -e "$old" ]]; then run rm -rf -- "$old"; fi
}

# link_points_to LINK TARGET
link_points_to() { [[ -L "$1" && "$(readlink "$1")" == "$2" ]]; }

link_binary() {
  local target=$1 link=$2
  if link_points_to "$link" "$target"; then
    return 0
  fi
  run mkdir -p "$(dirname "$link")"
  run ln -sfn "$target" "$link"
  info "linked $link -> $target"
  CHANGED+=("$link")
}

link_kata_binaries() {
  link_binary "$FR_KATA_DIR/bin/containerd-shim-kata-v2" "$FR_BIN_DIR/containerd-shim-kata-v2"
  link_binary "$FR_KATA_DIR/bin/kata-runtime" "$FR_BIN_DIR/kata-runtime"
}

# unpack_kata ARCHIVE DIR: the release unpacks as ./opt/kata/...
unpack_kata() {
  local archive=$1 dir=$2
  mkdir -p "$dir"
  tar --zstd -xf "$archive" -C "$dir" ||
    fatal "a zstd tar archive" "tar could not unpack $(basename "$archive")" \
      "check that zstd is installed (base/packages.txt) and the catalog points at kata-static-<v>-amd64.tar.zst"
  [[ -x "$dir/opt/kata/bin/containerd-shim-kata-v2" && -x "$dir/opt/kata/bin/kata-runtime" ]] ||
    fatal "the Kata archive to hold ./opt/kata/bin/containerd-shim-kata-v2 and kata-runtime" \
      "a different layout" "pin a Kata 3.x static release (4.1+ moved the Go shim to kata-go-static)"
}

# require_kvm_if_kata_wanted: a vm stack fails here, before any download,
# on a host without KVM.
require_kvm_if_kata_wanted() {
  wanted_runtimes_before_install
  if runtime_wanted kata && ! has_kvm; then fatal_isolation_unmet; fi
}

install_kata() {
  local version work archive
  version=$(catalog_field kata version)
  wanted_runtimes_before_install
  if ! runtime_wanted kata; then
    info "Kata not installed: $(kvm_missing_reason); ISOLATION=sandbox, so gVisor (runsc) is the runtime"
    KATA_STATUS=skipped-no-kvm
    return 0
  fi
  if kata_installed; then
    info "Kata already at $version, skipping"
    KATA_STATUS=present
    write_marker kata # a legacy marker gains the digest's algorithm
    cache_present kata
  else
    make_work_dir work
    fetch_artifact kata "$work" archive
    unpack_kata "$archive" "$work/unpacked"
    replace_dir "$work/unpacked/opt/kata" "$FR_KATA_DIR"
    write_marker kata
    cache_archive kata "$archive"
    info "Kata $version installed in $FR_KATA_DIR"
    KATA_STATUS=installed
    CHANGED+=(kata)
  fi
  link_kata_binaries
}

# gvisor_missing_files DIR: the release files DIR lacks as executable
# regular files (runsc, the shim, each sidecar), one a line; nothing when it
# is whole. Install asks it of the unpacked archive and of the installed one.
gvisor_missing_files() {
  local dir=$1 name
  for name in $FR_GVISOR_ARTIFACTS; do
    [[ -f "$dir/$name" && -x "$dir/$name" ]] || printf '%s\n' "$name"
  done
  for name in $FR_GVISOR_SIDECARS; do
    name=$FR_GVISOR_SIDECAR_DIR/$name
    [[ -f "$dir/$name" && -x "$dir/$name" ]] || printf '%s\n' "$name"
  done
}

# gvisor_installed: the archive's marker matches the catalog and its
# directory holds every file.
gvisor_installed() { marker_matches "$FR_GVISOR_ARCHIVE" && [[ -z "$(gvisor_missing_files "$(gvisor_release_dir)")" ]]; }

# unpack_gvisor ARCHIVE DIR: the release archive into DIR, refusing before
# anything is written an entry outside its layout (runsc and the shim at the
# top, regular files and directories under gvisor-bin/, a "./" entry; no
# links, devices, absolute paths or dot-dot), then each file it must hold. The layout is judged by Python's
# tarfile, not by tar's own path handling.
unpack_gvisor() {
  local archive=$1 dir=$2 out missing
  mkdir -p "$dir"
  # shellcheck disable=SC2086 # the contract's file names, one word each
  if ! out=$(python3 - "$archive" "$dir" "$FR_GVISOR_SIDECAR_DIR" $FR_GVISOR_ARTIFACTS <<'PY' 2>&1
import sys, tarfile
from pathlib import PurePosixPath
archive, dest, sidecars, tops = sys.argv[1], sys.argv[2], sys.argv[3], set(sys.argv[4:])
try:
    tar = tarfile.open(archive)
except (tarfile.TarError, OSError) as err:
    sys.exit(f"not a tar archive tar can read ({err})")
with tar:
    for m in tar.getmembers():
        parts = PurePosixPath(m.name).parts
        inside = not m.name.startswith("/") and ".." not in parts
        in_sidecars = len(parts) >= 1 and parts[0] == sidecars
        ok = inside and (
            (m.isfile() and len(parts) == 1 and parts[0] in tops)
            or (m.isfile() and len(parts) >= 2 and in_sidecars)
            or (m.isdir() and (parts == () or in_sidecars))
        )
        if not ok:
            kind = "link" if m.issym() or m.islnk() else "directory" if m.isdir() else "file" if m.isfile() else "special file"
            sys.exit(f"an entry outside the release's layout: {kind} {m.name!r}")
    tar.extractall(dest, filter="data")
PY
  ); then
    fatal "gVisor's release archive $(basename "$archive"): runsc and containerd-shim-runsc-v1 at its top, the sidecars in $FR_GVISOR_SIDECAR_DIR/" \
      "$(one_line "$out"); nothing was installed" \
      "pin gVisor's own gvisor-x86_64.tar.bz2 in the catalog (its digest from upstream's SHA256SUMS)"
  fi
  chmod -R a+rX,go-w "$dir"
  find "$dir" -type f -exec chmod 0755 {} +
  missing=$(gvisor_missing_files "$dir" | paste -sd' ' -)
  [[ -z "$missing" ]] ||
    fatal "gVisor's release archive $(basename "$archive") to hold $FR_GVISOR_ARTIFACTS and the sidecars $FR_GVISOR_SIDECARS in $FR_GVISOR_SIDECAR_DIR/" \
      "it lacks $missing; nothing was installed" \
      "pin a gVisor release from 20260831 on, whose archive ships its sidecars"
}

# unlink_gvisor_release: with gvisor.runsc: debian, the links to a release
# installed before go (so nothing finds that runsc on PATH); its files stay,
# for containers started with them.
unlink_gvisor_release() {
  local name link
  for name in $FR_GVISOR_ARTIFACTS; do
    link="$FR_BIN_DIR/$name"
    if [[ -L "$link" && "$(readlink "$link")" == "$FR_GVISOR_DIR/"* ]]; then
      run rm -f "$link"
      info "removed $link (gvisor.runsc is debian)"
      CHANGED+=("$link")
    fi
  done
}

# install_gvisor: gVisor's pinned release archive where this host runs
# gVisor and the stack chose it (gvisor.runsc: release). The archive is
# downloaded and its digest checked, unpacked whole (sidecars included) into
# the work directory and checked there, then moved into its version's
# directory, then its marker written. An earlier version's directory stays: containers
# started with it keep running it. FR_BIN_DIR links put runsc and the shim
# on containerd's PATH (nerdctl's --runtime io.containerd.runsc.v1; the shim
# runs the runsc it finds there, which finds its sidecars beside itself).
# Docker runs runsc by its versioned path (configure_runtime.sh).
install_gvisor() {
  local name work archive dir version
  wanted_runtimes_before_install
  if ! runtime_wanted runsc; then
    info "gVisor not installed: ISOLATION=$ISOLATION registers no runsc"
    GVISOR_STATUS=not-wanted
    return 0
  fi
  if [[ "$GVISOR_RUNSC" == debian ]]; then
    warn "gVisor from Debian's runsc package (functions-runtime:gvisor.runsc is debian): the release is not installed"
    unlink_gvisor_release
    GVISOR_STATUS=debian-package
    return 0
  fi
  version=$(catalog_field "$FR_GVISOR_ARCHIVE" version)
  dir=$(gvisor_release_dir)
  if gvisor_installed; then
    info "gVisor already at $version, skipping"
    GVISOR_STATUS=present
    cache_present "$FR_GVISOR_ARCHIVE"
  else
    make_work_dir work
    fetch_artifact "$FR_GVISOR_ARCHIVE" "$work" archive
    unpack_gvisor "$archive" "$work/unpacked"
    replace_dir "$work/unpacked" "$dir"
    write_marker "$FR_GVISOR_ARCHIVE"
    cache_archive "$FR_GVISOR_ARCHIVE" "$archive"
    info "gVisor $version installed in $dir (with its sidecars: $FR_GVISOR_SIDECARS)"
    GVISOR_STATUS=installed
    CHANGED+=("$FR_GVISOR_ARCHIVE")
  fi
  for name in $FR_GVISOR_ARTIFACTS; do
    link_binary "$dir/$name" "$FR_BIN_DIR/$name"
  done
}

nerdctl_installed() { marker_matches nerdctl && [[ -x "$FR_BIN_DIR/nerdctl" ]]; }

install_nerdctl() {
  local version work archive
  version=$(catalog_field nerdctl version)
  if nerdctl_installed; then
    info "nerdctl already at $version, skipping"
    NERDCTL_STATUS=present
    write_marker nerdctl # a legacy marker gains the digest's algorithm
    cache_present nerdctl
    return 0
  fi
  make_work_dir work
  fetch_artifact nerdctl "$work" archive
  mkdir -p "$work/unpacked"
  tar -xzf "$archive" -C "$work/unpacked" nerdctl ||
    fatal "the nerdctl archive to hold 'nerdctl' at its top level" "it does not" \
      "pin the minimal nerdctl-<v>-linux-amd64.tar.gz in the catalog"
  run mkdir -p "$FR_BIN_DIR"
  # install(1) to a temporary name, then rename: never a half-written binary.
  run install -m 0755 "$work/unpacked/nerdctl" "$FR_BIN_DIR/.nerdctl.new"
  run mv -f "$FR_BIN_DIR/.nerdctl.new" "$FR_BIN_DIR/nerdctl"
  write_marker nerdctl
  cache_archive nerdctl "$archive"
  info "nerdctl $version installed in $FR_BIN_DIR"
  NERDCTL_STATUS=installed
  CHANGED+=(nerdctl)
}

# ---------------------------------------------------------------- the artifact share

# ARTIFACT_SHARE (empty, or ADDRESS:PORT; [ADDRESS]:PORT for IPv6): this host
# keeps each verified release archive it installs in FR_ARTIFACT_CACHE_DIR,
# by the file name of its catalog URL (what a peer asks for, lib.sh
# fetch_artifact), and serves that directory read-only over HTTP on exactly
# ADDRESS:PORT (unit FR_ARTIFACT_SHARE_UNIT). Peers check every digest, so
# the share is a shortcut, never trusted. Without it the unit and the cache go.
SHARE_ADDRESS=""
SHARE_PORT=""

# sharing: ARTIFACT_SHARE is set (status 0), parsed into SHARE_ADDRESS and
# SHARE_PORT. Anything but an address and a port is refused: the value
# lands in a unit file.
sharing() {
  local share=${ARTIFACT_SHARE:-}
  [[ -n "$share" ]] || return 1
  if [[ "$share" =~ ^\[([0-9A-Fa-f:.]+)\]:([1-9][0-9]{0,4})$ || "$share" =~ ^([0-9.]+):([1-9][0-9]{0,4})$ ]] &&
    ((BASH_REMATCH[2] <= 65535)); then
    SHARE_ADDRESS=${BASH_REMATCH[1]}
    SHARE_PORT=${BASH_REMATCH[2]}
    return 0
  fi
  fatal "ARTIFACT_SHARE empty or ADDRESS:PORT (an IPv6 address in brackets), such as 10.0.0.2:$FR_ARTIFACT_SHARE_PORT" \
    "'$(one_line "$share")'; nothing of the share was changed" \
    "report this: the program passes this host's private address and port $FR_ARTIFACT_SHARE_PORT"
}

# archive_file NAME: the file name of the catalog row NAME's URL.
archive_file() {
  local url
  url=$(catalog_field "$1" url)
  printf '%s\n' "${url##*/}"
}

make_cache_dir() {
  [[ -d "$FR_ARTIFACT_CACHE_DIR" ]] && return 0
  # 0755 on its parent too: the share's unit runs as a dynamic user.
  run install -d -m 0755 "$(dirname "$FR_ARTIFACT_CACHE_DIR")" "$FR_ARTIFACT_CACHE_DIR"
}

# cache_archive NAME FILE: with ARTIFACT_SHARE, the archive FILE this run
# fetched and verified (and installed from) into the cache, for the peers.
# Moved, not copied (Kata is ~1.5 GB), and renamed into place inside the
# cache: a peer never sees half a file by the archive's name.
cache_archive() {
  local name=$1 file=$2 base tmp
  sharing || return 0
  base=$(basename "$file")
  make_cache_dir
  tmp="$FR_ARTIFACT_CACHE_DIR/.$base.$$"
  run mv -f -- "$file" "$tmp"
  run chmod 0644 "$tmp"
  run mv -f -- "$tmp" "$FR_ARTIFACT_CACHE_DIR/$base"
  info "$name: $base kept in $FR_ARTIFACT_CACHE_DIR for the peers"
  SHARED_FILES+=("$base")
  CHANGED+=("$FR_ARTIFACT_CACHE_DIR/$base")
}

# cache_present NAME: with ARTIFACT_SHARE, an installed artifact's archive
# for the peers: kept when the cache holds it with the catalog's digest.
# Otherwise it is fetched once more (peers first) and cached: the install
# that unpacked it did not keep it (sharing was off then, or the archive was
# deleted after unpacking), so a host that starts sharing pays one more
# download per archive. Accepted: it is once per fleet, and a peer must
# never get a file this host did not verify.
cache_present() {
  local name=$1 base digest work archive
  sharing || return 0
  base=$(archive_file "$name")
  if [[ -f "$FR_ARTIFACT_CACHE_DIR/$base" ]]; then
    digest=$(catalog_digest "$name")
    if [[ "$(digest_of "${digest% *}" "$FR_ARTIFACT_CACHE_DIR/$base")" == "${digest#* }" ]]; then
      info "$name: $base already kept for the peers"
      SHARED_FILES+=("$base")
      return 0
    fi
    warn "$name: the cached $FR_ARTIFACT_CACHE_DIR/$base is not the catalog's file; fetching it again"
  else
    info "$name: installed, but its archive is not cached (removed after unpacking): fetching it once more for the peers"
  fi
  make_work_dir work
  fetch_artifact "$name" "$work" archive
  cache_archive "$name" "$archive"
}

# prune_artifact_cache: the cache holds only the archives this run keeps
# (an older version's, or a temporary file a killed run left, is removed).
prune_artifact_cache() {
  local path
  [[ -d "$FR_ARTIFACT_CACHE_DIR" ]] || return 0
  while IFS= read -r -d '' path; do
    one_of "$(basename "$path")" "${SHARED_FILES[*]}" && continue
    run rm -rf -- "$path"
    info "removed $path from the share (not an archive this host keeps)"
    CHANGED+=("$path")
  done < <(find "$FR_ARTIFACT_CACHE_DIR" -mindepth 1 -maxdepth 1 -print0)
}

share_unit() { printf '%s.service' "$FR_ARTIFACT_SHARE_UNIT"; }
share_unit_file() { printf '%s/%s' "$FR_SYSTEMD_DIR" "$(share_unit)"; }

# render_share_unit: Python's http.server over the cache, read-only, on
# exactly SHARE_ADDRESS:SHARE_PORT (the private address; the host filter
# admits ARTIFACT_PEER_CIDRS to it), as a dynamic user that can write nothing.
render_share_unit() {
  cat <<EOF
# Managed by functions-runtime (scripts/install_runtime.sh).
[Unit]
Description=functions-runtime artifact share: verified release archives for the fleet's peers (read-only)
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=$FR_PYTHON -I -m http.server --bind $SHARE_ADDRESS --directory $FR_ARTIFACT_CACHE_DIR $SHARE_PORT
Restart=on-failure
RestartSec=5
DynamicUser=yes
UMask=0077
ProtectSystem=strict
ProtectHome=yes
ReadOnlyPaths=$FR_ARTIFACT_CACHE_DIR
PrivateTmp=yes
PrivateDevices=yes
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources

[Install]
WantedBy=multi-user.target
EOF
}

# start_share: the unit written, enabled and running what it says (check,
# then act: a second run changes nothing).
start_share() {
  local unit
  unit=$(share_unit)
  if [[ "$SHARE_PORT" != "$FR_ARTIFACT_SHARE_PORT" ]]; then
    warn "ARTIFACT_SHARE serves on port $SHARE_PORT; the host filter admits peers (ARTIFACT_PEER_CIDRS) only to $FR_ARTIFACT_SHARE_PORT"
  fi
  make_cache_dir
  prune_artifact_cache
  write_unit_changed "$(share_unit_file)" render_share_unit || true
  if ((UNITS_CHANGED)); then run systemctl daemon-reload; fi
  if ! systemctl is-enabled --quiet "$unit" 2>/dev/null; then
    run systemctl enable "$unit" >&2
    CHANGED+=("enabled $unit")
  fi
  if ((UNITS_CHANGED)) || ! systemctl is-active --quiet "$unit"; then
    run systemctl restart "$unit" ||
      fatal "$unit to serve $FR_ARTIFACT_CACHE_DIR on $SHARE_ADDRESS:$SHARE_PORT" "it did not start" \
        "run 'journalctl -u $unit -n 50' on the host (is $SHARE_ADDRESS this host's address, the port free?)"
    CHANGED+=("started $unit")
  fi
}

# stop_share: without ARTIFACT_SHARE, the unit stopped, disabled and
# removed, and the cache with it.
stop_share() {
  local unit file
  unit=$(share_unit)
  file=$(share_unit_file)
  if [[ -e "$file" ]]; then
    run systemctl disable --now "$unit" >&2 || warn "could not stop $unit; removing it anyway"
    run rm -f -- "$file"
    run systemctl daemon-reload
    info "removed $unit (ARTIFACT_SHARE is empty)"
    CHANGED+=("$file")
  fi
  if [[ -e "$FR_ARTIFACT_CACHE_DIR" ]]; then
    run rm -rf -- "$FR_ARTIFACT_CACHE_DIR"
    info "removed $FR_ARTIFACT_CACHE_DIR (ARTIFACT_SHARE is empty)"
    CHANGED+=("$FR_ARTIFACT_CACHE_DIR")
  fi
}

configure_artifact_share() {
  if sharing; then start_share; else stop_share; fi
}

print_result() {
  printf '{"changed": %s, "installedPackages": %s, "kata": %s, "gvisor": %s, "nerdctl": %s, "downloads": %s, "downloadedBytes": %s, "drainedForUpdate": %s}\n' \
    "$(json_array "${CHANGED[@]}")" "$(json_array "${INSTALLED[@]}")" \
    "$(json_string "$KATA_STATUS")" "$(json_string "$GVISOR_STATUS")" "$(json_string "$NERDCTL_STATUS")" \
    "$(downloads_json)" "$(downloaded_bytes_json)" "$DRAINED_FOR_UPDATE"
}

# runtime_up_to_date: nothing the install step manages would change (the
# runtime packages and the wanted release files, by their markers).
runtime_up_to_date() {
  [[ -z "$(missing_runtime_packages)" ]] && ! dpkg_was_interrupted || return 1
  wanted_runtimes_before_install
  if runtime_wanted kata; then kata_installed || return 1; fi
  if runtime_wanted runsc && [[ "$GVISOR_RUNSC" != debian ]]; then gvisor_installed || return 1; fi
  nerdctl_installed
}

# drain_before_update: a serving host (its endpoint policy configured: a
# dedicated host updated in place) takes no new containers while its
# runtime changes; running ones keep running (live-restore). The upkeep
# step resumes it once verify passed again. A drain already in place (an
# operator's, the canary's, a retiring host's) is left as it is.
drain_before_update() {
  [[ -e "$FR_AUTHZ_CONFIG" ]] || return 0
  runtime_up_to_date && return 0
  if [[ -e "$FR_AUTHZ_DRAIN_FILE" ]]; then
    info "the host already drains ($(head -n 1 "$FR_AUTHZ_DRAIN_FILE" 2>/dev/null || true)); kept through the update"
    return 0
  fi
  printf '%s: the install step updates the runtime; the upkeep step resumes the host once verify passed\n' \
    "$FR_AUTHZ_UPDATE_MARK" | write_file_if_changed "$FR_AUTHZ_DRAIN_FILE" 0644 >/dev/null
  info "draining for the update: new containers are refused until verify passed again"
  DRAINED_FOR_UPDATE=true
}

main() {
  require_root
  require_var ISOLATION GVISOR_RUNSC
  sharing || true # a malformed ARTIFACT_SHARE fails here, before anything changes
  require_kvm_if_kata_wanted
  drain_before_update
  install_runtime_packages
  install_kata
  install_gvisor
  install_nerdctl
  configure_artifact_share
  print_result
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
