"""Nothing reaches out from the host on a consumer's behalf: image pulls.

Proves: `POST /images/create` with a body (any Content-Type, a length, a
transfer coding, a form type whose chunked length net/http hides) is refused,
so dockerd never reads fromSrc/fromImage from a form body the policy cannot
see; a bodiless pull as Docker's Go client (text/plain, length 0) and
docker-py (no type) send it is allowed; fromSrc imports are refused however
they are spelled; the registry is read from the reference as dockerd reads it
(Docker Hub by default, a first component with '.', ':', 'localhost' or an
upper-case letter is a host, index.docker.io is docker.io); only registries
in endpoint.registries are allowed, and never a loopback, private,
link-local or CGNAT address whatever the list says; the configuration's
registries are checked when loaded.
Does not prove: where a listed name resolves (the plugin runs without a
network; docs/endpoint-policy.md says what holds instead).
"""

from __future__ import annotations

import dataclasses
from urllib.parse import quote

import pytest

from endpoint_authz.rules import DEFAULT_REGISTRIES, load_config, registry_of
from tests.unit.test_endpoint_policy import CONFIG, assert_allowed, assert_refused, envelope

GO_CLIENT = {"Content-Type": "text/plain", "Content-Length": "0", "User-Agent": "Docker-Client/26.1.5 (linux)"}


def pull(ref: str, headers: dict | None = None, body: bytes | None = None, query: str = "") -> dict:
    req = envelope("POST", f"/v1.45/images/create?fromImage={quote(ref, safe='')}{query}", raw=body)
    req["RequestHeaders"] = dict(GO_CLIENT if headers is None else headers)
    return req


@pytest.mark.parametrize(
    "ref",
    ["busybox", "library/busybox", "docker.io/library/busybox:1.36", "index.docker.io/library/busybox",
     "ghcr.io/org/fn@sha256:" + "a" * 64, "quay.io/org/fn", "registry.k8s.io/pause:3.9",
     "public.ecr.aws/docker/library/busybox", "mcr.microsoft.com/dotnet/runtime:8.0", "gcr.io/distroless/static"],
)
def test_pulls_from_the_default_registries_are_allowed(ref):
    assert_allowed(pull(ref))
    assert_allowed(pull(ref, headers={"Content-Length": "0"}))  # docker-py: no Content-Type


@pytest.mark.parametrize(
    "ref, registry",
    [
        ("busybox", "docker.io"), ("a/b", "docker.io"), ("index.docker.io/a/b", "docker.io"),
        ("localhost/a", "localhost"), ("localhost:5000/a", "localhost:5000"), ("Foo/bar", "Foo"),
        ("10.0.0.2:5000/x", "10.0.0.2:5000"), ("[::1]:5000/x", "[::1]:5000"), ("example.com/a/b:1", "example.com"),
        ("busybox@sha256:" + "0" * 64, "docker.io"),
    ],
)
def test_the_registry_is_read_from_the_reference_as_dockerd_reads_it(ref, registry):
    assert registry_of(ref) == registry


@pytest.mark.parametrize(
    "ref",
    ["127.0.0.1:2375/x", "127.0.0.1/x", "localhost:5000/x", "localhost/x", "[::1]:5000/x", "[::ffff:127.0.0.1]/x",
     "10.0.0.2:5000/x", "192.168.1.1/x", "172.16.0.1:443/x", "169.254.169.254/latest", "100.64.0.1/x",
     "[fd00::1]/x", "[fe80::1]:5000/x", "0.0.0.0:2375/x", "registry.localhost/x"],
)
def test_a_pull_from_a_local_or_private_address_is_refused(ref):
    assert_refused(pull(ref), "a loopback, private, link-local or CGNAT address" if "localhost" not in ref
                   else "the host's loopback")


def test_a_local_address_is_refused_even_when_the_list_names_it():
    # load_config refuses such a list; a PolicyConfig built around it still refuses the pull.
    config = dataclasses.replace(CONFIG, registries=("127.0.0.1:5000", "10.0.0.2:5000"))
    assert_refused(pull("127.0.0.1:5000/x"), "loopback, private", config)
    assert_refused(pull("10.0.0.2:5000/x"), "loopback, private", config)


@pytest.mark.parametrize("ref", ["example.com/x", "registry.example:5000/x", "1.1.1.1/x", "127.1:5000/x", "127.1/x", "0x7f.1/x"])
def test_a_pull_from_a_registry_not_listed_is_refused(ref):
    assert_refused(pull(ref), "not allowed on this endpoint (endpoint.registries:")


def test_a_listed_mirror_is_allowed_with_its_port():
    config = dataclasses.replace(CONFIG, registries=("mirror.example.net:5000",))
    assert_allowed(pull("mirror.example.net:5000/library/busybox"), config)
    assert_refused(pull("mirror.example.net/library/busybox"), "endpoint.registries: mirror.example.net:5000", config)
    assert_refused(pull("busybox"), "pulls from docker.io are not allowed", config)


@pytest.mark.parametrize(
    "headers, body",
    [
        ({"Content-Type": "application/x-www-form-urlencoded", "Content-Length": "40"}, None),
        # Chunked: net/http removes Transfer-Encoding and Content-Length; the type remains.
        ({"Content-Type": "application/x-www-form-urlencoded"}, None),
        ({"Content-Type": "multipart/form-data; boundary=x"}, None),
        ({"Content-Type": "text/plain", "Content-Length": "12"}, None),
        ({"Transfer-Encoding": "chunked"}, None),
        ({"content-length": "7"}, None),
        ({"Content-Type": "application/json", "Content-Length": "2"}, b"{}"),
    ],
)
def test_images_create_with_any_body_is_refused(headers, body):
    assert_refused(pull("busybox", headers=headers, body=body), "POST /images/create takes no body on this endpoint")


def test_the_form_body_import_is_refused():
    # What the issue sent: the import's source in a form body, a harmless pull in the query.
    req = pull("busybox", headers={"Content-Type": "application/x-www-form-urlencoded", "Content-Length": "54"})
    assert_refused(req, "takes no body")


@pytest.mark.parametrize(
    "query",
    ["/v1.45/images/create?fromSrc=http%3A%2F%2F169.254.169.254%2F&repo=x",
     "/v1.45/images/create?fromImage=busybox&fromSrc=-",
     "/v1.45/images/create?fromImage=busybox&fromsrc=-",
     "/v1.45/images/create?fromImage=busybox&repo=x",
     "/v1.45/images/create?fromImage=busybox&fromImage=evil.example%2Fx",
     "/v1.45/images/create?fromImage=busybox&message=m&changes=CMD"],
)
def test_imports_stay_refused_however_spelled(query):
    req = envelope("POST", query)
    req["RequestHeaders"] = GO_CLIENT
    assert_refused(req, "")


def test_the_default_registries_are_the_configurations_default():
    config = load_config({"sandboxRuntimes": ["runsc"], "limits": {"maxMemoryMiB": 2048, "maxPids": 512,
                                                                  "maxMilliCpus": 2000}})
    assert config.registries == DEFAULT_REGISTRIES
    assert "docker.io" in DEFAULT_REGISTRIES and "registry-1.docker.io" in DEFAULT_REGISTRIES


@pytest.mark.parametrize(
    "registries, words",
    [
        (["127.0.0.1:5000"], "a loopback, private"),
        (["10.0.0.2"], "a loopback, private"),
        (["localhost:5000"], "the host's loopback"),
        (["Docker.io"], "not a lower-case registry host"),
        (["https://ghcr.io"], "not a lower-case registry host"),
        ("docker.io", "expected a list"),
    ],
)
def test_the_configurations_registries_are_checked_when_loaded(registries, words):
    with pytest.raises(ValueError, match=words):
        load_config({"sandboxRuntimes": ["runsc"], "registries": registries,
                     "limits": {"maxMemoryMiB": 2048, "maxPids": 512, "maxMilliCpus": 2000}})


def test_an_empty_list_allows_no_pull():
    config = load_config({"sandboxRuntimes": ["runsc"], "registries": [],
                          "limits": {"maxMemoryMiB": 2048, "maxPids": 512, "maxMilliCpus": 2000}})
    assert_refused(pull("busybox"), "endpoint.registries: none", config)
