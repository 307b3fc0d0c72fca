"""OpenTelemetry GenAI telemetry in OTLP/JSON (``otel-genai``).

Schema sources: the GenAI semantic conventions (open-telemetry/semantic-conventions
``docs/gen-ai/gen-ai-spans.md``, ``gen-ai-events.md``, the input-message, system-instruction
and tool-definition JSON schemas beside them, ``model/gen-ai/deprecated/events-deprecated.yaml``
for the per-message events; the cache-write rename to ``gen_ai.usage.cache_write.input_tokens``
of semantic-conventions-genai#440), the OTLP/JSON encoding rules (hex ids, int64 as strings,
enums as integers), and the instrumentations' own output.

Fixtures (``tests/fixtures/otel``, written from ``conversations.calls()`` by
``make_fixtures.py``, whose docstring says how to rerun it and what is post-processed: span
start and log times set to the calls' ts, the conversation id and user set the documented
ways: the end user's ``user.id`` by a span processor and a log record processor):

- produced by the real libraries: ``genai-openai.jsonl`` (opentelemetry-instrumentation-genai-
  openai 1.3b0, content on spans), ``genai-openai-events.*`` (content on the operation-details
  event only), ``openai-v2-latest.jsonl`` (openai-v2 2.4b0 with the latest-conventions opt-in),
  ``openai-v2-legacy.*`` (openai-v2 2.4b0 by default: per-message log events);
- hand-made per the conventions: ``spec-forms.jsonl.gz`` (structured attribute values, the
  system prompt in ``gen_ai.system_instructions``, flat tool definitions, the
  ``cache_creation`` name, non-chat spans, a snake_case line).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest
from conversations import calls, openai_chat_record
from formats_check import (
    assert_accounted,
    assert_hit_rates_match_reference,
    assert_matches_calls,
    fixture_module,
    hit_rates,
    ingest_one,
    reference_file,
    stored_requests,
    write_jsonl,
)

from kvtool.errors import InputError
from kvtool.ingest.formats import Normalized, Skip, check_message
from kvtool.ingest.formats.otel import any_value, records
from kvtool.ingest.formats.registry import normalizer

FIXTURES = Path(__file__).parent / "fixtures" / "otel"
FULL = ("genai-openai.jsonl", "spec-forms.jsonl.gz", "genai-openai-events.logs.jsonl.gz")


MAKE = fixture_module(FIXTURES, "otel_make_fixtures")  # its spec-form writer needs no OTel library
normalize = normalizer("otel-genai", 512)


def one(line: dict) -> Normalized:
    """The one request of a one-span line."""
    (rec,) = list(records(line))
    return normalize(rec)


def span_line(attrs: dict, scope: dict | None = None, **span) -> dict:
    """A one-span OTLP/JSON line with ``attrs`` encoded as AnyValues."""
    body = {
        "spanId": "00f067aa0ba902b7",
        "name": "chat m",
        "kind": 3,
        "startTimeUnixNano": "1767225600125000000",
        **span,
        "attributes": MAKE._kv(attrs),
    }
    return {
        "resourceSpans": [
            {"resource": {}, "scopeSpans": [{"scope": scope or {"name": "x"}, "spans": [body]}]}
        ]
    }


CHAT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "m",
    "gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}],
}


# ---------------------------------------------------------------------------------------------
# the fixtures, field by field


@pytest.mark.parametrize("name", FULL)
def test_fixture_ingests_field_by_field(tmp_path, name):
    """Real genai-openai spans and details events, and the hand-made spec forms: every call
    comes back with its messages, tools, model, ns start time, response id, conversation id,
    tenant (resource or span ``tenant.id``), end user (``user.id``) and usage (cache reads and
    writes), 0 rejects."""
    cs = calls()
    con, report = ingest_one(tmp_path, FIXTURES / name)
    assert (report.format, report.requests, report.rejected) == ("otel-genai", len(cs), 0)
    assert_accounted(con)
    got = stored_requests(con)
    assert_matches_calls(got, cs, time_precision=1e-6)
    skipped = con.execute("SELECT reason FROM rejects WHERE skipped ORDER BY ALL").fetchall()
    reasons = {r for (r,) in skipped}
    if name == "genai-openai.jsonl":  # the workflow spans that carry the conversation id
        assert reasons == {"operation 'invoke_workflow' is not a chat call"}
        assert report.out_of_scope == len(cs)
    elif name.startswith("spec"):
        assert reasons == {
            "operation 'execute_tool' is not a chat call",
            "operation 'embeddings' is not a chat call",
            "span 'POST' (kind 3) has no gen_ai.operation.name: not a GenAI call",
        }
    else:
        assert report.out_of_scope == 0


def test_batches_are_split_into_items(tmp_path):
    """Several spans per line: each is its own record with an item number, lines not requests."""
    con, report = ingest_one(tmp_path, FIXTURES / "genai-openai.jsonl")
    assert report.lines == 5 and report.records == 24
    items = con.execute("SELECT line, item FROM requests ORDER BY line, item").fetchall()
    assert len(set(items)) == 12 and max(i for _, i in items) >= 1


@pytest.mark.parametrize("name", FULL)
def test_hit_rates_match_the_reference(tmp_path, name):
    """The same calls give the OpenAI chat reference's ideal hit rate exactly; the observed one
    comes from ``gen_ai.usage.cache_read.input_tokens`` over ``input_tokens`` (which includes
    the cached tokens)."""
    assert_hit_rates_match_reference(FIXTURES / name, tmp_path)


def test_detection_and_explicit_format(tmp_path):
    """Detected without a format; ``fmt='otel-genai'`` works; a contradicted choice is refused
    in one line, both ways."""
    path = FIXTURES / "genai-openai.jsonl"
    _, report = ingest_one(tmp_path, path, fmt="otel-genai")
    assert report.requests == 12
    with pytest.raises(InputError, match="looks like otel-genai, not openai-chat"):
        ingest_one(tmp_path, path, fmt="openai-chat")
    ref = reference_file(tmp_path, calls())
    with pytest.raises(InputError, match="looks like openai-chat, not otel-genai"):
        ingest_one(tmp_path, ref, fmt="otel-genai")


def test_spec_fixture_is_what_the_script_writes(tmp_path):
    """The committed hand-made fixture is exactly what ``make_fixtures.write_spec_forms``
    writes from ``calls()`` today."""
    MAKE.write_spec_forms(tmp_path)
    assert (tmp_path / "spec-forms.jsonl.gz").read_bytes() == (
        FIXTURES / "spec-forms.jsonl.gz"
    ).read_bytes()


def _lines(name: str) -> list[dict]:
    data = (FIXTURES / name).read_bytes()
    data = gzip.decompress(data) if name.endswith(".gz") else data
    return [orjson.loads(line) for line in data.splitlines()]


def test_real_fixtures_are_otlp_json():
    """What the script wrote follows the OTLP/JSON rules the reader relies on: hex ids, int64
    as strings, JSON-string content attributes on spans, structured ones on events."""
    span = _lines("genai-openai.jsonl")[0]["resourceSpans"][0]["scopeSpans"][1]["spans"][0]
    assert len(span["traceId"]) == 32 and int(span["spanId"], 16) >= 0
    assert isinstance(span["startTimeUnixNano"], str)
    attrs = {a["key"]: a["value"] for a in span["attributes"]}
    assert "stringValue" in attrs["gen_ai.input.messages"]
    log = _lines("genai-openai-events.logs.jsonl.gz")[0]["resourceLogs"][0]["scopeLogs"][0]
    attrs = {a["key"]: a["value"] for a in log["logRecords"][0]["attributes"]}
    assert "arrayValue" in attrs["gen_ai.input.messages"]


# ---------------------------------------------------------------------------------------------
# what the instrumentations leave out


def test_spans_without_content_are_incomplete_with_usage(tmp_path):
    """Content captured on events only: the spans still count, as incomplete requests with
    their usage (observed hit rate), never as prompts."""
    cs = calls()
    con, report = ingest_one(tmp_path, FIXTURES / "genai-openai-events.traces.jsonl")
    assert (report.requests, report.rejected, report.out_of_scope) == (12, 0, 12)
    got = stored_requests(con)
    for s, c in zip(got, sorted(cs, key=lambda c: c.ts), strict=True):
        assert s.messages is None and s.incomplete.startswith("no gen_ai.input.messages")
        _assert_identity(s, c)
        assert (s.observed_prompt_tokens, s.observed_cached_tokens, s.cache_write_tokens) == (
            c.prompt_tokens,
            c.cached_tokens,
            c.cache_write_tokens,
        )


def _assert_identity(s, c) -> None:
    """The stored request's ids, tenant, end user and model are the call's."""
    assert (s.request_id, s.session_id, s.tenant, s.end_user, s.model) == (
        c.request_id,
        c.session_id,
        c.tenant,
        c.user,
        c.model,
    )


def _no_tools_reference(tmp_path: Path) -> Path:
    records_ = []
    for c in calls():
        rec = openai_chat_record(c)
        del rec["request"]["tools"]
        records_.append(rec)
    return write_jsonl(tmp_path / "reference-no-tools.jsonl", records_)


def test_openai_v2_latest_records_no_cache_counts(tmp_path):
    """openai-v2 2.4b0 (opt-in path, util-genai 0.4b0 scope) records neither tools nor cache
    counts on chat spans: cached tokens are unknown there, not 0, and the observed hit rate is
    not made up."""
    cs = calls()
    path = FIXTURES / "openai-v2-latest.jsonl"
    con, report = ingest_one(tmp_path, path)
    assert (report.requests, report.rejected) == (12, 0)
    got = stored_requests(con)
    for s, c in zip(got, sorted(cs, key=lambda c: c.ts), strict=True):
        assert s.messages == c.openai_messages() and s.tools is None
        _assert_identity(s, c)
        assert (s.observed_prompt_tokens, s.output_tokens) == (c.prompt_tokens, c.output_tokens)
        assert s.observed_cached_tokens is None and s.cache_write_tokens is None
    ideal_ref, _ = hit_rates(_no_tools_reference(tmp_path), tmp_path)
    assert hit_rates(path, tmp_path) == (ideal_ref, None)


def test_openai_v2_legacy_events_and_spans(tmp_path):
    """The default (pre-1.37) form: per-message log events become one request per span with
    the messages only (model, usage, session and tools are on the span); the spans, without
    content, are incomplete requests whose cache counts are unknown."""
    cs = sorted(calls(), key=lambda c: c.ts)
    con, report = ingest_one(tmp_path, FIXTURES / "openai-v2-legacy.logs.jsonl.gz")
    assert (report.format, report.requests, report.rejected) == ("otel-genai", 12, 0)
    assert report.lines == 6  # two calls' events per line, grouped by span id
    got = stored_requests(con)
    for s, c in zip(got, cs, strict=True):
        assert s.messages == c.openai_messages() and s.tools is None
        assert abs(s.ts - c.ts) < 1e-6 and (s.tenant, s.end_user) == (c.tenant, c.user)
        assert s.model is None and s.session_id is None and s.observed_prompt_tokens is None
        assert len(s.request_id) == 16  # the span id
    ideal_ref, _ = hit_rates(_no_tools_reference(tmp_path), tmp_path)
    assert hit_rates(FIXTURES / "openai-v2-legacy.logs.jsonl.gz", tmp_path) == (ideal_ref, None)

    con, report = ingest_one(tmp_path, FIXTURES / "openai-v2-legacy.traces.jsonl")
    spans = stored_requests(con)
    assert [s.request_id for s in spans] == [c.request_id for c in cs]
    assert [(s.tenant, s.end_user) for s in spans] == [(c.tenant, c.user) for c in cs]
    assert all(s.incomplete and s.observed_cached_tokens is None for s in spans)
    assert [s.observed_prompt_tokens for s in spans] == [c.prompt_tokens for c in cs]


# ---------------------------------------------------------------------------------------------
# the traps of the schema


def test_input_tokens_include_cached_and_absent_cache_counts_are_zero():
    """``input_tokens`` is the whole prompt (cached tokens are not added to it); an absent
    ``cache_read`` / ``cache_write`` count is 0 when ``input_tokens`` is there (util-genai
    >= 1.2b0 omits zeros), unknown when it is not."""
    out = one(
        span_line(
            {**CHAT, "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.cache_read.input_tokens": 800}
        )
    )
    assert (out.observed_prompt_tokens, out.observed_cached_tokens, out.cache_write_tokens) == (
        1000,
        800,
        0,
    )
    out = one(span_line({**CHAT, "gen_ai.usage.input_tokens": 1000}))
    assert (out.observed_cached_tokens, out.cache_write_tokens) == (0, 0)
    out = one(span_line({**CHAT, "gen_ai.usage.output_tokens": 5}))
    assert (out.observed_prompt_tokens, out.observed_cached_tokens, out.output_tokens) == (
        None,
        None,
        5,
    )


@pytest.mark.parametrize(
    ("attrs", "scope"),
    [
        ({"gen_ai.system": "openai"}, {"name": "opentelemetry.instrumentation.openai_v2"}),
        ({}, {"name": "opentelemetry.util.genai.handler", "version": "1.1b0"}),
        ({}, {"name": "opentelemetry.util.genai.handler", "version": "0.4b0"}),
    ],
)
def test_emitters_without_cache_counts_leave_them_unknown(attrs, scope):
    chat = {k: v for k, v in CHAT.items() if not (attrs and k == "gen_ai.provider.name")}
    out = one(span_line({**chat, **attrs, "gen_ai.usage.input_tokens": 10}, scope=scope))
    assert (out.observed_prompt_tokens, out.observed_cached_tokens, out.cache_write_tokens) == (
        10,
        None,
        None,
    )
    newer = {"name": "opentelemetry.util.genai.handler", "version": "1.3b0"}
    assert (
        one(span_line({**CHAT, "gen_ai.usage.input_tokens": 10}, newer)).observed_cached_tokens == 0
    )


def test_cache_write_under_either_name():
    base = {**CHAT, "gen_ai.usage.input_tokens": 100}
    for key in (
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_write.input_tokens",
    ):
        assert one(span_line({**base, key: 40})).cache_write_tokens == 40
    both = {
        **base,
        "gen_ai.usage.cache_creation.input_tokens": 40,
        "gen_ai.usage.cache_write.input_tokens": 41,
    }
    with pytest.raises(InputError, match="disagree"):
        one(span_line(both))
    with pytest.raises(InputError, match="exceed"):
        one(
            span_line(
                {
                    **base,
                    "gen_ai.usage.cache_read.input_tokens": 90,
                    "gen_ai.usage.cache_write.input_tokens": 20,
                }
            )
        )


def test_json_strings_and_structured_values_read_alike():
    """Content attributes as JSON strings (Python SDK spans) or structured AnyValues; the
    system prompt in ``gen_ai.system_instructions`` or as a first system message."""
    (call,) = [c for c in calls() if c.request_id == "req-2-1-1"]
    structured = MAKE.spec_span(call, "chat")
    attrs = {a["key"]: a["value"] for a in structured["attributes"]}
    content = ("gen_ai.input.messages", "gen_ai.system_instructions", "gen_ai.tool.definitions")
    plain = {k: any_value(attrs[k], k) for k in content}
    as_strings = attrs | {k: {"stringValue": orjson.dumps(plain[k]).decode()} for k in content}
    system = {"role": "system", "parts": plain["gen_ai.system_instructions"]}
    in_messages = {k: v for k, v in as_strings.items() if k != "gen_ai.system_instructions"}
    in_messages["gen_ai.input.messages"] = MAKE.any_value([system, *plain["gen_ai.input.messages"]])
    for form in (attrs, as_strings, in_messages):
        span = {**structured, "attributes": [{"key": k, "value": v} for k, v in form.items()]}
        out = one({"resourceSpans": [{"scopeSpans": [{"scope": {}, "spans": [span]}]}]})
        assert out.messages == call.openai_messages() and out.tools == call.openai_tools()
        assert out.observed_cached_tokens == call.cached_tokens


def test_parts_beyond_text_and_several_tool_responses():
    """Non-text parts are kept as logged, several text parts stay a list, each tool response is
    its own tool message (a structured response as JSON), a ``name`` is kept."""
    messages = [
        {
            "role": "user",
            "name": "ann",
            "parts": [
                {"type": "text", "content": "a"},
                {"type": "uri", "modality": "image", "uri": "https://x/y.png"},
            ],
        },
        {
            "role": "assistant",
            "parts": [
                {"type": "text", "content": "x"},
                {"type": "text", "content": "y"},
                {"type": "tool_call", "id": "c1", "name": "f", "arguments": {"b": 1, "a": 2}},
            ],
        },
        {
            "role": "tool",
            "parts": [
                {"type": "tool_call_response", "id": "c1", "response": {"ok": True}},
                {"type": "tool_call_response", "id": "c2", "response": "done"},
            ],
        },
    ]
    out = one(span_line({**CHAT, "gen_ai.input.messages": orjson.dumps(messages).decode()}))
    assert out.messages == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "a"},
                {"type": "uri", "modality": "image", "uri": "https://x/y.png"},
            ],
            "name": "ann",
        },
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}],
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"b":1,"a":2}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"ok":true}'},
        {"role": "tool", "tool_call_id": "c2", "content": "done"},
    ]


def test_operations_kept_and_skipped():
    """chat and generate_content are chats; text_completion is a completion of its one text
    message; anything else, or no operation at all, is skipped naming it."""
    assert one(span_line({**CHAT, "gen_ai.operation.name": "generate_content"})).kind == "chat"
    out = one(span_line({**CHAT, "gen_ai.operation.name": "text_completion"}))
    assert (out.kind, out.prompt, out.messages) == ("completion", "hi", None)
    with pytest.raises(Skip, match="operation 'invoke_agent'"):
        one(span_line({**CHAT, "gen_ai.operation.name": "invoke_agent"}))
    with pytest.raises(Skip, match=r"span 'GET' \(kind 2\)"):
        one(span_line({"http.request.method": "GET"}, name="GET", kind=2))
    log = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"eventName": "app.start"}]}]}]}
    with pytest.raises(Skip, match="not a GenAI operation event"):
        one(log)


def test_timestamps_are_nanoseconds():
    """``startTimeUnixNano`` as a string or a JSON number is read in ns, never guessed; the
    millisecond part survives."""
    for value in ("1767225600125000000", 1767225600125000000):
        out = one(span_line(CHAT, startTimeUnixNano=value))
        assert abs(out.ts - 1767225600.125) < 1e-6
    assert one(span_line(CHAT, startTimeUnixNano="0")).ts is None
    with pytest.raises(InputError, match="startTimeUnixNano"):
        one(span_line(CHAT, startTimeUnixNano="9" * 19))  # year 2286


def test_identity_fallbacks():
    """Without a response id the span id names the request; ``session.id`` stands in for the
    conversation id; ``user.id`` (else ``enduser.id``) is the end user, never the tenant: a span
    naming only a user has tenant None (one domain); ``tenant.id`` (span, then resource) is the
    tenant."""
    out = one(span_line({**CHAT, "session.id": "s", "user.id": "u"}))
    assert (out.request_id, out.session_id, out.tenant, out.end_user) == (
        "00f067aa0ba902b7",
        "s",
        None,
        "u",
    )
    assert one(span_line({**CHAT, "enduser.id": "e"})).end_user == "e"
    assert one(span_line({**CHAT, "enduser.id": "e", "user.id": "u"})).end_user == "u"
    assert one(span_line(CHAT)).end_user is None
    line = span_line({**CHAT, "user.id": "u"})
    line["resourceSpans"][0]["resource"] = {
        "attributes": MAKE._kv({"tenant.id": "team-a", "user.id": "r"})
    }
    assert (one(line).tenant, one(line).end_user) == ("team-a", "u")  # the span's user first


# ---------------------------------------------------------------------------------------------
# hostile input


HOSTILE = [
    {"resourceSpans": "x"},
    {"resourceSpans": [{"scopeSpans": [{"spans": ["x"]}]}]},
    {"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": {"a": 1}}]}]}]},
    {"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [{"key": 1}]}]}]}]},
    {"resourceLogs": [{"scopeLogs": [{"logRecords": [None, {"eventName": 5}]}]}]},
    span_line({**CHAT, "gen_ai.input.messages": "not json"}),
    span_line({**CHAT, "gen_ai.input.messages": {"role": "user"}}),
    span_line({**CHAT, "gen_ai.input.messages": [{"role": 5, "parts": []}]}),
    span_line({**CHAT, "gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text"}]}]}),
    span_line({**CHAT, "gen_ai.input.messages": [{"role": "user", "parts": [7]}]}),
    span_line({**CHAT, "gen_ai.input.messages": [{"role": "wizard", "parts": []}]}),
    span_line({**CHAT, "gen_ai.tool.definitions": [{"type": "function", "name": 3}]}),
    span_line({**CHAT, "gen_ai.tool.definitions": "{}"}),
    span_line({**CHAT, "gen_ai.system_instructions": 12}),
    span_line({**CHAT, "gen_ai.usage.input_tokens": -1}),
    span_line({**CHAT, "gen_ai.usage.input_tokens": "12"}),
    span_line({**CHAT, "gen_ai.usage.input_tokens": 1.5}),
    span_line({**CHAT, "gen_ai.operation.name": 3}),
    span_line({**CHAT, "gen_ai.conversation.id": [1]}),
    span_line({**CHAT, "user.id": [1]}),
    span_line(CHAT, startTimeUnixNano="soon"),
    span_line(CHAT, startTimeUnixNano=True),
    {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {"spans": [{"attributes": [{"key": "k", "value": {"intValue": "1e400"}}]}]}
                ]
            }
        ]
    },
    {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "attributes": [
                                    {
                                        "key": "k",
                                        "value": {
                                            "kvlistValue": {"values": [{"key": "a", "value": 3}]}
                                        },
                                    }
                                ]
                            }
                        ]
                    }
                ]
            }
        ]
    },
]


@pytest.mark.parametrize("line", HOSTILE)
def test_hostile_records_raise_input_error_or_skip(line):
    """Wrong types, nulls and odd shapes anywhere give an ``InputError`` (or a skip) with a
    one-line reason, never another exception and never a request."""
    outcomes = []
    try:
        for rec in records(line):
            try:
                out = normalize(rec)
                for i, msg in enumerate(out.messages or []):  # what the writer checks
                    check_message(msg, i)
                outcomes.append(out)
            except (InputError, Skip) as exc:
                outcomes.append(exc)
    except InputError as exc:
        outcomes.append(exc)
    assert outcomes and all(isinstance(o, InputError | Skip) for o in outcomes), outcomes
    assert all(str(o) and "\n" not in str(o) for o in outcomes)


def test_deep_nesting_is_rejected():
    value: dict = {"stringValue": "x"}
    for _ in range(200):
        value = {"arrayValue": {"values": [value]}}
    line = span_line(CHAT)
    line["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"].append(
        {"key": "deep", "value": value}
    )
    with pytest.raises(InputError, match="nested deeper"):
        one(line)


def test_hostile_file_ingests_with_rejects(tmp_path):
    """A file of good and hostile lines: the good spans are stored, each bad record or line is
    one reject, and the store's accounting holds."""
    good = _lines("genai-openai.jsonl")
    path = write_jsonl(tmp_path / "mixed.jsonl", [*good, *HOSTILE])
    con, report = ingest_one(tmp_path, path)
    # the log line holds two non-GenAI log records (skipped); every other line is one reject
    assert (report.requests, report.rejected, report.out_of_scope) == (12, len(HOSTILE) - 1, 14)
    assert_accounted(con)
