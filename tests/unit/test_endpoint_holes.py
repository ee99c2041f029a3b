"""Small holes closed: whole-route matching, health check floor, identity that fails closed.

Proves: a route matches the whole path (a trailing newline, however escaped,
matches nothing; control characters in a path are refused); a health check
interval (and start interval) under MIN_HEALTHCHECK_INTERVAL_NS is refused,
0 (Docker's default) and anything above allowed; only a request with no
user, no authentication method and no peer certificate is the local socket,
and a remote request without TLS, a name or a readable certificate is
refused; every refusal is one line, whatever the request quoted.
"""

from __future__ import annotations

import pytest

from endpoint_authz.rules import MIN_HEALTHCHECK_INTERVAL_NS, ROUTES, decide, refuse
from tests.unit.test_endpoint_policy import (
    CONFIG,
    DOCKERD,
    assert_allowed,
    assert_refused,
    create_body,
    envelope,
    peer_certificate,
)


@pytest.mark.parametrize(
    "uri",
    ["/v1.45/containers/create%0A", "/v1.45/_ping%0a", "/v1.45/info%0D", "/v1.45/version%00", "/v1.45/build%0A"],
)
def test_a_trailing_newline_matches_no_route(uri):
    assert_refused(envelope("POST" if "create" in uri or "build" in uri else "GET", uri), "control character")


def test_routes_match_the_whole_path():
    for route in ROUTES:
        assert route.pattern.fullmatch("/_ping\n") is None
    assert_refused(envelope("GET", "/v1.45/containers/json/extra"), "GET /containers/json/extra is not allowed")
    assert_refused(envelope("POST", "/v1.45/containers/create/x"), "is not allowed on this endpoint")


def _health(**fields: int) -> dict:
    return create_body(Healthcheck={"Test": ["CMD", "true"], **fields})


@pytest.mark.parametrize("field", ["Interval", "StartInterval"])
def test_a_health_check_more_often_than_the_floor_is_refused(field):
    for value in (1_000_000, 1, MIN_HEALTHCHECK_INTERVAL_NS - 1, -5):
        assert_refused(envelope("POST", "/containers/create", _health(**{field: value})), "under 10s is not allowed")


@pytest.mark.parametrize("value", [0, MIN_HEALTHCHECK_INTERVAL_NS, 30_000_000_000])
def test_a_health_check_at_the_floor_or_docker_default_is_allowed(value):
    assert_allowed(envelope("POST", "/containers/create", _health(Interval=value, StartInterval=value, Timeout=1,
                                                                   StartPeriod=1, Retries=3)))


def test_a_health_check_with_wrong_types_is_refused():
    assert_refused(envelope("POST", "/containers/create", _health(Interval="1s")), "Healthcheck.Interval: expected")


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"UserAuthNMethod": "TLS"}, "without a client certificate's name"),  # TLS, no peer certificate
        ({"UserAuthNMethod": "TLS", "User": "functions-runtime consumer"}, "without its peer certificate"),
        ({"User": "functions-runtime consumer"}, "without a client certificate's name over TLS"),
        ({"RequestPeerCertificates": ["x"]}, "without a client certificate's name"),
        ({"UserAuthNMethod": "plain", "User": "root"}, "over TLS"),
        ({"UserAuthNMethod": "TLS", "User": "functions-runtime consumer", "RequestPeerCertificates": "x"},
         "without its peer certificate"),
    ],
)
def test_whatever_is_not_provably_the_local_socket_is_remote(fields, words):
    req = {"RequestMethod": "POST", "RequestUri": "/v1.45/containers/create", **fields}
    assert_refused(req, words)


def test_the_local_socket_is_a_request_with_no_identity_at_all():
    for empty in ({}, {"User": "", "UserAuthNMethod": "", "RequestPeerCertificates": None}):
        req = {"RequestMethod": "POST", "RequestUri": "/v1.45/images/load", **empty}
        assert decide(req, CONFIG, False, DOCKERD).allow


def test_a_remote_request_with_a_readable_certificate_is_judged():
    req = envelope("GET", "/_ping")
    assert req["RequestPeerCertificates"] == [peer_certificate("functions-runtime consumer")]
    assert_allowed(req)


def test_every_refusal_is_one_line():
    assert refuse("a\nb\r\x00c\u2028d").msg == "functions-runtime policy: a b c d"
    msg = assert_refused(envelope("POST", "/containers/create", create_body({"Runtime": "run\nc"})), "--runtime")
    assert "\n" not in msg
