"""Secret audit: nothing secret travels in plain, and the host scripts never
print what they read on stdin.

Program side (mocked runs of every committed Pulumi.*.yaml, see
tests/support/program.py): every resource input and every non-secret stack
output is scanned for PEM private keys, Hetzner-token-like strings and
password values outside secret-marked values; user-data and the client TLS
output must be secret. This is where secretness is enforced, because
CrossGuard validation policies receive secrets already unwrapped and cannot
tell (policy/rules.py, docs/security.md).

Script side: no xtrace anywhere in scripts/, and the real stdin-parsing
functions of configure_runtime.sh, sourced and run in bash, and verify_host.sh
(the Python verification it runs), with a throwaway key, never let the key
text reach stdout or stderr (on success and on the refusal paths) and leave
no key file behind.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from host_verify.inputs import pem_blocks
from tests.scripts.helpers import Result, _run, run_bash, write_contract
from tests.support.host_verify_fake import throwaway_pems
from tests.support.program import ProgramRun, config_from_stack_file, run_program
from tools.lab.harness import is_secret, unwrap

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
STACK_FILES = sorted(ROOT.glob("Pulumi.*.yaml"))

PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
PEM_BLOCK = re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?-----END [A-Z0-9 ]+-----", re.S)
# A Hetzner Cloud API token is 64 letters and digits. Excluded on purpose:
# lowercase hex (SHA-256 digests in triggers and the catalog), runs inside
# longer base64 (a '+' or '/' neighbour), and PEM bodies (64-column lines).
TOKEN = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9]{64}(?![A-Za-z0-9+/=])")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
PASSWORD_KEY = re.compile(r"pass(word|phrase)", re.I)
SECRET = "4dabf18193072939515e22adb298388d"  # pulumi's special signature key
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"


# ---------------------------------------------------------------- the audit


def plain_findings(value: Any, path: str) -> Iterator[str]:
    """`path: what` for every secret-looking thing in `value` outside secret markers."""
    if is_secret(value):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if PASSWORD_KEY.search(str(key)) and item not in (None, "", [], {}) and not is_secret(item):
                yield f"{sub}: a password/passphrase value"
            yield from plain_findings(item, sub)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from plain_findings(item, f"{path}[{i}]")
    elif isinstance(value, str):
        if PRIVATE_KEY.search(value):
            yield f"{path}: a PEM private key"
        for token in TOKEN.findall(PEM_BLOCK.sub("", value)):
            if not HEX64.match(token):
                yield f"{path}: a Hetzner-token-like string {token[:6]}..."


def audit(run: ProgramRun) -> list[str]:
    problems = []
    for reg in run.resources:
        for finding in plain_findings(reg.inputs, ""):
            problems.append(f"{reg.type} {reg.name} ({reg.urn}) input {finding}")
    plain_outputs = {k: v for k, v in run.outputs.items() if not run.output_secret.get(k)}
    for finding in plain_findings(plain_outputs, ""):
        problems.append(f"stack output {finding}")
    return problems


@pytest.fixture(scope="module")
def runs() -> dict[str, ProgramRun]:
    return {path.name: run_program(config_from_stack_file(path), stack=path.stem.split(".")[1]) for path in STACK_FILES}


def test_every_committed_stack_is_audited(runs):
    assert {"Pulumi.dev.yaml", "Pulumi.staging.yaml", "Pulumi.prod.yaml"} <= set(runs)
    for run in runs.values():
        assert run.resources and run.outputs


@pytest.mark.parametrize("stack_file", [p.name for p in STACK_FILES])
def test_no_secret_travels_in_plain(runs, stack_file):
    problems = audit(runs[stack_file])
    assert not problems, "secrets outside secret-marked values:\n" + "\n".join(problems)


@pytest.mark.parametrize("stack_file", [p.name for p in STACK_FILES])
def test_user_data_and_client_tls_are_secret(runs, stack_file):
    run = runs[stack_file]
    for server in run.of_type("hcloud:index/server:Server"):
        assert "userData" in server.secret_inputs(), f"{server.urn}: userData must be secret"
    assert run.output_secret == {"runtimeEndpoint": False, "runtimeClientTls": True, "artifactDownloads": False}


@pytest.mark.parametrize("stack_file", [p.name for p in STACK_FILES])
def test_the_secrets_are_really_there_behind_the_markers(runs, stack_file):
    """Without its markers the same run fails the audit: it is the marking that passes it."""
    run = runs[stack_file]
    exposed = copy.deepcopy(run)
    for reg in exposed.resources:
        reg.inputs = unwrap(reg.inputs)
    exposed.output_secret = {k: False for k in exposed.output_secret}
    problems = audit(exposed)
    assert any("runtimeClientTls.keyPem: a PEM private key" in p for p in problems)
    assert any("input connection.privateKey: a PEM private key" in p for p in problems)
    assert any("-configure " in p and "input stdin: a PEM private key" in p for p in problems)


# ---------------------------------------------------------------- the audit is not vacuous

FAKE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
FAKE_TOKEN = "Zr8" + "aB3dE5fG7hJ9kL2mN4pQ6rS8tU0vW1xY3zA5bC7dE9fG1hJ3kL5mN7pQ9rS1t"  # 64 chars


@pytest.mark.parametrize(
    ("inject", "expect"),
    [
        (lambda i: i["labels"].update(note=FAKE_KEY), "input labels.note: a PEM private key"),
        (lambda i: i["labels"].update(token=f"HCLOUD_TOKEN={FAKE_TOKEN}"), "input labels.token: a Hetzner-token-like"),
        (lambda i: i.update(password="hunter2"), "input password: a password/passphrase value"),
        (lambda i: i["rules"][0].update(passphrase="x"), "input rules[0].passphrase: a password"),
    ],
    ids=["pem", "token", "password", "nested-passphrase"],
)
def test_the_audit_flags_a_secret_injected_into_a_plain_input(runs, inject, expect):
    run = copy.deepcopy(runs["Pulumi.dev.yaml"])
    fw = run.of_type("hcloud:index/firewall:Firewall")[0]
    inject(fw.inputs)
    problems = audit(run)
    assert len(problems) == 1 and expect in problems[0], problems
    assert fw.urn in problems[0] and "runtime-fw" in problems[0]


def test_the_same_key_under_a_secret_marker_passes(runs):
    run = copy.deepcopy(runs["Pulumi.dev.yaml"])
    fw = run.of_type("hcloud:index/firewall:Firewall")[0]
    fw.inputs["labels"] = {SECRET: SECRET_SIG, "value": {"note": FAKE_KEY, "password": "x"}}
    assert audit(run) == []


def test_the_audit_flags_a_key_in_the_plain_endpoint_output(runs):
    run = copy.deepcopy(runs["Pulumi.dev.yaml"])
    run.outputs["runtimeEndpoint"]["caCertPem"] += FAKE_KEY
    assert audit(run) == ["stack output runtimeEndpoint.caCertPem: a PEM private key"]


def test_digests_and_certificates_are_not_mistaken_for_tokens():
    cert_like = "-----BEGIN CERTIFICATE-----\n" + "A" * 64 + "\n-----END CERTIFICATE-----\n"
    assert list(plain_findings({"sha": "0123456789abcdef" * 4, "pem": cert_like}, "x")) == []


# ---------------------------------------------------------------- host scripts never echo secrets


def script_lines() -> Iterator[tuple[str, int, str]]:
    for script in sorted(SCRIPTS.glob("*.sh")):
        for n, line in enumerate(script.read_text().splitlines(), start=1):
            code = line.split("#", 1)[0] if not line.lstrip().startswith("#!") else ""
            yield script.name, n, code


def test_no_script_turns_on_xtrace_or_verbose():
    pattern = re.compile(r"\bset\s+(-[a-zA-Z]*[xv]|-o\s+(xtrace|verbose))|\bbash\s+-[a-zA-Z]*x|BASH_XTRACEFD")
    hits = [f"{name}:{n}: {code.strip()}" for name, n, code in script_lines() if pattern.search(code)]
    assert not hits, "xtrace would print every secret a script handles:\n" + "\n".join(hits)


def throwaway_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def throwaway_cert(tag: str) -> str:
    body = (tag * 64)[:64]
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"


def key_body_lines(pem: str) -> list[str]:
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


def run_sourced(script: str, snippet: str, env: dict[str, str], stdin: str) -> Result:
    """Source scripts/<script> (its main does not run) and run `snippet` in bash."""
    return run_bash(snippet, {"FR_HOST": "audit-host", **env}, stdin, script=script)


def assert_key_not_printed(proc: Result, key: str) -> None:
    for line in key_body_lines(key):
        assert line not in proc.stdout and line not in proc.stderr, "the key text reached the output"
    assert "-----BEGIN PRIVATE KEY-----" not in proc.stdout + proc.stderr


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, str]:
    work = tmp_path / "work"
    work.mkdir()
    root = tmp_path / "fr"
    write_contract(root)
    return {
        "FR_ROOT": str(root),
        "FR_DOCKER_DIR": str(tmp_path / "docker"),
        "FR_WORK_BASE": str(work),
        "FR_SECRET_BASE": str(work),
    }


def test_configure_installs_the_server_key_without_printing_it(dirs):
    key = throwaway_key()
    stdin = throwaway_cert("C") + throwaway_cert("V") + throwaway_cert("S") + key
    env = {**dirs, "FR_DRY_RUN": "0" if os.geteuid() == 0 else "1"}
    proc = run_sourced("configure_runtime.sh", "install_tls_material", env, stdin)
    assert proc.rc == 0, proc.stderr
    assert_key_not_printed(proc, key)
    assert os.listdir(dirs["FR_WORK_BASE"]) == [], "the parsed PEM blocks must not outlive the script"
    if env["FR_DRY_RUN"] == "0":
        written = Path(dirs["FR_DOCKER_DIR"]) / "tls" / "server-key.pem"
        assert written.read_text() == key
        assert oct(written.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize(
    ("order", "words"),
    [
        (lambda c, s, k: k + c + c + s, "stdin block 'stack-ca.pem' to be a certificate"),
        (lambda c, s, k: c + c + s + k + k, None),  # an extra block is ignored, never echoed
        (lambda c, s, k: c + c + s + k.rsplit("-----END", 1)[0], "an unterminated block"),
        (lambda c, s, k: c + k, "4 PEM blocks on stdin"),
    ],
    ids=["key-first", "extra-key", "unterminated", "missing-block"],
)
def test_configure_refusals_name_the_problem_not_the_key(dirs, order, words):
    key = throwaway_key()
    env = {**dirs, "FR_DRY_RUN": "1"}
    stdin = order(throwaway_cert("C"), throwaway_cert("S"), key)
    proc = run_sourced("configure_runtime.sh", "install_tls_material", env, stdin)
    if words is not None:
        assert proc.rc != 0 and words in proc.stderr, proc.stderr
    assert_key_not_printed(proc, key)
    assert os.listdir(dirs["FR_WORK_BASE"]) == []


# verify_host.sh's inputs for a gVisor host in a sandbox stack, besides the directories.
VERIFY_ENV = {
    "PRIVATE_ADDRESS": "10.0.1.9",
    "ENDPOINT_PORT": "2376",
    "VERIFY_IMAGE": "functions-runtime/verify:busybox",
    "COLD_START_RUNS": "3",
    "LIMIT_MAX_MILLICPUS": "2000",
    "VERIFY_OUTSIDE": "192.0.2.10 8080",
    "ISOLATION": "sandbox",
    "KATA_HYPERVISOR": "qemu",
    "GVISOR_RUNSC": "debian",
    "GVISOR_ALLOW_HOST_NETWORK": "false",
    "SSH_PORT": "22",
    "VERIFY_NERDCTL": "true",
    "VERIFY_NAME_PROBE": "deb.debian.org",
}
# A curl that records the key file verify hands it (mode and content), then
# answers as dockerd's /version would.
RECORDING_CURL = """#!/bin/sh
while [ $# -gt 0 ]; do
  if [ "$1" = --key ]; then stat -c %a "$2" >"$AUDIT_OUT.mode"; cat "$2" >"$AUDIT_OUT.key"; fi
  shift
done
echo '{"Version": "26.1.5"}'
"""


def run_verify(env: dict[str, str], stdin: str, *args: str) -> Result:
    return _run(["bash", str(SCRIPTS / "verify_host.sh"), *args], {"FR_HOST": "audit-host", **env}, stdin, 120)


def test_verify_reads_its_client_key_without_printing_it_and_removes_it(dirs, tmp_path):
    key = throwaway_key()
    curl = tmp_path / "bin" / "curl"
    curl.parent.mkdir()
    curl.write_text(RECORDING_CURL)
    curl.chmod(0o755)
    ca_and_cert = "".join(pem_blocks(throwaway_pems())[:2])
    env = {**dirs, **VERIFY_ENV, "PATH": f"{curl.parent}:{os.environ['PATH']}", "AUDIT_OUT": str(tmp_path / "seen")}
    proc = run_verify(env, ca_and_cert + key, "--only", "endpoint-accepts-client-cert")
    assert proc.rc == 0, proc.stderr
    assert (tmp_path / "seen.key").read_text() == key and (tmp_path / "seen.mode").read_text().strip() == "600"
    assert_key_not_printed(proc, key)
    assert os.listdir(dirs["FR_WORK_BASE"]) == [], "the verify client key must not outlive the run"


def test_verify_refusal_does_not_print_the_key(dirs):
    key = throwaway_key()
    env = {**dirs, **VERIFY_ENV}
    proc = run_verify(env, key + throwaway_cert("C") * 2, "--only", "endpoint-accepts-client-cert")
    assert proc.rc == 2 and "stdin block 'ca.pem' to be a certificate" in proc.stderr
    assert_key_not_printed(proc, key)


def test_audit_messages_are_json_safe():
    """Findings are printed in failures; they must never carry the secret itself."""
    findings = list(plain_findings({"k": FAKE_KEY, "t": FAKE_TOKEN, "password": "hunter2"}, "x"))
    text = json.dumps(findings)
    assert "b3BlbnNzaC1" not in text and FAKE_TOKEN not in text and "hunter2" not in text


def test_the_echo_check_catches_a_script_that_prints_the_key(dirs):
    """Non-vacuity: the same harness, with a line that leaks the key, fails the check."""
    if os.geteuid() != 0:
        pytest.skip("writing the key file needs root (chown root:root)")
    key = throwaway_key()
    stdin = throwaway_cert("C") + throwaway_cert("V") + throwaway_cert("S") + key
    leak = 'install_tls_material; cat "$FR_DOCKER_DIR/tls/server-key.pem" >&2'
    proc = run_sourced("configure_runtime.sh", leak, {**dirs, "FR_DRY_RUN": "0"}, stdin)
    with pytest.raises(AssertionError, match="reached the output"):
        assert_key_not_printed(proc, key)
