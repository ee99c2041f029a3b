"""RuntimeHost: a machine, the host pipeline on it, and its endpoint entry.

The machine comes from `components/machine.py` (a new Cloud server or an
adopted one), the steps from `components/pipeline.py`; this module only
composes them with the host's certificates and turns the verify report into
the host's entry of the endpoint document.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi

from components.base_os import render_granted_keys
from components.endpoint import EndpointHostFacts, build_endpoint_host, parse_verify_report
from components.machine import CloudServerArgs, GoldenBoot, Machine, adopt_machine, create_cloud_server
from components.payload import SCRIPTS_DIR, Payload
from components.pipeline import HOST_STEPS, PipelineInputs, StdinMaterial, pem_stdin, retire_step, run_steps
from components.pki import FleetPki
from components.settings import HostSpec, Settings


@dataclass
class RuntimeHostArgs:
    spec: HostSpec
    settings: Settings
    payload: Payload
    pki: FleetPki
    # The connection's private key (secret): the program's own key for Cloud
    # servers, functions-runtime:dedicatedSshKey for adopted machines.
    ssh_private_key: pulumi.Input[str] | None = None
    # The SSH keys the program grants the connecting account: its own public
    # key first, then admin.sshKeys (scripts/grant_ssh_keys.sh).
    granted_keys: Sequence[pulumi.Input[str]] = ()
    # Cloud servers only.
    cloud: CloudServerArgs | None = None
    steps: Sequence[Any] = field(default_factory=lambda: HOST_STEPS)
    # Cloud servers booting the stack's golden image.
    golden: GoldenBoot | None = None
    # A rollout's previous batch: the new server waits for it.
    after: Sequence[pulumi.Resource] = ()
    # One download per fleet (dedicated hosts): ARTIFACT_PEERS, ARTIFACT_SHARE,
    # ARTIFACT_PEER_CIDRS, and the peer's install step this host's waits for.
    artifact_peers: pulumi.Input[str] = ""
    artifact_share: pulumi.Input[str] = ""
    artifact_peer_cidrs: pulumi.Input[str] = ""
    install_after: Sequence[pulumi.Resource] = ()


class RuntimeHost(pulumi.ComponentResource):
    """One verified runtime host; exposes its entry for the endpoint."""

    endpoint_entry: pulumi.Output[dict[str, Any]]
    # The install step's report (what it downloaded, from where).
    install_report: pulumi.Output[dict[str, Any]]
    # The install step, and the host's last step: a rollout's next batch waits for it.
    install: pulumi.Resource
    ready: pulumi.Resource
    # The parsed verify report (host_verify/report.py): the fleet reads its proven limits.
    verify_report: pulumi.Output[dict[str, Any]]

    def __init__(self, name: str, args: RuntimeHostArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("functions-runtime:index:RuntimeHost", name, None, opts)
        spec, settings = args.spec, args.settings
        machine = self._machine(name, args)
        server_cert = args.pki.issue_server(f"{name}-endpoint", [machine.private_address, "127.0.0.1"], parent=self)
        verifier = args.pki.issue_host_verifier(name, parent=self)
        ca = args.pki.ca_cert.cert_pem
        granted_keys_file = pulumi.Output.all(*args.granted_keys).apply(lambda keys: render_granted_keys(list(keys)))
        stdin = {
            "payload": StdinMaterial(args.payload.archive_base64),
            "endpoint-tls": StdinMaterial(
                pem_stdin(ca, verifier.ca_cert_pem, server_cert.cert_pem, server_cert.private_key_pem),
                public=(server_cert.cert_pem, verifier.ca_cert_pem),
            ),
            "verify-tls": StdinMaterial(
                pem_stdin(ca, verifier.client.cert_pem, verifier.client.private_key_pem),
                public=(verifier.client.cert_pem,),
            ),
            "canary-tls": StdinMaterial(
                pem_stdin(ca, verifier.canary.cert_pem, verifier.canary.private_key_pem),
                public=(verifier.canary.cert_pem,),
            ),
            "ssh-keys": StdinMaterial(granted_keys_file, public=(granted_keys_file,)),
        }
        inputs = PipelineInputs(
            name=name,
            settings=settings,
            spec=spec,
            payload=args.payload,
            private_address=machine.private_address,
            artifact_peers=args.artifact_peers,
            artifact_share=args.artifact_share,
            artifact_peer_cidrs=args.artifact_peer_cidrs,
        )
        steps = run_steps(
            self, inputs, machine, args.steps, stdin, SCRIPTS_DIR, after={"install": list(args.install_after)}
        )
        self.install = steps["install"]
        self.install_report = steps["install"].stdout.apply(parse_install_report)  # type: ignore[attr-defined]
        self.ready = list(steps.values())[-1]
        # Drains the host when it leaves the stack or is replaced.
        retire_step(self, inputs, machine, after=[self.ready])

        host_network_allowed = settings.gvisor.allow_host_network_stack
        report = steps["verify"].stdout.apply(  # type: ignore[attr-defined]
            lambda out: parse_verify_report(name, out, host_network_allowed)
        )
        self.verify_report = report
        self.endpoint_entry = pulumi.Output.all(
            report, machine.private_address, machine.public_address, machine.host_key, server_cert.cert_pem
        ).apply(
            lambda vals: build_endpoint_host(
                EndpointHostFacts(
                    name=name,
                    source=spec.source,
                    private_address=vals[1],
                    public_address=vals[2],
                    ssh_host_key=vals[3],
                    port=settings.endpoint.port,
                    server_cert_pem=vals[4],
                ),
                vals[0],
                settings.isolation,
            )
        )
        self.register_outputs(
            {
                # Read by RuntimeFleet to build runtimeEndpoint.
                "endpointEntry": self.endpoint_entry,
                # For operators: where to SSH and where Docker listens.
                "publicAddress": machine.public_address,
                "privateAddress": machine.private_address,
            }
        )

    def _machine(self, name: str, args: RuntimeHostArgs) -> Machine:
        if args.spec.source == "hcloud":
            if args.cloud is None:
                raise ValueError(f"host {name}: a Cloud server needs the fleet's network and keys")
            return create_cloud_server(
                self, name, args.spec, args.cloud, args.ssh_private_key, golden=args.golden, after=args.after
            )
        return adopt_machine(args.spec, args.ssh_private_key)


def parse_install_report(stdout: str) -> dict[str, Any]:
    """The install step's JSON line; what it fetched, by source (empty when it says nothing)."""
    for line in reversed((stdout or "").strip().splitlines()):
        try:
            report = json.loads(line)
        except ValueError:
            continue
        if isinstance(report, dict):
            return report
    return {}
