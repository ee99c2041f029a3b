"""host_gc: the garbage collector's rules (host_gc/plan.py, table-driven) and
whole runs of its command against a stateful stand-in for dockerd
(tests/support/fake_docker_engine.py) on a real unix socket in tmp_path.

Proves: which containers and images go and in what order (TTL, used images,
--keep-image, budget, watermark); a conflict or a vanished object is skipped,
not fatal; removals are never forced; a dry run sends no request that changes
anything; an unreachable or wrong socket exits 1 naming it; bad flags exit 2
naming them; the JSON document and the textfile's gauges (Prometheus text
format, written atomically, 0644); the file runs as `python3 -I
host_gc/__main__.py`. Every engine a test starts is closed by its fixture.
Does not prove: that trixie's dockerd answers as the stand-in does, or how
much a removal really frees (see the stand-in's docstring); the hostlab does.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from host_gc import __main__ as cli
from host_gc.plan import (
    ContainerDetail,
    ContainerSummary,
    DiskUsage,
    Image,
    above_watermark,
    disk_usage_from_statvfs,
    expired,
    matches,
    parse_docker_time,
    plan_images,
    read_container_detail,
    read_container_list,
    read_image_list,
    used_image_ids,
    worth_inspecting,
)
from tests.support.fake_docker_engine import GIB, FakeDockerEngine, docker_time

ROOT = Path(__file__).resolve().parents[2]
GC_FILE = ROOT / "host_gc" / "__main__.py"
NOW = 1_700_000_000.0
TTL = 3600
HOUR = 3600.0
GAUGES = (
    "functions_runtime_gc_last_run_timestamp_seconds",
    "functions_runtime_gc_removed_containers",
    "functions_runtime_gc_removed_images",
    "functions_runtime_gc_reclaimed_bytes",
    "functions_runtime_disk_used_ratio",
    "functions_runtime_disk_watermark_ratio",
    "functions_runtime_gc_under_watermark",
)


def image_id(n: int) -> str:
    return "sha256:" + hashlib.sha256(f"image {n}".encode()).hexdigest()


def container_id(n: int) -> str:
    return hashlib.sha256(f"container {n}".encode()).hexdigest()


def image(n: int, created: int, size: int, tags: tuple[str, ...] = ()) -> Image:
    return Image(image_id(n), tags, (), created, size)


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    assert set(threading.enumerate()) <= before, "a test left a thread running"


@pytest.fixture
def engine(tmp_path) -> Iterator[FakeDockerEngine]:
    with FakeDockerEngine(tmp_path / "docker.sock", clock=lambda: NOW) as fake:
        yield fake


def run_gc(engine: FakeDockerEngine, tmp_path: Path, *flags: str, ttl: int = TTL, budget: int = 100 * GIB,
           watermark: int = 90) -> tuple[int, dict, list[str]]:
    """One in-process run at NOW, with the engine's disk model as the disk probe."""
    out = io.StringIO()
    lines: list[str] = []
    argv = ["--container-ttl-seconds", str(ttl), "--image-budget-bytes", str(budget), "--watermark-percent",
            str(watermark), "--data-root", str(tmp_path), "--docker-socket", str(engine.socket_path), *flags]
    code = cli.main(argv, clock=lambda: NOW, disk_usage=engine.disk_usage, stdout=out,
                    log=lambda m: lines.append(f"host_gc: {m}"))
    return code, json.loads(out.getvalue()), lines


def deleted(engine: FakeDockerEngine, kind: str) -> list[str]:
    """IDs the run sent DELETE for, in order."""
    found = []
    for method, target in engine.writes():
        parts = urlsplit(target).path.strip("/").split("/")
        if method == "DELETE" and parts[0] == kind:
            found.append(parts[1].replace("%3A", ":"))
    return found


# --------------------------------------------------------- plan: containers


@pytest.mark.parametrize(("status", "finished_ago", "goes"), [
    ("exited", TTL + 1, True),
    ("exited", TTL - 1, False),
    ("dead", TTL + 1, True),
    ("running", 10 * TTL, False),
    ("paused", 10 * TTL, False),
    ("restarting", 10 * TTL, False),
    ("removing", 10 * TTL, False),
    ("some-later-state", 10 * TTL, False),
])
def test_only_exited_dead_and_created_containers_past_the_ttl_go(status, finished_ago, goes):
    detail = ContainerDetail("c", status, created=NOW - 20 * TTL, finished_at=NOW - finished_ago)
    assert expired(detail, NOW, TTL) is goes, status


def test_a_created_container_is_judged_by_when_it_was_created():
    old = ContainerDetail("c", "created", created=NOW - TTL - 1, finished_at=None)
    fresh = ContainerDetail("c", "created", created=NOW - TTL + 1, finished_at=None)
    assert expired(old, NOW, TTL) and not expired(fresh, NOW, TTL)


def test_a_long_lived_container_that_just_exited_stays():
    detail = ContainerDetail("c", "exited", created=NOW - 100 * TTL, finished_at=NOW - 60)
    assert not expired(detail, NOW, TTL)


def test_fresh_containers_are_not_even_inspected():
    listing = [ContainerSummary("old", "exited", NOW - TTL - 1, ""), ContainerSummary("new", "exited", NOW - 5, ""),
               ContainerSummary("up", "running", NOW - 10 * TTL, "")]
    assert [c.id for c in worth_inspecting(listing, NOW, TTL)] == ["old"]


def test_dockers_times_read_with_nanoseconds_and_the_zero_time_is_none():
    assert parse_docker_time("2023-11-14T22:13:20.123456789Z") == pytest.approx(NOW + 0.123456)
    assert parse_docker_time(docker_time(NOW)) == NOW
    assert parse_docker_time("0001-01-01T00:00:00Z") is None
    with pytest.raises(ValueError):
        parse_docker_time("yesterday")


def test_documents_of_the_wrong_shape_are_refused():
    for bad in ({"message": "x"}, [{"Id": 1, "State": "exited", "Created": 1}], [{"Id": "a", "State": "exited"}]):
        with pytest.raises(ValueError):
            read_container_list(bad)
    with pytest.raises(ValueError):
        read_image_list([{"Id": "sha256:a", "Created": 1, "Size": "big"}])
    with pytest.raises(ValueError):
        read_container_detail({"Id": "a", "State": "exited"}, NOW)


# ------------------------------------------------------------- plan: images


def test_an_image_a_stopped_container_still_uses_is_kept():
    remaining = [ContainerSummary("c", "exited", NOW, image_id(1))]
    plan = plan_images([image(1, 1, GIB), image(2, 2, GIB)], used_image_ids(remaining), [], budget=0)
    assert [i.id for i in plan.over_budget] == [image_id(2)]
    assert [(i.id, why) for i, why in plan.kept] == [(image_id(1), "used by a container")]


def test_unused_images_are_removed_oldest_first_until_within_budget():
    images = [image(3, created=30, size=1 * GIB), image(1, created=10, size=3 * GIB), image(2, created=20, size=2 * GIB)]
    plan = plan_images(images, frozenset(), [], budget=int(2.5 * GIB))
    assert [i.id for i in plan.over_budget] == [image_id(1), image_id(2)]
    assert [i.id for i in plan.rest] == [image_id(3)]
    assert plan_images(images, frozenset(), [], budget=6 * GIB).over_budget == ()
    assert len(plan_images(images, frozenset(), [], budget=0).over_budget) == 3


@pytest.mark.parametrize(("ref", "kept"), [
    ("functions-runtime/verify:busybox", True),
    (image_id(7), True),
    (image_id(7).removeprefix("sha256:"), True),
    (image_id(7).removeprefix("sha256:")[:12], True),
    ("busybox", True),  # busybox:latest
    ("busybox@sha256:" + "ab" * 32, True),
    ("busybox:1.36", False),
    ("functions-runtime/verify", False),  # means :latest, which it is not
    (image_id(7).removeprefix("sha256:")[:6], False),  # too short to name an image
])
def test_keep_image_matches_by_tag_by_id_and_by_digest(ref, kept):
    verify = Image(image_id(7), ("functions-runtime/verify:busybox", "busybox:latest"),
                   ("busybox@sha256:" + "ab" * 32,), created=1, size=GIB)
    assert matches(verify, ref) is kept
    plan = plan_images([verify], frozenset(), [ref], budget=0)
    assert (plan.over_budget == ()) is kept


def test_kept_images_do_not_count_against_the_budget():
    plan = plan_images([image(1, 1, 5 * GIB, ("keep:me",)), image(2, 2, GIB)], frozenset(), ["keep:me"], budget=GIB)
    assert plan.over_budget == ()


def test_the_watermark_and_the_disk_arithmetic():
    assert above_watermark(DiskUsage(81, 100), 80) and not above_watermark(DiskUsage(80, 100), 80)

    class Statvfs:
        f_blocks, f_bfree, f_bavail, f_frsize = 1000, 250, 200, 4096

    usage = disk_usage_from_statvfs(Statvfs())
    assert (usage.used, usage.total, usage.percent) == (750 * 4096, 1000 * 4096, 75.0)


# -------------------------------------------------- whole runs against the engine


def test_a_running_container_is_never_removed(engine, tmp_path):
    for n, state in enumerate(("running", "paused", "restarting"), start=1):
        engine.add_container(container_id(n), image_id(n), state, created=NOW - 100 * HOUR)
    engine.add_container(container_id(9), image_id(9), "exited", created=NOW - 100 * HOUR, finished_at=NOW - 2 * HOUR)
    code, doc, _ = run_gc(engine, tmp_path)
    assert code == 0
    assert deleted(engine, "containers") == [container_id(9)]
    assert set(engine.containers) == {container_id(1), container_id(2), container_id(3)}
    assert doc["removed_containers"] == 1 and doc["removed_container_ids"] == [container_id(9)]


def test_expired_containers_go_with_their_anonymous_volumes_and_fresh_ones_stay(engine, tmp_path):
    engine.add_container(container_id(1), image_id(1), "exited", NOW - 3 * HOUR, finished_at=NOW - 2 * HOUR)
    engine.add_container(container_id(2), image_id(1), "exited", NOW - 3 * HOUR, finished_at=NOW - 60)
    engine.add_container(container_id(3), image_id(1), "created", NOW - 2 * HOUR)
    engine.add_container(container_id(4), image_id(1), "dead", NOW - 2 * HOUR)
    code, doc, lines = run_gc(engine, tmp_path)
    assert code == 0
    assert sorted(engine.containers) == [container_id(2)]
    assert doc["removed_containers"] == 3
    for method, target in engine.writes():
        if method == "DELETE" and target.startswith("/containers/"):
            assert parse_qs(urlsplit(target).query) == {"v": ["1"]}, target
    assert sum("removed container" in line for line in lines) == 3
    assert all(line.startswith("host_gc: ") for line in lines)


def test_an_image_a_stopped_container_still_uses_is_kept_by_a_run(engine, tmp_path):
    engine.add_image(image_id(1), ("app:1",), created=1, size=GIB)
    engine.add_image(image_id(2), ("app:2",), created=2, size=GIB)
    engine.add_container(container_id(1), image_id(1), "exited", NOW - 2 * HOUR, finished_at=NOW - 60)
    engine.add_container(container_id(2), image_id(2), "exited", NOW - 3 * HOUR, finished_at=NOW - 2 * HOUR)
    code, doc, _ = run_gc(engine, tmp_path, budget=0)
    assert code == 0
    # The expired container went first, so its image was unused by then.
    assert sorted(engine.images) == [image_id(1)]
    assert doc["removed_image_ids"] == [image_id(2)]


def test_unused_images_go_oldest_first_down_to_the_budget_never_forced(engine, tmp_path):
    engine.add_image(image_id(1), ("old:1",), created=10, size=3 * GIB)
    engine.add_image(image_id(2), ("mid:1",), created=20, size=2 * GIB)
    engine.add_image(image_id(3), ("new:1",), created=30, size=1 * GIB)
    engine.add_image(image_id(4), ("used:1",), created=1, size=5 * GIB)
    engine.add_image(image_id(5), ("functions-runtime/verify:busybox",), created=0, size=GIB)
    engine.add_container(container_id(1), image_id(4), "running", NOW - HOUR)
    code, doc, _ = run_gc(engine, tmp_path, "--keep-image", "functions-runtime/verify:busybox",
                          budget=int(2.5 * GIB), watermark=99)
    assert code == 0
    assert deleted(engine, "images") == [image_id(1), image_id(2)]
    assert sorted(engine.images) == [image_id(3), image_id(4), image_id(5)]
    for method, target in engine.writes():
        if method == "DELETE" and target.startswith("/images/"):
            assert parse_qs(urlsplit(target).query) == {"force": ["0"], "noprune": ["0"]}, target
    assert doc["removed_images"] == 2 and doc["reclaimed_image_bytes"] == 5 * GIB


def test_keep_image_by_id_keeps_it_out_of_every_run(engine, tmp_path):
    engine.add_image(image_id(1), (), created=1, size=GIB)
    engine.add_image(image_id(2), ("other:1",), created=2, size=GIB)
    code, _, lines = run_gc(engine, tmp_path, "--keep-image", image_id(1)[7:19], "--keep-image", "typo:1", budget=0)
    assert code == 0
    assert sorted(engine.images) == [image_id(1)]
    assert any("--keep-image typo:1 names no image" in line for line in lines)


def test_over_the_watermark_more_unused_images_go(engine, tmp_path):
    engine.disk_base_used = 75 * GIB
    engine.add_image(image_id(1), ("a:1",), created=1, size=4 * GIB)
    engine.add_image(image_id(2), ("b:1",), created=2, size=3 * GIB)
    engine.add_image(image_id(3), ("c:1",), created=3, size=2 * GIB)
    engine.add_image(image_id(4), ("used:1",), created=0, size=1 * GIB)
    engine.add_container(container_id(1), image_id(4), "running", NOW)
    code, doc, _ = run_gc(engine, tmp_path, watermark=80)  # 85% used; the budget holds all of them
    assert code == 0
    assert deleted(engine, "images") == [image_id(1), image_id(2)]
    assert (doc["disk_used_percent_before"], doc["disk_used_percent_after"]) == (85.0, 78.0)
    assert doc["under_watermark"] is True


def test_at_the_watermark_no_more_images_go(engine, tmp_path):
    engine.disk_base_used = 79 * GIB
    engine.add_image(image_id(1), ("a:1",), created=1, size=GIB)
    code, doc, _ = run_gc(engine, tmp_path, watermark=80)
    assert code == 0 and deleted(engine, "images") == [] and doc["under_watermark"] is True


def test_still_over_the_watermark_exits_0_and_says_so(engine, tmp_path):
    engine.disk_base_used = 95 * GIB
    engine.add_image(image_id(1), ("used:1",), created=1, size=GIB)
    engine.add_container(container_id(1), image_id(1), "running", NOW)
    textfile = tmp_path / "gc.prom"
    code, doc, lines = run_gc(engine, tmp_path, "--textfile", str(textfile), watermark=80)
    assert code == 0
    assert doc["under_watermark"] is False and doc["disk_used_percent_after"] == 96.0
    assert any("still over the watermark" in line for line in lines)
    assert "functions_runtime_gc_under_watermark 0\n" in textfile.read_text()


def test_a_conflict_while_removing_is_skipped_not_fatal(engine, tmp_path):
    engine.add_image(image_id(1), ("a:1",), created=1, size=GIB)
    engine.add_image(image_id(2), ("b:1",), created=2, size=GIB)
    engine.before("DELETE", f"/images/{image_id(1)}",
                  lambda: engine.add_container(container_id(5), image_id(1), "running", NOW))
    code, doc, lines = run_gc(engine, tmp_path, budget=0)
    assert code == 0
    assert sorted(engine.images) == [image_id(1)]
    assert doc["removed_image_ids"] == [image_id(2)]
    [skip] = doc["skipped"]
    assert skip["kind"] == "image" and skip["id"] == image_id(1)
    assert skip["status"] == 409 and "used by running container" in skip["reason"]
    assert any(line.startswith(f"host_gc: skipped image {image_id(1)}: dockerd answered 409") for line in lines)


def test_a_container_removed_meanwhile_is_skipped_not_fatal(engine, tmp_path):
    engine.add_container(container_id(1), image_id(1), "exited", NOW - 3 * HOUR, finished_at=NOW - 2 * HOUR)
    engine.before("DELETE", f"/containers/{container_id(1)}", lambda: engine.containers.clear())
    code, doc, _ = run_gc(engine, tmp_path)
    assert code == 0 and doc["removed_containers"] == 0
    assert doc["skipped"][0]["status"] == 404 and "No such container" in doc["skipped"][0]["reason"]


def test_a_container_restarted_meanwhile_stays(engine, tmp_path):
    engine.add_container(container_id(1), image_id(1), "exited", NOW - 3 * HOUR, finished_at=NOW - 2 * HOUR)

    def restart() -> None:
        engine.containers[container_id(1)].state = "running"

    engine.before("GET", f"/containers/{container_id(1)}/json", restart)
    code, doc, _ = run_gc(engine, tmp_path)
    assert code == 0 and container_id(1) in engine.containers
    assert deleted(engine, "containers") == []
    assert doc["skipped"] == [{"kind": "container", "id": container_id(1), "status": 0,
                               "reason": "now running (was exited)"}]


def test_an_image_tagged_in_several_repositories_goes_by_untagging_each_name(engine, tmp_path):
    # DELETE /images/{id} without force refuses such an image; GC never forces,
    # it untags each name and the last one removes the image.
    engine.add_image(image_id(1), ("a:1", "b:1"), created=1, size=GIB)
    code, doc, _ = run_gc(engine, tmp_path, budget=0)
    assert code == 0 and image_id(1) not in engine.images
    assert doc["skipped"] == [] and deleted(engine, "images") == ["a:1", "b:1"]


def test_an_image_tagged_twice_that_a_container_uses_keeps_both_names(engine, tmp_path):
    engine.add_image(image_id(1), ("a:1", "b:1"), created=1, size=GIB)
    engine.add_container(container_id(1), image_id(1), "running", created=NOW - 2 * HOUR)
    code, _doc, _ = run_gc(engine, tmp_path, budget=0)
    assert code == 0 and engine.images[image_id(1)].tags == ("a:1", "b:1")


def test_the_build_cache_older_than_the_ttl_is_pruned_and_counted(engine, tmp_path):
    engine.add_build_cache("old", 7 * GIB, last_used=NOW - 2 * HOUR)
    engine.add_build_cache("new", 1 * GIB, last_used=NOW - 60)
    engine.add_image(image_id(1), ("a:1",), created=1, size=GIB)
    code, doc, _ = run_gc(engine, tmp_path, budget=0)
    assert code == 0
    [prune] = [t for m, t in engine.writes() if m == "POST"]
    assert json.loads(parse_qs(urlsplit(prune).query)["filters"][0]) == {"until": [f"{TTL}s"]}
    assert [e.id for e in engine.build_cache] == ["new"]
    assert (doc["reclaimed_build_cache_bytes"], doc["reclaimed_bytes"]) == (7 * GIB, 8 * GIB)


def fill(engine: FakeDockerEngine) -> None:
    """86% used: one expired container, five 2 GiB images (one in use), 1 GiB of old build cache."""
    engine.disk_base_used = 75 * GIB
    engine.add_container(container_id(1), image_id(1), "exited", NOW - 3 * HOUR, finished_at=NOW - 2 * HOUR)
    engine.add_container(container_id(2), image_id(2), "running", NOW)
    for n in range(1, 6):
        engine.add_image(image_id(n), (f"img:{n}",), created=n, size=2 * GIB)
    engine.add_build_cache("old", GIB, last_used=NOW - 2 * HOUR)


def test_dry_run_removes_nothing(engine, tmp_path):
    fill(engine)
    textfile = tmp_path / "gc.prom"
    code, doc, lines = run_gc(engine, tmp_path, "--dry-run", "--textfile", str(textfile), budget=3 * GIB,
                              watermark=80)
    assert code == 0
    assert engine.writes() == []
    assert len(engine.containers) == 2 and len(engine.images) == 5 and len(engine.build_cache) == 1
    assert doc["dry_run"] is True and doc["build_cache_pruned"] is False
    assert doc["removed_containers"] == 1 and doc["removed_images"] == 3
    assert not textfile.exists()
    assert any(line.startswith("host_gc: would remove container") for line in lines)


def test_a_dry_run_names_what_the_real_run_removes(tmp_path):
    found = []
    for name in ("dry", "real"):
        (tmp_path / name).mkdir()
        with FakeDockerEngine(tmp_path / name / "d.sock", clock=lambda: NOW) as engine:
            fill(engine)
            engine.build_cache.clear()  # a dry run cannot know what a prune frees
            _, doc, _ = run_gc(engine, tmp_path, *(["--dry-run"] if name == "dry" else []), budget=3 * GIB,
                               watermark=80)
            found.append((doc["removed_container_ids"], doc["removed_image_ids"], doc["disk_used_percent_after"]))
    assert found[0] == found[1]


def test_the_textfile_is_prometheus_text_with_every_gauge(engine, tmp_path):
    fill(engine)
    textfile = tmp_path / "metrics" / "functions_runtime_gc.prom"
    textfile.parent.mkdir()
    textfile.write_text("stale\n")
    code, doc, _ = run_gc(engine, tmp_path, "--textfile", str(textfile), budget=3 * GIB, watermark=80)
    assert code == 0
    assert stat.S_IMODE(textfile.stat().st_mode) == 0o644
    assert os.listdir(textfile.parent) == [textfile.name]  # no temp file left behind
    helps, types, values = {}, {}, {}
    for line in textfile.read_text().splitlines():
        if line.startswith("# HELP "):
            name, text = line[7:].split(" ", 1)
            assert name not in helps and text, line
            helps[name] = text
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            assert name in helps and name not in types, line
            types[name] = kind
        else:
            name, value = line.split(" ")
            assert name in types and name not in values, line
            values[name] = float(value)
    assert list(values) == list(GAUGES)
    assert set(types.values()) == {"gauge"}
    assert values["functions_runtime_gc_last_run_timestamp_seconds"] == NOW
    assert values["functions_runtime_gc_removed_containers"] == doc["removed_containers"] == 1
    assert values["functions_runtime_gc_removed_images"] == doc["removed_images"]
    assert values["functions_runtime_gc_reclaimed_bytes"] == doc["reclaimed_bytes"]
    assert values["functions_runtime_disk_used_ratio"] == pytest.approx(doc["disk_used_percent_after"] / 100)
    assert 0 <= values["functions_runtime_disk_used_ratio"] <= 1
    assert values["functions_runtime_disk_watermark_ratio"] == 0.8
    assert values["functions_runtime_gc_under_watermark"] == 1


def test_unreachable_socket_exits_1_naming_the_socket(tmp_path, capsys):
    missing = tmp_path / "no-dockerd.sock"
    textfile = tmp_path / "gc.prom"
    code = cli.main(["--container-ttl-seconds", "60", "--image-budget-bytes", "0", "--watermark-percent", "80",
                     "--data-root", str(tmp_path), "--docker-socket", str(missing), "--textfile", str(textfile)])
    captured = capsys.readouterr()
    assert code == 1
    [line] = captured.err.splitlines()
    assert line.startswith("host_gc: cannot reach dockerd on ") and str(missing) in line
    assert "systemctl start docker" in line
    doc = json.loads(captured.out)
    assert doc["completed"] is False and str(missing) in doc["error"]
    assert not textfile.exists()  # the last completed run's gauges stay, and go stale


def test_something_other_than_dockerd_on_the_socket_exits_1(engine, tmp_path):
    engine.garbage = True
    code, doc, lines = run_gc(engine, tmp_path)
    assert code == 1
    assert str(engine.socket_path) in lines[-1] and "not dockerd's API" in lines[-1]
    assert doc["completed"] is False


def test_dockerd_refusing_the_listing_exits_1_with_its_reason(engine, tmp_path):
    engine.refuse_all = (500, "authorization denied by plugin functions-runtime-authz: connection refused")
    code, doc, lines = run_gc(engine, tmp_path)
    assert code == 1
    assert str(engine.socket_path) in lines[-1] and "authorization denied by plugin" in lines[-1]
    assert "journalctl -u docker" in lines[-1]
    assert doc["completed"] is False and engine.writes() == []


@pytest.mark.parametrize(("flags", "named"), [
    (["--container-ttl-seconds", "0"], "--container-ttl-seconds"),
    (["--container-ttl-seconds", "soon"], "--container-ttl-seconds"),
    (["--image-budget-bytes", "-1"], "--image-budget-bytes"),
    (["--watermark-percent", "0"], "--watermark-percent"),
    (["--watermark-percent", "100"], "--watermark-percent"),
    (["--data-root", "/nonexistent/docker"], "--data-root"),
    (["--textfile", "/nonexistent/dir/gc.prom"], "--textfile"),
    (["--keep-image", ""], "--keep-image"),
])
def test_bad_arguments_exit_2_naming_the_flag(tmp_path, capsys, flags, named):
    base = {"--container-ttl-seconds": "60", "--image-budget-bytes": "0", "--watermark-percent": "80",
            "--data-root": str(tmp_path)}
    base.update({flags[0]: flags[1]})
    argv = [part for pair in base.items() for part in pair]
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    assert named in capsys.readouterr().err


def test_the_file_runs_as_python3_dash_i_against_the_engine(tmp_path):
    now = time.time()
    with FakeDockerEngine(tmp_path / "d.sock", clock=lambda: now) as engine:
        engine.add_container(container_id(1), image_id(1), "exited", now - 3 * HOUR, finished_at=now - 2 * HOUR)
        engine.add_image(image_id(1), ("a:1",), created=1, size=GIB)
        engine.add_image(image_id(2), ("keep:1",), created=2, size=GIB)
        textfile = tmp_path / "gc.prom"
        run = subprocess.run(
            [sys.executable, "-I", str(GC_FILE), "--container-ttl-seconds", str(TTL), "--image-budget-bytes", "0",
             "--watermark-percent", "99", "--data-root", str(tmp_path), "--docker-socket", str(engine.socket_path),
             "--keep-image", "keep:1", "--textfile", str(textfile)],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )
        assert run.returncode == 0, run.stderr
        doc = json.loads(run.stdout)
        assert (doc["removed_containers"], doc["removed_images"]) == (1, 1)
        assert sorted(engine.images) == [image_id(2)]
        assert "functions_runtime_gc_removed_images 1\n" in textfile.read_text()


def test_the_file_exits_1_and_2_as_documented(tmp_path):
    def run(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-I", str(GC_FILE), "--container-ttl-seconds", "60",
                               "--image-budget-bytes", "0", "--data-root", str(tmp_path), *flags],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)

    unreachable = run("--watermark-percent", "80", "--docker-socket", str(tmp_path / "none.sock"))
    assert unreachable.returncode == 1 and str(tmp_path / "none.sock") in unreachable.stderr
    bad = run("--watermark-percent", "150")
    assert bad.returncode == 2 and "--watermark-percent" in bad.stderr
