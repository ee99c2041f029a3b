"""Every stack setting, declared once.

A declaration holds what the rest of the project repeats about a setting:
its key, kind, default, bounds or choices, a one-line description, and, where
a host step reads it, the host variable and how its value is spelled there.
From this table come the defaults of the typed model (`model.py`), the
parsers' bounds and choices (`sections.py`, `hosts.py`), the pipeline's
variable map (`components/pipeline.py`), and three generated texts, each
checked by `tests/static/test_generated.py`: `Pulumi.yaml`'s config block,
the README's configuration table and the variables table in
`docs/host-contract.md` (`python -m components.settings.generated --write`
rewrites them).

Rules that span several settings stay code, each in one place in the
parsers; a declaration says only what one setting is.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from components.contract import (
    BUSYBOX_VERIFY_IMAGE,
    COLD_START_RUNS_DEFAULT,
    COLD_START_RUNS_MAX,
    COLD_START_RUNS_MIN,
    EGRESS_NEW_BURST_DEFAULT,
    EGRESS_NEW_PER_SECOND_DEFAULT,
    ENDPOINT_MAX_MEMORY_MIB_DEFAULT,
    ENDPOINT_MAX_MEMORY_MIB_MIN,
    ENDPOINT_MAX_MILLICPUS_DEFAULT,
    ENDPOINT_MAX_MILLICPUS_MIN,
    ENDPOINT_MAX_PIDS_DEFAULT,
    ENDPOINT_MAX_PIDS_MIN,
    GVISOR_RUNSC_SOURCES,
    ISOLATIONS,
    KATA_DOCKER_TESTED_HYPERVISORS,
    KATA_HYPERVISORS,
    SMTP_PORTS,
)
from endpoint_authz.rules import DEFAULT_REGISTRIES

if TYPE_CHECKING:
    from components.settings.model import HostSpec, Settings

Kind = Literal["string", "choice", "integer", "boolean", "list", "cidrs", "cpus", "address", "secret", "groups"]


class _Required:
    """The default of a setting the stack must give."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

# Hetzner Cloud locations by network zone; a subnet lives in one zone and
# every server attached to it must be in a location of that zone.
ZONE_LOCATIONS: dict[str, tuple[str, ...]] = {
    "eu-central": ("fsn1", "nbg1", "hel1"),
    "us-east": ("ash",),
    "us-west": ("hil",),
    "ap-southeast": ("sin",),
}
# The scripts install Debian 13 packages; another image would fail half-way.
SUPPORTED_IMAGES = ("debian-13",)
# Hosts per group: ten spread placement groups' worth.
MAX_HOSTS_PER_GROUP = 100
# egress.newConnectionsPerSecond: 0 turns the limit off; above this it limits nothing.
EGRESS_NEW_PER_SECOND_MAX = 100_000
# The most a container may ask for; a whole host, not more.
ENDPOINT_MAX_MEMORY_MIB_MAX = 4 * 1024 * 1024
ENDPOINT_MAX_PIDS_MAX = 4 * 1024 * 1024
ENDPOINT_MAX_MILLICPUS_MAX = 1024 * 1000
# verify.outsideProbe: what every Hetzner server reaches (Cloudflare's
# resolver answers HTTPS on its anycast address).
VERIFY_OUTSIDE_PROBE_DEFAULT = ("1.1.1.1", 443)
# verify.nameProbe: a name every Debian host resolves (its own package mirror).
VERIFY_NAME_PROBE_DEFAULT = "deb.debian.org"
# certificates.rotateAfterDays: a leaf is valid 730 days; by default it is
# re-issued in its last 30 (as before the setting), never in its last day.
ROTATE_AFTER_DAYS_DEFAULT = 700
ROTATE_AFTER_DAYS_MIN = 7
ROTATE_AFTER_DAYS_MAX = 729
# canary.intervalSeconds: a minute by default (a broken runtime shows within
# two); never so often that one run overlaps the next on a slow host.
CANARY_INTERVAL_DEFAULT = 60
CANARY_INTERVAL_MIN = 30
CANARY_INTERVAL_MAX = 3600
# gc.*: an hour for an exited container's logs to be read, 20 GiB of unused
# images kept warm for the next start, and Docker's disk under 80 %.
GC_CONTAINER_TTL_DEFAULT = 60
GC_CONTAINER_TTL_MAX = 7 * 24 * 60
GC_IMAGE_BUDGET_DEFAULT = 20
GC_IMAGE_BUDGET_MAX = 100_000
GC_WATERMARK_DEFAULT = 80
GC_WATERMARK_MIN = 10
GC_WATERMARK_MAX = 95
# goldenImage.*: three images kept for rollback (the current one and two
# before it); a new one at least monthly, so a new host never boots a month
# of Debian security updates behind.
GOLDEN_KEEP_DEFAULT = 3
GOLDEN_KEEP_MAX = 20
GOLDEN_MAX_AGE_DAYS_DEFAULT = 30
GOLDEN_MAX_AGE_DAYS_MAX = 365
# rollout.*: one host replaced at a time; a retiring host waits ten minutes
# for its running functions (the longest a function usually runs) to finish.
ROLLOUT_BATCH_DEFAULT = 1
ROLLOUT_DRAIN_TIMEOUT_DEFAULT = 600
ROLLOUT_DRAIN_TIMEOUT_MAX = 24 * 3600


def _flag(value: bool) -> str:
    """The one spelling of a boolean in a host variable."""
    return "true" if value else "false"


def _words(values: Any) -> str:
    return " ".join(values)


def _outside(probe: tuple[str, int] | None) -> str:
    return "none" if probe is None else f"{probe[0]} {probe[1]}"


def _name(probe: str | None) -> str:
    return "none" if probe is None else probe


@dataclass(frozen=True)
class Setting:
    """One setting. `key` is its path under the namespace (`endpoint.port`;
    a host group's field is `hosts[].sshUser`). `attr` is where the checked
    value sits on `Settings` (or on the host's `HostSpec` as `spec.<field>`),
    for the host variable; `encode` spells it for the scripts."""

    key: str
    kind: Kind
    doc: str
    default: Any = None
    default_text: str | None = None
    low: int | None = None
    high: int | None = None
    choices: tuple[str, ...] = ()
    host_var: str | None = None
    attr: str = ""
    encode: Callable[[Any], str] | None = None
    host_doc: str = ""

    @property
    def only(self) -> str:
        """A host group's field that one source alone accepts: its doc starts `hcloud:` or `dedicated:`."""
        head = self.doc.split(":", 1)[0]
        return head if head in ("hcloud", "dedicated") else ""

    @property
    def section(self) -> str:
        return self.key.split(".")[0].split("[")[0]

    @property
    def field(self) -> str:
        """The name inside its object (`port` of `endpoint.port`)."""
        return self.key.rsplit(".", 1)[-1]

    @property
    def shown_default(self) -> str:
        if self.default_text is not None:
            return self.default_text
        if self.default is REQUIRED:
            return "required"
        if self.default is None:
            return "none"
        if isinstance(self.default, bool):
            return f"`{_flag(self.default)}`"
        if isinstance(self.default, tuple | list):
            return "`[]`" if not self.default else "`" + ", ".join(self.default) + "`"
        return f"`{self.default}`"

    def host_value(self, settings: Settings, spec: HostSpec) -> str:
        """The host variable's value for one host."""
        root: Any = settings
        path = self.attr
        if path.startswith("spec."):
            root, path = spec, path[len("spec."):]
        value = operator.attrgetter(path)(root)
        if self.encode is not None:
            return self.encode(value)
        if self.kind == "boolean":
            return _flag(value)
        if self.kind in ("list", "cidrs"):
            return _words(value)
        return "" if value is None else str(value)


SECTIONS: dict[str, str] = {
    "hosts": "The runtime hosts, as a list of groups: `source: hcloud` groups are new Hetzner Cloud "
    "servers (gVisor; Hetzner Cloud has no KVM), `source: dedicated` groups adopt existing "
    "KVM-capable Debian 13 machines by address.",
    "isolation": "Which isolation the stack accepts.",
    "kata": "Kata Containers, on hosts with KVM.",
    "gvisor": "gVisor (runsc), on hosts without usable KVM.",
    "network": "The Hetzner Cloud private network the endpoint listens on.",
    "admin": "Who may reach the hosts' SSH, and with which keys.",
    "endpoint": "The Docker Engine API over mutual TLS on each host's private address, behind the "
    "endpoint policy (docs/endpoint-policy.md).",
    "artifacts": "Where the pinned release files come from; hashes are always checked.",
    "verify": "The verify step that runs on every host before it is exported.",
    "egress": "What containers may send to the internet (the metadata service, the private "
    "network and the host are never reachable).",
    "canary": "Continuous verification: each host re-runs a named subset of verify's checks on a "
    "timer, with a credential that never leaves the host (docs/operations.md).",
    "gc": "Garbage collection on each host: exited containers, unused images and the build cache, "
    "never what a running container uses.",
    "metrics": "Each host's node exporter (Debian's `prometheus-node-exporter`) on its private address, "
    "behind the host filter.",
    "certificates": "The endpoint's leaf certificates (docs/certificates.md).",
    "goldenImage": "Cloud hosts boot from a snapshot the program builds (base OS and install done once), "
    "not from stock Debian (docs/golden-images.md).",
    "rollout": "How hosts are replaced (a new golden image) and retired (drained before they go).",
    "dedicatedSshKey": "The SSH private key for dedicated hosts.",
}

S = Setting
SETTINGS: tuple[Setting, ...] = (
    S("hosts", "groups", "host groups, each with a `name` and a `source` (fields below); a host's "
      "name is its group's name and its number, or its machine's `name`", default=REQUIRED),
    S("hosts[].name", "string", "the group's name: a hostname label of at most 40 characters, unique "
      "in the stack", default=REQUIRED),
    S("hosts[].source", "choice", "`hcloud` (new Hetzner Cloud servers; needs `isolation: sandbox`) or "
      "`dedicated` (existing machines adopted by address)", default=REQUIRED, choices=("hcloud", "dedicated"),
      host_var="HOST_SOURCE", attr="spec.source",
      host_doc="only a Cloud server's own `authorized_keys` is cleaned"),
    S("hosts[].count", "integer", "hcloud: how many servers the group has", default=REQUIRED,
      low=1, high=MAX_HOSTS_PER_GROUP),
    S("hosts[].serverType", "string", "hcloud: a Hetzner Cloud server type such as `cx23` or `cpx31`; with "
      "a Hetzner token it is looked up in preview, and Arm `cax` types are refused while the catalog has "
      "amd64 files only", default=REQUIRED),
    S("hosts[].location", "choice", "hcloud: a location in `network.zone`",
      default=REQUIRED, choices=tuple(loc for locs in ZONE_LOCATIONS.values() for loc in locs)),
    S("hosts[].image", "choice", "hcloud: the server image", default=SUPPORTED_IMAGES[0],
      choices=SUPPORTED_IMAGES),
    S("hosts[].addresses", "list", "dedicated: the machines to adopt, each "
      "`{address, privateAddress, hostKey, name?}`; one machine (address and `sshPort`) and one "
      "`privateAddress` once", default=REQUIRED),
    S("hosts[].addresses[].name", "string", "dedicated: the host's name", default_text="`<group>-<n>`"),
    S("hosts[].addresses[].address", "string", "dedicated: the IP address or host name SSH reaches the "
      "machine on (no `user@` or `:port`)", default=REQUIRED),
    S("hosts[].addresses[].privateAddress", "address", "dedicated: the private IPv4 address (RFC 1918 or "
      "100.64.0.0/10) the Docker endpoint listens on", default=REQUIRED),
    S("hosts[].addresses[].hostKey", "string", "dedicated: the machine's SSH host public key, so the "
      "program never talks to an impostor", default_text="required unless `trustOnFirstUse`"),
    S("hosts[].sshUser", "string", "dedicated: the account the program connects as (a user name)",
      default="root", host_var="SSH_USER", attr="spec.ssh_user",
      host_doc="the account the program connects as (`root` on Cloud servers)"),
    S("hosts[].sshPort", "integer", "dedicated: the SSH port the program dials", default=22, low=1, high=65535),
    S("hosts[].sshdPort", "integer", "dedicated: the port sshd listens on inside the host, when a port "
      "forward differs; every port a host listens on (`sshdPort`, `endpoint.port`) is distinct",
      default_text="`sshPort` (22 on Cloud servers)", low=1, high=65535, host_var="SSH_PORT",
      attr="spec.sshd_port"),
    S("hosts[].trustOnFirstUse", "boolean", "dedicated: accept whatever host key answers first, instead "
      "of each machine's `hostKey`", default=False),
    S("isolation", "choice", "`vm` (Kata only; KVM required on every host) or `sandbox` (Kata where the "
      "host has KVM, else gVisor)", default="vm", choices=ISOLATIONS, host_var="ISOLATION", attr="isolation"),
    S("kata.hypervisor", "choice", "`qemu` or `clh` (Cloud Hypervisor, experimental: Kata tests Docker "
      "only with QEMU, so `clh` needs `kata.allowUntestedHypervisor: true` and every preview warns); "
      "Firecracker is refused (needs devmapper, untested with Docker). Each host runs `kata-runtime check` "
      "with the chosen hypervisor's own configuration before configure changes anything",
      default=KATA_DOCKER_TESTED_HYPERVISORS[0], choices=KATA_HYPERVISORS, host_var="KATA_HYPERVISOR",
      attr="kata.hypervisor"),
    S("kata.allowUntestedHypervisor", "boolean", "accept a hypervisor Kata does not test with Docker "
      "(`clh`) as an experiment; reaches no host, only the preview's check", default=False),
    S("gvisor.runsc", "choice", "which runsc a gVisor host runs: `release` (gVisor's release pinned in the "
      "catalog, one archive with its sidecars, sha256-checked, unpacked under `/opt/functions-runtime/gvisor/<version>/`) or `debian` (Debian 13's "
      "`runsc` package, a 2024-07-29 build: an explicit fallback)", default="release",
      choices=GVISOR_RUNSC_SOURCES, host_var="GVISOR_RUNSC", attr="gvisor.runsc"),
    S("gvisor.allowHostNetworkStack", "boolean", "accept `runsc --network=host` (socket calls reach the "
      "host kernel's network stack) on a host whose runsc cannot use gVisor's own network stack (Debian's "
      "runsc on Linux 6.11+); without it such a host is refused, with nothing changed. The report and the "
      "endpoint say each runtime's network (`docs/host-contract.md`)", default=False,
      host_var="GVISOR_ALLOW_HOST_NETWORK", attr="gvisor.allow_host_network_stack"),
    S("network.ipRange", "string", "the Cloud private network: RFC 1918, not overlapping Docker's "
      "`172.17.0.0/16` nor the hosts' CNI network `10.4.250.0/24`", default="10.0.0.0/16"),
    S("network.subnet", "string", "the Cloud servers' subnet, inside `network.ipRange`", default="10.0.1.0/24"),
    S("network.zone", "choice", "the network zone of the subnet and of every Cloud server",
      default="eu-central", choices=tuple(ZONE_LOCATIONS)),
    S("admin.sshKeys", "list", "OpenSSH public keys granted on every host (Cloud and dedicated) to the "
      "account the program connects as, in a file the program owns; a key removed from the list is revoked "
      "on the next `pulumi up` (only the keys step re-runs). Parsed: ed25519, ECDSA, FIDO "
      "`sk-ssh-ed25519@openssh.com` / `sk-ecdsa-sha2-nistp256@openssh.com`, RSA of 3072 bits or more; "
      "exactly one key per entry, no options", default=()),
    S("admin.sshSourceCidrs", "cidrs", "who may reach SSH, including where `pulumi up` runs", default=REQUIRED,
      host_var="ADMIN_CIDRS", attr="admin.ssh_source_cidrs"),
    S("admin.allowSshFromAnywhere", "boolean", "accept SSH from anywhere: ranges that together cover a "
      "quarter of IPv4 or of IPv6's 2000::/3 (e.g. `0.0.0.0/0`, or `0.0.0.0/1` + `128.0.0.0/1`)",
      default=False),
    S("endpoint.port", "integer", "Docker's mTLS port on the private address", default=2376, low=1024,
      high=65535, host_var="ENDPOINT_PORT", attr="endpoint.port"),
    S("endpoint.allowedCidrs", "cidrs", "who may reach the endpoint; private ranges only unless "
      "`endpoint.allowPublicSources`; never anywhere, however split", default_text="`network.ipRange`",
      host_var="ENDPOINT_CIDRS", attr="endpoint.allowed_cidrs"),
    S("endpoint.allowPublicSources", "boolean", "accept public ranges in `endpoint.allowedCidrs` (never "
      "anywhere)", default=False),
    S("endpoint.limits.maxMemoryMiB", "integer", "the most memory one container may ask for through the "
      "endpoint (a create must carry `--memory`; a gVisor sandbox's own memory counts)",
      default=ENDPOINT_MAX_MEMORY_MIB_DEFAULT, low=ENDPOINT_MAX_MEMORY_MIB_MIN, high=ENDPOINT_MAX_MEMORY_MIB_MAX,
      host_var="LIMIT_MAX_MEMORY_MIB", attr="endpoint.limits.max_memory_mib"),
    S("endpoint.limits.maxPids", "integer", "the most PIDs one container may ask for (a create must carry "
      "`--pids-limit`; a gVisor sandbox's own threads count)", default=ENDPOINT_MAX_PIDS_DEFAULT,
      low=ENDPOINT_MAX_PIDS_MIN, high=ENDPOINT_MAX_PIDS_MAX, host_var="LIMIT_MAX_PIDS",
      attr="endpoint.limits.max_pids"),
    S("endpoint.limits.maxCpus", "cpus", "the most CPUs one container may ask for (a create must carry "
      "`--cpus`), with at most 3 decimals", default=ENDPOINT_MAX_MILLICPUS_DEFAULT,
      default_text=f"`{ENDPOINT_MAX_MILLICPUS_DEFAULT / 1000:g}`", low=ENDPOINT_MAX_MILLICPUS_MIN,
      high=ENDPOINT_MAX_MILLICPUS_MAX, host_var="LIMIT_MAX_MILLICPUS", attr="endpoint.limits.max_millicpus",
      host_doc="in thousandths of a CPU (verify's containers ask for no more)"),
    S("endpoint.revoked.serials", "list", "client certificates the endpoint refuses, by serial (hex, colons "
      "allowed, as `openssl x509 -noout -serial` prints it, `serial=` included); applied without restarting "
      "anything or re-keying the fleet", default=(), host_var="REVOKED_SERIALS", attr="endpoint.revoked.serials",
      host_doc="lowercase hex"),
    S("endpoint.revoked.commonNames", "list", "client certificates the endpoint refuses, by common name",
      default=(), host_var="REVOKED_NAMES", attr="endpoint.revoked.common_names", encode="\n".join,
      host_doc="one a line (a name may hold spaces)"),
    S("endpoint.registries", "list", "the registry hosts (`host[:port]`, lower case) the consumer may pull "
      "from through the endpoint: the large public registries by default; list a stack's own mirror here. "
      "Never a loopback, private, link-local or CGNAT address, nor `localhost`, whatever the list says",
      default=DEFAULT_REGISTRIES, default_text="the large public registries (" + ", ".join(
          f"`{r}`" for r in DEFAULT_REGISTRIES) + ")", host_var="ENDPOINT_REGISTRIES",
      attr="endpoint.registries"),
    S("artifacts.mirror", "string", "base URL serving the catalog's files by name (air-gapped sites; a "
      "fleet cache for the 1.55 GB Kata archive); hashes are still checked. No `user:password@`, query string "
      "or fragment: the URL is plain in command inputs, state and logs", host_var="ARTIFACT_MIRROR",
      attr="artifacts.mirror",
      host_doc="empty, or a base URL: files are fetched from `$ARTIFACT_MIRROR/<file name of the catalog URL>`"),
    S("artifacts.catalog", "string", "the pinned catalog (`name version digest url`, digests "
      "`sha256:<hex>` or `sha512:<hex>`); a file in the project or in an `artifacts.localDirs` directory",
      default="catalog/artifacts.tsv"),
    S("artifacts.localDirs", "list", "absolute directories outside the project that hold this stack's local "
      "artifacts (`artifacts.catalog`, `verify.imageArchive`); never under `/proc`, `/sys`, `/dev`, `/etc`, "
      "`/run`, `/boot` or a credentials directory (`.ssh`, `.gnupg`, `.aws`, `.kube`, `.docker`, `.pulumi`, "
      "...), nor a home directory's root or a top-level directory", default=()),
    S("verify.image", "string", f"built on each host from Debian's `busybox-static` when it is "
      f"`{BUSYBOX_VERIFY_IMAGE}`; any other image must be a reference pinned `@sha256:` (or the image ID of "
      "`verify.imageArchive`)", default=BUSYBOX_VERIFY_IMAGE, host_var="VERIFY_IMAGE", attr="verify.image",
      host_doc=f"an image reference; `{BUSYBOX_VERIFY_IMAGE}` means: build it from the host's busybox-static"),
    S("verify.imageArchive", "string", "a `docker save` tarball (at most 512 MiB, holding `verify.image` when "
      "that is an image ID) in the project or an `artifacts.localDirs` directory, pushed to each host before "
      "verify"),
    S("verify.coldStartRuns", "integer", "runs for the cold-start median; odd, so the median is a real run",
      default=COLD_START_RUNS_DEFAULT, low=COLD_START_RUNS_MIN, high=COLD_START_RUNS_MAX,
      host_var="COLD_START_RUNS", attr="verify.cold_start_runs"),
    S("verify.outsideProbe", "string", "`ADDR:PORT` of an internet service every host reaches: the positive "
      "control a sandbox must reach before its blocked targets count; `none` skips it, and the report says so",
      default=VERIFY_OUTSIDE_PROBE_DEFAULT, default_text="`{}:{}`".format(*VERIFY_OUTSIDE_PROBE_DEFAULT),
      host_var="VERIFY_OUTSIDE", attr="verify.outside_probe", encode=_outside,
      host_doc="`ADDR PORT`, or `none`"),
    S("verify.nameProbe", "string", "a DNS name every host resolves: a container of each runtime on Docker's "
      "default bridge must resolve it through its own nameserver, which the host asks too (the positive "
      "control); `none` skips it, and the report says so", default=VERIFY_NAME_PROBE_DEFAULT,
      default_text=f"`{VERIFY_NAME_PROBE_DEFAULT}`", host_var="VERIFY_NAME_PROBE", attr="verify.name_probe",
      encode=_name, host_doc="a DNS name, or `none`"),
    S("verify.nerdctl", "boolean", "verify also runs each runtime through nerdctl (and always through "
      "`ctr run --cni`); `false` only where nerdctl cannot run, as in the lab, and the report shows the skip",
      default=True, host_var="VERIFY_NERDCTL", attr="verify.nerdctl"),
    S("egress.smtp", "choice", f"`block` resets containers' connections to TCP "
      f"{' and '.join(str(p) for p in SMTP_PORTS)} (providers lock servers that send spam); `allow` lets "
      "them through", default="block", choices=("block", "allow"), host_var="EGRESS_BLOCK_SMTP",
      attr="egress.block_smtp", encode=_flag, host_doc="`true` for `block`"),
    S("egress.newConnectionsPerSecond", "integer", "new outbound connections per container address and "
      "second (a scan opens thousands); `0` turns the limit off", default=EGRESS_NEW_PER_SECOND_DEFAULT, low=0,
      high=EGRESS_NEW_PER_SECOND_MAX, host_var="EGRESS_NEW_PER_SECOND", attr="egress.new_per_second"),
    S("egress.newConnectionsBurst", "integer", "the burst above that rate", default=EGRESS_NEW_BURST_DEFAULT,
      low=1, high=EGRESS_NEW_PER_SECOND_MAX, host_var="EGRESS_NEW_BURST", attr="egress.new_burst"),
    S("egress.allowedCidrs", "cidrs", "internet destinations exempt from the SMTP block and the rate limit "
      "(a mail relay); never a private, link-local, CGNAT, loopback or multicast range, nor together a large "
      "share of the internet", default=(), host_var="EGRESS_ALLOWED_CIDRS", attr="egress.allowed_cidrs"),
    S("canary.intervalSeconds", "integer", "how often each host's canary runs (a systemd timer); a broken "
      "runtime shows as failing within two intervals", default=CANARY_INTERVAL_DEFAULT, low=CANARY_INTERVAL_MIN,
      high=CANARY_INTERVAL_MAX, host_var="CANARY_INTERVAL", attr="canary.interval_seconds"),
    S("canary.drainOnFailure", "boolean", "drain the host (the endpoint refuses new containers) while its "
      "canary fails, and resume when it passes; an operator's own drain is never lifted. Off by default: a cause "
      "all hosts share (the name probe's resolver, the outside probe) would drain the whole fleet at once",
      default=False, host_var="CANARY_DRAIN", attr="canary.drain_on_failure"),
    S("gc.containerTtlMinutes", "integer", "exited containers are removed this long after they finished "
      "(never a running one)", default=GC_CONTAINER_TTL_DEFAULT, low=1, high=GC_CONTAINER_TTL_MAX,
      host_var="GC_CONTAINER_TTL_MINUTES", attr="gc.container_ttl_minutes"),
    S("gc.imageBudgetGiB", "integer", "the total size of unused images a host keeps (oldest go first); "
      "never an image a container uses, nor the verify image", default=GC_IMAGE_BUDGET_DEFAULT, low=0,
      high=GC_IMAGE_BUDGET_MAX, host_var="GC_IMAGE_BUDGET_GIB", attr="gc.image_budget_gib"),
    S("gc.diskWatermarkPercent", "integer", "above this use of Docker's filesystem, GC removes unused images "
      "beyond the budget too, and the metrics say the host is over its watermark",
      default=GC_WATERMARK_DEFAULT, low=GC_WATERMARK_MIN, high=GC_WATERMARK_MAX,
      host_var="GC_WATERMARK_PERCENT", attr="gc.disk_watermark_percent"),
    S("metrics.allowedCidrs", "cidrs", "who may read the node exporter on each host's private address: your "
      "Prometheus, and the functions service, which reads each host's canary there (components/host_health.py); "
      "private ranges only, never anywhere", default_text="`endpoint.allowedCidrs`", host_var="METRICS_CIDRS",
      attr="metrics.allowed_cidrs"),
    S("certificates.rotateAfterDays", "integer", "leaf certificates (the hosts' server certificates, the "
      "consumers', verify's and the canaries' client certificates; each valid for two years) are re-issued by the "
      "first `pulumi up` at least this many days after they were issued. Consumers keep working across a server "
      "certificate's rotation: the CA stays", default=ROTATE_AFTER_DAYS_DEFAULT, low=ROTATE_AFTER_DAYS_MIN,
      high=ROTATE_AFTER_DAYS_MAX),
    S("goldenImage.enabled", "boolean", "build a golden image for the Cloud hosts and boot them from it: a "
      "builder server runs the pipeline through install, is sealed and snapshotted, and removed by the next "
      "`pulumi up`. Off by default: turning it on replaces every Cloud host (one rollout), which should be a "
      "choice, and a fleet of one or two hosts gains little", default=False),
    S("goldenImage.keep", "integer", "golden images kept for rollback, the current one included; older ones "
      "are deleted (never one a server still uses)", default=GOLDEN_KEEP_DEFAULT, low=1, high=GOLDEN_KEEP_MAX),
    S("goldenImage.maxAgeDays", "integer", "a new image is built by the first `pulumi up` in each period of "
      "this many days (counted from 1970-01-01, so every stack agrees), even when nothing else changed: Debian "
      "security updates in the image stay at most this old", default=GOLDEN_MAX_AGE_DAYS_DEFAULT, low=1,
      high=GOLDEN_MAX_AGE_DAYS_MAX),
    S("rollout.batchSize", "integer", "Cloud hosts replaced at once when their image changes; the next batch "
      "starts when the last one is verified", default=ROLLOUT_BATCH_DEFAULT, low=1, high=MAX_HOSTS_PER_GROUP),
    S("rollout.drainTimeoutSeconds", "integer", "how long a retiring host (replaced, or removed from the stack) "
      "refuses new containers and waits for running ones before it goes; a timeout is reported, not fatal",
      default=ROLLOUT_DRAIN_TIMEOUT_DEFAULT, low=0, high=ROLLOUT_DRAIN_TIMEOUT_MAX, host_var="DRAIN_TIMEOUT",
      attr="rollout.drain_timeout_seconds"),
    S("dedicatedSshKey", "secret", "secret: the private key root accepts on the dedicated hosts; checked at "
      "preview (unencrypted OpenSSH or PEM; ed25519, ECDSA or RSA of 3072 bits or more), never quoted. Set it "
      "with `pulumi config set --secret functions-runtime:dedicatedSshKey < key`. The only secret setting: any "
      "other one stored with `--secret` is refused, since the program uses it in plain",
      default_text="required with dedicated hosts"),
)
del S

BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}
# The namespace's top-level keys, in declaration order.
TOP_LEVEL_KEYS: tuple[str, ...] = tuple(dict.fromkeys(s.section for s in SETTINGS))
SECRET_KEYS: tuple[str, ...] = tuple(s.key for s in SETTINGS if s.kind == "secret")


def setting(name: str) -> Setting:
    return BY_KEY[name]


def default_of(name: str) -> Any:
    return BY_KEY[name].default


def fields_of(prefix: str) -> tuple[str, ...]:
    """The field names an object accepts: `fields_of("endpoint")` is
    (port, allowedCidrs, ..., limits, revoked)."""
    names: list[str] = []
    for s in SETTINGS:
        if s.key.startswith(prefix + ".") or s.key.startswith(prefix + "[]."):
            rest = s.key[len(prefix) + 1:].removeprefix("].")
            first = rest.split(".")[0].split("[")[0]
            if first not in names:
                names.append(first)
    return tuple(names)


def host_variables() -> dict[str, Setting]:
    """Host variable -> the setting it carries."""
    return {s.host_var: s for s in SETTINGS if s.host_var}
