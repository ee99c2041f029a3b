"""Progress of the lab's long work: each phase with its elapsed time.

On a terminal one live line is redrawn every second (`lab: install 42 s`)
and left as `lab: install done in 74.8 s`. On a pipe or in a log (CI, `|
tee`) each phase prints a start line, a heartbeat at least every
`HEARTBEAT_S` seconds while it runs, and an end line, so nothing is silent
for longer than that. A failed phase keeps its one-line reason and says
where the full log is.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

PREFIX = "lab"
# Longest silence on a pipe while a phase runs.
HEARTBEAT_S = 10.0
# How often the live line on a terminal is redrawn.
REDRAW_S = 1.0


class PhaseFailed(Exception):
    """A phase failed; `reason` is one line, `log` where the rest is."""

    def __init__(self, phase: str, reason: str, log: Path | None = None) -> None:
        self.phase, self.reason, self.log = phase, reason, log
        where = f" (full log: {log})" if log else ""
        super().__init__(f"{phase} failed: {reason}{where}")


def one_line(text: str, limit: int = 300) -> str:
    """The last non-empty line of `text`, shortened to `limit` characters."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else "(no output)"
    return line if len(line) <= limit else line[: limit - 3] + "..."


class Progress:
    """Reports phases to `stream` (a live line on a terminal, lines on a pipe)."""

    def __init__(
        self,
        stream: TextIO | None = None,
        live: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval: float | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.clock = clock
        self.interval = interval if interval is not None else (REDRAW_S if self.live else HEARTBEAT_S)
        self.log: Path | None = None
        self._phase: str | None = None
        self._started = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def say(self, message: str) -> None:
        """A line of its own (clears a live line first)."""
        with self._lock:
            self._write(("\r\033[K" if self.live and self._phase else "") + f"{PREFIX}: {message}\n")

    def tick(self) -> None:
        """Redraw the live line, or print a heartbeat on a pipe."""
        with self._lock:
            if self._phase is None:
                return
            elapsed = self.clock() - self._started
            if self.live:
                self._write(f"\r\033[K{PREFIX}: {self._phase} {elapsed:.0f} s")
            else:
                self._write(f"{PREFIX}: {self._phase}: still running, {elapsed:.0f} s\n")

    def _ticker(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Report `name` while the block runs; its end with the elapsed time."""
        with self._lock:
            self._phase, self._started = name, self.clock()
            self._write(f"\r\033[K{PREFIX}: {name} 0 s" if self.live else f"{PREFIX}: {name}...\n")
        self._stop.clear()
        ticker = threading.Thread(target=self._ticker, name=f"progress-{name}", daemon=True)
        ticker.start()
        ok = False
        try:
            yield
            ok = True
        finally:
            self._stop.set()
            ticker.join()
            with self._lock:
                elapsed = self.clock() - self._started
                head = "\r\033[K" if self.live else ""
                status = "done in" if ok else "failed after"
                self._write(f"{head}{PREFIX}: {name} {status} {elapsed:.1f} s\n")
                self._phase = None
