"""An example consumer stack: reads a functions-runtime stack's endpoint.

It re-exports what a functions service needs, validated by the same
contract code the producer uses (components/endpoint.py). Run from this
directory with `pulumi config set runtimeStack <org>/functions-runtime/dev`.
"""

import sys
from pathlib import Path

import pulumi

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from components.endpoint import from_stack_reference

config = pulumi.Config()
runtime = pulumi.StackReference(config.require("runtimeStack"))
contract = from_stack_reference(runtime)

# Non-secret: where to send containers, and which runtime isolates them.
pulumi.export("dockerHosts", contract.apply(lambda c: [h.docker_host for h in c[0].hosts]))
pulumi.export("defaultRuntime", contract.apply(lambda c: c[0].default_runtime))
# Secret: the client certificate and key, for the service's DOCKER_CERT_PATH.
pulumi.export(
    "clientTls",
    pulumi.Output.secret(contract.apply(lambda c: {"cert": c[1].cert_pem, "key": c[1].key_pem, "ca": c[1].ca_cert_pem})),
)
