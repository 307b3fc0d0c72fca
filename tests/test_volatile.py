"""Volatile spans (timestamps, ids), first-difference classification (volatile changes, JSON
re-serialization) and the hazard scan."""

from __future__ import annotations

import json
import os
import time

import pytest

from kvtool.analyze.json_order import Reordered, json_reordered
from kvtool.textscan import (
    Span,
    VolatileChange,
    hazards,
    id_spans,
    timestamp_spans,
    volatile_change,
)


def first_diff(a: str, b: str) -> int:
    return len(os.path.commonprefix([a, b]))


def check_invariants(text: str, spans: list[Span], kind: str) -> None:
    """Sorted, non-overlapping, text is the slice, kind as asked."""
    for s in spans:
        assert s.kind == kind
        assert 0 <= s.start < s.end <= len(text)
        assert text[s.start : s.end] == s.text
    for x, y in zip(spans, spans[1:], strict=False):
        assert x.end <= y.start


# ---------------------------------------------------------------------------------------------
# timestamp_spans

TIMESTAMPS = [
    ("Current date: 2026-11-01T09:03:12Z\nNext", ["2026-11-01T09:03:12Z"]),
    ("at 2026-11-01T09:03:12.345+00:00.", ["2026-11-01T09:03:12.345+00:00"]),
    ("at 2026-11-01T09:03:12+0530 ok", ["2026-11-01T09:03:12+0530"]),
    ("at 2026-11-01T09:03 ok", ["2026-11-01T09:03"]),
    ("logged 2026-11-01 09:03:12 UTC by cron", ["2026-11-01 09:03:12 UTC"]),
    ("logged 2026-11-01 09:03:12\nnext", ["2026-11-01 09:03:12"]),
    ("the date 2026-11-01.", ["2026-11-01"]),
    ("stamp 20261101T090312Z ok", ["20261101T090312Z"]),
    ("Date: Sun, 01 Nov 2026 09:03:12 +0000\n", ["Sun, 01 Nov 2026 09:03:12 +0000"]),
    ("Expires: Sun, 01 Nov 2026 09:03:12 GMT\n", ["Sun, 01 Nov 2026 09:03:12 GMT"]),
    ("Expires: 01 Nov 2026 09:03:12 GMT\n", ["01 Nov 2026 09:03:12 GMT"]),
    ("on November 1, 2026.", ["November 1, 2026"]),
    ("on 1 Nov 2026.", ["1 Nov 2026"]),
    ("on the 1st of November 2026.", ["1st of November 2026"]),
    ("It was Sunday, November 1, 2026, a sunny day", ["Sunday, November 1, 2026"]),
    ("at November 1, 2026 at 9:03 AM sharp", ["November 1, 2026 at 9:03 AM"]),
    ("Nov. 1, 2026 09:03 local", ["Nov. 1, 2026 09:03"]),
    ("Sunday, November 1, 2026 at 9:03:12 PM UTC.", ["Sunday, November 1, 2026 at 9:03:12 PM UTC"]),
    ("$ date\nSun Nov  1 09:03:12 UTC 2026\n", ["Sun Nov  1 09:03:12 UTC 2026"]),
    ("clock 09:03:12 now", ["09:03:12"]),
    ("meet at 9:03 AM.", ["9:03 AM"]),
    ("meet at 9:03 a.m. sharp", ["9:03 a.m."]),
    ("open 9 AM to 5 PM", ["9 AM", "5 PM"]),
    ("on 2026/11/01 and 01/11/2026 and 11/25/2024.", ["2026/11/01", "01/11/2026", "11/25/2024"]),
    ("am 01.11.2026 um 09:03", ["01.11.2026", "09:03"]),
    ("ts=1793005392 ok", ["1793005392"]),
    ('{"ts": 1793005392123}', ["1793005392123"]),
    ('{"type": "tool_call", "created": 1793005392}', ["1793005392"]),
    ("t 1793005392.123 s", ["1793005392.123"]),
    ("epoch 1000000000 and 2099999999", ["1000000000", "2099999999"]),
    ("Epoch end 1793005392.", ["1793005392"]),
    # phrases: the span is the value only
    ("Today is Sunday, November 1, 2026.", ["Sunday, November 1, 2026"]),
    ("Today is 2026-11-01.", ["2026-11-01"]),
    ("Current date: 2026-11-01.\nNext", ["2026-11-01"]),
    ("The current time is 9:03 PM.", ["9:03 PM"]),
    ("Now: 09:03", ["09:03"]),
    ("Current time (UTC): 09:03:12\n", ["09:03:12"]),
    ("Today is Monday.", ["Monday"]),
    ("Current date: November 1\n", ["November 1"]),
    ("As of today, 1 Nov 2026, prices hold.", ["1 Nov 2026"]),
    ("Current date:\n2026-11-01\n", ["2026-11-01"]),
]

NOT_TIMESTAMPS = [
    "Python 3.12 and 3.13",
    "release v1.2.3 (build 42)",
    "founded in 2024; 3 files changed; see line 42",
    "we follow ISO 8601 and RFC 2822",
    "SKU-1234 costs $12.50",
    "aspect 16:9 and 4:3",
    "12345678901 is eleven digits, 999999999 nine, 2100000000 is out of range",
    "1793005392.123.4 is not an epoch; x1793005392 neither; 1793005392abc neither",
    "call 2025550143 or phone: 2025550143",
    "a span of 10,000 tokens at $0.50 per 1M",
    "Monday to Friday we are open",
    "we may 5 times",
    "foo.py:12:34: E501 line too long",
    "mac 12:34:56:78:90:12",
    "March forward. Today is a good day.",
]


@pytest.mark.parametrize(("text", "expected"), TIMESTAMPS)
def test_timestamp_spans(text: str, expected: list[str]) -> None:
    spans = timestamp_spans(text)
    check_invariants(text, spans, "timestamp")
    assert [s.text for s in spans] == expected
    pos = 0
    for s in spans:  # positions: each expected text where it first occurs after the previous span
        assert s.start == text.index(s.text, pos)
        pos = s.end


@pytest.mark.parametrize("text", NOT_TIMESTAMPS)
def test_not_timestamps(text: str) -> None:
    assert timestamp_spans(text) == []


def test_timestamp_exact_positions() -> None:
    text = "Current date: 2026-11-01T09:03:12Z\nNext"
    assert timestamp_spans(text) == [Span("timestamp", 14, 34, "2026-11-01T09:03:12Z")]
    text = "Today is Sunday, November 1, 2026 at 9:03 AM."
    assert timestamp_spans(text) == [
        Span("timestamp", 9, 44, "Sunday, November 1, 2026 at 9:03 AM")
    ]


def test_longest_match_wins() -> None:
    # the date, the time and the whole datetime all match; only the whole one is kept
    text = "x 2026-11-01 09:03:12 y 09:04"
    assert [(s.start, s.text) for s in timestamp_spans(text)] == [
        (2, "2026-11-01 09:03:12"),
        (24, "09:04"),
    ]


# ---------------------------------------------------------------------------------------------
# id_spans

IDS = [
    ("id 550e8400-e29b-41d4-a716-446655440000.", ["550e8400-e29b-41d4-a716-446655440000"]),
    ("ID 550E8400-E29B-41D4-A716-446655440000", ["550E8400-E29B-41D4-A716-446655440000"]),
    ("nonce 9f86d081884c7d659a2feaa0c55ad015 ok", ["9f86d081884c7d659a2feaa0c55ad015"]),
    ("sha e3b0c44298fc1c149afbf4c8996fb92427ae41e4", ["e3b0c44298fc1c149afbf4c8996fb92427ae41e4"]),
    ("commit a1b2c3d4 landed", ["a1b2c3d4"]),
    ("digits 1234567890123456 long", ["1234567890123456"]),
    ("at 0x7f8b2c3d4e50>", ["0x7f8b2c3d4e50"]),
    ("req_01HF8K2M9Q done", ["req_01HF8K2M9Q"]),
    ("trace-4f9a21bc done", ["trace-4f9a21bc"]),
    ("Workspace: ws-7f3a9c2e\n", ["ws-7f3a9c2e"]),
    ("worker ws-1a2b3c4d-7 up", ["ws-1a2b3c4d-7"]),
    ("tool call_abc123def ran", ["call_abc123def"]),
    ("in my-workspace-7f3a9c2e now", ["my-workspace-7f3a9c2e"]),
    ("user_session_abc123 ok", ["user_session_abc123"]),
    ("ws-550e8400-e29b-41d4-a716-446655440000", ["ws-550e8400-e29b-41d4-a716-446655440000"]),
    ("ulid 01ARZ3NDEKTSV4RRFFQ69G5FAV ok", ["01ARZ3NDEKTSV4RRFFQ69G5FAV"]),
    ("token aB3dE5fG7hJ9kL1mN0pQ ok", ["aB3dE5fG7hJ9kL1mN0pQ"]),
    (
        "pkce dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk ok",
        ["dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"],
    ),
    ("Request #1042: hi", ["1042"]),
    ("seq=17;", ["17"]),
    ("request id: 88123", ["88123"]),
    ('{"request_id": 88123, "id": 7}', ["88123", "7"]),
    ("user_id=42 and traceId: 5", ["42", "5"]),
    ("Turn 3 of 10", ["3"]),
    ("Attempt: 2", ["2"]),
    ("see #1042.", ["1042"]),
    ("X-Request-ID: 88123", ["88123"]),
    ("hex-only word ws-deadbe12", ["ws-deadbe12"]),
]

NOT_IDS = [
    "The quick brown fox jumps over the lazy dog, deliberately.",
    "release v1.2.3 on Python 3.12",
    "3 files changed, see line 42, founded 2024",
    "dated 2026-11-01 and 2026-11-01T09:03:12Z",
    "/usr/lib/python3.12/site-packages/requests/__init__.py",
    "a well-known, read-only, state-of-the-art API",
    "call read_file then write_file, then __init__",
    "deadbeef and 12345678 are not ids",
    "colours #ff00aa, #00AAFF and #ff00aaff",
    "SKU-1234, COVID-19, UTF-8, ISO-8601",
    "float64 np_float64 conv2d layer_conv2d x86_64 sha256_digest to_base64",
    "run 3 tests, turn 90 degrees, span 2 columns",
    "model claude-3-5-sonnet-20241022 or gpt-4o-mini or llama-3.1-70b",
    "id3 tags and run1 scripts",
    "curly &#8217; quote",
    "version 1.2.3-beta.4 and 3.12.1",
    "short sha a1b2c3d",
    "ThisIsCamelCase2024 and Base64EncoderFactory",
    "Qwen2.5-Coder-7B-Instruct",
    'colors = {"spring_green4": 29, "medium_purple4": 60, "pale_turquoise1": 159}',
    "if bits & 0b0000111110000:",
    'fill="#000000" style="color: #333333"',
    "dtype x_Float64 and urllib_parse3",
]


@pytest.mark.parametrize(("text", "expected"), IDS)
def test_id_spans(text: str, expected: list[str]) -> None:
    spans = id_spans(text)
    check_invariants(text, spans, "id")
    assert [s.text for s in spans] == expected
    pos = 0
    for s in spans:
        assert s.start == text.index(s.text, pos)
        pos = s.end


@pytest.mark.parametrize("text", NOT_IDS)
def test_not_ids(text: str) -> None:
    assert id_spans(text) == []


def test_id_exact_positions() -> None:
    assert id_spans("Request #1042") == [Span("id", 9, 13, "1042")]
    assert id_spans("w ws-7f3a9c2e-3.") == [Span("id", 2, 15, "ws-7f3a9c2e-3")]


# ---------------------------------------------------------------------------------------------
# volatile_change

UUID_A = "550e8400-e29b-41d4-a716-446655440000"
UUID_B = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
HEX32 = "9f86d081884c7d659a2feaa0c55ad015"

CHANGES = [
    (
        "Current date: 2026-11-01.\nNext",
        "Current date: 2026-11-01T09:03:12Z\nNext",
        "volatile_timestamp",
        "2026-11-01",
        "2026-11-01T09:03:12Z",
    ),
    (
        "t=2026-11-01T09:03:12Z\n",
        "t=2026-11-01T09:03:45Z\n",
        "volatile_timestamp",
        "2026-11-01T09:03:12Z",
        "2026-11-01T09:03:45Z",
    ),
    ("ts 1793005392 x", "ts 1793005405 x", "volatile_timestamp", "1793005392", "1793005405"),
    (
        "Date: Sun, 01 Nov 2026 09:03:12 +0000\n",
        "Date: Sun, 01 Nov 2026 09:04:01 +0000\n",
        "volatile_timestamp",
        "Sun, 01 Nov 2026 09:03:12 +0000",
        "Sun, 01 Nov 2026 09:04:01 +0000",
    ),
    (
        "as of 2026-11-01 ok",
        "as of 1793005392 ok",
        "volatile_timestamp",
        "2026-11-01",
        "1793005392",
    ),
    (
        "Today is Sunday, November 1, 2026.",
        "Today is Monday, November 2, 2026.",
        "volatile_timestamp",
        "Sunday, November 1, 2026",
        "Monday, November 2, 2026",
    ),
    ("Now: 09:03\n", "Now: 10:17\n", "volatile_timestamp", "09:03", "10:17"),
    (f"id {UUID_A}.", f"id {UUID_B}.", "volatile_id", UUID_A, UUID_B),
    ("ws: ws-7f3a9c2e\n", "ws: ws-0b1d9e44\n", "volatile_id", "ws-7f3a9c2e", "ws-0b1d9e44"),
    ("ws: ws-7f3a9c2e\n", "ws: ws-7f3a9c2e-3\n", "volatile_id", "ws-7f3a9c2e", "ws-7f3a9c2e-3"),
    ("ws: ws-7f3a9c2e-3\n", "ws: ws-7f3a9c2e-4\n", "volatile_id", "ws-7f3a9c2e-3", "ws-7f3a9c2e-4"),
    ("Request #1042: hi", "Request #1043: hi", "volatile_id", "1042", "1043"),
    ("seq=17\n", "seq=18\n", "volatile_id", "17", "18"),
    ("ws: ws-7f3a9c2e\n", f"ws: {HEX32}\n", "volatile_id", "ws-7f3a9c2e", HEX32),
    (
        "ws: ws-7f3a9c2e\n",
        "ws: req_8fJk2LmQ9xZ4pR7t\n",
        "volatile_id",
        "ws-7f3a9c2e",
        "req_8fJk2LmQ9xZ4pR7t",
    ),
    (
        "trace 01ARZ3NDEKTSV4RRFFQ69G5FAV\n",
        "trace 01ARZ3NDEKTSV4RRFFQ69G5FAW\n",
        "volatile_id",
        "01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "01ARZ3NDEKTSV4RRFFQ69G5FAW",
    ),
    # a timestamp inside an id-looking line: timestamps take precedence
    ("id: 1793005392\n", "id: 1793005405\n", "volatile_timestamp", "1793005392", "1793005405"),
]

NO_CHANGE = [
    ("Workspace: ws-7f3a9c2e\nBe careful.", "Workspace: ws-7f3a9c2e, region eu\nBe careful."),
    ("Workspace: ws-7f3a9c2e\n", "Workspace: ws-7f3a9c2e-eu\n"),
    (
        "effective 2024-01-01. Refunds within 30 days",
        "effective 2024-01-01. Refunds within 14 days",
    ),
    ("3 files", "4 files"),
    ("Python 3.12", "Python 3.13"),
    ("release v1.2.3", "release v1.2.4"),
    ("Updated 2024-01-01 by Alice", "Updated 2024-01-01 by Bob"),
    ("Effective 2024-01-01", "Effective from 2024-01-01"),
    ("Sale ends November 1, 2026.", "Sale ends November 1, 2026 at noon."),
    (f"Trace {UUID_A} is yours", f"Trace {UUID_A} was yours"),
    (f"Owner: Alice\nTrace {UUID_A}", f"Owner: Bob\nTrace {UUID_A}"),
    ("see line 42", "see line 43"),
    ("run 3 tests", "run 4 tests"),
    ("same text", "same text"),
]


@pytest.mark.parametrize(("a", "b", "label", "ta", "tb"), CHANGES)
def test_volatile_change(a: str, b: str, label: str, ta: str, tb: str) -> None:
    i = first_diff(a, b)
    got = volatile_change(a, b, i)
    assert got is not None
    kind, sa, sb = got.cause, got.before, got.after
    assert kind == label
    assert (sa.text, sb.text) == (ta, tb)
    assert sa.kind == sb.kind == label.removeprefix("volatile_")
    assert a[sa.start : sa.end] == ta and b[sb.start : sb.end] == tb
    assert sa.start <= i <= sa.end and sb.start <= i <= sb.end
    assert sa.start <= i < sa.end or sb.start <= i < sb.end


@pytest.mark.parametrize(("a", "b"), NO_CHANGE)
def test_no_volatile_change(a: str, b: str) -> None:
    assert volatile_change(a, b, first_diff(a, b)) is None


def test_volatile_change_spec_index() -> None:
    a = "Current date: 2026-11-01.\nNext"
    b = "Current date: 2026-11-01T09:03:12Z\nNext"
    got = volatile_change(a, b, 24)
    assert got == VolatileChange(
        "volatile_timestamp",
        Span("timestamp", 14, 24, "2026-11-01"),
        Span("timestamp", 14, 34, "2026-11-01T09:03:12Z"),
    )


def test_volatile_change_far_in_long_text() -> None:
    head = "Stable policy text, version 3.12, effective 2024-01-01.\n" * 4000
    a = head + f"Session {UUID_A} started.\n" + "tail " * 100
    b = head + f"Session {UUID_B} started.\n" + "tail " * 100
    t0 = time.perf_counter()
    got = volatile_change(a, b, first_diff(a, b))
    assert time.perf_counter() - t0 < 0.05
    assert got is not None
    assert got.before == Span("id", len(head) + 8, len(head) + 8 + 36, UUID_A)


def test_volatile_change_long_token_widens_window() -> None:
    tok_a = "aB3dE5fG7hJ9kL1mN0pQ" * 20  # 400 chars, longer than the first window
    tok_b = tok_a[:390] + "Zz9" + tok_a[393:]
    a, b = f"key {tok_a} end", f"key {tok_b} end"
    got = volatile_change(a, b, first_diff(a, b))
    assert got is not None and got.before.text == tok_a and got.after.text == tok_b


def test_volatile_change_rejects_bad_index() -> None:
    with pytest.raises(ValueError):
        volatile_change("abc", "abd", 5)


# ---------------------------------------------------------------------------------------------
# json_reordered

INNER_A = 'x = {"p": {"a": 1, "b": 2}, "q": 3} y'
INNER_B = 'x = {"p": {"b": 2, "a": 1}, "q": 3} y'

REORDERED = [
    ('{"a":1,"b":2}', '{"b":2,"a":1}', 0, ""),
    ('{"a": 1}', '{"a":1}', 0, ""),
    ("[1, 2, 3]", "[1,2,3]", 0, ""),
    # innermost equal value that covers i: the inner object, not the outer one with ".p"
    (INNER_A, INNER_B, INNER_A.index('{"a"'), ""),
    # nested arrays: the object inside the second inner array
    ('[[1, 2], [3, {"x": 1, "y": 2}]]', '[[1, 2], [3, {"y": 2, "x": 1}]]', 13, ""),
    # a JSON blob inside prose, with prose braces before it
    (
        'Use {name} here. Tools: [{"name": "f", "parameters": {"type": "object", "required": []}}]'
        "\nBye",
        'Use {name} here. Tools: [{"name": "f", "parameters": {"required": [], "type": "object"}}]'
        "\nBye",
        len('Use {name} here. Tools: [{"name": "f", "parameters": '),
        "",
    ),
    # whole documents with whitespace-only differences deep inside
    (
        json.dumps({"items": [{"meta": {"k": [1, 2]}}]}),
        json.dumps({"items": [{"meta": {"k": [1, 2]}}]}, separators=(",", ":")),
        0,
        "",
    ),
    # escapes spelled differently: same value
    ('{"k": "\\u00e9"}', '{"k": "é"}', 0, ""),
]

NOT_REORDERED = [
    ('{"a":1}', '{"a":2}'),
    ('{"a":1,"b":2}', '{"b":2,"a":3}'),
    ('{"a": 1}', '{"a": 1.0}'),
    ('{"a": 1}', '{"a": true}'),
    ('{"a": 1', '{"a":1'),
    ('{"a": 1, "b": 2', '{"b": 2, "a": 1'),
    ('{"a":1} then x', '{"a":1} then y'),
    ("no json here at all", "no json here at any"),
    ("{name} and {other}", "{name} and {others}"),
    ("[1, 2, 3]", "[1, 2, 4]"),
]


@pytest.mark.parametrize(("a", "b", "start", "path"), REORDERED)
def test_json_reordered(a: str, b: str, start: int, path: str) -> None:
    assert json_reordered(a, b, first_diff(a, b)) == Reordered(start, path)


@pytest.mark.parametrize(("a", "b"), NOT_REORDERED)
def test_not_json_reordered(a: str, b: str) -> None:
    assert json_reordered(a, b, first_diff(a, b)) is None


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('{"a": 1, ', ""),
        ('{"items": [{"meta": {"x": 1, ', ".items[0].meta"),
        ('[1, [2, 3], {"k": [4, {"a b": {"c": ', '[2].k[1]["a b"]'),
        ('{"s": "not { a [ container", "t": [', ".t"),
        ('{"p": {"q": 1}, "r": {', ".r"),
    ],
)
def test_json_path_format(text: str, path: str) -> None:
    from kvtool.analyze.json_order import _path_at  # the path format json_reordered reports

    assert _path_at(text, 0, len(text)) == path


def test_json_reordered_escaped_in_a_string() -> None:
    # tool-call arguments rendered with tojson: the JSON sits escaped inside a string literal
    schema = {"type": "object", "properties": {"x": {"type": "string"}, "y": {"type": "integer"}}}
    moved = {**schema, "properties": dict(reversed(schema["properties"].items()))}
    a = "call: " + json.dumps({"arguments": json.dumps({"name": "f", "parameters": schema})})
    b = "call: " + json.dumps({"arguments": json.dumps({"name": "f", "parameters": moved})})
    assert json_reordered(a, b, first_diff(a, b)) == Reordered(
        a.index("{\\"), ".parameters.properties"
    )
    c = a.replace('\\"x\\"', '\\"z\\"')  # a real edit inside the string is not a reorder
    assert json_reordered(a, c, first_diff(a, c)) is None


def test_json_reordered_after_sibling_values() -> None:
    # earlier siblings end before i and are skipped; the enclosing array is the value
    a = '[{"a": 1}, {"b": 2}, 3]'
    b = '[{"a": 1}, {"b": 2},3]'
    assert json_reordered(a, b, first_diff(a, b)) == Reordered(0, "")


def test_json_reordered_large_text_is_fast() -> None:
    filler = 'Prose {name} with [brackets], {"k": [1, 2, {"x": "y"}]} and more. ' * 3100
    assert len(filler) > 200_000
    cases = [
        (filler + '{"z": {"a": 1, "b": 2}}', filler + '{"z": {"b": 2, "a": 1}}'),
        (filler + '{"z": {"a": 1, "b": 2}}', filler + '{"z": {"a": 1, "b": 3}}'),
    ]
    doc = {"items": [{"id": k, "meta": {"x": k, "y": [k] * 5}} for k in range(3000)]}
    text = json.dumps(doc)
    cases.append((text, text.replace('"id": 2999', '"id": 3000')))
    deep = "[" * 150 + ", ".join(["1"] * 60_000) + "]" * 150
    cases.append((deep, deep[:-160] + "2" + deep[-159:]))
    results = []
    for a, b in cases:
        i = first_diff(a, b)
        t0 = time.perf_counter()
        results.append(json_reordered(a, b, i))
        assert time.perf_counter() - t0 < 0.1
    assert results[0] == Reordered(len(filler) + 6, "")
    assert results[1:] == [None, None, None]


# ---------------------------------------------------------------------------------------------
# hazards

REFUND_POLICY = """\
You are the support assistant for Northwind Outfitters.
Refund policy (effective 2024-01-01, last revised March 3, 2021):
- Items can be returned within 30 days of delivery; since March 3, 2021 no receipt is needed.
- Orders placed between 11/25/2024 and 12/31/2024 may be returned until January 31, 2025.
- Refunds reach the original payment method within 5-7 business days.
- Gift cards (SKU-1234) are non-refundable. Shipping costs $7.99 and is not refunded.
Hours: Monday to Friday, 9:00 AM - 5:00 PM ET. Phone: +1 (800) 555-0199 or 1-800-555-0199.
"""

CHANGELOG = """\
# Changelog
## v2.3.1 (2024-05-01)
- Fixed a crash in `read_file` when the path had a trailing slash (#1234).
- Python 3.12 support; dropped 3.8. Requires numpy>=1.26.
## v2.3.0 (2024-04-12)
- New `--since` flag accepts ISO 8601 dates (e.g. 2024-04-01) or RFC 2822 dates.
- Reverted commit a1b2c3d and 9f3e2d1c; worker pool ws-7f3a9c2e is the default.
"""

SUPPORT = """\
You help customers of Acme Telecom. Be concise and polite.
Customers may ask about Order 4417 or other order numbers; look them up with lookup_order.
Plans: Basic ($19.99/mo), Plus ($29.99/mo), Max ($49.99/mo). Prices include 20% VAT.
Call center: 202-555-0143, +44 20 7946 0958, or 2025550143. Escalate after 3 failed attempts.
Write dates in ISO 8601; e-mails use RFC 2822. Section 3.12, line 42 of the contract covers
early termination. Issue #512 tracks billing bugs. The office is open 9 AM to 5 PM.
"""

CODE = """\
When writing CSS use the brand colours #ff00aa and #00aaff (#ff00aaff with alpha).
```python
def read_file(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()

BUFFER_SIZE = 0xFFFF
config_path = "/etc/myapp/config.yaml"
log_dir = "~/.local/share/myapp/logs/"
print(np.float64(3.14), x86_64, sha256_digest, __init__)
```
Use well-known, read-only paths like /usr/lib/python3.12/site-packages.
"""

TOOLS = json.dumps(
    [
        {
            "type": "function",
            "function": {
                "name": "lookup_order",
                "description": "Look up an order by its number, e.g. 4417.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "order_number": {"type": "integer", "minimum": 1000},
                        "since": {"type": "string", "format": "date", "example": "2024-01-01"},
                    },
                    "required": ["order_number"],
                },
            },
        }
    ],
    indent=2,
)

STABLE_TEXTS = [REFUND_POLICY, CHANGELOG, SUPPORT, CODE, TOOLS]

INSERTIONS = [
    ("Current time: 2026-11-01T09:03:12Z\n", "timestamp", "2026-11-01T09:03:12Z"),
    ("Current date: 2026-11-01\n", "timestamp", "2026-11-01"),
    ("Today is Sunday, November 1, 2026.\n", "timestamp", "Sunday, November 1, 2026"),
    ("Generated at 1793005392.\n", "timestamp", "1793005392"),
    ("Sent: Sun, 01 Nov 2026 09:03:12 +0000\n", "timestamp", "Sun, 01 Nov 2026 09:03:12 +0000"),
    (f"Trace: {UUID_A}\n", "id", UUID_A),
    (f"Nonce: {HEX32}\n", "id", HEX32),
    ("Request ID: req_01HF8K2M9QXYZ7AB\n", "id", "req_01HF8K2M9QXYZ7AB"),
    ("Request #1042\n", "id", "1042"),
    ("seq=17\n", "id", "17"),
    ("Session 01ARZ3NDEKTSV4RRFFQ69G5FAV\n", "id", "01ARZ3NDEKTSV4RRFFQ69G5FAV"),
]


@pytest.mark.parametrize("text", STABLE_TEXTS)
def test_stable_texts_have_no_hazards(text: str) -> None:
    assert hazards(text) == []


@pytest.mark.parametrize("base", STABLE_TEXTS)
@pytest.mark.parametrize(("line", "kind", "value"), INSERTIONS)
def test_inserted_volatile_line_is_the_only_hazard(
    base: str, line: str, kind: str, value: str
) -> None:
    cut = base.index("\n", len(base) // 2) + 1
    text = base[:cut] + line + base[cut:]
    start = cut + line.index(value)
    assert hazards(text) == [Span(kind, start, start + len(value), value)]


HAZARD_CASES = [
    ("sent 2026-11-01T09:03:12Z", ["2026-11-01T09:03:12Z"]),
    ("at 1793005392", ["1793005392"]),
    ("As of today, 2026-11-01, prices hold", ["2026-11-01"]),
    ("The current time is 9:03 PM.", ["9:03 PM"]),
    ("Now: 09:03", ["09:03"]),
    (f"id {UUID_A}", [UUID_A]),
    ("hash 0123456789abcdef", ["0123456789abcdef"]),
    ("run_01HF8K2M9QAB ok", ["run_01HF8K2M9QAB"]),
    ("Request #1042, Turn 7", ["1042", "7"]),
    ('{"request_id": 88123}', ["88123"]),
]

NOT_HAZARDS = [
    "effective 2024-01-01",
    "since March 3, 2021",
    "in 2024",
    "worker ws-7f3a9c2e",
    "req_01HF8K2M9Q",
    "v1.2.3 and Python 3.12",
    "SKU-1234 and SKU-123456",
    "commit a1b2c3d or a1b2c3d4",
    "open 9:00 AM to 5:00 PM",
    "token aB3dE5fG7hJ9kL1mN0pQ",
    "fixed in #1234",
]


@pytest.mark.parametrize(("text", "expected"), HAZARD_CASES)
def test_hazards(text: str, expected: list[str]) -> None:
    spans = hazards(text)
    assert [s.text for s in spans] == expected
    for s in spans:
        assert text[s.start : s.end] == s.text


@pytest.mark.parametrize("text", NOT_HAZARDS)
def test_not_hazards(text: str) -> None:
    assert hazards(text) == []


def test_hazards_mixed_kinds_sorted() -> None:
    text = f"Trace {UUID_A}\nCurrent time: 2026-11-01T09:03:12Z\nseq=17"
    got = hazards(text)
    assert [(s.kind, s.text) for s in got] == [
        ("id", UUID_A),
        ("timestamp", "2026-11-01T09:03:12Z"),
        ("id", "17"),
    ]
    assert [s.start for s in got] == sorted(s.start for s in got)


def test_hazard_epoch_counter_overlap_reported_once() -> None:
    assert hazards("id: 1793005392") == [Span("timestamp", 4, 14, "1793005392")]


@pytest.mark.parametrize("text", STABLE_TEXTS + [t for t, _ in TIMESTAMPS] + [t for t, _ in IDS])
def test_span_invariants(text: str) -> None:
    check_invariants(text, timestamp_spans(text), "timestamp")
    check_invariants(text, id_spans(text), "id")
    hz = hazards(text)
    for x, y in zip(hz, hz[1:], strict=False):
        assert x.end <= y.start
    ts = set(timestamp_spans(text))
    ids = set(id_spans(text))
    assert all(s in (ts if s.kind == "timestamp" else ids) for s in hz)
