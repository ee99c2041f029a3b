# shellcheck shell=bash
# Shared helpers for the host scripts. Sourced, never executed.
#
# Conventions (docs/host-contract.md): logs go to stderr, the one JSON result
# goes to stdout; a failure prints ONE line naming the host, what was expected,
# what was found and what to do, then exits non-zero. Nothing here echoes a
# secret: certificate material arrives on stdin and only ever goes to files.

# The payload's root: this file lives in $FR_ROOT/scripts.
FR_ROOT=${FR_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
FR_HOST=${FR_HOST:-$(hostname 2>/dev/null || echo unknown-host)}
# The facts the program shares with the scripts (components/contract.py):
# the metadata address, kernel modules, schema names, base-file paths, ...
FR_CONTRACT=${FR_CONTRACT:-$FR_ROOT/contract/host.env}
if [[ ! -r "$FR_CONTRACT" ]]; then
  printf '%s [%s]: FAILED: expected the contract at %s; found no readable file; to fix: re-run the payload step (pulumi up)\n' \
    "$(basename "${0:-lib.sh}")" "$FR_HOST" "$FR_CONTRACT" >&2
  exit 1
fi
# shellcheck source=/dev/null
source "$FR_CONTRACT"
FR_STATE_DIR=${FR_STATE_DIR:-$FR_ROOT/state}
FR_CATALOG=${FR_CATALOG:-$FR_ROOT/catalog/artifacts.tsv}
# Host paths (downloads in FR_WORK_BASE, PEM blocks from stdin in the tmpfs
# FR_SECRET_BASE, /dev/kvm, Kata's directory, ...) come from the contract
# (components/contract.py HOST_PATHS), overridable for tests.
# FR_DRY_RUN=1: log the commands that would change the host, run none of them.
FR_DRY_RUN=${FR_DRY_RUN:-0}
FR_SCRIPT_NAME=${FR_SCRIPT_NAME:-$(basename "${0:-lib.sh}")}

# curl bounds: a mirror or GitHub that stalls must not hang `pulumi up`.
readonly FR_CURL_RETRIES=4           # retries on transient errors (5xx, resets)
readonly FR_CURL_CONNECT_TIMEOUT=20  # seconds to establish a connection
readonly FR_CURL_SPEED_LIMIT=10240   # abort below 10 KiB/s ...
readonly FR_CURL_SPEED_TIME=60       # ... sustained for 60 s (1.5 GB Kata is slow, not stuck)
# A peer (ARTIFACT_PEERS) is a shortcut on the private network, never a
# dependency: one that is down, stalls or is slow is given up in seconds.
readonly FR_PEER_RETRIES=1            # one retry on a transient error (a timeout, 5xx)
readonly FR_PEER_CONNECT_TIMEOUT=3    # seconds to establish a connection
readonly FR_PEER_SPEED_LIMIT=1048576  # give up below 1 MiB/s ...
readonly FR_PEER_SPEED_TIME=15        # ... sustained for 15 s

# ---------------------------------------------------------------- logging

info() { printf '%s [%s]: %s\n' "$FR_SCRIPT_NAME" "$FR_HOST" "$*" >&2; }
warn() { printf '%s [%s]: WARNING: %s\n' "$FR_SCRIPT_NAME" "$FR_HOST" "$*" >&2; }

# one_line TEXT: collapse newlines and tabs so a message stays one line.
one_line() {
  local text=$1
  text=${text//$'\r'/ }
  text=${text//$'\t'/ }
  printf '%s' "${text//$'\n'/ }"
}

# fatal EXPECTED FOUND TODO [EXIT_CODE]  (the message is kept in FR_FATAL_MESSAGE)
FR_FATAL_MESSAGE=""
fatal() {
  local expected=$1 found=$2 todo=$3 code=${4:-1}
  FR_FATAL_MESSAGE="expected $(one_line "$expected"); found $(one_line "$found"); to fix: $(one_line "$todo")"
  printf '%s [%s]: FAILED on host %s: %s\n' "$FR_SCRIPT_NAME" "$FR_HOST" "$FR_HOST" "$FR_FATAL_MESSAGE" >&2
  exit "$code"
}

# run CMD...: run a command that changes the host (or only log it in dry run).
run() {
  if is_dry_run; then
    info "dry-run: would run: $*"
    return 0
  fi
  "$@"
}

is_dry_run() { [[ "$FR_DRY_RUN" == 1 ]]; }

# ---------------------------------------------------------------- exit hooks

FR_EXIT_HOOKS=()
FR_EXIT_STATUS=0
# A subshell ($(...), a pipeline stage) never runs the script's EXIT trap, so a
# hook added there would be lost and what it cleans up left behind: refuse it.
require_own_shell() {
  if ((BASH_SUBSHELL > 0)); then
    fatal "exit hooks added by the script's own shell" \
      "${FUNCNAME[1]} in a subshell (${FUNCNAME[*]:2}): its cleanup would never run" \
      "report this: call it outside \$(...) and pass the directory in"
  fi
}
add_exit_hook() {
  require_own_shell
  FR_EXIT_HOOKS+=("$1")
}
# Hooks run last-registered first; FR_EXIT_STATUS holds the script's exit status.
run_exit_hooks() {
  # shellcheck disable=SC2034 # read by the scripts' own exit hooks
  FR_EXIT_STATUS=$?
  local i
  for ((i = ${#FR_EXIT_HOOKS[@]} - 1; i >= 0; i--)); do
    eval "${FR_EXIT_HOOKS[i]}" || true
  done
}
trap run_exit_hooks EXIT

# make_work_dir VAR: a fresh private directory, removed when the script exits.
make_work_dir() {
  local dir
  require_own_shell
  mkdir -p "$FR_WORK_BASE"
  dir=$(mktemp -d "$FR_WORK_BASE/functions-runtime.XXXXXX")
  chmod 0700 "$dir"
  add_exit_hook "rm -rf -- '$dir'"
  printf -v "$1" '%s' "$dir"
}

# make_secret_dir VAR: like make_work_dir, on tmpfs, for key material.
make_secret_dir() {
  local dir
  require_own_shell
  mkdir -p "$FR_SECRET_BASE"
  chmod 0700 "$FR_SECRET_BASE"
  dir=$(mktemp -d "$FR_SECRET_BASE/pem.XXXXXX")
  add_exit_hook "rm -rf -- '$dir'"
  printf -v "$1" '%s' "$dir"
}

# ---------------------------------------------------------------- JSON output

json_string() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/\\r}
  s=${s//$'\t'/\\t}
  s=$(printf '%s' "$s" | LC_ALL=C tr -d '\001-\037\177')
  printf '"%s"' "$s"
}

# json_string_or_null TEXT: null for the empty string.
json_string_or_null() {
  if [[ -z "$1" ]]; then printf 'null'; else json_string "$1"; fi
}

json_array() {
  local first=1 item
  printf '['
  for item in "$@"; do
    ((first)) || printf ', '
    first=0
    json_string "$item"
  done
  printf ']'
}

# ---------------------------------------------------------------- inputs

# require_var NAME...: every named variable must be set and non-empty.
require_var() {
  local name
  for name in "$@"; do
    [[ -n "${!name:-}" ]] ||
      fatal "variable $name to be set" "it empty or unset" \
        "pass $name=... on the command line (docs/host-contract.md, Variables)"
  done
}

require_root() {
  is_dry_run && return 0
  [[ "$(id -u)" == 0 ]] ||
    fatal "to run as root" "uid $(id -u)" "run it over SSH as root, as the program does"
}

# one_of VALUE WORDS: VALUE is one of the space-separated WORDS.
one_of() {
  local value=$1 word
  for word in $2; do [[ "$value" == "$word" ]] && return 0; done
  return 1
}

# ---------------------------------------------------------------- catalog

# catalog_field NAME FIELD: one field (by header name) of the catalog row NAME.
catalog_field() {
  local name=$1 field=$2 value
  [[ -r "$FR_CATALOG" ]] ||
    fatal "the artifact catalog at $FR_CATALOG" "no readable file" \
      "re-run the payload step (pulumi up) so catalog/artifacts.tsv is uploaded"
  value=$(awk -F'\t' -v name="$name" -v field="$field" '
    /^[[:space:]]*#/ || /^[[:space:]]*$/ { next }
    !header { for (i = 1; i <= NF; i++) col[$i] = i; header = 1; next }
    $1 == name && (field in col) { print $col[field]; found = 1; exit }
    END { if (!found) exit 1 }
  ' "$FR_CATALOG") ||
    fatal "a row '$name' with a '$field' column in $FR_CATALOG" "none" \
      "add the artifact to catalog/artifacts.tsv (name version digest url)"
  [[ -n "$value" ]] ||
    fatal "a non-empty $field for '$name' in $FR_CATALOG" "an empty field" \
      "fill in catalog/artifacts.tsv"
  printf '%s\n' "$value"
}

# digest_algorithms: the algorithms a catalog digest may name (from the contract).
digest_algorithms() {
  local spec names=()
  for spec in $FR_DIGEST_ALGORITHMS; do names+=("${spec%%:*}"); done
  printf '%s' "${names[*]}"
}

# digest_hex_length ALGORITHM: its number of hex digits; fails for an unknown one.
digest_hex_length() {
  local spec
  for spec in $FR_DIGEST_ALGORITHMS; do
    if [[ "${spec%%:*}" == "$1" ]]; then
      printf '%s' "${spec#*:}"
      return 0
    fi
  done
  return 1
}

# catalog_digest NAME: "<algorithm> <hex>" of the catalog row NAME, whose
# digest column reads <algorithm>:<hex>. An unknown algorithm, or a hex of
# the wrong length, is fatal and names the row.
catalog_digest() {
  local name=$1 digest algorithm hex length
  digest=$(catalog_field "$name" digest)
  algorithm=${digest%%:*}
  hex=${digest#*:}
  if [[ "$digest" != *:* ]] || ! length=$(digest_hex_length "$algorithm"); then
    fatal "the digest of catalog row '$name' in $FR_CATALOG as <algorithm>:<hex>, the algorithm one of: $(digest_algorithms)" \
      "'$(one_line "${digest:0:24}")'" \
      "write the row's digest as sha256:<hex> or sha512:<hex> (docs/upgrading.md)"
  fi
  [[ "$hex" =~ ^[0-9a-f]+$ && ${#hex} -eq $length ]] ||
    fatal "a $algorithm digest of $length lowercase hex digits in catalog row '$name' of $FR_CATALOG" \
      "${#hex} characters" "fix the row's digest (a digest of another algorithm, or cut short?)"
  printf '%s %s\n' "$algorithm" "$hex"
}

# artifact_url NAME: the catalog URL, or $ARTIFACT_MIRROR/<file name of it>.
artifact_url() {
  local url
  url=$(catalog_field "$1" url)
  if [[ -n "${ARTIFACT_MIRROR:-}" ]]; then
    printf '%s/%s\n' "${ARTIFACT_MIRROR%/}" "${url##*/}"
  else
    printf '%s\n' "$url"
  fi
}

# ---------------------------------------------------------------- hashes and downloads

# digest_of ALGORITHM FILE: the hex digest, by coreutils' <algorithm>sum
# (ALGORITHM is one the contract names: catalog_digest checked it).
digest_of() {
  digest_hex_length "$1" >/dev/null ||
    fatal "a digest algorithm one of: $(digest_algorithms)" "'$1'" "report this: digest_of's caller in scripts/"
  "${1}sum" "$2" | awk '{print $1}'
}

# verify_digest FILE ALGORITHM EXPECTED [WHAT]: fatal unless FILE hashes to EXPECTED.
verify_digest() {
  local file=$1 algorithm=$2 expected=$3 what=${4:-$1} found
  found=$(digest_of "$algorithm" "$file")
  [[ "$found" == "${expected,,}" ]] ||
    fatal "$what with $algorithm $expected" "$algorithm $found (nothing was installed)" \
      "check ARTIFACT_MIRROR serves the pinned file, or fix the catalog row together with its digest"
}

# download URL OUT: bounded retries and timeouts; fatal on failure.
download() {
  local url=$1 out=$2
  info "downloading $url"
  curl --fail --silent --show-error --location \
    --proto '=https,http' \
    --retry "$FR_CURL_RETRIES" --retry-delay 3 --retry-connrefused \
    --connect-timeout "$FR_CURL_CONNECT_TIMEOUT" \
    --speed-limit "$FR_CURL_SPEED_LIMIT" --speed-time "$FR_CURL_SPEED_TIME" \
    --output "$out" "$url" ||
    fatal "to download $url" "curl failed (see the line above)" \
      "check the host's outbound HTTPS or set ARTIFACT_MIRROR to a reachable mirror"
}

# The downloads this run made, one record each:
# "<artifact>\t<source>\t<url>\t<bytes>", source one of FR_DOWNLOAD_SOURCES
# (a peer of ARTIFACT_PEERS, ARTIFACT_MIRROR, or the catalog's own URL).
# fetch_artifact appends; downloads_json and downloaded_bytes_json report.
FR_DOWNLOADS=()
readonly FR_DOWNLOAD_SOURCES="internet mirror peer"

# fetch_from_peer PEER NAME FILE OUT ALGORITHM HEX: PEER/FILE into OUT, its
# digest checked. A peer that cannot be reached, answers an error or serves
# another file is skipped: a warning names it and what was wrong, OUT is
# removed, and the status is 1.
fetch_from_peer() {
  local peer=${1%/} name=$2 file=$3 out=$4 algorithm=$5 hex=$6 url err found
  url="$peer/$file"
  info "$name: trying peer $url"
  if ! err=$(curl --fail --silent --show-error \
    --proto '=https,http' \
    --retry "$FR_PEER_RETRIES" --retry-delay 1 \
    --connect-timeout "$FR_PEER_CONNECT_TIMEOUT" \
    --speed-limit "$FR_PEER_SPEED_LIMIT" --speed-time "$FR_PEER_SPEED_TIME" \
    --output "$out" "$url" 2>&1); then
    rm -f -- "$out"
    warn "peer $peer skipped for $name: fetching $url failed: $(one_line "$err")"
    return 1
  fi
  found=$(digest_of "$algorithm" "$out")
  if [[ "$found" != "${hex,,}" ]]; then
    rm -f -- "$out"
    warn "peer $peer skipped for $name: $url has $algorithm $found, not the catalog's $hex (removed)"
    return 1
  fi
  return 0
}

# fetch_artifact NAME DIR VAR: the catalog artifact NAME downloaded into DIR
# (by the file name of its catalog URL), its digest checked, its path in
# VAR, the download recorded in FR_DOWNLOADS. Each peer of ARTIFACT_PEERS
# (space-separated base URLs) is asked first for <peer>/<file name>; then
# the mirror or the catalog URL (artifact_url). The digest is checked
# whatever served the file; a bad one from the mirror or the catalog URL is
# fatal and leaves the host untouched (the file exists outside DIR only
# after the caller moves it). Call it in the script's own shell, not in
# $(...): the record would be lost with the subshell. VAR is the caller's
# (such as its local "archive"), never one of this function's locals.
fetch_artifact() {
  local name=$1 dir=$2 var=$3 catalog_url url="" digest algorithm hex file out peer peers source=""
  if ((BASH_SUBSHELL > 0)); then
    fatal "fetch_artifact called by the script's own shell" \
      "it in a subshell (${FUNCNAME[*]:1}): its download record would be lost" \
      "report this: call 'fetch_artifact NAME DIR VAR' outside \$(...)"
  fi
  catalog_url=$(catalog_field "$name" url)
  digest=$(catalog_digest "$name")
  algorithm=${digest% *}
  hex=${digest#* }
  file=${catalog_url##*/}
  out="$dir/$file"
  read -r -a peers <<<"${ARTIFACT_PEERS:-}"
  for peer in "${peers[@]}"; do
    if fetch_from_peer "$peer" "$name" "$file" "$out" "$algorithm" "$hex"; then
      url="${peer%/}/$file"
      source=peer
      break
    fi
  done
  if [[ -z "$source" ]]; then
    url=$(artifact_url "$name")
    if [[ -n "${ARTIFACT_MIRROR:-}" ]]; then source=mirror; else source=internet; fi
    download "$url" "$out"
    verify_digest "$out" "$algorithm" "$hex" "artifact $name ($url)"
  fi
  info "$name: $algorithm $hex verified ($source, $url)"
  FR_DOWNLOADS+=("$name"$'\t'"$source"$'\t'"$url"$'\t'"$(stat -c %s "$out")")
  printf -v "$var" '%s' "$out"
}

# downloads_json: FR_DOWNLOADS as a JSON list of
# {"artifact", "source", "url", "bytes"}, in the order fetched.
downloads_json() {
  local record name source url bytes first=1
  printf '['
  for record in "${FR_DOWNLOADS[@]}"; do
    IFS=$'\t' read -r name source url bytes <<<"$record"
    ((first)) || printf ', '
    first=0
    printf '{"artifact": %s, "source": %s, "url": %s, "bytes": %d}' \
      "$(json_string "$name")" "$(json_string "$source")" "$(json_string "$url")" "$bytes"
  done
  printf ']'
}

# downloaded_bytes_json: the bytes downloaded per source, every source named.
downloaded_bytes_json() {
  local kind record source bytes total first=1
  printf '{'
  for kind in $FR_DOWNLOAD_SOURCES; do
    total=0
    for record in "${FR_DOWNLOADS[@]}"; do
      IFS=$'\t' read -r _ source _ bytes <<<"$record"
      if [[ "$source" == "$kind" ]]; then total=$((total + bytes)); fi
    done
    ((first)) || printf ', '
    first=0
    printf '%s: %d' "$(json_string "$kind")" "$total"
  done
  printf '}'
}

# ---------------------------------------------------------------- markers

marker_path() { printf '%s/%s.version\n' "$FR_STATE_DIR" "$1"; }

# marker_value NAME: "<version> <algorithm>:<hex>" as an install records it.
marker_value() {
  local name=$1 digest
  digest=$(catalog_digest "$name")
  printf '%s %s:%s\n' "$(catalog_field "$name" version)" "${digest% *}" "${digest#* }"
}

# legacy_marker_value NAME: "<version> <hex>", what installs wrote before
# markers recorded the algorithm (always sha256 then); empty otherwise.
legacy_marker_value() {
  local name=$1 digest
  digest=$(catalog_digest "$name")
  if [[ "${digest% *}" == sha256 ]]; then
    printf '%s %s\n' "$(catalog_field "$name" version)" "${digest#* }"
  fi
}

# marker_matches NAME: the recorded install is the catalog's version and
# digest. A legacy sha256 marker of the same version and hex counts (the
# install step rewrites it with the algorithm; nothing is downloaded again).
marker_matches() {
  local file recorded legacy
  file=$(marker_path "$1")
  [[ -r "$file" ]] || return 1
  recorded=$(cat "$file")
  [[ "$recorded" == "$(marker_value "$1")" ]] && return 0
  legacy=$(legacy_marker_value "$1")
  [[ -n "$legacy" && "$recorded" == "$legacy" ]]
}

write_marker() {
  local name=$1
  run mkdir -p "$FR_STATE_DIR"
  marker_value "$name" | write_file_if_changed "$(marker_path "$name")" 0644 >/dev/null || true
}

# ---------------------------------------------------------------- files

# write_file_if_changed PATH MODE < CONTENT: write atomically when content or
# mode differ. Returns 0 when the file changed, 1 when it was already right.
write_file_if_changed() {
  local path=$1 mode=$2 dir tmp
  dir=$(dirname "$path")
  if is_dry_run; then
    tmp=$(mktemp)
    cat >"$tmp"
    if [[ -f "$path" ]] && cmp -s "$tmp" "$path"; then
      rm -f "$tmp"
      return 1
    fi
    rm -f "$tmp"
    info "dry-run: would write $path"
    return 0
  fi
  mkdir -p "$dir"
  tmp=$(mktemp "$dir/.$(basename "$path").XXXXXX")
  cat >"$tmp"
  if [[ -f "$path" ]] && cmp -s "$tmp" "$path"; then
    rm -f "$tmp"
    if [[ "$(stat -c '%a' "$path")" != "${mode#0}" ]]; then
      chmod "$mode" "$path"
      return 0
    fi
    return 1
  fi
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$path"
  return 0
}

# The files a configuring step wrote (its JSON result lists them), and whether
# one was a systemd unit (then systemd must reload its units).
CHANGED=()
UNITS_CHANGED=0

# write_changed PATH MODE [COMMAND [ARG...]]: COMMAND's output (stdin without
# one) at PATH by lib.sh's write_file_if_changed, and PATH in CHANGED when it
# was written; status 1 when PATH was already current. A function, not the
# end of a pipeline, so that CHANGED is this shell's.
write_changed() {
  local path=$1 mode=$2
  shift 2
  if (($#)); then
    "$@" | write_file_if_changed "$path" "$mode" || return 1
  else
    write_file_if_changed "$path" "$mode" || return 1
  fi
  CHANGED+=("$path")
}

# write_unit_changed PATH RENDER [ARG...]: write_changed for a systemd unit or
# drop-in (0644); when it wrote, systemd must reload its units (UNITS_CHANGED).
write_unit_changed() {
  local path=$1
  shift
  write_changed "$path" 0644 "$@" || return 1
  # shellcheck disable=SC2034 # read by the scripts that source lib.sh
  UNITS_CHANGED=1
}

# ---------------------------------------------------------------- packages

package_installed() {
  [[ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null)" == "ii "* ]]
}

FR_DPKG_UPDATES=${FR_DPKG_UPDATES:-/var/lib/dpkg/updates}

# dpkg_was_interrupted: a previous dpkg run stopped half-way (a lost SSH
# session that took apt with it, a reboot): packages are left unpacked or
# half-configured, and apt-get refuses to run until dpkg finishes them.
dpkg_was_interrupted() {
  compgen -G "$FR_DPKG_UPDATES/[0-9]*" >/dev/null || [[ -n "$(dpkg --audit 2>/dev/null)" ]]
}

# recover_interrupted_dpkg: finish an interrupted dpkg run. Returns 0 when a
# recovery ran (the caller then installs with --fix-broken), 1 when none was
# needed. A package dpkg cannot configure yet (its dependency was never
# unpacked) is left to the following apt-get install --fix-broken.
recover_interrupted_dpkg() {
  dpkg_was_interrupted || return 1
  warn "a previous package installation was interrupted: running 'dpkg --configure -a' first"
  run env DEBIAN_FRONTEND=noninteractive dpkg --force-confdef --force-confold --configure -a >&2 ||
    warn "'dpkg --configure -a' left packages unconfigured; apt-get install --fix-broken completes them"
  return 0
}

# The base file base/apt-update-stamp.conf (cloud-init's write_files on a
# Cloud server, bootstrap_base.sh everywhere) makes apt touch this file after
# every successful `apt-get update`, whoever ran it: cloud-init's
# package_update minutes before the install step, an operator, these scripts.
# The stamp's path is FR_APT_UPDATE_STAMP, from the contract.
FR_APT_SOURCES=${FR_APT_SOURCES:-/etc/apt/sources.list /etc/apt/sources.list.d}
# Package lists younger than this are installed from as they are (an update
# costs seconds on a server, ~40 s in the TCG lab). A package that moved on
# since (its .deb gone from the mirror) makes apt_get_install refresh the
# lists and retry once.
readonly FR_APT_LISTS_MAX_AGE_S=3600

# apt_lists_age_s: seconds since the last successful apt-get update.
apt_lists_age_s() { echo $(($(date +%s) - $(stat -c %Y "$FR_APT_UPDATE_STAMP"))); }

apt_sources_changed_since_update() {
  local path
  for path in $FR_APT_SOURCES; do
    [[ -e "$path" ]] || continue
    [[ -z "$(find "$path" -newer "$FR_APT_UPDATE_STAMP" -print -quit 2>/dev/null)" ]] || return 0
  done
  return 1
}

# apt_lists_fresh: refreshed less than FR_APT_LISTS_MAX_AGE_S ago (a stamp
# from the future does not count) and no apt source edited since.
apt_lists_fresh() {
  local age
  [[ -f "$FR_APT_UPDATE_STAMP" ]] || return 1
  age=$(apt_lists_age_s)
  ((age >= 0 && age < FR_APT_LISTS_MAX_AGE_S)) || return 1
  ! apt_sources_changed_since_update
}

refresh_apt_lists() {
  run env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 ||
    fatal "apt-get update to succeed" "it failed (see above)" \
      "check the host's Debian mirror and DNS, then re-run pulumi up"
}

apt_get_install_once() {
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >&2
}

# apt_get_install [APT-OPTION...] -- PACKAGE...: install without recommends,
# keeping configuration files the host already has. The lists are refreshed
# first unless fresh; an install from fresh lists that fails is retried once
# after a refresh.
apt_get_install() {
  local opts=() refreshed=0
  while (($# > 0)) && [[ "$1" != -- ]]; do
    opts+=("$1")
    shift
  done
  shift
  if apt_lists_fresh; then
    info "package lists refreshed $(apt_lists_age_s) s ago, skipping apt-get update"
  else
    refresh_apt_lists
    refreshed=1
  fi
  apt_get_install_once "${opts[@]}" "$@" && return 0
  if ((refreshed == 0)); then
    warn "apt-get install failed with package lists from $(apt_lists_age_s) s ago; refreshing them and retrying once"
    refresh_apt_lists
    apt_get_install_once "${opts[@]}" "$@" && return 0
  fi
  fatal "apt-get install $* to succeed" "it failed (see above)" \
    "run 'apt-get install $*' on the host to see why"
}

# ---------------------------------------------------------------- KVM and isolation

cpu_has_virtualization() { grep -qwE 'vmx|svm' "$FR_CPUINFO" 2>/dev/null; }
kvm_device_usable() { [[ -c "$FR_DEV_KVM" && -r "$FR_DEV_KVM" && -w "$FR_DEV_KVM" ]]; }

# has_kvm: hardware KVM a VM runtime can use. A paravirtual /dev/kvm without
# vmx/svm flags does not count: a guest kernel never boots on it.
has_kvm() { kvm_device_usable && cpu_has_virtualization; }

kvm_missing_reason() {
  if ! kvm_device_usable; then
    printf 'no usable %s' "$FR_DEV_KVM"
  elif ! cpu_has_virtualization; then
    printf '%s exists but the CPU shows no vmx/svm flag' "$FR_DEV_KVM"
  else
    printf 'nothing (KVM is usable)'
  fi
}

# The words of every "no KVM" failure (install, configure, verify).
readonly FR_NO_KVM_TODO="Kata needs a dedicated (Robot) server or any KVM-capable machine; or set functions-runtime:isolation to sandbox to use gVisor"
no_kvm_found() { printf '%s: %s' "$(kvm_missing_reason)" "$FR_NO_KVM_ON_CLOUD"; }

# fatal_isolation_unmet: ISOLATION=vm on a host without usable KVM.
fatal_isolation_unmet() {
  fatal "KVM for Kata Containers (functions-runtime:isolation is vm)" "$(no_kvm_found)" "$FR_NO_KVM_TODO" "${1:-1}"
}

# The Kata configuration in force (FR_KATA_CONFIG): Kata's shim and
# kata-runtime read it before the release's own default (configure writes it,
# verify reads it).
kata_installed() { marker_matches kata && [[ -x "$FR_KATA_DIR/bin/containerd-shim-kata-v2" ]]; }

# kata_shipped_config: the configuration the Kata release ships for the
# stack's hypervisor (KATA_HYPERVISOR); configure copies it to FR_KATA_CONFIG.
kata_shipped_config() {
  printf '%s/share/defaults/kata-containers/configuration-%s.toml' "$FR_KATA_DIR" "${KATA_HYPERVISOR:-}"
}

# kata_check CONFIG: `kata-runtime check` against CONFIG, not against
# whichever configuration happens to be in force (the global --config flag
# comes before the subcommand); its output on stdout, its status returned.
kata_check() { "$FR_BIN_DIR/kata-runtime" --config "$1" check --no-network-checks 2>&1; }

# kata_hypervisor_untested: the stack chose a hypervisor Kata does not test
# with Docker (the program accepts it only with kata.allowUntestedHypervisor).
kata_hypervisor_untested() {
  ! one_of "${KATA_HYPERVISOR:-}" "$FR_KATA_DOCKER_TESTED_HYPERVISORS"
}

# kata_unusable_reason: empty when Kata can run containers here, else why not.
# A /dev/kvm and the CPU flags are not enough (a nested or paravirtual KVM
# passes both and still cannot run Kata's VM): `kata-runtime check` with the
# chosen hypervisor's configuration decides (configure and verify ask the
# same question, so they give the same answer).
# Cached: the check takes seconds and configure/verify ask more than once.
FR_KATA_REASON=${FR_KATA_REASON-unset}
kata_unusable_reason() {
  local out config
  if [[ "$FR_KATA_REASON" == unset ]]; then
    config=$(kata_shipped_config)
    if ! has_kvm; then
      FR_KATA_REASON=$(kvm_missing_reason)
    elif ! kata_installed; then
      FR_KATA_REASON="Kata is not installed in $FR_KATA_DIR (no matching install marker or shim)"
    elif [[ ! -r "$config" ]]; then
      FR_KATA_REASON="Kata's ${KATA_HYPERVISOR:-} configuration $config does not exist (the release does not ship it, or the install is incomplete)"
    elif ! out=$(kata_check "$config"); then
      FR_KATA_REASON="'kata-runtime check' failed with the ${KATA_HYPERVISOR:-} configuration $config: $(one_line "$(tail -n3 <<<"$out")")"
    else
      FR_KATA_REASON=""
    fi
  fi
  printf '%s' "$FR_KATA_REASON"
}

# kata_usable: installed, KVM usable, and `kata-runtime check` passes with
# the chosen hypervisor's configuration.
# Call it in the script's own shell (not in $(...)) so the cache sticks.
kata_usable() {
  [[ "$FR_KATA_REASON" != unset ]] || FR_KATA_REASON=$(kata_unusable_reason)
  [[ -z "$FR_KATA_REASON" ]]
}

# ---------------------------------------------------------------- gVisor

# gvisor_release_dir: where the pinned release archive (catalog row
# FR_GVISOR_ARCHIVE) is unpacked: one directory per version.
gvisor_release_dir() {
  local version
  version=$(catalog_field "$FR_GVISOR_ARCHIVE" version)
  [[ "$version" =~ ^[0-9A-Za-z][0-9A-Za-z.+~_-]*$ && "$version" != *..* ]] ||
    fatal "a version usable as a directory name in catalog row '$FR_GVISOR_ARCHIVE' of $FR_CATALOG" \
      "'$(one_line "$version")'" "fix the row's version"
  printf '%s/%s\n' "$FR_GVISOR_DIR" "$version"
}

# gvisor_release_path NAME: the release's file NAME (runsc, the shim, or
# gvisor-bin/<sidecar>) as installed.
gvisor_release_path() {
  local dir
  dir=$(gvisor_release_dir)
  printf '%s/%s\n' "$dir" "$1"
}

# runsc_path: the runsc this host runs, by gvisor.runsc: "release" runs the
# pinned release installed under FR_GVISOR_DIR/<version>/ (the contract's
# path); "debian" runs Debian's package at FR_DEBIAN_RUNSC, an explicit fallback.
runsc_path() {
  require_var GVISOR_RUNSC
  if [[ "$GVISOR_RUNSC" == debian ]]; then
    printf '%s\n' "$FR_DEBIAN_RUNSC"
  else
    gvisor_release_path runsc
  fi
}

# runsc_version RUNSC: the first line of `RUNSC --version` (not `| head`:
# under pipefail the SIGPIPE would lose it), or "(no version)".
runsc_version() {
  local out
  out=$("$1" --version 2>&1) || true
  out=$(head -n1 <<<"$out")
  printf '%s' "${out:-(no version)}"
}

# ---------------------------------------------------------------- which runtimes

# The one rule for which runtimes a host offers, default first:
#   vm:      Kata, always (a host that cannot run it fails, never degrades);
#   sandbox: Kata where it can run here, then gVisor (runsc).
# "Can run here" has two answers, by stage: before Kata is installed only
# KVM can be asked (wanted_runtimes_before_install, the install step); once
# it is, `kata-runtime check` with the chosen hypervisor's configuration
# decides (wanted_runtimes: configure, verify). Two functions, not a flag, so
# the install step does not read KATA_HYPERVISOR (tests/unit/test_pipeline.py
# reads which variables each step's functions reach). Sets WANTED_RUNTIMES.
WANTED_RUNTIMES=()
# runtimes_given KATA_HERE: the rule, "can Kata run here" answered 1 or 0.
runtimes_given() {
  require_var ISOLATION
  WANTED_RUNTIMES=()
  if [[ "$ISOLATION" == vm ]] || (($1)); then WANTED_RUNTIMES+=(kata); fi
  if [[ "$ISOLATION" == sandbox ]]; then WANTED_RUNTIMES+=(runsc); fi
  return 0
}

wanted_runtimes_before_install() {
  if has_kvm; then runtimes_given 1; else runtimes_given 0; fi
}

wanted_runtimes() {
  if kata_usable; then runtimes_given 1; else runtimes_given 0; fi
}

runtime_wanted() { one_of "$1" "${WANTED_RUNTIMES[*]}"; }

# ---------------------------------------------------------------- PEM input

# read_pem_blocks DIR NAME...: split the PEM blocks on stdin, in order, into
# DIR/NAME (mode 0600). Exactly one block per name; the material is never
# printed. The first line of each block is checked by the caller if needed.
read_pem_blocks() {
  local dir=$1 count
  shift
  mkdir -p "$dir"
  count=$(
    umask 077
    awk -v dir="$dir" -v names="$*" '
      BEGIN { n = split(names, name, " ") }
      { sub(/\r$/, "") }
      /^-----BEGIN [A-Z0-9 ]+-----$/ { inblock = 1; i++; if (i <= n) file = dir "/" name[i] }
      inblock && i <= n { print > file }
      /^-----END [A-Z0-9 ]+-----$/ && inblock { inblock = 0; done++; if (i <= n) close(file) }
      END { print (inblock ? -1 : done + 0) }'
  )
  [[ "$count" == "$#" ]] ||
    fatal "$# PEM blocks on stdin ($*, in that order)" \
      "$([[ "$count" == -1 ]] && echo "an unterminated block" || echo "$count block(s)")" \
      "check the program sends the PEM material on stdin (docs/host-contract.md)"
}

# pem_kind FILE: "certificate", "private-key" or "other".
pem_kind() {
  case "$(head -n1 "$1")" in
    "-----BEGIN CERTIFICATE-----") echo certificate ;;
    "-----BEGIN "*"PRIVATE KEY-----") echo private-key ;;
    *) echo other ;;
  esac
}

# require_pem_kinds DIR NAME:KIND...
require_pem_kinds() {
  local dir=$1 spec name kind
  shift
  for spec in "$@"; do
    name=${spec%%:*}
    kind=${spec#*:}
    [[ "$(pem_kind "$dir/$name")" == "$kind" ]] ||
      fatal "stdin block '$name' to be a $kind" "a $(pem_kind "$dir/$name")" \
        "send CA certificate, certificate, private key, in that order"
  done
}

# ---------------------------------------------------------------- taking parts of a host away (seal, retire)

# What remove_paths took away and the units stop_units stopped: the seal and
# retire steps' JSON results list them.
REMOVED_PATHS=()
STOPPED_UNITS=()

# remove_paths PATH...: remove each PATH that exists (a file, a link, or a
# directory with everything in it) and record it in REMOVED_PATHS. A path
# already gone is skipped, so a re-run removes nothing more.
remove_paths() {
  local path
  for path in "$@"; do
    [[ -e "$path" || -L "$path" ]] || continue
    run rm -rf -- "$path" || return 1
    REMOVED_PATHS+=("$path")
  done
}

# unit_active UNIT, unit_enabled UNIT: systemd says so (no systemd: no).
unit_active() { systemctl is-active --quiet "$1" 2>/dev/null; }
unit_enabled() { systemctl is-enabled --quiet "$1" 2>/dev/null; }

# stop_units UNIT...: stop the active ones in one systemctl call (a service
# and the socket that starts it stop together) and record them in
# STOPPED_UNITS; nothing to do when none is active.
stop_units() {
  local unit active=()
  for unit in "$@"; do
    if unit_active "$unit"; then active+=("$unit"); fi
  done
  ((${#active[@]} > 0)) || return 0
  run systemctl stop "${active[@]}" || return 1
  STOPPED_UNITS+=("${active[@]}")
}

# disable_units UNIT...: disable the enabled ones, then stop_units them.
disable_units() {
  local unit
  for unit in "$@"; do
    if unit_enabled "$unit"; then run systemctl disable "$unit" >&2 || return 1; fi
  done
  stop_units "$@"
}
