"""scripts/lib.sh, run for real in bash with paths in a temporary directory.

Proves: catalog lookup (including the error for a missing row), digests
that say their algorithm (sha256 and sha512; an unknown algorithm or a
wrong length is one line naming the row), file checking per algorithm (good
and bad, the message names expected and found digests), mirror
URL construction, JSON helpers emit valid JSON for awkward strings,
write_file_if_changed reports change/no change, the KVM decision (device and
CPU flags) and the Kata plan per isolation, PEM splitting from stdin.
Does not prove: anything about a real /dev/kvm or real Kata; /dev/null stands
in for a usable KVM device. That is the hostlab's and a dedicated host's job.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.scripts.helpers import install_fake_kata, kvm_env, run_bash, sha256, sha512, write_catalog

KATA_URL = "https://github.com/kata-containers/kata-containers/releases/download/3.32.0/kata-static-3.32.0-amd64.tar.zst"
KATA_SHA = "1449ecea50bd91fa73a94648db195d18950fe869ba4b1f12d05f55f1fa7c1b01"
KATA_DIGEST = f"sha256:{KATA_SHA}"


@pytest.fixture
def env(fr_env, tmp_path):
    write_catalog(tmp_path / "fr", [("kata", "3.32.0", KATA_DIGEST, KATA_URL)])
    return fr_env


@pytest.mark.parametrize(
    ("field", "expected"),
    [("version", "3.32.0"), ("digest", KATA_DIGEST), ("url", KATA_URL)],
)
def test_catalog_field(env, field, expected):
    r = run_bash(f"catalog_field kata {field}", env)
    assert r.rc == 0, r.stderr
    assert r.stdout.strip() == expected


def test_catalog_field_missing_row_is_one_line_naming_host(env):
    r = run_bash("catalog_field nope version", env)
    assert r.rc != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "test-host-1" in lines[0] and "'nope'" in lines[0] and "to fix:" in lines[0]


@pytest.mark.parametrize(
    ("mirror", "expected"),
    [
        ("", KATA_URL),
        ("http://10.0.2.2:8080", "http://10.0.2.2:8080/kata-static-3.32.0-amd64.tar.zst"),
        ("http://10.0.2.2:8080/base/", "http://10.0.2.2:8080/base/kata-static-3.32.0-amd64.tar.zst"),
    ],
)
def test_artifact_url_uses_mirror_by_file_name(env, mirror, expected):
    r = run_bash("artifact_url kata", {**env, "ARTIFACT_MIRROR": mirror})
    assert r.stdout.strip() == expected


@pytest.mark.parametrize(("algorithm", "hexdigest"), [("sha256", sha256), ("sha512", sha512)])
def test_verify_digest_good_and_bad_for_each_algorithm(env, tmp_path, algorithm, hexdigest):
    f = tmp_path / "blob"
    f.write_bytes(b"hello")
    good = hexdigest(b"hello")
    assert run_bash(f'verify_digest "{f}" {algorithm} {good} blob', env).rc == 0
    bad = "0" * len(good)
    r = run_bash(f'verify_digest "{f}" {algorithm} {bad} "artifact blob"', env)
    assert r.rc != 0
    assert f"with {algorithm} {bad}" in r.stderr and f"found {algorithm} {good}" in r.stderr
    assert "artifact blob" in r.stderr


@pytest.mark.parametrize(
    ("digest", "printed"),
    [
        (KATA_DIGEST, f"sha256 {KATA_SHA}"),
        ("sha512:" + "ab" * 64, "sha512 " + "ab" * 64),
    ],
)
def test_catalog_digest_gives_algorithm_and_hex(fr_env, tmp_path, digest, printed):
    write_catalog(tmp_path / "fr", [("kata", "3.32.0", digest, KATA_URL)])
    r = run_bash("catalog_digest kata", fr_env)
    assert r.rc == 0, r.stderr
    assert r.stdout.strip() == printed


@pytest.mark.parametrize(
    ("digest", "words"),
    [
        ("md5:" + "a" * 32, "the algorithm one of: sha256 sha512"),
        (KATA_SHA, "as <algorithm>:<hex>"),  # the old column: a bare hex
        ("sha256:" + "a" * 128, "a sha256 digest of 64 lowercase hex digits"),
        ("sha512:" + "a" * 64, "a sha512 digest of 128 lowercase hex digits"),
        ("sha256:" + "A" * 64, "a sha256 digest of 64 lowercase hex digits"),
    ],
)
def test_a_bad_catalog_digest_is_one_line_naming_the_row(fr_env, tmp_path, digest, words):
    write_catalog(tmp_path / "fr", [("kata", "3.32.0", digest, KATA_URL)])
    r = run_bash("catalog_digest kata", fr_env)
    assert r.rc != 0 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "test-host-1" in lines[0] and "catalog row 'kata'" in lines[0] and words in lines[0]


def test_json_helpers_escape_awkward_strings(env):
    r = run_bash(
        """printf '{"a": %s, "b": %s, "n": %s, "e": %s}' "$(json_string $'q"uote\\\\back\\nnew\\ttab\\x01')" \
        "$(json_array x 'y z' '"')" "$(json_string_or_null '')" "$(json_array)" """,
        env,
    )
    doc = json.loads(r.stdout)
    assert doc == {"a": 'q"uote\\back\nnew\ttab', "b": ["x", "y z", '"'], "n": None, "e": []}


def test_write_file_if_changed(env, tmp_path):
    target = tmp_path / "etc" / "x.conf"
    snippet = (
        f'if printf "%s" "$1" | write_file_if_changed "{target}" 0640; then echo changed; else echo same; fi'
    )
    outs = [
        run_bash(snippet.replace("$1", "one"), env).stdout.strip(),
        run_bash(snippet.replace("$1", "one"), env).stdout.strip(),
        run_bash(snippet.replace("$1", "two"), env).stdout.strip(),
    ]
    assert outs == ["changed", "same", "changed"]
    assert target.read_text() == "two"
    assert oct(os.stat(target).st_mode & 0o777) == "0o640"
    os.chmod(target, 0o644)  # a mode drift alone counts as a change and is repaired
    assert run_bash(snippet.replace("$1", "two"), env).stdout.strip() == "changed"
    assert oct(os.stat(target).st_mode & 0o777) == "0o640"


@pytest.mark.parametrize(
    ("device", "flags", "expected"),
    [
        ("/dev/null", "vmx", "yes"),
        ("/dev/null", "svm", "yes"),
        ("/dev/null", "sse2 hypervisor", "no"),  # paravirtual /dev/kvm without vmx/svm
        ("MISSING", "vmx", "no"),  # Hetzner Cloud: no /dev/kvm at all
        ("REGULAR", "vmx", "no"),  # not a character device
    ],
)
def test_has_kvm(env, tmp_path, device, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"flags\t\t: fpu {flags}\n")
    if device == "MISSING":
        device = str(tmp_path / "nope")
    elif device == "REGULAR":
        (tmp_path / "regular").write_text("")
        device = str(tmp_path / "regular")
    r = run_bash(
        "if has_kvm; then echo yes; else echo no; fi",
        {**env, "FR_DEV_KVM": device, "FR_CPUINFO": str(cpuinfo)},
    )
    assert r.stdout.strip() == expected


@pytest.mark.parametrize(
    ("isolation", "kvm", "expected"),
    [
        ("vm", True, ["kata"]),
        ("sandbox", True, ["kata", "runsc"]),
        ("sandbox", False, ["runsc"]),
        # Wanted all the same: the install step then fails with the reason.
        ("vm", False, ["kata"]),
    ],
)
def test_wanted_runtimes_before_install_asks_kvm_only(env, tmp_path, isolation, kvm, expected):
    r = run_bash(
        'wanted_runtimes_before_install; echo "${WANTED_RUNTIMES[@]}"',
        {**env, **kvm_env(tmp_path, kvm), "ISOLATION": isolation},
    )
    assert r.rc == 0, r.stderr
    assert r.stdout.split() == expected


@pytest.mark.parametrize(("isolation", "kvm", "rc"), [("vm", True, 0), ("sandbox", False, 0), ("vm", False, 1)])
def test_install_fails_a_vm_stack_without_kvm_before_any_download(env, tmp_path, isolation, kvm, rc):
    r = run_bash(
        "require_kvm_if_kata_wanted",
        {**env, **kvm_env(tmp_path, kvm), "ISOLATION": isolation},
        script="install_runtime.sh",
    )
    assert r.rc == rc, r.stderr
    if rc:
        line = r.stderr.strip()
        assert "test-host-1" in line
        assert "Hetzner Cloud servers have no nested virtualization" in line
        assert "dedicated (Robot) server" in line and "functions-runtime:isolation to sandbox" in line


@pytest.mark.parametrize(
    ("isolation", "kvm", "kata_installed", "expected"),
    [
        ("sandbox", False, False, ["runsc"]),
        ("sandbox", True, False, ["runsc"]),
        ("sandbox", True, True, ["kata", "runsc"]),
        ("sandbox", False, True, ["runsc"]),
        ("vm", True, True, ["kata"]),
    ],
)
def test_configure_registers_the_wanted_runtimes(env, tmp_path, isolation, kvm, kata_installed, expected):
    if kata_installed:
        install_fake_kata(tmp_path)
    r = run_bash(
        'choose_runtimes; echo "${RUNTIMES[@]}"',
        {**env, **kvm_env(tmp_path, kvm), "ISOLATION": isolation},
        script="configure_runtime.sh",
    )
    assert r.rc == 0, r.stderr
    assert r.stdout.split() == expected


def test_kata_failing_its_check_falls_back_to_runsc_with_the_reason(env, tmp_path):
    kata = install_fake_kata(tmp_path, failing=("qemu",))
    r = run_bash(
        'choose_runtimes; echo "${RUNTIMES[@]}"',
        {**env, **kvm_env(tmp_path, True), "ISOLATION": "sandbox"},
        script="configure_runtime.sh",
    )
    assert r.rc == 0, r.stderr
    assert r.stdout.split() == ["runsc"]
    assert (
        f"Kata not registered: 'kata-runtime check' failed with the qemu configuration {kata.config('qemu')}: "
        "ERROR: kvm is not usable (nested)"
    ) in r.stderr


def test_kata_failing_its_check_fails_isolation_vm_with_the_checks_message(env, tmp_path):
    install_fake_kata(tmp_path, failing=("qemu",))
    r = run_bash("choose_runtimes", {**env, **kvm_env(tmp_path, True), "ISOLATION": "vm"}, script="configure_runtime.sh")
    assert r.rc != 0
    line = r.stderr.strip().splitlines()[-1]
    assert "FAILED on host test-host-1" in line
    assert "'kata-runtime check' failed with the qemu configuration" in line
    assert "ERROR: kvm is not usable (nested)" in line
    assert "functions-runtime:isolation to sandbox" in line


def test_dpkg_recovery_runs_only_after_an_interrupted_run(env, tmp_path):
    updates = tmp_path / "dpkg-updates"
    updates.mkdir()
    dry = {**env, "FR_DPKG_UPDATES": str(updates), "FR_DRY_RUN": "1"}
    r = run_bash("recover_interrupted_dpkg && echo recovered || echo clean", dry)
    assert r.stdout.strip() == "clean", r.stderr
    (updates / "0001").write_text("")
    r = run_bash("recover_interrupted_dpkg && echo recovered || echo clean", dry)
    assert r.stdout.strip() == "recovered", r.stderr
    assert "dry-run: would run: env DEBIAN_FRONTEND=noninteractive dpkg" in r.stderr
    assert "--configure -a" in r.stderr


def test_configure_fails_a_vm_stack_without_kvm(env, tmp_path):
    r = run_bash("choose_runtimes", {**env, "ISOLATION": "vm"}, script="configure_runtime.sh")
    assert r.rc != 0 and "no nested virtualization" in r.stderr


PEM = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nSECRETSECRET\n-----END PRIVATE KEY-----\n"


def test_read_pem_blocks_splits_in_order_and_never_prints(env, tmp_path):
    d = tmp_path / "pem"
    r = run_bash(
        f'read_pem_blocks "{d}" ca.pem cert.pem key.pem && require_pem_kinds "{d}" ca.pem:certificate cert.pem:certificate key.pem:private-key',
        env,
        stdin=PEM + PEM.replace("AAAA", "BBBB") + KEY,
    )
    assert r.rc == 0, r.stderr
    assert (d / "cert.pem").read_text() == PEM.replace("AAAA", "BBBB")
    assert (d / "key.pem").read_text() == KEY
    assert oct(os.stat(d / "key.pem").st_mode & 0o777) == "0o600"
    assert "SECRET" not in r.stdout + r.stderr


@pytest.mark.parametrize(
    ("stdin", "needle"),
    [
        (PEM + PEM, "2 block(s)"),
        (PEM + PEM + KEY.rsplit("-----END", 1)[0], "unterminated"),
        ("", "0 block(s)"),
    ],
)
def test_read_pem_blocks_rejects_wrong_count(env, tmp_path, stdin, needle):
    r = run_bash(f'read_pem_blocks "{tmp_path}/pem" ca.pem cert.pem key.pem', env, stdin=stdin)
    assert r.rc != 0 and needle in r.stderr
    assert "SECRET" not in r.stderr


def test_require_pem_kinds_rejects_wrong_order(env, tmp_path):
    d = tmp_path / "pem"
    r = run_bash(
        f'read_pem_blocks "{d}" ca.pem cert.pem key.pem && require_pem_kinds "{d}" ca.pem:certificate cert.pem:certificate key.pem:private-key',
        env,
        stdin=PEM + KEY + PEM,
    )
    assert r.rc != 0 and "'cert.pem' to be a certificate" in r.stderr


def work_dirs(env: dict[str, str]) -> list[str]:
    base = env["FR_WORK_BASE"]
    return sorted(n for n in os.listdir(base) if n.startswith("functions-runtime.")) if os.path.isdir(base) else []


def test_work_dir_is_removed_when_the_script_exits(env, tmp_path):
    env = {**env, "FR_WORK_BASE": str(tmp_path / "work-base")}
    r = run_bash('make_work_dir w; touch "$w/file"; [[ -d "$w" ]] && echo made', env)
    assert r.rc == 0 and r.stdout.strip() == "made", r.stderr
    assert work_dirs(env) == []


def test_work_dir_made_inside_command_substitution_is_refused_and_leaves_nothing(env, tmp_path):
    """A $(...) subshell never runs the EXIT trap: the directory would leak (the hostlab found one)."""
    env = {**env, "FR_WORK_BASE": str(tmp_path / "work-base")}
    r = run_bash('out=$(make_work_dir w; echo "$w") || exit 3; echo "leaked $out"', env)
    assert r.rc == 3, (r.stdout, r.stderr)
    assert "make_work_dir in a subshell" in r.stderr and "to fix:" in r.stderr
    assert "leaked" not in r.stdout
    assert work_dirs(env) == []
