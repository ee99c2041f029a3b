"""Fast checks of the hostlab machinery that need no VM (seconds, no marker),
plus one hostlab check that the KVM/TCG choice matches a real KVM probe."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tools.lab import image, vm

CPUINFO_NO_VIRT = "processor : 0\nflags : fpu vme de pse tsc msr pae sse2 hypervisor\n"
CPUINFO_SVM = "processor : 0\nflags : fpu vme de pse svm sse2\n"
CPUINFO_VMX = "processor : 0\nflags : fpu vmx sse2\n"


@pytest.mark.parametrize(
    ("cpuinfo", "expected"),
    [(CPUINFO_NO_VIRT, False), (CPUINFO_SVM, True), (CPUINFO_VMX, True), ("", False)],
)
def test_cpu_virtualization_flags(cpuinfo, expected):
    assert vm.host_cpu_has_virtualization(cpuinfo) is expected


def test_paravirtual_kvm_without_flags_gives_tcg(monkeypatch):
    monkeypatch.delenv("HOSTLAB_ACCEL", raising=False)
    monkeypatch.setattr(vm, "_detected", {})
    monkeypatch.setattr(vm.os, "access", lambda path, mode: True)
    monkeypatch.setattr(vm, "host_cpu_has_virtualization", lambda cpuinfo=None: False)

    def no_probe(*args, **kwargs):
        raise AssertionError("no KVM probe without vmx/svm")

    monkeypatch.setattr(vm, "kvm_runs_a_guest", no_probe)
    accel, why = vm.detect_accelerator(Path("/nonexistent/vmlinuz"))
    assert accel == "tcg", why
    assert "vmx/svm" in why


def test_flags_but_failed_probe_gives_tcg(monkeypatch):
    monkeypatch.delenv("HOSTLAB_ACCEL", raising=False)
    monkeypatch.setattr(vm, "_detected", {})
    monkeypatch.setattr(vm.os, "access", lambda path, mode: True)
    monkeypatch.setattr(vm, "host_cpu_has_virtualization", lambda cpuinfo=None: True)
    monkeypatch.setattr(vm, "kvm_runs_a_guest", lambda *a, **k: (False, "hung"))
    assert vm.detect_accelerator(Path("/k")) == ("tcg", "hung")


def test_apt_sources_give_the_debian_archive(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
    )
    (tmp_path / "sources.list.d" / "other.list").write_text("deb [arch=amd64] https://x.example/apt stable main\n")
    assert image.debian_mirrors(tmp_path) == (
        "http://mirror.example/debian",
        "http://mirror.example/debian-security",
    )


def test_apt_sources_one_line_format_and_default(tmp_path):
    (tmp_path / "sources.list").write_text("deb http://m.example/debian trixie main\n")
    assert image.debian_mirrors(tmp_path)[0] == "http://m.example/debian"
    assert image.debian_mirrors(tmp_path / "missing") == (
        image.DEFAULT_MIRROR,
        image.DEFAULT_SECURITY_MIRROR,
    )


def test_recipe_key_changes_with_the_recipe(monkeypatch):
    key = image.recipe_key()
    assert key == image.recipe_key()
    monkeypatch.setattr(image, "PACKAGES", (*image.PACKAGES, "docker.io"))
    assert image.recipe_key() != key
    monkeypatch.setattr(image, "SUITE", "forky")
    assert image.recipe_key() != key


def test_image_stays_a_base_image():
    """The provisioning must install the runtime for real, in the guest."""
    for pkg in ("docker.io", "containerd", "runc", "runsc", "kata-containers"):
        assert pkg not in image.PACKAGES


def test_qemu_command_forwards_loopback_only(tmp_path):
    img = image.GuestImage("k", tmp_path, tmp_path / "d", tmp_path / "k", tmp_path / "i", False, 0.0)
    guest = vm.GuestVM(img, tmp_path)
    guest.ssh_port, guest.forwards, guest.accelerator = 2222, {2376: 3376}, ("tcg", "test")
    cmd = guest.qemu_command()
    netdev = cmd[cmd.index("-netdev") + 1]
    assert "hostfwd=tcp:127.0.0.1:2222-10.0.2.15:22" in netdev
    assert "hostfwd=tcp:127.0.0.1:3376-10.0.2.15:2376" in netdev
    assert netdev.count("hostfwd=") == netdev.count("hostfwd=tcp:127.0.0.1:")
    assert cmd[cmd.index("-accel") + 1] == "tcg,thread=multi"
    assert "-pidfile" in cmd
    # The console and sshd's journal (the image's unit on ttyS1), each to a file in the work directory.
    serials = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "-serial"]
    assert serials == [f"file:{tmp_path / 'serial.log'}", f"file:{tmp_path / 'sshd.log'}"]
    # The monitor (for snapshots) is a unix socket in the work directory, no TCP port.
    assert cmd[cmd.index("-qmp") + 1] == f"unix:{tmp_path / 'qmp.sock'},server=on,wait=off"


@pytest.mark.parametrize(
    ("override", "model"),
    [("", vm.TCG_CPU_MODEL), ("max", "max")],
)
def test_tcg_cpu_model_has_what_gvisor_and_the_kata_preflight_need(tmp_path, monkeypatch, override, model):
    monkeypatch.setenv("HOSTLAB_TCG_CPU", override)
    img = image.GuestImage("k", tmp_path, tmp_path / "d", tmp_path / "k", tmp_path / "i", False, 0.0)
    guest = vm.GuestVM(img, tmp_path)
    guest.ssh_port, guest.accelerator = 2222, ("tcg", "test")
    cmd = guest.qemu_command()
    assert cmd[cmd.index("-cpu") + 1] == model
    flags = vm.TCG_CPU_MODEL.split(",")
    # xgetbv (gVisor systrap) needs XSAVE; XSAVE alone hangs the kernel; SVM gives the nested /dev/kvm.
    assert {"+xsave", "+xsaveopt", "+svm"} <= set(flags)


def test_a_work_directory_too_long_for_the_monitor_socket_is_refused_before_qemu(tmp_path):
    img = image.GuestImage("k", tmp_path, tmp_path / "d", tmp_path / "k", tmp_path / "i", False, 0.0)
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    guest = vm.GuestVM(img, deep)
    with pytest.raises(vm.GuestVMError, match="too long for QEMU's monitor socket"):
        guest.start("#cloud-config\n")
    assert not guest.is_running() and not guest.overlay.exists()


def test_stop_before_start_is_harmless(tmp_path):
    img = image.GuestImage("k", tmp_path, tmp_path / "d", tmp_path / "k", tmp_path / "i", False, 0.0)
    with vm.GuestVM(img, tmp_path) as guest:
        pass
    guest.stop()


def test_free_port_is_bindable_on_loopback():
    import socket

    port = vm.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


@pytest.mark.hostlab
@pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="no /dev/kvm: nothing to probe, TCG by definition")
def test_accelerator_choice_matches_a_real_kvm_probe(guest_image, tmp_path, monkeypatch):
    """Detected, not assumed: the flag shortcut must agree with booting a kernel under KVM."""
    monkeypatch.delenv("HOSTLAB_ACCEL", raising=False)
    monkeypatch.setattr(vm, "_detected", {})
    works, detail = vm.kvm_runs_a_guest(guest_image.kernel, tmp_path)
    accel, why = vm.detect_accelerator(guest_image.kernel, tmp_path)
    print(f"\nKVM probe: {works} ({detail}); chosen: {accel} ({why})")
    assert accel == ("kvm" if works else "tcg"), f"probe said {detail!r} but detection chose {accel}: {why}"


def _fake_recipe(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "fake_build.sh"
    script.write_text("#!/usr/bin/env bash\nset -e\nout=$1\n" + body)
    return script


def test_build_publishes_atomically_and_is_reused(tmp_path, monkeypatch):
    calls = tmp_path / "calls"
    script = _fake_recipe(
        tmp_path,
        f'echo run >> {calls}\nfor f in disk.qcow2 vmlinuz initrd.img; do echo x > "$out/$f"; done\n'
        'echo "{}" > "$out/manifest.json"\n',
    )
    monkeypatch.setattr(image, "BUILD_SCRIPT", script)
    first = image.ensure_guest_image(tmp_path / "cache")
    second = image.ensure_guest_image(tmp_path / "cache")
    assert first.built_now and not second.built_now
    assert first.directory == second.directory == tmp_path / "cache" / "images" / first.key
    assert calls.read_text().count("run") == 1
    assert not list((tmp_path / "cache" / "images").glob(".tmp-*"))


def test_failed_build_leaves_nothing_under_its_key(tmp_path, monkeypatch):
    script = _fake_recipe(tmp_path, 'echo x > "$out/disk.qcow2"\necho "debootstrap: boom" >&2\nexit 3\n')
    monkeypatch.setattr(image, "BUILD_SCRIPT", script)
    with pytest.raises(RuntimeError, match=r"exit 3(.|\n)*debootstrap: boom"):
        image.ensure_guest_image(tmp_path / "cache")
    images = tmp_path / "cache" / "images"
    assert not (images / image.recipe_key()).exists()
    assert not list(images.glob(".tmp-*"))


LAB_TOOL = Path(__file__).resolve().parents[2] / "tools" / "lab"


def imported_modules(source: str) -> set[str]:
    """Every module an `import` or `from ... import` names (absolute imports)."""
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_imported_modules_sees_every_import_form():
    source = "import tests\nimport os, tests.support.program as p\nfrom tests.hostlab import testbed\n"
    source += "def f():\n    from tests.support.program import run_program\n"
    assert imported_modules(source) == {"tests", "os", "tests.support.program", "tests.hostlab"}


def test_the_lab_tool_imports_nothing_from_tests():
    """The mocks' deterministic keys and fixed dates (tests/support) must never reach a user's lab."""
    sources = sorted(LAB_TOOL.rglob("*.py"))
    assert {p.name for p in sources} >= {"__init__.py", "__main__.py", "cli.py", "image.py", "vm.py", "replay.py"}
    offenders = {
        str(p.relative_to(LAB_TOOL)): sorted(m for m in imported_modules(p.read_text()) if m.split(".")[0] == "tests")
        for p in sources
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    # And at run time: importing every module of the tool loads nothing from tests/.
    import subprocess
    import sys

    probe = (
        "import sys, tools.lab.cli, tools.lab.image, tools.lab.replay, tools.lab.vm, tools.lab.program, tools.lab.provision\n"
        "print(sorted(m for m in sys.modules if m == 'tests' or m.startswith('tests.')))\n"
    )
    root = LAB_TOOL.parents[1]
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    ).stdout.strip()
    assert loaded == "[]"


def test_python_m_tools_lab_prints_its_usage():
    import subprocess
    import sys

    root = LAB_TOOL.parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "tools.lab", "--help"], cwd=root, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert result.returncode == 0, result.stderr
    assert "usage: python -m tools.lab" in result.stdout and "{up,down,status,env}" in result.stdout
