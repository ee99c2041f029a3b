"""The policy pack (policy/rules.py) on the program's own resources.

Each policy's validate function runs on every resource of a mocked run of
Pulumi.dev.yaml and of a multi-host stack with a dedicated host (both must
pass with no violation), and on deliberately broken copies of those
resources (each must report a violation whose message names the resource).

How the arguments are built: the REAL pulumi_policy classes
(`ResourceValidationArgs`, `StackValidationArgs`, `PolicyResource`,
`PolicyResourceOptions`), with `props` made by the same three steps the
pack's analyzer applies to what the engine sends: a protobuf `Struct` of the
wire-form inputs, `json_format.MessageToDict`, pulumi_policy's
`deserialize_properties` (which drops secret markers, as it does for real)
and `unknown_checking_proxy`. One test also drives the pack's own analyzer
servicer (`_PolicyAnalyzerServicer`, a private class of pulumi-policy
1.21.0) through `Configure`/`Analyze`, to prove the policy config plumbing,
and one starts the pack's real entry point (`policy/__main__.py`) and talks
to it over gRPC as the engine would (`GetAnalyzerInfo`, `Analyze`).

What this does not prove: that the Pulumi engine calls the pack, with these
properties, at these moments (the CLI cannot be installed here), nor what a
preview with unknown values reports. The wire form is rebuilt from the mock
monitor's recorded inputs, not captured from an engine.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pulumi
import pytest
from google.protobuf import json_format, struct_pb2
from pulumi.runtime import proto
from pulumi.runtime.rpc import _special_sig_key
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
)
from pulumi_policy.deserialize import SPECIAL_ASSET_SIG, SPECIAL_SECRET_SIG, deserialize_properties
from pulumi_policy.policy import _PolicyAnalyzerServicer
from pulumi_policy.proxy import unknown_checking_proxy

from policy import rules
from tests.support.archives import write_docker_archive
from tests.support.program import (
    STAND_IN_SSH_KEY,
    ProgramRun,
    Registration,
    run_program,
    stack_config,
)

ROOT = Path(__file__).resolve().parents[2]
DEV = stack_config("dev")
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKJrmllVu4fMVCnQiQh96iGQMhpTa/0BpPT/hQl0cgYS"
FAKE_KEY = (
    "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIFakeFakeFakeFakeFakeFakeFakeFakeFakeFake\n"
    "-----END PRIVATE KEY-----\n"
)
Violation = tuple[str, "str | None"]


# ---------------------------------------------------------------- runs


def multi_host_config(image_archive: Path | None = None, tofu: bool = False) -> dict[str, Any]:
    """Two Cloud hosts and one adopted dedicated host (optionally TOFU)."""
    cfg = dict(DEV)
    machine: dict[str, Any] = {"address": "203.0.113.50", "privateAddress": "10.0.1.50"}
    if not tofu:
        machine["hostKey"] = HOST_KEY
    metal: dict[str, Any] = {"name": "metal", "source": "dedicated", "addresses": [machine]}
    if tofu:
        metal["trustOnFirstUse"] = True
    cfg["functions-runtime:hosts"] = [
        {"name": "cloud", "source": "hcloud", "count": 2, "serverType": "cx23", "location": "fsn1"},
        metal,
    ]
    cfg["functions-runtime:dedicatedSshKey"] = STAND_IN_SSH_KEY
    if image_archive is not None:
        cfg["functions-runtime:verify"] = {"imageArchive": str(image_archive)}
        cfg["functions-runtime:artifacts"] = {"localDirs": [str(image_archive.parent)]}
    return cfg


@pytest.fixture(scope="module")
def dev_run() -> ProgramRun:
    return run_program(DEV, stack="dev")


@pytest.fixture(scope="module")
def multi_run(tmp_path_factory: pytest.TempPathFactory) -> ProgramRun:
    # A verify image archive makes the program register a CopyToRemote too.
    archive = tmp_path_factory.mktemp("verify") / "verify-image.tar"
    write_docker_archive(archive)
    return run_program(multi_host_config(image_archive=archive), stack="dev")


@pytest.fixture(params=["dev", "multi"])
def any_run(request: pytest.FixtureRequest, dev_run: ProgramRun, multi_run: ProgramRun) -> ProgramRun:
    return dev_run if request.param == "dev" else multi_run


# ---------------------------------------------------------------- argument building


def to_wire(value: Any) -> Any:
    """Recorded inputs back in the engine's wire form (secret markers kept, assets re-encoded)."""
    if isinstance(value, pulumi.FileAsset):
        return {_special_sig_key: SPECIAL_ASSET_SIG, "path": str(value.path)}
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_wire(v) for v in value]
    return value


def analyzer_props(inputs: Mapping[str, Any]) -> Any:
    """What the pack's Analyze hands a policy as `args.props` for these inputs."""
    struct = struct_pb2.Struct()
    struct.update(to_wire(dict(inputs)))
    return unknown_checking_proxy(deserialize_properties(json_format.MessageToDict(struct)))


def options(reg: Registration) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        False, list(reg.ignore_changes), None, [], PolicyCustomTimeouts(0, 0, 0), [], reg.parent or None
    )


def resource_args(
    reg: Registration, config: Mapping[str, Any] | None = None, inputs: Mapping[str, Any] | None = None
) -> ResourceValidationArgs:
    props = analyzer_props(reg.inputs if inputs is None else inputs)
    return ResourceValidationArgs(reg.type, props, reg.urn, reg.name, options(reg), None, dict(config or {}))


def check(
    policy: rules.ResourceValidationPolicy,
    reg: Registration,
    config: Mapping[str, Any] | None = None,
    inputs: Mapping[str, Any] | None = None,
) -> list[Violation]:
    found: list[Violation] = []
    policy.validate(resource_args(reg, config, inputs), lambda message, urn=None: found.append((message, urn)))
    return found


def stack_resource(run: ProgramRun, outputs: Mapping[str, Any] | None = None) -> PolicyResource:
    """The root stack resource as AnalyzeStack would show it (the mocks do not record it)."""
    outs = dict(run.outputs if outputs is None else outputs)
    wire = {
        k: ({_special_sig_key: SPECIAL_SECRET_SIG, "value": v} if run.output_secret.get(k) else v)
        for k, v in outs.items()
    }
    urn = f"urn:pulumi:{run.stack}::functions-runtime::pulumi:pulumi:Stack::functions-runtime-{run.stack}"
    empty = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)
    return PolicyResource(rules.STACK, analyzer_props(wire), urn, f"functions-runtime-{run.stack}", empty, None, None, [], {})


def stack_args(run: ProgramRun, outputs: Mapping[str, Any] | None = None) -> StackValidationArgs:
    resources = [stack_resource(run, outputs)]
    for reg in run.resources:
        resources.append(
            PolicyResource(reg.type, analyzer_props(reg.inputs), reg.urn, reg.name, options(reg), None, None, [], {})
        )
    return StackValidationArgs(resources, {})


def check_stack(run: ProgramRun, outputs: Mapping[str, Any] | None = None) -> list[Violation]:
    found: list[Violation] = []
    rules.endpoint_output_has_no_private_key.validate(
        stack_args(run, outputs), lambda message, urn=None: found.append((message, urn))
    )
    return found


def assert_names(violations: list[Violation], reg: Registration) -> None:
    assert violations, f"expected a violation for {reg.name}"
    for message, urn in violations:
        assert reg.urn in message and urn == reg.urn, message
        assert "functions-runtime:" in message or "config" in message or "Pass " in message or "deliver" in message


def only(run: ProgramRun, typ: str) -> Registration:
    return run.of_type(typ)[0]


def plain_inputs(reg: Registration) -> dict[str, Any]:
    """A deep copy of the recorded inputs, secret markers kept, to break on purpose."""
    return copy.deepcopy(reg.inputs)


def set_user_data(reg: Registration, text: str) -> dict[str, Any]:
    inputs = plain_inputs(reg)
    inputs["userData"] = {_special_sig_key: SPECIAL_SECRET_SIG, "value": text}
    return inputs


# ---------------------------------------------------------------- the program passes


def test_the_stacks_resources_exercise_every_resource_policy(multi_run):
    types = {r.type for r in multi_run.resources}
    assert {rules.FIREWALL, rules.SERVER, rules.COMMAND, rules.COPY_TO_REMOTE} <= types


@pytest.mark.parametrize("policy", rules.RESOURCE_POLICIES, ids=lambda p: p.name)
def test_program_resources_pass_every_resource_policy(any_run, policy):
    for reg in any_run.resources:
        assert check(policy, reg) == [], reg.urn


def test_program_outputs_pass_the_stack_policy(any_run):
    assert check_stack(any_run) == []


# ---------------------------------------------------------------- (a) firewall


def with_rule(reg: Registration, **changes: Any) -> dict[str, Any]:
    inputs = plain_inputs(reg)
    inputs["rules"][0].update(changes)
    return inputs


@pytest.mark.parametrize("source", ["0.0.0.0/0", "::/0"])
def test_ssh_open_to_the_world_is_a_violation(dev_run, source):
    fw = only(dev_run, rules.FIREWALL)
    violations = check(rules.firewall_not_world_open, fw, inputs=with_rule(fw, sourceIps=[source]))
    assert_names(violations, fw)
    assert "SSH (port 22)" in violations[0][0] and "allowSshFromAnywhere" in violations[0][0]


def test_ssh_open_to_the_world_passes_when_the_stack_opts_in(dev_run):
    fw = only(dev_run, rules.FIREWALL)
    broken = with_rule(fw, sourceIps=["0.0.0.0/0"])
    assert check(rules.firewall_not_world_open, fw, {"allowSshFromAnywhere": True}, broken) == []


@pytest.mark.parametrize("port", ["any", "2376", "2000-3000"])
def test_endpoint_port_open_to_the_world_is_a_violation_even_with_the_ssh_opt_in(dev_run, port):
    fw = only(dev_run, rules.FIREWALL)
    broken = with_rule(fw, port=port, sourceIps=["10.0.0.0/8", "::/0"])
    violations = check(rules.firewall_not_world_open, fw, {"allowSshFromAnywhere": True}, broken)
    assert_names(violations, fw)
    assert "Docker endpoint port 2376" in violations[0][0]


def test_a_configured_endpoint_port_is_guarded(dev_run):
    fw = only(dev_run, rules.FIREWALL)
    broken = with_rule(fw, port="2377", sourceIps=["0.0.0.0/0"])
    assert check(rules.firewall_not_world_open, fw, inputs=broken) == []
    assert_names(check(rules.firewall_not_world_open, fw, {"endpointPorts": [2377]}, broken), fw)


@pytest.mark.parametrize(
    "sources",
    [["0.0.0.0/1", "128.0.0.0/1"], [f"{32 * i}.0.0.0/3" for i in range(8)], ["2000::/6", "2400::/6"]],
    ids=["ipv4-halves", "ipv4-eighths", "ipv6-quarter"],
)
def test_ssh_open_to_a_split_world_is_a_violation(dev_run, sources):
    # Issue 12, class 7: anywhere is judged by the union of the sources.
    fw = only(dev_run, rules.FIREWALL)
    violations = check(rules.firewall_not_world_open, fw, inputs=with_rule(fw, sourceIps=sources))
    assert_names(violations, fw)
    assert "SSH (port 22)" in violations[0][0]


def test_a_world_split_across_rules_is_a_violation_for_the_endpoint_even_with_the_ssh_opt_in(dev_run):
    fw = only(dev_run, rules.FIREWALL)
    broken = plain_inputs(fw)
    broken["rules"] = [
        {"direction": "in", "protocol": "tcp", "port": "2376", "sourceIps": ["0.0.0.0/3", "32.0.0.0/4"]},
        {"direction": "in", "protocol": "tcp", "port": "2000-3000", "sourceIps": ["48.0.0.0/4", "10.0.0.0/8"]},
        {"direction": "in", "protocol": "udp", "port": "2376", "sourceIps": ["0.0.0.0/0"]},
    ]
    violations = check(rules.firewall_not_world_open, fw, {"allowSshFromAnywhere": True}, broken)
    assert_names(violations, fw)
    (message,) = [m for m, _ in violations]
    assert "rules[0], rules[1]" in message and "Docker endpoint port 2376" in message and "together 25%" in message


def test_a_large_but_partial_range_is_not_anywhere(dev_run):
    fw = only(dev_run, rules.FIREWALL)
    broken = with_rule(fw, sourceIps=["0.0.0.0/3", "198.51.100.0/24", "2001:db8::/32"])
    assert check(rules.firewall_not_world_open, fw, inputs=broken) == []


def test_world_open_udp_or_outbound_rules_are_not_ssh(dev_run):
    fw = only(dev_run, rules.FIREWALL)
    for change in ({"protocol": "udp"}, {"direction": "out"}):
        broken = with_rule(fw, sourceIps=["0.0.0.0/0"], **change)
        assert check(rules.firewall_not_world_open, fw, inputs=broken) == [], change


# ---------------------------------------------------------------- (b) servers


@pytest.mark.parametrize(
    ("prop", "value", "words"),
    [("firewallIds", [], "has no firewall"), ("placementGroupId", None, "has no placement group")],
)
def test_server_without_firewall_or_placement_is_a_violation(dev_run, prop, value, words):
    server = only(dev_run, rules.SERVER)
    broken = plain_inputs(server)
    if value is None:
        del broken[prop]
    else:
        broken[prop] = value
    violations = check(rules.server_firewall_and_placement, server, inputs=broken)
    assert_names(violations, server)
    assert words in violations[0][0]


def user_data(run: ProgramRun) -> str:
    return only(run, rules.SERVER).plain["userData"]


def test_the_host_key_is_the_one_private_key_user_data_holds(dev_run):
    assert rules.user_data_problems(user_data(dev_run)) == []
    assert user_data(dev_run).count("PRIVATE KEY-----") == 2  # BEGIN and END of the host key


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (
            lambda ud: ud.replace(
                "write_files:\n",
                "write_files:\n- path: /root/.ssh/id_ed25519\n  content: |\n"
                + "".join(f"    {line}\n" for line in FAKE_KEY.splitlines()),
            ),
            "holds a private key at write_files.[0].content",
        ),
        (
            lambda ud: ud.replace("ssh_keys:\n", "ssh_keys:\n  rsa_private: |\n    " + FAKE_KEY.replace("\n", "\n    ") + "\n"),
            "holds a private key at ssh_keys.rsa_private",
        ),
        (
            lambda ud: ud.replace("ssh_pwauth: false\n", "ssh_pwauth: false\nchpasswd:\n  list: 'root:hunter2'\n"),
            "holds a password at chpasswd",
        ),
        (
            lambda ud: ud.replace("-----END OPENSSH PRIVATE KEY-----", "-----END OPENSSH PRIVATE KEY-----\n\n    " + FAKE_KEY.replace("\n", "\n\n    ")),
            "must hold exactly one private key, found 2",
        ),
        (lambda ud: "#!/bin/sh\ncat > /root/key <<EOF\n" + FAKE_KEY + "EOF\n", "outside a #cloud-config"),
        (lambda ud: ud + "\n  : [unbalanced\n", "is not valid YAML"),
    ],
    ids=["write_files", "rsa_host_key", "password", "two_keys_in_host_key", "shell_script", "broken_yaml"],
)
def test_user_data_with_another_secret_is_a_violation(dev_run, edit, problem):
    server = only(dev_run, rules.SERVER)
    broken = set_user_data(server, edit(user_data(dev_run)))
    violations = check(rules.user_data_holds_only_host_key, server, inputs=broken)
    assert_names(violations, server)
    assert any(problem in message for message, _ in violations), violations


# ---------------------------------------------------------------- (c) host keys


def without_host_key(reg: Registration, value: Any = None) -> dict[str, Any]:
    inputs = plain_inputs(reg)
    conn = inputs["connection"]
    target = conn["value"] if isinstance(conn, dict) and "value" in conn else conn
    if value is None:
        target.pop("hostKey", None)
    else:
        target["hostKey"] = value
    return inputs


@pytest.mark.parametrize("typ", [rules.COMMAND, rules.COPY_TO_REMOTE])
@pytest.mark.parametrize("value", [None, "", "yes"])
def test_remote_step_without_a_pinned_host_key_is_a_violation(multi_run, typ, value):
    for reg in multi_run.of_type(typ):
        violations = check(rules.remote_pins_host_key, reg, inputs=without_host_key(reg, value))
        assert_names(violations, reg)
        assert "allowTrustOnFirstUse" in violations[0][0]


def test_trust_on_first_use_stack_is_flagged_unless_opted_in():
    """The program's own TOFU output (a dedicated group with trustOnFirstUse: true)."""
    run = run_program(multi_host_config(tofu=True), stack="dev")
    metal = [r for r in run.of_type(rules.COMMAND) if r.name.startswith("metal-1-")]
    assert metal
    for reg in metal:
        assert_names(check(rules.remote_pins_host_key, reg), reg)
        assert check(rules.remote_pins_host_key, reg, {"allowTrustOnFirstUse": True}) == []
    cloud = [r for r in run.of_type(rules.COMMAND) if r.name.startswith("cloud-")]
    assert cloud and all(check(rules.remote_pins_host_key, r) == [] for r in cloud)


@pytest.mark.parametrize(
    "url",
    ["https://user:hunter2@mirror.example/kata", "http://token@10.0.0.2/x", "https://m.example/x?token=abc"],
)
def test_a_command_carrying_url_credentials_is_a_violation(dev_run, url):
    # Issue 12, class 2: the settings refuse such a mirror; the policy holds
    # the invariant for whatever a command carries.
    install = next(r for r in dev_run.of_type(rules.COMMAND) if r.name.endswith("-install"))
    assert check(rules.no_url_credentials_in_commands, install) == []
    broken = plain_inputs(install)
    broken["create"] = f"ARTIFACT_MIRROR={url} " + broken["create"]
    violations = check(rules.no_url_credentials_in_commands, install, inputs=broken)
    assert_names(violations, install)
    assert "create holds a URL with credentials" in violations[0][0]


# ---------------------------------------------------------------- (d) outputs


def test_a_private_key_in_the_plain_endpoint_output_is_a_violation(dev_run):
    outputs = copy.deepcopy(dev_run.outputs)
    outputs["runtimeEndpoint"]["hosts"][0]["sshHostKey"] = FAKE_KEY
    violations = check_stack(dev_run, outputs)
    assert violations and "runtimeEndpoint" in violations[0][0]
    assert violations[0][1] and violations[0][1] in violations[0][0]


def test_policies_cannot_see_secretness_so_tests_enforce_it(dev_run):
    """pulumi-policy unwraps secrets before validation: the same props arrive either way."""
    server = only(dev_run, rules.SERVER)
    assert "userData" in server.secret_inputs()
    unmarked = plain_inputs(server)
    unmarked["userData"] = server.plain["userData"]
    assert rules.to_plain(resource_args(server).props) == rules.to_plain(resource_args(server, inputs=unmarked).props)


# ---------------------------------------------------------------- the pack as a whole


def analyze(servicer: _PolicyAnalyzerServicer, reg: Registration, inputs: Mapping[str, Any]) -> list[Any]:
    struct = struct_pb2.Struct()
    struct.update(to_wire(dict(inputs)))
    request = proto.AnalyzeRequest(type=reg.type, properties=struct, urn=reg.urn, name=reg.name)
    return list(servicer.Analyze(request, None).diagnostics)


def test_pack_analyzer_applies_policy_config_and_mandatory_level(dev_run):
    servicer = _PolicyAnalyzerServicer(rules.PACK_NAME, "0.1.0", rules.POLICIES, EnforcementLevel.MANDATORY)
    fw = only(dev_run, rules.FIREWALL)
    broken = with_rule(fw, sourceIps=["0.0.0.0/0"])
    assert analyze(servicer, fw, fw.inputs) == []
    diagnostics = analyze(servicer, fw, broken)
    assert [d.policyName for d in diagnostics] == ["firewall-ssh-and-endpoint-not-world-open"]
    assert diagnostics[0].enforcementLevel == proto.MANDATORY and diagnostics[0].urn == fw.urn

    config = struct_pb2.Struct()
    config.update({"allowSshFromAnywhere": True})
    servicer.Configure(
        proto.ConfigureAnalyzerRequest(
            policyConfig={
                "firewall-ssh-and-endpoint-not-world-open": proto.PolicyConfig(
                    enforcementLevel=proto.MANDATORY, properties=config
                )
            }
        ),
        None,
    )
    assert analyze(servicer, fw, broken) == []


def test_pack_files_pin_the_sdk_and_keep_the_entry_point_thin():
    req = (ROOT / "policy/requirements.txt").read_text().split()
    assert "pulumi-policy==1.21.0" in req and "pulumi==3.272.0" in req
    assert "name: python" in (ROOT / "policy/PulumiPolicy.yaml").read_text()
    main = (ROOT / "policy/__main__.py").read_text()
    assert "from rules import PACK_NAME, POLICIES" in main and main.count("PolicyPack(") == 1


@pytest.fixture
def pack_server() -> Any:
    """The pack's real entry point, started as the CLI would (the pack directory first on sys.path)."""
    import subprocess
    import sys

    import grpc
    from google.protobuf import empty_pb2
    from pulumi.runtime.proto import analyzer_pb2_grpc

    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "policy" / "__main__.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = proc.stdout.readline().strip() if proc.stdout else ""
        assert port.isdigit(), f"the pack printed no port: {proc.stderr.read() if proc.poll() is not None else ''}"
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        yield analyzer_pb2_grpc.AnalyzerStub(channel), empty_pb2.Empty()
        channel.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_pack_entry_point_serves_every_policy_over_grpc(pack_server, dev_run):
    """Not the engine, but the engine's protocol: GetAnalyzerInfo and Analyze on the running pack."""
    stub, empty = pack_server
    info = stub.GetAnalyzerInfo(empty, timeout=30)
    assert info.name == rules.PACK_NAME
    assert {p.name for p in info.policies} == {p.name for p in rules.POLICIES}
    assert {p.enforcementLevel for p in info.policies} == {proto.MANDATORY}
    fw = only(dev_run, rules.FIREWALL)
    struct = struct_pb2.Struct()
    struct.update(to_wire(with_rule(fw, sourceIps=["::/0"])))
    response = stub.Analyze(
        proto.AnalyzeRequest(type=fw.type, properties=struct, urn=fw.urn, name=fw.name), timeout=30
    )
    assert [d.urn for d in response.diagnostics] == [fw.urn]
