"""The endpoint policy (endpoint_authz/rules.py) on AuthZ requests as dockerd sends them.

Proves, table-driven: every rule with an allowed and a refused variant; each
refusal is one line that starts with the policy's prefix and names the
rule; bodies are read as Go's decoder reads them (case-insensitive keys,
null, types; test_endpoint_decoding.py: keys outside ASCII) and ambiguous
ones are refused; malformed,
empty and unforwarded (over 1 MiB) bodies of a create are refused; API
version prefixes, query strings and percent-escapes are read as dockerd's
router reads them; chunked bodies arrive as any other (dockerd forwards
them base64-encoded in RequestBody); the local socket is unrestricted;
revocation by name and serial; draining refuses creates only.
Does not prove: that dockerd calls the plugin with these envelopes (the
hostlab does), nor the plugin's socket protocol (test_endpoint_plugin.py).
"""

from __future__ import annotations

import base64
import datetime
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from endpoint_authz.rules import (
    MAX_FORWARDED_BODY,
    OWNER_LABEL,
    REFUSAL_PREFIX,
    Limits,
    PolicyConfig,
    certificate_serial,
    decide,
    load_config,
)

MIB = 1024 * 1024
CONSUMER = "functions-runtime consumer"


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _cert(serial: int, cn: str = CONSUMER) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(serial)
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    # dockerd marshals each peer certificate as the base64 of its PEM.
    return b64(cert.public_bytes(serialization.Encoding.PEM))


_PEERS: dict[str, str] = {}


def peer_certificate(cn: str) -> str:
    """One certificate per common name, made once (RequestPeerCertificates[0])."""
    if cn not in _PEERS:
        _PEERS[cn] = _cert(0x1000 + len(_PEERS), cn)
    return _PEERS[cn]


class FakeDockerd:
    """A TEST DOUBLE, not dockerd: the policy's Lookups answered from a table
    of inspect documents, shaped like dockerd 26's (`Id`, `Config.Labels`,
    `HostConfig.Runtime`; an exec's `ContainerID`; a volume's `Labels`).
    The plugin's real lookups (plugin.DockerLookups) ask dockerd on its
    socket; the hostlab runs them against trixie's dockerd."""

    def __init__(self) -> None:
        self.containers: dict[str, dict] = {}
        self.execs: dict[str, dict] = {}
        self.volumes: dict[str, dict] = {}
        self.asked: list[tuple[str, str]] = []

    def add_container(self, ref: str, runtime: str = "runsc", owner: str | None = CONSUMER) -> None:
        labels = {OWNER_LABEL: owner} if owner is not None else {}
        self.containers[ref] = {"Id": ref * 8, "Config": {"Labels": labels}, "HostConfig": {"Runtime": runtime}}

    def add_volume(self, name: str, owner: str | None = CONSUMER) -> None:
        self.volumes[name] = {"Name": name, "Labels": {OWNER_LABEL: owner} if owner is not None else None}

    @classmethod
    def with_consumer_objects(cls) -> FakeDockerd:
        d = cls()
        d.add_container("abc")
        d.execs["e1"] = {"ID": "e1", "ContainerID": "abc"}
        d.add_volume("data")
        d.add_volume("cache")
        d.add_volume("v")
        return d

    def container(self, ref: str) -> dict | None:
        self.asked.append(("container", ref))
        return self.containers.get(ref)

    def exec(self, exec_id: str) -> dict | None:
        self.asked.append(("exec", exec_id))
        return self.execs.get(exec_id)

    def volume(self, name: str) -> dict | None:
        self.asked.append(("volume", name))
        return self.volumes.get(name)
CONFIG = PolicyConfig(
    sandbox_runtimes=("runsc", "kata"),
    limits=Limits(max_memory_bytes=2048 * MIB, max_pids=512, max_nano_cpus=2_000_000_000),
)
LIMITS = {"Memory": 256 * MIB, "PidsLimit": 128, "NanoCpus": 1_000_000_000}
# The containers, execs and volumes the ownership rules ask about (container
# "abc" and exec "e1" are the consumer's, volume "data" too).
DOCKERD = FakeDockerd.with_consumer_objects()


def envelope(method: str, uri: str, body: object = None, user: str = CONSUMER, raw: bytes | None = None) -> dict:
    # As dockerd marshals it (pkg/authorization/api.go): RequestUri, empty fields omitted.
    req: dict = {"RequestMethod": method, "RequestUri": uri}
    if user:
        req.update(User=user, UserAuthNMethod="TLS", RequestPeerCertificates=[peer_certificate(user)])
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if data:
        req["RequestBody"] = b64(data)
    return req


def create_body(hc: dict | None = None, drop: tuple[str, ...] = (), **top: object) -> dict:
    host_config = {**LIMITS, **(hc or {})}
    for name in drop:
        host_config.pop(name, None)
    return {"Image": "busybox", "Cmd": ["true"], "Labels": {OWNER_LABEL: CONSUMER}, **top, "HostConfig": host_config}


def create(hc: dict | None = None, drop: tuple[str, ...] = (), **top: object) -> dict:
    return envelope("POST", "/v1.45/containers/create", create_body(hc, drop, **top))


def assert_allowed(req: dict, config: PolicyConfig = CONFIG, draining: bool = False, dockerd=DOCKERD) -> None:
    d = decide(req, config, draining, dockerd)
    assert d.allow, d.msg


def assert_refused(req: dict, words: str, config: PolicyConfig = CONFIG, draining: bool = False, dockerd=DOCKERD) -> str:
    d = decide(req, config, draining, dockerd)
    assert not d.allow, f"allowed, expected a refusal naming {words!r}"
    assert d.msg.startswith(f"{REFUSAL_PREFIX} "), d.msg
    assert "\n" not in d.msg
    assert words in d.msg, d.msg
    return d.msg


def assert_decision(req: dict, refused: str | None) -> None:
    """A table's case: allowed when `refused` is None, else refused with those words."""
    if refused:
        assert_refused(req, refused)
    else:
        assert_allowed(req)


# ---------------------------------------------------------------- container create: each rule, both ways

RULES = [
    # (rule, allowed HostConfig, refused HostConfig, words of the refusal)
    ("runtime", {"Runtime": "runsc"}, {"Runtime": "runc"}, "--runtime runc is not allowed"),
    ("runtime-kata", {"Runtime": "kata"}, {"Runtime": "io.containerd.runc.v2"}, "--runtime"),
    ("privileged", {"Privileged": False}, {"Privileged": True}, "--privileged is not allowed on this endpoint"),
    ("network-host", {"NetworkMode": "bridge"}, {"NetworkMode": "host"}, "--network host"),
    ("network-container", {"NetworkMode": "fn-net"}, {"NetworkMode": "container:abc"}, "--network container:abc"),
    ("network-none", {"NetworkMode": "none"}, {"NetworkMode": "HOST"}, "--network HOST"),
    ("pid", {"PidMode": ""}, {"PidMode": "host"}, "--pid host"),
    ("pid-container", {}, {"PidMode": "container:x"}, "--pid container:x"),
    ("ipc", {"IpcMode": "private"}, {"IpcMode": "host"}, "--ipc host"),
    ("ipc-shareable", {"IpcMode": "shareable"}, {"IpcMode": "container:x"}, "--ipc container:x"),
    ("uts", {"UTSMode": ""}, {"UTSMode": "host"}, "--uts host"),
    ("userns", {"UsernsMode": ""}, {"UsernsMode": "host"}, "--userns host"),
    ("cgroupns", {"CgroupnsMode": "private"}, {"CgroupnsMode": "host"}, "--cgroupns host"),
    ("cgroup", {}, {"Cgroup": "container:x"}, "--cgroup container:x"),
    ("binds", {"Binds": ["data:/data:ro"]}, {"Binds": ["/:/host"]}, "bind mounts of host paths"),
    ("binds-relative", {"Binds": ["cache:/cache"]}, {"Binds": ["./x:/x"]}, "bind mounts of host paths"),
    ("mount-bind", {"Mounts": [{"Type": "volume", "Source": "data", "Target": "/d"}]},
     {"Mounts": [{"Type": "bind", "Source": "/etc", "Target": "/e"}]}, "--mount type=bind,source=/etc"),
    ("mount-tmpfs", {"Mounts": [{"Type": "tmpfs", "Target": "/t"}]},
     {"Mounts": [{"Type": "npipe", "Source": "x", "Target": "/t"}]}, "--mount type=npipe"),
    ("mount-volume-bind-opts", {"Mounts": [{"Type": "volume", "Source": "v", "Target": "/v",
                                             "VolumeOptions": {"DriverConfig": {"Name": "local"}}}]},
     {"Mounts": [{"Type": "volume", "Source": "v", "Target": "/v", "VolumeOptions": {
         "DriverConfig": {"Name": "local", "Options": {"type": "none", "o": "bind", "device": "/"}}}}]},
     "o=bind"),
    ("mount-subpath", {}, {"Mounts": [{"Type": "volume", "Source": "v", "Target": "/v",
                                       "VolumeOptions": {"Subpath": "../.."}}]}, "volume-subpath"),
    ("volumes-from", {"VolumesFrom": []}, {"VolumesFrom": ["other"]}, "--volumes-from"),
    ("volume-driver", {"VolumeDriver": "local"}, {"VolumeDriver": "nfs-plugin"}, "--volume-driver"),
    ("devices", {"Devices": []}, {"Devices": [{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda",
                                                "CgroupPermissions": "rwm"}]}, "--device is not allowed"),
    ("device-requests", {"DeviceRequests": None}, {"DeviceRequests": [{"Count": -1}]}, "--gpus"),
    ("device-cgroup-rules", {}, {"DeviceCgroupRules": ["a *:* rwm"]}, "--device-cgroup-rule"),
    ("cap-add", {"CapAdd": None, "CapDrop": ["ALL"]}, {"CapAdd": ["SYS_ADMIN"]}, "--cap-add is not allowed"),
    ("cap-add-string", {"CapAdd": ""}, {"CapAdd": "NET_ADMIN"}, "--cap-add"),
    ("seccomp", {"SecurityOpt": ["no-new-privileges"]}, {"SecurityOpt": ["seccomp=unconfined"]},
     "--security-opt seccomp=unconfined"),
    ("apparmor", {"SecurityOpt": ["no-new-privileges:true"]}, {"SecurityOpt": ["apparmor=unconfined"]},
     "--security-opt apparmor=unconfined"),
    ("nnp-off", {"SecurityOpt": ["no-new-privileges=true"]}, {"SecurityOpt": ["no-new-privileges=false"]},
     "--security-opt no-new-privileges=false"),
    ("custom-seccomp", {}, {"SecurityOpt": ['seccomp={"defaultAction":"SCMP_ACT_ALLOW"}']}, "--security-opt seccomp="),
    ("systempaths", {}, {"SecurityOpt": ["systempaths=unconfined"]}, "systempaths=unconfined"),
    ("masked-paths", {"MaskedPaths": None}, {"MaskedPaths": []}, "masked paths cannot be changed"),
    ("readonly-paths", {}, {"ReadonlyPaths": ["/proc/sys"]}, "read-only paths cannot be changed"),
    ("sysctls", {"Sysctls": {}}, {"Sysctls": {"net.ipv4.ip_forward": "1"}}, "--sysctl"),
    ("cgroup-parent", {"CgroupParent": ""}, {"CgroupParent": "/system.slice"}, "--cgroup-parent"),
    ("oom-kill-disable", {"OomKillDisable": False}, {"OomKillDisable": True}, "--oom-kill-disable"),
    ("oom-score-adj", {"OomScoreAdj": 500}, {"OomScoreAdj": -1000}, "--oom-score-adj"),
    ("port-bindings", {"PortBindings": {}}, {"PortBindings": {"80/tcp": [{"HostPort": "80"}]}}, "-p/--publish"),
    ("publish-all", {"PublishAllPorts": False}, {"PublishAllPorts": True}, "-P/--publish-all"),
    ("log-driver", {"LogConfig": {"Type": "json-file", "Config": {}}},
     {"LogConfig": {"Type": "syslog", "Config": {"syslog-address": "tcp://10.0.0.1:514"}}}, "--log-driver"),
    ("log-opt", {"LogConfig": {"Type": ""}}, {"LogConfig": {"Type": "json-file", "Config": {"max-size": "10g"}}},
     "--log-opt"),
    ("annotations", {"Annotations": {}}, {"Annotations": {"io.katacontainers.config.hypervisor.path": "/x"}},
     "--annotation"),
    ("storage-opt", {}, {"StorageOpt": {"size": "1T"}}, "--storage-opt"),
    ("isolation", {"Isolation": "default"}, {"Isolation": "hyperv"}, "--isolation"),
    ("cpu-rt", {}, {"CpuRealtimeRuntime": 950000}, "--cpu-rt"),
]


@pytest.mark.parametrize("rule, allowed, refused, words", RULES, ids=[r[0] for r in RULES])
def test_create_rule_allows_one_and_refuses_the_other(rule, allowed, refused, words):
    assert_allowed(create(allowed))
    assert_refused(create(refused), words)


def test_the_privileged_refusal_reads_as_the_issue_asks():
    msg = assert_refused(create({"Privileged": True}), "--privileged")
    assert msg == "functions-runtime policy: --privileged is not allowed on this endpoint"


@pytest.mark.parametrize(
    "networking, refused",
    [
        ({"EndpointsConfig": {"fn-net": {"Aliases": ["f"]}}}, None),
        ({"EndpointsConfig": {"host": {}}}, "network host"),
        ({"EndpointsConfig": {"fn": {"DriverOpts": {"com.docker.network.endpoint.sysctls": "x"}}}}, "driver options"),
    ],
)
def test_networking_config(networking, refused):
    body = {**create_body(), "NetworkingConfig": networking}
    assert_decision(envelope("POST", "/containers/create", body), refused)


# ---------------------------------------------------------------- limits: required, and within the stack's maxima

LIMIT_CASES = [
    ("memory-missing", {}, ("Memory",), "--memory is required on this endpoint (at most 2048 MiB)"),
    ("memory-zero", {"Memory": 0}, (), "--memory is required"),
    ("memory-above", {"Memory": 4096 * MIB}, (), "above this endpoint's maximum of 2048 MiB"),
    ("swap-unlimited", {"MemorySwap": -1}, (), "--memory-swap"),
    ("pids-missing", {}, ("PidsLimit",), "--pids-limit is required on this endpoint (at most 512)"),
    ("pids-unlimited", {"PidsLimit": -1}, (), "--pids-limit is required"),
    ("pids-above", {"PidsLimit": 100000}, (), "--pids-limit 100000 is above"),
    ("cpus-missing", {}, ("NanoCpus",), "--cpus (or --cpu-quota with --cpu-period) is required"),
    ("cpus-above", {"NanoCpus": 3_000_000_000}, (), "--cpus 3 is above this endpoint's maximum of 2"),
    ("quota-above", {"CpuQuota": 300000, "CpuPeriod": 100000}, ("NanoCpus",), "--cpus 3 is above"),
    ("shares-only", {"CpuShares": 512}, ("NanoCpus",), "--cpus"),
]


@pytest.mark.parametrize("case, hc, drop, words", LIMIT_CASES, ids=[c[0] for c in LIMIT_CASES])
def test_limits_are_required_and_bounded(case, hc, drop, words):
    assert_refused(create(hc, drop), words)


@pytest.mark.parametrize(
    "hc, drop",
    [
        ({"MemorySwap": 256 * MIB}, ()),
        ({"MemorySwap": 0, "MemoryReservation": 64 * MIB}, ()),
        ({"CpuQuota": 50000, "CpuPeriod": 100000}, ("NanoCpus",)),
        ({"Memory": 2048 * MIB, "PidsLimit": 512, "NanoCpus": 2_000_000_000}, ()),
    ],
)
def test_limits_within_the_maxima_are_allowed(hc, drop):
    assert_allowed(create(hc, drop))


def test_create_without_host_config_is_refused():
    assert_refused(envelope("POST", "/containers/create", {"Image": "busybox"}), "needs a HostConfig")


# ---------------------------------------------------------------- bodies as Go decodes them

@pytest.mark.parametrize(
    "raw, words",
    [
        (b"", "needs a JSON body"),
        (None, "needs a JSON body"),
        (b"{", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b"null", "must be a JSON object"),
        (b'{"Image": "busybox"} {"HostConfig": {"Privileged": true}}', "not valid JSON"),
        (b'{"Image": NaN}', "not valid JSON"),
        (b"\xef\xbb\xbf{}", "not valid JSON"),
        (b'{"Image": "\xff"}', "not valid JSON"),
        (b'{"Image": 1}', "Image: expected a string"),
        (b'{"HostConfig": {"Memory": 1.0}}', "HostConfig.Memory: expected a whole number"),
        (b'{"HostConfig": {"Memory": 1e9}}', "expected a whole number"),
        (b'{"HostConfig": {"Memory": 99999999999999999999}}', "expected a whole number"),
        (b'{"HostConfig": {"Privileged": "true"}}', "expected a boolean"),
        (b'{"HostConfig": []}', "expected an object"),
    ],
)
def test_malformed_or_missing_create_bodies_are_refused(raw, words):
    req = envelope("POST", "/v1.45/containers/create", raw=raw) if raw is not None else envelope(
        "POST", "/v1.45/containers/create"
    )
    assert_refused(req, words)


def test_a_body_dockerd_did_not_forward_is_refused_for_a_create():
    # dockerd forwards no body of 1 MiB or more (nor a non-JSON one): RequestBody is null.
    req = envelope("POST", "/v1.45/containers/create")
    msg = assert_refused(req, "under 1 MiB")
    assert "dockerd forwarded none" in msg
    assert MAX_FORWARDED_BODY == 1048576


@pytest.mark.parametrize(
    "hc_key, priv_key",
    [
        ("hostconfig", "privileged"),
        ("HOSTCONFIG", "PRIVILEGED"),
        ("hostConfig", "Privileged"),
        ("HostConfig", "privileGed"),
        ("hostconfig", "PRIVILEGED"),
    ],
)
def test_keys_match_case_insensitively_as_in_go(hc_key, priv_key):
    raw = json.dumps({"Image": "busybox", hc_key: {**LIMITS, priv_key: True}}).encode()
    assert_refused(envelope("POST", "/containers/create", raw=raw), "--privileged")


def test_keys_go_folds_outside_ascii_are_refused_not_guessed():
    # Go (before 1.21) matches U+017F to 's' and U+212A to 'k'; the policy refuses
    # every key outside ASCII (test_endpoint_decoding.py: every code point).
    for key in ("ſecurityOpt", "\u212aernelMemory"):
        raw = json.dumps({"Image": "b", "HostConfig": {**LIMITS, key: ["seccomp=unconfined"]}}).encode()
        assert_refused(envelope("POST", "/containers/create", raw=raw), "outside ASCII")


@pytest.mark.parametrize(
    "raw",
    [
        # Go: the last duplicate wins (Privileged true), and two objects for
        # one field merge; the policy refuses both rather than guess.
        b'{"Image":"b","HostConfig":{"Memory":268435456,"PidsLimit":64,"NanoCpus":1000000000,'
        b'"Privileged":false,"privileged":true}}',
        b'{"Image":"b","HostConfig":{"Privileged":true},"hostconfig":{"Memory":268435456,"PidsLimit":64,'
        b'"NanoCpus":1000000000}}',
        b'{"Image":"b","HostConfig":{"Memory":268435456,"PidsLimit":64,"NanoCpus":1000000000,'
        b'"Privileged":true,"Privileged":null}}',
    ],
)
def test_duplicate_keys_are_refused(raw):
    assert_refused(envelope("POST", "/containers/create", raw=raw), "given more than once")


def test_null_leaves_a_field_unset_as_in_go():
    body = create_body({"Privileged": None, "Binds": None, "PortBindings": None, "Mounts": None})
    assert_allowed(envelope("POST", "/containers/create", body))
    assert_refused(create(drop=("Memory",), hc={"Memory": None}), "--memory is required")


def test_unknown_fields_pass_only_empty():
    assert_allowed(create({"SomeFutureField": None, "AnotherOne": "", "Nested": {"A": 0}}))
    assert_refused(create({"SomeFutureField": "x"}), "a field this endpoint's policy does not know")
    raw = json.dumps({**create_body(), "FutureTopLevel": [1]}).encode()
    assert_refused(envelope("POST", "/containers/create", raw=raw), "FutureTopLevel")


def test_a_body_sent_chunked_arrives_forwarded_like_any_other():
    # dockerd (since the CVE-2024-41110 fix) drains chunked bodies under
    # 1 MiB and forwards them base64-encoded, exactly like a sized one.
    body = json.dumps(create_body({"Privileged": True})).encode()
    req = envelope("POST", "/v1.45/containers/create", raw=body)
    req["RequestHeaders"] = {"Transfer-Encoding": "chunked", "Content-Type": "application/json"}
    assert_refused(req, "--privileged")


def test_request_body_must_be_base64():
    req = envelope("POST", "/containers/create")
    req["RequestBody"] = "not base64!"
    assert_refused(req, "RequestBody is not base64")


# ---------------------------------------------------------------- URIs as dockerd's router reads them

@pytest.mark.parametrize(
    "uri",
    [
        "/containers/create",
        "/v1.45/containers/create",
        "/v1.24/containers/create",
        "/v1.45/containers/create?name=fn-1",
        "/v1.45/containers/create?name=fn-1&platform=linux%2Famd64",
        # Read decoded, as Go's url.Parse reads it (dockerd 26's router answers
        # 404 here; the policy checks the call either way).
        "/v1.45/containers%2Fcreate",
    ],
)
def test_create_is_checked_whatever_the_prefix_and_escapes(uri):
    assert_allowed(envelope("POST", uri, create_body()))
    assert_refused(envelope("POST", uri, create_body({"Privileged": True})), "--privileged")


@pytest.mark.parametrize(
    "uri, words",
    [
        ("/v1.23/containers/create", "API version '1.23' is not allowed"),
        ("/v1..45/containers/create", "API version"),
        ("/v1.45//containers/create", "not in canonical form"),
        ("/v1.45/containers/./create", "not in canonical form"),
        ("/v1.45/images/../containers/create", "not in canonical form"),
        ("/v1.45/containers/create?name=a&name=b", "given more than once"),
        ("/v1.45/containers/create?name=a;b", "';'"),
        ("/v1.45/containers/create?%zz=1", "malformed percent-escape"),
        ("http://docker/v1.45/containers/create", "not a plain path"),
        ("/v1.45/containers/create?checkpoint=x", "not allowed on POST /containers/create"),
    ],
)
def test_odd_uris_are_refused(uri, words):
    assert_refused(envelope("POST", uri, create_body()), words)


# ---------------------------------------------------------------- the allowed endpoints, and the rest

ALLOWED_CALLS = [
    ("GET", "/_ping"), ("HEAD", "/_ping"), ("GET", "/v1.45/version"), ("GET", "/v1.45/info"),
    ("GET", "/v1.45/events?filters=%7B%7D"),
    ("POST", "/v1.45/images/create?fromImage=docker.io%2Flibrary%2Fbusybox&tag=1.36"),
    ("GET", "/v1.45/images/json"), ("GET", "/v1.45/images/docker.io/library/busybox:1.36/json"),
    ("DELETE", "/v1.45/images/busybox:1.36?force=1"),
    ("GET", "/v1.45/containers/json?all=1"), ("GET", "/v1.45/containers/abc/json"),
    ("POST", "/v1.45/containers/abc/start"), ("POST", "/v1.45/containers/abc/wait?condition=next-exit"),
    ("POST", "/v1.45/containers/abc/attach?stream=1&stdout=1&stderr=1"),
    ("GET", "/v1.45/containers/abc/logs?stdout=1&follow=1"), ("POST", "/v1.45/containers/abc/stop?t=5"),
    ("POST", "/v1.45/containers/abc/kill?signal=KILL"), ("DELETE", "/v1.45/containers/abc?force=1"),
    ("POST", "/v1.45/containers/abc/resize?h=40&w=80"),
    ("POST", "/v1.45/exec/e1/start"), ("POST", "/v1.45/exec/e1/resize?h=1&w=1"), ("GET", "/v1.45/exec/e1/json"),
    ("GET", "/v1.45/networks"), ("GET", "/v1.45/networks/fn-net"), ("DELETE", "/v1.45/networks/fn-net"),
    ("GET", "/v1.45/volumes"), ("GET", "/v1.45/volumes/data"), ("DELETE", "/v1.45/volumes/data"),
]


@pytest.mark.parametrize("method, uri", ALLOWED_CALLS, ids=[f"{m} {u}" for m, u in ALLOWED_CALLS])
def test_what_a_functions_service_needs_is_allowed(method, uri):
    assert_allowed(envelope(method, uri))


REFUSED_CALLS = [
    ("POST", "/v1.45/build?t=x", "image builds are not allowed"),
    ("POST", "/session", "BuildKit sessions are not allowed"),
    ("POST", "/v1.45/swarm/init", "swarm is not allowed"),
    ("POST", "/v1.45/services/create", "swarm is not allowed"),
    ("GET", "/v1.45/secrets", "swarm is not allowed"),
    ("POST", "/v1.45/plugins/pull?remote=x", "plugins are not allowed"),
    ("POST", "/v1.45/images/load", "image load and save are not allowed"),
    ("GET", "/v1.45/images/get?names=x", "image load and save are not allowed"),
    ("POST", "/v1.45/images/create?fromSrc=-&repo=x", "import (fromSrc)"),
    ("POST", "/v1.45/images/create", "pull only"),
    ("POST", "/v1.45/commit?container=x", "commit is not allowed"),
    ("POST", "/v1.45/containers/abc/update", "container update is not allowed"),
    ("PUT", "/v1.45/containers/abc/archive?path=/", "copying files"),
    ("GET", "/v1.45/containers/abc/export", "copying files"),
    ("POST", "/v1.45/containers/abc/start?checkpoint=c1", "checkpoint"),
    ("POST", "/v1.45/containers/prune", "POST /containers/prune is not allowed on this endpoint"),
    ("POST", "/v1.45/auth", "POST /auth is not allowed"),
    ("GET", "/v1.45/system/df", "GET /system/df is not allowed"),
    ("post", "/v1.45/containers/create", "post /containers/create is not allowed"),
]


@pytest.mark.parametrize("method, uri, words", REFUSED_CALLS, ids=[f"{m} {u}" for m, u, _ in REFUSED_CALLS])
def test_everything_else_is_refused_by_name(method, uri, words):
    assert_refused(envelope(method, uri), words)


def test_start_with_a_host_config_body_is_refused():
    assert_allowed(envelope("POST", "/containers/abc/start", raw=b"{}"))
    assert_refused(envelope("POST", "/containers/abc/start", {"Privileged": True}), "takes no body")


# ---------------------------------------------------------------- exec

@pytest.mark.parametrize(
    "body, refused",
    [
        ({"Cmd": ["sh"], "AttachStdout": True}, None),
        ({"Cmd": ["sh"], "User": ""}, None),
        ({"Cmd": ["sh"], "Privileged": True}, "exec --privileged is not allowed"),
        ({"Cmd": ["sh"], "privileged": True}, "exec --privileged"),
        ({"Cmd": ["sh"], "User": "root"}, "exec --user root is not allowed"),
        ({"Cmd": ["sh"], "User": "0:0"}, "exec --user"),
        (None, "needs a JSON body"),
    ],
)
def test_exec_runs_unprivileged_as_the_containers_user(body, refused):
    assert_decision(envelope("POST", "/v1.45/containers/abc/exec", body), refused)


# ---------------------------------------------------------------- networks and volumes

@pytest.mark.parametrize(
    "body, refused",
    [
        ({"Name": "fn-net"}, None),
        ({"Name": "fn-net", "Driver": "bridge", "Internal": True, "Labels": {"a": "b"}}, None),
        ({"Name": "n", "Driver": "macvlan", "Options": {"parent": "eth0"}}, "network driver macvlan"),
        ({"Name": "n", "Driver": "host"}, "network driver host"),
        ({"Name": "n", "Options": {"com.docker.network.bridge.name": "eth0"}}, "network driver options"),
        ({"Name": "n", "IPAM": {"Config": [{"Subnet": "10.0.0.0/16"}]}}, "network IPAM settings"),
        ({"Name": "n", "Attachable": True}, "swarm networks"),
        ({"Name": "n", "Ingress": True}, "swarm networks"),
        ({"Name": "n", "ConfigFrom": {"Network": "x"}}, "swarm networks"),
        ({"Name": "n", "EnableIPv6": True}, "IPv6 container networks (--ipv6) are not allowed"),
        ({"Name": "n", "enableipv6": True}, "IPv6 container networks"),
        ({"Name": "n", "EnableIPv6": False}, None),
    ],
)
def test_network_create(body, refused):
    assert_decision(envelope("POST", "/v1.45/networks/create", body), refused)


def test_network_connect():
    assert_allowed(envelope("POST", "/v1.45/networks/fn-net/connect", {"Container": "abc"}))
    assert_refused(envelope("POST", "/v1.45/networks/host/connect", {"Container": "abc"}), "network host")
    assert_refused(
        envelope("POST", "/v1.45/networks/n/connect", {"Container": "a", "EndpointConfig": {"DriverOpts": {"x": "1"}}}),
        "driver options",
    )


@pytest.mark.parametrize(
    "body, refused",
    [
        ({"Name": "data", "Labels": {OWNER_LABEL: CONSUMER}}, None),
        ({"Name": "new", "Driver": "local", "Labels": {"fn": "1", OWNER_LABEL: CONSUMER}}, None),
        ({"Name": "d", "Driver": "local", "DriverOpts": {"type": "none", "o": "bind", "device": "/"}}, "o=bind"),
        ({"Name": "d", "DriverOpts": {"type": "nfs", "o": "addr=10.0.0.1"}}, "type=nfs"),
        ({"Name": "d", "Driver": "rexray"}, "volume driver rexray"),
        ({"Name": "d", "ClusterVolumeSpec": {"Group": "g"}}, "cluster volumes"),
    ],
)
def test_volume_create(body, refused):
    assert_decision(envelope("POST", "/v1.45/volumes/create", body), refused)


# ---------------------------------------------------------------- who is restricted

def test_the_local_socket_is_root_and_unrestricted():
    req = envelope("POST", "/v1.45/containers/create", create_body({"Privileged": True, "Runtime": "runc"}), user="")
    assert_allowed(req)
    assert_allowed(envelope("POST", "/v1.45/images/load", user=""))
    assert_allowed(envelope("POST", "/v1.45/containers/create", user=""), draining=True)


def test_every_certificate_gets_the_policy():
    for user in (CONSUMER, "verify dev-cloud-1", "anyone"):
        assert_refused(envelope("POST", "/v1.45/build", user=user), "image builds")



@pytest.mark.parametrize("serial", [1, 0x7F, 0x80, 0xDEADBEEF, 2**150 + 12345])
def test_certificate_serials_are_read_from_the_peer_certificate(serial):
    assert certificate_serial(_cert(serial)) == serial


def test_unreadable_peer_certificates_are_refused():
    req = envelope("GET", "/_ping")
    req["RequestPeerCertificates"] = [b64("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")]
    assert_refused(req, "could not be read")


def test_revocation_by_serial_and_by_name():
    config = load_config(
        {
            "sandboxRuntimes": ["runsc"],
            "limits": {"maxMemoryMiB": 2048, "maxPids": 512, "maxMilliCpus": 2000},
            "revokedSerials": ["0a:bc:de"],
            "revokedNames": ["verify old-host"],
        }
    )
    leaked = envelope("GET", "/_ping")
    leaked["RequestPeerCertificates"] = [_cert(0xABCDE)]
    assert_refused(leaked, "serial abcde is revoked", config)
    fresh = envelope("GET", "/_ping")
    fresh["RequestPeerCertificates"] = [_cert(0xABCDF)]
    assert_allowed(fresh, config)
    assert_refused(envelope("GET", "/_ping", user="verify old-host"), "'verify old-host' is revoked", config)
    assert_allowed(envelope("GET", "/_ping", user=""), config)


# ---------------------------------------------------------------- draining

def test_draining_refuses_creates_and_nothing_else():
    assert_refused(create(), "this host is draining", draining=True)
    for method, uri in ALLOWED_CALLS:
        assert_allowed(envelope(method, uri), draining=True)
    assert_allowed(envelope("POST", "/containers/abc/exec", {"Cmd": ["sh"]}), draining=True)


def test_a_rule_that_crashes_refuses():
    config = PolicyConfig(sandbox_runtimes=("runsc",), limits=None)  # type: ignore[arg-type]
    assert_refused(create(), "internal policy error", config)


def test_the_envelope_uses_dockerds_field_names():
    # moby's authorization.Request tags the URI `json:"RequestUri"`; a plugin
    # reading "RequestURI" would see none and refuse every restricted call.
    req = envelope("GET", "/_ping")
    assert "RequestUri" in req
    req["RequestURI"] = req.pop("RequestUri")
    assert_refused(req, "no method or URI")


def test_docker_pys_own_create_and_exec_bodies_pass_with_limits():
    """The bodies docker-py builds (every field it sends, nulls included)."""
    import docker

    host_config = docker.types.HostConfig(
        version="1.45", mem_limit="256m", pids_limit=128, nano_cpus=1_000_000_000, auto_remove=True,
        network_mode="bridge", tmpfs={"/tmp": "size=64m"}, cap_drop=["ALL"], security_opt=["no-new-privileges"],
    )
    config = docker.types.ContainerConfig(
        "1.45", "busybox", ["true"], hostname="fn", user="1000", environment={"A": "1"}, working_dir="/",
        labels={"fn": "1", OWNER_LABEL: CONSUMER}, host_config=host_config, stop_signal="SIGTERM",
    )
    assert_allowed(envelope("POST", "/v1.45/containers/create?name=fn-1", dict(config)))
    without = docker.types.ContainerConfig("1.45", "busybox", ["true"], host_config=docker.types.HostConfig(version="1.45"))
    assert_refused(envelope("POST", "/v1.45/containers/create", dict(without)), "--memory is required")
    privileged = docker.types.HostConfig(version="1.45", privileged=True, mem_limit="256m", pids_limit=1, nano_cpus=1)
    body = dict(docker.types.ContainerConfig("1.45", "busybox", ["true"], host_config=privileged))
    assert_refused(envelope("POST", "/v1.45/containers/create", body), "--privileged")
    # docker-py's exec_create body (docker/api/exec_api.py), Container included
    # (the hostlab found a policy that did not know that field).
    exec_body = {"Container": "abc", "User": "", "Privileged": False, "Tty": False, "AttachStdin": False,
                 "AttachStdout": True, "AttachStderr": True, "Cmd": ["true"], "Env": None}
    assert_allowed(envelope("POST", "/v1.45/containers/abc/exec", exec_body))
    assert_refused(envelope("POST", "/v1.45/containers/abc/exec", {**exec_body, "Privileged": True}), "exec --privileged")
