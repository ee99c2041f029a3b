"""scripts/configure_upkeep.sh: the canary's credential and unit, GC's unit,
the node exporter's listen address and textfile directory, unattended
upgrades; idempotent, and refusing bad input with nothing written.

Paths point into tmp_path; `systemctl` and `dpkg-query` are recording
stand-ins on PATH, so this proves what the step writes and asks systemd to
do, not that systemd runs it (the hostlab does).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import pytest

from components.contract import UPGRADES_HELD, VERIFY_ENV
from tests.scripts.helpers import make_pki, run_bash, run_script

UPKEEP = {
    "PRIVATE_ADDRESS": "10.0.1.5", "ENDPOINT_PORT": "2376", "SSH_PORT": "22",
    "VERIFY_IMAGE": "functions-runtime/verify:busybox", "VERIFY_IMAGE_ARCHIVE": "", "COLD_START_RUNS": "5",
    "LIMIT_MAX_MILLICPUS": "2000", "VERIFY_OUTSIDE": "1.1.1.1 443", "VERIFY_NERDCTL": "true",
    "VERIFY_NAME_PROBE": "deb.debian.org", "CANARY_INTERVAL": "60", "CANARY_DRAIN": "false", "GC_CONTAINER_TTL_MINUTES": "60",
    "GC_IMAGE_BUDGET_GIB": "20", "GC_WATERMARK_PERCENT": "80",
}
FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >>"$SYSTEMCTL_LOG"
case "$1" in is-active|is-enabled) exit 3 ;; esac
exit 0
"""
FAKE_DPKG_QUERY = """#!/bin/sh
for p in $INSTALLED_PACKAGES; do
  [ "$p" = "$3" ] && { printf "ii "; exit 0; }
done
exit 1
"""


def upkeep_env(fr_env: dict[str, str], tmp_path: Path, installed: str = "prometheus-node-exporter unattended-upgrades",
               **extra: str) -> dict[str, str]:
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("systemctl", FAKE_SYSTEMCTL), ("dpkg-query", FAKE_DPKG_QUERY)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {
        **fr_env, **UPKEEP,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SYSTEMCTL_LOG": str(tmp_path / "systemctl.log"),
        "INSTALLED_PACKAGES": installed,
        "FR_PYTHON": sys.executable,
        "FR_SYSTEMD_DIR": str(tmp_path / "systemd"),
        "FR_CANARY_DIR": str(tmp_path / "canary"),
        "FR_CANARY_CREDENTIALS": str(tmp_path / "canary" / "credentials.pem"),
        "FR_CANARY_ENV": str(tmp_path / "canary" / "verify.env"),
        "FR_CANARY_RESULT": str(tmp_path / "state" / "canary.json"),
        "FR_TEXTFILE_DIR": str(tmp_path / "textfile"),
        "FR_NODE_EXPORTER_DEFAULTS": str(tmp_path / "default" / "prometheus-node-exporter"),
        "FR_UPGRADES_CONFIG": str(tmp_path / "apt" / "52functions-runtime-upgrades"),
        "FR_UPGRADES_PERIODIC": str(tmp_path / "apt" / "21functions-runtime-auto-upgrades"),
        **extra,
    }


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path / "pki")


def test_a_first_run_writes_everything_and_a_second_changes_nothing(fr_env, tmp_path, pki):
    env = upkeep_env(fr_env, tmp_path)
    stdin = pki.ca + pki.client_cert + pki.client_key
    first = run_script("configure_upkeep.sh", env, stdin)
    assert first.rc == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["nodeExporter"] == "10.0.1.5:9100" and result["restarted"] == ["prometheus-node-exporter"]
    assert len(result["changed"]) == 9, result["changed"]
    credentials = Path(env["FR_CANARY_CREDENTIALS"])
    assert credentials.read_text() == pki.ca + pki.client_cert + pki.client_key
    assert oct(credentials.stat().st_mode & 0o777) == "0o600"
    assert oct(Path(env["FR_CANARY_DIR"]).stat().st_mode & 0o777) == "0o700"
    assert "PRIVATE KEY" not in first.stdout + first.stderr
    log = Path(env["SYSTEMCTL_LOG"]).read_text().splitlines()
    assert "daemon-reload" in log
    for timer in ("functions-runtime-canary.timer", "functions-runtime-gc.timer"):
        assert f"enable {timer}" in log and f"start {timer}" in log
    assert "restart prometheus-node-exporter.service" in log
    # No canary result yet: the first run starts now, not one interval later.
    assert "start --no-block functions-runtime-canary.service" in log

    second = run_script("configure_upkeep.sh", env, stdin)
    assert second.rc == 0, second.stderr
    again = json.loads(second.stdout)
    # Nothing rewritten; the node exporter restarts only because the stand-in says it is not running.
    assert again["changed"] == []
    assert Path(env["SYSTEMCTL_LOG"]).read_text().splitlines().count("daemon-reload") == 1
    Path(env["FR_CANARY_RESULT"]).parent.mkdir(parents=True, exist_ok=True)
    Path(env["FR_CANARY_RESULT"]).write_text("{}")
    third = run_script("configure_upkeep.sh", env, stdin)
    assert third.rc == 0 and json.loads(third.stdout)["changed"] == []
    assert Path(env["SYSTEMCTL_LOG"]).read_text().count("start --no-block") == 2  # not a third time


def test_the_canarys_unit_runs_verifys_profile_with_its_credential_on_stdin(fr_env, tmp_path):
    env = upkeep_env(fr_env, tmp_path)
    unit = run_bash("render_canary_service", env, script="configure_upkeep.sh")
    assert unit.rc == 0, unit.stderr
    assert f"StandardInput=file:{env['FR_CANARY_CREDENTIALS']}" in unit.stdout
    assert f"EnvironmentFile={env['FR_CANARY_ENV']}" in unit.stdout
    assert (f"ExecStart={sys.executable} -I {env['FR_ROOT']}/host_verify/__main__.py --profile canary --result "
            f"{env['FR_CANARY_RESULT']} --textfile {env['FR_TEXTFILE_DIR']}/functions_runtime_canary.prom "
            "--interval 60") in unit.stdout
    assert "--drain-on-failure" not in unit.stdout
    drained = run_bash("render_canary_service", {**env, "CANARY_DRAIN": "true"}, script="configure_upkeep.sh")
    assert "--interval 60 --drain-on-failure\n" in drained.stdout
    timer = run_bash('render_timer functions-runtime-canary "the canary" "$CANARY_INTERVAL"', env,
                     script="configure_upkeep.sh")
    assert "OnUnitActiveSec=60s" in timer.stdout and "Unit=functions-runtime-canary.service" in timer.stdout


def test_the_canarys_environment_file_carries_every_verify_variable_quoted(fr_env, tmp_path):
    env = upkeep_env(fr_env, tmp_path, VERIFY_NAME_PROBE='odd "name" \\ here')
    out = run_bash("render_canary_env", env, script="configure_upkeep.sh")
    assert out.rc == 0, out.stderr
    values = dict(line.split("=", 1) for line in out.stdout.splitlines() if not line.startswith("#"))
    assert set(VERIFY_ENV) <= set(values)
    # systemd's EnvironmentFile quoting reads like a shell's double quotes.
    assert shlex.split(values["VERIFY_OUTSIDE"]) == ["1.1.1.1 443"]
    assert shlex.split(values["VERIFY_NAME_PROBE"]) == ['odd "name" \\ here']
    assert shlex.split(values["FR_HOST"]) == [fr_env["FR_HOST"]]


def test_gc_runs_with_the_stacks_thresholds_in_seconds_and_bytes(fr_env, tmp_path):
    env = upkeep_env(fr_env, tmp_path, GC_CONTAINER_TTL_MINUTES="90", GC_IMAGE_BUDGET_GIB="3")
    unit = run_bash("render_gc_service", env, script="configure_upkeep.sh")
    assert unit.rc == 0, unit.stderr
    assert "--container-ttl-seconds 5400 --image-budget-bytes 3221225472 --watermark-percent 80" in unit.stdout
    assert "--keep-image functions-runtime/verify:busybox" in unit.stdout


def test_the_node_exporter_listens_on_the_private_address_only(fr_env, tmp_path):
    env = upkeep_env(fr_env, tmp_path)
    out = run_bash("render_node_exporter_defaults", env, script="configure_upkeep.sh")
    assert (f'ARGS="--web.listen-address=10.0.1.5:9100 --collector.textfile.directory={env["FR_TEXTFILE_DIR"]}"'
            in out.stdout)


def test_security_updates_never_reboot_and_hold_the_runtime_packages(fr_env, tmp_path):
    env = upkeep_env(fr_env, tmp_path)
    out = run_bash("render_upgrades_config; render_upgrades_periodic", env, script="configure_upkeep.sh")
    assert 'Unattended-Upgrade::Automatic-Reboot "false";' in out.stdout
    assert "codename=${distro_codename}-security" in out.stdout
    for pkg in UPGRADES_HELD:
        assert f'"{pkg}";' in out.stdout
    assert 'APT::Periodic::Unattended-Upgrade "1";' in out.stdout


def test_without_the_packages_it_fails_naming_them_and_writes_nothing(fr_env, tmp_path, pki):
    env = upkeep_env(fr_env, tmp_path, installed="unattended-upgrades")
    r = run_script("configure_upkeep.sh", env, pki.ca + pki.client_cert + pki.client_key)
    assert r.rc != 0 and "prometheus-node-exporter" in r.stderr and "re-run the install step" in r.stderr
    assert not Path(env["FR_CANARY_DIR"]).exists() and not (tmp_path / "systemd").exists()


def test_a_credential_in_the_wrong_order_is_refused_with_nothing_written(fr_env, tmp_path, pki):
    env = upkeep_env(fr_env, tmp_path)
    r = run_script("configure_upkeep.sh", env, pki.client_key + pki.ca + pki.client_cert)
    assert r.rc != 0 and "to be a certificate" in r.stderr
    assert not Path(env["FR_CANARY_CREDENTIALS"]).exists()


@pytest.mark.parametrize("variable", ["CANARY_INTERVAL", "GC_WATERMARK_PERCENT", "VERIFY_OUTSIDE"])
def test_a_missing_input_fails_closed_naming_it(fr_env, tmp_path, pki, variable):
    env = upkeep_env(fr_env, tmp_path)
    del env[variable]
    r = run_script("configure_upkeep.sh", env, pki.ca + pki.client_cert + pki.client_key)
    assert r.rc != 0 and variable in r.stderr
    assert not Path(env["FR_CANARY_DIR"]).exists()


@pytest.mark.parametrize(
    ("mark", "lifted"),
    [("updating: the install step updates the runtime\n", True), ("draining: maintenance\n", False),
     ("retiring: replaced\n", False), ("drained by the canary: a check failed\n", False)],
)
def test_upkeep_resumes_only_a_host_the_install_step_drained_for_its_update(fr_env, tmp_path, pki, mark, lifted):
    drain = tmp_path / "draining"
    drain.write_text(mark)
    env = upkeep_env(fr_env, tmp_path, FR_AUTHZ_DRAIN_FILE=str(drain))
    r = run_script("configure_upkeep.sh", env, pki.ca + pki.client_cert + pki.client_key)
    assert r.rc == 0, r.stderr
    assert json.loads(r.stdout)["resumedAfterUpdate"] is lifted
    assert drain.exists() is not lifted
