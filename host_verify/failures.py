"""Failure families: one exit code each (0 = verified), as the shell verify had."""

from __future__ import annotations

EXIT_INPUTS = 2
EXIT_PREFLIGHT = 10
EXIT_ENDPOINT = 11
EXIT_RUNTIMES = 12
EXIT_IMAGE = 13
EXIT_KERNEL = 14
EXIT_ISOLATION = 15
EXIT_COLD_START = 16
EXIT_POLICY = 17
EXIT_LIMITS = 18
EXIT_CONTAINERD = 19

FAMILIES = {
    "inputs": EXIT_INPUTS,
    "preflight": EXIT_PREFLIGHT,
    "endpoint": EXIT_ENDPOINT,
    "runtimes": EXIT_RUNTIMES,
    "image": EXIT_IMAGE,
    "kernel": EXIT_KERNEL,
    "isolation": EXIT_ISOLATION,
    "cold-start": EXIT_COLD_START,
    "policy": EXIT_POLICY,
    "limits": EXIT_LIMITS,
    "containerd": EXIT_CONTAINERD,
}


def one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\t", " ").replace("\n", " ")


def tail(text: str, lines: int = 1) -> str:
    return "\n".join(text.rstrip("\n").split("\n")[-lines:])


class Failure(Exception):
    """A check failed: what was expected, what was found, what to do."""

    def __init__(self, check: str, code: int, expected: str, found: str, todo: str) -> None:
        self.check, self.code = check, code
        self.expected, self.found, self.todo = one_line(expected), one_line(found), one_line(todo)
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return f"expected {self.expected}; found {self.found}; to fix: {self.todo}"
