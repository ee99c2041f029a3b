"""scripts/bootstrap_base.sh with modprobe, sshd and systemctl stubbed as
shell functions (no root-level side effects).

Proves: comment lines in base/*.conf are ignored; a kernel module that does
not exist is a warning and is reported in missingModules, not a failure; the
sshd drop-in is written and sshd reloaded only when it changed, and a drop-in
that `sshd -t` rejects is rolled back before any reload.
Does not prove: apt-get installs (packages used here are already installed on
this machine) or real sshd behaviour; the hostlab runs the script for real.
"""

from __future__ import annotations

import json

import pytest

from tests.scripts.helpers import run_bash


@pytest.fixture
def env(fr_env, tmp_path):
    base = tmp_path / "fr" / "base"
    base.mkdir(parents=True)
    (base / "packages.txt").write_text("bash\n# a comment\ncoreutils\n")
    (base / "modules.conf").write_text("# Managed by functions-runtime\nvhost_vsock\nvhost_net\n")
    (base / "sshd.conf").write_text("# Managed\nPasswordAuthentication no\n")
    (base / "apt-update-stamp.conf").write_text('APT::Update::Post-Invoke-Success { "true"; };\n')
    return {
        **fr_env,
        "FR_APT_HOOK": str(tmp_path / "apt.conf.d" / "50functions-runtime-update-stamp"),
        "FR_MODULES_LOAD": str(tmp_path / "modules-load.conf"),
        "FR_SSHD_DROP_IN": str(tmp_path / "sshd.d" / "50-functions-runtime.conf"),
        # The stub sshd writes no journal: don't wait the real 30 s for it.
        "FR_SSHD_RELOAD_WAIT_S": "1",
        "STUB_LOG": str(tmp_path / "stub.log"),
    }


STUBS = (
    'module_loaded() { return 1; }; modprobe() { [[ "$1" == vhost_net ]]; }; '
    'systemctl() { echo "systemctl $*" >>"$STUB_LOG"; }; sshd() { [[ -z "${SSHD_BAD:-}" ]]; }; require_root() { :; }; '
)


def test_missing_module_is_a_warning_and_second_run_changes_nothing(env, tmp_path):
    first = run_bash(STUBS + "main", env, script="bootstrap_base.sh")
    assert first.rc == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["missingModules"] == ["vhost_vsock"] and out["installedPackages"] == []
    assert "WARNING: kernel module vhost_vsock is not available" in first.stderr
    # Byte for byte the rendered file, as cloud-init writes it too.
    assert (tmp_path / "modules-load.conf").read_text() == "# Managed by functions-runtime\nvhost_vsock\nvhost_net\n"
    assert (tmp_path / "stub.log").read_text() == "systemctl reload ssh\n"
    hook = tmp_path / "apt.conf.d" / "50functions-runtime-update-stamp"
    assert hook.read_text() == (tmp_path / "fr" / "base" / "apt-update-stamp.conf").read_text()
    assert str(hook) in out["changed"]

    second = run_bash(STUBS + "main", env, script="bootstrap_base.sh")
    assert second.rc == 0
    assert json.loads(second.stdout)["changed"] == ["module:vhost_net"]  # stub never reports it loaded
    assert (tmp_path / "stub.log").read_text() == "systemctl reload ssh\n", "no second reload"
    assert "sshd drop-in already current, skipping" in second.stderr


def test_rejected_sshd_config_is_rolled_back(env, tmp_path):
    drop_in = tmp_path / "sshd.d" / "50-functions-runtime.conf"
    drop_in.parent.mkdir()
    drop_in.write_text("PasswordAuthentication no\n")
    r = run_bash(STUBS + "configure_sshd", {**env, "SSHD_BAD": "1"}, script="bootstrap_base.sh")
    assert r.rc != 0 and "sshd -t" in r.stderr and "test-host-1" in r.stderr
    assert drop_in.read_text() == "PasswordAuthentication no\n"
    assert not (tmp_path / "stub.log").exists()
