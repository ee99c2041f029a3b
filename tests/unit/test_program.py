"""The real program under Pulumi's mocks (see tests/support/program.py for
what the mocks do and do not prove): resources, their key properties,
ordering, independence of hosts, secrets, preview behaviour, a failing
verify, and deterministic inputs."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from typing import Any

import pytest

from components.endpoint import EndpointRefused, VerificationFailed, read_endpoint
from components.settings import SettingsError
from tests.support.program import (
    STAND_IN_SSH_KEY,
    ProgramRun,
    Registration,
    passing_report,
    run_program,
    stack_config,
)
from tools.lab.harness import unwrap

DEV = stack_config("dev")
COMMAND = "command:remote:Command"
SERVER = "hcloud:index/server:Server"
CHAIN = ["wait", "payload", "bootstrap", "install", "firewall", "configure", "verify", "upkeep", "keys"]
PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKJrmllVu4fMVCnQiQh96iGQMhpTa/0BpPT/hQl0cgYS"


def multi_host_config(count: int = 2) -> dict[str, Any]:
    cfg = dict(DEV)
    cfg["functions-runtime:hosts"] = [
        {"name": "cloud", "source": "hcloud", "count": count, "serverType": "cx23", "location": "fsn1"},
        {
            "name": "metal",
            "source": "dedicated",
            "addresses": [{"address": "203.0.113.50", "privateAddress": "10.0.1.50", "hostKey": HOST_KEY}],
        },
    ]
    cfg["functions-runtime:dedicatedSshKey"] = STAND_IN_SSH_KEY
    return cfg


@pytest.fixture(scope="module")
def dev_run() -> ProgramRun:
    return run_program(DEV, stack="dev")


@pytest.fixture(scope="module")
def multi_run() -> ProgramRun:
    return run_program(multi_host_config(), stack="dev")


def step(run: ProgramRun, host: str, name: str) -> Registration:
    return run.named(f"{host}-{name}")


def ancestors(run: ProgramRun, reg: Registration) -> set[str]:
    """URNs this resource depends on, directly or through its dependencies and parents."""
    by_urn = run.by_urn()
    seen: set[str] = set()
    todo = list(reg.dependencies)
    while todo:
        urn = todo.pop()
        if urn in seen:
            continue
        seen.add(urn)
        dep = by_urn.get(urn)
        if dep is not None:
            todo.extend(dep.dependencies)
    return seen


def test_dev_stack_registers_network_firewall_server_and_host_chain(dev_run):
    types = [r.type for r in dev_run.resources]
    assert types.count("hcloud:index/network:Network") == 1
    assert types.count("hcloud:index/networkSubnet:NetworkSubnet") == 1
    assert types.count("hcloud:index/firewall:Firewall") == 1
    assert types.count("hcloud:index/placementGroup:PlacementGroup") == 1
    assert types.count("hcloud:index/sshKey:SshKey") == 1
    assert types.count(SERVER) == 1
    assert [r.name.split("cloud-1-")[1] for r in dev_run.of_type(COMMAND)] and {
        r.name for r in dev_run.of_type(COMMAND)
    } == {f"cloud-1-{s}" for s in (*CHAIN, "retire")}
    assert "functions-runtime:index:RuntimeFleet" in types
    assert "functions-runtime:index:RuntimeHost" in types


def test_server_is_debian_13_behind_firewall_placement_and_private_network(dev_run):
    server = dev_run.named("cloud-1-server").plain
    assert server["image"] == "debian-13"
    assert server["serverType"] == "cx23"
    assert server["location"] == "fsn1"
    assert server["name"] == "dev-cloud-1"
    assert len(server["firewallIds"]) == 1
    assert server["placementGroupId"]
    assert server["networks"][0]["networkId"]
    assert server["sshKeys"], "without an SSH key Hetzner mails a root password"


def test_server_ignores_creation_only_inputs_so_a_running_host_is_not_replaced(dev_run):
    assert set(dev_run.named("cloud-1-server").ignore_changes) == {"userData", "image", "sshKeys"}


def test_cloud_firewall_opens_only_ssh_and_icmp_from_admin_sources(dev_run):
    rules = dev_run.of_type("hcloud:index/firewall:Firewall")[0].plain["rules"]
    assert {(r["protocol"], r.get("port")) for r in rules} == {("tcp", "22"), ("icmp", None)}
    for rule in rules:
        assert rule["direction"] == "in"
        assert rule["sourceIps"] == ["198.51.100.7/32"]


def test_each_host_chain_runs_in_order(multi_run):
    for host in ("cloud-1", "cloud-2", "metal-1"):
        urns = [step(multi_run, host, s).urn for s in CHAIN]
        for earlier, later_name in zip(urns, CHAIN[1:], strict=False):
            later = step(multi_run, host, later_name)
            assert earlier in ancestors(multi_run, later), f"{host}-{later_name} must run after {earlier}"


def test_hosts_do_not_depend_on_each_other(multi_run):
    hosts = ("cloud-1", "cloud-2", "metal-1")
    for host in hosts:
        deps = set()
        for s in CHAIN:
            deps |= ancestors(multi_run, step(multi_run, host, s))
        for other in hosts:
            if other != host:
                assert not [d for d in deps if f"::{other}-" in d], f"{host} depends on {other}"


def test_every_remote_step_pins_the_host_key(multi_run):
    for reg in multi_run.of_type(COMMAND):
        conn = reg.plain["connection"]
        assert conn.get("hostKey", "").startswith("ssh-ed25519 "), reg.name
        assert conn["dialErrorLimit"] > 0 and conn["perDialTimeout"] > 0


def test_cloud_host_key_in_user_data_matches_the_pinned_key(dev_run):
    user_data = dev_run.named("cloud-1-server").plain["userData"]
    pinned = step(dev_run, "cloud-1", "wait").plain["connection"]["hostKey"]
    assert pinned in user_data


def test_user_data_is_secret_and_holds_no_private_key_but_the_host_key(dev_run):
    server = dev_run.named("cloud-1-server")
    assert "userData" in server.secret_inputs()
    user_data = server.plain["userData"]
    assert user_data.startswith("#cloud-config\n")
    assert len(PRIVATE_KEY.findall(user_data)) == 1
    host_private = re.search(r"ed25519_private: (.*?)\n  ed25519_public", user_data, re.S)
    assert host_private and "OPENSSH PRIVATE KEY" in host_private.group(1)


def test_provisioning_and_tls_private_keys_appear_only_as_secrets(multi_run):
    for reg in multi_run.resources:
        for prop, value in reg.inputs.items():
            if prop in reg.secret_inputs():
                continue
            text = json.dumps(unwrap(value))
            assert not PRIVATE_KEY.search(text), f"{reg.name}.{prop} holds a private key in plain"


def test_tls_material_reaches_hosts_only_on_secret_stdin(multi_run):
    for host in ("cloud-1", "metal-1"):
        for name in ("configure", "verify"):
            reg = step(multi_run, host, name)
            assert "stdin" in reg.secret_inputs()
            assert "PRIVATE KEY" in reg.plain["stdin"]
            assert "PRIVATE KEY" not in reg.plain["create"]


def test_client_tls_output_is_secret_and_endpoint_is_not(dev_run):
    assert dev_run.output_secret == {"runtimeClientTls": True, "runtimeEndpoint": False, "artifactDownloads": False}
    assert "PRIVATE KEY" not in json.dumps(dev_run.outputs["runtimeEndpoint"])
    # The endpoint policy's maxima, from endpoint.limits (defaults here), for consumers.
    assert dev_run.outputs["runtimeEndpoint"]["limits"] == {"maxMemoryMiB": 2048, "maxPids": 1024, "maxCpus": 2}
    assert "PRIVATE KEY" in dev_run.outputs["runtimeClientTls"]["keyPem"]


def test_endpoint_contract_round_trips_through_the_consumer_reader(multi_run):
    endpoint = read_endpoint(multi_run.outputs["runtimeEndpoint"])
    assert endpoint.isolation == "sandbox"
    assert [h.name for h in endpoint.hosts] == ["cloud-1", "cloud-2", "metal-1"]
    metal = endpoint.host("metal-1")
    assert metal.docker_host == "tcp://10.0.1.50:2376"
    assert metal.source == "dedicated"
    assert metal.ssh_host_key == HOST_KEY
    cloud = endpoint.host("cloud-1")
    assert cloud.docker_host.startswith("tcp://10.0.1.")
    assert cloud.runtimes[0].name == "runsc"


def test_the_endpoint_says_when_each_certificate_expires_and_leaves_renew_a_month_ahead(multi_run):
    """The mocks issue from 2026-01-01 for the hours the program asks: the CA
    for ten years, the leaves (server, client, verifier) for two, each
    re-issued by a `pulumi up` in its last 30 days (early_renewal_hours)."""
    doc = multi_run.outputs["runtimeEndpoint"]
    assert doc["caNotAfter"] == "2035-12-30T00:00:00Z"
    assert doc["clientCertificateNotAfter"] == "2028-01-01T00:00:00Z"
    assert {h["name"]: h["serverCertificateNotAfter"] for h in doc["hosts"]} == {
        "cloud-1": "2028-01-01T00:00:00Z", "cloud-2": "2028-01-01T00:00:00Z", "metal-1": "2028-01-01T00:00:00Z",
    }
    endpoint = read_endpoint(doc)
    assert endpoint.ca_not_after == dt.datetime(2035, 12, 30, tzinfo=dt.UTC)
    assert endpoint.host("metal-1").server_certificate_not_after == dt.datetime(2028, 1, 1, tzinfo=dt.UTC)
    leaves = multi_run.of_type("tls:index/locallySignedCert:LocallySignedCert")
    assert leaves and {(r.plain["validityPeriodHours"], r.plain["earlyRenewalHours"]) for r in leaves} == {(2 * 365 * 24, 30 * 24)}
    assert {r.plain["validityPeriodHours"] for r in multi_run.of_type("tls:index/selfSignedCert:SelfSignedCert")} == {
        10 * 365 * 24
    }


def test_remote_commands_receive_settings_inline_and_shell_quoted(dev_run):
    firewall = step(dev_run, "cloud-1", "firewall").plain["create"]
    assert "ADMIN_CIDRS=198.51.100.7/32" in firewall
    assert "ENDPOINT_CIDRS=10.0.0.0/16" in firewall
    assert firewall.endswith("bash /opt/functions-runtime/scripts/host_firewall.sh")
    verify = step(dev_run, "cloud-1", "verify").plain["create"]
    assert "PRIVATE_ADDRESS=10.0.1." in verify and "ISOLATION=sandbox" in verify


def test_preview_leaves_the_endpoint_unknown_without_failing():
    run = run_program(DEV, stack="dev", preview=True)
    assert "runtimeEndpoint" not in run.outputs, "unknown during preview"
    assert run.of_type(SERVER)


def test_failing_verify_stops_the_update_naming_host_and_check():
    def failing(name: str, inputs: dict) -> str | None:
        if name == "cloud-1-verify":
            report = json.loads(passing_report("cloud-1"))
            report.update(passed=False, failedCheck="sandbox-metadata-blocked", reason="reached 169.254.169.254")
            return json.dumps(report)
        return "{}"

    registered: list[Registration] = []
    with pytest.raises(VerificationFailed) as err:
        run_program(DEV, stack="dev", command_stdout=failing, registrations=registered)
    assert err.value.host == "cloud-1" and err.value.check == "sandbox-metadata-blocked"
    # A failure after the resources: what was registered is still recorded
    # (the control for the bad-config test's empty list).
    assert "cloud-1-verify" in {r.name for r in registered}
    assert "host cloud-1" in str(err.value) and "sandbox-metadata-blocked" in str(err.value)


def test_verify_output_that_is_not_a_report_fails_naming_the_host():
    with pytest.raises(VerificationFailed, match="host cloud-1: verification failed at 'report'"):
        run_program(DEV, stack="dev", command_stdout=lambda name, inputs: "Segmentation fault")


def test_a_vm_stack_never_exports_a_host_that_verified_only_gvisor():
    """The producer runs the consumer's reader: a document it would refuse stops the update."""
    prod = stack_config("prod")
    gvisor_only = lambda name, inputs: (  # noqa: E731
        passing_report(name.removesuffix("-verify"), runtime="runsc") if name.endswith("-verify") else "{}"
    )
    with pytest.raises(EndpointRefused) as err:
        run_program(prod, stack="prod", command_stdout=gvisor_only)
    assert err.value.host in {"kvm-1", "kvm-2", "kvm-3"}
    assert f"host {err.value.host}: not exported" in str(err.value)
    assert "'sandbox' does not meet the stack's 'vm'" in err.value.problem


def test_bad_config_fails_before_any_resource_is_registered():
    cfg = dict(DEV)
    cfg["functions-runtime:isolation"] = "vm"
    registered: list[Registration] = []
    with pytest.raises(SettingsError, match="no nested virtualization") as err:
        run_program(cfg, stack="dev", registrations=registered)
    assert "functions-runtime:hosts[0]" in str(err.value)
    assert registered == [], f"registered before the settings error: {[r.urn for r in registered]}"


def test_a_clh_stack_without_its_opt_in_fails_at_preview_before_any_resource():
    cfg = {**DEV, "functions-runtime:kata": {"hypervisor": "clh"}}
    registered: list[Registration] = []
    with pytest.raises(SettingsError) as err:
        run_program(cfg, stack="dev", preview=True, registrations=registered)
    (problem,) = err.value.problems
    assert problem.startswith("functions-runtime:kata.hypervisor: 'clh'")
    assert "only with QEMU as the VMM" in problem
    assert registered == []


def test_a_clh_stack_with_its_opt_in_previews_with_the_reason_as_a_warning(caplog: pytest.LogCaptureFixture):
    """Under the mocks pulumi.log.warn lands in Python's logging; with the real
    engine the same call is a warning diagnostic in `pulumi preview` (not run here)."""
    cfg = {**DEV, "functions-runtime:kata": {"hypervisor": "clh", "allowUntestedHypervisor": True}}
    with caplog.at_level(logging.WARNING):
        run = run_program(cfg, stack="dev", preview=True)
    assert run.of_type(COMMAND), "the program went on to register the hosts"
    warnings = [r.getMessage() for r in caplog.records if "functions-runtime:kata.hypervisor" in r.getMessage()]
    assert len(warnings) == 1 and "only with QEMU as the VMM" in warnings[0]
    configure = next(r for r in run.of_type(COMMAND) if r.name.endswith("-configure"))
    assert "KATA_HYPERVISOR=clh" in configure.plain["create"]


def test_two_runs_register_identical_inputs_and_triggers():
    def snapshot(run: ProgramRun) -> dict[str, Any]:
        return {r.urn: (r.plain, sorted(r.dependencies)) for r in run.resources}

    first = snapshot(run_program(multi_host_config(), stack="dev"))
    second = snapshot(run_program(multi_host_config(), stack="dev"))
    assert first.keys() == second.keys()
    for urn in first:
        assert first[urn] == second[urn], urn


def test_a_setting_change_reruns_only_the_steps_that_read_it(multi_run):
    cfg = multi_host_config()
    cfg["functions-runtime:endpoint"] = {"port": 2377, "allowedCidrs": ["10.0.0.0/16"]}
    changed = run_program(cfg, stack="dev")
    for host in ("cloud-1", "metal-1"):
        before = {s: step(multi_run, host, s).plain["triggers"] for s in CHAIN}
        after = {s: step(changed, host, s).plain["triggers"] for s in CHAIN}
        same = [s for s in CHAIN if before[s] == after[s]]
        assert same == ["wait", "payload", "bootstrap", "install"], host


def test_placement_groups_split_large_groups_by_ten():
    run = run_program(multi_host_config(count=12), stack="dev")
    groups = run.of_type("hcloud:index/placementGroup:PlacementGroup")
    assert len(groups) == 2
    assert all(g.plain["type"] == "spread" for g in groups)


def test_a_rotation_period_asks_the_provider_to_renew_leaves_that_many_days_after_issue():
    """certificates.rotateAfterDays is the provider's early renewal window, a
    fixed number of hours (no time enters an input): a 90-day rotation marks a
    two-year leaf ready for renewal 640 days before it expires. The CAs keep
    their ten years, so consumers keep trusting rotated server certificates."""
    cfg = {**DEV, "functions-runtime:certificates": {"rotateAfterDays": 90}}
    run = run_program(cfg, stack="dev")
    leaves = run.of_type("tls:index/locallySignedCert:LocallySignedCert")
    assert leaves and {(r.plain["validityPeriodHours"], r.plain["earlyRenewalHours"]) for r in leaves} == {
        (2 * 365 * 24, (2 * 365 - 90) * 24)}
    assert {r.plain.get("earlyRenewalHours") for r in run.of_type("tls:index/selfSignedCert:SelfSignedCert")} == {None}
