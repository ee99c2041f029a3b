"""The producer refuses what the consumer refuses, rule by rule.

Driven by tests/support/endpoint_rules.py, a table with one way to break a
valid document for every rule of `components.endpoint.read_endpoint`:

- the table reaches every refusal in the reader's code (a new rule there
  without a row fails here);
- the reader refuses each row;
- `build_endpoint` refuses each row its inputs can carry, and
  `build_endpoint_host` each host-level row its (facts, report, isolation)
  can carry, with EndpointRefused naming the host and the reader's problem;
- where a builder writes the broken part itself, what it writes is checked.

So `pulumi up` never exports a document its own reader rejects. Pure
functions; the program-level proof (a `vm` stack whose host reports gVisor
fails the update) is in test_program.py.
"""

from __future__ import annotations

import ast
import inspect
import re
from types import TracebackType

import pytest

from components import endpoint
from components.endpoint import (
    EndpointError,
    EndpointRefused,
    build_endpoint,
    build_endpoint_host,
    read_endpoint,
)
from tests.support.endpoint_rules import RULES, Rule, host_inputs, valid_document

READER = ("read_endpoint", "read_endpoint_host")
# Helpers the reader calls that raise EndpointError: each call is a rule.
CHECKS = ("_require", "_refuse_private_keys", "_read_not_after")

IDS = [rule.id for rule in RULES]
BUILD_ENDPOINT = [r for r in RULES if not r.fixed_by_build_endpoint]
BUILD_ENDPOINT_HOST = [r for r in RULES if r.host_level and not r.fixed_by_build_endpoint_host]
FIXED = [r for r in RULES if r.fixed_by_build_endpoint or (r.host_level and r.fixed_by_build_endpoint_host)]


def refusal_sites() -> set[tuple[str, int, int]]:
    """(function, first line, last line) of every refusal in the reader's code."""
    sites = set()
    for fn in ast.parse(inspect.getsource(endpoint)).body:
        if not (isinstance(fn, ast.FunctionDef) and fn.name in READER):
            continue
        for node in ast.walk(fn):
            raised = isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.func
            if isinstance(raised, ast.Name) and raised.id == "EndpointError":
                sites.add((fn.name, node.lineno, node.end_lineno or node.lineno))
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in CHECKS:
                sites.add((fn.name, node.lineno, node.end_lineno or node.lineno))
    return sites


def site_of(tb: TracebackType | None, sites: set[tuple[str, int, int]]) -> tuple[str, int, int]:
    """The refusal site a reader error came from: the innermost reader frame's line."""
    hit = None
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == endpoint.__file__ and code.co_name in READER:
            hit = (code.co_name, tb.tb_lineno)
        tb = tb.tb_next
    assert hit is not None, "the error did not come from the reader"
    containing = [s for s in sites if s[0] == hit[0] and s[1] <= hit[1] <= s[2]]
    assert containing, f"{hit} is not a known refusal site"
    return min(containing, key=lambda s: s[2] - s[1])


def test_the_table_reaches_every_refusal_of_the_reader():
    sites = refusal_sites()
    assert len(sites) >= 20, sites  # the parse found the reader
    reached = {}
    for rule in RULES:
        with pytest.raises(EndpointError) as err:
            read_endpoint(rule.broken())
        reached.setdefault(site_of(err.value.__traceback__, sites), []).append(rule.id)
    missing = sorted(sites - reached.keys(), key=lambda s: s[1])
    lines = inspect.getsource(endpoint).splitlines()
    assert not missing, "reader rules with no row in tests/support/endpoint_rules.py:\n" + "\n".join(
        f"  {fn} line {first}: {lines[first - 1].strip()}" for fn, first, _ in missing
    )


def test_the_valid_document_is_accepted_and_the_inverse_is_faithful():
    doc = valid_document()
    assert read_endpoint(doc).host("cloud-1").runtimes[0].name == "runsc"
    entry = doc["hosts"][0]
    assert build_endpoint_host(*host_inputs(entry), doc["isolation"]) == entry


@pytest.mark.parametrize("rule", RULES, ids=IDS)
def test_the_reader_refuses(rule: Rule):
    with pytest.raises(EndpointError, match=re.escape(rule.message)):
        read_endpoint(rule.broken())


def expected_host(rule: Rule, entry: object, fallback: str | None) -> str | None:
    if not rule.host_level:
        return None
    name = entry.get("name") if isinstance(entry, dict) else None
    return name if isinstance(name, str) else fallback


@pytest.mark.parametrize("rule", BUILD_ENDPOINT, ids=[r.id for r in BUILD_ENDPOINT])
def test_build_endpoint_refuses(rule: Rule):
    doc = rule.broken()
    with pytest.raises(EndpointRefused) as err:
        build_endpoint(doc["caCertPem"], doc["isolation"], doc["hosts"])
    assert rule.message in err.value.problem
    host = expected_host(rule, doc["hosts"][0] if doc["hosts"] else None, "#0")
    assert err.value.host == host
    assert str(err.value).startswith(f"host {host}: " if host else "runtimeEndpoint: "), str(err.value)


@pytest.mark.parametrize("rule", BUILD_ENDPOINT_HOST, ids=[r.id for r in BUILD_ENDPOINT_HOST])
def test_build_endpoint_host_refuses(rule: Rule):
    doc = rule.broken()
    facts, report = host_inputs(doc["hosts"][0])
    with pytest.raises(EndpointRefused) as err:
        build_endpoint_host(facts, report, doc["isolation"])
    assert rule.message in err.value.problem
    assert err.value.host == facts.name


@pytest.mark.parametrize("rule", FIXED, ids=[r.id for r in FIXED])
def test_what_a_builder_writes_itself_keeps_the_rule(rule: Rule):
    assert rule.builder_writes is not None, f"{rule.id}: say what the builder writes instead"
    assert rule.builder_writes(valid_document())
    with pytest.raises(EndpointError):
        read_endpoint(rule.broken())  # and the row does break what the builder writes


def test_a_vm_stack_entry_with_a_sandbox_runtime_names_host_and_problem():
    """The issue's example, as an operator reads it in the failed update."""
    doc = valid_document()
    with pytest.raises(EndpointRefused) as err:
        build_endpoint_host(*host_inputs(doc["hosts"][0]), "vm")
    assert str(err.value) == (
        "host cloud-1: not exported, the endpoint's own reader refuses it: "
        "runtimeEndpoint.hosts['cloud-1'].runtimes[0].isolation: 'sandbox' does not meet the stack's 'vm'"
    )
