"""scripts/seal_image.sh, a golden-image builder's last step: the disk is
made safe to clone. No SSH host key, machine ID, Docker engine ID,
cloud-init state or builder access is left, nor the logs and temporary
files of the builder's life; what install put there (files and markers)
stays, so install on a clone downloads nothing.

Paths point into tmp_path (every one the script names: the test refuses to
run otherwise); `systemctl`, `cloud-init`, `journalctl` and `systemd-run`
are recording stand-ins on PATH. So this proves what the step removes,
keeps and asks of those tools, not that a clone of the snapshot boots with
new identities (an acceptance run on Hetzner would).
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.scripts.helpers import paths_left_on_the_host, run_script

FAKE_SYSTEMCTL = """#!/bin/sh
printf '%s\\n' "$*" >>"$TOOL_LOG"
for last; do :; done
case "$1" in
  is-active) grep -qxF "$last" "$SYSTEMCTL_ACTIVE" ;;
  stop) shift; for u; do grep -vxF "$u" "$SYSTEMCTL_ACTIVE" >"$SYSTEMCTL_ACTIVE.new" || true; mv "$SYSTEMCTL_ACTIVE.new" "$SYSTEMCTL_ACTIVE"; done ;;
  *) exit 0 ;;
esac
"""
FAKE_CLOUD_INIT = """#!/bin/sh
printf 'cloud-init %s\\n' "$*" >>"$TOOL_LOG"
"""
RECORDER = """#!/bin/sh
printf '%s %s\\n' "$(basename "$0")" "$*" >>"$TOOL_LOG"
"""


class Builder:
    """A builder's disk after install, under tmp_path."""

    def __init__(self, fr_env: dict[str, str], tmp: Path):
        self.tmp = tmp
        bin_dir = tmp / "fake-bin"
        bin_dir.mkdir()
        tools = {
            "systemctl": FAKE_SYSTEMCTL,
            "cloud-init": FAKE_CLOUD_INIT,
            "journalctl": RECORDER,
            "systemd-run": RECORDER,
        }
        for name, text in tools.items():
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(0o755)
        (tmp / "systemctl-active").write_text("docker.service\ndocker.socket\ncontainerd.service\n")
        self.env = {
            **fr_env,
            # No /usr/local/bin; the stand-ins come before this machine's own tools.
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "TOOL_LOG": str(tmp / "tools.log"),
            "SYSTEMCTL_ACTIVE": str(tmp / "systemctl-active"),
            "FR_MACHINE_ID": str(tmp / "etc" / "machine-id"),
            "FR_DBUS_MACHINE_ID": str(tmp / "var-lib-dbus" / "machine-id"),
            "FR_SSH_HOST_KEY_DIR": str(tmp / "etc-ssh"),
            "FR_SSH_KEYS_DIR": str(tmp / "etc-ssh" / "functions-runtime-keys"),
            "FR_DOCKER_ENGINE_ID": str(tmp / "var-lib-docker" / "engine-id"),
            "FR_ROOT_AUTHORIZED_KEYS": str(tmp / "root" / ".ssh" / "authorized_keys"),
            "FR_ROOT_BASH_HISTORY": str(tmp / "root" / ".bash_history"),
            "FR_LOG_DIR": str(tmp / "var-log"),
            "FR_TMP_DIR": str(tmp / "tmp"),
            "FR_AUTHZ_CONFIG": str(tmp / "etc-fr" / "endpoint-policy.json"),
        }
        assert not paths_left_on_the_host("seal_image.sh", self.env)
        state = Path(fr_env["FR_ROOT"]) / "state"
        self.kept = {
            state / "kata.version": "3.32.0 sha256:ab\n",
            state / "gvisor.version": "20260907.0 sha256:ef\n",
            Path(fr_env["FR_BIN_DIR"]) / "nerdctl": "installed\n",
            Path(fr_env["FR_KATA_DIR"]) / "bin" / "containerd-shim-kata-v2": "installed\n",
            tmp / "etc-ssh" / "sshd_config": "Include /etc/ssh/sshd_config.d/*.conf\n",
            tmp / "root" / ".ssh" / "config": "Host *\n",
        }
        self.gone = {
            tmp / "var-lib-docker" / "engine-id": "0f1e2d3c\n",
            tmp / "var-lib-dbus" / "machine-id": "5c5d0c2bd1a34f0c9a0f7f5e4f6a3b21\n",
            tmp / "etc-ssh" / "ssh_host_ed25519_key": "PRIVATE\n",
            tmp / "etc-ssh" / "ssh_host_ed25519_key.pub": "ssh-ed25519 AAAA builder\n",
            tmp / "etc-ssh" / "ssh_host_rsa_key": "PRIVATE\n",
            tmp / "etc-ssh" / "functions-runtime-keys" / "root": "ssh-ed25519 AAAA program\n",
            tmp / "root" / ".ssh" / "authorized_keys": "ssh-ed25519 AAAA builder-access\n",
            tmp / "root" / ".bash_history": "apt-get install\n",
            tmp / "var-log" / "syslog.1": "old\n",
            tmp / "var-log" / "apt" / "history.log.2.gz": "old\n",
            tmp / "tmp" / "scratch" / "file": "x\n",
            tmp / "tmp" / ".hidden": "x\n",
            Path(fr_env["FR_WORK_BASE"]) / "functions-runtime.a1b2c3" / "kata.tar.zst": "half a download\n",
        }
        self.truncated = {
            tmp / "var-log" / "syslog": "the builder's boot\n",
            tmp / "var-log" / "apt" / "term.log": "Setting up docker.io\n",
            tmp / "var-log" / "cloud-init-output.log": "builder's user-data\n",
        }
        self.journal = tmp / "var-log" / "journal" / "abc" / "system.journal"
        files = {**self.kept, **self.gone, **self.truncated, self.journal: "journald's own\n",
                 tmp / "etc" / "machine-id": "5c5d0c2bd1a34f0c9a0f7f5e4f6a3b21\n"}
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def seal(self, *args: str, rc: int = 0):
        r = run_script("seal_image.sh", self.env, args=list(args))
        assert r.rc == rc, r.stderr
        return (json.loads(r.stdout) if rc == 0 else None), r.stderr

    @property
    def tool_calls(self) -> list[str]:
        log = self.tmp / "tools.log"
        return log.read_text().splitlines() if log.exists() else []


def test_sealed_disk_keeps_no_host_keys_machine_id_or_builder_access(fr_env, tmp_path):
    builder = Builder(fr_env, tmp_path)
    result, _ = builder.seal()
    assert result["sealed"] is True and result["powerOff"] is False
    for path in builder.gone:
        assert not path.exists(), path
    # Empty, not "uninitialized": a new ID at boot without first-boot presets (machine-id(5)).
    assert (tmp_path / "etc" / "machine-id").read_text() == ""
    assert result["machineId"] == "empty" and result["cloudInit"] == "cleaned"
    assert not (tmp_path / "var-lib-dbus" / "machine-id").exists()
    assert not list((tmp_path / "etc-ssh").glob("ssh_host_*"))
    assert not (tmp_path / "etc-ssh" / "functions-runtime-keys").exists()
    assert not list((tmp_path / "tmp").iterdir())
    # The result names what went.
    assert str(tmp_path / "etc-ssh" / "ssh_host_ed25519_key") in result["removed"]
    assert str(tmp_path / "root" / ".ssh" / "authorized_keys") in result["removed"]
    assert str(tmp_path / "var-lib-docker" / "engine-id") in result["removed"]


def test_the_runtime_is_stopped_and_cloud_init_and_the_journal_are_cleaned(fr_env, tmp_path):
    builder = Builder(fr_env, tmp_path)
    result, _ = builder.seal()
    calls = builder.tool_calls
    # One call: the socket and the service it starts stop together.
    assert "stop docker.socket docker.service containerd.service" in calls
    assert sorted(result["stopped"]) == ["containerd.service", "docker.service", "docker.socket"]
    assert "cloud-init clean --logs" in calls
    assert not any("--machine-id" in c for c in calls), "an uninitialized ID would apply first-boot presets"
    assert calls.index("journalctl --rotate") < calls.index("journalctl --vacuum-time=1s")
    # Without --power-off no poweroff is scheduled.
    assert not any(c.startswith("systemd-run") for c in calls)


def test_install_markers_and_installed_files_survive_the_seal(fr_env, tmp_path):
    builder = Builder(fr_env, tmp_path)
    builder.seal()
    for path, text in builder.kept.items():
        assert path.read_text() == text, path


def test_logs_are_emptied_in_place_and_rotated_ones_removed(fr_env, tmp_path):
    builder = Builder(fr_env, tmp_path)
    result, _ = builder.seal()
    for path in builder.truncated:
        assert path.exists() and path.stat().st_size == 0, path
    assert result["truncatedLogs"] == len(builder.truncated)
    # The journal's files are journald's: rotated and vacuumed, never truncated under it.
    assert builder.journal.read_text() == "journald's own\n"


def test_power_off_is_scheduled_seconds_later_so_the_step_returns_first(fr_env, tmp_path):
    builder = Builder(fr_env, tmp_path)
    result, _ = builder.seal("--power-off")
    assert result["powerOff"] is True
    assert "systemd-run --on-active=5 systemctl poweroff" in builder.tool_calls
    # Scheduled last, once the disk is synced and sealed.
    assert builder.tool_calls[-1].startswith("systemd-run")


def test_sealing_again_removes_nothing_more(fr_env, tmp_path):
    builder = Builder(fr_env, tmp_path)
    builder.seal()
    again, _ = builder.seal()
    assert again["removed"] == [] and again["stopped"] == [] and again["truncatedLogs"] == 0
    assert again["machineId"] == "empty"


def test_a_host_that_serves_an_endpoint_is_never_sealed(fr_env, tmp_path):
    builder = Builder(fr_env, tmp_path)
    config = Path(builder.env["FR_AUTHZ_CONFIG"])
    config.parent.mkdir(parents=True)
    config.write_text("{}\n")
    _, stderr = builder.seal(rc=1)
    assert "serves an endpoint; nothing was changed" in stderr and len(stderr.strip().splitlines()) == 1
    for path, text in builder.gone.items():
        assert path.read_text() == text, path
    assert builder.tool_calls == []


def test_an_unknown_argument_is_refused_before_anything_changes(fr_env, tmp_path):
    builder = Builder(fr_env, tmp_path)
    _, stderr = builder.seal("--poweroff", rc=1)
    assert "--power-off" in stderr
    assert all(path.exists() for path in builder.gone) and builder.tool_calls == []
