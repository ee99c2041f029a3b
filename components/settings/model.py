"""What a stack's settings are once checked: the typed values the program uses.

Defaults live in the declarations (`declarations.py`), not here: a field's
default below is read from there, so it is written once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pulumi

from components.catalog import Catalog
from components.settings.declarations import default_of

NAMESPACE = "functions-runtime"
PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent

Isolation = Literal["vm", "sandbox"]
Source = Literal["hcloud", "dedicated"]


def key(name: str) -> str:
    """The full config key a message names: `functions-runtime:<name>`."""
    return f"{NAMESPACE}:{name}"


class SettingsError(Exception):
    """All configuration problems of a stack, each naming its config key."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"the stack configuration has {len(self.problems)} problem(s); "
            f"nothing was changed:\n{lines}"
        )


@dataclass(frozen=True)
class KataSettings:
    hypervisor: str = default_of("kata.hypervisor")
    # The stack accepts a hypervisor Kata does not test with Docker (clh) as an experiment.
    allow_untested_hypervisor: bool = default_of("kata.allowUntestedHypervisor")


@dataclass(frozen=True)
class GvisorSettings:
    """Which runsc a host runs, and whether it may fall back to the host's network stack."""

    runsc: str = default_of("gvisor.runsc")
    allow_host_network_stack: bool = default_of("gvisor.allowHostNetworkStack")


@dataclass(frozen=True)
class NetworkSettings:
    ip_range: str = default_of("network.ipRange")
    subnet: str = default_of("network.subnet")
    zone: str = default_of("network.zone")


@dataclass(frozen=True)
class AdminSettings:
    ssh_keys: tuple[str, ...]
    ssh_source_cidrs: tuple[str, ...]


@dataclass(frozen=True)
class EndpointLimits:
    """The largest limits a container may ask for through the endpoint
    (the plugin refuses a create without limits, or above these)."""

    max_memory_mib: int = default_of("endpoint.limits.maxMemoryMiB")
    max_pids: int = default_of("endpoint.limits.maxPids")
    max_millicpus: int = default_of("endpoint.limits.maxCpus")


@dataclass(frozen=True)
class EndpointRevocations:
    """Client certificates the endpoint refuses: serials (lowercase hex,
    no separators) and common names."""

    serials: tuple[str, ...] = ()
    common_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class EndpointSettings:
    port: int
    allowed_cidrs: tuple[str, ...]
    limits: EndpointLimits = EndpointLimits()
    revoked: EndpointRevocations = EndpointRevocations()
    # Where the consumer may pull from (the endpoint policy's list).
    registries: tuple[str, ...] = default_of("endpoint.registries")


@dataclass(frozen=True)
class EgressSettings:
    """What containers may send to the internet (the blocked ranges are
    fixed): SMTP, and how fast each container address opens connections,
    so one abusive function does not get the host locked by its provider."""

    block_smtp: bool = default_of("egress.smtp") == "block"
    new_per_second: int = default_of("egress.newConnectionsPerSecond")
    new_burst: int = default_of("egress.newConnectionsBurst")
    # Destinations exempt from both (a mail relay, a busy API).
    allowed_cidrs: tuple[str, ...] = ()


@dataclass(frozen=True)
class ArtifactSettings:
    mirror: str | None
    catalog: Catalog
    # Directories outside the project the stack names for local artifacts.
    local_dirs: tuple[Path, ...] = ()


@dataclass(frozen=True)
class VerifySettings:
    image: str
    image_archive: Path | None
    cold_start_runs: int
    # The internet address (address, port) a sandbox must reach before its
    # blocked targets count; None when the stack says "none".
    outside_probe: tuple[str, int] | None = default_of("verify.outsideProbe")
    # Whether verify also runs each runtime through nerdctl (false only where
    # nerdctl is a stand-in, as in the lab; the report says it was skipped).
    nerdctl: bool = default_of("verify.nerdctl")
    # The name a container on the default bridge must resolve; None when the stack says "none".
    name_probe: str | None = default_of("verify.nameProbe")


@dataclass(frozen=True)
class CanarySettings:
    interval_seconds: int = default_of("canary.intervalSeconds")
    drain_on_failure: bool = default_of("canary.drainOnFailure")


@dataclass(frozen=True)
class GcSettings:
    """What GC removes on each host, and the disk use it aims to stay under."""

    container_ttl_minutes: int = default_of("gc.containerTtlMinutes")
    image_budget_gib: int = default_of("gc.imageBudgetGiB")
    disk_watermark_percent: int = default_of("gc.diskWatermarkPercent")


@dataclass(frozen=True)
class MetricsSettings:
    # Who may read the node exporter (endpoint.allowedCidrs unless the stack says).
    allowed_cidrs: tuple[str, ...] = ()


@dataclass(frozen=True)
class CertificateSettings:
    rotate_after_days: int = default_of("certificates.rotateAfterDays")


@dataclass(frozen=True)
class GoldenImageSettings:
    enabled: bool = default_of("goldenImage.enabled")
    keep: int = default_of("goldenImage.keep")
    max_age_days: int = default_of("goldenImage.maxAgeDays")


@dataclass(frozen=True)
class RolloutSettings:
    batch_size: int = default_of("rollout.batchSize")
    drain_timeout_seconds: int = default_of("rollout.drainTimeoutSeconds")


@dataclass(frozen=True)
class HostSpec:
    """One runtime host as the stack configures it, flattened from its group.

    The only Host* type: the machine it becomes is `machine.Machine`, its
    entry in the endpoint document `endpoint.EndpointHost`.
    """

    name: str
    group: str
    source: Source
    # hcloud hosts
    server_name: str | None = None
    server_type: str | None = None
    location: str | None = None
    image: str | None = None
    placement_index: int | None = None
    # dedicated hosts
    address: str | None = None
    private_address: str | None = None
    ssh_port: int = 22
    # The port sshd listens on inside the host; differs from ssh_port only
    # behind a port forward (the hostlab VM).
    sshd_port: int = 22
    ssh_user: str = "root"
    host_key: str | None = None
    # The config key of the host's group ("functions-runtime:hosts[0]"), for
    # problems found after parsing (the hcloud lookup).
    config_key: str = ""


@dataclass(frozen=True)
class Settings:
    stack: str
    isolation: Isolation
    kata: KataSettings
    network: NetworkSettings
    admin: AdminSettings
    endpoint: EndpointSettings
    artifacts: ArtifactSettings
    verify: VerifySettings
    hosts: tuple[HostSpec, ...]
    egress: EgressSettings = EgressSettings()
    dedicated_ssh_key: pulumi.Output[str] | None = None
    # Whether a Hetzner token is configured (HCLOUD_TOKEN or hcloud:token),
    # so server types and locations can be looked up; never the token.
    hcloud_token_set: bool = False
    # What the stack accepts on purpose but should hear about at every
    # preview, each naming its config key (read_settings logs them).
    warnings: tuple[str, ...] = ()
    gvisor: GvisorSettings = GvisorSettings()
    canary: CanarySettings = CanarySettings()
    gc: GcSettings = GcSettings()
    metrics: MetricsSettings = MetricsSettings()
    certificates: CertificateSettings = CertificateSettings()
    golden_image: GoldenImageSettings = GoldenImageSettings()
    rollout: RolloutSettings = RolloutSettings()

    @property
    def hcloud_hosts(self) -> tuple[HostSpec, ...]:
        return tuple(h for h in self.hosts if h.source == "hcloud")

    @property
    def dedicated_hosts(self) -> tuple[HostSpec, ...]:
        return tuple(h for h in self.hosts if h.source == "dedicated")
