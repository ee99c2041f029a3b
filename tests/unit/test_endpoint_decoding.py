"""Bodies read as dockerd's Go decoder reads them: the differential test of key folding.

dockerd decodes a body with Go's `encoding/json`, which matches an object key
to a struct field exactly, else case-insensitively with its own folding. The
policy reads only ASCII keys (parse_json refuses any other key, anywhere in a
body) and folds them as every Go version does: a-z to A-Z.

Go's folding outside ASCII, carried here as data (GO_NON_ASCII_FOLDS), from
Go's own sources: `src/encoding/json/fold.go` (Go 1.21 on: foldName maps a
rune to unicode.ToUpper(unicode.ToLower(r)); before 1.21: bytes.EqualFold-style
matching over unicode.SimpleFold orbits) and `src/unicode/tables.go`
(`caseOrbit`: K k U+212A, S s U+017F; `CaseRanges`: U+0130 lowers to 'i',
U+0131 uppers to 'I'). Those four are the only non-ASCII runes either rule
folds onto an ASCII letter, and every Docker API field name is ASCII letters.

Proves, over every Unicode code point, raw (UTF-8) and as a JSON escape: a key
holding a non-ASCII code point is refused, so no key Go might read as a field
(or ignore) is read otherwise by the policy; an ASCII key matches a field
exactly when Go's ASCII folding says so. Also: duplicates spelled by escapes,
nested objects, escapes that spell a plain key.
Does not prove: which Go built trixie's dockerd (it need not: the policy's
answer is the same for both rules).
"""

from __future__ import annotations

import json

import pytest

from endpoint_authz.rules import Refused, decide, parse_json
from tests.unit.test_endpoint_policy import CONFIG, DOCKERD, LIMITS, assert_allowed, assert_refused, envelope

# rune -> (the ASCII letter Go folds it onto, which Go versions): see the docstring.
GO_NON_ASCII_FOLDS = {
    0x017F: ("S", "every version (SimpleFold orbit S s U+017F; 1.21+ ToUpper(ToLower) = S)"),
    0x212A: ("K", "every version (SimpleFold orbit K k U+212A; 1.21+ ToUpper(ToLower) = K)"),
    0x0130: ("I", "1.21+ only (ToLower(U+0130) = i, then ToUpper = I)"),
    0x0131: ("I", "1.21+ only (ToUpper(U+0131) = I)"),
}
NON_ASCII = "outside ASCII"


def go_ascii_fold(key: str) -> str:
    return "".join(chr(ord(c) - 32) if "a" <= c <= "z" else c for c in key)


def _escaped(cp: int) -> str:
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    v = cp - 0x10000
    return f"\\u{0xD800 + (v >> 10):04x}\\u{0xDC00 + (v & 0x3FF):04x}"


def _pids_body(key_bytes: bytes) -> bytes:
    return b'{"Image":"b","HostConfig":{"Memory":268435456,"NanoCpus":1000000000,"' + key_bytes + b'":64}}'


def test_every_non_ascii_code_point_in_a_key_is_refused_raw_and_escaped():
    """P<cp>dsLimit for every code point: refused when <cp> is outside ASCII,
    whether it arrives as UTF-8 or as a JSON escape (surrogates included)."""
    not_refused = []
    for cp in range(0x80, 0x110000):
        forms = [_escaped(cp).encode()]
        if not 0xD800 <= cp <= 0xDFFF:  # a surrogate has no UTF-8 form
            forms.append(chr(cp).encode())
        for middle in forms:
            try:
                parse_json(_pids_body(b"P" + middle + b"dsLimit"))
            except Refused as err:
                if NON_ASCII not in str(err):
                    not_refused.append((cp, str(err)))
            except (UnicodeDecodeError, ValueError) as err:
                not_refused.append((cp, f"not JSON: {err}"))
            else:
                not_refused.append((cp, "read"))
    assert not_refused == []


def test_raw_utf8_surrogates_are_not_json():
    with pytest.raises(UnicodeDecodeError):
        parse_json(_pids_body(b"P\xed\xa0\x80dsLimit"))


@pytest.mark.parametrize("cp", range(0x80), ids=lambda cp: f"U+{cp:04X}")
def test_an_ascii_key_matches_a_field_exactly_when_gos_folding_says_so(cp):
    """P<cp>dsLimit for every ASCII code point: the create is allowed (the key
    is read as PidsLimit, 64) exactly when Go's folding matches it to
    PidsLimit; otherwise the key is a field the policy does not know."""
    key = "P" + chr(cp) + "dsLimit"
    raw = json.dumps({"Image": "b", "Labels": {"functions-runtime.owner": "functions-runtime consumer"},
                      "HostConfig": {"Memory": 268435456, "NanoCpus": 1000000000, key: 64}}).encode()
    decision = decide(envelope("POST", "/containers/create", raw=raw), CONFIG, False, DOCKERD)
    go_reads_pids_limit = go_ascii_fold(key) == go_ascii_fold("PidsLimit")
    assert decision.allow == go_reads_pids_limit, decision.msg
    if not go_reads_pids_limit:
        assert "a field this endpoint's policy does not know" in decision.msg


@pytest.mark.parametrize("cp", sorted(GO_NON_ASCII_FOLDS), ids=lambda cp: f"U+{cp:04X}")
def test_the_runes_go_folds_onto_ascii_are_refused_in_every_field_name(cp):
    letter, _ = GO_NON_ASCII_FOLDS[cp]
    fields = [name for name in ("PidsLimit", "CpuPeriod", "Privileged", "SecurityOpt", "KernelMemory", "Sysctls")
              if letter in name.upper()]
    assert fields
    for field in fields:
        i = field.upper().index(letter)
        key = field[:i] + chr(cp) + field[i + 1:]
        raw = json.dumps({"Image": "b", "HostConfig": {**LIMITS, key: 1}}).encode()
        assert_refused(envelope("POST", "/containers/create", raw=raw), NON_ASCII)


def test_dotless_i_key_is_not_pids_limit():
    # The bypass: Python upper-cases U+0131 to I; the policy no longer folds it at all.
    raw = b'{"Image":"b","HostConfig":{"Memory":268435456,"NanoCpus":1000000000,"P\\u0131dsLimit":64}}'
    msg = assert_refused(envelope("POST", "/containers/create", raw=raw), NON_ASCII)
    assert "'P\\u0131dsLimit'" in msg


def test_dotless_i_cpu_period_is_refused_raw():
    body = {"Image": "b", "HostConfig": {**LIMITS, "CpuQuota": 2000000, "CpuPer\u0131od": 1000000}}
    assert_refused(envelope("POST", "/containers/create", raw=json.dumps(body, ensure_ascii=False).encode()), NON_ASCII)


def test_non_ascii_keys_are_refused_anywhere_in_a_body():
    for body in (
        {"Labels": {"caf\u00e9": "1"}},  # a map's key
        {"Healthcheck": {"Test": ["CMD", "true"], "\u0130nterval": 1}},  # a nested struct
        {"ExposedPorts": {"80/tcp": {"\u017f": 1}}},  # a value the policy does not read
        {"NetworkingConfig": {"EndpointsConfig": {"n\u00e9t": {}}}},
    ):
        raw = json.dumps({"Image": "b", "HostConfig": LIMITS, **body}).encode()
        assert_refused(envelope("POST", "/containers/create", raw=raw), NON_ASCII)


def test_non_ascii_values_are_read_as_values():
    raw = json.dumps({"Image": "b", "Env": ["GREETING=gr\u00fc\u00df dich"],
                      "Labels": {"functions-runtime.owner": "functions-runtime consumer", "note": "\u00e9t\u00e9"},
                      "HostConfig": LIMITS}).encode()
    assert_allowed(envelope("POST", "/containers/create", raw=raw))


@pytest.mark.parametrize(
    "raw",
    [
        # An escape that spells a plain ASCII key is that key (Go unescapes before matching).
        b'{"Image":"b","Labels":{"functions-runtime.owner":"functions-runtime consumer"},'
        b'"HostConfig":{"Memory":268435456,"PidsLimit":64,"NanoCpus":1000000000,"\\u0050rivileged":true}}',
        b'{"Image":"b","Labels":{"functions-runtime.owner":"functions-runtime consumer"},'
        b'"\\u0048ostconfig":{"Memory":268435456,"PidsLimit":64,"NanoCpus":1000000000,"privileged":true}}',
    ],
)
def test_escapes_that_spell_a_key_are_read_as_that_key(raw):
    assert_refused(envelope("POST", "/containers/create", raw=raw), "--privileged")


@pytest.mark.parametrize(
    "raw",
    [
        # The same field twice, once escaped: Go takes the last; the policy refuses.
        b'{"Image":"b","HostConfig":{"Memory":268435456,"PidsLimit":64,"NanoCpus":1000000000,'
        b'"Privileged":false,"\\u0070rivileged":true}}',
        # Twice in a nested object (Go merges objects; the policy refuses).
        b'{"Image":"b","HostConfig":{"Memory":268435456,"PidsLimit":64,"NanoCpus":1000000000,'
        b'"LogConfig":{"Type":"json-file"},"logconfig":{"Type":"syslog"}}}',
        # Twice inside a list item.
        b'{"Image":"b","HostConfig":{"Memory":268435456,"PidsLimit":64,"NanoCpus":1000000000,'
        b'"Mounts":[{"Type":"volume","Source":"data","Target":"/d","type":"bind"}]}}',
    ],
)
def test_a_field_given_twice_is_refused_however_spelled(raw):
    assert_refused(envelope("POST", "/containers/create", raw=raw), "given more than once")
