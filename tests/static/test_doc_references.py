"""No document names a file the project does not have.

Read: every Markdown file, and the comments and docstrings of the Python,
shell, YAML, TOML and TSV files (the files git tracks, and new ones it does
not ignore). In them:

- a path whose first component is a top-level entry of this repository
  (`docs/upgrading.md`, `tests/support/`, `Pulumi.yaml`), backticked or not,
  must name a file or directory the repository has;
- a Markdown file named without a directory (`README.md`), or with one that
  is not this repository's (`hostlab/README.md`), must be one the repository
  has somewhere: the developers' own design notes live outside
  it, so a fact a reader needs belongs in a doc that is in it;
- a Markdown link's relative target must exist, from the linking file.

Not paths of this repository, so not checked: URLs, absolute paths (`/etc/...`,
`/opt/kata/...`), paths under a variable or home (`$FR_WORK/x`, `~/.ssh`),
patterns and placeholders (`tests/hostlab/*.py`, `Pulumi.<stack>.yaml`), and
another project's files, written either `kata-containers:tests/metrics/...`
or followed by "in the <name> repository" (`tests/metrics/... in the Kata
repository`).
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A path token: no URL, absolute path, variable or home before it. A token
# followed by a pattern or placeholder character is a pattern (PATTERN_NEXT).
PATH_TOKEN = re.compile(r"(?<![\w./:~$@%{}<>\\-])[\w.][\w.-]*(?:/[\w.-]+)*/?")
PATTERN_NEXT = ("<", "*", "{", "$", "\\")
UPSTREAM_AFTER = re.compile(
    r"^[`')\"]*\s+(?:in|of|from)\s+(?:the\s+)?(?:[\w.-]+\s+){0,2}(?:repository|repo)\b", re.I
)
MARKDOWN_LINK = re.compile(r"\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
SHELL_COMMENT = re.compile(r"(?:^|\s)#(?!!)(.*)")
COMMENTED = (".sh", ".yaml", ".yml", ".toml", ".tsv")

# References the owners of these files are removing right now (files this
# change may not touch): (file, reference) -> why it is still there. The check
# skips them while they are there; an entry whose file no longer names it fails.
PENDING: dict[tuple[str, str], str] = {}


NOT_THE_PROJECTS = {
    ".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".benchmarks", ".hypothesis"
}


def project_files() -> list[str]:
    """The files git tracks and the new ones it does not ignore (without git: the tree, less caches)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        listed = [
            str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
            if not NOT_THE_PROJECTS & set(p.relative_to(ROOT).parts)
        ]
    return sorted(f for f in listed if (ROOT / f).is_file())


FILES = project_files()
TOP_LEVEL = {f.split("/")[0] for f in FILES}
EXISTING = set(FILES) | {str(Path(f).parents[i]) for f in FILES for i in range(len(Path(f).parents) - 1)}
MARKDOWN_NAMES = {Path(f).name for f in FILES if f.endswith(".md")}


def paths_named(text: str, top_level: set[str] = TOP_LEVEL) -> Iterator[str]:
    """The repository paths and bare Markdown file names `text` names."""
    for match in PATH_TOKEN.finditer(text):
        if text[match.end():].startswith(PATTERN_NEXT):
            continue
        path = match.group(0).rstrip(".")
        if "/" not in path.rstrip("/"):
            if path.endswith(".md"):
                yield path
            continue
        if path.split("/")[0] not in top_level and not path.endswith(".md"):
            continue
        if UPSTREAM_AFTER.match(text[match.end():]):
            continue
        yield path


def is_missing(path: str) -> bool:
    if path.split("/")[0] not in TOP_LEVEL:  # a Markdown file named by its name or from elsewhere
        return Path(path).name not in MARKDOWN_NAMES
    return path.rstrip("/") not in EXISTING


def python_prose(source: str) -> Iterator[tuple[int, str]]:
    """A Python file's comments and docstrings, with their first line."""
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc is not None:
                yield node.body[0].lineno, doc


def prose(name: str) -> Iterator[tuple[int, str]]:
    """The parts of a file that are prose: all of a Markdown file, the comments of code."""
    text = (ROOT / name).read_text(errors="replace")
    if name.endswith(".md"):
        yield from enumerate(text.splitlines(), start=1)
    elif name.endswith(".py"):
        yield from python_prose(text)
    elif name.endswith(COMMENTED) or name.startswith(".ci/"):
        for number, line in enumerate(text.splitlines(), start=1):
            comment = SHELL_COMMENT.search(line)
            if comment:
                yield number, comment.group(1)


def missing_references() -> list[str]:
    found = []
    for name in FILES:
        for number, text in prose(name):
            for path in paths_named(text):
                if is_missing(path) and (name, path) not in PENDING:
                    found.append(f"{name}:{number}: {path}")
            if name.endswith(".md"):
                for target in MARKDOWN_LINK.findall(text):
                    target = target.split("#")[0]
                    if target and not re.match(r"^[a-z][a-z0-9+.-]*:|^/", target, re.I):
                        if not (ROOT / name).parent.joinpath(target).resolve().exists():
                            found.append(f"{name}:{number}: link {target}")
    return found


def test_every_named_file_exists():
    missing = missing_references()
    assert not missing, (
        "these name files the project does not have (point to the doc in the repo that holds the fact, "
        "or drop the reference):\n" + "\n".join(missing)
    )


def test_every_pending_reference_is_still_there():
    """A pending entry goes when its file no longer names the file (or is gone)."""
    stale = [
        f"{name}: {path} ({why})"
        for (name, path), why in PENDING.items()
        if name not in FILES or not any(path in list(paths_named(text)) for _, text in prose(name))
    ]
    assert not stale, "drop these entries of PENDING (tests/static/test_doc_references.py):\n" + "\n".join(stale)


def test_the_files_read_include_docs_code_and_scripts():
    assert {"README.md", "docs/upgrading.md", "__main__.py", "scripts/lib.sh"} <= set(FILES)
    assert "catalog/artifacts.tsv" in FILES
    assert {"docs", "tests", "tools", "scripts", "README.md"} <= TOP_LEVEL


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("see docs/upgrading.md.", ["docs/upgrading.md"]),
        ("(`tests/support/program.py`; tools/lab/)", ["tests/support/program.py", "tools/lab/"]),
        ("`tests/scripts/test_install.py::test_tampered`", ["tests/scripts/test_install.py"]),
        ("the design (DESIGN.md, Verification) and README.md", ["DESIGN.md", "README.md"]),
        ("from shared/ARTIFACTS.md; hostlab/README.md", ["shared/ARTIFACTS.md", "hostlab/README.md"]),
        ("`Pulumi.<stack>.yaml`, `docs/<name>.md`", []),
        # Not this repository's paths.
        ("https://github.com/o/r/blob/main/docs/x.md and http://h/tests/y", []),
        ("/etc/docker/daemon.json, /opt/kata/tests/x, ~/.ssh/config", []),
        ('"$FR_WORK_BASE/tests/x" ${ROOT}/docs/y', []),
        ("`tests/hostlab/*.py`, tests/{a,b}, `policy/config.<stack>.json`", []),
        ("--secrets-provider=<see docs/state-and-delivery.md>", ["docs/state-and-delivery.md"]),
        ("kata-containers:docs/how-to/how-to-use-kata-with-docker.md", []),
        ("(`tests/metrics/cmd/checkmetrics/ci_worker/x.toml` in the Kata repository)", []),
        ("docs/how-to/x.md of the kata-containers repo", []),
        ("and/or, TCP/IP, read/write, lab/replay.py, tls/ca.pem", []),
    ],
)
def test_what_counts_as_a_path_of_this_repository(text, named):
    assert list(paths_named(text, {"docs", "tests", "tools", "README.md", "Pulumi.yaml"})) == named


def test_a_missing_file_is_found():
    """Non-vacuity: the names this check exists for are missing, and real ones are not."""
    assert is_missing("DESIGN.md") and is_missing("shared/ARTIFACTS.md") and is_missing("docs/design.md")
    assert is_missing("tests/support/gone.py") and is_missing("tests/nowhere/")
    assert not is_missing("README.md") and not is_missing("hostlab/README.md")
    assert not is_missing("tests/support/")
    assert not is_missing("docs/upgrading.md") and not is_missing("Pulumi.yaml")
