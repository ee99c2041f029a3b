"""The endpoint policy's bypasses (issue 19), against trixie's real dockerd.

On the shared guest at `verified`, through the consumer certificate
(`runtimeClientTls`, CN "functions-runtime consumer") on the forwarded
endpoint, as tests/hostlab/test_provisioning.py's policy tests do:

- a create whose PID limit is spelled with a dotless i (`P\\u0131dsLimit`,
  which dockerd's Go decoder does not read as PidsLimit) is refused;
- `POST /images/create` with a form body naming an import from the metadata
  service is refused;
- pulls from 127.0.0.1 and from a private address are refused;
- an exec into a container root started on the local socket (sandboxed or
  runc) is refused, and so is stopping or removing it;
- a container the consumer created (labelled, with a volume it created)
  works end to end: run, exec, logs, stop, remove;
- dockerd's own connections (a pull dials the registry as root in the host's
  namespace) reach the lab's internet, by address and by name, and never a
  private address (one the host itself reaches), a name that resolves to
  one, or loopback; still so after the host filter is reloaded and after
  dockerd restarts. These pulls go through root's local socket, which the
  endpoint policy does not restrict: what is proven is the host filter's
  part, which holds whatever `endpoint.registries` lists.

Nothing here asserts a duration (TCG is slow); every container and volume a
test makes is removed by root on the local socket at the end.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

from components.contract import AUTHZ_OWNER_LABEL, CONSUMER_COMMON_NAME
from tests.hostlab.shared_guest import VERIFIED
from tests.hostlab.test_provisioning import DOCKER_PY_TIMEOUT_S, FUNCTION_LIMITS, consumer_client, refused
from tools.lab.surroundings import (
    INTERNET_ADDRESS,
    INTERNET_PORT,
    NAME_PROBE,
    PRIVATE_NAME,
    PRIVATE_NAME_ADDRESS,
)

pytestmark = [pytest.mark.hostlab, pytest.mark.timeout(3600)]

OWNED = {AUTHZ_OWNER_LABEL: CONSUMER_COMMON_NAME}
# The limits alone, without FUNCTION_LIMITS' owner label.
LIMITS = {k: v for k, v in FUNCTION_LIMITS.items() if k != "labels"}
ROOT_SANDBOXED = "fr-bypass-root-runsc"
ROOT_RUNC = "fr-bypass-root-runc"


def post_raw(client, path: str, body: bytes, content_type: str, params: dict | None = None) -> None:
    """One POST with exactly this body and Content-Type (docker-py's own
    helpers would encode it their way)."""
    api = client.api
    api._raise_for_status(api._post(api._url(path), params=params, data=body, headers={"Content-Type": content_type}))


def test_the_dotless_i_pids_limit_is_refused(lab):
    client = consumer_client(lab)
    body = {"Image": lab.image.image_id, "Cmd": ["true"], "Labels": OWNED,
            "HostConfig": {"Memory": 256 << 20, "NanoCpus": 1_000_000_000, "P\u0131dsLimit": 64}}
    try:
        for raw in (json.dumps(body).encode(), json.dumps(body, ensure_ascii=False).encode()):
            message = refused(lambda raw=raw: post_raw(client, "/containers/create", raw, "application/json"))
            assert "outside ASCII" in message, message
    finally:
        client.close()


def test_the_form_body_import_is_refused(lab):
    client = consumer_client(lab)
    try:
        message = refused(lambda: post_raw(
            client, "/images/create", b"fromSrc=http%3A%2F%2F169.254.169.254%2Fhetzner%2Fv1%2Fuserdata&repo=x",
            "application/x-www-form-urlencoded", params={"fromImage": "busybox"},
        ))
        assert "POST /images/create takes no body" in message, message
    finally:
        client.close()
    # dockerd imported nothing.
    assert lab.sh("docker images -q x", timeout=DOCKER_PY_TIMEOUT_S).strip() == ""


@pytest.mark.parametrize("ref", ["127.0.0.1:2375/probe", "10.0.0.2:5000/probe"])
def test_a_pull_from_loopback_or_a_private_address_is_refused(lab, ref):
    client = consumer_client(lab)
    try:
        message = refused(lambda: client.images.pull(ref, tag="latest"))
        assert "loopback, private, link-local or CGNAT" in message, message
    finally:
        client.close()


def test_the_consumer_cannot_touch_containers_root_started(lab):
    image = lab.image.image_id
    lab.at(VERIFIED)
    lab.sh(f"docker run -d --name {ROOT_SANDBOXED} --runtime runsc --network none {image} sleep 600",
           timeout=DOCKER_PY_TIMEOUT_S)
    lab.sh(f"docker run -d --name {ROOT_RUNC} --runtime runc --network none {image} sleep 600",
           timeout=DOCKER_PY_TIMEOUT_S)
    client = consumer_client(lab)
    try:
        for name, words in ((ROOT_SANDBOXED, "not created by this client certificate"),
                            (ROOT_RUNC, "not a sandbox runtime")):
            assert words in refused(lambda name=name: client.api.exec_create(name, ["true"])), name
            assert words in refused(lambda name=name: client.api.stop(name, timeout=1)), name
            assert words in refused(lambda name=name: client.api.remove_container(name, force=True)), name
    finally:
        client.close()
        lab.sh(f"docker rm -f {ROOT_SANDBOXED} {ROOT_RUNC}", timeout=DOCKER_PY_TIMEOUT_S, check=False)
    # Root's containers still run.


def test_a_consumer_created_container_works_end_to_end(lab):
    client = consumer_client(lab)
    image = lab.image.image_id
    volume = container = None
    try:
        volume = client.volumes.create("fr-bypass-data", labels=OWNED)
        container = client.containers.run(
            image, ["sh", "-c", "echo ready > /data/mark; echo started; sleep 600"], detach=True, labels=OWNED,
            volumes={volume.name: {"bind": "/data", "mode": "rw"}}, **LIMITS,
        )
        # The verify image's busybox has no cat: the shell reads the file.
        result = container.exec_run(["sh", "-c", 'read -r line < /data/mark && echo "$line"'])
        assert result.exit_code == 0 and result.output.decode().strip() == "ready", result
        container.stop(timeout=1)
        assert "started" in container.logs().decode()
        container.remove()
        container = None
        volume.remove()
        volume = None
        # Unlabelled, it is refused: the label is how the policy knows it is the consumer's.
        assert "needs the label" in refused(lambda: client.containers.create(image, ["true"], **LIMITS))
    finally:
        client.close()
        if container is not None:
            lab.sh(f"docker rm -f {container.id}", timeout=DOCKER_PY_TIMEOUT_S, check=False)
        if volume is not None:
            lab.sh(f"docker volume rm -f {volume.name}", timeout=DOCKER_PY_TIMEOUT_S, check=False)


# What a dial the host filter refused looks like in dockerd's error (reject
# with admin-prohibited), as verify's dockerd-egress check reads it.
DIAL_REFUSED = "connect: no route to host"


def dockerd_dial(lab, registry: str) -> str:
    """dockerd's error for a pull from `registry` (root, local socket): every
    such pull fails, so the words say how far the dial got."""
    return lab.sh(f"docker pull -q {registry}/functions-runtime-egress-probe:none 2>&1 || true",
                  timeout=DOCKER_PY_TIMEOUT_S)


def dockerd_targets(lab) -> tuple[list[str], list[str]]:
    """(reached, refused) registries: the lab's internet by address and by
    name; the mirror's private address, a name resolving to it, loopback."""
    mirror = urlsplit(lab.mirror.url_from_guest)
    assert mirror.hostname == PRIVATE_NAME_ADDRESS, mirror
    # The host itself reaches the private address: only dockerd is kept from it.
    assert lab.sh(f"curl -sS -o /dev/null -w '%{{http_code}}' --max-time 30 {lab.mirror.url_from_guest}/") == "200"
    reached = [f"{INTERNET_ADDRESS}:{INTERNET_PORT}", f"{NAME_PROBE}:{INTERNET_PORT}"]
    refused = [f"{PRIVATE_NAME_ADDRESS}:{mirror.port}", f"{PRIVATE_NAME}:{mirror.port}", "127.0.0.1:22"]
    return reached, refused


def assert_dockerd_filtered(lab, reached: list[str], refused: list[str]) -> None:
    for registry in reached:
        out = dockerd_dial(lab, registry)
        assert DIAL_REFUSED not in out and "dial tcp" not in out and "Error response from daemon" in out, (registry, out)
    for registry in refused:
        out = dockerd_dial(lab, registry)
        assert DIAL_REFUSED in out, (registry, out)


def test_dockerd_reaches_the_internet_and_no_private_or_local_address(lab):
    lab.at(VERIFIED)
    reached, refused = dockerd_targets(lab)
    assert_dockerd_filtered(lab, reached, refused)
    # Each refusal is counted and logged where an operator looks.
    assert "functions-runtime dockerd refused: " in lab.sh("journalctl -k --no-pager | tail -n 50")


def test_dockerd_stays_filtered_after_a_reload_of_the_filter_and_a_restart(lab):
    lab.fresh(VERIFIED)
    reached, refused = dockerd_targets(lab)
    lab.sh("systemctl restart functions-runtime-firewall.service")
    assert_dockerd_filtered(lab, reached, refused)
    before = lab.sh("stat -c %i /sys/fs/cgroup/system.slice/docker.service").strip()
    lab.sh("systemctl restart docker.service", timeout=DOCKER_PY_TIMEOUT_S)
    lab.sh("timeout 120 sh -c 'until docker info >/dev/null 2>&1; do sleep 1; done'", timeout=DOCKER_PY_TIMEOUT_S)
    # A new cgroup (another ID), in the set again by systemd's NFTSet=.
    assert lab.sh("stat -c %i /sys/fs/cgroup/system.slice/docker.service").strip() != before
    assert_dockerd_filtered(lab, reached, refused)
