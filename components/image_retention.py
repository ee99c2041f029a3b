"""`python -m components.image_retention --stack SLUG --keep N [--protect IMAGE_ID ...] [--dry-run]`

Prune a stack's golden snapshot images in Hetzner Cloud (standard library only).

Each golden fingerprint gets its own snapshot, and old ones are kept only up
to a count, for rollback; the rest cost money every month. The program runs
this as a `pulumi_command.local.Command` on the operator's machine, so it
needs nothing beyond Python: the token comes from HCLOUD_TOKEN (never an
argument, so it stays out of process lists and Pulumi state), the API base
from HCLOUD_ENDPOINT (default https://api.hetzner.cloud/v1, as the hcloud CLI).

It never deletes an image a server of the stack uses, one passed with
--protect (the current image) or one of the newest `--keep` images, and it
deletes the rest oldest first, so a run stopped half way leaves the newer
ones. One line per action on stderr, one JSON line on stdout:
{"kept": [...], "deleted": [...], "protected": [...], "inUse": [...]}.
Exit 0 when done, 1 when Hetzner or the network failed (what was deleted
before is reported), 2 for bad arguments or no token.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from email.message import Message
from typing import Any

STACK_LABEL = "functions-runtime-stack"
GOLDEN_LABEL = "functions-runtime-golden"
DEFAULT_ENDPOINT = "https://api.hetzner.cloud/v1"
PER_PAGE = 50
MAX_PAGES = 1000  # a guard against a next_page that never ends, not a real limit
RATE_LIMIT_RETRIES = 3
MAX_RATE_LIMIT_WAIT_S = 30.0
REQUEST_TIMEOUT_S = 30.0
# Hetzner's label value syntax; it also keeps a slug from adding terms to the selector.
_LABEL_VALUE = re.compile(r"^(?:[A-Za-z0-9](?:[-_.A-Za-z0-9]{0,61}[A-Za-z0-9])?)$")
_PREFIX = "image-retention:"


class RetentionError(Exception):
    """A request to Hetzner failed; the message is one line, ready to show."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _created(image: dict[str, Any]) -> datetime:
    """The image's creation time, timezone-aware, so ISO strings with and without offsets compare."""
    text = str(image.get("created") or "")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"image {image.get('id')}: created {text!r} is not an ISO-8601 time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def newest_first(images: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Images newest first by `created`; on a tie the higher id (made later by Hetzner) is newer."""
    return sorted(images, key=lambda image: (_created(image), int(image["id"])), reverse=True)


def choose_deletions(
    images: Sequence[dict[str, Any]], in_use: Iterable[int], protect: Iterable[int], keep: int
) -> list[int]:
    """The ids to delete, oldest first.

    Spared: the newest `keep` images (the rollback window, counted over all
    the stack's images), any image a server uses (deleting it would break a
    rebuild of that server) and the protected ones (the current image, which
    may not have a server yet). Pure, so the choice is tested without HTTP.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    spared = {int(i) for i in in_use} | {int(i) for i in protect}
    ordered = newest_first(images)
    return [int(image["id"]) for image in reversed(ordered[keep:]) if int(image["id"]) not in spared]


def _retry_wait(headers: Message | None, now: float) -> float:
    """Seconds to wait after a 429, from Retry-After or RateLimit-Reset, bounded.

    Hetzner sends RateLimit-Reset as a UNIX time; a small value is taken as
    seconds. Bounded so a strange header cannot hang `pulumi up`.
    """
    wait = 1.0
    for name in ("Retry-After", "RateLimit-Reset"):
        value = headers.get(name) if headers is not None else None
        if value is None:
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        wait = number - now if number > 1_000_000_000 else number
        break
    return max(0.0, min(wait, MAX_RATE_LIMIT_WAIT_S))


def _hint(status: int) -> str:
    """What the operator can do about an HTTP status."""
    if status == 401:
        return "check that HCLOUD_TOKEN is a valid token of the project"
    if status == 403:
        return "HCLOUD_TOKEN needs Read & Write permission"
    if status == 404:
        return "check HCLOUD_ENDPOINT"
    if status == 423:
        return "the image is locked by a running action; run again when it is done"
    if status == 429:
        return "Hetzner's rate limit; run again in a minute"
    if status >= 500:
        return "Hetzner had a problem; run again later"
    return "see Hetzner's message; run again once it is fixed"


class HetznerAPI:
    """A minimal Hetzner Cloud API client: bearer token, JSON, 429 retries, errors as one line."""

    def __init__(
        self,
        endpoint: str,
        token: str,
        sleep: Callable[[float], None] = time.sleep,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._token = token
        self._sleep = sleep
        self._log = log or (lambda _message: None)

    def _clean(self, text: str) -> str:
        """One line without the token, whatever a server or proxy echoed back."""
        text = " ".join(text.split())
        return text.replace(self._token, "***") if self._token else text

    def request(self, method: str, path: str, query: dict[str, Any] | None = None) -> Any:
        """Send one request; retry on 429; raise RetentionError on any other failure."""
        url = self.endpoint + path + ("?" + urllib.parse.urlencode(query) if query else "")
        what = f"{method} {path}"
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            req = urllib.request.Request(url, method=method)
            req.add_header("Authorization", f"Bearer {self._token}")
            req.add_header("Accept", "application/json")
            try:
                with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as response:
                    body = response.read()
                return json.loads(body) if body.strip() else None
            except urllib.error.HTTPError as err:
                if err.code == 429 and attempt < RATE_LIMIT_RETRIES:
                    wait = _retry_wait(err.headers, time.time())
                    self._log(f"{what}: rate limited (429), waiting {wait:.0f}s before retry {attempt + 1}")
                    err.close()
                    self._sleep(wait)
                    continue
                raise RetentionError(
                    self._clean(f"{what}: HTTP {err.code} {self._reason(err)}"), status=err.code
                ) from None
            except (OSError, http.client.HTTPException) as err:  # URLError, timeouts, resets
                reason = getattr(err, "reason", None) or err
                raise RetentionError(
                    self._clean(f"{what}: cannot reach {self.endpoint} ({reason}); check the network and HCLOUD_ENDPOINT")
                ) from None
            except ValueError as err:  # not JSON
                raise RetentionError(self._clean(f"{what}: the answer is not JSON ({err}); check HCLOUD_ENDPOINT")) from None
        raise AssertionError("unreachable")  # the loop returns or raises

    @staticmethod
    def _reason(err: urllib.error.HTTPError) -> str:
        """Hetzner's error code and message from the body, else the HTTP reason; and what to do."""
        reason = str(err.reason or "")
        try:
            body = json.loads(err.read() or b"{}")
            error = body.get("error") or {}
            if error.get("code") or error.get("message"):
                reason = f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")
        except (ValueError, AttributeError, OSError):
            pass
        finally:
            err.close()
        return f"({reason}); {_hint(err.code)}" if reason else f"; {_hint(err.code)}"

    def list_all(self, path: str, key: str, query: dict[str, Any]) -> list[dict[str, Any]]:
        """Every item of a paginated list, following meta.pagination.next_page."""
        items: list[dict[str, Any]] = []
        page: Any = 1
        for _ in range(MAX_PAGES):
            body = self.request("GET", path, {**query, "page": page, "per_page": PER_PAGE}) or {}
            items.extend(body.get(key) or [])
            page = ((body.get("meta") or {}).get("pagination") or {}).get("next_page")
            if not page:
                return items
        raise RetentionError(f"GET {path}: more than {MAX_PAGES} pages; check HCLOUD_ENDPOINT")

    def delete_image(self, image_id: int) -> bool:
        """Delete one image; False when it was already gone (another run deleted it: the goal is met)."""
        try:
            self.request("DELETE", f"/images/{int(image_id)}")
        except RetentionError as err:
            if err.status == 404:
                return False
            raise
        return True


def _stack_slug(value: str) -> str:
    """argparse type: a valid label value, so it cannot widen the label selector."""
    if not _LABEL_VALUE.match(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a valid Hetzner label value")
    return value


def _at_least_one(value: str) -> int:
    """argparse type for --keep: deleting every image would leave nothing to roll back to."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def _image_id(value: str) -> int:
    """argparse type for --protect: a positive image id."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an image id") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not an image id")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m components.image_retention",
        description="Delete a stack's old golden snapshot images in Hetzner Cloud, keeping the newest. "
        "The token is read from HCLOUD_TOKEN, the API base from HCLOUD_ENDPOINT.",
    )
    parser.add_argument("--stack", required=True, type=_stack_slug, help=f"the stack's {STACK_LABEL} label value")
    parser.add_argument("--keep", required=True, type=_at_least_one, help="how many newest images to keep (>= 1)")
    parser.add_argument(
        "--protect", nargs="*", action="extend", type=_image_id, default=[], metavar="IMAGE_ID",
        help="image ids never to delete (the current image); may be repeated",
    )
    parser.add_argument("--dry-run", action="store_true", help="say what would be deleted and delete nothing")
    return parser


def _log(message: str) -> None:
    print(f"{_PREFIX} {message}", file=sys.stderr, flush=True)


def _report(summary: dict[str, Any]) -> None:
    print(json.dumps(summary, separators=(",", ":")), flush=True)


def main(argv: Sequence[str] | None = None, sleep: Callable[[float], None] = time.sleep) -> int:
    """Run one pruning; the exit code is what the Pulumi Command sees."""
    args = build_parser().parse_args(argv)
    token = os.environ.get("HCLOUD_TOKEN", "").strip()
    if not token:
        _log("HCLOUD_TOKEN is not set; set HCLOUD_TOKEN to a Read & Write token of the project. Nothing was deleted.")
        return 2
    endpoint = os.environ.get("HCLOUD_ENDPOINT", "").strip() or DEFAULT_ENDPOINT
    api = HetznerAPI(endpoint, token, sleep=sleep, log=_log)
    protect = set(args.protect)

    try:
        images = api.list_all(
            "/images",
            "images",
            {"type": "snapshot", "label_selector": f"{STACK_LABEL}={args.stack},{GOLDEN_LABEL}"},
        )
        servers = api.list_all("/servers", "servers", {"label_selector": f"{STACK_LABEL}={args.stack}"})
    except RetentionError as err:
        _log(f"listing the stack's images and servers failed: {err}. Nothing was deleted.")
        return 1

    image_ids = {int(image["id"]) for image in images}
    in_use = {int(server["image"]["id"]) for server in servers if (server.get("image") or {}).get("id") is not None}
    # Hetzner refuses to delete an image with delete protection on; leave it, as protected.
    locked = {int(image["id"]) for image in images if (image.get("protection") or {}).get("delete")}
    try:
        doomed = choose_deletions(images, in_use, protect | locked, args.keep)
        order = [int(image["id"]) for image in newest_first(images)]
    except (ValueError, KeyError, TypeError) as err:
        _log(f"Hetzner's image list could not be read ({err}); check HCLOUD_ENDPOINT. Nothing was deleted.")
        return 1

    summary: dict[str, Any] = {
        "kept": [],
        "deleted": [],
        "protected": sorted(protect | locked),
        "inUse": sorted(in_use & image_ids),
    }
    _log(
        f"stack {args.stack}: {len(images)} golden image(s), keeping the newest {args.keep}; "
        f"in use {sorted(in_use & image_ids)}, protected {summary['protected']}"
    )
    if args.dry_run:
        for image_id in doomed:
            _log(f"would delete image {image_id} (dry run)")
        summary["kept"] = [i for i in order if i not in doomed]
        summary["dryRun"] = True
        summary["wouldDelete"] = doomed
        _report(summary)
        return 0

    deleted: list[int] = summary["deleted"]
    for image_id in doomed:
        try:
            gone_before = not api.delete_image(image_id)
        except RetentionError as err:
            summary["kept"] = [i for i in order if i not in deleted]
            summary["error"] = f"deleting image {image_id} failed"
            _report(summary)
            _log(
                f"deleting image {image_id} failed: {err}. "
                f"Deleted before the failure: {deleted or 'none'}; the images not yet deleted are left, "
                "run again to finish."
            )
            return 1
        deleted.append(image_id)
        _log(f"image {image_id} was already deleted" if gone_before else f"deleted image {image_id}")
    summary["kept"] = [i for i in order if i not in deleted]
    _report(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
