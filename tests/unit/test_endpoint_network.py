"""Each runtime's network, from the verify report to the consumer.

Proves: the verify report's `network` (vm | sandbox | host, the contract's
names) must fit the runtime's isolation; `host` (runsc --network=host) is
refused unless the stack set gvisor.allowHostNetworkStack, naming the host,
the check and the setting; the endpoint entry carries the field and the
consumer's reader returns it, and still reads documents from before it (an
additive field of endpoint@1). Program-level: the dev stack under mocks
exports `sandbox`, and a host reporting `host` stops the update unless the
stack opts in. The reports are the test support's stand-ins for what
verify_host.sh prints; tests/scripts/test_verify.py proves the script
prints them.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from components.contract import ISOLATION_NETWORKS, NETWORK_HOST, RUNTIME_NETWORKS
from components.endpoint import (
    EndpointHostFacts,
    EndpointRefused,
    VerificationFailed,
    build_endpoint,
    build_endpoint_host,
    parse_verify_report,
    read_endpoint,
)
from tests.support.endpoint_rules import CA_PEM
from tests.support.program import config_from_stack_file, passing_report, run_program

ROOT = Path(__file__).resolve().parents[2]
DEV = config_from_stack_file(ROOT / "Pulumi.dev.yaml")
CA = CA_PEM
FACTS = EndpointHostFacts(
    name="cloud-1", source="hcloud", private_address="10.0.1.5", public_address="203.0.113.5",
    ssh_host_key="ssh-ed25519 AAAA", port=2376,
)


def report_with_network(network: object, host: str = "cloud-1", runtime: str = "runsc") -> str:
    doc = json.loads(passing_report(host, runtime))
    doc["runtimes"][0]["network"] = network
    return json.dumps(doc)


def test_the_network_names_are_the_contracts_and_each_isolation_has_its_own():
    assert RUNTIME_NETWORKS == ("vm", "sandbox", "host")
    assert ISOLATION_NETWORKS == {"vm": ("vm",), "sandbox": ("sandbox", "host")}


def test_gvisors_own_network_stack_reaches_the_consumer_as_sandbox():
    entry = build_endpoint_host(FACTS, parse_verify_report("cloud-1", passing_report("cloud-1")), "sandbox")
    assert entry["runtimes"][0]["network"] == "sandbox"
    assert read_endpoint(build_endpoint(CA, "sandbox", [entry])).host().runtimes[0].network == "sandbox"


def test_kata_reaches_the_consumer_as_vm():
    entry = build_endpoint_host(FACTS, parse_verify_report("cloud-1", passing_report("cloud-1", "kata")), "vm")
    assert read_endpoint(build_endpoint(CA, "vm", [entry])).host().runtimes[0].network == "vm"


def test_host_networking_is_not_verified_without_the_stacks_opt_in():
    with pytest.raises(VerificationFailed) as err:
        parse_verify_report("cloud-1", report_with_network(NETWORK_HOST))
    assert err.value.host == "cloud-1" and err.value.check == "runtime-runsc-network"
    assert "runsc --network=host" in err.value.reason
    assert "functions-runtime:gvisor.allowHostNetworkStack" in err.value.reason


def test_with_the_opt_in_host_networking_is_exported_and_says_host():
    report = parse_verify_report("cloud-1", report_with_network(NETWORK_HOST), host_network_allowed=True)
    entry = build_endpoint_host(FACTS, report, "sandbox")
    assert read_endpoint(build_endpoint(CA, "sandbox", [entry])).host().runtimes[0].network == "host"


@pytest.mark.parametrize(
    ("network", "runtime"),
    [(None, "runsc"), ("bridge", "runsc"), ("vm", "runsc"), ("sandbox", "kata"), ("host", "kata")],
)
def test_a_network_that_does_not_fit_the_runtime_is_not_verified(network, runtime):
    with pytest.raises(VerificationFailed) as err:
        parse_verify_report("cloud-1", report_with_network(network, runtime=runtime), host_network_allowed=True)
    assert err.value.check == "runtimes" and f"reports network {network!r}" in err.value.reason


def test_a_document_from_before_the_field_is_still_read():
    entry = build_endpoint_host(FACTS, parse_verify_report("cloud-1", passing_report("cloud-1")), "sandbox")
    old = copy.deepcopy(build_endpoint(CA, "sandbox", [entry]))
    del old["hosts"][0]["runtimes"][0]["network"]
    assert read_endpoint(old).host().runtimes[0].network is None


def test_the_dev_stack_exports_gvisors_network():
    run = run_program(DEV, stack="dev")
    runtimes = run.outputs["runtimeEndpoint"]["hosts"][0]["runtimes"]
    assert [(rt["name"], rt["network"]) for rt in runtimes] == [("runsc", "sandbox")]


def host_network_reports(name: str, inputs: dict) -> str | None:
    """Every verify step reports gVisor on host networking."""
    if name.endswith("-verify"):
        return report_with_network(NETWORK_HOST, host=name.removesuffix("-verify"))
    return "{}"


def test_a_host_on_host_networking_stops_the_update_unless_the_stack_opts_in():
    with pytest.raises(VerificationFailed) as err:
        run_program(DEV, stack="dev", command_stdout=host_network_reports)
    assert err.value.host == "cloud-1" and err.value.check == "runtime-runsc-network"

    opted_in = {**DEV, "functions-runtime:gvisor": {"runsc": "debian", "allowHostNetworkStack": True}}
    run = run_program(opted_in, stack="dev", command_stdout=host_network_reports)
    assert run.outputs["runtimeEndpoint"]["hosts"][0]["runtimes"][0]["network"] == "host"


@pytest.mark.parametrize("dns", [True, False])
def test_whether_dockers_embedded_dns_answered_reaches_the_consumer(dns):
    doc = json.loads(passing_report("cloud-1"))
    doc["runtimes"][0]["userNetworkDns"] = dns
    entry = build_endpoint_host(FACTS, parse_verify_report("cloud-1", json.dumps(doc)), "sandbox")
    assert entry["runtimes"][0]["userNetworkDns"] is dns
    assert read_endpoint(build_endpoint(CA, "sandbox", [entry])).host().runtimes[0].user_network_dns is dns


def test_a_document_without_user_network_dns_still_reads_and_a_bad_value_is_refused():
    entry = build_endpoint_host(FACTS, parse_verify_report("cloud-1", passing_report("cloud-1")), "sandbox")
    old = copy.deepcopy(entry)
    del old["runtimes"][0]["userNetworkDns"]
    assert read_endpoint(build_endpoint(CA, "sandbox", [old])).host().runtimes[0].user_network_dns is None
    doc = json.loads(passing_report("cloud-1"))
    doc["runtimes"][0]["userNetworkDns"] = "yes"
    # Refused as the report is read (host_verify/report.py), and by the endpoint's own reader.
    with pytest.raises(VerificationFailed, match="userNetworkDns: expected bool"):
        parse_verify_report("cloud-1", json.dumps(doc))
    with pytest.raises(EndpointRefused, match="userNetworkDns: expected true, false or null"):
        build_endpoint_host(FACTS, doc, "sandbox")
