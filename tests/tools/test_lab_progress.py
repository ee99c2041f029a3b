"""tools/lab/progress.py: phases with their elapsed time, live or as lines.

The clock is a stand-in and heartbeats are called directly (`tick`), so no
assertion depends on how fast this machine is.
"""

from __future__ import annotations

import io
import time

import pytest

from tools.lab.progress import PhaseFailed, Progress, one_line


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def stand_in(live: bool) -> tuple[io.StringIO, Clock, Progress]:
    """A Progress writing to a string, on the stand-in clock, whose heartbeats only `tick` calls."""
    out, clock = io.StringIO(), Clock()
    return out, clock, Progress(out, live=live, clock=clock, interval=3600)


def timed_phase(progress: Progress, clock: Clock, name: str, *waits: float) -> None:
    """Phase `name` on the stand-in clock: each of `waits` in turn, a heartbeat between two."""
    with progress.phase(name):
        for i, wait in enumerate(waits):
            if i:
                progress.tick()
            clock.now += wait


def test_on_a_pipe_each_phase_has_a_start_heartbeats_and_an_end():
    out, clock, progress = stand_in(live=False)
    timed_phase(progress, clock, "install", 12, 10, 0.5)
    assert out.getvalue().splitlines() == [
        "lab: install...",
        "lab: install: still running, 12 s",
        "lab: install: still running, 22 s",
        "lab: install done in 22.5 s",
    ]
    assert "\r" not in out.getvalue()


def test_on_a_terminal_one_line_is_redrawn_and_left_with_the_time():
    out, clock, progress = stand_in(live=True)
    timed_phase(progress, clock, "boot", 7, 30)
    text = out.getvalue()
    assert "\r\033[Klab: boot 7 s" in text
    assert text.endswith("\r\033[Klab: boot done in 37.0 s\n")
    assert text.count("\n") == 1


def test_a_failed_phase_says_so_and_the_error_keeps_its_reason_and_log(tmp_path):
    out, clock, progress = stand_in(live=False)
    with pytest.raises(PhaseFailed) as err, progress.phase("verify"):
        clock.now += 3
        raise PhaseFailed("verify", "endpoint refused a client without a certificate? no", tmp_path / "up.log")
    assert out.getvalue().splitlines()[-1] == "lab: verify failed after 3.0 s"
    assert str(err.value) == (
        f"verify failed: endpoint refused a client without a certificate? no (full log: {tmp_path / 'up.log'})"
    )


def test_the_background_heartbeat_runs_while_a_phase_does():
    out = io.StringIO()
    progress = Progress(out, live=False, interval=0.01)
    with progress.phase("cloud-init"):
        for _ in range(3000):  # bounded: 30 s at most
            if "still running" in out.getvalue():
                break
            time.sleep(0.01)
    assert "lab: cloud-init: still running" in out.getvalue()
    assert out.getvalue().splitlines()[-1].startswith("lab: cloud-init done in")


def test_say_clears_a_live_line_first():
    out = io.StringIO()
    progress = Progress(out, live=True, clock=Clock(), interval=3600)
    with progress.phase("image"):
        progress.say("building the guest image")
    assert "\r\033[Klab: building the guest image\n" in out.getvalue()


def test_one_line_takes_the_last_line_and_bounds_it():
    assert one_line("apt: fetching\nE: Unable to locate package foo\n\n") == "E: Unable to locate package foo"
    assert one_line("") == "(no output)"
    assert len(one_line("x" * 1000)) == 300
