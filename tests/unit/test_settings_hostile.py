"""Hostile and careless settings (issue 12): each class refused by name, nothing leaks.

One test (or table) per class of the issue. Like test_settings.py these run
`parse_settings` directly, except class 4, which goes through `read_settings`
and the SDK's own config store, as the program does.
"""

from __future__ import annotations

import base64
import copy
import json
import struct
from pathlib import Path
from typing import Any

import pulumi
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from components.local_files import MAX_ARCHIVE_BYTES
from components.settings import (
    PROJECT_ROOT,
    SettingsError,
    _checked_private_key,
    internet_share,
    is_anywhere,
    parse_settings,
    read_settings,
)
from components.ssh_keys import MIN_RSA_BITS
from tests.support.archives import write_docker_archive
from tests.unit.test_settings import GOOD, HOST_KEY, problems_of, with_change

K = "functions-runtime:"


def refused(cfg: dict[str, Any], config_key: str) -> list[str]:
    """The problems naming `config_key` (at least one, or the test fails)."""
    problems = problems_of(cfg)
    named = [p for p in problems if p.startswith(K + config_key + ":")]
    assert named, (config_key, problems)
    return named


def with_local_dir(cfg: dict[str, Any], directory: Path) -> dict[str, Any]:
    cfg = copy.deepcopy(cfg)
    cfg.setdefault("artifacts", {})["localDirs"] = [str(directory)]
    return cfg


# ------------------------------------------------------------ 1. verify.imageArchive


@pytest.mark.parametrize("path", ["/proc/self/environ", "/etc/passwd", "/dev/null", "../../etc/hostname"])
def test_1_image_archive_outside_project_and_local_dirs_is_refused(path):
    (message,) = refused(with_change("verify", {"imageArchive": path}), "verify.imageArchive")
    assert "artifacts.localDirs" in message


def test_1_image_archive_symlink_out_of_the_project_is_refused(tmp_path):
    # A link inside an allowed directory that points at the process's environment.
    link = tmp_path / "image.tar"
    link.symlink_to("/proc/self/environ")
    (message,) = refused(with_local_dir(with_change("verify", {"imageArchive": str(link)}), tmp_path), "verify.imageArchive")
    assert "/proc/" in message and "outside" in message


def test_1_image_archive_must_be_a_docker_save_archive(tmp_path):
    not_tar = tmp_path / "notes.txt"
    not_tar.write_text("hello\n")
    cfg = with_local_dir(with_change("verify", {"imageArchive": str(not_tar)}), tmp_path)
    (message,) = refused(cfg, "verify.imageArchive")
    assert "docker save" in message


def test_1_image_archive_must_hold_the_image_id_named(tmp_path):
    archive = tmp_path / "image.tar"
    image_id = write_docker_archive(archive)
    good = with_local_dir(with_change("verify", {"imageArchive": str(archive), "image": image_id}), tmp_path)
    assert parse_settings(good, "test").verify.image_archive == archive.resolve()
    other = with_local_dir(with_change("verify", {"imageArchive": str(archive), "image": "sha256:" + "b" * 64}), tmp_path)
    (message,) = refused(other, "verify.imageArchive")
    assert image_id in message


def test_1_image_archive_has_a_size_limit(tmp_path):
    big = tmp_path / "big.tar"
    with big.open("wb") as f:
        f.truncate(MAX_ARCHIVE_BYTES + 1)  # sparse: no real disk use
    (message,) = refused(with_local_dir(with_change("verify", {"imageArchive": str(big)}), tmp_path), "verify.imageArchive")
    assert "limit" in message


@pytest.mark.parametrize("directory", ["/proc", "/proc/self", "/sys/kernel", "/dev", "/etc", "/etc/ssh", "/", "/tmp"])
def test_1_system_directories_are_never_local_artifact_dirs(directory):
    refused(with_change("artifacts", {"localDirs": [directory]}), "artifacts.localDirs[0]")


def test_1_a_home_directory_root_is_never_a_local_artifact_dir():
    (message,) = refused(with_change("artifacts", {"localDirs": [str(Path.home())]}), "artifacts.localDirs[0]")
    assert "home directory" in message
    refused(with_change("artifacts", {"localDirs": ["relative/dir"]}), "artifacts.localDirs[0]")


def test_1_a_credentials_directory_is_never_a_local_artifact_dir(tmp_path):
    ssh = tmp_path / "home" / ".ssh"
    ssh.mkdir(parents=True)
    (message,) = refused(with_change("artifacts", {"localDirs": [str(ssh)]}), "artifacts.localDirs[0]")
    assert ".ssh" in message and "credentials" in message


# ------------------------------------------------------------ 2. artifacts.mirror


@pytest.mark.parametrize(
    "url,words",
    [
        ("https://user:hunter2@mirror.example/kata", "credentials"),
        ("https://token@mirror.example/kata", "credentials"),
        ("https://mirror.example/kata?token=hunter2", "query string"),
        ("https://mirror.example/kata#hunter2", "query string"),
        ("https://mirror.example:99999/kata", "not a URL"),
    ],
)
def test_2_mirror_with_credentials_or_query_is_refused_without_echoing_it(url, words):
    (message,) = refused(with_change("artifacts", {"mirror": url}), "artifacts.mirror")
    assert words in message
    assert "hunter2" not in message and "token@" not in message


def test_2_a_plain_setting_stored_as_a_secret_is_refused(monkeypatch):
    cfg = {K + k: v if isinstance(v, str) else json.dumps(v) for k, v in GOOD.items()}
    cfg[K + "artifacts"] = json.dumps({"mirror": "https://mirror.example/kata"})
    problems = read_with_config(monkeypatch, cfg, secret=[K + "artifacts", K + "dedicatedSshKey"])
    (message,) = [p for p in problems if p.startswith(K + "artifacts:")]
    assert "stored as a secret" in message and "without --secret" in message
    assert not any(p.startswith(K + "dedicatedSshKey") for p in problems)


# ------------------------------------------------------------ 3. artifacts.catalog


def test_3_catalog_outside_project_and_local_dirs_is_refused(tmp_path):
    catalog = tmp_path / "artifacts.tsv"
    catalog.write_text((PROJECT_ROOT / "catalog" / "artifacts.tsv").read_text())
    (message,) = refused(with_change("artifacts", {"catalog": str(catalog)}), "artifacts.catalog")
    assert "artifacts.localDirs" in message
    # The same file is accepted once its directory is named for local artifacts.
    s = parse_settings(with_local_dir(with_change("artifacts", {"catalog": str(catalog)}), tmp_path), "test")
    assert s.artifacts.catalog.path == catalog.resolve()
    assert s.artifacts.local_dirs == (tmp_path.resolve(),)


@pytest.mark.parametrize("path", ["/etc/passwd", "/proc/self/environ", "../outside.tsv"])
def test_3_catalog_elsewhere_on_the_machine_is_refused(path):
    refused(with_change("artifacts", {"catalog": path}), "artifacts.catalog")


# ------------------------------------------------------------ 4. unknown keys, any config channel


def read_with_config(
    monkeypatch: pytest.MonkeyPatch, config: dict[str, str], secret: list[str] | None = None
) -> list[str]:
    """read_settings with config set through the SDK only; the problems it raises."""
    monkeypatch.delenv("PULUMI_CONFIG", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_SECRET_KEYS", raising=False)
    pulumi.runtime.set_all_config(config, secret or [K + "dedicatedSshKey"])
    try:
        with pytest.raises(SettingsError) as err:
            read_settings(stack="test")
    finally:
        pulumi.runtime.set_all_config({}, [])
    return err.value.problems


def test_4_unknown_key_is_refused_when_config_comes_through_the_sdk(monkeypatch):
    cfg = {K + k: v if isinstance(v, str) else json.dumps(v) for k, v in GOOD.items()}
    cfg[K + "endpiont"] = json.dumps({"port": 2377})
    problems = read_with_config(monkeypatch, cfg)
    assert [p for p in problems if p.startswith(K + "endpiont:")], problems


def test_4_unknown_key_in_the_cli_config_bag_is_still_refused(monkeypatch):
    cfg = {K + k: v if isinstance(v, str) else json.dumps(v) for k, v in GOOD.items()}
    bag = {**cfg, K + "endpiont": "{}"}
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(bag))
    pulumi.runtime.set_all_config({}, [K + "dedicatedSshKey"])
    try:
        with pytest.raises(SettingsError) as err:
            read_settings(stack="test")
    finally:
        pulumi.runtime.set_all_config({}, [])
    assert [p for p in err.value.problems if p.startswith(K + "endpiont:")], err.value.problems


def test_4_unknown_key_in_a_per_key_environment_variable_is_refused(monkeypatch):
    cfg = {K + k: v if isinstance(v, str) else json.dumps(v) for k, v in GOOD.items()}
    monkeypatch.setenv("PULUMI_CONFIG_FUNCTIONS_RUNTIME_ENDPIONT", "{}")
    problems = read_with_config(monkeypatch, cfg)
    (message,) = [p for p in problems if "$PULUMI_CONFIG_FUNCTIONS_RUNTIME_ENDPIONT" in p]
    assert message.startswith(K + "endpiont (from $PULUMI_CONFIG_FUNCTIONS_RUNTIME_ENDPIONT): unknown setting")


# ------------------------------------------------------------ 5. dedicated hosts


def metal(*machines: dict[str, Any], **group: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(GOOD)
    cfg["hosts"][1] = {"name": "metal", "source": "dedicated", "addresses": list(machines), **group}
    return cfg


def machine(address: str = "203.0.113.50", private: str = "10.0.1.50", name: str | None = None) -> dict[str, Any]:
    m = {"address": address, "privateAddress": private, "hostKey": HOST_KEY}
    return {**m, "name": name} if name else m


def test_5_the_same_machine_or_private_address_twice_is_refused():
    refused(metal(machine(), machine(private="10.0.1.51", name="metal-2")), "hosts[1]")
    refused(metal(machine(), machine(address="203.0.113.51", name="metal-2")), "hosts[1]")
    # One address behind two forwarded ports is two machines (two lab guests).
    cfg = copy.deepcopy(GOOD)
    cfg["hosts"][1] = {"name": "a", "source": "dedicated", "sshPort": 2222, "addresses": [machine("127.0.0.1")]}
    cfg["hosts"].append(
        {"name": "b", "source": "dedicated", "sshPort": 2223, "addresses": [machine("127.0.0.1", "10.0.1.51")]}
    )
    assert len(parse_settings(cfg, "test").dedicated_hosts) == 2


@pytest.mark.parametrize(
    "private,words",
    [("fd00::11", "IPv6"), ("203.0.113.9", "not a private address"), ("127.0.0.1", "not a private address")],
)
def test_5_private_address_must_be_private_ipv4(private, words):
    (message,) = refused(metal(machine(private=private)), "hosts[1].addresses[0].privateAddress")
    assert words in message


@pytest.mark.parametrize("address", ["-oProxyCommand=sh", "root@203.0.113.50", "203.0.113.50:22", "a b", "0.0.0.0", "x" * 300])
def test_5_address_must_be_an_ip_or_host_name(address):
    refused(metal(machine(address=address)), "hosts[1].addresses[0].address")


def test_5_host_names_and_ipv6_addresses_are_accepted():
    s = parse_settings(metal(machine("metal-1.example.com"), machine("2001:db8::50", "10.0.1.51", "metal-2")), "test")
    assert [h.address for h in s.dedicated_hosts] == ["metal-1.example.com", "2001:db8::50"]


@pytest.mark.parametrize("user", ["-oProxyCommand=sh", "Root", "a b", "ops;id", "x" * 40])
def test_5_ssh_user_must_be_a_user_name(user):
    refused(metal(machine(), sshUser=user), "hosts[1].sshUser")


def test_5_sshd_port_equal_to_the_endpoint_port_is_refused():
    (message,) = refused(metal(machine(), sshdPort=2376), "hosts[1].sshdPort")
    assert "endpoint.port" in message
    cfg = metal(machine(), sshPort=2377)
    cfg["endpoint"] = {"port": 2377}
    refused(cfg, "hosts[1].sshdPort")


# ------------------------------------------------------------ 7. anywhere, split


EIGHTHS = [f"{32 * i}.0.0.0/3" for i in range(8)]


@pytest.mark.parametrize(
    "cidrs",
    [
        EIGHTHS,  # the whole of IPv4 in eight pieces
        ["0.0.0.0/3", "32.0.0.0/3"],  # a quarter of the internet: the internet with gaps
        ["2000::/6", "2400::/6"],  # a quarter of IPv6 global unicast
        [*EIGHTHS[:4], "198.51.100.7/32", "2400::/6"],
    ],
)
def test_7_split_anywhere_is_refused_for_ssh_and_the_endpoint(cidrs):
    (message,) = refused(with_change("admin", {"sshSourceCidrs": cidrs}), "admin.sshSourceCidrs")
    assert "together" in message and "allowSshFromAnywhere" in message
    opted = with_change("endpoint", {"allowedCidrs": cidrs, "allowPublicSources": True})
    refused(opted, "endpoint.allowedCidrs")


def test_7_the_issues_halves_are_each_anywhere():
    problems = problems_of(with_change("admin", {"sshSourceCidrs": ["0.0.0.0/1", "128.0.0.0/1"]}))
    assert {p.split(":")[1] for p in problems} == {"admin.sshSourceCidrs[0]", "admin.sshSourceCidrs[1]"}
    refused(with_change("endpoint", {"allowedCidrs": ["::/1", "8000::/1"]}), "endpoint.allowedCidrs[0]")


def test_7_split_anywhere_passes_ssh_with_the_opt_in_but_never_the_endpoint():
    halves = ["0.0.0.0/1", "128.0.0.0/1"]
    cfg = with_change("admin", {"sshSourceCidrs": halves, "allowSshFromAnywhere": True})
    assert parse_settings(cfg, "test").admin.ssh_source_cidrs == tuple(halves)


def test_7_the_union_counts_overlaps_once_and_private_ranges_are_far_from_anywhere():
    import ipaddress

    nets = [ipaddress.ip_network(n) for n in ("0.0.0.0/2", "0.0.0.0/3", "10.0.0.0/8")]
    assert internet_share(nets) == 0.25
    private = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")]
    assert not is_anywhere(private)
    # Unique-local IPv6 is not the internet; 2000::/3 is.
    assert internet_share([ipaddress.ip_network("fc00::/7")]) == 0
    assert is_anywhere([ipaddress.ip_network("2000::/3")])


# ------------------------------------------------------------ 8. keys parsed for real


def openssh_line(kind: str, *fields: bytes, comment: str = "me@laptop") -> str:
    blob = b"".join(struct.pack(">I", len(f)) + f for f in (kind.encode(), *fields))
    return f"{kind} {base64.b64encode(blob).decode()} {comment}"


def public_line(key: Any) -> str:
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + " me"


def sk_ed25519() -> str:
    raw = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return openssh_line("sk-ssh-ed25519@openssh.com", raw, b"ssh:")


def sk_ecdsa() -> str:
    point = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return openssh_line("sk-ecdsa-sha2-nistp256@openssh.com", b"nistp256", point, b"ssh:")


def admin_keys(*keys: str) -> dict[str, Any]:
    return with_change("admin", {"sshSourceCidrs": ["198.51.100.7/32"], "sshKeys": list(keys)})


def test_8_fido_keys_are_accepted():
    s = parse_settings(admin_keys(sk_ed25519(), sk_ecdsa()), "test")
    assert len(s.admin.ssh_keys) == 2


@pytest.mark.parametrize(
    "make,words",
    [
        (lambda: "ssh-ed25519 " + base64.b64encode(b"not a key at all").decode() + " me", "not a valid key"),
        (lambda: "ssh-ed25519 AAAA", "not a valid key"),
        (lambda: public_line(rsa.generate_private_key(65537, 2048).public_key()), f"at least {MIN_RSA_BITS} bits"),
        (lambda: "ssh-dss AAAAB3NzaC1kc3MAAACBAP me", "not accepted"),
        (lambda: 'from="10.0.0.1" ' + HOST_KEY, "options"),
        (lambda: HOST_KEY + " me\nssh-ed25519 AAAA attacker", "line break"),
        (lambda: "-----BEGIN OPENSSH PRIVATE KEY-----", "private key"),
    ],
    ids=["body-not-a-key", "truncated", "rsa-2048", "dsa", "options", "newline", "private"],
)
def test_8_public_keys_that_are_not_keys_or_too_weak_are_refused(make, words):
    (message,) = refused(admin_keys(make()), "admin.sshKeys[0]")
    assert words in message


def test_8_rsa_of_the_minimum_size_is_accepted():
    key = rsa.generate_private_key(65537, MIN_RSA_BITS).public_key()
    assert parse_settings(admin_keys(public_line(key)), "test").admin.ssh_keys


def test_8_a_fido_key_is_not_a_host_key():
    cfg = metal({"address": "203.0.113.50", "privateAddress": "10.0.1.50", "hostKey": sk_ed25519()})
    refused(cfg, "hosts[1].addresses[0].hostKey")


def private_pem(key: Any, fmt: Any = serialization.PrivateFormat.OpenSSH, password: bytes | None = None) -> str:
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, fmt, enc).decode()


BODY_SECRET = "c2VjcmV0LWJvZHktdGhhdC1tdXN0LW5vdC1sZWFr"


@pytest.mark.parametrize(
    "value,words",
    [
        (HOST_KEY, "public key"),
        ("garbage", "not a private key"),
        (f"-----BEGIN OPENSSH PRIVATE KEY-----\n{BODY_SECRET}\n-----END OPENSSH PRIVATE KEY-----\n", "does not parse"),
        (
            private_pem(ed25519.Ed25519PrivateKey.generate(), serialization.PrivateFormat.PKCS8, b"pw"),
            "passphrase",
        ),
        (
            private_pem(rsa.generate_private_key(65537, 2048), serialization.PrivateFormat.TraditionalOpenSSL),
            f"at least {MIN_RSA_BITS} bits",
        ),
    ],
    ids=["public", "garbage", "altered", "encrypted", "rsa-2048"],
)
def test_8_dedicated_ssh_key_must_be_a_usable_private_key_and_is_never_echoed(value, words):
    (message,) = refused(with_change("dedicatedSshKey", value), "dedicatedSshKey")
    assert words in message
    assert BODY_SECRET not in message and "garbage" not in message and "AAAAC3" not in message


@pytest.mark.parametrize(
    "fmt", [serialization.PrivateFormat.OpenSSH, serialization.PrivateFormat.PKCS8], ids=["openssh", "pkcs8"]
)
def test_8_dedicated_ssh_key_formats_accepted(fmt):
    value = private_pem(ec.generate_private_key(ec.SECP256R1()), fmt)
    assert parse_settings(with_change("dedicatedSshKey", value), "test")


def test_8_the_apply_time_check_names_the_key_never_the_value():
    # When the key arrives as an Output (not through read_settings, which
    # checks the plain text at preview), parse_settings checks it inside
    # apply with this function.
    with pytest.raises(SettingsError) as err:
        _checked_private_key(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{BODY_SECRET}\n")
    assert err.value.problems[0].startswith(K + "dedicatedSshKey:")
    assert BODY_SECRET not in str(err.value)
    good = private_pem(ed25519.Ed25519PrivateKey.generate())
    assert _checked_private_key(good) == good


@pulumi.runtime.test
def test_8_a_dedicated_ssh_key_output_stays_secret_through_the_check():
    good = private_pem(ed25519.Ed25519PrivateKey.generate())
    s = parse_settings(with_change("dedicatedSshKey", pulumi.Output.secret(good)), "test")
    assert s.dedicated_ssh_key is not None

    async def check() -> None:
        assert await s.dedicated_ssh_key.is_secret()  # type: ignore[union-attr]
        assert await s.dedicated_ssh_key.future() == good  # type: ignore[union-attr]

    return pulumi.Output.from_input(check())


# ------------------------------------------------------------ 10. verify.image


@pytest.mark.parametrize(
    "image",
    [
        "--privileged@sha256:" + "a" * 64,
        "-v /:/host busybox@sha256:" + "a" * 64,
        "Busybox@sha256:" + "a" * 64,
        "busybox@sha256:" + "A" * 64,
        "busybox:@sha256:" + "a" * 64,
    ],
)
def test_10_verify_image_must_be_an_image_reference(image):
    refused(with_change("verify", {"image": image}), "verify.image")


@pytest.mark.parametrize(
    "image",
    [
        "busybox@sha256:" + "a" * 64,
        "docker.io/library/busybox:1.36@sha256:" + "a" * 64,
        "registry.example:5000/team/verify-image@sha256:" + "a" * 64,
    ],
)
def test_10_pinned_references_are_accepted(image):
    assert parse_settings(with_change("verify", {"image": image}), "test").verify.image == image


# ------------------------------------------------------------ 11. odd integers


@pytest.mark.parametrize("value", ["²", "--1", "1_000", "٣", "9" * 5000, " ", "1.5", 2.0])
def test_11_odd_integers_are_refused_by_name_not_crashed_on(value):
    refused(with_change("verify", {"coldStartRuns": value}), "verify.coldStartRuns")
    refused(with_change("hosts.0.count", value), "hosts[0].count")


# ------------------------------------------------------------ all at once, in preview, nothing registered


def test_every_class_at_once_is_refused_in_preview_with_nothing_registered(tmp_path):
    from tests.support.program import Registration, config_from_stack_file, run_program

    cfg = config_from_stack_file(PROJECT_ROOT / "Pulumi.dev.yaml")
    cfg[K + "verify"] = {"imageArchive": "/proc/self/environ", "image": "--privileged@sha256:" + "a" * 64}  # 1, 10
    cfg[K + "artifacts"] = {"mirror": "https://u:hunter2@mirror.example/x", "catalog": "/etc/passwd"}  # 2, 3
    cfg[K + "endpiont"] = {"port": 2377}  # 4
    cfg[K + "hosts"] = [
        *cfg[K + "hosts"],
        {"name": "metal", "source": "dedicated", "sshdPort": 2376,  # 5
         "addresses": [machine(private="fd00::11")]},  # 5
    ]
    cfg[K + "dedicatedSshKey"] = HOST_KEY  # 8
    cfg[K + "admin"] = {"sshSourceCidrs": EIGHTHS, "sshKeys": ["ssh-ed25519 AAAA"]}  # 7, 8
    recorded: list[Registration] = []
    with pytest.raises(SettingsError) as err:
        run_program(cfg, stack="dev", preview=True, registrations=recorded)
    keys = {p.split(": ")[0] for p in err.value.problems}
    assert {
        K + "verify.imageArchive", K + "verify.image", K + "artifacts.mirror", K + "artifacts.catalog",
        K + "endpiont", K + "hosts[1].sshdPort", K + "hosts[1].addresses[0].privateAddress",
        K + "dedicatedSshKey", K + "admin.sshSourceCidrs", K + "admin.sshKeys[0]",
    } <= keys, keys
    assert recorded == [], [r.name for r in recorded]
    assert "hunter2" not in str(err.value) and "AAAAC3" not in str(err.value)
