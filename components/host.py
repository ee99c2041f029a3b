"""RuntimeHost: machine -> boot wait -> payload -> bootstrap -> install ->
firewall -> configure -> verify, over SSH with the host key pinned.

Each remote step carries in `triggers` a fingerprint of exactly what it
pushes (its script, lib.sh, the files and settings it reads) chained with
the step before it, plus the machine's identity: a step re-runs when its
own inputs or an earlier step changed, or the machine was replaced, and
never otherwise. Nothing time- or random-based enters an input.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_command as command
import pulumi_hcloud as hcloud
import pulumi_tls as tls

from components.cloud_init import render_user_data
from components.endpoint import HostFacts, build_endpoint_host, parse_verify_report
from components.network import FleetNetwork
from components.payload import REMOTE_ROOT, Payload
from components.pki import FleetPki
from components.settings import HostSpec, Settings

# SSH waits: a new Cloud server answers SSH within a minute or two; allow
# 60 dials of 10 s each (about 10 minutes) before calling it unreachable.
DIAL_ERROR_LIMIT = 60
PER_DIAL_TIMEOUT_SECONDS = 10
# cloud-init installs the base packages on first boot; 15 minutes is far
# beyond what a healthy boot takes and bounds a stuck apt.
CLOUD_INIT_TIMEOUT_SECONDS = 900
# The Kata archive is about 1.55 GB; the install step may take a while.
INSTALL_TIMEOUT = "40m"
STEP_TIMEOUT = "20m"
METADATA_ADDRESS = "169.254.169.254"
VERIFY_IMAGE_REMOTE_PATH = f"{REMOTE_ROOT}/verify-image.tar"

# Debian's cloud-init exits 2 for recoverable warnings (deprecated keys);
# only 1 (error) and 124 (our timeout) stop the chain.
WAIT_FOR_BOOT = f"""set -eu
if command -v cloud-init >/dev/null 2>&1; then
  rc=0
  timeout {CLOUD_INIT_TIMEOUT_SECONDS} cloud-init status --wait >/dev/null 2>&1 || rc=$?
  if [ "$rc" = 124 ]; then
    echo "cloud-init did not finish within {CLOUD_INIT_TIMEOUT_SECONDS} s; see /var/log/cloud-init-output.log" >&2
    exit 1
  elif [ "$rc" != 0 ] && [ "$rc" != 2 ]; then
    echo "cloud-init failed: $(cloud-init status --long 2>&1 | tr '\\n' ' ')" >&2
    exit 1
  fi
fi
echo '{{"boot": "finished"}}'
"""

UNPACK_PAYLOAD = """set -eu
root={root}
mkdir -p "$root/state"
tmp=$(mktemp -d "$root/.payload.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
base64 -d | tar -xzf - -C "$tmp"
for d in scripts catalog base; do
  rm -rf "$root/$d.old"
  if [ -e "$root/$d" ]; then mv "$root/$d" "$root/$d.old"; fi
  mv "$tmp/$d" "$root/$d"
  rm -rf "$root/$d.old"
done
echo '{{"payload": "{sha}"}}'
"""


def fingerprint(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


def script_command(script: str, env: dict[str, str]) -> str:
    """`VAR=value ... bash /opt/functions-runtime/scripts/<script>`.

    Inlined because Debian's sshd accepts only LANG and LC_* through SSH
    `SetEnv`; values are shell-quoted and never secret (secrets go on stdin).
    """
    assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    return f"{assigns} bash {REMOTE_ROOT}/scripts/{script}"


def pem_stdin(*pems: pulumi.Input[str]) -> pulumi.Output[str]:
    """PEM blocks, in order, as one secret stdin (docs/host-contract.md)."""
    return pulumi.Output.secret(
        pulumi.Output.all(*pems).apply(lambda v: "".join(p if p.endswith("\n") else p + "\n" for p in v))
    )


def _first_network_ip(networks: Any) -> str:
    for net in networks or []:
        ip = net.get("ip") if isinstance(net, dict) else getattr(net, "ip", None)
        if ip:
            return ip
    raise ValueError("the server has no private network address")


@dataclass
class HostArgs:
    spec: HostSpec
    settings: Settings
    payload: Payload
    pki: FleetPki
    labels: dict[str, str]
    authorized_keys: list[pulumi.Input[str]] = field(default_factory=list)
    ssh_private_key: pulumi.Input[str] | None = None
    network: FleetNetwork | None = None
    hcloud_ssh_key_ids: list[pulumi.Input[str]] = field(default_factory=list)


class RuntimeHost(pulumi.ComponentResource):
    """One verified runtime host; exposes its entry for the endpoint."""

    endpoint_entry: pulumi.Output[dict[str, Any]]

    def __init__(self, name: str, args: HostArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("functions-runtime:index:RuntimeHost", name, None, opts)
        spec, s = args.spec, args.settings
        self._name = name

        if spec.source == "hcloud":
            machine_id, public_address, private_address, host_key = self._create_server(name, args)
        else:
            machine_id = pulumi.Output.from_input(f"{spec.address}:{spec.ssh_port}")
            public_address = pulumi.Output.from_input(spec.address or "")
            private_address = pulumi.Output.from_input(spec.private_address or "")
            host_key = pulumi.Output.from_input(spec.host_key)

        self.connection = command.remote.ConnectionArgs(
            host=public_address,
            port=spec.ssh_port,
            user=spec.ssh_user,
            private_key=args.ssh_private_key,
            host_key=host_key,
            dial_error_limit=DIAL_ERROR_LIMIT,
            per_dial_timeout=PER_DIAL_TIMEOUT_SECONDS,
        )
        server_cert = args.pki.issue_server(
            f"{name}-endpoint", [private_address, "127.0.0.1"], parent=self
        )
        verifier = args.pki.issue_host_verifier(name, parent=self)
        verify_client = verifier.client

        files = args.payload.files
        lib = files["scripts/lib.sh"]
        common_env: dict[str, pulumi.Input[str]] = {
            "FR_ROOT": REMOTE_ROOT,
            "FR_HOST": name,
        }

        wait = self._step("wait", WAIT_FOR_BOOT, [machine_id], depends_on=[])
        payload = self._step(
            "payload",
            UNPACK_PAYLOAD.format(root=REMOTE_ROOT, sha=args.payload.sha256),
            [machine_id, args.payload.sha256],
            stdin=args.payload.archive_base64,
            depends_on=[wait],
        )

        chain = fingerprint(lib)

        def scripted(
            step: str,
            script: str,
            env: dict[str, pulumi.Input[str]],
            reads: list[str],
            after: list[pulumi.Resource],
            stdin: pulumi.Input[str] | None = None,
            extra_triggers: list[pulumi.Input[Any]] | None = None,
            timeout: str = STEP_TIMEOUT,
        ) -> command.remote.Command:
            nonlocal chain
            full_env = {**common_env, **env}
            # Machine-derived values (the private address) are Outputs; the
            # machine's identity in the triggers already covers their change.
            static = {k: v if isinstance(v, str) else f"<{k}>" for k, v in full_env.items()}
            create = pulumi.Output.all(**full_env).apply(lambda e: script_command(script, e))
            own = [files[f"scripts/{script}"]] + [files[r] for r in reads]
            chain = fingerprint(chain, script_command(script, static), *own)
            return self._step(
                step,
                create,
                [machine_id, chain, *(extra_triggers or [])],
                stdin=stdin,
                depends_on=after,
                timeout=timeout,
            )

        runtime_env = {"ISOLATION": s.isolation, "KATA_HYPERVISOR": s.kata.hypervisor}
        bootstrap = scripted(
            "bootstrap",
            "bootstrap_base.sh",
            {},
            ["base/packages.txt", "base/modules.conf", "base/sshd.conf", "base/apt-update-stamp.conf"],
            [payload],
        )
        install = scripted(
            "install",
            "install_runtime.sh",
            {**runtime_env, "ARTIFACT_MIRROR": s.artifacts.mirror or ""},
            ["catalog/artifacts.tsv"],
            [bootstrap],
            timeout=INSTALL_TIMEOUT,
        )
        firewall = scripted(
            "firewall",
            "host_firewall.sh",
            {
                "ADMIN_CIDRS": " ".join(s.admin.ssh_source_cidrs),
                "ENDPOINT_CIDRS": " ".join(s.endpoint.allowed_cidrs),
                "ENDPOINT_PORT": str(s.endpoint.port),
                "SSH_PORT": str(spec.sshd_port),
            },
            [],
            [install],
        )
        configure = scripted(
            "configure",
            "configure_runtime.sh",
            {**runtime_env, "ENDPOINT_PORT": str(s.endpoint.port), "PRIVATE_ADDRESS": private_address},
            [],
            [firewall],
            # dockerd trusts the stack CA (consumers) and this host's own
            # verifier CA (its verify step only).
            stdin=pem_stdin(
                args.pki.ca_cert.cert_pem, verifier.ca_cert_pem, server_cert.cert_pem, server_cert.private_key_pem
            ),
            extra_triggers=[
                pulumi.Output.all(server_cert.cert_pem, verifier.ca_cert_pem).apply(lambda pems: fingerprint(*pems))
            ],
        )
        verify_after: list[pulumi.Resource] = [configure]
        image_archive = ""
        extra: list[pulumi.Input[Any]] = [verify_client.cert_pem.apply(lambda pem: fingerprint(pem))]
        if s.verify.image_archive is not None:
            archive_sha = fingerprint(s.verify.image_archive.read_bytes())
            upload = command.remote.CopyToRemote(
                f"{name}-verify-image",
                connection=self.connection,
                source=pulumi.FileAsset(str(s.verify.image_archive)),
                remote_path=VERIFY_IMAGE_REMOTE_PATH,
                triggers=[machine_id, archive_sha],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[configure]),
            )
            verify_after.append(upload)
            image_archive = VERIFY_IMAGE_REMOTE_PATH
            extra.append(archive_sha)
        verify = scripted(
            "verify",
            "verify_host.sh",
            {
                **runtime_env,
                "PRIVATE_ADDRESS": private_address,
                "ENDPOINT_PORT": str(s.endpoint.port),
                "VERIFY_IMAGE": s.verify.image,
                "VERIFY_IMAGE_ARCHIVE": image_archive,
                "COLD_START_RUNS": str(s.verify.cold_start_runs),
                "METADATA_ADDRESS": METADATA_ADDRESS,
                "SSH_PORT": str(spec.sshd_port),
            },
            [],
            verify_after,
            stdin=pem_stdin(args.pki.ca_cert.cert_pem, verify_client.cert_pem, verify_client.private_key_pem),
            extra_triggers=extra,
        )
        self.verify = verify
        report = verify.stdout.apply(lambda out: parse_verify_report(name, out))
        self.private_address = private_address
        self.public_address = public_address
        self.endpoint_entry = pulumi.Output.all(report, private_address, public_address, host_key).apply(
            lambda vals: build_endpoint_host(
                HostFacts(
                    name=name,
                    source=spec.source,
                    private_address=vals[1],
                    public_address=vals[2],
                    ssh_host_key=vals[3],
                    port=s.endpoint.port,
                ),
                vals[0],
                s.isolation,
            )
        )
        self.register_outputs(
            {
                # Read by RuntimeFleet to build runtimeEndpoint.
                "endpointEntry": self.endpoint_entry,
                # For operators: where to SSH and where Docker listens.
                "publicAddress": public_address,
                "privateAddress": private_address,
            }
        )

    def _create_server(
        self, name: str, args: HostArgs
    ) -> tuple[pulumi.Output[str], pulumi.Output[str], pulumi.Output[str], pulumi.Output[str]]:
        spec, net = args.spec, args.network
        assert net is not None, "hcloud hosts need the fleet network"
        child = pulumi.ResourceOptions(parent=self)
        # The program generates the server's SSH host key so every connection
        # can pin it from the first dial: no trust on first use.
        host_key = tls.PrivateKey(f"{name}-ssh-host-key", algorithm="ED25519", opts=child)
        host_key_public = host_key.public_key_openssh.apply(lambda k: k.strip())
        user_data = pulumi.Output.secret(
            pulumi.Output.all(
                host_key.private_key_openssh, host_key_public, *args.authorized_keys
            ).apply(
                lambda v: render_user_data(
                    authorized_keys=[k.strip() for k in v[2:]],
                    host_key_private=v[0],
                    host_key_public=v[1],
                    hostname=spec.server_name,
                )
            )
        )
        placement = net.placement_groups[(spec.group, spec.placement_index or 0)]
        server = hcloud.Server(
            f"{name}-server",
            name=spec.server_name,
            server_type=spec.server_type,
            image=spec.image,
            location=spec.location,
            ssh_keys=args.hcloud_ssh_key_ids,
            user_data=user_data,
            firewall_ids=[net.firewall.id.apply(int)],
            placement_group_id=placement.id.apply(int),
            networks=[hcloud.ServerNetworkArgs(network_id=net.network.id.apply(int))],
            public_nets=[hcloud.ServerPublicNetArgs(ipv4_enabled=True, ipv6_enabled=True)],
            labels={**args.labels, "functions-runtime-group": spec.group},
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[net.subnet],
                # These apply only when a server is created. Changing them on
                # a running host would replace it (and kill its functions);
                # the bootstrap step re-applies the base configuration over
                # SSH instead. Replace a host on purpose with
                # `pulumi up --replace <urn>`.
                ignore_changes=["user_data", "image", "ssh_keys"],
            ),
        )
        self.server = server
        private_address = server.networks.apply(_first_network_ip)
        return server.id, server.ipv4_address, private_address, host_key_public

    def _step(
        self,
        step: str,
        create: pulumi.Input[str],
        triggers: list[pulumi.Input[Any]],
        depends_on: list[pulumi.Resource],
        stdin: pulumi.Input[str] | None = None,
        timeout: str = STEP_TIMEOUT,
    ) -> command.remote.Command:
        return command.remote.Command(
            f"{self._name}-{step}",
            connection=self.connection,
            create=create,
            stdin=stdin,
            triggers=triggers,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=depends_on,
                custom_timeouts=pulumi.CustomTimeouts(create=timeout, update=timeout),
            ),
        )
