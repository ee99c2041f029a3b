"""The consumer side's health filter: which verified hosts are healthy now.

Each host's canary (docs/operations.md) publishes its latest result in the
host's node exporter, at the endpoint document's `metricsUrl`. A functions
service reads it with what it already has: its network is in the hosts'
allowed sources (`metrics.allowedCidrs` defaults to `endpoint.allowedCidrs`),
and the answer needs no credential. This is a filter, not a scheduler: it
says which hosts to leave out, and why.
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from components.endpoint import EndpointHost, RuntimeEndpoint

# A canary result older than this many intervals is no result: the timer or
# the host has stopped (the alert FunctionsRuntimeCanaryStale says the same).
STALE_INTERVALS = 3
FETCH_TIMEOUT_S = 5
# The node exporter's answer is small; anything larger is not it.
MAX_METRICS_BYTES = 4 * 1024 * 1024
SAMPLE = re.compile(r"^(functions_runtime_[a-z_]+)(?:\{[^}]*\})? (\S+)$", re.M)

Fetch = Callable[[str], str]


@dataclass(frozen=True)
class HostHealth:
    host: str
    healthy: bool
    # Why not, in words for a log line; "" when healthy.
    reason: str = ""
    last_run: dt.datetime | None = None


def fetch_metrics(url: str) -> str:
    """GET the node exporter's text, bounded in time and size; no proxy."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=FETCH_TIMEOUT_S) as response:
        return response.read(MAX_METRICS_BYTES).decode("utf-8", errors="replace")


def gauges(text: str) -> dict[str, float]:
    """The label-less functions_runtime_* samples of a node exporter's text."""
    found: dict[str, float] = {}
    for match in SAMPLE.finditer(text):
        if "{" not in match.group(0).split(" ", 1)[0]:
            try:
                found[match.group(1)] = float(match.group(2))
            except ValueError:
                continue
    return found


def judge(host: str, text: str, now: dt.datetime) -> HostHealth:
    """A host's health from its node exporter's text at `now`."""
    g = gauges(text)
    if "functions_runtime_canary_success" not in g or "functions_runtime_canary_last_run_timestamp_seconds" not in g:
        return HostHealth(host, False, "no canary result yet (the canary runs right after `pulumi up`, then on its timer)")
    last = dt.datetime.fromtimestamp(g["functions_runtime_canary_last_run_timestamp_seconds"], dt.UTC)
    interval = g.get("functions_runtime_canary_interval_seconds") or 60.0
    age = (now - last).total_seconds()
    if age > STALE_INTERVALS * interval:
        return HostHealth(host, False, f"its canary last ran {age:.0f} s ago, more than {STALE_INTERVALS} intervals "
                                       f"of {interval:.0f} s", last)
    if g.get("functions_runtime_endpoint_policy_up") == 0:
        return HostHealth(host, False, "its endpoint policy is down", last)
    if g["functions_runtime_canary_success"] != 1:
        return HostHealth(host, False, "its canary failed (see the host's /var/lib/functions-runtime/canary.json)", last)
    return HostHealth(host, True, "", last)


def host_health(host: EndpointHost, fetch: Fetch = fetch_metrics, now: dt.datetime | None = None) -> HostHealth:
    """One host's health; a host whose canary cannot be read is not healthy."""
    now = now or dt.datetime.now(dt.UTC)
    if host.metrics_url is None:
        return HostHealth(host.name, False, "the endpoint document has no metricsUrl for it (re-run `pulumi up`)")
    try:
        text = fetch(host.metrics_url)
    except (urllib.error.URLError, OSError, ValueError) as err:
        return HostHealth(host.name, False, f"its canary cannot be read at {host.metrics_url}: {err}")
    return judge(host.name, text, now)


def healthy_hosts(endpoint: RuntimeEndpoint, fetch: Fetch = fetch_metrics, now: dt.datetime | None = None,
                  log: Callable[[str], None] | None = None) -> tuple[EndpointHost, ...]:
    """The endpoint's hosts whose canary passed lately, in document order;
    each one left out is logged with its reason."""
    kept = []
    for host in endpoint.hosts:
        health = host_health(host, fetch, now)
        if health.healthy:
            kept.append(host)
        elif log is not None:
            log(f"host {health.host} left out: {health.reason}")
    return tuple(kept)
