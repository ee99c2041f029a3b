"""The endpoint contract: verify reports in, documents out, consumers read back.

Pure functions, no Pulumi engine and no Docker daemon: the docker-py client
test proves the client is configured for mutual TLS with the right files,
not that a daemon accepts it (the hostlab proves that). What the reader
refuses, rule by rule, and that the builders refuse it too, is in
test_endpoint_rules.py.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from docker.errors import DockerException

from components.endpoint import (
    ENDPOINT_SCHEMA,
    EndpointError,
    EndpointHostFacts,
    VerificationFailed,
    build_client_tls,
    build_endpoint,
    build_endpoint_host,
    docker_client,
    parse_verify_report,
    read_client_tls,
    read_endpoint,
    read_stack_outputs,
)
from tests.support.endpoint_rules import CA_PEM
from tests.support.program import passing_report

CA = CA_PEM
CERT = "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n"


def facts(name: str = "cloud-1") -> EndpointHostFacts:
    return EndpointHostFacts(
        name=name, source="hcloud", private_address="10.0.1.5", public_address="203.0.113.5",
        ssh_host_key="ssh-ed25519 AAAA", port=2376,
    )


def report(**changes: object) -> dict:
    doc = json.loads(passing_report("cloud-1"))
    doc.update(changes)
    return doc


def test_passing_report_is_accepted():
    parsed = parse_verify_report("cloud-1", passing_report("cloud-1"))
    assert parsed["defaultRuntime"] == "runsc"


@pytest.mark.parametrize(
    "stdout,check",
    [
        ("", "report"),
        ("not json", "report"),
        (json.dumps({"schema": "other"}), "report"),
        (json.dumps(report(host="cloud-2")), "report"),
        (json.dumps(report(passed=False, failedCheck="endpoint-refuses-no-cert", reason="accepted")), "endpoint-refuses-no-cert"),
        (json.dumps(report(runtimes=[])), "runtimes"),
        (json.dumps(report(defaultRuntime="runc")), "default-runtime"),
    ],
    ids=["empty", "garbage", "wrong-schema", "other-host", "failed-check", "no-runtime", "runc-default"],
)
def test_bad_report_fails_naming_host_and_check(stdout, check):
    with pytest.raises(VerificationFailed) as err:
        parse_verify_report("cloud-1", stdout)
    assert err.value.host == "cloud-1" and err.value.check == check
    assert str(err.value).startswith("host cloud-1: verification failed at")


def test_runtime_sharing_the_host_kernel_is_not_verified():
    doc = report()
    doc["runtimes"][0]["guestKernel"] = doc["hostKernel"]
    with pytest.raises(VerificationFailed, match="kernel-differs"):
        parse_verify_report("cloud-1", json.dumps(doc))


def endpoint_doc() -> dict:
    host = build_endpoint_host(facts(), report(), "sandbox")
    return build_endpoint(CA, "sandbox", [host])


def test_endpoint_document_has_the_contract_shape():
    doc = endpoint_doc()
    assert doc["schema"] == ENDPOINT_SCHEMA
    assert doc["defaultRuntime"] == "runsc"
    host = doc["hosts"][0]
    assert host["dockerHost"] == "tcp://10.0.1.5:2376"
    assert host["runtimes"][0]["isolation"] == "sandbox"
    assert host["runtimes"][0]["coldStartMs"]["median"] == 812


def test_hosts_disagreeing_on_the_default_runtime_leave_it_per_host():
    kata = json.loads(passing_report("metal-1", runtime="kata"))
    doc = build_endpoint(CA, "sandbox", [build_endpoint_host(facts(), report(), "sandbox"), build_endpoint_host(facts("metal-1"), kata, "sandbox")])
    assert doc["defaultRuntime"] is None
    assert {h["defaultRuntime"] for h in doc["hosts"]} == {"runsc", "kata"}


def test_reader_round_trips_the_document():
    endpoint = read_endpoint(json.dumps(endpoint_doc()))
    assert endpoint.host().docker_host == "tcp://10.0.1.5:2376"
    assert endpoint.host("cloud-1").runtimes[0].guest_kernel == "4.4.0"
    with pytest.raises(EndpointError, match="no host 'x'"):
        endpoint.host("x")


def test_client_tls_reader_explains_masked_secrets():
    masked = build_client_tls(CA, CERT, "[secret]")
    with pytest.raises(EndpointError, match="--show-secrets"):
        read_client_tls(masked)
    assert read_client_tls(build_client_tls(CA, CERT, KEY)).key_pem == KEY


def test_client_tls_repr_does_not_print_the_key():
    assert "PRIVATE" not in repr(read_client_tls(build_client_tls(CA, CERT, KEY)))


def test_stack_output_json_is_read_as_both_documents():
    text = json.dumps({"runtimeEndpoint": endpoint_doc(), "runtimeClientTls": build_client_tls(CA, CERT, KEY)})
    endpoint, tls = read_stack_outputs(text)
    assert endpoint.hosts[0].name == "cloud-1" and tls.cert_pem == CERT
    with pytest.raises(EndpointError, match="did `pulumi up` finish"):
        read_stack_outputs("{}")


def test_docker_client_uses_mutual_tls_and_removes_its_key_files():
    endpoint = read_endpoint(endpoint_doc())
    client = docker_client(endpoint, read_client_tls(build_client_tls(CA, CERT, KEY)), base_url="tcp://127.0.0.1:1", version="1.45")
    api = client.api
    assert api.base_url == "https://127.0.0.1:1"
    cert_path, key_path = api.cert
    key_file = Path(key_path)
    assert key_file.read_text() == KEY
    assert key_file.stat().st_mode & 0o077 == 0, "the client key must be private"
    assert api.verify.endswith("ca.pem")
    # An environment CA bundle (REQUESTS_CA_BUNDLE) must not replace the endpoint's CA.
    assert api.trust_env is False
    client.close()
    del client, api
    gc.collect()
    assert not key_file.parent.exists(), "the temporary key directory must be removed"


def test_docker_client_cleans_up_when_the_daemon_cannot_be_asked(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    endpoint = read_endpoint(endpoint_doc())
    with pytest.raises(DockerException, match="Connection refused|Error while fetching"):
        docker_client(
            endpoint, read_client_tls(build_client_tls(CA, CERT, KEY)), base_url="tcp://127.0.0.1:1", version="auto"
        )
    assert list(tmp_path.iterdir()) == []


def test_docker_host_url_brackets_ipv6_like_the_verify_script():
    from components.endpoint import docker_host_url

    assert docker_host_url("10.0.1.5", 2376) == "tcp://10.0.1.5:2376"
    assert docker_host_url("fd00::11", 2376) == "tcp://[fd00::11]:2376"


def test_the_document_carries_the_policys_limits_for_consumers():
    from components.endpoint import FunctionLimits, limits_document

    limits = limits_document(2048, 1024, 1500)
    assert limits == {"maxMemoryMiB": 2048, "maxPids": 1024, "maxCpus": 1.5}
    assert limits_document(512, 128, 2000)["maxCpus"] == 2
    doc = build_endpoint(CA, "sandbox", [build_endpoint_host(facts(), report(), "sandbox")], limits)
    endpoint = read_endpoint(json.dumps(doc))
    assert endpoint.limits == FunctionLimits(max_memory_mib=2048, max_pids=1024, max_cpus=1.5)
    assert endpoint.limits.docker_py() == {"mem_limit": "2048m", "pids_limit": 1024, "nano_cpus": 1_500_000_000}
    # A document from before the policy has no limits: still read (an additive field).
    assert read_endpoint(json.dumps(endpoint_doc())).limits is None
    for bad in ({"maxMemoryMiB": "2g", "maxPids": 1, "maxCpus": 1}, {"maxMemoryMiB": 1, "maxPids": 0, "maxCpus": 1}, []):
        with pytest.raises(EndpointError, match="runtimeEndpoint.limits"):
            read_endpoint(json.dumps({**doc, "limits": bad}))


def test_the_endpoints_limits_are_what_every_hosts_verify_proved():
    from components.endpoint import EndpointRefused, verified_limits

    a, b, c = (json.loads(passing_report(name)) for name in ("a", "b", "c"))
    assert verified_limits([a, b]) == {"maxMemoryMiB": 2048, "maxPids": 1024, "maxCpus": 2}
    b["limits"]["maxPids"] = 512
    c["limits"]["maxPids"] = 512
    with pytest.raises(EndpointRefused, match=r"a: 2048 MiB, 1024 PIDs, 2000 millicpus; b, c: 2048 MiB, 512 PIDs"):
        verified_limits([a, b, c])
    del c["limits"]
    with pytest.raises(EndpointRefused, match="host c: .*proves no endpoint policy limits"):
        verified_limits([c])
    assert verified_limits([]) is None


def test_a_passed_report_without_proven_limits_is_refused_naming_the_field():
    with pytest.raises(VerificationFailed, match="report.limits: a passed report says which limits"):
        parse_verify_report("cloud-1", json.dumps(report(limits=None)))
    with pytest.raises(VerificationFailed, match=r"report.limits.maxPids: expected int"):
        parse_verify_report("cloud-1", json.dumps(report(limits={"maxMemoryMiB": 1, "maxPids": "2", "maxMilliCpus": 3})))


def proven_limits(per_host: dict[str, dict]) -> Any:
    """Verify reports whose policy-limits proved `per_host[host]` (the default elsewhere)."""
    def stdout(name: str, _inputs: Mapping[str, Any]) -> str:
        if not name.endswith("-verify"):
            return '{"ok": true}'
        host = name.removesuffix("-verify")
        doc = json.loads(passing_report(host))
        doc["limits"] = per_host.get(host, doc["limits"])
        return json.dumps(doc)

    return stdout


def test_the_fleet_exports_the_limits_its_hosts_proved_not_the_settings():
    from components.endpoint import EndpointRefused
    from tests.support.program import run_program, stack_config

    dev = stack_config("dev")
    dev["functions-runtime:hosts"] = [{**dev["functions-runtime:hosts"][0], "count": 2}]
    lower = {"maxMemoryMiB": 1024, "maxPids": 256, "maxMilliCpus": 1500}
    run = run_program(dev, stack="dev", command_stdout=proven_limits({"cloud-1": lower, "cloud-2": lower}))
    assert run.outputs["runtimeEndpoint"]["limits"] == {"maxMemoryMiB": 1024, "maxPids": 256, "maxCpus": 1.5}
    with pytest.raises(EndpointRefused, match="cloud-1: 1024 MiB.*cloud-2: 2048 MiB"):
        run_program(dev, stack="dev", command_stdout=proven_limits({"cloud-1": lower}))
