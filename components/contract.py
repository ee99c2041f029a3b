"""Facts the program and the host scripts share, defined once.

The scripts never retype these: the payload carries them as
`contract/host.env` (rendered by `render_contract_env`), which `scripts/lib.sh`
sources before anything else. `tests/static/test_contract.py` fails when a
script hard-codes one of the values again.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from endpoint_authz.rules import OWNER_LABEL, REFUSAL_PREFIX

# Where the payload lands on every host.
REMOTE_ROOT = "/opt/functions-runtime"
# The generated env file, relative to REMOTE_ROOT.
CONTRACT_ENV = "contract/host.env"

# The stack's accepted isolation levels and the Kata hypervisors it may choose.
ISOLATIONS = ("vm", "sandbox")
KATA_HYPERVISORS = ("qemu", "clh")
# The ones Kata tests with Docker: its Docker how-to says "the support is only
# tested with QEMU as the VMM". Any other is an explicit, warned experiment.
KATA_DOCKER_TESTED_HYPERVISORS = ("qemu",)
# Why; the same words in the preview and on the host.
KATA_UNTESTED_WITH_DOCKER = (
    "Kata tests Docker only with QEMU as the VMM "
    "(kata-containers docs/how-to/how-to-use-kata-with-docker.md)"
)

# The cloud metadata service (Hetzner and most clouds): containers never reach it.
METADATA_ADDRESS = "169.254.169.254"
# Kata's vsock transport and vhost networking; absent on Cloud VMs without KVM.
KERNEL_MODULES = ("vhost_vsock", "vhost_net")
# What the host's packet filter keeps containers from: link-local (the
# metadata service), RFC 1918, carrier-grade NAT, IPv6 unique-local and
# link-local.
RFC1918 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
CGNAT = "100.64.0.0/10"
CONTAINER_BLOCKED_V4 = ("169.254.0.0/16", *RFC1918, CGNAT)
IPV6_ULA = "fc00::/7"
IPV6_LINK_LOCAL = "fe80::/10"
CONTAINER_BLOCKED_V6 = (IPV6_ULA, IPV6_LINK_LOCAL)

# Outbound SMTP (relay and submission over TLS), which hosting providers
# lock servers for when it carries spam: blocked from containers by default.
SMTP_PORTS = (25, 465)
# egress.newConnectionsPerSecond / egress.newConnectionsBurst: new outbound
# connections one container address may open (a scan is thousands a second).
EGRESS_NEW_PER_SECOND_DEFAULT = 50
EGRESS_NEW_BURST_DEFAULT = 200

# Why a Hetzner Cloud host can never run Kata; the same words in every message.
NO_KVM_ON_CLOUD = "Hetzner Cloud servers have no nested virtualization"

# The verify step's report and the exported endpoint document.
VERIFY_SCHEMA = "functions-runtime/verify@1"
ENDPOINT_SCHEMA = "functions-runtime/endpoint@1"
# The verify image a host builds from its own busybox-static when the stack
# names none.
BUSYBOX_VERIFY_IMAGE = "functions-runtime/verify:busybox"
# verify.coldStartRuns: odd (the median is a real run), within these bounds.
COLD_START_RUNS_DEFAULT = 5
COLD_START_RUNS_MIN = 3
COLD_START_RUNS_MAX = 21

# The endpoint policy (endpoint_authz/, a Docker authorization plugin):
# dockerd finds the plugin by name as <plugin dir>/<name>.sock.
AUTHZ_PLUGIN_NAME = "functions-runtime-authz"
AUTHZ_SOCKET = f"/run/docker/plugins/{AUTHZ_PLUGIN_NAME}.sock"
AUTHZ_UNIT = f"{AUTHZ_PLUGIN_NAME}.service"
# Written by the configure step; the plugin re-reads it when it changes.
AUTHZ_CONFIG = "/etc/functions-runtime/endpoint-policy.json"
# Exists while the host drains (creates refused); survives reboots.
AUTHZ_DRAIN_FILE = "/var/lib/functions-runtime/draining"
# How the drain file of a retiring host (scripts/retire_host.sh) starts:
# "<mark>: <why>". Not the canary's mark (host_verify/canary.py), so the
# canary, which lifts only its own drain, never lifts a retiring host's.
AUTHZ_RETIRE_MARK = "retiring"
# How the drain file starts while the install step updates a serving
# dedicated host's runtime; the upkeep step (after verify passed) lifts only
# this mark, never an operator's, the canary's or a retiring host's.
AUTHZ_UPDATE_MARK = "updating"
# The operator's one command on the host: drain, resume, status, recover.
ENDPOINT_COMMAND = "/usr/local/sbin/functions-runtime-endpoint"
# Every refusal starts with it (the plugin defines it; verify looks for it).
AUTHZ_REFUSAL_PREFIX = REFUSAL_PREFIX
# Every container and volume created through the endpoint carries this label
# with its creator's certificate common name; the policy lets a client act
# only on what carries its own (endpoint_authz/rules.py).
AUTHZ_OWNER_LABEL = OWNER_LABEL
# The common names the program gives its client certificates: the
# consumers' one, and each host's verify client's (with the host's name).
CONSUMER_COMMON_NAME = "functions-runtime consumer"
VERIFY_CLIENT_NAME_PREFIX = "verify "
# endpoint.limits: the largest limits a container may ask for. The minima
# leave room for a gVisor sandbox (its Sentry's threads count as PIDs and
# its memory against the limit) and for the verify step's own containers.
ENDPOINT_MAX_MEMORY_MIB_DEFAULT = 2048
ENDPOINT_MAX_MEMORY_MIB_MIN = 256
ENDPOINT_MAX_PIDS_DEFAULT = 1024
ENDPOINT_MAX_PIDS_MIN = 128
ENDPOINT_MAX_MILLICPUS_DEFAULT = 2000
ENDPOINT_MAX_MILLICPUS_MIN = 100
# What the verify step's containers ask for: the most each may use, and
# never above the stack's maxima (settings refuse maxima below these).
VERIFY_MEMORY_MIB = 256
VERIFY_PIDS = 128
VERIFY_MILLICPUS = 1000

# The SSH keys the program grants (its own and admin.sshKeys) live in
# <this>/<account>, which the base sshd drop-in adds to AuthorizedKeysFile.
SSH_KEYS_DIR = "/etc/ssh/functions-runtime-keys"

# A golden-image builder's identity and access, which the seal step
# (scripts/seal_image.sh) takes off its disk before the snapshot: every clone
# makes its own machine ID, Docker engine ID and SSH host keys (from its own
# user-data), and no clone opens to the builder's keys.
MACHINE_ID = "/etc/machine-id"
DBUS_MACHINE_ID = "/var/lib/dbus/machine-id"
SSH_HOST_KEY_DIR = "/etc/ssh"
DOCKER_ENGINE_ID = "/var/lib/docker/engine-id"
ROOT_AUTHORIZED_KEYS = "/root/.ssh/authorized_keys"
ROOT_BASH_HISTORY = "/root/.bash_history"
LOG_DIR = "/var/log"
TMP_DIR = "/tmp"

# Base OS files on the host (components/base_os.py renders their content).
SSHD_DROP_IN = "/etc/ssh/sshd_config.d/50-functions-runtime.conf"
MODULES_LOAD = "/etc/modules-load.d/functions-runtime.conf"
APT_HOOK = "/etc/apt/apt.conf.d/50functions-runtime-update-stamp"
# apt touches this after every successful `apt-get update` (the hook above),
# so the install step can tell fresh package lists from stale ones.
APT_UPDATE_STAMP = "/var/lib/apt/periodic/functions-runtime-update-success"


# The artifact catalog's digests say their algorithm: `<algorithm>:<hex>`,
# with the hex digits each algorithm has. Google publishes only sha512 for
# gVisor's release files; Kata and nerdctl are pinned by sha256. The
# scripts hash with coreutils' `<algorithm>sum`.
DIGEST_HEX_LENGTHS = {"sha256": 64, "sha512": 128}

# gVisor. gvisor.runsc chooses the runsc a host runs: `release`, the pinned
# upstream release, or `debian`, Debian 13's runsc package (a 2024-07-29
# build; no shim, no sidecars), kept as an explicit fallback.
GVISOR_RUNSC_SOURCES = ("release", "debian")
# The release is one archive (catalog row GVISOR_ARCHIVE) holding
# GVISOR_ARTIFACTS at its top (runsc and the containerd shim nerdctl and
# containerd use) and the sidecars in GVISOR_SIDECAR_DIR beside them, which
# runsc finds next to itself: from release 20260831 on it runs its sandbox
# from them, and without them falls back to running itself, slowly and
# deprecated (google/gvisor#13718). A release may add sidecars; these must
# be there.
GVISOR_ARCHIVE = "gvisor"
GVISOR_ARTIFACTS = ("runsc", "containerd-shim-runsc-v1")
GVISOR_SIDECAR_DIR = "gvisor-bin"
GVISOR_SIDECARS = ("gvisor_sentry", "gvisor-sentry-prewarmer", "checkpointgofer", "runsc-metric-server")
# The first release that runs its sandbox from the sidecars (`runsc
# --version` says release-<date>.<n>): verify looks for the sentry from it on.
GVISOR_SIDECARS_SINCE = "20260831"
# The archive unpacks whole into <GVISOR_DIR>/<version>/, one directory per
# version, so a container keeps the runsc it started with when an upgrade
# points daemon.json at the next version. Never a payload directory (the
# payload step replaces those whole; components/payload.py refuses it).
GVISOR_DIR = f"{REMOTE_ROOT}/gvisor"
# Debian's package (gvisor.runsc: debian).
DEBIAN_RUNSC = "/usr/bin/runsc"

# A runtime's network: which network stack its containers' socket calls
# reach (the verify report's and the endpoint's runtimes[].network).
#   vm:      Kata: the guest VM's own kernel.
#   sandbox: gVisor's own network stack (netstack), in user space inside the
#            sandbox: socket calls never reach the host kernel.
#   host:    runsc --network=host: the sandbox passes socket calls to the host
#            kernel's stack, in the container's own network namespace (Docker's
#            bridge and the host filter still apply; not Docker's --network
#            host). Only with gvisor.allowHostNetworkStack: true.
NETWORK_VM = "vm"
NETWORK_SANDBOX = "sandbox"
NETWORK_HOST = "host"
RUNTIME_NETWORKS = (NETWORK_VM, NETWORK_SANDBOX, NETWORK_HOST)
# The networks a runtime of each isolation may have.
ISOLATION_NETWORKS = {"vm": (NETWORK_VM,), "sandbox": (NETWORK_SANDBOX, NETWORK_HOST)}

# containerd's runtime names (the shims on PATH) for its own clients.
RUNC_SHIM_RUNTIME = "io.containerd.runc.v2"
RUNSC_SHIM_RUNTIME = "io.containerd.runsc.v1"
KATA_SHIM_RUNTIME = "io.containerd.kata.v2"
# The CNI network configure owns, for containers containerd runs past
# Docker (`ctr run --cni` takes the first conflist in /etc/cni/net.d;
# nerdctl takes it by name). Its subnet is clear of Docker's default pools
# (172.17.0.0/16 up, 192.168.0.0/16) and of nerdctl's first networks
# (10.4.0.0/24 up); network.ipRange may not overlap it.
CNI_NETWORK = "functions-runtime"
CNI_BRIDGE = "fr-cni0"
CNI_SUBNET = "10.4.250.0/24"
CNI_CONFLIST = "/etc/cni/net.d/10-functions-runtime.conflist"
# verify's own containerd namespace: Docker's containers are in `moby`,
# nerdctl's and ctr's in `default`; verify's never mix with either.
CONTAINERD_VERIFY_NAMESPACE = "functions-runtime-verify"
# The host filter's table (scripts/host_firewall.sh owns it whole). dockerd's
# own connections (its pulls, as root in the host's namespace) are judged
# there too: its sockets are matched by docker.service's cgroup, which
# systemd puts in DOCKERD_CGROUP_SET when dockerd starts (NFTSet= in
# configure's drop-in) and the firewall step puts there when it reloads the
# table under a running dockerd.
HOST_FILTER_TABLE = "functions_runtime"
DOCKERD_CGROUP_SET = "dockerd"
DOCKERD_CGROUP = "system.slice/docker.service"
# What dockerd may still reach on loopback: a resolver the host runs there.
DOCKERD_LOOPBACK_PORTS = (53,)

# Day two (scripts/configure_upkeep.sh): the canary re-runs a named subset of
# verify's check table on a timer, with a credential that never leaves the
# host; GC and the node exporter's textfile collector run beside it.
UPKEEP_STATE_DIR = "/var/lib/functions-runtime"
CANARY_DIR = "/etc/functions-runtime/canary"
# The canary's credential: the stack CA, the canary client certificate and
# its key (PEM, verify's stdin order), root-only.
CANARY_CREDENTIALS = f"{CANARY_DIR}/credentials.pem"
# The verify step's variables, as the canary's unit reads them.
CANARY_ENV = f"{CANARY_DIR}/verify.env"
# The canary's latest result (the verify report of its subset), for consumers and operators.
CANARY_RESULT = f"{UPKEEP_STATE_DIR}/canary.json"
CANARY_UNIT = "functions-runtime-canary"
CANARY_CLIENT_NAME_PREFIX = "canary "
GC_UNIT = "functions-runtime-gc"
# GC runs this often; its thresholds are settings (gc.*).
GC_INTERVAL_SECONDS = 300
# Debian's node exporter: its textfile collector reads *.prom from here.
NODE_EXPORTER_UNIT = "prometheus-node-exporter"
NODE_EXPORTER_DEFAULTS = "/etc/default/prometheus-node-exporter"
NODE_EXPORTER_PORT = 9100
# dockerd's own Prometheus metrics (daemon.json metrics-addr), on the private
# address beside the endpoint, behind the same filter as the node exporter.
DOCKERD_METRICS_PORT = 9323
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
# unattended-upgrades: Debian security updates, never a reboot, never the
# runtime packages underneath running functions (docs/operations.md).
UPGRADES_CONFIG = "/etc/apt/apt.conf.d/52functions-runtime-upgrades"
# Read after the package's own 20auto-upgrades, so ours wins and theirs stays untouched.
UPGRADES_PERIODIC = "/etc/apt/apt.conf.d/21functions-runtime-auto-upgrades"
UPGRADES_HELD = ("docker.io", "docker-cli", "containerd", "runc", "runsc", "containernetworking-plugins")
REBOOT_REQUIRED = "/run/reboot-required"
# One download per fleet (dedicated hosts): a host with ARTIFACT_SHARE keeps
# each verified release archive it fetched in ARTIFACT_CACHE_DIR, by the file
# name of its catalog URL, and serves that directory read-only over HTTP
# (unit ARTIFACT_SHARE_UNIT) on ARTIFACT_SHARE_PORT; the host filter admits
# ARTIFACT_PEER_CIDRS to it; the others try ARTIFACT_PEERS first, always
# checking the digest (scripts/lib.sh fetch_artifact).
ARTIFACT_SHARE_PORT = 9180
ARTIFACT_CACHE_DIR = "/var/cache/functions-runtime/artifacts"
ARTIFACT_SHARE_UNIT = "functions-runtime-artifacts"
# What the verify step reads, and so what the canary's unit carries (one list
# for the pipeline's verify step and the canary).
VERIFY_ENV = (
    "ISOLATION",
    "KATA_HYPERVISOR",
    "GVISOR_RUNSC",
    "GVISOR_ALLOW_HOST_NETWORK",
    "PRIVATE_ADDRESS",
    "ENDPOINT_PORT",
    "SSH_PORT",
    "VERIFY_IMAGE",
    "VERIFY_IMAGE_ARCHIVE",
    "COLD_START_RUNS",
    "LIMIT_MAX_MILLICPUS",
    "VERIFY_OUTSIDE",
    "VERIFY_NERDCTL",
    "VERIFY_NAME_PROBE",
)


@dataclass(frozen=True)
class SharedFact:
    """One fact as the scripts see it: a variable, its value, whether a
    test may point it elsewhere (paths on the host)."""

    variable: str
    value: str
    overridable: bool = False


# Host paths and kernel interfaces the scripts and verify read; a test
# points each elsewhere through the environment (overridable facts).
HOST_PATHS = {
    "FR_WORK_BASE": "/var/tmp",  # downloads land here first (disk, not tmpfs: Kata is ~1.5 GB)
    "FR_SECRET_BASE": "/run/functions-runtime",  # PEM blocks from stdin (tmpfs)
    "FR_DEV_KVM": "/dev/kvm",
    "FR_CPUINFO": "/proc/cpuinfo",
    "FR_MEMINFO": "/proc/meminfo",
    "FR_SYS_MODULE": "/sys/module",
    "FR_KATA_DIR": "/opt/kata",
    "FR_BIN_DIR": "/usr/local/bin",
    "FR_KATA_CONFIG": "/etc/kata-containers/configuration.toml",
    "FR_BUSYBOX": "/usr/bin/busybox",
    "FR_DOCKER_SOCKET": "/run/docker.sock",
    "FR_CNI_NETWORKS": "/var/lib/cni/networks",
    "FR_CGROUP_ROOT": "/sys/fs/cgroup",
}


def shared_facts() -> tuple[SharedFact, ...]:
    return (
        SharedFact("FR_ISOLATIONS", " ".join(ISOLATIONS)),
        SharedFact("FR_KATA_HYPERVISORS", " ".join(KATA_HYPERVISORS)),
        SharedFact("FR_KATA_DOCKER_TESTED_HYPERVISORS", " ".join(KATA_DOCKER_TESTED_HYPERVISORS)),
        SharedFact("FR_KATA_UNTESTED_WITH_DOCKER", KATA_UNTESTED_WITH_DOCKER),
        SharedFact("FR_METADATA_ADDRESS", METADATA_ADDRESS),
        SharedFact("FR_KERNEL_MODULES", " ".join(KERNEL_MODULES)),
        SharedFact("FR_CONTAINER_BLOCKED_V4", ", ".join(CONTAINER_BLOCKED_V4)),
        SharedFact("FR_CONTAINER_BLOCKED_V6", ", ".join(CONTAINER_BLOCKED_V6)),
        SharedFact("FR_IPV6_LINK_LOCAL", IPV6_LINK_LOCAL),
        SharedFact("FR_SMTP_PORTS", ", ".join(str(port) for port in SMTP_PORTS)),
        SharedFact("FR_NO_KVM_ON_CLOUD", NO_KVM_ON_CLOUD),
        SharedFact("FR_VERIFY_SCHEMA", VERIFY_SCHEMA),
        SharedFact("FR_BUSYBOX_VERIFY_IMAGE", BUSYBOX_VERIFY_IMAGE),
        SharedFact("FR_COLD_START_RUNS_MIN", str(COLD_START_RUNS_MIN)),
        SharedFact("FR_COLD_START_RUNS_MAX", str(COLD_START_RUNS_MAX)),
        *(SharedFact(name, path, overridable=True) for name, path in HOST_PATHS.items()),
        SharedFact("FR_SSHD_DROP_IN", SSHD_DROP_IN, overridable=True),
        SharedFact("FR_MODULES_LOAD", MODULES_LOAD, overridable=True),
        SharedFact("FR_APT_HOOK", APT_HOOK, overridable=True),
        SharedFact("FR_APT_UPDATE_STAMP", APT_UPDATE_STAMP, overridable=True),
        SharedFact("FR_SSH_KEYS_DIR", SSH_KEYS_DIR, overridable=True),
        SharedFact("FR_MACHINE_ID", MACHINE_ID, overridable=True),
        SharedFact("FR_DBUS_MACHINE_ID", DBUS_MACHINE_ID, overridable=True),
        SharedFact("FR_SSH_HOST_KEY_DIR", SSH_HOST_KEY_DIR, overridable=True),
        SharedFact("FR_DOCKER_ENGINE_ID", DOCKER_ENGINE_ID, overridable=True),
        SharedFact("FR_ROOT_AUTHORIZED_KEYS", ROOT_AUTHORIZED_KEYS, overridable=True),
        SharedFact("FR_ROOT_BASH_HISTORY", ROOT_BASH_HISTORY, overridable=True),
        SharedFact("FR_LOG_DIR", LOG_DIR, overridable=True),
        SharedFact("FR_TMP_DIR", TMP_DIR, overridable=True),
        SharedFact("FR_AUTHZ_PLUGIN_NAME", AUTHZ_PLUGIN_NAME),
        SharedFact("FR_AUTHZ_UNIT", AUTHZ_UNIT),
        SharedFact("FR_AUTHZ_REFUSAL_PREFIX", AUTHZ_REFUSAL_PREFIX),
        SharedFact("FR_AUTHZ_OWNER_LABEL", AUTHZ_OWNER_LABEL),
        SharedFact("FR_AUTHZ_SOCKET", AUTHZ_SOCKET, overridable=True),
        SharedFact("FR_AUTHZ_CONFIG", AUTHZ_CONFIG, overridable=True),
        SharedFact("FR_AUTHZ_DRAIN_FILE", AUTHZ_DRAIN_FILE, overridable=True),
        SharedFact("FR_ENDPOINT_COMMAND", ENDPOINT_COMMAND, overridable=True),
        SharedFact("FR_AUTHZ_RETIRE_MARK", AUTHZ_RETIRE_MARK),
        SharedFact("FR_AUTHZ_UPDATE_MARK", AUTHZ_UPDATE_MARK),
        SharedFact("FR_VERIFY_MEMORY_MIB", str(VERIFY_MEMORY_MIB)),
        SharedFact("FR_VERIFY_PIDS", str(VERIFY_PIDS)),
        SharedFact("FR_VERIFY_MILLICPUS", str(VERIFY_MILLICPUS)),
        SharedFact("FR_DIGEST_ALGORITHMS", " ".join(f"{a}:{n}" for a, n in DIGEST_HEX_LENGTHS.items())),
        SharedFact("FR_GVISOR_RUNSC_SOURCES", " ".join(GVISOR_RUNSC_SOURCES)),
        SharedFact("FR_GVISOR_ARCHIVE", GVISOR_ARCHIVE),
        SharedFact("FR_GVISOR_ARTIFACTS", " ".join(GVISOR_ARTIFACTS)),
        SharedFact("FR_GVISOR_SIDECAR_DIR", GVISOR_SIDECAR_DIR),
        SharedFact("FR_GVISOR_SIDECARS", " ".join(GVISOR_SIDECARS)),
        SharedFact("FR_GVISOR_SIDECARS_SINCE", GVISOR_SIDECARS_SINCE),
        SharedFact("FR_GVISOR_DIR", GVISOR_DIR, overridable=True),
        SharedFact("FR_DEBIAN_RUNSC", DEBIAN_RUNSC, overridable=True),
        SharedFact("FR_NETWORK_VM", NETWORK_VM),
        SharedFact("FR_NETWORK_SANDBOX", NETWORK_SANDBOX),
        SharedFact("FR_NETWORK_HOST", NETWORK_HOST),
        SharedFact("FR_RUNC_SHIM_RUNTIME", RUNC_SHIM_RUNTIME),
        SharedFact("FR_RUNSC_SHIM_RUNTIME", RUNSC_SHIM_RUNTIME),
        SharedFact("FR_KATA_SHIM_RUNTIME", KATA_SHIM_RUNTIME),
        SharedFact("FR_CNI_NETWORK", CNI_NETWORK),
        SharedFact("FR_CNI_BRIDGE", CNI_BRIDGE),
        SharedFact("FR_CNI_SUBNET", CNI_SUBNET),
        SharedFact("FR_CNI_CONFLIST", CNI_CONFLIST, overridable=True),
        SharedFact("FR_CONTAINERD_VERIFY_NAMESPACE", CONTAINERD_VERIFY_NAMESPACE),
        SharedFact("FR_HOST_FILTER_TABLE", HOST_FILTER_TABLE),
        SharedFact("FR_DOCKERD_CGROUP_SET", DOCKERD_CGROUP_SET),
        SharedFact("FR_DOCKERD_CGROUP", DOCKERD_CGROUP),
        SharedFact("FR_DOCKERD_LOOPBACK_PORTS", ", ".join(str(port) for port in DOCKERD_LOOPBACK_PORTS)),
        SharedFact("FR_UPKEEP_STATE_DIR", UPKEEP_STATE_DIR, overridable=True),
        SharedFact("FR_CANARY_DIR", CANARY_DIR, overridable=True),
        SharedFact("FR_CANARY_CREDENTIALS", CANARY_CREDENTIALS, overridable=True),
        SharedFact("FR_CANARY_ENV", CANARY_ENV, overridable=True),
        SharedFact("FR_CANARY_RESULT", CANARY_RESULT, overridable=True),
        SharedFact("FR_CANARY_UNIT", CANARY_UNIT),
        SharedFact("FR_CANARY_CLIENT_NAME_PREFIX", CANARY_CLIENT_NAME_PREFIX),
        SharedFact("FR_GC_UNIT", GC_UNIT),
        SharedFact("FR_GC_INTERVAL_SECONDS", str(GC_INTERVAL_SECONDS)),
        SharedFact("FR_NODE_EXPORTER_UNIT", NODE_EXPORTER_UNIT),
        SharedFact("FR_NODE_EXPORTER_DEFAULTS", NODE_EXPORTER_DEFAULTS, overridable=True),
        SharedFact("FR_NODE_EXPORTER_PORT", str(NODE_EXPORTER_PORT)),
        SharedFact("FR_DOCKERD_METRICS_PORT", str(DOCKERD_METRICS_PORT)),
        SharedFact("FR_TEXTFILE_DIR", TEXTFILE_DIR, overridable=True),
        SharedFact("FR_UPGRADES_CONFIG", UPGRADES_CONFIG, overridable=True),
        SharedFact("FR_UPGRADES_PERIODIC", UPGRADES_PERIODIC, overridable=True),
        SharedFact("FR_UPGRADES_HELD", " ".join(UPGRADES_HELD)),
        SharedFact("FR_REBOOT_REQUIRED", REBOOT_REQUIRED, overridable=True),
        SharedFact("FR_VERIFY_ENV", " ".join(VERIFY_ENV)),
        SharedFact("FR_ARTIFACT_SHARE_PORT", str(ARTIFACT_SHARE_PORT)),
        SharedFact("FR_ARTIFACT_CACHE_DIR", ARTIFACT_CACHE_DIR, overridable=True),
        SharedFact("FR_ARTIFACT_SHARE_UNIT", ARTIFACT_SHARE_UNIT),
    )


def render_contract_env() -> str:
    """The env file `scripts/lib.sh` sources: plain assignments, shell-quoted.

    Paths keep a value already in the environment so the script tests can
    point them into a temporary directory; every other fact is fixed.
    """
    lines = ["# Generated by components/contract.py; the host scripts source it. Do not edit."]
    for fact in shared_facts():
        value = shlex.quote(fact.value)
        if fact.overridable:
            lines.append(f"{fact.variable}=${{{fact.variable}:-{value}}}")
        else:
            lines.append(f"{fact.variable}={value}")
    return "\n".join(lines) + "\n"
