"""scripts/configure_runtime.sh: what it writes, without touching /etc.

Proves: daemon.json is valid JSON with "hosts" (fd:// and the private
address), mutual TLS, the runtimes per isolation and KVM, the default runtime,
no-new-privileges/live-restore/icc; when a Debian trixie `dockerd` is given in
FR_TEST_DOCKERD, `dockerd --validate` accepts it (and rejects the
non-existent "tls-min-version" key, which is why the file does not carry it);
the docker.service drop-in clears ExecStart and runs dockerd without -H; the
socket drop-in is root-only; TLS material lands with a 0600 key and a second
run changes nothing.
Does not prove: that dockerd starts and serves mTLS (the hostlab does, and
verify_host.sh checks it on every host), nor the systemctl restart logic.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.scripts.helpers import kvm_env, make_pki, run_bash

NET = {"PRIVATE_ADDRESS": "10.0.0.2", "ENDPOINT_PORT": "2376"}


def daemon_json(fr_env, tmp_path, isolation="sandbox", kvm=False, kata=False):
    if kata:
        shim = tmp_path / "opt-kata" / "bin" / "containerd-shim-kata-v2"
        shim.parent.mkdir(parents=True, exist_ok=True)
        shim.write_text("#!/bin/sh\n")
        shim.chmod(0o755)
        (tmp_path / "fr" / "catalog").mkdir(parents=True, exist_ok=True)
        (tmp_path / "fr" / "catalog" / "artifacts.tsv").write_text(
            "name\tversion\tsha256\turl\nkata\t3.32.0\tabc\thttp://x/k\n"
        )
        (tmp_path / "fr" / "state" / "kata.version").write_text("3.32.0 abc\n")
        check = tmp_path / "bin" / "kata-runtime"  # `kata-runtime check` passes
        check.parent.mkdir(parents=True, exist_ok=True)
        check.write_text("#!/bin/sh\nexit 0\n")
        check.chmod(0o755)
    env = {
        **fr_env,
        **NET,
        **kvm_env(tmp_path, kvm),
        "ISOLATION": isolation,
        "FR_DOCKER_DIR": str(tmp_path / "docker"),
    }
    r = run_bash(
        'choose_runtimes; render_daemon_json "${RUNTIMES[0]}" "${RUNTIMES[@]}"',
        env,
        script="configure_runtime.sh",
    )
    assert r.rc == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize(
    ("isolation", "kvm", "kata", "default", "runtimes"),
    [
        ("sandbox", False, False, "runsc", {"runsc"}),
        ("sandbox", True, True, "kata", {"kata", "runsc"}),
        ("sandbox", False, True, "runsc", {"runsc"}),  # Kata installed but KVM gone: not registered
        ("vm", True, True, "kata", {"kata"}),
    ],
)
def test_daemon_json_per_isolation(fr_env, tmp_path, isolation, kvm, kata, default, runtimes):
    d = daemon_json(fr_env, tmp_path, isolation, kvm, kata)
    assert d["hosts"] == ["fd://", "tcp://10.0.0.2:2376"]
    assert d["tls"] is True and d["tlsverify"] is True
    assert d["tlskey"].endswith("/tls/server-key.pem")
    assert d["default-runtime"] == default
    assert set(d["runtimes"]) == runtimes
    if "runsc" in runtimes:
        assert d["runtimes"]["runsc"] == {"path": "/usr/bin/runsc", "runtimeArgs": ["--platform=systrap"]}
    if "kata" in runtimes:
        assert d["runtimes"]["kata"] == {"runtimeType": "io.containerd.kata.v2"}
    assert d["no-new-privileges"] is True and d["live-restore"] is True and d["icc"] is False
    assert d["log-driver"] == "json-file" and d["log-opts"]["max-file"] == "3"


DOCKERD = os.environ.get("FR_TEST_DOCKERD") or shutil.which("dockerd")


@pytest.mark.skipif(
    not DOCKERD, reason="no dockerd here; set FR_TEST_DOCKERD to Debian trixie's /usr/sbin/dockerd"
)
def test_dockerd_validates_rendered_daemon_json(fr_env, tmp_path):
    pki = make_pki(tmp_path / "pki")
    d = daemon_json(fr_env, tmp_path)
    d.update(
        tlscacert=str(pki.directory / "ca.pem"),
        tlscert=str(pki.directory / "server.pem"),
        tlskey=str(pki.directory / "server.key"),
    )
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps(d))
    env = {**os.environ, "PATH": f"{os.path.dirname(DOCKERD)}:{os.environ['PATH']}"}
    ok = subprocess.run(
        [DOCKERD, "--validate", "--config-file", str(path)], capture_output=True, text=True, env=env
    )
    assert ok.returncode == 0, ok.stderr
    path.write_text(json.dumps({**d, "tls-min-version": "1.2"}))
    bad = subprocess.run(
        [DOCKERD, "--validate", "--config-file", str(path)], capture_output=True, text=True, env=env
    )
    assert bad.returncode != 0 and "tls-min-version" in bad.stderr


def test_docker_drop_in_replaces_exec_start_without_h(fr_env):
    r = run_bash("render_docker_drop_in", {**fr_env, **NET}, script="configure_runtime.sh")
    lines = r.stdout.splitlines()
    starts = [line for line in lines if line.startswith("ExecStart=")]
    assert starts == ["ExecStart=", "ExecStart=/usr/sbin/dockerd"]
    assert "After=network-online.target containerd.service" in lines
    pre = next(line for line in lines if line.startswith("ExecStartPre="))
    assert "ip -o address show to 10.0.0.2" in pre
    # systemd expands $$ to $; a single $ would be a systemd variable.
    assert "$$((i+1))" in pre and "$i" not in pre.replace("$$i", "")


def test_socket_drop_in_is_root_only(fr_env):
    r = run_bash("render_socket_drop_in", fr_env, script="configure_runtime.sh")
    assert {"SocketMode=0600", "SocketUser=root", "SocketGroup=root"} <= set(r.stdout.splitlines())


def test_tls_material_written_once_with_private_key(fr_env, tmp_path):
    pki = make_pki(tmp_path / "pki")
    env = {**fr_env, **NET, "FR_DOCKER_DIR": str(tmp_path / "docker")}
    verifier_ca = make_pki(tmp_path / "verifier").ca
    stdin = pki.ca + verifier_ca + pki.server_cert + pki.server_key
    snippet = 'install_tls_material; printf "%s\\n" "${CHANGED[@]}"'
    first = run_bash(snippet, env, stdin=stdin, script="configure_runtime.sh")
    assert first.rc == 0, first.stderr
    tls = tmp_path / "docker" / "tls"
    assert len(first.stdout.split()) == 3
    assert (tls / "ca.pem").read_text() == pki.ca + verifier_ca, "dockerd must trust both CAs"
    assert (tls / "server-key.pem").read_text() == pki.server_key
    assert oct(os.stat(tls / "server-key.pem").st_mode & 0o777) == "0o600"
    assert "PRIVATE KEY" not in first.stdout + first.stderr
    second = run_bash(snippet, env, stdin=stdin, script="configure_runtime.sh")
    assert second.rc == 0 and second.stdout.strip() == ""


def test_tls_material_in_wrong_order_is_refused(fr_env, tmp_path):
    pki = make_pki(tmp_path / "pki")
    env = {**fr_env, **NET, "FR_DOCKER_DIR": str(tmp_path / "docker")}
    r = run_bash(
        "install_tls_material",
        env,
        stdin=pki.server_key + pki.ca + pki.ca + pki.server_cert,
        script="configure_runtime.sh",
    )
    assert r.rc != 0 and "to be a certificate" in r.stderr
    assert not (tmp_path / "docker" / "tls" / "server-key.pem").exists()
