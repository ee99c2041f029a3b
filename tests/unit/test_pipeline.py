"""The host pipeline table (components/pipeline.py) against the scripts it runs.

Proves, from the scripts' text and from the program's registered commands:
each step is handed exactly the variables its script (and the lib.sh
functions it calls) reads; a setting re-runs the first step that reads it
and what follows, never an earlier step; the table's order is the order of
the registered commands. Does not prove what the scripts do with the values
(tests/scripts and the hostlab do).
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import pytest

from components.pipeline import (
    HOST_STEPS,
    RETIRE_STEP,
    SCRIPT_COMMON_ENV,
    SEAL_STEP,
    VARIABLES,
    step_env,
    steps_through,
)
from tests.support.program import config_from_stack_file, run_program

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
LAB = ROOT / "Pulumi.lab.yaml"
FUNCTION = re.compile(r"^([a-z_][a-z0-9_]*)\(\) \{\n(.*?)^\}\n", re.S | re.M)
VARIABLE_REF = re.compile(r"\$\{?!?([A-Z][A-Z0-9_]*)")


def without_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")) + "\n"


def lib_functions() -> dict[str, str]:
    return {m.group(1): m.group(2) for m in FUNCTION.finditer(without_comments((SCRIPTS / "lib.sh").read_text()))}


def lib_top_level() -> str:
    return FUNCTION.sub("", without_comments((SCRIPTS / "lib.sh").read_text()))


def variables_read(script: str) -> set[str]:
    """The program variables a script reads: its own text, lib.sh's top
    level, and every lib.sh function it calls, transitively."""
    text = without_comments((SCRIPTS / script).read_text())
    if "lib.sh" not in text:
        bodies = [text]
    else:
        functions = lib_functions()
        bodies = [text, lib_top_level()]
        pending, seen = [text], set()
        while pending:
            body = pending.pop()
            for name, fn_body in functions.items():
                if name not in seen and re.search(rf"(?<![\w-]){name}(?![\w-])", body):
                    seen.add(name)
                    bodies.append(fn_body)
                    pending.append(fn_body)
    refs = {v for body in bodies for v in VARIABLE_REF.findall(body)}
    if "host_verify/__main__.py" in text:
        # The wrapper runs the Python verification: the variables its code names.
        python = "".join(p.read_text() for p in sorted((ROOT / "host_verify").glob("*.py")))
        refs |= set(re.findall(r'"([A-Z][A-Z0-9_]*)"', python))
    return refs & set(VARIABLES)


@pytest.mark.parametrize(
    "step", [s for s in (*HOST_STEPS, SEAL_STEP, RETIRE_STEP) if s.kind != "upload"], ids=lambda s: s.name
)
def test_each_step_is_handed_exactly_what_its_script_reads(step):
    handed = set(step_env(step))
    read = variables_read(step.script)
    assert handed == read, (
        f"step {step.name} ({step.script}): handed but not read {sorted(handed - read)}, "
        f"read but not handed {sorted(read - handed)}"
    )


def test_install_does_not_read_the_kata_hypervisor():
    install = next(s for s in HOST_STEPS if s.name == "install")
    assert "KATA_HYPERVISOR" not in step_env(install)


def test_every_variable_is_read_by_some_step():
    used = {v for s in (*HOST_STEPS, RETIRE_STEP, SEAL_STEP) for v in step_env(s)}
    assert set(VARIABLES) == used | set(SCRIPT_COMMON_ENV)


def test_steps_through_install_is_the_tables_prefix():
    names = [s.name for s in steps_through("install")]
    assert names == ["wait", "payload", "bootstrap", "install"]
    with pytest.raises(ValueError, match="no step 'bake'"):
        steps_through("bake")


def lab_config() -> dict:
    return config_from_stack_file(LAB)


def triggers_by_step(config: dict) -> dict[str, list]:
    run = run_program(config, stack="lab")
    return {r.name.split("-", 2)[-1]: r.plain.get("triggers") for r in run.of_type("command:remote:Command")}


def with_setting(config: dict, path: str, value: object) -> dict:
    changed = copy.deepcopy(config)
    top, _, rest = path.partition(".")
    full = f"functions-runtime:{top}"
    if rest:
        changed[full] = {**changed.get(full, {}), rest: value}
    else:
        changed[full] = value
    return changed


ORDER = [s.name for s in HOST_STEPS if s.kind != "upload"]
ADMIN_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKJrmllVu4fMVCnQiQh96iGQMhpTa/0BpPT/hQl0cgYS admin@example"


@pytest.mark.parametrize(
    ("setting", "value", "first_step"),
    [
        ("kata", {"hypervisor": "clh", "allowUntestedHypervisor": True}, "configure"),
        ("artifacts.mirror", "https://mirror.example/kata", "install"),
        ("gvisor.runsc", "debian", "install"),
        ("gvisor.allowHostNetworkStack", True, "configure"),
        ("endpoint.port", 2400, "firewall"),
        ("verify.coldStartRuns", 7, "verify"),
        ("admin.sshKeys", [ADMIN_KEY], "keys"),
        # The policy's configuration: configure writes it (the plugin re-reads it).
        ("endpoint.revoked", {"serials": ["0abc"]}, "configure"),
        ("endpoint.limits", {"maxPids": 2048}, "configure"),
    ],
)
def test_a_setting_reruns_the_first_step_that_reads_it_and_what_follows(setting, value, first_step):
    before = triggers_by_step(lab_config())
    after = triggers_by_step(with_setting(lab_config(), setting, value))
    changed = [step for step in ORDER if before[step] != after[step]]
    assert changed == ORDER[ORDER.index(first_step):], f"{setting} re-ran {changed}"


def test_the_untested_hypervisor_opt_in_alone_reruns_no_step():
    """kata.allowUntestedHypervisor is a preview-time acknowledgement: no host reads it."""
    before = triggers_by_step(lab_config())
    after = triggers_by_step(with_setting(lab_config(), "kata.allowUntestedHypervisor", True))
    assert before == after


def test_registered_commands_follow_the_table_and_carry_only_their_variables():
    run = run_program(lab_config(), stack="lab")
    # The delete-time retire step is no link of the chain (tests/unit/test_golden_image.py).
    commands = [c for c in run.of_type("command:remote:Command") if not c.name.endswith("-retire")]
    host = commands[0].name.rsplit("-wait", 1)[0]
    by_step = {c.name[len(host) + 1:]: c for c in commands}
    assert list(by_step) == ORDER
    for previous, step in zip(ORDER, ORDER[1:], strict=False):
        assert by_step[previous].urn in by_step[step].dependencies, f"{step} must run after {previous}"
    for step in (s for s in HOST_STEPS if s.kind == "script"):
        words = shlex.split(by_step[step.name].plain["create"])
        assigned = {w.split("=", 1)[0] for w in words if re.match(r"^[A-Z_]+=", w)}
        assert assigned == set(step_env(step)), step.name
