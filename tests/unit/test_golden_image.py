"""Golden images, rolling replacement and the retire step, under Pulumi's mocks.

What this proves: the resources the program registers with
`goldenImage.enabled` (builder, its steps, the sealed snapshot and its
fingerprint labels, the retention command), what the hosts boot and how they
may be replaced, the dependency graph of a rollout for a batch size, and
that a stack with golden images off is unchanged. Hetzner is simulated:
getImages and getServers answer what each test says. What it does not
prove: how a real backend plans the replacement (the acceptance test), nor
anything a host does (tests/scripts, the hostlab).
"""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.fleet import download_totals
from components.golden_image import GOLDEN_STEPS, LABEL_DIGITS, golden_fingerprint, image_period
from components.host import parse_install_report
from components.payload import build_payload
from components.rollout import batch_waits, rollout_batches
from components.settings import SettingsError, parse_settings
from tests.support.program import FleetMocks, config_from_stack_file, run_program

ROOT = Path(__file__).resolve().parents[2]
DEV = config_from_stack_file(ROOT / "Pulumi.dev.yaml")
TOKEN = {"hcloud:token": "test-token"}
SERVER = "hcloud:index/server:Server"
SNAPSHOT = "hcloud:index/snapshot:Snapshot"
REMOTE = "command:remote:Command"
LOCAL = "command:local:Command"


@pytest.fixture(autouse=True)
def no_token_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HCLOUD_TOKEN", raising=False)


def golden_config(count: int = 1, **golden: Any) -> dict[str, Any]:
    cfg = copy.deepcopy({**DEV, **TOKEN})
    cfg["functions-runtime:hosts"] = [{**DEV["functions-runtime:hosts"][0], "count": count}]
    cfg["functions-runtime:goldenImage"] = {"enabled": True, **golden}
    return cfg


def by_urn_inputs(run: Any) -> dict[str, Any]:
    """Every resource's inputs by URN (registration order is not deterministic)."""
    return {r.urn: r.plain for r in run.resources}


def snapshot_id(run: Any) -> str:
    """The id the mocks give the snapshot the run registered (as Hetzner would)."""
    (snap,) = run.of_type(SNAPSHOT)
    return FleetMocks(None, False).resource_id("hcloud", snap.name)


def builder_steps(run: Any) -> list[str]:
    return [r.name.rsplit("-", 1)[-1] for r in run.of_type(REMOTE) if "-golden-builder-" in r.name]


# ---------------------------------------------------------------- off: nothing changes


def test_a_stack_with_golden_images_off_registers_what_it_did_before():
    plain = run_program({**DEV, **TOKEN}, stack="dev")
    off = run_program({**DEV, **TOKEN, "functions-runtime:goldenImage": {"enabled": False}}, stack="dev")
    assert by_urn_inputs(plain) == by_urn_inputs(off)
    assert not off.of_type(SNAPSHOT) and not off.of_type(LOCAL)
    server = off.named("cloud-1-server")
    assert server.plain["image"] == "debian-13" and server.plain["name"] == "dev-cloud-1"
    assert "image" in server.ignore_changes, "the stock image must never replace a host"


# ---------------------------------------------------------------- the build


def test_without_an_image_for_the_fingerprint_the_program_builds_one_on_a_sealed_builder():
    run = run_program(golden_config(), stack="dev")
    builders = [s for s in run.of_type(SERVER) if "-golden-builder-" in s.name]
    assert len(builders) == 1
    builder = builders[0].plain
    assert builder["image"] == "debian-13"
    assert builder["name"].startswith("dev-golden-")
    assert not builder.get("placementGroupId"), "a builder takes no place in a host's spread group"
    assert builder["labels"]["functions-runtime-role"] == "builder"
    # The host-independent prefix of the pipeline table, then the seal: no
    # certificates, no addresses, no keys reach a builder.
    assert builder_steps(run) == [s.name for s in GOLDEN_STEPS] == ["wait", "payload", "bootstrap", "install", "seal"]
    builder_user_data = yaml.safe_load(builder["userData"].split("\n", 1)[1])
    assert builder_user_data["package_update"] is True and builder_user_data["packages"]

    (snap,) = run.of_type(SNAPSHOT)
    labels = snap.plain["labels"]
    assert labels["functions-runtime-stack"] == "dev"
    assert len(labels["functions-runtime-golden"]) == LABEL_DIGITS
    assert snap.retain_on_delete, "leaving the program must keep the image, for rollback"
    seal = next(r for r in run.of_type(REMOTE) if r.name.endswith("-seal"))
    assert seal.urn in snap.dependencies, "the snapshot is taken of a sealed disk only"


def test_hosts_boot_the_snapshot_and_skip_the_package_update():
    run = run_program(golden_config(), stack="dev")
    server = run.named("cloud-1-server")
    assert server.plain["image"] == snapshot_id(run)
    digest = run.of_type(SNAPSHOT)[0].plain["labels"]["functions-runtime-golden"]
    assert server.plain["name"] == f"dev-cloud-1-g{digest[:8]}"
    assert server.plain["labels"]["functions-runtime-host"] == "cloud-1"
    user_data = yaml.safe_load(server.plain["userData"].split("\n", 1)[1])
    assert user_data["package_update"] is False and "packages" not in user_data


def test_a_golden_image_change_is_not_hidden_and_replaces_create_before_delete():
    server = run_program(golden_config(), stack="dev").named("cloud-1-server")
    assert "image" not in server.ignore_changes
    assert {"userData", "sshKeys"} <= set(server.ignore_changes)
    assert server.delete_before_replace is False


def test_an_image_hetzner_has_ends_the_build_and_leaves_every_host_input_as_it_was():
    building = run_program(golden_config(), stack="dev")
    image = {"id": int(snapshot_id(building)), "name": "", "labels": {}}
    built = run_program(golden_config(), stack="dev", hcloud_images=[image])
    assert not built.of_type(SNAPSHOT)
    assert not [s for s in built.of_type(SERVER) if "-golden-builder-" in s.name], "the next up removes the builder"
    hosts_before = {r.name: r.plain for r in building.resources if r.name.startswith("cloud-1")}
    hosts_after = {r.name: r.plain for r in built.resources if r.name.startswith("cloud-1")}
    assert hosts_after == hosts_before, "finding the image must not touch a host"
    retention = lambda run: [r.plain for r in run.of_type(LOCAL) if r.name.endswith("-retention")]  # noqa: E731
    assert retention(built) == retention(building)


def test_an_unchanged_fingerprint_gives_identical_inputs_run_after_run():
    first = run_program(golden_config(count=2), stack="dev")
    second = run_program(golden_config(count=2), stack="dev")
    assert by_urn_inputs(first) == by_urn_inputs(second)


def test_retention_keeps_the_configured_count_and_protects_the_current_image():
    run = run_program(golden_config(keep=5), stack="dev")
    (retention,) = [r for r in run.of_type(LOCAL) if r.name.endswith("-retention")]
    create = retention.plain["create"]
    assert "-m components.image_retention --stack dev --keep 5" in create
    assert f"--protect {snapshot_id(run)}" in create
    assert "HCLOUD_TOKEN" not in str(retention.plain) and "test-token" not in str(retention.plain)


# ---------------------------------------------------------------- the fingerprint


def fingerprint_of(cfg: dict[str, Any], period: int = 7, scripts_dir: Path | None = None) -> str:
    raw = {k.split(":", 1)[1]: v for k, v in cfg.items() if k.startswith("functions-runtime:")}
    settings = parse_settings(raw, "dev")
    payload = build_payload(settings.artifacts.catalog, admin_sources=settings.admin.ssh_source_cidrs)
    return golden_fingerprint(settings, settings.hcloud_hosts[0], payload, period)


def test_the_fingerprint_follows_what_is_installed_and_the_period_not_where_files_come_from():
    base = fingerprint_of(golden_config())
    assert fingerprint_of(golden_config()) == base
    assert fingerprint_of(golden_config(), period=8) != base, "a new period builds a new image"
    runsc = golden_config()
    runsc["functions-runtime:gvisor"] = {"runsc": "debian"}
    assert fingerprint_of(runsc) != base, "a different gVisor install is a different image"
    mirrored = golden_config()
    mirrored["functions-runtime:artifacts"] = {"mirror": "https://mirror.example/files"}
    assert fingerprint_of(mirrored) == base, "the same pinned files from a mirror are the same image"


def test_the_build_period_turns_over_every_max_age_days():
    day = dt.date(2026, 12, 5)
    assert image_period(day, 30) == image_period(day + dt.timedelta(days=0), 30)
    periods = {image_period(day + dt.timedelta(days=n), 30) for n in range(61)}
    assert len(periods) == 3, "61 days span exactly three 30-day periods"
    assert image_period(day, 1) != image_period(day + dt.timedelta(days=1), 1)


# ---------------------------------------------------------------- rollout


def old_servers(n: int, image: str = "112233") -> list[dict[str, Any]]:
    return [
        {"id": i, "name": f"dev-cloud-{i}", "image": image, "labels": {"functions-runtime-stack": "dev"}}
        for i in range(1, n + 1)
    ]


def server_waits(run: Any) -> dict[str, set[str]]:
    """Host -> the hosts whose steps its server waits for."""
    by_urn = run.by_urn()
    waits: dict[str, set[str]] = {}
    for server in run.of_type(SERVER):
        if "-golden-builder-" in server.name:
            continue
        host = server.name.removesuffix("-server")
        waits[host] = {
            by_urn[d].name.rsplit("-", 1)[0] for d in server.dependencies if by_urn[d].type == REMOTE
        }
    return waits


@pytest.mark.parametrize(("count", "batch"), [(5, 2), (4, 1), (3, 3)])
def test_a_rollout_replaces_running_hosts_batch_after_verified_batch(count, batch):
    expected = rollout_batches_for(count, batch)
    run = run_program(
        {**golden_config(count=count), "functions-runtime:rollout": {"batchSize": batch}},
        stack="dev",
        hcloud_servers=old_servers(count),
    )
    assert server_waits(run) == expected
    by_urn = run.by_urn()
    for server in run.of_type(SERVER):
        for dep in server.dependencies:
            if by_urn[dep].type == REMOTE:
                assert by_urn[dep].name.endswith("-keys"), "a batch waits for the previous one's whole pipeline"


def rollout_batches_for(count: int, batch: int) -> dict[str, set[str]]:
    hosts = [f"cloud-{i}" for i in range(1, count + 1)]
    batches = [hosts[i : i + batch] for i in range(0, count, batch)]
    waits = {h: set() for h in hosts}
    for previous, current in zip(batches, batches[1:], strict=False):
        for h in current:
            waits[h] = set(previous)
    return waits


def test_a_fleet_created_from_nothing_stays_parallel():
    run = run_program({**golden_config(count=4), "functions-runtime:rollout": {"batchSize": 1}}, stack="dev")
    assert all(not waits for waits in server_waits(run).values())


def test_hosts_already_on_the_image_and_new_hosts_wait_for_nobody():
    building = run_program(golden_config(count=3), stack="dev")
    current = snapshot_id(building)
    servers = old_servers(2, image=current)
    run = run_program(
        golden_config(count=3), stack="dev", hcloud_images=[{"id": int(current)}], hcloud_servers=servers
    )
    assert all(not waits for waits in server_waits(run).values())


def test_rollout_batches_follow_the_stacks_order_and_skip_new_hosts():
    from components.settings.model import HostSpec

    hosts = [HostSpec(name=f"h{i}", group="g", source="hcloud", server_name=f"s-h{i}") for i in range(5)]
    current = {"h0": "1", "h1": "2", "h3": "1", "h4": "1"}
    assert rollout_batches(hosts, current, "2", 2) == [["h0", "h3"], ["h4"]]
    assert rollout_batches(hosts, current, None, 10) == [["h0", "h1", "h3", "h4"]]
    assert batch_waits([["h0", "h3"], ["h4"]]) == {"h4": ["h0", "h3"]}


# ---------------------------------------------------------------- retire


def test_every_host_retires_through_a_drain_that_only_its_replacement_or_removal_runs():
    run = run_program({**DEV, **TOKEN, "functions-runtime:rollout": {"drainTimeoutSeconds": 120}}, stack="dev")
    retire = run.named("cloud-1-retire")
    server = run.named("cloud-1-server")
    keys = run.named("cloud-1-keys")
    assert retire.plain["triggers"] == [FleetMocks(None, False).resource_id("hcloud", server.name)]
    assert "DRAIN_TIMEOUT=120" in retire.plain["delete"] and "retire_host.sh" in retire.plain["delete"]
    assert "HOST_SOURCE=hcloud" in retire.plain["delete"]
    assert retire.plain["create"] == "true"
    assert keys.urn in retire.dependencies, "a host retires only once it was verified and serving"
    assert retire.delete_before_replace is True, "the old host drains before the new host's retire step exists"


def test_the_drain_timeout_changes_no_step_of_the_chain():
    before = run_program({**DEV, **TOKEN}, stack="dev")
    after = run_program({**DEV, **TOKEN, "functions-runtime:rollout": {"drainTimeoutSeconds": 30}}, stack="dev")
    triggers = lambda run: {r.name: r.plain.get("triggers") for r in run.of_type(REMOTE)}  # noqa: E731
    assert triggers(before) == triggers(after)


# ---------------------------------------------------------------- one download per fleet


def dedicated_config(n: int, mirror: str | None = None) -> dict[str, Any]:
    cfg = copy.deepcopy(config_from_stack_file(ROOT / "Pulumi.prod.yaml"))
    groups = [g for g in cfg["functions-runtime:hosts"] if g["source"] == "dedicated"]
    group = {**groups[0]}
    group["addresses"] = group["addresses"][:n]
    cfg["functions-runtime:hosts"] = [group]
    if mirror:
        cfg["functions-runtime:artifacts"] = {**cfg.get("functions-runtime:artifacts", {}), "mirror": mirror}
    return cfg


def install_env(run: Any, host: str) -> dict[str, str]:
    words = run.named(f"{host}-install").plain["create"].split()
    return {w.split("=", 1)[0]: w.split("=", 1)[1].strip("'") for w in words if "=" in w and w[0].isupper()}


def test_dedicated_hosts_fetch_release_files_once_per_fleet_from_their_first_host():
    run = run_program(dedicated_config(3), stack="prod")
    names = [r.name.removesuffix("-install") for r in run.of_type(REMOTE) if r.name.endswith("-install")]
    seed, *others = names
    assert install_env(run, seed)["ARTIFACT_SHARE"] == "10.30.1.11:9180"
    assert install_env(run, seed)["ARTIFACT_PEERS"] == ""
    firewall = run.named(f"{seed}-firewall").plain["create"]
    assert "ARTIFACT_PEER_CIDRS='10.30.1.12/32 10.30.1.13/32'" in firewall
    for other in others:
        assert install_env(run, other)["ARTIFACT_PEERS"] == "http://10.30.1.11:9180"
        assert install_env(run, other)["ARTIFACT_SHARE"] == ""
        assert run.named(f"{seed}-install").urn in run.named(f"{other}-install").dependencies


@pytest.mark.parametrize(("n", "mirror"), [(1, None), (3, "https://mirror.example/files")])
def test_nothing_is_shared_with_one_dedicated_host_or_a_mirror(n, mirror):
    run = run_program(dedicated_config(n, mirror), stack="prod")
    for r in run.of_type(REMOTE):
        if r.name.endswith("-install"):
            env = install_env(run, r.name.removesuffix("-install"))
            assert env["ARTIFACT_PEERS"] == "" and env["ARTIFACT_SHARE"] == ""


def test_the_fleet_reports_bytes_fetched_by_source_in_all_and_per_host():
    reports = [
        parse_install_report('noise\n{"downloadedBytes": {"internet": 1500, "mirror": 0, "peer": 0}}'),
        parse_install_report('{"downloadedBytes": {"internet": 0, "mirror": 0, "peer": 1500}}'),
        parse_install_report('{"downloads": []}'),
    ]
    totals = download_totals(["a", "b", "c"], reports)
    assert totals["bytes"] == {"internet": 1500, "mirror": 0, "peer": 1500}
    assert totals["hosts"]["c"] == {"internet": 0, "mirror": 0, "peer": 0}


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [("keep", 0, "goldenImage.keep"), ("maxAgeDays", 0, "goldenImage.maxAgeDays"), ("enabled", "yes", "enabled")],
)
def test_bad_golden_image_settings_are_refused_by_key(field, value, words):
    raw = {k.split(":", 1)[1]: v for k, v in golden_config().items() if k.startswith("functions-runtime:")}
    raw["goldenImage"] = {**raw["goldenImage"], field: value}
    with pytest.raises(SettingsError, match=words):
        parse_settings(raw, "dev")


def test_golden_images_without_cloud_hosts_are_said_to_build_nothing():
    raw = {k.split(":", 1)[1]: v for k, v in dedicated_config(2).items() if k.startswith("functions-runtime:")}
    raw["goldenImage"] = {"enabled": True}
    settings = parse_settings(raw, "prod")
    assert any("goldenImage.enabled" in w and "nothing is built" in w for w in settings.warnings)


def test_golden_hosts_leave_room_in_each_spread_group_for_a_replacement():
    raw = {k.split(":", 1)[1]: v for k, v in golden_config(count=19).items() if k.startswith("functions-runtime:")}
    indexes = [h.placement_index for h in parse_settings(raw, "dev").hcloud_hosts]
    assert indexes == [0] * 9 + [1] * 9 + [2]
    raw["goldenImage"] = {"enabled": False}
    assert [h.placement_index for h in parse_settings(raw, "dev").hcloud_hosts] == [0] * 10 + [1] * 9


def test_a_server_name_without_room_for_the_image_suffix_is_refused_by_key():
    cfg = golden_config()
    cfg["functions-runtime:hosts"][0]["name"] = "g" * 40
    raw = {k.split(":", 1)[1]: v for k, v in cfg.items() if k.startswith("functions-runtime:")}
    with pytest.raises(SettingsError, match=r"hosts\[0\]\.name.*golden image's suffix"):
        parse_settings(raw, "d" * 15)


@pytest.mark.parametrize(("batch", "waits"), [(1, {"kvm-2": {"kvm-1"}, "kvm-3": {"kvm-2"}}), (2, {"kvm-3": {"kvm-1", "kvm-2"}})])
def test_dedicated_hosts_are_updated_in_place_one_batch_after_the_other(batch, waits):
    cfg = {**dedicated_config(3), "functions-runtime:rollout": {"batchSize": batch}}
    run = run_program(cfg, stack="prod")
    by_urn = run.by_urn()
    found = {}
    for r in run.of_type(REMOTE):
        if r.name.endswith("-install"):
            host = r.name.removesuffix("-install")
            after = {by_urn[d].name.rsplit("-", 1)[0] for d in r.dependencies if by_urn[d].name.endswith("-keys")}
            if after:
                found[host] = after
    assert found == waits
