"""No input crashes the all-at-once report (issue 12, class 11).

Property: for any value of any setting's type (and any JSON value at all)
put in place of one or more settings of a valid stack, `parse_settings`
either returns `Settings` or raises `SettingsError` whose every problem
names a `functions-runtime:` key. Never another exception.

Derandomized (the same examples every run) and without Hypothesis's
per-example deadline, so the test is repeatable and never timed.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.settings import Settings, SettingsError, parse_settings
from tests.unit.test_settings import GOOD, HOST_KEY

# Strings a careless or hostile user types: odd digits, paths, URLs, keys.
NASTY_TEXT = st.sampled_from(
    [
        "", " ", "²", "--1", "-0", "٣", "1_000", "1e3", "0x10", "9" * 5000, "1.5", "true", "null",
        "0.0.0.0/0", "::/0", "0.0.0.0/1", "10.0.0.1/16", "fd00::11", "not/a/cidr", "300.1.1.1",
        "/proc/self/environ", "/etc/passwd", "/dev/zero", "~", "..", ".", "/", "catalog", "a\x00b",
        "https://u:p@h/x", "https://h/x?t=1", "http://[::1", "ftp://x", "--privileged",
        "-----BEGIN OPENSSH PRIVATE KEY-----", HOST_KEY, HOST_KEY + "\nssh-rsa AAAA",
        "sk-ssh-ed25519@openssh.com AAAA", "sha256:" + "a" * 64, "x" * 300, "\u202e", "root",
    ]
)
TEXT = st.one_of(st.text(max_size=40), NASTY_TEXT)
INTEGER = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(["²", "--1", "-", "+1", " 7 ", "٣", "1_000", "9" * 5000, "1e3", "0x10", "Infinity"]),
    st.text(alphabet=st.characters(categories=["Nd", "No", "Pd"]), max_size=6),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
)
BOOLEAN = st.one_of(st.booleans(), st.sampled_from(["true", "false", "yes", "1", 1, 0]), TEXT)
TEXT_LIST = st.one_of(st.lists(TEXT, max_size=4), TEXT)
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)

# Every setting, by its path in the raw config, with a strategy of its type.
FIELDS: dict[tuple[Any, ...], st.SearchStrategy[Any]] = {
    ("isolation",): TEXT,
    ("kata", "hypervisor"): st.one_of(TEXT, st.sampled_from(["qemu", "clh"])),
    ("kata", "allowUntestedHypervisor"): BOOLEAN,
    ("network", "ipRange"): TEXT,
    ("network", "subnet"): TEXT,
    ("network", "zone"): TEXT,
    ("admin", "sshKeys"): TEXT_LIST,
    ("admin", "sshSourceCidrs"): TEXT_LIST,
    ("admin", "allowSshFromAnywhere"): BOOLEAN,
    ("endpoint", "port"): INTEGER,
    ("endpoint", "allowedCidrs"): TEXT_LIST,
    ("endpoint", "allowPublicSources"): BOOLEAN,
    ("artifacts", "mirror"): TEXT,
    ("artifacts", "catalog"): TEXT,
    ("artifacts", "localDirs"): TEXT_LIST,
    ("verify", "image"): TEXT,
    ("verify", "imageArchive"): TEXT,
    ("verify", "coldStartRuns"): INTEGER,
    ("hosts", 0, "name"): TEXT,
    ("hosts", 0, "source"): TEXT,
    ("hosts", 0, "count"): INTEGER,
    ("hosts", 0, "serverType"): TEXT,
    ("hosts", 0, "location"): TEXT,
    ("hosts", 0, "image"): TEXT,
    ("hosts", 1, "name"): TEXT,
    ("hosts", 1, "sshUser"): TEXT,
    ("hosts", 1, "sshPort"): INTEGER,
    ("hosts", 1, "sshdPort"): INTEGER,
    ("hosts", 1, "trustOnFirstUse"): BOOLEAN,
    ("hosts", 1, "addresses"): st.lists(st.dictionaries(st.sampled_from(["name", "address", "privateAddress", "hostKey", "x"]), TEXT), max_size=3),
    ("hosts", 1, "addresses", 0, "name"): TEXT,
    ("hosts", 1, "addresses", 0, "address"): TEXT,
    ("hosts", 1, "addresses", 0, "privateAddress"): TEXT,
    ("hosts", 1, "addresses", 0, "hostKey"): TEXT,
    ("dedicatedSshKey",): TEXT,
    # Whole settings, and the top level itself.
    ("hosts",): ANY_JSON,
    ("admin",): ANY_JSON,
    ("endpoint",): ANY_JSON,
    ("artifacts",): ANY_JSON,
    ("verify",): ANY_JSON,
    ("network",): ANY_JSON,
    ("kata",): ANY_JSON,
    ("endpiont",): ANY_JSON,
}


def put(cfg: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    target: Any = cfg
    for part in path[:-1]:
        if isinstance(target, list):
            if not isinstance(part, int) or part >= len(target):
                return  # an earlier change removed this part: nothing to replace
            target = target[part]
        elif isinstance(target, dict):
            target = target.setdefault(part, {})
        else:
            return
        if not isinstance(target, dict | list):
            return
    if isinstance(target, dict):
        target[path[-1]] = value
    elif isinstance(target, list) and isinstance(path[-1], int) and path[-1] < len(target):
        target[path[-1]] = value


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    cfg = copy.deepcopy(GOOD)
    paths = draw(st.lists(st.sampled_from(sorted(FIELDS, key=repr)), min_size=1, max_size=4))
    for path in paths:
        value = draw(st.one_of(FIELDS[path], ANY_JSON))
        put(cfg, path, value)
    return cfg


SETTINGS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def assert_settings_or_named_report(cfg: dict[str, Any]) -> None:
    try:
        result = parse_settings(cfg, "test")
    except SettingsError as err:
        assert err.problems
        for problem in err.problems:
            assert problem.startswith("functions-runtime:"), problem
            config_key, _, message = problem.partition(": ")
            assert config_key and message.strip(), problem
        return
    assert isinstance(result, Settings)


@pytest.mark.parametrize("path", list(FIELDS), ids=lambda p: ".".join(map(str, p)))
@settings(SETTINGS, max_examples=60)
@given(data=st.data())
def test_11_any_value_of_a_settings_type_gives_settings_or_a_named_report(path, data):
    cfg = copy.deepcopy(GOOD)
    put(cfg, path, data.draw(FIELDS[path], label=".".join(map(str, path))))
    assert_settings_or_named_report(cfg)


@settings(SETTINGS, max_examples=300)
@given(configs())
def test_11_several_bad_values_at_once_give_settings_or_a_named_report(cfg):
    assert_settings_or_named_report(cfg)
