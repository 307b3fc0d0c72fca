"""OpenAI Responses and Anthropic Messages records, and what OpenAI chat records share with them
(usage read by meaning, timestamp units).

Schemas: the OpenAI API reference ("Create a model response", the Response object, chat
completion usage) and the Anthropic Messages API reference ("Create a Message", content blocks,
``cache_control``, usage), checked against the types of the ``openai`` and ``anthropic`` Python
SDKs. The fixtures ``tests/fixtures/openai/responses.jsonl`` and
``tests/fixtures/anthropic/messages.jsonl`` were produced from ``conversations.calls()`` with the
real SDKs (``make_fixtures.py`` next to each; the SDKs are not needed here): the request bodies
are what the SDKs send, the responses what they parse with strict validation.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import orjson
import pytest
from conversations import TENANT, calls
from formats_check import (
    assert_accounted,
    assert_hit_rates_match_reference,
    assert_matches_calls,
    ingest_one,
    json_paths,
    reference_file,
    replaced,
    stored_requests,
)

from kvtool.errors import InputError
from kvtool.ingest import ingest_files
from kvtool.ingest.formats import Normalized, check_message
from kvtool.ingest.formats.anthropic import normalize_anthropic
from kvtool.ingest.formats.openai import normalize_openai_chat
from kvtool.ingest.formats.registry import detect_format
from kvtool.ingest.formats.responses import normalize_responses

FIXTURES = Path(__file__).with_name("fixtures")
RESPONSES = FIXTURES / "openai" / "responses.jsonl"
ANTHROPIC = FIXTURES / "anthropic" / "messages.jsonl"
FIXTURE_FORMATS = [(RESPONSES, "openai-responses"), (ANTHROPIC, "anthropic")]
T0 = 1_767_225_600.125  # conversations.T0


def records(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def without_key(value: object, key: str) -> object:
    """A JSON value with ``key`` removed from every object at any depth."""
    if isinstance(value, dict):
        return {k: without_key(v, key) for k, v in value.items() if k != key}
    if isinstance(value, list):
        return [without_key(v, key) for v in value]
    return value


def keys_anywhere(value: object) -> set[str]:
    """Every object key at any depth of a JSON value."""
    if isinstance(value, dict):
        return set(value).union(*(keys_anywhere(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(keys_anywhere(v) for v in value))
    return set()


# ---------------------------------------------------------------------------------------------
# the fixtures: field by field, detection, hit rates


@pytest.mark.parametrize(("path", "fmt"), FIXTURE_FORMATS)
@pytest.mark.parametrize("explicit", [False, True])
def test_fixture_ingests_field_by_field(tmp_path, path, fmt, explicit):
    cs = calls()
    con, report = ingest_one(tmp_path, path, fmt if explicit else None)
    assert (report.format, report.requests, report.rejected, report.out_of_scope) == (
        fmt,
        len(cs),
        0,
        0,
    )
    assert_accounted(con)
    got = stored_requests(con)
    # every field: messages, tools, model, time, id, session, tenant, all four token counts
    assert_matches_calls(got, cs, tenant="tenant")
    assert {s.tenant for s in got} == {TENANT}


def test_responses_fixture_fields_in_the_records(tmp_path):
    """The fixture keeps the traps in place: every record shares one ``prompt_cache_key``
    across sessions, the end user sits in ``safety_identifier``, time only in ``created_at``."""
    recs = records(RESPONSES)
    assert {r["request"]["prompt_cache_key"] for r in recs} == {"acme-support-v1"}
    assert [r["request"]["safety_identifier"] for r in recs] == [c.user for c in calls()]
    assert all("timestamp" not in r and "created" not in r for r in recs)
    assert [r["response"]["created_at"] for r in recs] == [c.ts for c in calls()]
    con, _ = ingest_one(tmp_path, RESPONSES)
    sessions = {s.session_id for s in stored_requests(con)}
    assert sessions == {"sess-1", "sess-2", "sess-3"}  # never the prompt_cache_key


def test_anthropic_fixture_markers_stored(tmp_path):
    """System block, last tool (1h) and the last block of the last message carry
    cache_control; the store keeps them as markers and the stored messages/tools do not."""
    cs = calls()
    con, _ = ingest_one(tmp_path, ANTHROPIC)
    got = stored_requests(con)
    for s, c in zip(got, sorted(cs, key=lambda c: c.ts), strict=True):
        last = len(c.messages)  # the system message is 0
        assert s.cache_control == [
            {"message": 0, "part": None, "type": "ephemeral", "ttl": None},
            {"message": last, "part": None, "type": "ephemeral", "ttl": None},
            {"tool": 1, "type": "ephemeral", "ttl": "1h"},
        ], c.request_id
        assert "cache_control" not in keys_anywhere(s.messages)
        assert "cache_control" not in keys_anywhere(s.tools)
    # a message marked in one request and unmarked in the next is stored once
    n_messages = con.execute("SELECT count(*) FROM contents WHERE kind = 'message'").fetchone()[0]
    distinct = {orjson.dumps(m) for c in cs for m in c.openai_messages()}
    assert n_messages == len(distinct)


@pytest.mark.parametrize(("path", "fmt"), FIXTURE_FORMATS)
def test_hit_rates_equal_the_reference(tmp_path, path, fmt):
    assert_hit_rates_match_reference(path, tmp_path)


def test_wrong_format_choice_is_refused_in_one_line(tmp_path):
    con, _ = ingest_one(tmp_path, reference_file(tmp_path, calls()))
    with pytest.raises(InputError, match="looks like openai-responses.*--format openai-responses"):
        ingest_files(con, [RESPONSES], fmt="openai-chat")


# ---------------------------------------------------------------------------------------------
# trap: what input_tokens counts


def chat_record(usage: dict, **extra) -> dict:
    return {
        "id": "r1",
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": "hi"}],
        "response": {"usage": usage},
        **extra,
    }


def test_chat_record_with_responses_usage_is_chat_not_anthropic(tmp_path, write_jsonl):
    """The issue's misdetection: a chat body whose usage has Responses-style keys was voted
    Anthropic and every line rejected. The body decides; the usage is read by meaning."""
    usage = {
        "input_tokens": 1000,
        "input_tokens_details": {"cached_tokens": 600},
        "output_tokens": 7,
    }
    lines = [dict(chat_record(usage), id=f"r{i}") for i in range(3)]
    assert detect_format(lines) == "openai-chat"
    con, report = ingest_one(tmp_path, write_jsonl("chat.jsonl", lines))
    assert (report.format, report.requests, report.rejected) == ("openai-chat", 3, 0)
    s = stored_requests(con)[0]
    assert (s.observed_prompt_tokens, s.observed_cached_tokens, s.output_tokens) == (1000, 600, 7)


@pytest.mark.parametrize(
    ("record", "prompt", "cached", "written"),
    [
        # OpenAI chat: prompt_tokens is the whole prompt
        (
            chat_record(
                {
                    "prompt_tokens": 1000,
                    "completion_tokens": 7,
                    "prompt_tokens_details": {"cached_tokens": 600, "cache_write_tokens": 100},
                }
            ),
            1000,
            600,
            100,
        ),
        # Responses-style usage in a chat record: input_tokens INCLUDES the cache
        (
            chat_record(
                {
                    "input_tokens": 1000,
                    "input_tokens_details": {"cached_tokens": 600, "cache_write_tokens": 100},
                    "output_tokens": 7,
                }
            ),
            1000,
            600,
            100,
        ),
        # a Responses record: the same
        (
            {
                "model": "gpt-4.1",
                "input": "hi",
                "usage": {
                    "input_tokens": 1000,
                    "input_tokens_details": {"cached_tokens": 600, "cache_write_tokens": 100},
                    "output_tokens": 7,
                },
            },
            1000,
            600,
            100,
        ),
        # Anthropic: input_tokens EXCLUDES reads and writes: 1000 + 600 + 100
        (
            {
                "model": "claude-sonnet-4-5",
                "system": "s",
                "messages": [{"role": "user", "content": "hi"}],
                "usage": {
                    "input_tokens": 1000,
                    "cache_read_input_tokens": 600,
                    "cache_creation_input_tokens": 100,
                    "output_tokens": 7,
                },
            },
            1700,
            600,
            100,
        ),
        # the same Anthropic usage logged next to an OpenAI-shaped body by a gateway
        (
            chat_record(
                {
                    "input_tokens": 1000,
                    "cache_read_input_tokens": 600,
                    "cache_creation_input_tokens": 100,
                    "output_tokens": 7,
                }
            ),
            1700,
            600,
            100,
        ),
    ],
    ids=["chat", "responses-usage-in-chat", "responses", "anthropic", "anthropic-usage-in-chat"],
)
def test_input_tokens_read_by_what_it_counts(
    tmp_path, write_jsonl, record, prompt, cached, written
):
    """Same numbers, three schemas: chat's prompt_tokens and Responses' input_tokens are the
    whole prompt (1000), Anthropic's input_tokens is the uncached rest (1000 + 600 + 100)."""
    con, report = ingest_one(tmp_path, write_jsonl("u.jsonl", [record]))
    assert (report.requests, report.rejected) == (1, 0), report.reasons
    (s,) = stored_requests(con)
    assert (s.observed_prompt_tokens, s.observed_cached_tokens) == (prompt, cached)
    assert (s.cache_write_tokens, s.output_tokens) == (written, 7)


def test_input_tokens_alone_is_the_prompt_with_cached_unknown():
    out = normalize_openai_chat(chat_record({"input_tokens": 50, "output_tokens": 2}))
    assert (out.observed_prompt_tokens, out.observed_cached_tokens) == (50, None)


@pytest.mark.parametrize(
    ("usage", "reason"),
    [
        (
            {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 11}},
            "usage.input_tokens_details.cached_tokens 11 exceeds usage.input_tokens 10",
        ),
        ({"input_tokens": 10, "input_tokens_details": 5}, "usage.input_tokens_details must be"),
        ({"input_tokens": -1}, "usage.input_tokens must be >= 0"),
        ({"input_tokens": 10, "cache_read_input_tokens": "9"}, "cache_read_input_tokens must be"),
        (
            {
                "prompt_tokens": 10,
                "prompt_tokens_details": {"cached_tokens": 6, "cache_write_tokens": 6},
            },
            "exceed the prompt's 10",
        ),
    ],
)
def test_inconsistent_usage_is_rejected_naming_the_field(usage, reason):
    with pytest.raises(InputError, match=reason):
        normalize_openai_chat(chat_record(usage))


# ---------------------------------------------------------------------------------------------
# timestamps: the schema's unit


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("created", T0),  # chat completion: epoch seconds
        ("created", "2026-01-01T00:00:00.125Z"),  # ISO is ISO
        ("created_at", T0),  # Response: epoch seconds
        ("response.created", T0),
        ("response.created_at", int(T0)),
        ("timestamp", T0 * 1000),  # a generic gateway key: unit guessed from the magnitude
        ("timestamp", "2026-01-01T00:00:00.125Z"),
    ],
)
def test_time_in_the_unit_of_its_schema(where, value):
    rec = chat_record({})
    if where.startswith("response."):
        rec["response"][where.split(".")[1]] = value
    else:
        rec[where] = value
    out = normalize_openai_chat(rec)
    assert out.ts == pytest.approx(int(T0) if isinstance(value, int) else T0, abs=1e-6)


@pytest.mark.parametrize("key", ["created", "created_at"])
def test_milliseconds_in_a_seconds_field_are_refused_not_guessed(key):
    """``created``/``created_at`` are seconds by schema: a millisecond value is out of range
    (a clear reject) instead of silently divided by 1000."""
    with pytest.raises(InputError, match=f"{key} .*outside 1970-01-01..2100-01-01"):
        normalize_openai_chat(chat_record({}, **{key: int(T0 * 1000)}))


# ---------------------------------------------------------------------------------------------
# Anthropic: blocks, markers, tools, tenant and session

WEATHER = {
    "name": "get_weather",
    "description": "Weather of a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}


def anthropic_body() -> dict:
    """A request with every block kind that matters and cache_control in every place."""
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 512,
        "cache_control": {"type": "ephemeral"},
        "system": [
            {"type": "text", "text": "Be brief."},
            {"type": "text", "text": "Policy v2.", "cache_control": {"type": "ephemeral"}},
        ],
        "tools": [
            dict(WEATHER, cache_control={"type": "ephemeral", "ttl": "1h"}),
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "url", "url": "https://example.com/a.png"},
                        "cache_control": {"type": "ephemeral"},
                    },
                    {"type": "text", "text": "Weather where this photo is?"},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Paris.", "signature": "sig"},
                    {"type": "text", "text": "Checking."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                        "cache_control": {"type": "ephemeral", "ttl": "5m"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [
                            {"type": "text", "text": "18C", "cache_control": {"type": "ephemeral"}}
                        ],
                    },
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": "no data",
                        "is_error": True,
                        "cache_control": {"type": "ephemeral"},
                    },
                    {"type": "text", "text": "Thanks"},
                ],
            },
        ],
        "metadata": {"user_id": "end-user-9"},
    }


def test_anthropic_blocks_tools_and_markers():
    out = normalize_anthropic(anthropic_body())
    assert out.messages == [
        {
            "role": "system",
            "content": [
                {"type": "text", "text": "Be brief."},
                {"type": "text", "text": "Policy v2."},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                {"type": "text", "text": "Weather where this photo is?"},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Paris.", "signature": "sig"},
                {"type": "text", "text": "Checking."},
            ],
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "no data"},
        {"role": "user", "content": "Thanks"},
    ]
    assert out.tools == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather of a city.",
                "parameters": WEATHER["input_schema"],
                "strict": True,  # further tool keys stay with the function
            },
        },
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},  # a server tool
    ]
    assert out.cache_control == [
        {"message": 0, "part": 1, "type": "ephemeral", "ttl": None},
        {"message": 1, "part": 0, "type": "ephemeral", "ttl": None},
        {"message": 2, "tool_call": 0, "type": "ephemeral", "ttl": "5m"},
        {"message": 3, "part": None, "type": "ephemeral", "ttl": None},
        {"message": 4, "part": None, "type": "ephemeral", "ttl": None},
        {"tool": 0, "type": "ephemeral", "ttl": "1h"},
        {"auto": True, "type": "ephemeral", "ttl": None},
    ]
    assert "cache_control" not in keys_anywhere(out.messages) | keys_anywhere(out.tools)
    for i, msg in enumerate(out.messages):
        check_message(msg, i)


def test_anthropic_tenant_end_user_and_session():
    """metadata.user_id is the end user, never the tenant (Anthropic caches per organization /
    workspace): with nothing else logged the tenant is None (one domain). The tenant is a
    gateway's tenant key, else ``workspace_id``; the session comes from the gateway's metadata,
    never from the body."""
    body = anthropic_body()
    bare = normalize_anthropic(body)
    assert (bare.tenant, bare.end_user, bare.session_id) == (None, "end-user-9", None)
    in_workspace = normalize_anthropic(dict(body, workspace_id="wrkspc_1"))
    assert (in_workspace.tenant, in_workspace.end_user) == ("wrkspc_1", "end-user-9")
    gateway = normalize_anthropic(
        {
            "request": dict(body, workspace_id="wrkspc_1"),
            "metadata": {"session_id": "s-1", "team_id": "x", "tenant": "team-b", "user": "g-1"},
        }
    )
    # the body's own metadata.user_id wins over a gateway's user key
    assert (gateway.tenant, gateway.end_user, gateway.session_id) == ("team-b", "end-user-9", "s-1")
    no_user = normalize_anthropic({"request": dict(body, metadata={}), "metadata": {"user": "g-1"}})
    assert (no_user.tenant, no_user.end_user) == (None, "g-1")
    with pytest.raises(InputError, match="user_id must be a string"):
        normalize_anthropic(dict(body, metadata={"user_id": {"id": 1}}))


def test_anthropic_requests_differing_only_in_markers_share_content(tmp_path, write_jsonl):
    marked = anthropic_body()
    plain = without_key(marked, "cache_control")
    con, report = ingest_one(
        tmp_path, write_jsonl("a.jsonl", [dict(marked, id="a"), dict(plain, id="b")])
    )
    assert (report.format, report.requests, report.rejected) == ("anthropic", 2, 0)
    rows = con.execute(
        "SELECT message_keys, tools_key, cache_control FROM requests ORDER BY line"
    ).fetchall()
    assert rows[0][:2] == rows[1][:2]
    assert orjson.loads(rows[0][2])[-1] == {"auto": True, "type": "ephemeral", "ttl": None}
    assert rows[1][2] is None


def test_anthropic_plain_file_detection():
    """Detection by shape: a system prompt or tool_use blocks make a file Anthropic; plain
    user/assistant strings alone look like chat (and read the same)."""
    plain = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert detect_format([plain, plain]) == "openai-chat"
    assert detect_format([plain, dict(plain, system="s")]) == "anthropic"
    message_response = dict(plain, response={"type": "message", "content": []})
    assert detect_format([message_response]) == "anthropic"


# ---------------------------------------------------------------------------------------------
# Responses: items, tools, markers, session, tenant, incomplete prompts


def responses_body(**extra) -> dict:
    return {
        "model": "gpt-5",
        "instructions": "Be brief.",
        "input": [
            {"role": "developer", "content": "Use metric units."},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Weather in Paris?"},
                    {
                        "type": "input_image",
                        "image_url": "https://example.com/p.png",
                        "detail": "auto",
                    },
                ],
            },
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA"},
            {
                "type": "message",
                "id": "msg_1",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
            },
            {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city": "Paris"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
            {"type": "web_search_call", "id": "ws_1", "status": "completed"},
            {
                "role": "user",
                "content": [
                    {
                        "type": "input_text",
                        "text": "And tomorrow?",
                        "prompt_cache_breakpoint": {"mode": "explicit", "ttl": "30m"},
                    }
                ],
            },
        ],
        "tools": [
            {
                "type": "function",
                "name": "get_weather",
                "description": "Weather of a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "strict": True,
            },
            {"type": "web_search"},
        ],
        **extra,
    }


def test_responses_items_to_chat_messages():
    out = normalize_responses(responses_body())
    assert out.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Use metric units."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather in Paris?"},
                {"type": "input_image", "image_url": "https://example.com/p.png", "detail": "auto"},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA"},
                {"type": "text", "text": "Checking."},
            ],
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {
            "role": "assistant",
            "content": [{"type": "web_search_call", "id": "ws_1", "status": "completed"}],
        },
        {"role": "user", "content": "And tomorrow?"},
    ]
    assert out.tools == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather of a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "strict": True,
            },
        },
        {"type": "web_search"},
    ]
    assert out.cache_control == [{"message": 6, "part": None, "type": "explicit", "ttl": "30m"}]
    assert "prompt_cache_breakpoint" not in keys_anywhere(out.messages)
    assert out.incomplete is None
    for i, msg in enumerate(out.messages):
        check_message(msg, i)


def test_responses_string_input_and_consecutive_assistant_messages():
    out = normalize_responses({"model": "m", "input": "hi"})
    assert out.messages == [{"role": "user", "content": "hi"}]
    text = [{"type": "output_text", "text": "A"}]
    two = normalize_responses(
        {
            "input": [
                {"role": "assistant", "content": text},
                {"role": "assistant", "content": "B"},
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                {"type": "function_call", "call_id": "d", "name": "g", "arguments": "{}"},
            ]
        }
    )
    assert [m["content"] for m in two.messages] == ["A", "B"]
    assert [c["id"] for c in two.messages[1]["tool_calls"]] == ["c", "d"]


def test_responses_session_tenant_and_cache_key():
    base = responses_body(prompt_cache_key="shared-key", safety_identifier="u-1", user="u-old")
    bare = normalize_responses(base)
    assert bare.session_id is None  # prompt_cache_key is shared by sessions: never one
    # safety_identifier (else the `user` it replaces) is the end user, never the tenant: with no
    # tenant/org key logged the tenant is None (one domain, as OpenAI caches per organization)
    assert (bare.tenant, bare.end_user) == (None, "u-1")
    old_user = normalize_responses(dict(base, safety_identifier=None))
    assert (old_user.tenant, old_user.end_user) == (None, "u-old")
    echoed = normalize_responses(  # only the Response echoes the end user
        {
            "request": responses_body(),
            "response": {"id": "resp_1", "safety_identifier": "u-r", "user": "u-r-old"},
        }
    )
    assert (echoed.tenant, echoed.end_user) == (None, "u-r")
    assert normalize_responses(responses_body()).end_user is None
    wrapped = normalize_responses(
        {
            "request": dict(base, metadata={"session_id": "s-body"}),
            "metadata": {"tenant": TENANT},
            "response": {"id": "resp_1", "created_at": int(T0), "model": "gpt-5-2025"},
        }
    )
    assert (wrapped.session_id, wrapped.tenant, wrapped.end_user) == ("s-body", TENANT, "u-1")
    with pytest.raises(InputError, match="safety_identifier must be a string"):
        normalize_responses(dict(base, safety_identifier=["u"]))
    assert (wrapped.request_id, wrapped.ts, wrapped.model) == ("resp_1", int(T0), "gpt-5")


@pytest.mark.parametrize(
    ("extra", "session", "reason"),
    [
        (
            {"previous_response_id": "resp_0"},
            None,
            "previous_response_id resp_0: only the new input items are logged",
        ),
        ({"conversation": "conv_1"}, "conv_1", "conversation conv_1: only the new input items"),
        ({"conversation": {"id": "conv_2"}}, "conv_2", "conversation conv_2: only the new input"),
        ({"prompt": {"id": "pmpt_1", "version": "2"}}, None, "prompt template pmpt_1: its text"),
    ],
)
def test_responses_prompt_stored_server_side_is_incomplete(extra, session, reason):
    out = normalize_responses(responses_body(**extra))
    assert out.incomplete is not None and out.incomplete.startswith(reason)
    assert out.session_id == session


def test_responses_item_reference_and_response_conversation():
    body = {"model": "m", "input": [{"type": "item_reference", "id": "msg_7"}]}
    assert normalize_responses(body).incomplete == (
        "item_reference msg_7: the referenced item is not logged"
    )
    wrapped = normalize_responses(
        {"request": {"input": "hi"}, "response": {"conversation": {"id": "conv_9"}}}
    )
    assert wrapped.session_id == "conv_9" and wrapped.incomplete.startswith("conversation conv_9")


def test_responses_incomplete_requests_are_stored_and_counted(tmp_path, write_jsonl):
    recs = records(RESPONSES)
    recs[5]["request"]["previous_response_id"] = recs[4]["response"]["id"]
    con, report = ingest_one(tmp_path, write_jsonl("r.jsonl", recs))
    assert (report.requests, report.rejected) == (12, 0)
    stored = {s.request_id: s.incomplete for s in stored_requests(con)}
    assert stored[recs[5]["request_id"]] == (
        f"previous_response_id {recs[4]['response']['id']}: only the new input items are logged"
    )
    assert sum(v is not None for v in stored.values()) == 1


def test_responses_instructions_echoed_as_items():
    out = normalize_responses(
        {"input": "q", "instructions": [{"role": "developer", "content": "Rules."}]}
    )
    assert out.messages == [
        {"role": "developer", "content": "Rules."},
        {"role": "user", "content": "q"},
    ]


# ---------------------------------------------------------------------------------------------
# hostile shapes: every odd value gives a normalized request or an InputError


ODD = [None, 0, -1, 1.5, 1e30, True, "x", "", [], [1], {}, {"type": 5}]


@pytest.mark.parametrize(
    ("normalize", "record"),
    [
        (normalize_responses, records(RESPONSES)[3]),
        (normalize_responses, responses_body(conversation={"id": "c"})),
        (normalize_anthropic, records(ANTHROPIC)[3]),
        (normalize_anthropic, anthropic_body()),
        (normalize_openai_chat, orjson.loads(orjson.dumps(chat_record({"input_tokens": 3})))),
    ],
    ids=["responses-fixture", "responses-body", "anthropic-fixture", "anthropic-body", "chat"],
)
def test_wrong_types_anywhere_give_input_error_or_a_valid_request(normalize, record):
    outcomes = {"ok": 0, "rejected": 0}
    for path, odd in itertools.product(json_paths(record), ODD):  # a line is always an object
        try:
            out = normalize(replaced(record, path, odd))
        except InputError as exc:
            assert "\n" not in str(exc)
            outcomes["rejected"] += 1
            continue
        assert isinstance(out, Normalized)
        for i, msg in enumerate(out.messages or ()):
            if out.messages_checked:  # what the writer relies on
                check_message(msg, i)
        orjson.dumps([out.messages, out.tools, out.cache_control])
        outcomes["ok"] += 1
    assert outcomes["ok"] and outcomes["rejected"]


def test_fuzzed_file_is_accounted_line_by_line(tmp_path, write_jsonl):
    base = records(ANTHROPIC)[2]
    lines = [replaced(base, p, odd) for p in json_paths(base)[:59] for odd in ODD[:6]]
    lines = [dict(r, request_id=f"f{i}") if isinstance(r, dict) else r for i, r in enumerate(lines)]
    lines.append(dict(base, request_id="good"))
    con, report = ingest_one(tmp_path, write_jsonl("f.jsonl", lines), "anthropic")
    assert report.requests + report.rejected == len(lines) and report.requests >= 1
    assert_accounted(con)


def test_responses_prompt_template_only_is_detected_and_stored(tmp_path, write_jsonl):
    """A request made from a stored prompt template alone (no ``input``) is a Responses
    request (not a completions one), stored with no messages and marked incomplete."""
    lines = [{"id": "t1", "model": "gpt-5", "prompt": {"id": "pmpt_1", "variables": {"x": "1"}}}]
    con, report = ingest_one(tmp_path, write_jsonl("t.jsonl", lines))
    assert (report.format, report.requests, report.rejected) == ("openai-responses", 1, 0)
    (s,) = stored_requests(con)
    assert s.messages == [] and s.incomplete == "prompt template pmpt_1: its text is not logged"
