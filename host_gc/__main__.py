"""`python3 -I <root>/host_gc/__main__.py --container-ttl-seconds N --image-budget-bytes N --watermark-percent N
[--data-root PATH] [--docker-socket PATH] [--keep-image REF]... [--textfile PATH] [--dry-run]`
(or `python3 -m host_gc` with the root on the path)

Collect dockerd's garbage on this host once: expired stopped containers, the
build cache older than the TTL, then unused images down to the budget and, while
the disk is over the watermark, more of them (the rules: host_gc/plan.py).
One line per action on stderr, one JSON document on stdout, and the last run's
gauges in the node exporter's textfile. Exit 0 when the run completed (over
the watermark or not), 1 when dockerd could not be asked, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

if __package__ in (None, ""):  # run as a file: python3 -I .../host_gc/__main__.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from host_gc.docker_api import (
    DOCKER_SOCKET,
    PRUNE_TIMEOUT_S,
    DockerAPI,
    DockerGarbage,
    DockerUnreachable,
    Response,
)
from host_gc.plan import (
    ContainerSummary,
    DiskUsage,
    Image,
    above_watermark,
    disk_usage_from_statvfs,
    expired,
    finished_at,
    matches,
    plan_images,
    read_container_detail,
    read_container_list,
    read_image_list,
    used_image_ids,
    worth_inspecting,
)

DATA_ROOT = Path("/var/lib/docker")
# The statuses a removal answers when someone else got there first (404) or a
# container started using the image or restarted meanwhile (409): skipped, with
# dockerd's message (or this one when it sent none) as the reason.
SKIP_STATUSES = {404: "no such object (removed meanwhile)", 409: "conflict"}
METRIC_FILE_MODE = 0o644

Log = Callable[[str], None]
Clock = Callable[[], float]
DiskProbe = Callable[[Path], DiskUsage]


def log(message: str) -> None:
    print(f"host_gc: {message}", file=sys.stderr, flush=True)


def measure_disk(path: Path) -> DiskUsage:
    return disk_usage_from_statvfs(os.statvfs(path))


class DockerRefused(Exception):
    """dockerd answered a request GC cannot do without (a listing) with an error."""


@dataclass(frozen=True)
class Settings:
    container_ttl_s: int
    image_budget_bytes: int
    watermark_percent: int
    data_root: Path
    docker_socket: Path
    keep_images: tuple[str, ...]
    textfile: Path | None
    dry_run: bool


@dataclass
class Outcome:
    """What one run did (or, in a dry run, would do); the JSON and the gauges come from it."""

    removed_containers: list[str] = field(default_factory=list)
    removed_images: list[str] = field(default_factory=list)
    # {"kind", "id", "status" (dockerd's answer, 0 when none), "reason"}
    skipped: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    image_bytes: int = 0
    build_cache_bytes: int = 0
    disk_before: DiskUsage | None = None
    disk_after: DiskUsage | None = None
    under_watermark: bool | None = None
    error: str = ""

    def to_json(self, settings: Settings) -> dict[str, Any]:
        return {
            "dry_run": settings.dry_run,
            "completed": not self.error,
            "error": self.error or None,
            "removed_containers": len(self.removed_containers),
            "removed_images": len(self.removed_images),
            "removed_container_ids": self.removed_containers,
            "removed_image_ids": self.removed_images,
            "skipped": self.skipped,
            "failed": self.failed,
            "reclaimed_bytes": self.image_bytes + self.build_cache_bytes,
            "reclaimed_image_bytes": self.image_bytes,
            "reclaimed_build_cache_bytes": self.build_cache_bytes,
            "build_cache_pruned": not settings.dry_run and not self.error,
            "disk_used_percent_before": self.disk_before.percent if self.disk_before else None,
            "disk_used_percent_after": self.disk_after.percent if self.disk_after else None,
            "watermark_percent": settings.watermark_percent,
            "under_watermark": self.under_watermark,
        }


def _expect(response: Response, what: str, ok: tuple[int, ...] = (200,)) -> Any:
    if response.status not in ok:
        raise DockerRefused(f"{what} answered {response.status}: {response.message or 'no message'}")
    return response.body


def _remove(api: DockerAPI, kind: str, ident: str, path: str, query: dict[str, str], why: str,
            settings: Settings, outcome: Outcome, log: Log) -> bool:
    """One removal (never forced); False when it was skipped or failed."""
    if settings.dry_run:
        log(f"would remove {kind} {ident} ({why})")
        return True
    response = api.delete(path, query)
    if response.status in (200, 204):
        log(f"removed {kind} {ident} ({why})")
        return True
    if response.status in SKIP_STATUSES:
        reason = response.message or SKIP_STATUSES[response.status]
        outcome.skipped.append({"kind": kind, "id": ident, "status": response.status, "reason": reason})
        log(f"skipped {kind} {ident}: dockerd answered {response.status}: {reason}")
    else:
        reason = response.message or "no message"
        outcome.failed.append({"kind": kind, "id": ident, "status": response.status, "reason": reason})
        log(f"could not remove {kind} {ident}: dockerd answered {response.status}: {reason}")
    return False


def remove_expired_containers(api: DockerAPI, settings: Settings, now: float, outcome: Outcome,
                              log: Log) -> list[ContainerSummary]:
    """Remove the expired containers; return the ones that remain (their images are used)."""
    listing = read_container_list(_expect(api.get("/containers/json", {"all": "1"}), "GET /containers/json"))
    gone: set[str] = set()
    for candidate in worth_inspecting(listing, now, settings.container_ttl_s):
        path = f"/containers/{quote(candidate.id, safe='')}"
        response = api.get(f"{path}/json")
        if response.status == 404:
            gone.add(candidate.id)
            continue
        detail = read_container_detail(_expect(response, f"GET {path}/json"), candidate.created)
        if not expired(detail, now, settings.container_ttl_s):
            if detail.status != candidate.state:
                outcome.skipped.append({"kind": "container", "id": candidate.id, "status": 0,
                                        "reason": f"now {detail.status} (was {candidate.state})"})
            continue
        age = int(now - finished_at(detail))
        if _remove(api, "container", candidate.id, path, {"v": "1"}, f"{detail.status} {age}s ago",
                   settings, outcome, log):
            outcome.removed_containers.append(candidate.id)
            gone.add(candidate.id)
    return [c for c in listing if c.id not in gone]


def prune_build_cache(api: DockerAPI, settings: Settings, outcome: Outcome, log: Log) -> None:
    """Build cache unused for longer than the TTL goes (skipped in a dry run: the
    API has no way to ask what a prune would free)."""
    if settings.dry_run:
        log(f"would prune the build cache unused for {settings.container_ttl_s}s")
        return
    filters = json.dumps({"until": [f"{settings.container_ttl_s}s"]})
    response = api.post("/build/prune", {"filters": filters}, timeout=PRUNE_TIMEOUT_S)
    if response.status != 200:
        reason = f"{response.status} {response.message}".strip()
        outcome.failed.append({"kind": "build-cache", "id": "", "status": response.status, "reason": reason})
        log(f"could not prune the build cache: dockerd answered {reason}")
        return
    body = response.body if isinstance(response.body, dict) else {}
    reclaimed = body.get("SpaceReclaimed")
    if not isinstance(reclaimed, int) or isinstance(reclaimed, bool):
        raise ValueError(f"POST /build/prune: SpaceReclaimed is {reclaimed!r}")
    outcome.build_cache_bytes = reclaimed
    log(f"pruned the build cache: {reclaimed} bytes")


def _describe(image: Image) -> str:
    name = image.repo_tags[0] if image.repo_tags else (image.repo_digests[0] if image.repo_digests else "untagged")
    return f"{name}, {image.size} bytes, created {image.created}"


def remove_unused_images(api: DockerAPI, settings: Settings, remaining: list[ContainerSummary],
                         measure: Callable[[], DiskUsage], outcome: Outcome, log: Log) -> None:
    """Unused images: the oldest down to the budget, then more while over the watermark."""
    images = read_image_list(_expect(api.get("/images/json"), "GET /images/json"))
    for ref in settings.keep_images:
        if not any(matches(image, ref) for image in images):
            log(f"--keep-image {ref} names no image on this host")
    plan = plan_images(images, used_image_ids(remaining), settings.keep_images, settings.image_budget_bytes)

    def remove(image: Image, why: str) -> None:
        query = {"force": "0", "noprune": "0"}
        # dockerd refuses to delete by ID an image tagged in several
        # repositories (409) unless forced; untagging each name (never
        # forced) removes it with its last name, and still refuses while a
        # container uses it.
        names = image.repo_tags if len(image.repo_tags) > 1 else (image.id,)
        for name in names:
            if not _remove(api, "image", name, f"/images/{quote(name, safe='')}", query,
                           f"{_describe(image)}; {why}", settings, outcome, log):
                return
        outcome.removed_images.append(image.id)
        outcome.image_bytes += image.size

    for image in plan.over_budget:
        remove(image, f"unused images over the budget of {settings.image_budget_bytes} bytes")
    for image in plan.rest:
        disk = measure()
        if not above_watermark(disk, settings.watermark_percent):
            break
        remove(image, f"disk {disk.percent}% used, over the watermark of {settings.watermark_percent}%")


def collect(api: DockerAPI, settings: Settings, clock: Clock, disk_usage: DiskProbe, log: Log) -> Outcome:
    """One run, in order: containers (which frees their images), build cache, images.
    Raises DockerUnreachable, DockerGarbage, DockerRefused or ValueError (a
    document of the wrong shape) when dockerd cannot be asked."""
    outcome = Outcome()
    outcome.disk_before = disk_usage(settings.data_root)

    def measure() -> DiskUsage:
        if not settings.dry_run:
            return disk_usage(settings.data_root)
        # A dry run frees nothing: project what the images it would remove free.
        before = outcome.disk_before or DiskUsage(0, 0)
        return DiskUsage(max(0, before.used - outcome.image_bytes), before.total)

    remaining = remove_expired_containers(api, settings, clock(), outcome, log)
    prune_build_cache(api, settings, outcome, log)
    remove_unused_images(api, settings, remaining, measure, outcome, log)
    outcome.disk_after = measure()
    outcome.under_watermark = not above_watermark(outcome.disk_after, settings.watermark_percent)
    return outcome


METRICS: tuple[tuple[str, str], ...] = (
    ("functions_runtime_gc_last_run_timestamp_seconds", "When host_gc last completed a run (Unix seconds)."),
    ("functions_runtime_gc_removed_containers", "Containers the last GC run removed."),
    ("functions_runtime_gc_removed_images", "Images the last GC run removed."),
    ("functions_runtime_gc_reclaimed_bytes", "Bytes the last GC run reclaimed (removed images' Size and build cache)."),
    ("functions_runtime_disk_used_ratio", "Used share of the filesystem holding dockerd's data root, after the last GC run."),
    ("functions_runtime_disk_watermark_ratio", "The share of that filesystem GC aims to stay under."),
    ("functions_runtime_gc_under_watermark", "1 when the last GC run ended under the watermark, else 0."),
)


def render_metrics(outcome: Outcome, settings: Settings, finished: float) -> str:
    """The Prometheus text format: one gauge each, HELP and TYPE first."""
    after = outcome.disk_after or DiskUsage(0, 0)
    values = {
        "functions_runtime_gc_last_run_timestamp_seconds": f"{finished:.3f}",
        "functions_runtime_gc_removed_containers": str(len(outcome.removed_containers)),
        "functions_runtime_gc_removed_images": str(len(outcome.removed_images)),
        "functions_runtime_gc_reclaimed_bytes": str(outcome.image_bytes + outcome.build_cache_bytes),
        "functions_runtime_disk_used_ratio": f"{after.ratio:.6f}",
        "functions_runtime_disk_watermark_ratio": f"{settings.watermark_percent / 100:.2f}",
        "functions_runtime_gc_under_watermark": "1" if outcome.under_watermark else "0",
    }
    lines = []
    for name, text in METRICS:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge", f"{name} {values[name]}"]
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Temp file beside `path` (not *.prom, so the collector never reads half of
    it), fsync, mode 0644, rename over, fsync the directory."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), METRIC_FILE_MODE)
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise argparse.ArgumentTypeError(f"expected a whole number {bounds}, got {value}")
        return value

    return parse


def parse_settings(argv: Sequence[str] | None) -> Settings:
    """The flags, checked; a bad one exits 2 with argparse's message naming it."""
    parser = argparse.ArgumentParser(prog="host_gc", description=(__doc__ or "").split("\n\n")[1])
    parser.add_argument("--container-ttl-seconds", type=_whole_number(1), required=True, metavar="N",
                        help="remove stopped containers (and build cache) unused for longer than this")
    parser.add_argument("--image-budget-bytes", type=_whole_number(0), required=True, metavar="N",
                        help="total Size of unused images that may stay")
    parser.add_argument("--watermark-percent", type=_whole_number(1, 99), required=True, metavar="N",
                        help="disk use of the data root's filesystem to stay under (1..99)")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT, help=f"dockerd's data root (default {DATA_ROOT})")
    parser.add_argument("--docker-socket", type=Path, default=DOCKER_SOCKET,
                        help=f"dockerd's unix socket (default {DOCKER_SOCKET})")
    parser.add_argument("--keep-image", action="append", default=[], metavar="REF",
                        help="an image never removed: ID, tag or digest (repeatable)")
    parser.add_argument("--textfile", type=Path, help="write the last run's gauges here (Prometheus text format)")
    parser.add_argument("--dry-run", action="store_true", help="decide and report; remove nothing")
    args = parser.parse_args(argv)
    if not args.data_root.is_dir():
        parser.error(f"argument --data-root: {args.data_root} is not a directory")
    if args.textfile is not None and not args.textfile.parent.is_dir():
        parser.error(f"argument --textfile: the directory {args.textfile.parent} does not exist")
    if any(not ref.strip() for ref in args.keep_image):
        parser.error("argument --keep-image: an empty reference")
    return Settings(args.container_ttl_seconds, args.image_budget_bytes, args.watermark_percent, args.data_root,
                    args.docker_socket, tuple(args.keep_image), args.textfile, args.dry_run)


def main(argv: Sequence[str] | None = None, clock: Clock = time.time, disk_usage: DiskProbe = measure_disk,
         stdout: TextIO | None = None, log: Log = log) -> int:
    settings = parse_settings(argv)
    out = sys.stdout if stdout is None else stdout
    api = DockerAPI(settings.docker_socket)
    sock = settings.docker_socket
    outcome = Outcome()
    try:
        outcome = collect(api, settings, clock, disk_usage, log)
    except DockerUnreachable as err:
        outcome.error = (f"cannot reach dockerd on {sock} ({err}); start it (systemctl start docker) "
                         "or pass --docker-socket with its socket")
    except (DockerGarbage, ValueError) as err:
        outcome.error = (f"what answers on {sock} is not dockerd's API ({err}); check that --docker-socket "
                         "names dockerd's socket and that dockerd is healthy (journalctl -u docker)")
    except DockerRefused as err:
        outcome.error = (f"dockerd on {sock} refused ({err}); read journalctl -u docker for why "
                         "(its authorization plugin must allow the local socket)")
    if outcome.error:
        log(outcome.error)
        print(json.dumps(outcome.to_json(settings)), file=out, flush=True)
        return 1
    after = outcome.disk_after or DiskUsage(0, 0)
    if not outcome.under_watermark:
        log(f"still over the watermark: {after.percent}% of {settings.data_root}'s filesystem used, watermark "
            f"{settings.watermark_percent}%; nothing more could be removed (docker system df -v shows what fills it)")
    log(f"{'dry run: would remove' if settings.dry_run else 'removed'} {len(outcome.removed_containers)} "
        f"containers and {len(outcome.removed_images)} images; disk {after.percent}% used")
    print(json.dumps(outcome.to_json(settings)), file=out, flush=True)
    if settings.textfile is not None:
        if settings.dry_run:
            log(f"dry run: metrics not written to {settings.textfile} (they describe real runs)")
            return 0
        try:
            write_atomically(settings.textfile, render_metrics(outcome, settings, clock()))
        except OSError as err:
            log(f"cannot write the metrics to {settings.textfile} ({err}); check the directory is root's and writable")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
