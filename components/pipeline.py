"""A host's steps as a table, and the code that chains them into remote commands.

`HOST_STEPS` is the whole provisioning of a host, in order: what each step
runs, which variables (and so which settings) it reads, which payload files,
what it takes on stdin, how long it may take. `run_steps` turns any prefix of
that table into `command.remote.Command` resources on one machine; a builder
that stops after install is `run_steps(..., steps_through("install"))`.

Each step carries in `triggers` the machine's identity and a fingerprint
chained through every step before it: its own command line (with the values
of the variables it reads), its script, lib.sh, the contract, the payload
files it reads, the public half of its stdin. A step re-runs when one of
those or an earlier step changed, or the machine was replaced, never
otherwise; nothing time- or random-based enters an input.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pulumi
import pulumi_command as command

from components.contract import CONTRACT_ENV, REMOTE_ROOT, VERIFY_ENV
from components.machine import Machine
from components.payload import AUTHZ_FILES, VERIFY_FILES, Payload
from components.settings import HostSpec, Settings
from components.settings.declarations import Setting, host_variables

# Bounds of the remote steps. cloud-init installs the base packages on first
# boot; 15 minutes is far beyond a healthy boot and bounds a stuck apt.
CLOUD_INIT_TIMEOUT_SECONDS = 900
STEP_TIMEOUT = "20m"
# The Kata archive is about 1.55 GB; the install step may take a while.
INSTALL_TIMEOUT = "40m"
VERIFY_IMAGE_REMOTE_PATH = f"{REMOTE_ROOT}/verify-image.tar"
LIB = "scripts/lib.sh"

StepKind = Literal["standalone", "script", "upload"]


@dataclass(frozen=True)
class Step:
    """One row of the pipeline.

    kind: `standalone` steps run before the payload exists: their script is
    sent as the remote command itself. `script` steps run
    `$FR_ROOT/scripts/<script>` from the payload, with lib.sh and the
    contract. `upload` steps copy a local file the stack names (skipped when
    it names none).
    """

    name: str
    kind: StepKind
    script: str = ""
    env: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    stdin: str | None = None
    timeout: str = STEP_TIMEOUT


# What every script step reads through lib.sh.
SCRIPT_COMMON_ENV = ("FR_ROOT", "FR_HOST")

HOST_STEPS: tuple[Step, ...] = (
    Step("wait", "standalone", "wait_for_boot.sh", env=("CLOUD_INIT_TIMEOUT",)),
    Step(
        "payload",
        "standalone",
        "unpack_payload.sh",
        env=("FR_ROOT", "PAYLOAD_DIRS", "PAYLOAD_SHA256"),
        stdin="payload",
    ),
    Step(
        "bootstrap",
        "script",
        "bootstrap_base.sh",
        reads=("base/packages.txt", "base/modules.conf", "base/sshd.conf", "base/apt-update-stamp.conf"),
    ),
    Step(
        "install",
        "script",
        "install_runtime.sh",
        # Peers first (dedicated hosts: one download per fleet), then the
        # mirror or the release URL; a host named to share serves its files.
        env=("ISOLATION", "GVISOR_RUNSC", "ARTIFACT_MIRROR", "ARTIFACT_PEERS", "ARTIFACT_SHARE"),
        reads=("catalog/artifacts.tsv",),
        timeout=INSTALL_TIMEOUT,
    ),
    Step(
        "firewall",
        "script",
        "host_firewall.sh",
        env=(
            "ADMIN_CIDRS",
            "ENDPOINT_CIDRS",
            "ENDPOINT_PORT",
            "SSH_PORT",
            "EGRESS_BLOCK_SMTP",
            "EGRESS_NEW_PER_SECOND",
            "EGRESS_NEW_BURST",
            "EGRESS_ALLOWED_CIDRS",
            "METRICS_CIDRS",
            "ARTIFACT_PEER_CIDRS",
        ),
    ),
    Step(
        "configure",
        "script",
        "configure_runtime.sh",
        env=(
            "ISOLATION",
            "KATA_HYPERVISOR",
            "GVISOR_RUNSC",
            "GVISOR_ALLOW_HOST_NETWORK",
            "ENDPOINT_PORT",
            "PRIVATE_ADDRESS",
            "LIMIT_MAX_MEMORY_MIB",
            "LIMIT_MAX_PIDS",
            "LIMIT_MAX_MILLICPUS",
            "REVOKED_SERIALS",
            "REVOKED_NAMES",
            "ENDPOINT_REGISTRIES",
        ),
        # The endpoint policy: the plugin dockerd asks before every request;
        # the catalog names the gVisor release's directory (its version).
        reads=("catalog/artifacts.tsv", *AUTHZ_FILES),
        # dockerd trusts the stack CA (consumers) and this host's own
        # verifier CA (its verify step only).
        stdin="endpoint-tls",
    ),
    # The stack's verify.imageArchive, when it names one.
    Step("verify-image", "upload"),
    Step(
        "verify",
        "script",
        "verify_host.sh",
        env=VERIFY_ENV,
        reads=("catalog/artifacts.tsv", *VERIFY_FILES),
        stdin="verify-tls",
    ),
    # Day two, once the host is verified: the canary (verify's own checks on
    # a timer, VERIFY_ENV in its unit), GC, the node exporter, security updates.
    Step(
        "upkeep",
        "script",
        "configure_upkeep.sh",
        env=(
            *VERIFY_ENV,
            "CANARY_INTERVAL",
            "CANARY_DRAIN",
            "GC_CONTAINER_TTL_MINUTES",
            "GC_IMAGE_BUDGET_GIB",
            "GC_WATERMARK_PERCENT",
        ),
        stdin="canary-tls",
    ),
    # Last, so a key change re-runs nothing else.
    Step("keys", "script", "grant_ssh_keys.sh", env=("SSH_USER", "HOST_SOURCE"), stdin="ssh-keys"),
)


# A golden-image builder's own last step: the disk made safe to clone
# (no host keys, machine-id, cloud-init state or builder access left).
SEAL_STEP = Step("seal", "script", "seal_image.sh")
# The delete-time step of every host: drain, wait for running functions,
# and on a dedicated host decommission (it cannot be deleted).
RETIRE_STEP = Step("retire", "script", "retire_host.sh", env=("DRAIN_TIMEOUT", "HOST_SOURCE"))
# The SSH dials a retiring host gets: an unreachable one fails the deletion
# in about a minute, not ten (docs/golden-images.md says how to let it go).
RETIRE_DIAL_ERROR_LIMIT = 6


def steps_through(last: str, steps: Sequence[Step] = HOST_STEPS) -> tuple[Step, ...]:
    """The table up to and including `last` (a snapshot builder stops early)."""
    names = [s.name for s in steps]
    if last not in names:
        raise ValueError(f"no step {last!r}; the steps are {', '.join(names)}")
    return tuple(steps[: names.index(last) + 1])


@dataclass(frozen=True)
class PipelineInputs:
    """What a host's variables are computed from."""

    name: str
    settings: Settings
    spec: HostSpec
    payload: Payload
    private_address: pulumi.Input[str]
    # One download per fleet (dedicated hosts): the peers this host fetches
    # release files from first, where it serves its own (`address:port`),
    # and who may fetch from it.
    artifact_peers: pulumi.Input[str] = ""
    artifact_share: pulumi.Input[str] = ""
    artifact_peer_cidrs: pulumi.Input[str] = ""


@dataclass(frozen=True)
class Variable:
    """A variable the program hands a step: where its value comes from (a
    setting's key, or a fact), what a script sees, and how it is computed."""

    source: str
    value: Callable[[PipelineInputs], pulumi.Input[str]]
    doc: str = ""


def _verify_archive_remote_path(h: PipelineInputs) -> str:
    return VERIFY_IMAGE_REMOTE_PATH if h.settings.verify.image_archive is not None else ""


# Variables that carry facts, not settings.
FACT_VARIABLES: Mapping[str, Variable] = {
    "FR_ROOT": Variable("the payload's place on the host", lambda h: REMOTE_ROOT, f"`{REMOTE_ROOT}`"),
    "FR_HOST": Variable("the host's name", lambda h: h.name, "the host's name in the stack (for messages)"),
    "CLOUD_INIT_TIMEOUT": Variable(
        "fixed bound",
        lambda h: str(CLOUD_INIT_TIMEOUT_SECONDS),
        f"seconds to wait for cloud-init ({CLOUD_INIT_TIMEOUT_SECONDS})",
    ),
    "PAYLOAD_DIRS": Variable(
        "the payload", lambda h: " ".join(h.payload.top_level_dirs), "the payload's top-level directories"
    ),
    "PAYLOAD_SHA256": Variable("the payload", lambda h: h.payload.sha256, "the payload archive's sha256"),
    "PRIVATE_ADDRESS": Variable(
        "the machine's private address", lambda h: h.private_address, "the address Docker listens on"
    ),
    "ARTIFACT_PEERS": Variable(
        "the fleet's dedicated hosts",
        lambda h: h.artifact_peers,
        "empty, or base URLs of fleet peers serving the catalog's files by name, tried before "
        "`ARTIFACT_MIRROR` or the release URL (hash-checked as always)",
    ),
    "ARTIFACT_SHARE": Variable(
        "the fleet's dedicated hosts",
        lambda h: h.artifact_share,
        "empty, or `address:port` on the private network where this host serves the release files "
        "it fetched to its peers",
    ),
    "ARTIFACT_PEER_CIDRS": Variable(
        "the fleet's dedicated hosts",
        lambda h: h.artifact_peer_cidrs,
        "the peers' private addresses the host filter admits to the shared release files",
    ),
    "VERIFY_IMAGE_ARCHIVE": Variable(
        "verify.imageArchive",
        _verify_archive_remote_path,
        f"empty, or `{VERIFY_IMAGE_REMOTE_PATH}`: the `docker save` archive of `verify.imageArchive`, "
        "loaded first",
    ),
}


def _setting_variable(decl: Setting) -> Variable:
    return Variable(decl.key, lambda h: decl.host_value(h.settings, h.spec))


# Every variable a step may read: the facts, and one per declared setting
# that names a host variable (components/settings/declarations.py). A
# setting re-runs exactly the steps whose `env` names its variable.
VARIABLES: Mapping[str, Variable] = {
    **FACT_VARIABLES,
    **{name: _setting_variable(decl) for name, decl in host_variables().items()},
}


def step_env(step: Step) -> tuple[str, ...]:
    """The variables a step's command line carries."""
    common = SCRIPT_COMMON_ENV if step.kind == "script" else ()
    return tuple(sorted(set(common) | set(step.env)))


@dataclass(frozen=True)
class StdinMaterial:
    """What a step reads on stdin, and its public half for the fingerprint
    (a certificate changes the fingerprint; a private key never enters it)."""

    data: pulumi.Input[str]
    public: Sequence[pulumi.Input[str]] = ()


def fingerprint(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def _assignments(env: Mapping[str, str]) -> str:
    return " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))


def script_command(script: str, env: Mapping[str, str]) -> str:
    """`VAR=value ... bash $FR_ROOT/scripts/<script>`, with FR_ROOT spelled out.

    Variables are inlined because Debian's sshd accepts only LANG and LC_*
    through SSH `SetEnv`; values are shell-quoted and never secret (secrets
    go on stdin).
    """
    return f"{_assignments(env)} bash {REMOTE_ROOT}/scripts/{script}"


def standalone_command(script: str, text: str, env: Mapping[str, str]) -> str:
    """The script itself as the remote command, for steps that run before
    the payload is on the host."""
    return f"{_assignments(env)} bash -c {shlex.quote(text)} {script}"


def pem_stdin(*pems: pulumi.Input[str]) -> pulumi.Output[str]:
    """PEM blocks, in order, as one secret stdin (docs/host-contract.md)."""
    return pulumi.Output.secret(
        pulumi.Output.all(*pems).apply(lambda v: "".join(p if p.endswith("\n") else p + "\n" for p in v))
    )


def _public_fingerprint(parts: Sequence[pulumi.Input[str]]) -> pulumi.Output[str]:
    return pulumi.Output.all(*parts).apply(lambda v: fingerprint(*v))


def run_steps(
    owner: pulumi.Resource,
    host: PipelineInputs,
    machine: Machine,
    steps: Sequence[Step],
    stdin: Mapping[str, StdinMaterial],
    scripts_dir: Path,
    after: Mapping[str, Sequence[pulumi.Resource]] | None = None,
) -> dict[str, pulumi.Resource]:
    """Create the steps as children of `owner`, each after the one before.

    `after` names resources a step waits for besides its predecessor (a
    dedicated host's install waits for the peer it fetches from).
    """
    files = host.payload.files
    chain: pulumi.Input[str] = fingerprint(files[LIB], files[CONTRACT_ENV])
    created: dict[str, pulumi.Resource] = {}
    previous: list[pulumi.Resource] = []
    for step in steps:
        env = {name: VARIABLES[name].value(host) for name in step_env(step)}
        # Machine-derived values (the private address) are Outputs; the
        # machine's identity in the triggers already covers their change.
        static = {k: v if isinstance(v, str) else f"<{k}>" for k, v in env.items()}
        material = stdin.get(step.stdin) if step.stdin else None
        if step.stdin and material is None:
            raise ValueError(f"step {step.name} reads {step.stdin!r} on stdin, which the host does not provide")
        waits = list((after or {}).get(step.name, ()))
        opts = pulumi.ResourceOptions(parent=owner, depends_on=[*previous, *waits])
        name = f"{host.name}-{step.name}"
        if step.kind == "upload":
            resource = _upload(name, step, host, machine, opts)
            if resource is None:
                continue
            archive_sha = fingerprint(host.settings.verify.image_archive.read_bytes())  # type: ignore[union-attr]
            chain = pulumi.Output.all(chain, archive_sha).apply(lambda v: fingerprint(*v))
        else:
            if step.kind == "standalone":
                text = (scripts_dir / step.script).read_text()
                create = pulumi.Output.all(**env).apply(
                    lambda e, s=step.script, t=text: standalone_command(s, t, e)
                )
                triggers: list[Any] = [machine.id, fingerprint(standalone_command(step.script, text, static))]
            else:
                create = pulumi.Output.all(**env).apply(lambda e, s=step.script: script_command(s, e))
                own = [files[f"scripts/{step.script}"], *(files[r] for r in step.reads)]
                parts: list[Any] = [chain, script_command(step.script, static), *own]
                if material is not None and material.public:
                    parts.append(_public_fingerprint(material.public))
                chain = pulumi.Output.all(*parts).apply(lambda v: fingerprint(*v))
                triggers = [machine.id, chain]
            resource = command.remote.Command(
                name,
                connection=machine.connection,
                create=create,
                stdin=material.data if material is not None else None,
                triggers=triggers,
                opts=pulumi.ResourceOptions.merge(
                    opts,
                    pulumi.ResourceOptions(
                        custom_timeouts=pulumi.CustomTimeouts(create=step.timeout, update=step.timeout)
                    ),
                ),
            )
        created[step.name] = resource
        previous = [resource]
    return created


def retire_step(
    owner: pulumi.Resource,
    host: PipelineInputs,
    machine: Machine,
    after: Sequence[pulumi.Resource],
) -> command.remote.Command:
    """The host's delete-time step, created once the host is provisioned.

    Its `delete` drains the host and waits for running containers when the
    host leaves the stack or is replaced. Its only trigger is the machine's
    identity: a change to the script or the timeout updates it in place and
    never runs the drain on a host that stays. Deleted before its
    replacement is created, so the old host drains right after the new one
    is verified, not at the end of the whole `up`.
    """
    step = RETIRE_STEP
    env = {name: VARIABLES[name].value(host) for name in step_env(step)}
    delete = pulumi.Output.all(**env).apply(lambda e: script_command(step.script, e))
    connection = command.remote.ConnectionArgs(
        host=machine.connection.host,
        port=machine.connection.port,
        user=machine.connection.user,
        private_key=machine.connection.private_key,
        host_key=machine.connection.host_key,
        dial_error_limit=RETIRE_DIAL_ERROR_LIMIT,
        per_dial_timeout=machine.connection.per_dial_timeout,
    )
    return command.remote.Command(
        f"{host.name}-{step.name}",
        connection=connection,
        # Nothing to do while the host serves: `delete` is the step.
        create="true",
        delete=delete,
        triggers=[machine.id],
        opts=pulumi.ResourceOptions(
            parent=owner,
            depends_on=list(after),
            delete_before_replace=True,
            custom_timeouts=pulumi.CustomTimeouts(delete=f"{host.settings.rollout.drain_timeout_seconds + 600}s"),
        ),
    )


def _upload(
    name: str, step: Step, host: PipelineInputs, machine: Machine, opts: pulumi.ResourceOptions
) -> command.remote.CopyToRemote | None:
    archive = host.settings.verify.image_archive
    if archive is None:
        return None
    return command.remote.CopyToRemote(
        name,
        connection=machine.connection,
        source=pulumi.FileAsset(str(archive)),
        remote_path=VERIFY_IMAGE_REMOTE_PATH,
        triggers=[machine.id, fingerprint(archive.read_bytes())],
        opts=opts,
    )
