#!/usr/bin/env bash
# Verify a runtime host through its real endpoint (DESIGN.md, Verification):
#   1. preflight per wanted runtime (Kata: KVM, CPU flags, vhost modules,
#      `kata-runtime check`; gVisor: runsc present);
#   2. the mTLS endpoint accepts the verify client and refuses a client
#      without a certificate (both halves, so the refusal is not vacuous);
#   3. Docker's default runtime and registered runtimes are the expected ones;
#      Docker runs the chosen runsc, and on which network stack (gVisor's
#      own, or the host kernel's only with gvisor.allowHostNetworkStack);
#      the daemon runs hardened (live-restore, rotated logs, root-only socket,
#      no TCP listener but the mutual-TLS endpoint);
#   4. with each runtime, `uname -r` inside differs from the host kernel;
#   5. per runtime, on a network of its own with a peer container of the same
#      runtime: first the positive controls (the probe container reaches the
#      peer, and VERIFY_OUTSIDE, an internet address, unless it is "none"),
#      so a sandbox without a working network cannot pass what follows; then
#      the metadata service and the host's own private address (endpoint and
#      SSH ports) are unreachable; a target the host itself cannot reach is
#      recorded as skipped, never as passed. Whether the peer's name resolves
#      (Docker's embedded DNS) is measured and reported, not required;
#   6. the endpoint policy: dockerd runs with the authorization plugin, and
#      through the endpoint it refuses what weakens the sandbox (runc with
#      --privileged, host network, a bind mount of /, a create without
#      limits) with the policy's message (the allowed sandboxed runs are
#      every other check: the verify client has the consumers' policy);
#   7. limits, per runtime: a bounded fork bomb stops at the PID limit and a
#      memory hog stops at its memory limit (the effect, read from inside:
#      how many processes started, how much memory it held), and the host
#      still answers;
#   8. cold start: median of COLD_START_RUNS `docker run --rm IMAGE true`;
#   9. containerd directly, past Docker: `ctr run --cni` (Debian's ctr, on
#      every host) with runc and each sandbox runtime (runsc through the runc
#      shim's --runc-binary, Kata through its shim), and the same through
#      nerdctl (runsc through the release's shim) unless VERIFY_NERDCTL is
#      false: a sandbox's own kernel, then 5.'s positive control (a peer on
#      the same CNI bridge, the outside address) and blocked targets.
# One line per check on stderr; the first failure stops the run with its own
# exit code. The report (docs/host-contract.md) is ALWAYS printed on stdout.
#
# Input: FR_HOST, ISOLATION, KATA_HYPERVISOR, GVISOR_RUNSC, GVISOR_ALLOW_HOST_NETWORK,
# PRIVATE_ADDRESS, ENDPOINT_PORT,
# VERIFY_IMAGE, VERIFY_IMAGE_ARCHIVE, COLD_START_RUNS, SSH_PORT (default 22),
# VERIFY_OUTSIDE ("ADDR PORT" or "none"), VERIFY_NERDCTL (true|false, default true),
# LIMIT_MAX_MILLICPUS (the stack's CPU maximum; the verify containers ask
# for no more);
# the metadata address and the other shared facts from the contract; on stdin the CA certificate, the verify-client
# certificate and key (PEM, in that order), kept in a private temporary
# directory removed on exit.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly REPORT_SCHEMA=$FR_VERIFY_SCHEMA
readonly BUSYBOX_IMAGE=$FR_BUSYBOX_VERIFY_IMAGE
readonly BUSYBOX_APPLETS=(sh uname wget nc true sleep awk)
FR_BUSYBOX=${FR_BUSYBOX:-/usr/bin/busybox}
FR_DOCKER_SOCKET=${FR_DOCKER_SOCKET:-/run/docker.sock}
# Exit codes, one per check family (0 = verified).
readonly EXIT_INPUTS=2
readonly EXIT_PREFLIGHT=10
readonly EXIT_ENDPOINT=11
readonly EXIT_RUNTIMES=12
readonly EXIT_IMAGE=13
readonly EXIT_KERNEL=14
readonly EXIT_ISOLATION=15
readonly EXIT_COLD_START=16
readonly EXIT_POLICY=17
readonly EXIT_LIMITS=18
readonly EXIT_CONTAINERD=19
# Bounds: a sandbox that hangs must not hang `pulumi up`.
readonly DOCKER_RUN_TIMEOUT=300 # seconds for one `docker run` (TCG guests are slow)
readonly PROBE_TIMEOUT=5        # seconds for one TCP connect probe
# The limit checks: the bomb tries to start this many times the PID limit
# (sleepers, so the test is bounded even where the limit would not hold);
# the hog tries to hold this many times the memory limit.
readonly BOMB_FACTOR=2
readonly HOG_FACTOR=2

CURRENT_CHECK=inputs
FAILED_CHECK=""
FAILURE_REASON=""
PASSED=false
HOST_KERNEL=$(uname -r)
DEFAULT_RUNTIME=""
DOCKER_VERSION=""
# The runsc this host runs (lib.sh's runsc_path), set when gVisor is wanted.
RUNSC=""
WANTED=()
CERTS=""
# NETWORK[rt]: the runtime's network (the contract's names: vm, sandbox, host);
# USER_NETWORK_DNS[rt]: whether Docker's embedded DNS answered a container.
declare -A GUEST_KERNEL=() COLD_MEDIAN=() NETWORK=() USER_NETWORK_DNS=()
CHECK_NAMES=()
CHECK_STATUS=()
CHECK_DETAIL=()

# ---------------------------------------------------------------- check bookkeeping

record_check() { CHECK_NAMES+=("$1"); CHECK_STATUS+=("$2"); CHECK_DETAIL+=("$(one_line "$3")"); }

# pass_check NAME DESCRIPTION DETAIL
pass_check() {
  record_check "$1" passed "$3"
  info "checking $2... passed ($3)"
}

# skip_check NAME DESCRIPTION REASON
skip_check() {
  record_check "$1" skipped "$3"
  info "checking $2... skipped: $3"
}

# fail_check NAME DESCRIPTION EXIT_CODE EXPECTED FOUND TODO
fail_check() {
  local name=$1 description=$2 code=$3 expected=$4 found=$5 todo=$6
  FAILED_CHECK=$name
  record_check "$name" failed "expected $expected; found $found"
  info "checking $description... FAILED"
  fatal "$expected" "$found" "$todo" "$code"
}

# ---------------------------------------------------------------- report

upstream_version() { sed -E 's/^[0-9]+://; s/[+~].*$//' <<<"$1"; }

# version_of CMD...: the first token of CMD's output that looks like a version.
# (Not `CMD | head`: under pipefail CMD's SIGPIPE would lose the version.)
# Debian's gVisor is versioned 0.0~<date>.<n>: reported as release-<date>.<n>.
version_of() {
  local out
  out=$("$@" 2>/dev/null) || return 0
  out=$(head -n1 <<<"$out")
  out=$(grep -oE '(release-)?[0-9]+\.[0-9]+(\.[0-9]+)?([.~+-][0-9A-Za-z.~+-]*)?' <<<"$out" | head -n1) || true
  if [[ "$out" =~ ^0\.0~([0-9]{8}\.[0-9]+) ]]; then
    printf 'release-%s' "${BASH_REMATCH[1]}"
    return 0
  fi
  upstream_version "$out"
}

collect_versions() {
  local kata="" runsc=""
  if kata_installed; then kata=$(catalog_field kata version 2>/dev/null || true); fi
  if [[ -n "$RUNSC" ]]; then runsc=$(version_of "$RUNSC" --version); fi
  printf '{"docker": %s, "containerd": %s, "runc": %s, "runsc": %s, "kata": %s, "nerdctl": %s}' \
    "$(json_string_or_null "$DOCKER_VERSION")" \
    "$(json_string_or_null "$(version_of containerd --version)")" \
    "$(json_string_or_null "$(version_of runc --version)")" \
    "$(json_string_or_null "$runsc")" \
    "$(json_string_or_null "$kata")" \
    "$(json_string_or_null "$(version_of "$FR_BIN_DIR/nerdctl" --version)")"
}

runtime_json() {
  local rt=$1 shim isolation hypervisor="" cold="null"
  case "$rt" in
    kata) shim="$FR_KATA_DIR/bin/containerd-shim-kata-v2" isolation=vm hypervisor=${KATA_HYPERVISOR:-} ;;
    *) shim=$RUNSC isolation=sandbox ;;
  esac
  if [[ -n "${COLD_MEDIAN[$rt]:-}" ]]; then
    cold=$(printf '{"median": %s, "runs": %s}' "${COLD_MEDIAN[$rt]}" "$COLD_START_RUNS")
  fi
  printf '{"name": %s, "shim": %s, "isolation": %s, "network": %s, "hypervisor": %s, "guestKernel": %s, "coldStartMs": %s, "userNetworkDns": %s}' \
    "$(json_string "$rt")" "$(json_string_or_null "$shim")" "$(json_string "$isolation")" \
    "$(json_string_or_null "${NETWORK[$rt]:-}")" \
    "$(json_string_or_null "$hypervisor")" "$(json_string_or_null "${GUEST_KERNEL[$rt]:-}")" "$cold" \
    "${USER_NETWORK_DNS[$rt]:-null}"
}

print_report() {
  local i first=1 rt runtimes_json="" checks_json=""
  for rt in "${WANTED[@]}"; do
    ((first)) || runtimes_json+=", "
    first=0
    runtimes_json+=$(runtime_json "$rt")
  done
  first=1
  for i in "${!CHECK_NAMES[@]}"; do
    ((first)) || checks_json+=", "
    first=0
    checks_json+=$(printf '{"name": %s, "status": %s, "passed": %s, "detail": %s}' \
      "$(json_string "${CHECK_NAMES[i]}")" "$(json_string "${CHECK_STATUS[i]}")" \
      "$([[ "${CHECK_STATUS[i]}" == passed ]] && echo true || echo false)" \
      "$(json_string "${CHECK_DETAIL[i]}")")
  done
  printf '{"schema": %s, "host": %s, "passed": %s, "failedCheck": %s, "reason": %s, "hostKernel": %s, "defaultRuntime": %s, "runtimes": [%s], "versions": %s, "checks": [%s]}\n' \
    "$(json_string "$REPORT_SCHEMA")" "$(json_string "$FR_HOST")" "$PASSED" \
    "$(json_string_or_null "$FAILED_CHECK")" "$(json_string_or_null "$FAILURE_REASON")" \
    "$(json_string "$HOST_KERNEL")" "$(json_string_or_null "$DEFAULT_RUNTIME")" \
    "$runtimes_json" "$(collect_versions)" "$checks_json"
}

# Exit hook: whatever happened, stdout gets the report.
finish_report() {
  if [[ "$PASSED" != true ]]; then
    FAILED_CHECK=${FAILED_CHECK:-$CURRENT_CHECK}
    FAILURE_REASON=${FR_FATAL_MESSAGE:-"the script stopped during check '$CURRENT_CHECK' (exit $FR_EXIT_STATUS); see stderr"}
  fi
  print_report
}

# ---------------------------------------------------------------- inputs

read_inputs() {
  local work
  CURRENT_CHECK=inputs
  require_var PRIVATE_ADDRESS ENDPOINT_PORT VERIFY_IMAGE COLD_START_RUNS LIMIT_MAX_MILLICPUS VERIFY_OUTSIDE
  if [[ "$VERIFY_OUTSIDE" != none ]] && ! [[ "$VERIFY_OUTSIDE" =~ ^[^[:space:]]+\ [0-9]+$ ]]; then
    fatal "VERIFY_OUTSIDE to be 'ADDR PORT' or 'none'" "'$VERIFY_OUTSIDE'" \
      "set functions-runtime:verify.outsideProbe (ADDR:PORT, or none)" "$EXIT_INPUTS"
  fi
  [[ "$LIMIT_MAX_MILLICPUS" =~ ^[1-9][0-9]*$ ]] ||
    fatal "LIMIT_MAX_MILLICPUS to be a positive whole number" "'$LIMIT_MAX_MILLICPUS'" \
      "set functions-runtime:endpoint.limits.maxCpus" "$EXIT_INPUTS"
  set_limit_opts
  require_isolation
  require_kata_hypervisor
  require_gvisor_runsc
  require_gvisor_allow_host_network
  if ! [[ "$COLD_START_RUNS" =~ ^[0-9]+$ ]] || ((COLD_START_RUNS < FR_COLD_START_RUNS_MIN ||
    COLD_START_RUNS > FR_COLD_START_RUNS_MAX || COLD_START_RUNS % 2 == 0)); then
    fatal "COLD_START_RUNS to be an odd number from $FR_COLD_START_RUNS_MIN to $FR_COLD_START_RUNS_MAX" \
      "'$COLD_START_RUNS'" "set functions-runtime:verify.coldStartRuns to an odd number in that range" "$EXIT_INPUTS"
  fi
  SSH_PORT=${SSH_PORT:-22}
  VERIFY_NERDCTL=${VERIFY_NERDCTL:-true}
  [[ "$VERIFY_NERDCTL" == true || "$VERIFY_NERDCTL" == false ]] ||
    fatal "VERIFY_NERDCTL to be true or false" "'$VERIFY_NERDCTL'" "set functions-runtime:verify.nerdctl to true or false" "$EXIT_INPUTS"
  make_secret_dir work
  CERTS="$work/certs"
  read_pem_blocks "$CERTS" ca.pem cert.pem key.pem
  require_pem_kinds "$CERTS" ca.pem:certificate cert.pem:certificate key.pem:private-key
  # The docker CLI must not read or write root's ~/.docker.
  export DOCKER_CONFIG="$work/docker-config"
  mkdir -p "$DOCKER_CONFIG"
}

# ---------------------------------------------------------------- helpers

endpoint_host() {
  if [[ "$PRIVATE_ADDRESS" == *:* ]]; then printf '[%s]' "$PRIVATE_ADDRESS"; else printf '%s' "$PRIVATE_ADDRESS"; fi
}

# set_endpoint_args: ENDPOINT_ARGS, the docker CLI's flags for the endpoint
# with the verify client's certificate (the one place that spells them).
ENDPOINT_ARGS=()
set_endpoint_args() {
  ENDPOINT_ARGS=(--tlsverify --tlscacert "$CERTS/ca.pem" --tlscert "$CERTS/cert.pem" --tlskey "$CERTS/key.pem"
    -H "tcp://$(endpoint_host):$ENDPOINT_PORT")
}

endpoint_docker() {
  set_endpoint_args
  docker "${ENDPOINT_ARGS[@]}" "$@"
}

# local_docker ARGS...: root on the local socket, which the endpoint policy
# does not restrict: image loads and imports go this way.
local_docker() { docker -H "unix://$FR_DOCKER_SOCKET" "$@"; }

# verify_cpus: the CPUs each verify container asks for (the contract's
# figure, or the stack's maximum when that is lower), as docker's --cpus.
verify_cpus() {
  local milli=$FR_VERIFY_MILLICPUS
  if ((LIMIT_MAX_MILLICPUS < milli)); then milli=$LIMIT_MAX_MILLICPUS; fi
  printf '%d.%03d' $((milli / 1000)) $((milli % 1000))
}

# LIMIT_OPTS: every container through the endpoint carries limits (the
# policy refuses one without), within the stack's maxima, and the owner
# label with this verify client's common name (the policy lets a client
# touch only what it created).
owner_label() { printf '%s=%s%s' "$FR_AUTHZ_OWNER_LABEL" "$FR_VERIFY_CLIENT_NAME_PREFIX" "$FR_HOST"; }
LIMIT_OPTS=()
set_limit_opts() {
  LIMIT_OPTS=(--memory "${FR_VERIFY_MEMORY_MIB}m" --pids-limit "$FR_VERIFY_PIDS" --cpus "$(verify_cpus)"
    --label "$(owner_label)")
}

# run_in RUNTIME ARGS...: one container through the endpoint, bounded in
# time; RUN_OPTS (an array, default empty) are docker-run options placed
# before the image (ARGS go after it, as the container's command).
RUN_OPTS=()
run_in() {
  local rt=$1
  shift
  set_endpoint_args
  # `timeout` runs programs, not shell functions: docker itself, with the flags.
  timeout "$DOCKER_RUN_TIMEOUT" docker "${ENDPOINT_ARGS[@]}" \
    run --rm --runtime "$rt" "${LIMIT_OPTS[@]}" "${RUN_OPTS[@]}" "$VERIFY_IMAGE" "$@"
}

# host_reaches ADDR PORT: the host itself can open a TCP connection.
host_reaches() {
  # shellcheck disable=SC2016 # $1 and $2 are expanded by the inner bash
  timeout "$PROBE_TIMEOUT" bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# container_probes RUNTIME "ADDR PORT"...: ONE container probes every target,
# in parallel (a sandbox start costs seconds, more under emulation, and a
# dropped probe waits PROBE_TIMEOUT) and prints a line
# "ADDR PORT reachable|unreachable" per target; anything else it printed
# (an error from docker run) is passed on for probe_result to report.
# The probe loop a container runs: $0 is the timeout, each argument a target.
# shellcheck disable=SC2016 # expanded by the container's shell
readonly PROBE_LOOP='w=$0; for t in "$@"; do
  (if nc -w "$w" "${t% *}" "${t#* }" -e true; then echo "$t reachable"; else echo "$t unreachable"; fi) &
done; wait'

container_probes() {
  local rt=$1
  shift
  run_in "$rt" sh -c "$PROBE_LOOP" "$PROBE_TIMEOUT" "$@" 2>&1 || true
}

# probe_result PROBE_OUTPUT ADDR PORT: "reachable", "unreachable" or
# "probe failed: ..." for one target.
probe_result() {
  local out=$1 target="$2 $3"
  if grep -Fxq "$target unreachable" <<<"$out"; then
    echo unreachable
  elif grep -Fxq "$target reachable" <<<"$out"; then
    echo reachable
  else
    echo "probe failed: $(one_line "$out")"
  fi
}

# rerun_probe_hint LABEL: how an operator runs the probe container by hand
# (LABEL is a Docker runtime, or CLIENT-RUNTIME for containerd's clients).
rerun_probe_hint() {
  case "$1" in
    ctr-*) echo "run 'ctr run --rm --cni --rootfs DIR id nc' on the host (DIR: a busybox-static rootfs) and read journalctl -u containerd" ;;
    nerdctl-*) echo "run 'nerdctl run --rm --network $FR_CNI_NETWORK $VERIFY_IMAGE nc' on the host" ;;
    *) echo "run 'docker run --rm --runtime $1 $VERIFY_IMAGE nc' on the host" ;;
  esac
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

module_loaded() { [[ -d "/sys/module/$1" ]]; }

# ---------------------------------------------------------------- checks

check_preflight_kata() {
  local name=preflight-kata desc="Kata preflight (KVM, CPU flags, vhost modules, kata-runtime check)" out module shipped found
  CURRENT_CHECK=$name
  if ! has_kvm; then
    fail_check "$name" "$desc" "$EXIT_PREFLIGHT" "KVM for Kata Containers (functions-runtime:isolation is $ISOLATION)" \
      "$(no_kvm_found)" "$FR_NO_KVM_TODO"
  fi
  kata_installed ||
    fail_check "$name" "$desc" "$EXIT_PREFLIGHT" "Kata $(catalog_field kata version) installed in $FR_KATA_DIR" \
      "no matching install marker or shim" "re-run the install step (scripts/install_runtime.sh)"
  for module in $FR_KERNEL_MODULES; do
    module_loaded "$module" ||
      fail_check "$name" "$desc" "$EXIT_PREFLIGHT" "kernel module $module loaded" "it is not" \
        "run 'modprobe $module' on the host and check base/modules.conf"
  done
  # The configuration in force must be the chosen hypervisor's, and pass.
  shipped=$(kata_shipped_config)
  if ! cmp -s "$FR_KATA_CONFIG" "$shipped"; then
    if [[ ! -r "$shipped" ]]; then
      found="no $shipped in the Kata install"
    elif [[ ! -e "$FR_KATA_CONFIG" ]]; then
      found="no such file"
    else
      found="a different file"
    fi
    fail_check "$name" "$desc" "$EXIT_PREFLIGHT" \
      "the Kata configuration in force ($FR_KATA_CONFIG) to be the $KATA_HYPERVISOR one ($shipped)" "$found" \
      "re-run the configure step (pulumi up); it writes the chosen hypervisor's configuration"
  fi
  out=$(kata_check "$FR_KATA_CONFIG") ||
    fail_check "$name" "$desc" "$EXIT_PREFLIGHT" \
      "'kata-runtime check' to pass with the $KATA_HYPERVISOR configuration in force ($FR_KATA_CONFIG)" "$(tail -n3 <<<"$out")" \
      "run '$FR_BIN_DIR/kata-runtime --config $FR_KATA_CONFIG check --verbose' on the host"
  pass_check "$name" "$desc" "KVM usable, vhost modules loaded, kata-runtime check passed with the $KATA_HYPERVISOR configuration"
}

check_preflight_runsc() {
  local name=preflight-runsc desc="gVisor preflight (runsc present)" from
  CURRENT_CHECK=$name
  RUNSC=$(runsc_path)
  [[ -x "$RUNSC" ]] ||
    fail_check "$name" "$desc" "$EXIT_PREFLIGHT" "an executable $RUNSC (functions-runtime:gvisor.runsc is $GVISOR_RUNSC)" \
      "none" "re-run the install step (scripts/install_runtime.sh)"
  if [[ "$GVISOR_RUNSC" == debian ]]; then
    from="Debian's runsc package, the fallback gvisor.runsc: debian chose"
  else
    from="gVisor's pinned release $(catalog_field runsc version)"
  fi
  pass_check "$name" "$desc" "$RUNSC: $(runsc_version "$RUNSC"); $from"
}

check_endpoint_accepts_client_cert() {
  local name=endpoint-accepts-client-cert desc="endpoint accepts the verify client certificate" out
  CURRENT_CHECK=$name
  out=$(curl -fsS --max-time 15 --cacert "$CERTS/ca.pem" --cert "$CERTS/cert.pem" --key "$CERTS/key.pem" \
    "https://$(endpoint_host):$ENDPOINT_PORT/version" 2>&1) ||
    fail_check "$name" "$desc" "$EXIT_ENDPOINT" \
      "the Docker API at https://$(endpoint_host):$ENDPOINT_PORT to answer a client with the verify certificate" \
      "$out" "check dockerd is running (journalctl -u docker) and the server certificate names $PRIVATE_ADDRESS"
  DOCKER_VERSION=$(grep -oE '"Version": *"[^"]*"' <<<"$out" | head -n1 | sed -E 's/.*"([^"]*)"$/\1/') || true
  DOCKER_VERSION=$(upstream_version "$DOCKER_VERSION")
  pass_check "$name" "$desc" "GET /version answered over mutual TLS (Docker ${DOCKER_VERSION:-unknown})"
}

check_endpoint_refuses_no_cert() {
  local name=endpoint-refuses-no-cert desc="endpoint refuses clients without a certificate" out
  CURRENT_CHECK=$name
  if out=$(curl -fsS --max-time 15 --cacert "$CERTS/ca.pem" "https://$(endpoint_host):$ENDPOINT_PORT/version" 2>&1); then
    fail_check "$name" "$desc" "$EXIT_ENDPOINT" "a TLS client without a certificate to be refused" \
      "GET /version answered without a client certificate" "set tlsverify true in /etc/docker/daemon.json (configure step)"
  fi
  pass_check "$name" "$desc" "refused: $out"
}

check_registered_runtimes() {
  local name=default-runtime desc="Docker's default runtime and registered runtimes" info_out default rt
  CURRENT_CHECK=$name
  # shellcheck disable=SC2016 # a Go template, not shell
  info_out=$(endpoint_docker info --format '{{.DefaultRuntime}} {{range $k, $v := .Runtimes}}{{$k}} {{end}}' 2>&1) ||
    fail_check "$name" "$desc" "$EXIT_RUNTIMES" "docker info through the endpoint" "$info_out" "check dockerd (journalctl -u docker)"
  default=${info_out%% *}
  DEFAULT_RUNTIME=$default
  [[ "$default" == "${WANTED[0]}" ]] ||
    fail_check "$name" "$desc" "$EXIT_RUNTIMES" "default runtime ${WANTED[0]}" "$default" "re-run the configure step"
  for rt in "${WANTED[@]}"; do
    [[ " ${info_out#* } " == *" $rt "* ]] ||
      fail_check "$name" "$desc" "$EXIT_RUNTIMES" "runtime $rt registered with Docker" "runtimes: ${info_out#* }" "re-run the configure step"
  done
  pass_check "$name" "$desc" "default $default; registered: ${info_out#* }"
}

# check_runsc_network: Docker's runsc runtime is the chosen runsc, and the
# network it runs on, read from the running daemon: gVisor's own netstack,
# or (runsc --network=host) the host kernel's, accepted only with
# gvisor.allowHostNetworkStack. Sets NETWORK[runsc].
check_runsc_network() {
  local name=runtime-runsc-network desc="Docker runs the chosen runsc on gVisor's own network stack" out path args arg network=""
  CURRENT_CHECK=$name
  # shellcheck disable=SC2016 # a Go template, not shell
  out=$(endpoint_docker info --format '{{range $k, $v := .Runtimes}}{{if eq $k "runsc"}}{{$v.Path}}|{{range $v.Args}}{{.}} {{end}}{{end}}{{end}}' 2>&1) ||
    fail_check "$name" "$desc" "$EXIT_RUNTIMES" "docker info through the endpoint" "$out" "check dockerd (journalctl -u docker)"
  path=${out%%|*}
  args=${out#*|}
  args=${args% }
  [[ "$out" == *"|"* && "$path" == "$RUNSC" ]] ||
    fail_check "$name" "$desc" "$EXIT_RUNTIMES" "Docker's runsc runtime at $RUNSC (functions-runtime:gvisor.runsc is $GVISOR_RUNSC)" \
      "'$(one_line "$path")'" "re-run the configure step (it writes /etc/docker/daemon.json)"
  for arg in $args; do
    case "$arg" in
      --network=host) network=$FR_NETWORK_HOST ;;
      --network=sandbox) network=$FR_NETWORK_SANDBOX ;;
      --network=*)
        fail_check "$name" "$desc" "$EXIT_RUNTIMES" "runsc on gVisor's own network stack, or the host's with the opt-in" \
          "runtime argument $arg" "re-run the configure step (it writes /etc/docker/daemon.json)" ;;
    esac
  done
  network=${network:-$FR_NETWORK_SANDBOX}
  if [[ "$network" == "$FR_NETWORK_HOST" && "$GVISOR_ALLOW_HOST_NETWORK" != true ]]; then
    fail_check "$name" "$desc" "$EXIT_RUNTIMES" "gVisor on its own network stack (functions-runtime:isolation is $ISOLATION)" \
      "Docker runs runsc with --network=host: socket calls reach the host kernel" \
      "re-run the configure step; or accept it with functions-runtime:gvisor.allowHostNetworkStack: true"
  fi
  NETWORK[runsc]=$network
  if [[ "$network" == "$FR_NETWORK_HOST" ]]; then
    warn "gVisor runs with --network=host (functions-runtime:gvisor.allowHostNetworkStack): socket calls reach the host kernel"
  fi
  pass_check "$name" "$desc" "runsc $path, arguments: ${args:-none}; network $network"
}

# dockerd_tcp_listeners: "ADDR:PORT" per TCP socket dockerd listens on.
dockerd_tcp_listeners() { ss -ltnpH 2>/dev/null | awk '/"dockerd"/ { print $4 }' | sort -u; }

socket_owner_and_mode() { stat -L -c '%a %U %G' "$FR_DOCKER_SOCKET" 2>&1; }

check_daemon_hardening() {
  local name=daemon-hardening desc="dockerd: live-restore, log rotation, root-only socket, TLS-only TCP" out listeners
  CURRENT_CHECK=$name
  # shellcheck disable=SC2016 # a Go template, not shell
  out=$(endpoint_docker info --format '{{.LiveRestoreEnabled}} {{.LoggingDriver}}' 2>&1) ||
    fail_check "$name" "$desc" "$EXIT_RUNTIMES" "docker info through the endpoint" "$out" "check dockerd (journalctl -u docker)"
  [[ "$out" == "true json-file" ]] ||
    fail_check "$name" "$desc" "$EXIT_RUNTIMES" "live-restore on and the json-file log driver (rotated by log-opts)" \
      "LiveRestoreEnabled and LoggingDriver: $out" "re-run the configure step (it writes /etc/docker/daemon.json)"
  out=$(socket_owner_and_mode)
  [[ "$out" == "600 root root" ]] ||
    fail_check "$name" "$desc" "$EXIT_RUNTIMES" "$FR_DOCKER_SOCKET mode 600, owned by root:root" "$out" \
      "re-run the configure step (docker.socket drop-in), then 'systemctl restart docker.socket'"
  listeners=$(dockerd_tcp_listeners)
  [[ "$listeners" == "$PRIVATE_ADDRESS:$ENDPOINT_PORT" ]] ||
    fail_check "$name" "$desc" "$EXIT_RUNTIMES" "dockerd's only TCP listener to be $PRIVATE_ADDRESS:$ENDPOINT_PORT (mutual TLS)" \
      "listeners: $(one_line "${listeners:-none}")" "remove other -H/hosts entries from dockerd's unit or daemon.json"
  pass_check "$name" "$desc" "live-restore on, json-file logs, socket 600 root:root, TCP only on $PRIVATE_ADDRESS:$ENDPOINT_PORT"
}

# build_busybox_image WORK: import a busybox rootfs staged in WORK.
build_busybox_image() {
  local work=$1 stage applet
  stage="$work/rootfs"
  mkdir -p "$stage/bin"
  cp "$FR_BUSYBOX" "$stage/bin/busybox"
  for applet in "${BUSYBOX_APPLETS[@]}"; do ln -s busybox "$stage/bin/$applet"; done
  tar --owner=0 --group=0 --numeric-owner --mtime=@0 --sort=name -C "$stage" -cf "$work/rootfs.tar" .
  local_docker import --change 'CMD ["/bin/sh"]' "$work/rootfs.tar" "$BUSYBOX_IMAGE" >/dev/null
}

# image_is_immutable REF: an image ID or a digest-pinned reference names
# exactly one image, so finding it present means no archive need be loaded.
# A tag could point at an older image than the archive holds.
image_is_immutable() { [[ "$1" == sha256:* || "$1" == *@sha256:* ]]; }

check_verify_image() {
  local name=verify-image desc="verify image $VERIFY_IMAGE present" out how work
  CURRENT_CHECK=$name
  if [[ -n "${VERIFY_IMAGE_ARCHIVE:-}" ]] && image_is_immutable "$VERIFY_IMAGE" &&
    endpoint_docker image inspect "$VERIFY_IMAGE" >/dev/null 2>&1; then
    pass_check "$name" "$desc" "already present (the archive was loaded before)"
    return 0
  fi
  if [[ -n "${VERIFY_IMAGE_ARCHIVE:-}" ]]; then
    [[ -r "$VERIFY_IMAGE_ARCHIVE" ]] ||
      fail_check "$name" "$desc" "$EXIT_IMAGE" "the image archive $VERIFY_IMAGE_ARCHIVE" "no readable file" "upload it or leave VERIFY_IMAGE_ARCHIVE empty"
    out=$(local_docker load -i "$VERIFY_IMAGE_ARCHIVE" 2>&1) ||
      fail_check "$name" "$desc" "$EXIT_IMAGE" "docker load of $VERIFY_IMAGE_ARCHIVE" "$out" "check the archive is a docker save output"
  fi
  if endpoint_docker image inspect "$VERIFY_IMAGE" >/dev/null 2>&1; then
    how="already present"
  elif [[ "$VERIFY_IMAGE" == "$BUSYBOX_IMAGE" ]]; then
    [[ -x "$FR_BUSYBOX" ]] ||
      fail_check "$name" "$desc" "$EXIT_IMAGE" "Debian's static busybox at $FR_BUSYBOX" "none" "install busybox-static (base/packages.txt)"
    make_work_dir work
    out=$(build_busybox_image "$work" 2>&1) ||
      fail_check "$name" "$desc" "$EXIT_IMAGE" "docker import of a busybox rootfs" "$out" "check dockerd (journalctl -u docker)"
    how="built from $FR_BUSYBOX"
  elif [[ "$VERIFY_IMAGE" != *@sha256:* ]]; then
    fail_check "$name" "$desc" "$EXIT_IMAGE" "VERIFY_IMAGE pinned by digest (name@sha256:...)" "'$VERIFY_IMAGE'" \
      "pin the verify image by digest or use $BUSYBOX_IMAGE"
  else
    out=$(endpoint_docker pull "$VERIFY_IMAGE" 2>&1) ||
      fail_check "$name" "$desc" "$EXIT_IMAGE" "docker pull $VERIFY_IMAGE" "$(tail -n1 <<<"$out")" "check the host's registry access or use VERIFY_IMAGE_ARCHIVE"
    how="pulled"
  fi
  pass_check "$name" "$desc" "$how"
}

check_runtime_kernel() {
  local rt=$1 name="runtime-$1-kernel" desc="$1 runs the verify image with its own kernel" out
  CURRENT_CHECK=$name
  # No network needed to read the kernel (before: "--network none" went
  # after the image and became the container's command; the hostlab found it).
  out=$(RUN_OPTS=(--network none) && run_in "$rt" uname -r 2>&1) ||
    fail_check "$name" "$desc" "$EXIT_KERNEL" "docker run --runtime $rt to succeed" "$(tail -n2 <<<"$out")" \
      "run 'docker run --rm --runtime $rt $VERIFY_IMAGE uname -r' on the host and read journalctl -u docker"
  out=$(tail -n1 <<<"$out")
  [[ -n "$out" && "$out" != "$HOST_KERNEL" ]] ||
    fail_check "$name" "$desc" "$EXIT_KERNEL" "a guest kernel different from the host's ($HOST_KERNEL)" "'$out'" \
      "the container is not sandboxed: check /etc/docker/daemon.json runtimes"
  GUEST_KERNEL[$rt]=$out
  pass_check "$name" "$desc" "guest kernel $out, host kernel $HOST_KERNEL"
}

# check_unreachable RUNTIME TARGET_NAME ADDR PORT HOST_REACHES PROBE_OUTPUT
check_unreachable() {
  local rt=$1 target=$2 addr=$3 port=$4 host_reaches_it=$5 probe_out=$6 name desc result
  name="isolation-$rt-$target"
  desc="$addr:$port ($target) is unreachable from a $rt container"
  CURRENT_CHECK=$name
  if [[ "$host_reaches_it" != yes ]]; then
    skip_check "$name" "$desc" "the host itself cannot reach $addr:$port, so the probe would prove nothing"
    return 0
  fi
  result=$(probe_result "$probe_out" "$addr" "$port")
  case "$result" in
    unreachable) pass_check "$name" "$desc" "host reaches it, the container does not" ;;
    reachable)
      fail_check "$name" "$desc" "$EXIT_ISOLATION" "$addr:$port unreachable from inside a $rt container" "it is reachable" \
        "re-run the firewall step and check 'nft list table inet functions_runtime'" ;;
    *)
      fail_check "$name" "$desc" "$EXIT_ISOLATION" "the probe container to run" "$result" "$(rerun_probe_hint "$rt")" ;;
  esac
}

# The verify run's own network and peer per runtime: names that say what
# they are, removed as root whatever happens.
readonly VERIFY_NETWORK_PREFIX=functions-runtime-verify
readonly PEER_PORT=8080
# The peer answers every connection on PEER_PORT and closes it.
# shellcheck disable=SC2016 # expanded by the container's shell
readonly PEER_SERVER='while true; do nc -l -p "$0" -e true; done'

remove_peer() { local_docker rm -f "$1" >/dev/null 2>&1 || true; local_docker network rm "$2" >/dev/null 2>&1 || true; }

# start_peer RUNTIME: a network for this runtime's probes and a peer on it;
# sets PEER_NAME, PEER_NET and PEER_ADDR.
start_peer() {
  local rt=$1 out
  PEER_NET="$VERIFY_NETWORK_PREFIX-$rt"
  PEER_NAME="$VERIFY_NETWORK_PREFIX-peer-$rt"
  remove_peer "$PEER_NAME" "$PEER_NET" # a run that was killed may have left them
  add_exit_hook "remove_peer '$PEER_NAME' '$PEER_NET'"
  out=$(endpoint_docker network create "$PEER_NET" 2>&1) ||
    fail_check "reach-$rt-peer" "a $rt container reaches a peer on its network" "$EXIT_ISOLATION" \
      "docker network create through the endpoint" "$(tail -n1 <<<"$out")" "read journalctl -u docker"
  out=$(RUN_OPTS=(-d --name "$PEER_NAME" --network "$PEER_NET") && run_in "$rt" sh -c "$PEER_SERVER" "$PEER_PORT" 2>&1) ||
    fail_check "reach-$rt-peer" "a $rt container reaches a peer on its network" "$EXIT_ISOLATION" \
      "a peer container on $PEER_NET" "$(tail -n1 <<<"$out")" "read journalctl -u docker"
  # shellcheck disable=SC2016 # a Go template, not shell
  PEER_ADDR=$(local_docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$PEER_NAME" 2>/dev/null || true)
  [[ -n "$PEER_ADDR" ]] ||
    fail_check "reach-$rt-peer" "a $rt container reaches a peer on its network" "$EXIT_ISOLATION" \
      "the peer to have an address on $PEER_NET" "none" "read journalctl -u docker"
}

# check_reachable RUNTIME TARGET_NAME ADDR PORT PROBE_OUTPUT: a positive control.
check_reachable() {
  local rt=$1 target=$2 addr=$3 port=$4 probe_out=$5 name desc result
  name="reach-$rt-$target"
  desc="a $rt container reaches $addr:$port ($target)"
  CURRENT_CHECK=$name
  result=$(probe_result "$probe_out" "$addr" "$port")
  case "$result" in
    reachable) pass_check "$name" "$desc" "reachable: the sandbox's network works, so its isolation results count" ;;
    unreachable)
      fail_check "$name" "$desc" "$EXIT_ISOLATION" "$addr:$port reachable from a $rt container (a positive control)" \
        "it is not: the sandbox has no working network, and 'unreachable' below would prove nothing" \
        "check the runtime's networking (a Kata guest without eth0, runsc's network mode) and 'nft list ruleset'" ;;
    *)
      fail_check "$name" "$desc" "$EXIT_ISOLATION" "the probe container to run" "$result" "$(rerun_probe_hint "$rt")" ;;
  esac
}

# plan_probes: the blocked targets ("NAME ADDR PORT" in TARGETS), whether
# the host itself reaches each (HOST_REACHES), the ones worth probing
# ("ADDR PORT" in PROBED), and the outside positive control ("ADDR PORT"
# in OUTSIDE, empty when verify.outsideProbe is none).
TARGETS=()
HOST_REACHES=()
PROBED=()
OUTSIDE=()
plan_probes() {
  local spec target addr port
  TARGETS=("metadata $FR_METADATA_ADDRESS 80" "host-endpoint $PRIVATE_ADDRESS $ENDPOINT_PORT"
    "host-ssh $PRIVATE_ADDRESS $SSH_PORT")
  HOST_REACHES=()
  PROBED=()
  for spec in "${TARGETS[@]}"; do
    read -r target addr port <<<"$spec"
    if host_reaches "$addr" "$port"; then
      HOST_REACHES+=(yes)
      PROBED+=("$addr $port")
    else
      HOST_REACHES+=(no)
    fi
  done
  OUTSIDE=()
  if [[ "$VERIFY_OUTSIDE" != none ]]; then OUTSIDE=("$VERIFY_OUTSIDE"); fi
}

# judge_positive_controls LABEL PROBE_OUTPUT: the peer and the outside
# address were reached (check_reachable), or the outside one was not asked.
judge_positive_controls() {
  local label=$1 probe_out=$2 outside_addr outside_port
  check_reachable "$label" peer "$PEER_ADDR" "$PEER_PORT" "$probe_out"
  if ((${#OUTSIDE[@]})); then
    read -r outside_addr outside_port <<<"${OUTSIDE[0]}"
    check_reachable "$label" outside "$outside_addr" "$outside_port" "$probe_out"
  else
    skip_check "reach-$label-outside" "a $label container reaches an internet address" \
      "verify.outsideProbe is none: egress to the internet is not checked on this stack"
  fi
}

# judge_blocked_targets LABEL PROBE_OUTPUT: each of plan_probes' targets.
judge_blocked_targets() {
  local label=$1 probe_out=$2 spec target addr port i=0
  for spec in "${TARGETS[@]}"; do
    read -r target addr port <<<"$spec"
    check_unreachable "$label" "$target" "$addr" "$port" "${HOST_REACHES[i]}" "$probe_out"
    i=$((i + 1))
  done
}

# check_isolation RUNTIME: one probe container on the runtime's own network
# tries every target at once; the positive controls first.
check_isolation() {
  local rt=$1 probe_out
  plan_probes
  CURRENT_CHECK="reach-$rt-peer"
  start_peer "$rt"
  probe_out=$(RUN_OPTS=(--network "$PEER_NET") &&
    container_probes "$rt" "$PEER_ADDR $PEER_PORT" "$PEER_NAME $PEER_PORT" "${OUTSIDE[@]}" "${PROBED[@]}")
  judge_positive_controls "$rt" "$probe_out"
  if [[ "$(probe_result "$probe_out" "$PEER_NAME" "$PEER_PORT")" == reachable ]]; then
    USER_NETWORK_DNS[$rt]=true
  else
    USER_NETWORK_DNS[$rt]=false
    warn "a $rt container could not reach its peer by name on a user network (Docker's embedded DNS at 127.0.0.11 is not reachable from this sandbox's network stack); reported as userNetworkDns: false"
  fi
  judge_blocked_targets "$rt" "$probe_out"
  remove_peer "$PEER_NAME" "$PEER_NET"
}

# ---------------------------------------------------------------- containerd directly

# The operator's path past Docker (DESIGN.md, Verification, 5): containers
# that containerd runs for `ctr run --cni` and for nerdctl, on the CNI
# bridge configure owns, in a containerd namespace of verify's own (Docker's
# containers are in `moby`, nerdctl's in `default`). Each gets the kernel
# probe (sandbox runtimes) and the isolation probes with their positive
# control: a peer on the same network.
readonly CNI_PEER_WAIT=120 # seconds for the peer's address to appear
CTR_ROOTFS=""
PEER_PID=""

# containerd_runtime CLIENT RUNTIME: what CLIENT's --runtime (or ctr's
# --runc-binary, "runc-binary:PATH") names for RUNTIME on this host.
containerd_runtime() {
  case "$1:$2" in
    *:kata) echo "$FR_KATA_SHIM_RUNTIME" ;;
    *:runc) echo "$FR_RUNC_SHIM_RUNTIME" ;;
    ctr:runsc) echo "runc-binary:$RUNSC" ;; # the runc shim running runsc: every host has it
    nerdctl:runsc)
      # The release's shim; Debian's package ships none, so nerdctl runs its runsc binary.
      if [[ "$GVISOR_RUNSC" == release ]]; then echo "$FR_RUNSC_SHIM_RUNTIME"; else echo "$RUNSC"; fi ;;
  esac
}

# ctr_in RUNTIME ARGS...: `ctr run` in verify's namespace on the host's CNI
# network, with the rootfs built from busybox-static (ctr cannot see
# Docker's images); ARGS are ctr's container ID and the command, by its
# absolute path (without an image, the process has no PATH).
ctr_in() {
  local rt=$1 how
  shift
  how=$(containerd_runtime ctr "$rt")
  local runtime_args=(--runtime "$how")
  if [[ "$how" == runc-binary:* ]]; then runtime_args=(--runtime "$FR_RUNC_SHIM_RUNTIME" --runc-binary "${how#runc-binary:}"); fi
  timeout "$DOCKER_RUN_TIMEOUT" ctr --namespace "$FR_CONTAINERD_VERIFY_NAMESPACE" run --rm --cni \
    "${runtime_args[@]}" --rootfs "$CTR_ROOTFS" "$@"
}

nerdctl_cmd() { nerdctl --namespace "$FR_CONTAINERD_VERIFY_NAMESPACE" "$@"; }

# nerdctl_in RUNTIME ARGS...: `nerdctl run` of the verify image, as ctr_in.
NERDCTL_OPTS=()
nerdctl_in() {
  local rt=$1
  shift
  timeout "$DOCKER_RUN_TIMEOUT" nerdctl --namespace "$FR_CONTAINERD_VERIFY_NAMESPACE" run --rm \
    --runtime "$(containerd_runtime nerdctl "$rt")" --network "$FR_CNI_NETWORK" "${NERDCTL_OPTS[@]}" "$VERIFY_IMAGE" "$@"
}

# prepare_ctr_rootfs: busybox-static's applets in a directory ctr can run
# (never under /run: it is noexec on Debian).
prepare_ctr_rootfs() {
  local work applet
  make_work_dir work
  chmod 0711 "$work" # the sandbox's file server reaches the rootfs through it
  CTR_ROOTFS="$work/rootfs"
  mkdir -p "$CTR_ROOTFS/bin" "$CTR_ROOTFS/proc" "$CTR_ROOTFS/dev" "$CTR_ROOTFS/sys" "$CTR_ROOTFS/etc" "$CTR_ROOTFS/tmp"
  cp "$FR_BUSYBOX" "$CTR_ROOTFS/bin/busybox"
  for applet in "${BUSYBOX_APPLETS[@]}"; do ln -s busybox "$CTR_ROOTFS/bin/$applet"; done
}

# cni_address_of ID: the address host-local IPAM gave ctr's container ID, on
# whichever CNI network it joined (ctr takes the first in /etc/cni/net.d).
# IPAM's file for an address holds "<namespace>-<ID>\r\n<ifname>".
cni_address_of() {
  local file owner
  for file in /var/lib/cni/networks/*/*; do
    [[ -f "$file" ]] || continue
    owner=$(head -n1 "$file" 2>/dev/null | tr -d '\r')
    if [[ "$owner" == "$FR_CONTAINERD_VERIFY_NAMESPACE-$1" ]]; then
      basename "$file"
      return 0
    fi
  done
  return 1
}

# The probe every containerd container runs: its kernel, then PROBE_LOOP.
# shellcheck disable=SC2016 # expanded by the container's shell
readonly CONTAINERD_PROBE='echo "kernel $(uname -r)"; '"$PROBE_LOOP"

# remove_ctr_peer ID [JOB_PID]: stop a ctr container and wait for its
# `ctr run --rm` (the background job JOB_PID), which then releases its CNI
# address and removes it. The task's process is killed from the host:
# Debian's ctr 1.7 finds CNI plugins in /usr/lib/cni for `run`, but
# `task kill` looks in /opt/cni/bin and fails for a --cni container
# (measured on the guest) before it kills anything.
remove_ctr_peer() {
  local id=$1 job=${2:-} pid
  pid=$(ctr --namespace "$FR_CONTAINERD_VERIFY_NAMESPACE" task ls 2>/dev/null | awk -v id="$id" '$1 == id { print $2 }') || pid=""
  if [[ "$pid" =~ ^[1-9][0-9]*$ ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
  if [[ -n "$job" ]]; then wait "$job" 2>/dev/null || true; fi
  # What a killed verify run left (no `ctr run --rm` left to clean up).
  ctr --namespace "$FR_CONTAINERD_VERIFY_NAMESPACE" task delete "$id" >/dev/null 2>&1 || true
  ctr --namespace "$FR_CONTAINERD_VERIFY_NAMESPACE" container rm "$id" >/dev/null 2>&1 || true
}

# start_containerd_peer CLIENT RUNTIME: the peer on the CNI network; sets
# PEER_NAME and PEER_ADDR. ctr's peer runs in the foreground of a
# background job, so `ctr run --rm` tears its CNI attachment down when it
# is killed (a detached ctr container would leak its address).
start_containerd_peer() {
  local client=$1 rt=$2 label="$1-$2" waited=0 out pid
  PEER_NAME="$VERIFY_NETWORK_PREFIX-peer-$label"
  PEER_ADDR=""
  if [[ "$client" == ctr ]]; then
    remove_ctr_peer "$PEER_NAME"
    ctr_in "$rt" "$PEER_NAME" /bin/sh -c "$PEER_SERVER" "$PEER_PORT" >/dev/null 2>&1 &
    pid=$!
    add_exit_hook "remove_ctr_peer '$PEER_NAME' '$pid'"
    PEER_PID=$pid
    until PEER_ADDR=$(cni_address_of "$PEER_NAME"); do
      if ((waited >= CNI_PEER_WAIT)) || ! kill -0 "$pid" 2>/dev/null; then
        fail_containerd_peer "$label" "a peer container through ctr run --cni" "no address after ${waited} s" \
          "run 'ctr run --rm --cni --rootfs DIR id sh' on the host and read journalctl -u containerd"
      fi
      sleep 1
      waited=$((waited + 1))
    done
    wait_for_containerd_peer "$label" "$waited"
  else
    nerdctl_cmd rm -f "$PEER_NAME" >/dev/null 2>&1 || true
    add_exit_hook "nerdctl_cmd rm -f '$PEER_NAME' >/dev/null 2>&1 || true"
    out=$(NERDCTL_OPTS=(-d --name "$PEER_NAME") && nerdctl_in "$rt" /bin/sh -c "$PEER_SERVER" "$PEER_PORT" 2>&1) ||
      fail_containerd_peer "$label" "a peer container through nerdctl run" "$(tail -n1 <<<"$out")" "read journalctl -u containerd"
    # shellcheck disable=SC2016 # a Go template, not shell
    PEER_ADDR=$(nerdctl_cmd inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$PEER_NAME" 2>/dev/null || true)
    [[ -n "$PEER_ADDR" ]] ||
      fail_containerd_peer "$label" "the peer to have an address on $FR_CNI_NETWORK" "none" "read journalctl -u containerd"
    wait_for_containerd_peer "$label" 0
  fi
}

# wait_for_containerd_peer LABEL WAITED: until the peer's server answers the
# host (an address is given before the sandbox has booted), so a slow start
# is not taken for a broken network by the positive control.
wait_for_containerd_peer() {
  local label=$1 waited=$2
  until host_reaches "$PEER_ADDR" "$PEER_PORT"; do
    ((waited < CNI_PEER_WAIT)) ||
      fail_containerd_peer "$label" "the peer at $PEER_ADDR:$PEER_PORT to answer the host" "no answer after ${waited} s" \
        "read journalctl -u containerd; check the CNI network in $FR_CNI_CONFLIST"
    sleep 1
    waited=$((waited + 1))
  done
}

# fail_containerd_peer LABEL EXPECTED FOUND TODO
fail_containerd_peer() {
  fail_check "reach-$1-peer" "a $1 container reaches a peer on its network" "$EXIT_CONTAINERD" "$2" "$3" "$4"
}

stop_containerd_peer() {
  if [[ "$1" == ctr ]]; then remove_ctr_peer "$PEER_NAME" "$PEER_PID"; else nerdctl_cmd rm -f "$PEER_NAME" >/dev/null 2>&1 || true; fi
}

# check_containerd CLIENT RUNTIME: CLIENT (ctr or nerdctl) runs RUNTIME's
# containers; a sandbox has its own kernel; the positive controls, then the
# blocked targets, as check_isolation does for Docker.
check_containerd() {
  local client=$1 rt=$2 label="$1-$2" out kernel
  CURRENT_CHECK="runtime-$label-kernel"
  plan_probes
  start_containerd_peer "$client" "$rt"
  if [[ "$client" == ctr ]]; then
    remove_ctr_peer "$VERIFY_NETWORK_PREFIX-probe-$label" # a run that was killed may have left it
    out=$(ctr_in "$rt" "$VERIFY_NETWORK_PREFIX-probe-$label" /bin/sh -c "$CONTAINERD_PROBE" "$PROBE_TIMEOUT" \
      "$PEER_ADDR $PEER_PORT" "${OUTSIDE[@]}" "${PROBED[@]}" 2>&1) || true
  else
    out=$(nerdctl_in "$rt" /bin/sh -c "$CONTAINERD_PROBE" "$PROBE_TIMEOUT" "$PEER_ADDR $PEER_PORT" "${OUTSIDE[@]}" \
      "${PROBED[@]}" 2>&1) || true
  fi
  stop_containerd_peer "$client"
  kernel=$(sed -n 's/^kernel //p' <<<"$out" | head -n1)
  [[ -n "$kernel" ]] ||
    fail_check "runtime-$label-kernel" "$client runs a $rt container" "$EXIT_CONTAINERD" "$client run --runtime $rt to succeed" \
      "$(one_line "$(tail -n2 <<<"$out")")" "run the container by hand on the host and read journalctl -u containerd"
  if [[ "$rt" == runc ]]; then
    pass_check "runtime-$label-kernel" "$client runs a runc container (the host filter's baseline, no sandbox)" "kernel $kernel"
  elif [[ "$kernel" == "$HOST_KERNEL" ]]; then
    fail_check "runtime-$label-kernel" "$client runs $rt with its own kernel" "$EXIT_CONTAINERD" \
      "a guest kernel different from the host's ($HOST_KERNEL)" "'$kernel'" "check $client's --runtime for $rt"
  else
    pass_check "runtime-$label-kernel" "$client runs $rt with its own kernel" "guest kernel $kernel, host kernel $HOST_KERNEL"
  fi
  judge_positive_controls "$label" "$out"
  judge_blocked_targets "$label" "$out"
}

# containerd_runtimes: runc (is every containerd container filtered, not
# only sandboxed ones?) and each sandbox runtime Docker offers, except a
# runsc on the host's network stack: ctr's runc shim cannot pass runsc
# --network=host, so it would fail for the setting's sake, not the host's.
verify_containerd() {
  local client rt runtimes=(runc)
  for rt in "${WANTED[@]}"; do
    if [[ "$rt" == runsc && "${NETWORK[runsc]:-}" == "$FR_NETWORK_HOST" ]]; then
      skip_check "runtime-containerd-runsc" "containerd runs runsc directly" \
        "runsc runs with --network=host here (gvisor.allowHostNetworkStack), which containerd's clients cannot pass"
      continue
    fi
    runtimes+=("$rt")
  done
  prepare_ctr_rootfs
  for rt in "${runtimes[@]}"; do check_containerd ctr "$rt"; done
  if [[ "$VERIFY_NERDCTL" != true ]]; then
    skip_check "runtime-nerdctl" "nerdctl runs each runtime" \
      "verify.nerdctl is false: nerdctl's containers are not verified on this stack"
    return 0
  fi
  load_nerdctl_image
  for rt in "${runtimes[@]}"; do check_containerd nerdctl "$rt"; done
}

# load_nerdctl_image: the verify image, from Docker's store into verify's
# containerd namespace (nerdctl reads `docker save` archives).
load_nerdctl_image() {
  local name=nerdctl-image desc="verify image $VERIFY_IMAGE in containerd namespace $FR_CONTAINERD_VERIFY_NAMESPACE" out
  CURRENT_CHECK=$name
  out=$({ local_docker save "$VERIFY_IMAGE" | nerdctl_cmd load; } 2>&1) ||
    fail_check "$name" "$desc" "$EXIT_CONTAINERD" "docker save | nerdctl load to succeed" "$(one_line "$(tail -n2 <<<"$out")")" \
      "run 'nerdctl --namespace $FR_CONTAINERD_VERIFY_NAMESPACE images' on the host; check $FR_BIN_DIR/nerdctl"
  pass_check "$name" "$desc" "loaded from Docker"
}

# ---------------------------------------------------------------- endpoint policy and limits

check_policy_plugin() {
  local name=endpoint-policy desc="dockerd asks the endpoint policy plugin before every request" out
  CURRENT_CHECK=$name
  # shellcheck disable=SC2016 # a Go template, not shell
  out=$(endpoint_docker info --format '{{range .Plugins.Authorization}}{{.}} {{end}}' 2>&1) ||
    fail_check "$name" "$desc" "$EXIT_POLICY" "docker info through the endpoint" "$out" "check dockerd (journalctl -u docker)"
  [[ " $out " == *" $FR_AUTHZ_PLUGIN_NAME "* ]] ||
    fail_check "$name" "$desc" "$EXIT_POLICY" "authorization plugin $FR_AUTHZ_PLUGIN_NAME in dockerd's running configuration" \
      "authorization plugins: '${out% }'" "re-run the configure step (daemon.json authorization-plugins)"
  pass_check "$name" "$desc" "authorization plugins: ${out% }"
}

# What the policy must refuse, one check each ("case|what|docker options"):
# `docker create` through the endpoint with the verify client, which has
# the consumers' policy; a create that was allowed fails the check (and the
# container is removed as root).
POLICY_CASES=(
  "privileged-runc|--runtime runc with --privileged|--runtime runc --privileged"
  "host-network|--network host|--network host"
  "host-mount|a bind mount of the host's /|-v /:/host"
  "no-limits|a container without limits|"
)
check_policy_refusals() {
  local spec case what opts name desc out id limits work
  make_work_dir work
  for spec in "${POLICY_CASES[@]}"; do
    IFS='|' read -r case what opts <<<"$spec"
    name="policy-refuses-$case" desc="the endpoint refuses $what"
    CURRENT_CHECK=$name
    limits=("${LIMIT_OPTS[@]}")
    [[ "$case" != no-limits ]] || limits=(--label "$(owner_label)")
    # shellcheck disable=SC2086 # opts are words of docker options
    if id=$(endpoint_docker create "${limits[@]}" $opts "$VERIFY_IMAGE" true 2>"$work/err"); then
      local_docker rm -f "$id" >/dev/null 2>&1 || true
      fail_check "$name" "$desc" "$EXIT_POLICY" "a create with $what refused by the endpoint policy" \
        "it was allowed (container removed)" "check $FR_AUTHZ_UNIT (journalctl -u $FR_AUTHZ_UNIT) and $FR_AUTHZ_CONFIG"
    fi
    out=$(cat "$work/err")
    [[ "$out" == *"$FR_AUTHZ_REFUSAL_PREFIX"* ]] ||
      fail_check "$name" "$desc" "$EXIT_POLICY" "a refusal from the endpoint policy ('$FR_AUTHZ_REFUSAL_PREFIX ...')" \
        "$(tail -n1 <<<"$out")" "check $FR_AUTHZ_UNIT (journalctl -u $FR_AUTHZ_UNIT)"
    pass_check "$name" "$desc" "refused: ${out#*"$FR_AUTHZ_REFUSAL_PREFIX" }"
  done
}

# last_count OUTPUT WORD: the number on the last "WORD <n>" line, or 0.
last_count() { awk -v w="$2" '$1 == w && $2 ~ /^[0-9]+$/ { n = $2 } END { print n + 0 }' <<<"$1"; }

# The bomb: start sleepers until the limit stops it (busybox sh gives up at
# the first fork that fails), saying how many ran; "started all" only if
# the limit did not hold.
# shellcheck disable=SC2016 # expanded by the container's shell
readonly FORK_BOMB='n=0; while [ "$n" -lt "$0" ]; do sleep 600 & n=$((n + 1)); echo "started $n"; done; echo "started all"'
# The hog: double a string until it holds the target, saying how much it
# holds; "held all" only if the memory limit did not hold.
# shellcheck disable=SC2016 # expanded by awk
readonly MEMORY_HOG='BEGIN { s = "0123456789abcdef"; while (length(s) < target) { s = s s; printf "held %d\n", length(s); fflush() } print "held all" }'

host_answers() { curl -fsS --max-time 15 --unix-socket "$FR_DOCKER_SOCKET" http://localhost/_ping >/dev/null 2>&1; }
mem_available_mib() { awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo; }

check_pid_limit() {
  local rt=$1 name="limits-$1-pids" desc="a fork bomb in a $1 container stops at the PID limit" out started target
  CURRENT_CHECK=$name
  target=$((FR_VERIFY_PIDS * BOMB_FACTOR))
  out=$(RUN_OPTS=(--network none) && run_in "$rt" sh -c "$FORK_BOMB" "$target" 2>&1) || true
  started=$(last_count "$out" started)
  if grep -qx 'started all' <<<"$out" || ((started >= FR_VERIFY_PIDS)); then
    fail_check "$name" "$desc" "$EXIT_LIMITS" "at most $FR_VERIFY_PIDS processes in a container with --pids-limit $FR_VERIFY_PIDS" \
      "$started of $target started" "check the $rt runtime applies the pids cgroup (journalctl -u docker)"
  fi
  ((started > 0)) ||
    fail_check "$name" "$desc" "$EXIT_LIMITS" "the bomb container to run" "$(tail -n2 <<<"$out")" \
      "run 'docker run --rm --runtime $rt --pids-limit $FR_VERIFY_PIDS $VERIFY_IMAGE sh' on the host"
  host_answers ||
    fail_check "$name" "$desc" "$EXIT_LIMITS" "the host's dockerd to answer after the bomb" "no answer" "read journalctl -u docker"
  pass_check "$name" "$desc" "$started of $target sleepers started under --pids-limit $FR_VERIFY_PIDS, then fork failed; the host answers"
}

check_memory_limit() {
  local rt=$1 name="limits-$1-memory" desc="a memory hog in a $1 container stays within its limit" out held target limit before after
  CURRENT_CHECK=$name
  limit=$((FR_VERIFY_MEMORY_MIB * 1024 * 1024))
  target=$((limit * HOG_FACTOR))
  before=$(mem_available_mib)
  out=$(RUN_OPTS=(--network none) && run_in "$rt" awk -v "target=$target" "$MEMORY_HOG" 2>&1) || true
  after=$(mem_available_mib)
  held=$(last_count "$out" held)
  if grep -qx 'held all' <<<"$out" || ((held > limit)); then
    fail_check "$name" "$desc" "$EXIT_LIMITS" "at most ${FR_VERIFY_MEMORY_MIB} MiB held in a container with --memory ${FR_VERIFY_MEMORY_MIB}m" \
      "$((held / 1048576)) MiB held of $((target / 1048576)) MiB" "check the $rt runtime applies the memory cgroup"
  fi
  ((held > 0)) ||
    fail_check "$name" "$desc" "$EXIT_LIMITS" "the hog container to run" "$(tail -n2 <<<"$out")" \
      "run 'docker run --rm --runtime $rt --memory ${FR_VERIFY_MEMORY_MIB}m $VERIFY_IMAGE awk' on the host"
  host_answers ||
    fail_check "$name" "$desc" "$EXIT_LIMITS" "the host's dockerd to answer after the hog" "no answer" "read journalctl -u docker"
  pass_check "$name" "$desc" "held at most $((held / 1048576)) MiB of $((target / 1048576)) MiB under --memory ${FR_VERIFY_MEMORY_MIB}m, then stopped; host MemAvailable ${before} MiB before, ${after} MiB after; the host answers"
}

measure_cold_start() {
  local rt=$1 name="cold-start-$1" desc="cold start of $1 (median of $COLD_START_RUNS runs)" i start out times=()
  CURRENT_CHECK=$name
  for ((i = 0; i < COLD_START_RUNS; i++)); do
    start=$(now_ms)
    out=$(run_in "$rt" true 2>&1) ||
      fail_check "$name" "$desc" "$EXIT_COLD_START" "docker run --runtime $rt true to succeed" "$(tail -n1 <<<"$out")" \
        "read journalctl -u docker on the host"
    times+=($(($(now_ms) - start)))
  done
  COLD_MEDIAN[$rt]=$(printf '%s\n' "${times[@]}" | median)
  pass_check "$name" "$desc" "median ${COLD_MEDIAN[$rt]} ms (runs: ${times[*]} ms)"
}

verify_runtimes() {
  local rt
  for rt in "${WANTED[@]}"; do check_runtime_kernel "$rt"; done
  for rt in "${WANTED[@]}"; do check_isolation "$rt"; done
  for rt in "${WANTED[@]}"; do check_pid_limit "$rt"; done
  for rt in "${WANTED[@]}"; do check_memory_limit "$rt"; done
  for rt in "${WANTED[@]}"; do measure_cold_start "$rt"; done
  verify_containerd
}

main() {
  add_exit_hook finish_report
  read_inputs
  # lib.sh's wanted_runtimes, the rule configure registered by; with
  # ISOLATION=vm Kata is always wanted, so an unusable Kata fails its preflight.
  wanted_runtimes
  WANTED=("${WANTED_RUNTIMES[@]}")
  DEFAULT_RUNTIME=${WANTED[0]}
  # Kata's containers use the network stack of its guest VM's kernel.
  if [[ " ${WANTED[*]} " == *" kata "* ]]; then NETWORK[kata]=$FR_NETWORK_VM; fi
  if [[ " ${WANTED[*]} " == *" kata "* ]]; then
    check_preflight_kata
  else
    # sandbox without a usable Kata: say why in the report, never silently.
    skip_check preflight-kata "Kata preflight" "Kata not usable: $(kata_unusable_reason); gVisor (runsc) is verified instead"
  fi
  if [[ " ${WANTED[*]} " == *" runsc "* ]]; then check_preflight_runsc; fi
  check_endpoint_accepts_client_cert
  check_endpoint_refuses_no_cert
  check_registered_runtimes
  if [[ " ${WANTED[*]} " == *" runsc "* ]]; then check_runsc_network; fi
  check_daemon_hardening
  check_policy_plugin
  check_verify_image
  check_policy_refusals
  verify_runtimes
  PASSED=true
  info "host $FR_HOST verified: default runtime $DEFAULT_RUNTIME"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
