"""The consumer side's health filter (components/host_health.py) on node
exporter answers shaped like the lab guest's (recorded 2026-12-05, trimmed),
over a real HTTP server on loopback.

Proves which hosts the filter keeps and why it leaves one out: a failed or
stale canary, a down policy, no result yet, an unreachable or absent
metrics address. Does not prove the node exporter's own format beyond the
lines recorded here (the hostlab scrapes the real one).
"""

from __future__ import annotations

import datetime as dt
import http.server
import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest

from components.endpoint import EndpointHost, RuntimeEndpoint, RuntimeInfo, metrics_url, read_endpoint_host
from components.host_health import fetch_metrics, healthy_hosts, host_health, judge

NOW = dt.datetime(2026, 12, 5, 7, 17, 0, tzinfo=dt.UTC)
RECORDED = """# HELP node_load1 1m load average.
# TYPE node_load1 gauge
node_load1 0.61
# HELP functions_runtime_canary_check_success 1 when this check passed in the last canary run.
# TYPE functions_runtime_canary_check_success gauge
functions_runtime_canary_check_success{{check="runtime-runsc-kernel"}} 1
# HELP functions_runtime_canary_duration_seconds How long the last canary run took.
# TYPE functions_runtime_canary_duration_seconds gauge
functions_runtime_canary_duration_seconds 25.07
functions_runtime_canary_interval_seconds 60
functions_runtime_canary_last_run_timestamp_seconds {last}
functions_runtime_canary_success {success}
functions_runtime_endpoint_policy_up {policy}
functions_runtime_sandboxes_running{{runtime="runsc"}} 0
"""


def exporter_text(last: float | None = None, success: int = 1, policy: int = 1) -> str:
    stamp = NOW.timestamp() - 30 if last is None else last
    return RECORDED.format(last=stamp, success=success, policy=policy)


def host(name: str, address: str) -> EndpointHost:
    return EndpointHost(name=name, source="hcloud", docker_host=f"tcp://{address}:2376", private_address=address,
                        public_address="203.0.113.1", ssh_host_key=None, default_runtime="runsc",
                        runtimes=(RuntimeInfo("runsc", "sandbox", None, None, "4.4.0", None),),
                        metrics_url=metrics_url(address))


def test_a_host_whose_canary_passed_lately_is_healthy():
    assert judge("a", exporter_text(), NOW).healthy


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (exporter_text(success=0), "canary failed"),
        (exporter_text(policy=0), "endpoint policy is down"),
        (exporter_text(last=NOW.timestamp() - 181), "last ran 181 s ago, more than 3 intervals of 60 s"),
        ("node_load1 0.61\n", "no canary result yet"),
        ('functions_runtime_canary_success{check="x"} 1\n', "no canary result yet"),
    ],
)
def test_a_host_is_left_out_with_its_reason(text, words):
    health = judge("a", text, NOW)
    assert not health.healthy and words in health.reason


def test_three_intervals_is_still_fresh():
    assert judge("a", exporter_text(last=NOW.timestamp() - 180), NOW).healthy


class _Exporter(http.server.BaseHTTPRequestHandler):
    texts: dict[str, str] = {}

    def do_GET(self) -> None:
        body = self.texts.get(self.path, "").encode()
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def exporter() -> Iterator[tuple[str, dict[str, str]]]:
    texts: dict[str, str] = {}
    handler = type("Exporter", (_Exporter,), {"texts": texts})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", texts
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_the_filter_keeps_healthy_hosts_in_order_and_logs_the_rest(exporter):
    base, texts = exporter
    texts["/a/metrics"] = exporter_text()
    texts["/b/metrics"] = exporter_text(success=0)
    texts["/d/metrics"] = exporter_text()
    hosts = [replace(host(n, "10.0.1.1"), metrics_url=f"{base}/{n}/metrics") for n in ("a", "b", "c", "d")]
    endpoint = RuntimeEndpoint(isolation="sandbox", ca_cert_pem="", default_runtime="runsc", hosts=tuple(hosts))
    said: list[str] = []
    kept = healthy_hosts(endpoint, now=NOW, log=said.append)
    assert [h.name for h in kept] == ["a", "d"]
    assert said[0].startswith("host b left out: its canary failed")
    assert said[1].startswith("host c left out: its canary cannot be read at") and "404" in said[1]


def test_an_unreachable_exporter_is_not_healthy_and_does_not_hang():
    # Nothing listens on this loopback port (bound and closed).
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    health = host_health(replace(host("a", "10.0.1.1"), metrics_url=f"http://127.0.0.1:{port}/metrics"),
                         fetch=fetch_metrics, now=NOW)
    assert not health.healthy and "cannot be read" in health.reason


def test_a_document_from_before_metrics_urls_leaves_the_host_out_saying_why():
    health = host_health(replace(host("a", "10.0.1.1"), metrics_url=None), now=NOW)
    assert not health.healthy and "no metricsUrl" in health.reason


def test_the_endpoint_document_names_each_hosts_metrics_url():
    assert metrics_url("10.0.1.5") == "http://10.0.1.5:9100/metrics"
    assert metrics_url("fd00::5") == "http://[fd00::5]:9100/metrics"
    assert metrics_url("10.0.1.5", 9323) == "http://10.0.1.5:9323/metrics"
    entry = {"name": "a", "source": "hcloud", "dockerHost": "tcp://10.0.1.5:2376", "privateAddress": "10.0.1.5",
             "publicAddress": "203.0.113.1", "defaultRuntime": "runsc",
             "runtimes": [{"name": "runsc", "isolation": "sandbox"}], "metricsUrl": "ftp://x"}
    with pytest.raises(ValueError, match="metricsUrl"):
        read_endpoint_host(entry, "sandbox", "runtimeEndpoint.hosts[0]")
    entry["metricsUrl"] = "http://10.0.1.5:9100/metrics"
    assert read_endpoint_host(entry, "sandbox", "h").metrics_url == "http://10.0.1.5:9100/metrics"
    del entry["metricsUrl"]
    assert read_endpoint_host(entry, "sandbox", "h").metrics_url is None
