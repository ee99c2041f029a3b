"""What garbage collection removes, as pure functions: no socket, no clock, no disk.

dockerd's documents are read into small frozen types here (a document of the
wrong shape raises ValueError, which the caller reports as dockerd answering
garbage); the decisions take those types and the time and return what to
remove, in order. `__main__` does the requests and measures the disk.

The rules:
- a container goes when its state is exited, dead or created and it finished
  (a created one: was created) more than the TTL ago; running, paused,
  restarting, removing and any state this code does not know stay;
- an image is used when a remaining container (any state) names its ID; used
  images and --keep-image ones stay;
- unused images go oldest first (by Created) until their total Size is within
  the budget, then, while the disk is over the watermark, more go oldest first.
  Kept images do not count against the budget: it bounds what may be removed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

# States a container is removed from once its TTL has passed. Everything else
# (running, paused, restarting, removing, or a state a later dockerd adds) stays.
REMOVABLE_STATES = frozenset({"exited", "dead", "created"})
# Go's zero time: dockerd's FinishedAt/StartedAt for "never".
ZERO_TIME_PREFIX = "0001-01-01T"
_FRACTION = re.compile(r"\.\d+")


@dataclass(frozen=True)
class ContainerSummary:
    """One entry of GET /containers/json?all=1."""

    id: str
    state: str
    created: float  # Unix seconds
    image_id: str


@dataclass(frozen=True)
class ContainerDetail:
    """What GET /containers/{id}/json says about one candidate."""

    id: str
    status: str
    created: float
    finished_at: float | None  # None: dockerd never recorded a finish


@dataclass(frozen=True)
class Image:
    """One entry of GET /images/json."""

    id: str
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    created: int
    size: int


@dataclass(frozen=True)
class ImagePlan:
    """Unused removable images in the order they go.

    `over_budget` must go (oldest first) to bring unused images within the
    budget; `rest` goes, in order, only while the disk is over the watermark;
    `kept` are the images that stay whatever the disk says, with the reason."""

    over_budget: tuple[Image, ...]
    rest: tuple[Image, ...]
    kept: tuple[tuple[Image, str], ...]


@dataclass(frozen=True)
class DiskUsage:
    """The filesystem holding dockerd's data root, in bytes."""

    used: int
    total: int

    @property
    def ratio(self) -> float:
        return self.used / self.total if self.total > 0 else 0.0

    @property
    def percent(self) -> float:
        return round(self.ratio * 100, 2)


# ------------------------------------------------------------ reading documents


def _field(doc: Mapping[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{what}: field {name!r} is {type(value).__name__}, expected {kind}")
    return value


def _objects(doc: Any, what: str) -> list[Mapping[str, Any]]:
    if not isinstance(doc, list) or not all(isinstance(item, dict) for item in doc):
        raise ValueError(f"{what}: expected a list of objects, got {type(doc).__name__}")
    return doc


def read_container_list(doc: Any) -> list[ContainerSummary]:
    """GET /containers/json?all=1 into summaries; ValueError when it is not that."""
    found = []
    for item in _objects(doc, "container list"):
        found.append(ContainerSummary(
            id=_field(item, "Id", str, "container list"),
            state=_field(item, "State", str, "container list"),
            created=float(_field(item, "Created", (int, float), "container list")),
            image_id=item.get("ImageID") if isinstance(item.get("ImageID"), str) else "",
        ))
    return found


def parse_docker_time(text: str) -> float | None:
    """An RFC 3339 time from dockerd (nanoseconds, `Z`) to Unix seconds; None
    for Go's zero time. ValueError when it is neither."""
    if text.startswith(ZERO_TIME_PREFIX):
        return None
    text = _FRACTION.sub(lambda m: m.group(0)[:7], text, count=1)  # microseconds: older Pythons refuse nine digits
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"time {text!r} has no time zone")
    return when.timestamp()


def read_container_detail(doc: Any, fallback_created: float) -> ContainerDetail:
    """GET /containers/{id}/json into a detail; ValueError when it is not that.
    `fallback_created` (the list's Created) stands in for an unreadable Created."""
    if not isinstance(doc, dict):
        raise ValueError(f"container inspect: expected an object, got {type(doc).__name__}")
    state = doc.get("State")
    if not isinstance(state, dict):
        raise ValueError("container inspect: field 'State' is not an object")
    created_text = doc.get("Created")
    created = parse_docker_time(created_text) if isinstance(created_text, str) else None
    finished_text = state.get("FinishedAt")
    return ContainerDetail(
        id=_field(doc, "Id", str, "container inspect"),
        status=_field(state, "Status", str, "container inspect State"),
        created=created if created is not None else fallback_created,
        finished_at=parse_docker_time(finished_text) if isinstance(finished_text, str) else None,
    )


def read_image_list(doc: Any) -> list[Image]:
    """GET /images/json into images; ValueError when it is not that."""
    found = []
    for item in _objects(doc, "image list"):
        tags = item.get("RepoTags") or []
        digests = item.get("RepoDigests") or []
        if not isinstance(tags, list) or not isinstance(digests, list):
            raise ValueError("image list: RepoTags/RepoDigests are not lists")
        found.append(Image(
            id=_field(item, "Id", str, "image list"),
            repo_tags=tuple(t for t in tags if isinstance(t, str) and t != "<none>:<none>"),
            repo_digests=tuple(d for d in digests if isinstance(d, str) and d != "<none>@<none>"),
            created=int(_field(item, "Created", (int, float), "image list")),
            size=int(_field(item, "Size", (int, float), "image list")),
        ))
    return found


# ------------------------------------------------------------------- containers


def worth_inspecting(containers: Iterable[ContainerSummary], now: float, ttl: float) -> list[ContainerSummary]:
    """The containers that may have expired: a removable state and created more
    than the TTL ago (none finished before it was created), so a host full of
    fresh containers costs one list request, not one inspect each."""
    return [c for c in containers if c.state in REMOVABLE_STATES and now - c.created > ttl]


def finished_at(detail: ContainerDetail) -> float:
    """When the container stopped counting as alive: FinishedAt, or Created for
    one that never started (or never recorded a finish)."""
    if detail.status == "created" or detail.finished_at is None:
        return detail.created
    return detail.finished_at


def expired(detail: ContainerDetail, now: float, ttl: float) -> bool:
    """A container to remove: a removable state (as inspect says, which is
    newer than the list) that ended more than the TTL ago."""
    return detail.status in REMOVABLE_STATES and now - finished_at(detail) > ttl


def used_image_ids(remaining: Iterable[ContainerSummary]) -> frozenset[str]:
    """Image IDs some remaining container names, whatever its state: dockerd
    refuses to remove those anyway, and a stopped one may be started again."""
    return frozenset(c.image_id for c in remaining if c.image_id)


# ----------------------------------------------------------------------- images


def _short_hex(image_id: str) -> str:
    return image_id.removeprefix("sha256:")


def matches(image: Image, ref: str) -> bool:
    """Whether --keep-image REF names this image: its ID (with or without
    `sha256:`, or a prefix of 12 hex digits or more, as `docker images` shows
    it), one of its tags (`name` means `name:latest`), or one of its digests."""
    hex_ref = _short_hex(ref)
    if ref == image.id or (len(hex_ref) >= 12 and _short_hex(image.id).startswith(hex_ref)):
        return True
    if ref in image.repo_tags or ref in image.repo_digests:
        return True
    last = ref.rsplit("/", 1)[-1]
    return ":" not in last and "@" not in ref and f"{ref}:latest" in image.repo_tags


def plan_images(images: Sequence[Image], used: frozenset[str], keep: Sequence[str], budget: int) -> ImagePlan:
    """Which images go and in what order (see the module's rules)."""
    kept: list[tuple[Image, str]] = []
    removable: list[Image] = []
    for image in images:
        refs = [ref for ref in keep if matches(image, ref)]
        if refs:
            kept.append((image, f"--keep-image {refs[0]}"))
        elif image.id in used:
            kept.append((image, "used by a container"))
        else:
            removable.append(image)
    removable.sort(key=lambda i: (i.created, i.id))
    total = sum(i.size for i in removable)
    cut = 0
    while cut < len(removable) and total > budget:
        total -= removable[cut].size
        cut += 1
    return ImagePlan(tuple(removable[:cut]), tuple(removable[cut:]), tuple(kept))


def above_watermark(disk: DiskUsage, watermark_percent: int) -> bool:
    """Whether used space is above the watermark (at it counts as under)."""
    return disk.used * 100 > watermark_percent * disk.total


def disk_usage_from_statvfs(st: Any) -> DiskUsage:
    """os.statvfs's answer as used/total bytes: used counts the blocks kept for
    root too (f_bfree, not f_bavail), as df's Used column does."""
    return DiskUsage(used=(st.f_blocks - st.f_bfree) * st.f_frsize, total=st.f_blocks * st.f_frsize)
