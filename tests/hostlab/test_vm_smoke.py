"""Smoke test of the hostlab machine layer, on a real guest.

Proves: the Debian 13 image builds from Debian's archive (or is reused from
the cache), boots under QEMU with a NoCloud seed, cloud-init applies the
user-data (our key for root) and finishes, and sshd answers on a forwarded
loopback port. Also the two other paths later tests rely on: the guest
reaches a server the test runs on the host's loopback (as 10.0.2.2), and a
guest port (2376, the Docker endpoint's) is reachable on its loopback
forward. It does not provision anything: that is the replay's job.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.hostlab.vm import GuestVM

pytestmark = [pytest.mark.hostlab, pytest.mark.timeout(3600)]

# cloud-init's final stage runs after sshd is up; measured 65-110 s after
# start under TCG here.
CLOUD_INIT_TIMEOUT_S = 600
# A python3 http.server in the guest takes a few seconds to listen under TCG.
GUEST_LISTENER_TIMEOUT_S = 60
HOST_ALIAS_IN_GUEST = "10.0.2.2"


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from the host\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def fetch_until(url: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.read().decode()
        except OSError as e:
            last = e
            time.sleep(1)
    raise AssertionError(f"{url} did not answer within {timeout}s: {last}")


def minimal_user_data(public_key: str) -> str:
    return (
        "#cloud-config\n"
        "disable_root: false\n"
        "ssh_pwauth: false\n"
        f"ssh_authorized_keys:\n  - {public_key}\n"
    )


def write_timings(timings: dict, cache_dir: Path) -> Path:
    out = cache_dir / "timings"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"smoke-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(timings, indent=2) + "\n")
    return path


def test_guest_boots_with_cloud_init_and_answers_ssh(
    guest_image, ssh_keypair, hostlab_cache_dir, tmp_path
):
    private_key, public_key = ssh_keypair
    timings = {
        "image": "fresh" if guest_image.built_now else "cached",
        "image_key": guest_image.key,
        "image_build_s": round(guest_image.build_seconds, 1),
    }
    with GuestVM(guest_image, tmp_path / "vm") as vm:
        vm.start(minimal_user_data(public_key), forwards={2376: 0})
        timings["accelerator"] = vm.accelerator[0]
        timings["accelerator_reason"] = vm.accelerator[1]
        timings["boot_to_ssh_s"] = round(vm.wait_for_ssh(private_key), 1)

        status = vm.ssh("cloud-init status --wait --long", timeout=CLOUD_INIT_TIMEOUT_S)
        timings["boot_to_cloud_init_done_s"] = round(time.monotonic() - vm.started_at, 1)
        assert status.returncode == 0, f"cloud-init did not finish cleanly:\n{status.stdout}{status.stderr}"
        assert "status: done" in status.stdout, status.stdout

        os_release = vm.ssh("cat /etc/os-release", check=True).stdout
        assert "VERSION_CODENAME=trixie" in os_release, os_release

        # The key cloud-init installed is ours and we are root.
        assert vm.ssh("id -u", check=True).stdout.strip() == "0"
        # accept-new recorded the guest's host key; later connections checked it.
        assert vm.known_hosts.read_text().strip(), "known_hosts empty after first connection"

        # Guest -> a server on the host's loopback, through QEMU's 10.0.2.2.
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"http://{HOST_ALIAS_IN_GUEST}:{server.server_address[1]}/"
            got = vm.ssh(f"curl -fsS --max-time 20 {url}", timeout=60)
        finally:
            server.shutdown()
            server.server_close()
        assert got.returncode == 0 and "hello from the host" in got.stdout, got.stderr

        # Host loopback -> guest port 2376 on 10.0.2.15 (the Docker endpoint's port).
        # Only the server is backgrounded, all its streams detached, or ssh
        # would wait for it (a backgrounded `a && b &` list keeps ssh's stdout).
        vm.ssh(
            "echo guest-2376 > /tmp/index.html; cd /tmp; "
            "nohup python3 -m http.server 2376 --bind 10.0.2.15 </dev/null >/dev/null 2>&1 &",
            timeout=60,
            check=True,
        )
        reply = fetch_until(f"http://127.0.0.1:{vm.forwards[2376]}/index.html", GUEST_LISTENER_TIMEOUT_S)
        assert reply.strip() == "guest-2376"
        pid = vm.pid()

    assert not vm.is_running(), f"QEMU (pid {pid}) still running after stop()"
    path = write_timings(timings, hostlab_cache_dir)
    width = max(len(k) for k in timings)
    print("\nhostlab smoke timings")
    for k, v in timings.items():
        print(f"  {k:<{width}}  {v}")
    print(f"  saved to {path}")
