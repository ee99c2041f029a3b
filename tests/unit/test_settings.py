"""Stack configuration: every bad value is refused, by config key, at once.

These run `parse_settings` directly (no Pulumi engine): what they prove is
the validation and its messages; that the program calls it before any
resource is registered is proven in test_program.py.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from components.settings import PLACEMENT_GROUP_SIZE, SettingsError, parse_settings
from tests.support.program import stand_in_ssh_key

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKJrmllVu4fMVCnQiQh96iGQMhpTa/0BpPT/hQl0cgYS"

GOOD: dict[str, Any] = {
    "isolation": "sandbox",
    "hosts": [
        {"name": "cloud", "source": "hcloud", "count": 2, "serverType": "cx23", "location": "fsn1"},
        {
            "name": "metal",
            "source": "dedicated",
            "addresses": [{"address": "203.0.113.50", "privateAddress": "10.0.1.50", "hostKey": HOST_KEY}],
        },
    ],
    "admin": {"sshSourceCidrs": ["198.51.100.7/32"]},
    "dedicatedSshKey": stand_in_ssh_key(),
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    """GOOD with one value replaced; path like 'hosts.0.count' ('-' deletes)."""
    cfg = copy.deepcopy(GOOD)
    parts = path.split(".")
    target: Any = cfg
    for part in parts[:-1]:
        target = target[int(part)] if isinstance(target, list) else target.setdefault(part, {})
    last = parts[-1]
    if value == "-":
        del target[last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return cfg


def problems_of(cfg: dict[str, Any]) -> list[str]:
    with pytest.raises(SettingsError) as err:
        parse_settings(cfg, "test")
    return err.value.problems


def test_good_config_parses_into_flat_hosts():
    s = parse_settings(GOOD, "test")
    assert [h.name for h in s.hosts] == ["cloud-1", "cloud-2", "metal-1"]
    assert s.hosts[0].server_name == "test-cloud-1"
    assert s.hosts[0].image == "debian-13"
    assert s.hosts[2].private_address == "10.0.1.50"
    assert s.endpoint.port == 2376
    assert s.endpoint.allowed_cidrs == ("10.0.0.0/16",)
    assert s.kata.hypervisor == "qemu"
    assert s.artifacts.catalog["kata"].version == "3.32.0"


BAD_CASES = [
    ("unknown source", with_change("hosts.0.source", "aws"), "functions-runtime:hosts[0].source"),
    ("count below one", with_change("hosts.0.count", 0), "functions-runtime:hosts[0].count"),
    ("count missing", with_change("hosts.0.count", "-"), "functions-runtime:hosts[0].count"),
    ("host name not a hostname", with_change("hosts.0.name", "Cloud_1"), "functions-runtime:hosts[0].name"),
    ("duplicate group name", with_change("hosts.1.name", "cloud"), "functions-runtime:hosts[1].name"),
    ("bad server type", with_change("hosts.0.serverType", "huge one"), "functions-runtime:hosts[0].serverType"),
    ("unknown location", with_change("hosts.0.location", "mars1"), "functions-runtime:hosts[0].location"),
    ("location outside zone", with_change("hosts.0.location", "ash"), "functions-runtime:hosts[0].location"),
    ("unsupported image", with_change("hosts.0.image", "ubuntu-24.04"), "functions-runtime:hosts[0].image"),
    ("typo in a field", with_change("hosts.0.servertype", "cx23"), "functions-runtime:hosts[0]"),
    ("bad isolation", with_change("isolation", "container"), "functions-runtime:isolation"),
    ("hcloud in a vm stack", with_change("isolation", "vm"), "functions-runtime:hosts[0]"),
    ("unknown hypervisor", with_change("kata", {"hypervisor": "vmware"}), "functions-runtime:kata.hypervisor"),
    ("firecracker refused", with_change("kata", {"hypervisor": "firecracker"}), "functions-runtime:kata.hypervisor"),
    ("clh without its opt-in", with_change("kata", {"hypervisor": "clh"}), "functions-runtime:kata.hypervisor"),
    (
        "untested-hypervisor opt-in not a boolean",
        with_change("kata", {"hypervisor": "clh", "allowUntestedHypervisor": "yes"}),
        "functions-runtime:kata.allowUntestedHypervisor",
    ),
    ("public network range", with_change("network", {"ipRange": "8.8.0.0/16"}), "functions-runtime:network.ipRange"),
    (
        "range overlaps docker bridge",
        with_change("network", {"ipRange": "172.16.0.0/12", "subnet": "172.16.1.0/24"}),
        "functions-runtime:network.ipRange",
    ),
    ("subnet outside range", with_change("network", {"subnet": "10.9.0.0/24"}), "functions-runtime:network.subnet"),
    ("cidr with host bits", with_change("network", {"ipRange": "10.0.0.1/16"}), "functions-runtime:network.ipRange"),
    ("unknown zone", with_change("network", {"zone": "moon"}), "functions-runtime:network.zone"),
    ("ssh sources missing", with_change("admin", {}), "functions-runtime:admin.sshSourceCidrs"),
    (
        "ssh from anywhere without opt-in",
        with_change("admin", {"sshSourceCidrs": ["0.0.0.0/0"]}),
        "functions-runtime:admin.sshSourceCidrs[0]",
    ),
    (
        "ipv6 anywhere without opt-in",
        with_change("admin", {"sshSourceCidrs": ["::/0"]}),
        "functions-runtime:admin.sshSourceCidrs[0]",
    ),
    (
        "private key given as admin key",
        with_change("admin", {"sshSourceCidrs": ["198.51.100.7/32"], "sshKeys": ["-----BEGIN OPENSSH PRIVATE KEY-----"]}),
        "functions-runtime:admin.sshKeys[0]",
    ),
    ("endpoint open to all", with_change("endpoint", {"allowedCidrs": ["0.0.0.0/0"]}), "functions-runtime:endpoint.allowedCidrs[0]"),
    ("endpoint public source", with_change("endpoint", {"allowedCidrs": ["198.51.100.0/24"]}), "functions-runtime:endpoint.allowedCidrs[0]"),
    ("endpoint port out of range", with_change("endpoint", {"port": 80}), "functions-runtime:endpoint.port"),
    ("endpoint memory maximum too low", with_change("endpoint", {"limits": {"maxMemoryMiB": 64}}), "functions-runtime:endpoint.limits.maxMemoryMiB"),
    ("endpoint pids maximum not a number", with_change("endpoint", {"limits": {"maxPids": "many"}}), "functions-runtime:endpoint.limits.maxPids"),
    ("endpoint cpus with too many decimals", with_change("endpoint", {"limits": {"maxCpus": "0.1234"}}), "functions-runtime:endpoint.limits.maxCpus"),
    ("endpoint cpus too low", with_change("endpoint", {"limits": {"maxCpus": 0.05}}), "functions-runtime:endpoint.limits.maxCpus"),
    ("endpoint cpus a boolean", with_change("endpoint", {"limits": {"maxCpus": True}}), "functions-runtime:endpoint.limits.maxCpus"),
    ("endpoint limits unknown field", with_change("endpoint", {"limits": {"memory": 1}}), "functions-runtime:endpoint.limits"),
    ("revoked serial not hex", with_change("endpoint", {"revoked": {"serials": ["xyz"]}}), "functions-runtime:endpoint.revoked.serials[0]"),
    ("revoked name with a line break", with_change("endpoint", {"revoked": {"commonNames": ["a\nb"]}}), "functions-runtime:endpoint.revoked.commonNames[0]"),
    ("mirror not a url", with_change("artifacts", {"mirror": "ftp:/x"}), "functions-runtime:artifacts.mirror"),
    ("catalog missing", with_change("artifacts", {"catalog": "nope.tsv"}), "functions-runtime:artifacts.catalog"),
    ("verify image unpinned", with_change("verify", {"image": "busybox:latest"}), "functions-runtime:verify.image"),
    (
        "image id without archive",
        with_change("verify", {"image": "sha256:" + "a" * 64}),
        "functions-runtime:verify.image",
    ),
    ("even cold-start runs", with_change("verify", {"coldStartRuns": 4}), "functions-runtime:verify.coldStartRuns"),
    ("dedicated without addresses", with_change("hosts.1.addresses", []), "functions-runtime:hosts[1].addresses"),
    (
        "dedicated without host key",
        with_change("hosts.1.addresses", [{"address": "203.0.113.50", "privateAddress": "10.0.1.50"}]),
        "functions-runtime:hosts[1].addresses[0].hostKey",
    ),
    (
        "dedicated private address not an ip",
        with_change("hosts.1.addresses", [{"address": "a", "privateAddress": "b", "hostKey": HOST_KEY}]),
        "functions-runtime:hosts[1].addresses[0].privateAddress",
    ),
    ("dedicated without ssh key", with_change("dedicatedSshKey", "-"), "functions-runtime:dedicatedSshKey"),
    ("hosts missing", with_change("hosts", "-"), "functions-runtime:hosts"),
    ("unknown top-level key", with_change("isolaton", "vm"), "functions-runtime:isolaton"),
]


@pytest.mark.parametrize("case,cfg,config_key", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_value_is_refused_naming_its_key(case, cfg, config_key):
    problems = problems_of(cfg)
    assert any(p.startswith(config_key + ":") for p in problems), (case, problems)


def test_hcloud_group_in_vm_stack_explains_nested_virtualization():
    problems = problems_of(with_change("isolation", "vm"))
    text = " ".join(problems)
    assert "no /dev/kvm" in text and "nested virtualization" in text
    assert "source: dedicated" in text and "'sandbox'" in text


def test_every_problem_is_reported_at_once():
    cfg = with_change("isolation", "container")
    cfg["hosts"][0]["count"] = 0
    cfg["admin"] = {"sshSourceCidrs": ["0.0.0.0/0"]}
    problems = problems_of(cfg)
    keys = {p.split(":")[1] for p in problems}
    assert {"isolation", "hosts[0].count", "admin.sshSourceCidrs[0]"} <= keys


def test_explicit_opt_ins_accept_what_they_name():
    cfg = with_change("admin", {"sshSourceCidrs": ["0.0.0.0/0"], "allowSshFromAnywhere": True})
    cfg["endpoint"] = {"allowedCidrs": ["198.51.100.0/24"], "allowPublicSources": True}
    cfg["hosts"][1]["addresses"] = [{"address": "203.0.113.50", "privateAddress": "10.0.1.50"}]
    cfg["hosts"][1]["trustOnFirstUse"] = True
    s = parse_settings(cfg, "test")
    assert s.admin.ssh_source_cidrs == ("0.0.0.0/0",)
    assert s.dedicated_hosts[0].host_key is None


def test_placement_groups_hold_at_most_ten_hosts():
    s = parse_settings(with_change("hosts.0.count", 25), "test")
    indexes = [h.placement_index for h in s.hcloud_hosts]
    assert indexes.count(0) == PLACEMENT_GROUP_SIZE
    assert indexes.count(1) == PLACEMENT_GROUP_SIZE
    assert indexes.count(2) == 5


def test_settings_error_says_nothing_was_changed():
    with pytest.raises(SettingsError, match="nothing was changed"):
        parse_settings(with_change("isolation", "container"), "test")


def test_endpoint_limits_and_revocations_default_and_parse():
    s = parse_settings(GOOD, "test")
    assert (s.endpoint.limits.max_memory_mib, s.endpoint.limits.max_pids, s.endpoint.limits.max_millicpus) == (
        2048,
        1024,
        2000,
    )
    assert s.endpoint.revoked.serials == () and s.endpoint.revoked.common_names == ()
    cfg = with_change(
        "endpoint",
        {
            "limits": {"maxMemoryMiB": 512, "maxPids": 256, "maxCpus": "1.5"},
            "revoked": {"serials": ["0A:BC:0D", "0x00ff"], "commonNames": ["functions-runtime consumer"]},
        },
    )
    s = parse_settings(cfg, "test")
    assert (s.endpoint.limits.max_memory_mib, s.endpoint.limits.max_pids, s.endpoint.limits.max_millicpus) == (
        512,
        256,
        1500,
    )
    assert s.endpoint.revoked.serials == ("abc0d", "ff")
    assert s.endpoint.revoked.common_names == ("functions-runtime consumer",)
    assert parse_settings(with_change("endpoint", {"limits": {"maxCpus": 4}}), "test").endpoint.limits.max_millicpus == 4000


def test_egress_defaults_block_smtp_and_limit_new_connections():
    egress = parse_settings(GOOD, "test").egress
    assert egress.block_smtp is True
    assert (egress.new_per_second, egress.new_burst, egress.allowed_cidrs) == (50, 200, ())


def test_egress_settings_parse():
    cfg = with_change(
        "egress",
        {"smtp": "allow", "newConnectionsPerSecond": 0, "newConnectionsBurst": 20, "allowedCidrs": ["198.51.100.25/32"]},
    )
    egress = parse_settings(cfg, "test").egress
    assert (egress.block_smtp, egress.new_per_second, egress.new_burst) == (False, 0, 20)
    assert egress.allowed_cidrs == ("198.51.100.25/32",)


@pytest.mark.parametrize(
    ("egress", "config_key", "words"),
    [
        ({"smtp": "off"}, "functions-runtime:egress.smtp", "'block'"),
        ({"newConnectionsPerSecond": -1}, "functions-runtime:egress.newConnectionsPerSecond", ""),
        ({"newConnectionsBurst": 0}, "functions-runtime:egress.newConnectionsBurst", ""),
        ({"allowedCidrs": ["10.0.0.0/8"]}, "functions-runtime:egress.allowedCidrs[0]", "never reach"),
        ({"allowedCidrs": ["169.254.169.254/32"]}, "functions-runtime:egress.allowedCidrs[0]", "metadata"),
        ({"allowedCidrs": ["0.0.0.0/0"]}, "functions-runtime:egress.allowedCidrs[0]", "whole internet"),
        ({"allowedCidrs": ["198.51.100.1/24"]}, "functions-runtime:egress.allowedCidrs[0]", "did you mean"),
        ({"relay": "x"}, "functions-runtime:egress", "relay"),
    ],
)
def test_bad_egress_setting_is_named(egress, config_key, words):
    problems = problems_of(with_change("egress", egress))
    assert len(problems) == 1, problems
    assert problems[0].startswith(config_key) and words in problems[0], problems


def test_verify_outside_probe_defaults_parses_and_can_be_none():
    assert parse_settings(GOOD, "test").verify.outside_probe == ("1.1.1.1", 443)
    for text, expected in (
        ("192.0.2.10:8080", ("192.0.2.10", 8080)),
        ("[2606:4700::1111]:443", ("2606:4700::1111", 443)),
        ("none", None),
    ):
        assert parse_settings(with_change("verify", {"outsideProbe": text}), "test").verify.outside_probe == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("1.1.1.1", "not an address and port"),
        ("example.com:443", "not an address and port"),
        ("10.0.1.5:80", "not an internet address"),
        ("169.254.169.254:80", "not an internet address"),
        ("1.1.1.1:70000", "out of range"),
        ("999.1.1.1:80", "not an IP address"),
    ],
)
def test_bad_verify_outside_probe_is_named(text, words):
    problems = problems_of(with_change("verify", {"outsideProbe": text}))
    assert len(problems) == 1 and problems[0].startswith("functions-runtime:verify.outsideProbe"), problems
    assert words in problems[0], problems


def test_verify_name_probe_defaults_parses_and_can_be_none():
    assert parse_settings(GOOD, "test").verify.name_probe == "deb.debian.org"
    for text, expected in (
        ("probe.functions-runtime.test", "probe.functions-runtime.test"),
        ("API.Example.COM.", "api.example.com"),
        ("none", None),
    ):
        assert parse_settings(with_change("verify", {"nameProbe": text}), "test").verify.name_probe == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("localhost", "not a DNS name"),
        ("-bad.example.com", "not a DNS name"),
        ("a..example.com", "not a DNS name"),
        ("exa mple.com", "not a DNS name"),
        ("x" * 64 + ".example.com", "not a DNS name"),
        ("1.1.1.1", "an address, not a name"),
        (42, "expected a non-empty string"),
    ],
)
def test_bad_verify_name_probe_is_named(text, words):
    problems = problems_of(with_change("verify", {"nameProbe": text}))
    assert len(problems) == 1 and problems[0].startswith("functions-runtime:verify.nameProbe"), problems
    assert words in problems[0], problems


def test_verify_runs_nerdctl_unless_the_stack_says_false():
    assert parse_settings(GOOD, "test").verify.nerdctl is True
    assert parse_settings(with_change("verify", {"nerdctl": False}), "test").verify.nerdctl is False
    assert parse_settings(with_change("verify", {"nerdctl": "false"}), "test").verify.nerdctl is False
    problems = problems_of(with_change("verify", {"nerdctl": "sometimes"}))
    assert len(problems) == 1 and problems[0].startswith("functions-runtime:verify.nerdctl"), problems
    assert "true or false" in problems[0]


def test_a_private_network_over_the_hosts_cni_network_is_refused():
    problems = problems_of(with_change("network", {"ipRange": "10.0.0.0/8", "subnet": "10.0.1.0/24"}))
    assert len(problems) == 1 and problems[0].startswith("functions-runtime:network.ipRange"), problems
    assert "10.4.250.0/24" in problems[0] and "CNI" in problems[0]


# ---------------------------------------------------------------- kata.hypervisor


def test_qemu_is_the_default_hypervisor_and_needs_no_opt_in():
    s = parse_settings(GOOD, "test")
    assert s.kata.hypervisor == "qemu" and s.kata.allow_untested_hypervisor is False
    assert s.warnings == ()
    explicit = parse_settings(with_change("kata", {"hypervisor": "qemu"}), "test")
    assert explicit.kata.hypervisor == "qemu" and explicit.warnings == ()


def test_clh_without_its_opt_in_is_refused_naming_the_key_and_why():
    problems = problems_of(with_change("kata", {"hypervisor": "clh"}))
    (problem,) = [p for p in problems if p.startswith("functions-runtime:kata.hypervisor:")]
    assert "\n" not in problem, "one line"
    assert "'clh' (Cloud Hypervisor) is not tested with Docker upstream" in problem
    assert "only with QEMU as the VMM" in problem and "how-to-use-kata-with-docker.md" in problem
    # What to do: the tested default, or the opt-in by its full key.
    assert "Use 'qemu' (the default)" in problem
    assert "functions-runtime:kata.allowUntestedHypervisor to true" in problem


def test_clh_with_its_opt_in_is_accepted_and_warned_by_key():
    s = parse_settings(with_change("kata", {"hypervisor": "clh", "allowUntestedHypervisor": True}), "test")
    assert s.kata.hypervisor == "clh" and s.kata.allow_untested_hypervisor is True
    (warning,) = s.warnings
    assert warning.startswith("functions-runtime:kata.hypervisor: 'clh' (Cloud Hypervisor) is an experiment")
    assert "only with QEMU as the VMM" in warning and "kata-runtime check" in warning
    # As `pulumi config set --path ... true` stores it: the string "true".
    as_text = parse_settings(with_change("kata", {"hypervisor": "clh", "allowUntestedHypervisor": "true"}), "test")
    assert as_text.kata.allow_untested_hypervisor is True and len(as_text.warnings) == 1


def test_the_untested_hypervisor_opt_in_changes_nothing_for_qemu():
    s = parse_settings(with_change("kata", {"hypervisor": "qemu", "allowUntestedHypervisor": True}), "test")
    assert s.kata.hypervisor == "qemu" and s.warnings == ()


def test_day_two_defaults_a_minute_canary_gc_thresholds_and_the_endpoints_sources_reading_metrics():
    settings = parse_settings(GOOD, "test")
    assert settings.canary.interval_seconds == 60
    assert (settings.gc.container_ttl_minutes, settings.gc.image_budget_gib, settings.gc.disk_watermark_percent) == (
        60, 20, 80)
    assert settings.metrics.allowed_cidrs == settings.endpoint.allowed_cidrs == ("10.0.0.0/16",)
    assert settings.canary.drain_on_failure is False


def test_day_two_settings_parse():
    cfg = with_change("canary", {"intervalSeconds": 300})
    cfg["gc"] = {"containerTtlMinutes": 5, "imageBudgetGiB": 0, "diskWatermarkPercent": 90}
    cfg["metrics"] = {"allowedCidrs": ["10.0.9.0/24", "fd00::/64"]}
    settings = parse_settings(cfg, "test")
    assert settings.canary.interval_seconds == 300
    assert (settings.gc.container_ttl_minutes, settings.gc.image_budget_gib, settings.gc.disk_watermark_percent) == (
        5, 0, 90)
    assert settings.metrics.allowed_cidrs == ("10.0.9.0/24", "fd00::/64")


@pytest.mark.parametrize(
    ("section", "value", "config_key", "words"),
    [
        ("canary", {"intervalSeconds": 10}, "functions-runtime:canary.intervalSeconds", "30"),
        ("canary", {"intervalSeconds": "often"}, "functions-runtime:canary.intervalSeconds", ""),
        ("gc", {"diskWatermarkPercent": 100}, "functions-runtime:gc.diskWatermarkPercent", "95"),
        ("gc", {"containerTtlMinutes": 0}, "functions-runtime:gc.containerTtlMinutes", ""),
        ("gc", {"imageBudgetGiB": -1}, "functions-runtime:gc.imageBudgetGiB", ""),
        ("gc", {"ttl": 5}, "functions-runtime:gc", "ttl"),
        ("metrics", {"allowedCidrs": ["203.0.113.0/24"]}, "functions-runtime:metrics.allowedCidrs[0]", "private"),
        ("metrics", {"allowedCidrs": ["0.0.0.0/0"]}, "functions-runtime:metrics.allowedCidrs[0]", "private"),
        ("metrics", {"allowedCidrs": ["10.0.0.1/8"]}, "functions-runtime:metrics.allowedCidrs[0]", ""),
        ("certificates", {"rotateAfterDays": 730}, "functions-runtime:certificates.rotateAfterDays", "729"),
        ("certificates", {"rotateAfterDays": 1}, "functions-runtime:certificates.rotateAfterDays", "7"),
        ("canary", {"drainOnFailure": "yes"}, "functions-runtime:canary.drainOnFailure", ""),
    ],
)
def test_bad_day_two_setting_is_named(section, value, config_key, words):
    problems = problems_of(with_change(section, value))
    assert len(problems) == 1, problems
    assert problems[0].startswith(config_key) and words in problems[0], problems
