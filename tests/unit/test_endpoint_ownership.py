"""The consumer acts only on what it may: its own sandboxed containers and volumes.

Ownership is the label functions-runtime.owner, whose value is the common
name of the client certificate that created the object: required on every
container and volume create, checked on every later call that names one, by
asking dockerd (plugin.DockerLookups on its socket; here FakeDockerd, a table
standing in for dockerd's inspect answers, not dockerd).

Proves: every /containers/{id}/... route, exec's /exec/{id}/... routes and
network connect/disconnect refuse a container that runs runc (root's) or
another certificate's or an unlabelled one, and allow the consumer's own; a
container that does not exist is left to dockerd (404); without lookups, or
when dockerd cannot be asked, those calls are refused; creates need the
label with the creator's name; a create's named volumes must exist and be
the consumer's; volume create of an existing volume of someone else's, and
volume inspect/remove of one, are refused.
Does not prove: what dockerd's inspect returns (the hostlab does).
"""

from __future__ import annotations

import pytest

from endpoint_authz.rules import OWNER_LABEL, LookupFailed, decide
from tests.unit.test_endpoint_policy import (
    CONFIG,
    CONSUMER,
    LIMITS,
    FakeDockerd,
    assert_allowed,
    assert_refused,
    create_body,
    envelope,
)

CONTAINER_CALLS = [
    ("GET", "/v1.45/containers/{}/json", None),
    ("POST", "/v1.45/containers/{}/start", None),
    ("POST", "/v1.45/containers/{}/wait", None),
    ("POST", "/v1.45/containers/{}/attach?stream=1&stdout=1", None),
    ("GET", "/v1.45/containers/{}/logs?stdout=1", None),
    ("GET", "/v1.45/containers/{}/stats?stream=false", None),
    ("POST", "/v1.45/containers/{}/resize?h=1&w=1", None),
    ("POST", "/v1.45/containers/{}/stop", None),
    ("POST", "/v1.45/containers/{}/kill", None),
    ("DELETE", "/v1.45/containers/{}?force=1", None),
    ("POST", "/v1.45/containers/{}/exec", {"Cmd": ["sh"]}),
]


def dockerd() -> FakeDockerd:
    d = FakeDockerd.with_consumer_objects()
    d.add_container("rootbox", runtime="runc", owner=None)  # root's, on the local socket
    d.add_container("rootsandbox", runtime="runsc", owner=None)  # root's, sandboxed, unlabelled
    d.add_container("verifybox", runtime="runsc", owner="verify cloud-1")  # another certificate's
    d.add_container("mine-on-runc", runtime="runc")  # labelled, but not a sandbox runtime
    d.execs["e-root"] = {"ID": "e-root", "ContainerID": "rootbox"}
    d.add_volume("rootdata", owner=None)
    d.add_volume("verifydata", owner="verify cloud-1")
    return d


@pytest.mark.parametrize("method, uri, body", CONTAINER_CALLS, ids=[f"{m} {u}" for m, u, _ in CONTAINER_CALLS])
def test_container_calls_reach_only_the_consumers_sandboxed_containers(method, uri, body):
    d = dockerd()
    assert_allowed(envelope(method, uri.format("abc"), body), dockerd=d)
    assert_refused(envelope(method, uri.format("rootbox"), body), "runs runc runtime, not a sandbox runtime", dockerd=d)
    assert_refused(envelope(method, uri.format("mine-on-runc"), body), "not a sandbox runtime", dockerd=d)
    assert_refused(envelope(method, uri.format("rootsandbox"), body), "not created by this client certificate",
                   dockerd=d)
    assert_refused(envelope(method, uri.format("verifybox"), body), "not created by this client certificate",
                   dockerd=d)
    assert ("container", "rootbox") in d.asked


def test_exec_into_a_container_root_started_is_refused():
    msg = assert_refused(envelope("POST", "/v1.45/containers/rootbox/exec", {"Cmd": ["sh"]}), "exec",
                         dockerd=dockerd())
    assert "POST /containers/{id}/exec on container rootbox is not allowed" in msg


@pytest.mark.parametrize("method, uri", [("POST", "/v1.45/exec/{}/start"), ("POST", "/v1.45/exec/{}/resize?h=1&w=1"),
                                         ("GET", "/v1.45/exec/{}/json")])
def test_exec_ids_lead_to_their_container(method, uri):
    d = dockerd()
    assert_allowed(envelope(method, uri.format("e1"), {"Detach": False} if "start" in uri else None), dockerd=d)
    assert_refused(envelope(method, uri.format("e-root")), "runs runc runtime", dockerd=d)
    assert ("exec", "e-root") in d.asked


def test_a_container_or_exec_that_does_not_exist_is_left_to_dockerd():
    assert_allowed(envelope("DELETE", "/v1.45/containers/gone"), dockerd=dockerd())
    assert_allowed(envelope("GET", "/v1.45/exec/gone/json"), dockerd=dockerd())


def test_without_lookups_the_calls_that_need_them_are_refused():
    d = decide(envelope("POST", "/v1.45/containers/abc/kill"), CONFIG, False, None)
    assert not d.allow and "cannot look up container 'abc'" in d.msg
    assert decide(envelope("GET", "/v1.45/containers/json"), CONFIG, False, None).allow


def test_a_dockerd_that_cannot_be_asked_refuses():
    class Unreachable(FakeDockerd):
        def container(self, ref: str) -> dict | None:
            raise LookupFailed("/run/docker.sock: connection refused")

    assert_refused(envelope("POST", "/v1.45/containers/abc/kill"), "could not ask dockerd about container 'abc'",
                   dockerd=Unreachable())


def test_network_connect_and_disconnect_only_the_consumers_containers():
    d = dockerd()
    assert_allowed(envelope("POST", "/v1.45/networks/fn-net/connect", {"Container": "abc"}), dockerd=d)
    assert_refused(envelope("POST", "/v1.45/networks/fn-net/connect", {"Container": "rootbox"}), "network connect",
                   dockerd=d)
    assert_allowed(envelope("POST", "/v1.45/networks/fn-net/disconnect", {"Container": "abc", "Force": True}),
                   dockerd=d)
    assert_refused(envelope("POST", "/v1.45/networks/fn-net/disconnect", {"Container": "verifybox"}),
                   "network disconnect on container verifybox", dockerd=d)
    assert_refused(envelope("POST", "/v1.45/networks/fn-net/disconnect"), "needs a JSON body", dockerd=d)


@pytest.mark.parametrize("labels", [None, {}, {OWNER_LABEL: "verify cloud-1"}, {OWNER_LABEL: ""}, {"owner": CONSUMER}])
def test_create_needs_the_owner_label_with_the_creators_name(labels):
    body = create_body()
    body["Labels"] = labels
    assert_refused(envelope("POST", "/v1.45/containers/create", body),
                   f"container create needs the label {OWNER_LABEL}={CONSUMER}")


def test_the_verify_certificate_creates_under_its_own_name():
    body = {**create_body(), "Labels": {OWNER_LABEL: "verify cloud-1"}}
    assert_allowed(envelope("POST", "/v1.45/containers/create", body, user="verify cloud-1"))


@pytest.mark.parametrize(
    "hc, words",
    [
        ({"Binds": ["rootdata:/d"]}, "volume rootdata is not allowed"),
        ({"Binds": ["verifydata:/d:ro"]}, "volume verifydata is not allowed"),
        ({"Mounts": [{"Type": "volume", "Source": "rootdata", "Target": "/d"}]}, "volume rootdata"),
        ({"Binds": ["fresh:/d"]}, "volume fresh does not exist; create it first"),
    ],
)
def test_a_create_mounts_only_the_consumers_volumes(hc, words):
    assert_refused(envelope("POST", "/v1.45/containers/create", create_body(hc)), words, dockerd=dockerd())


def test_a_create_mounts_its_own_and_anonymous_volumes():
    hc = {"Binds": ["data:/data"], "Mounts": [{"Type": "volume", "Source": "cache", "Target": "/c"},
                                             {"Type": "volume", "Target": "/anon"}]}
    assert_allowed(envelope("POST", "/v1.45/containers/create", create_body(hc, Volumes={"/scratch": {}})),
                   dockerd=dockerd())


def test_volume_create_is_labelled_and_takes_no_ones_volume():
    d = dockerd()
    mine = {OWNER_LABEL: CONSUMER}
    assert_allowed(envelope("POST", "/v1.45/volumes/create", {"Name": "new", "Labels": mine}), dockerd=d)
    assert_allowed(envelope("POST", "/v1.45/volumes/create", {"Labels": mine}), dockerd=d)  # a generated name
    assert_allowed(envelope("POST", "/v1.45/volumes/create", {"Name": "data", "Labels": mine}), dockerd=d)
    assert_refused(envelope("POST", "/v1.45/volumes/create", {"Name": "new"}), "volume create needs the label",
                   dockerd=d)
    # dockerd answers a create of an existing name with that volume: root's stays root's.
    assert_refused(envelope("POST", "/v1.45/volumes/create", {"Name": "rootdata", "Labels": mine}),
                   "volume rootdata is not allowed", dockerd=d)


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_volume_inspect_and_remove_only_the_consumers(method):
    d = dockerd()
    assert_allowed(envelope(method, "/v1.45/volumes/data"), dockerd=d)
    assert_refused(envelope(method, "/v1.45/volumes/rootdata"), "volume rootdata is not allowed", dockerd=d)
    assert_allowed(envelope(method, "/v1.45/volumes/gone"), dockerd=d)


def test_lists_and_events_are_not_filtered():
    # What the consumer can see (docs/endpoint-policy.md): names and states, not actions.
    for uri in ("/v1.45/containers/json?all=1", "/v1.45/volumes", "/v1.45/events", "/v1.45/images/json"):
        assert_allowed(envelope("GET", uri), dockerd=dockerd())


def test_the_local_socket_asks_nothing():
    d = dockerd()
    assert_allowed(envelope("POST", "/v1.45/containers/rootbox/exec", {"Cmd": ["sh"], "Privileged": True}, user=""),
                   dockerd=d)
    assert d.asked == []


def test_limits_still_apply_to_the_consumers_create():
    assert_refused(envelope("POST", "/v1.45/containers/create", {**create_body(), "HostConfig": {**LIMITS,
                                                                                                "PidsLimit": 0}}),
                   "--pids-limit is required")
