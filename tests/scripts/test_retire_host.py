"""scripts/retire_host.sh, the delete-time step of a host: it drains (a
retiring host's mark in the drain file, which the canary never lifts),
waits for running containers up to DRAIN_TIMEOUT and never fails on the
timeout, and decommissions a dedicated server (the endpoint, upkeep, the
stack's trust and keys, the fleet's SSH keys) while keeping its packages.

Paths point into tmp_path; `docker`, `systemctl` and `timeout`'s callee are
stand-ins on PATH: `docker ps -q` answers from a schedule the test writes
(one line per call: how many containers run, or `down`), and systemctl
keeps which units are active and enabled in two files. So this proves what
the step decides, writes, removes and asks systemd and dockerd to do, not
that dockerd then listens on its socket only (the hostlab's dockerd would).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from components.contract import AUTHZ_RETIRE_MARK, CANARY_UNIT, GC_UNIT, NODE_EXPORTER_UNIT
from host_verify.canary import CANARY_DRAIN_MARK, follow_health
from tests.scripts.helpers import paths_left_on_the_host, run_script

FAKE_DOCKER = """#!/bin/sh
printf '%s\\n' "$*" >>"$DOCKER_LOG"
n=$(wc -l <"$DOCKER_LOG")
answer=$(sed -n "${n}p" "$DOCKER_SCHEDULE")
[ -n "$answer" ] || answer=$(tail -n 1 "$DOCKER_SCHEDULE")
if [ "$answer" = down ]; then
  echo "Cannot connect to the Docker daemon" >&2
  exit 1
fi
i=0
while [ "$i" -lt "$answer" ]; do echo "c0ffee00$i"; i=$((i + 1)); done
"""
# Units in $SYSTEMCTL_ACTIVE / $SYSTEMCTL_ENABLED (one a line) are active /
# enabled; stop and disable take them out, as systemd would.
FAKE_SYSTEMCTL = """#!/bin/sh
printf '%s\\n' "$*" >>"$SYSTEMCTL_LOG"
for last; do :; done
forget() { file=$1; shift; for u; do grep -vxF "$u" "$file" >"$file.new" || true; mv "$file.new" "$file"; done; }
case "$1" in
  is-active) grep -qxF "$last" "$SYSTEMCTL_ACTIVE" ;;
  is-enabled) grep -qxF "$last" "$SYSTEMCTL_ENABLED" ;;
  stop) shift; forget "$SYSTEMCTL_ACTIVE" "$@" ;;
  disable) shift; forget "$SYSTEMCTL_ENABLED" "$@" ;;
  *) exit 0 ;;
esac
"""

DAEMON_JSON = {
    "hosts": ["fd://", "tcp://10.0.1.5:2376"],
    "metrics-addr": "10.0.1.5:9323",
    "tls": True,
    "tlsverify": True,
    "tlscacert": "/etc/docker/tls/ca.pem",
    "tlscert": "/etc/docker/tls/server-cert.pem",
    "tlskey": "/etc/docker/tls/server-key.pem",
    "containerd": "/run/containerd/containerd.sock",
    "runtimes": {"runsc": {"path": "/opt/functions-runtime/gvisor/20260907.0/runsc", "runtimeArgs": ["--platform=systrap"]}},
    "default-runtime": "runsc",
    "authorization-plugins": ["functions-runtime-authz"],
    "no-new-privileges": True,
    "live-restore": True,
}
HOST_UNITS = [
    "docker.service", "docker.socket", "containerd.service", "functions-runtime-authz.service",
    f"{CANARY_UNIT}.timer", f"{GC_UNIT}.timer", f"{NODE_EXPORTER_UNIT}.service",
]


class Host:
    """A served host as configure, upkeep and keys leave it, under tmp_path."""

    def __init__(self, fr_env: dict[str, str], tmp: Path, schedule: list[str], docker: bool = True):
        self.tmp = tmp
        bin_dir = tmp / "fake-bin"
        bin_dir.mkdir()
        tools = {"systemctl": FAKE_SYSTEMCTL, **({"docker": FAKE_DOCKER} if docker else {})}
        for name, text in tools.items():
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(0o755)
        (tmp / "docker-schedule").write_text("".join(f"{s}\n" for s in schedule))
        (tmp / "docker.log").touch()
        for name in ("systemctl-active", "systemctl-enabled"):
            (tmp / name).write_text("".join(f"{u}\n" for u in HOST_UNITS))
        self.env = {
            **fr_env,
            # No /usr/local/bin: this machine's own docker must never answer.
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "DOCKER_LOG": str(tmp / "docker.log"),
            "DOCKER_SCHEDULE": str(tmp / "docker-schedule"),
            "SYSTEMCTL_LOG": str(tmp / "systemctl.log"),
            "SYSTEMCTL_ACTIVE": str(tmp / "systemctl-active"),
            "SYSTEMCTL_ENABLED": str(tmp / "systemctl-enabled"),
            "FR_PYTHON": sys.executable,
            "FR_RETIRE_POLL_SECONDS": "0.05",
            "FR_DOCKER_SOCKET": str(tmp / "run" / "docker.sock"),
            "FR_DOCKER_DIR": str(tmp / "etc-docker"),
            "FR_SYSTEMD_DIR": str(tmp / "systemd"),
            "FR_AUTHZ_DRAIN_FILE": str(tmp / "var-lib-fr" / "draining"),
            "FR_AUTHZ_CONFIG": str(tmp / "etc-fr" / "endpoint-policy.json"),
            "FR_ENDPOINT_COMMAND": str(tmp / "sbin" / "functions-runtime-endpoint"),
            "FR_CANARY_DIR": str(tmp / "etc-fr" / "canary"),
            "FR_CANARY_CREDENTIALS": str(tmp / "etc-fr" / "canary" / "credentials.pem"),
            "FR_CANARY_ENV": str(tmp / "etc-fr" / "canary" / "verify.env"),
            "FR_CANARY_RESULT": str(tmp / "var-lib-fr" / "canary.json"),
            "FR_TEXTFILE_DIR": str(tmp / "textfile"),
            "FR_NODE_EXPORTER_DEFAULTS": str(tmp / "default" / "prometheus-node-exporter"),
            "FR_SSH_KEYS_DIR": str(tmp / "etc-ssh" / "functions-runtime-keys"),
            "DRAIN_TIMEOUT": "30",
            "HOST_SOURCE": "hcloud",
        }
        assert not paths_left_on_the_host("retire_host.sh", self.env)

    def path(self, name: str) -> Path:
        return Path(self.env[name])

    def configured(self) -> Host:
        """What configure_runtime.sh, configure_upkeep.sh and grant_ssh_keys.sh wrote."""
        files = {
            self.path("FR_DOCKER_DIR") / "daemon.json": json.dumps(DAEMON_JSON, indent=2),
            self.path("FR_DOCKER_DIR") / "tls" / "ca.pem": "stack CA + verifier CA\n",
            self.path("FR_DOCKER_DIR") / "tls" / "server-cert.pem": "cert\n",
            self.path("FR_DOCKER_DIR") / "tls" / "server-key.pem": "key\n",
            self.path("FR_SYSTEMD_DIR") / "docker.service.d" / "functions-runtime.conf": "[Service]\nExecStart=\n",
            self.path("FR_SYSTEMD_DIR") / "docker.socket.d" / "functions-runtime.conf": "[Socket]\nSocketMode=0600\n",
            self.path("FR_SYSTEMD_DIR") / "functions-runtime-authz.service": "[Service]\n",
            self.path("FR_AUTHZ_CONFIG"): "{}\n",
            self.path("FR_ENDPOINT_COMMAND"): "#!/bin/sh\n",
            self.path("FR_CANARY_CREDENTIALS"): "ca + client cert + client key\n",
            self.path("FR_CANARY_ENV"): "ISOLATION=sandbox\n",
            self.path("FR_CANARY_RESULT"): "{}\n",
            self.path("FR_TEXTFILE_DIR") / "functions_runtime_canary.prom": "x 1\n",
            self.path("FR_TEXTFILE_DIR") / "node_other.prom": "y 1\n",
            self.path("FR_NODE_EXPORTER_DEFAULTS"): "# Managed by functions-runtime (scripts/configure_upkeep.sh).\nARGS=\n",
            self.path("FR_SSH_KEYS_DIR") / "root": "ssh-ed25519 AAAA program\n",
            Path(self.env["FR_ROOT"]) / "state" / "granted-ssh-keys": "ssh-ed25519 AAAA\n",
            Path(self.env["FR_ROOT"]) / "state" / "kata.version": "3.32.0 sha256:ab\n",
            self.tmp / "usr-bin" / "dockerd": "installed package\n",
        }
        for unit in (f"{CANARY_UNIT}.service", f"{CANARY_UNIT}.timer", f"{GC_UNIT}.service", f"{GC_UNIT}.timer"):
            files[self.path("FR_SYSTEMD_DIR") / unit] = "[Unit]\n"
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return self

    def retire(self, **env: str):
        r = run_script("retire_host.sh", {**self.env, **env})
        assert r.rc == 0, r.stderr
        return json.loads(r.stdout), r.stderr

    @property
    def docker_calls(self) -> list[str]:
        return (self.tmp / "docker.log").read_text().splitlines()

    @property
    def systemctl_calls(self) -> list[str]:
        log = self.tmp / "systemctl.log"
        return log.read_text().splitlines() if log.exists() else []


def test_retire_waits_for_running_containers_then_reports_drained(fr_env, tmp_path):
    host = Host(fr_env, tmp_path, schedule=["2", "1", "0"])
    result, _ = host.retire()
    assert result["drained"] is True and result["timedOut"] is False
    assert result["running"] == 0 and result["waitedSeconds"] < 30
    # Three looks through the local socket: 2 running, 1, none.
    assert host.docker_calls == [f"--host unix://{host.env['FR_DOCKER_SOCKET']} ps -q"] * 3
    assert host.path("FR_AUTHZ_DRAIN_FILE").read_text().startswith(f"{AUTHZ_RETIRE_MARK}: ")
    # A Cloud server is deleted next: nothing else on it is touched.
    assert result["decommissioned"] is False and result["removed"] == [] and result["warnings"] == []
    assert not any(c.split()[0] in ("stop", "disable", "restart") for c in host.systemctl_calls)


def test_retire_gives_up_after_the_timeout_without_failing(fr_env, tmp_path):
    host = Host(fr_env, tmp_path, schedule=["3"])
    result, stderr = host.retire(DRAIN_TIMEOUT="1")
    assert result["timedOut"] is True and result["running"] == 3 and result["drained"] is True
    assert result["waitedSeconds"] >= 1
    assert len(host.docker_calls) > 2
    assert "gave up after" in stderr and "3 container(s) still running" in stderr


def test_a_zero_timeout_drains_and_looks_once(fr_env, tmp_path):
    host = Host(fr_env, tmp_path, schedule=["1"])
    result, _ = host.retire(DRAIN_TIMEOUT="0")
    assert result["timedOut"] is True and result["running"] == 1 and len(host.docker_calls) == 1


def test_a_host_that_never_finished_install_has_nothing_to_wait_for(fr_env, tmp_path):
    host = Host(fr_env, tmp_path, schedule=["5"], docker=False)
    result, stderr = host.retire()
    assert result["running"] == 0 and result["timedOut"] is False and result["drained"] is True
    assert "no docker CLI" in stderr


def test_a_dockerd_that_is_not_running_is_not_waited_for(fr_env, tmp_path):
    host = Host(fr_env, tmp_path, schedule=["down"])
    (tmp_path / "systemctl-active").write_text("")
    result, _ = host.retire()
    assert result["running"] is None and result["timedOut"] is False and len(host.docker_calls) == 1
    assert "not waiting" in result["warnings"][0]


def test_a_dockerd_that_never_answers_is_waited_for_until_the_timeout(fr_env, tmp_path):
    host = Host(fr_env, tmp_path, schedule=["down"])
    result, stderr = host.retire(DRAIN_TIMEOUT="1")
    assert result["running"] is None and result["timedOut"] is True
    assert "dockerd never answered" in stderr


@pytest.mark.parametrize(("name", "value"), [("DRAIN_TIMEOUT", "soon"), ("DRAIN_TIMEOUT", ""), ("HOST_SOURCE", "robot")])
def test_an_input_the_program_never_sends_is_a_warning_not_a_blocked_deletion(fr_env, tmp_path, name, value):
    host = Host(fr_env, tmp_path, schedule=["1", "0"]).configured()
    result, _ = host.retire(**{name: value})
    assert result["drained"] is True and name in result["warnings"][0]
    # A timeout that is no number waits 0 s: one look, and the host goes.
    assert len(host.docker_calls) == (1 if name == "DRAIN_TIMEOUT" else 2)
    # An unknown source is only drained: nothing of the host is taken away.
    assert result["decommissioned"] is False and result["removed"] == []


def test_a_drained_hosts_mark_is_not_the_canarys(fr_env, tmp_path):
    """The canary drained this host before it retired: its mark would be
    lifted by its next passing run, so retiring replaces it, and the canary
    then leaves the retiring host's drain alone, healthy or not."""
    host = Host(fr_env, tmp_path, schedule=["0"])
    drain = host.path("FR_AUTHZ_DRAIN_FILE")
    drain.parent.mkdir(parents=True)
    drain.write_text(f"{CANARY_DRAIN_MARK}: runsc failed\n")
    result, _ = host.retire()
    assert result["drained"] is True
    text = drain.read_text()
    assert text.startswith(f"{AUTHZ_RETIRE_MARK}: ") and not text.startswith(CANARY_DRAIN_MARK)
    assert follow_health(drain, healthy=True, reason=None) == "unchanged" and drain.read_text() == text
    assert follow_health(drain, healthy=False, reason="x") == "unchanged" and drain.read_text() == text


def test_retiring_twice_drains_once_and_still_reports(fr_env, tmp_path):
    host = Host(fr_env, tmp_path, schedule=["0"])
    first, _ = host.retire()
    second, stderr = host.retire()
    assert first["drained"] is second["drained"] is True
    assert "already draining" in stderr


def test_retiring_a_dedicated_host_removes_the_endpoint_trust_and_keys(fr_env, tmp_path):
    host = Host(fr_env, tmp_path, schedule=["1", "0"]).configured()
    result, _ = host.retire(HOST_SOURCE="dedicated")
    assert result["decommissioned"] is True and result["warnings"] == [] and result["running"] == 0
    docker_dir, systemd = host.path("FR_DOCKER_DIR"), host.path("FR_SYSTEMD_DIR")

    # dockerd: its local socket only, the rest of its configuration kept.
    daemon = json.loads((docker_dir / "daemon.json").read_text())
    assert not {"hosts", "tls", "tlsverify", "tlscacert", "tlscert", "tlskey", "metrics-addr",
                "authorization-plugins"} & set(daemon)
    assert daemon["default-runtime"] == "runsc" and daemon["live-restore"] is True and "runsc" in daemon["runtimes"]
    assert not (systemd / "docker.service.d" / "functions-runtime.conf").exists()
    assert (systemd / "docker.socket.d" / "functions-runtime.conf").exists()
    calls = host.systemctl_calls
    assert "restart docker.service" in calls
    assert calls.index("restart docker.service") < calls.index("stop functions-runtime-authz.service")
    assert result["changed"] == [str(docker_dir / "daemon.json")]

    # The endpoint policy, the canary, GC and the node exporter: stopped, disabled, gone.
    for unit in ("functions-runtime-authz.service", f"{CANARY_UNIT}.timer", f"{GC_UNIT}.timer",
                 f"{NODE_EXPORTER_UNIT}.service"):
        assert f"disable {unit}" in calls and unit in result["stopped"]
    for gone in ("FR_AUTHZ_CONFIG", "FR_ENDPOINT_COMMAND", "FR_CANARY_RESULT", "FR_NODE_EXPORTER_DEFAULTS"):
        assert not host.path(gone).exists(), gone
    assert not list(systemd.glob("functions-runtime-*"))
    assert not (host.path("FR_TEXTFILE_DIR") / "functions_runtime_canary.prom").exists()
    assert (host.path("FR_TEXTFILE_DIR") / "node_other.prom").exists()

    # Trust and keys: the stack's and the verifier CA, the server's key, the canary's credentials, the fleet's SSH keys.
    assert not (docker_dir / "tls").exists() and not host.path("FR_CANARY_DIR").exists()
    assert not host.path("FR_SSH_KEYS_DIR").exists()
    assert result["removed"][-2:] == [str(host.path("FR_SSH_KEYS_DIR")), str(Path(fr_env["FR_ROOT"]) / "state" / "granted-ssh-keys")]
    # The retiring drain is lifted: nothing reads it once the policy is gone,
    # and the machine adopted again must not come back draining.
    assert not host.path("FR_AUTHZ_DRAIN_FILE").exists()
    # What the operator owns stays: packages, install markers.
    assert (tmp_path / "usr-bin" / "dockerd").exists()
    assert (Path(fr_env["FR_ROOT"]) / "state" / "kata.version").exists()


def test_retiring_a_dedicated_host_again_removes_nothing_more(fr_env, tmp_path):
    host = Host(fr_env, tmp_path, schedule=["0"]).configured()
    host.retire(HOST_SOURCE="dedicated")
    calls = len(host.systemctl_calls)
    again, _ = host.retire(HOST_SOURCE="dedicated")
    assert again["decommissioned"] is True and again["warnings"] == []
    # Drained and lifted again; nothing else is left to take away.
    assert again["removed"] == [host.env["FR_AUTHZ_DRAIN_FILE"]]
    assert again["changed"] == [] and again["stopped"] == []
    assert not any(c.startswith(("restart", "stop", "disable")) for c in host.systemctl_calls[calls:])


def test_a_daemon_json_that_is_not_json_is_moved_aside_and_the_rest_goes_on(fr_env, tmp_path):
    host = Host(fr_env, tmp_path, schedule=["0"]).configured()
    daemon = host.path("FR_DOCKER_DIR") / "daemon.json"
    daemon.write_text("{ not json")
    result, _ = host.retire(HOST_SOURCE="dedicated")
    assert not daemon.exists() and (daemon.parent / "daemon.json.retired").exists()
    assert result["decommissioned"] is True and "daemon.json" in result["warnings"][0]
    assert not host.path("FR_SSH_KEYS_DIR").exists()

