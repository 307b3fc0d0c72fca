"""Each supported log format ingests into the normalized ``requests`` row it should.

Every test writes a realistic record, ingests it into a real DuckDB file and checks the stored
values (not just that something was stored).
"""

from __future__ import annotations

import gzip
import json
import shutil
from datetime import UTC, datetime

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xxhash
from formats_check import assert_accounted

from kvtool.errors import InputError
from kvtool.ingest import ingest_files
from kvtool.store import one

T0 = 1740830400.0  # 2025-03-01T12:00:00Z

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "units": {"enum": ["metric", "imperial"]}},
            "required": ["city"],
        },
    },
}


# ---------------------------------------------------------------------------------------------
# helpers


def requests_of(con, where: str = "true", params: list | None = None) -> list[dict]:
    """Request rows as dicts, in file/line order."""
    cur = con.execute(f"SELECT * FROM requests WHERE {where} ORDER BY file_id, line", params or [])
    rows = cur.fetchall()
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in rows]


def body(con, key: int):
    """The JSON content stored under ``key`` (exactly one row per key)."""
    rows = con.execute("SELECT body FROM contents WHERE key = ?", [key]).fetchall()
    assert len(rows) == 1, f"content key {key} stored {len(rows)} times"
    return json.loads(rows[0][0])


def messages_of(con, row: dict) -> list[dict]:
    return [body(con, k) for k in row["message_keys"]]


def rejects_of(con) -> list[tuple[int, str, str]]:
    return con.execute("SELECT line, reason, raw FROM rejects ORDER BY file_id, line").fetchall()


# ---------------------------------------------------------------------------------------------
# OpenAI chat


def test_openai_chat_bare_body(con, write_jsonl):
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [{"type": "text", "text": "Summarize: KV caches."}]},
    ]
    path = write_jsonl("chat.jsonl", [{"model": "gpt-4o-mini", "messages": messages, "n": 1}])

    (report,) = ingest_files(con, [path])

    assert (report.format, report.lines, report.requests, report.rejected) == (
        "openai-chat",
        1,
        1,
        0,
    )
    (row,) = requests_of(con)
    assert row["kind"] == "chat"
    assert row["model"] == "gpt-4o-mini"
    assert row["line"] == 1
    # no id in the record: a generated id from the file's content digest (for an LF file
    # without blank lines, the xxh3-128 of its bytes) and the line
    assert row["request_id"] == f"{xxhash.xxh3_128_hexdigest(path.read_bytes())[:12]}:1"
    assert row["ts"] is None and row["session_id"] is None and row["tenant"] is None
    assert row["end_user"] is None
    assert row["tools_key"] is None and row["prompt_key"] is None and row["hash_ids"] is None
    assert row["observed_prompt_tokens"] is None and row["observed_cached_tokens"] is None
    assert messages_of(con, row) == messages
    assert_accounted(con)


def test_openai_chat_in_gateway_record(con, write_jsonl):
    messages = [
        {"role": "system", "content": "You are a weather assistant."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C, cloudy"},
    ]
    record = {
        "timestamp": "2025-03-01T14:00:00.250+02:00",
        "session_id": "sess-42",
        "metadata": {"tenant": "acme", "user": "u-7"},
        "request": {
            "model": "gpt-4o-2024-08-06",
            "messages": messages,
            "tools": [WEATHER_TOOL],
            "temperature": 0,
        },
        "response": {
            "id": "chatcmpl-AbC123",
            "model": "gpt-4o-2024-08-06",
            "usage": {
                "prompt_tokens": 1834,
                "completion_tokens": 57,
                "total_tokens": 1891,
                "prompt_tokens_details": {"cached_tokens": 1536},
            },
        },
    }
    path = write_jsonl("gateway.jsonl", [record])

    (report,) = ingest_files(con, [path])

    assert report.format == "openai-chat" and report.requests == 1
    (row,) = requests_of(con)
    assert row["ts"] == pytest.approx(T0 + 0.25, abs=1e-6)
    assert row["session_id"] == "sess-42"
    assert row["tenant"] == "acme"
    assert row["end_user"] == "u-7"  # the gateway's user: kept, never the tenant
    assert row["request_id"] == "chatcmpl-AbC123"
    assert row["model"] == "gpt-4o-2024-08-06"
    assert row["observed_prompt_tokens"] == 1834
    assert row["observed_cached_tokens"] == 1536
    assert row["output_tokens"] == 57
    assert len(row["message_keys"]) == 4
    assert messages_of(con, row) == messages
    assert row["tools_key"] is not None
    assert body(con, row["tools_key"]) == [WEATHER_TOOL]


def test_end_user_is_never_the_tenant(con, write_jsonl):
    """OpenAI caches per organization, so the end user (the chat body's ``user``, else a
    gateway's ``user``/``user_id``/``end_user``) is stored as ``end_user`` and never as the
    tenant: a record naming only a user has tenant None (one domain). The body's own ``user``
    wins over the gateway's; a user that is not a string is a reject naming the field."""
    messages = [{"role": "user", "content": "hi"}]
    records = [
        {"model": "m", "messages": messages, "user": "u-body"},
        {"request": {"model": "m", "messages": messages}, "metadata": {"user_id": "u-meta"}},
        {"request": {"model": "m", "messages": messages}, "end_user": "u-outer"},
        {
            "request": {"model": "m", "messages": messages, "user": "u-body"},
            "metadata": {"user": "u-meta", "org_id": "org-1"},
        },
        {"model": "m", "messages": messages, "user": {"id": "u"}},
    ]
    (report,) = ingest_files(con, [write_jsonl("users.jsonl", records)])
    assert (report.requests, report.rejected) == (4, 1)
    assert [(r["tenant"], r["end_user"]) for r in requests_of(con)] == [
        (None, "u-body"),
        (None, "u-meta"),
        (None, "u-outer"),
        ("org-1", "u-body"),
    ]
    reason = con.execute("SELECT reason FROM rejects").fetchone()[0]
    assert "user must be a string" in reason


def test_gateway_request_logged_as_json_string(con, write_jsonl):
    """Some gateways log the request body as a JSON string; detection must see through it."""
    request = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    path = write_jsonl(
        "stringly.jsonl",
        [{"request_id": "q1", "created": 1740830400, "request": json.dumps(request)}],
    )

    (report,) = ingest_files(con, [path])

    assert (report.format, report.requests) == ("openai-chat", 1)
    (row,) = requests_of(con)
    assert (row["request_id"], row["model"], row["ts"]) == ("q1", "gpt-4o", T0)


@pytest.mark.parametrize(
    "stamp",
    [
        1740830400,  # epoch seconds
        1740830400.0,
        1740830400000,  # epoch ms
        1740830400000000,  # epoch us
        1740830400000000000,  # epoch ns
        "1740830400",  # numeric string
        "2025-03-01T12:00:00Z",
        "2025-03-01T12:00:00+00:00",
        "2025-03-01T14:00:00+02:00",
        "2025-03-01T07:00:00-05:00",
        "2025-03-01T12:00:00",  # naive: taken as UTC
    ],
)
def test_timestamps_all_mean_the_same_instant(con, write_jsonl, stamp):
    record = {"timestamp": stamp, "model": "m", "messages": [{"role": "user", "content": "x"}]}
    (report,) = ingest_files(con, [write_jsonl("ts.jsonl", [record])])
    assert report.requests == 1, report.reasons
    (row,) = requests_of(con)
    assert row["ts"] == pytest.approx(T0, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# OpenAI Batch


def test_openai_batch_lines(con, write_jsonl):
    chat = {
        "custom_id": "task-001",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Classify sentiment."},
                {"role": "user", "content": "I love it"},
            ],
            "max_tokens": 5,
        },
    }
    completion = {
        "custom_id": "task-002",
        "method": "POST",
        "url": "/v1/completions",
        "body": {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi", "max_tokens": 5},
    }
    embedding = {
        "custom_id": "task-003",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": "text-embedding-3-small", "input": "hello"},
    }
    path = write_jsonl("batch.jsonl", [chat, completion, embedding])

    (report,) = ingest_files(con, [path])

    assert (report.format, report.lines, report.requests, report.rejected) == (
        "openai-batch",
        3,
        2,
        1,
    )
    rows = requests_of(con)
    assert [(r["request_id"], r["kind"], r["model"]) for r in rows] == [
        ("task-001", "chat", "gpt-4o-mini"),
        ("task-002", "completion", "gpt-3.5-turbo-instruct"),
    ]
    assert messages_of(con, rows[0]) == chat["body"]["messages"]
    assert body(con, rows[1]["prompt_key"]) == "Say hi"
    ((line, reason, raw),) = rejects_of(con)
    assert line == 3
    assert "/v1/embeddings" in reason and "not a chat or completion" in reason
    assert json.loads(raw) == embedding
    assert_accounted(con)


# ---------------------------------------------------------------------------------------------
# Anthropic Messages


def test_anthropic_messages_normalized_to_openai_shape(con, write_jsonl):
    tools = [
        {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "input_schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "units": {"type": "string"}},
                "required": ["city"],
            },
        }
    ]
    request = {
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 1024,
        "system": [
            {"type": "text", "text": "You are a weather bot."},
            {"type": "text", "text": "Today is Monday.", "cache_control": {"type": "ephemeral"}},
        ],
        "tools": tools,
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {
                        "type": "tool_use",
                        "id": "toolu_01",
                        "name": "get_weather",
                        "input": {"city": "Paris", "units": "metric"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18°C, cloudy"},
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
    }
    record = {
        "timestamp": 1740830400.5,
        "request": request,
        "response": {
            "id": "msg_01XYZ",
            "type": "message",
            "model": "claude-sonnet-4-20250514",
            "usage": {
                "input_tokens": 12,
                "cache_read_input_tokens": 2048,
                "cache_creation_input_tokens": 310,
                "output_tokens": 95,
            },
        },
    }
    path = write_jsonl("anthropic.jsonl", [record])

    (report,) = ingest_files(con, [path])

    assert (report.format, report.requests, report.rejected) == ("anthropic", 1, 0)
    (row,) = requests_of(con)
    assert row["request_id"] == "msg_01XYZ"
    assert row["model"] == "claude-sonnet-4-20250514"
    assert row["ts"] == pytest.approx(T0 + 0.5)
    assert row["observed_prompt_tokens"] == 12 + 2048 + 310
    assert row["observed_cached_tokens"] == 2048
    assert row["output_tokens"] == 95
    (tool,) = body(con, row["tools_key"])  # the OpenAI function shape
    assert tool == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": tools[0]["input_schema"],
        },
    }
    # the system block's cache_control is a marker, not part of the stored message
    assert json.loads(row["cache_control"]) == [
        {"message": 0, "part": 1, "type": "ephemeral", "ttl": None}
    ]

    system, user, assistant, tool, user2 = messages_of(con, row)
    assert system == {
        "role": "system",
        "content": [
            {"type": "text", "text": "You are a weather bot."},
            {"type": "text", "text": "Today is Monday."},
        ],
    }
    assert user == {"role": "user", "content": "Weather in Paris?"}
    assert assistant["role"] == "assistant"
    assert assistant["content"] == "Let me check."
    (call,) = assistant["tool_calls"]
    assert call["id"] == "toolu_01" and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert isinstance(call["function"]["arguments"], str)
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris", "units": "metric"}
    assert tool == {"role": "tool", "tool_call_id": "toolu_01", "content": "18°C, cloudy"}
    # one remaining text block is Anthropic's string content
    assert user2 == {"role": "user", "content": "And tomorrow?"}


def test_anthropic_usage_without_cache_fields(con, write_jsonl):
    record = {
        "model": "claude-3-5-haiku-latest",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "hi"}],
        "usage": {"input_tokens": 100, "output_tokens": 7},
    }
    (report,) = ingest_files(con, [write_jsonl("a.jsonl", [record])])
    assert report.format == "anthropic"
    (row,) = requests_of(con)
    assert (row["observed_prompt_tokens"], row["observed_cached_tokens"]) == (100, None)
    assert row["output_tokens"] == 7
    assert messages_of(con, row)[0] == {"role": "system", "content": "Be brief."}


# ---------------------------------------------------------------------------------------------
# completions


def test_completions_text_and_token_prompts(con, write_jsonl):
    records = [
        {"id": "c1", "model": "gpt-3.5-turbo-instruct", "prompt": "Once upon a time", "n": 1},
        {"id": "c2", "model": "llama-3-8b", "prompt": [128000, 9906, 1917, 0]},
        {"id": "c3", "model": "llama-3-8b", "prompt": ["one prompt in a list"]},
        {"id": "c4", "model": "llama-3-8b", "prompt": ["two", "prompts"]},
    ]
    (report,) = ingest_files(con, [write_jsonl("cmpl.jsonl", records)])

    assert (report.format, report.requests, report.rejected) == ("completions", 3, 1)
    rows = requests_of(con)
    assert [r["kind"] for r in rows] == ["completion"] * 3
    assert [body(con, r["prompt_key"]) for r in rows] == [
        "Once upon a time",
        [128000, 9906, 1917, 0],
        "one prompt in a list",
    ]
    assert all(r["message_keys"] is None for r in rows)
    ((line, reason, _),) = rejects_of(con)
    assert line == 4 and "prompt must be a string" in reason


# ---------------------------------------------------------------------------------------------
# Mooncake hash traces


def test_mooncake_lines(con, write_jsonl):
    records = [
        {"timestamp": 27482, "input_length": 1100, "output_length": 52, "hash_ids": [7, 8, 9]},
        {"timestamp": 30001, "input_length": 1024, "output_length": 3, "hash_ids": [7, 8]},
        {"timestamp": 31000, "input_length": 1100, "output_length": 1, "hash_ids": [7]},
    ]
    path = write_jsonl("trace.jsonl", records)

    (report,) = ingest_files(con, [path])

    assert (report.format, report.requests, report.rejected) == ("mooncake", 2, 1)
    rows = requests_of(con)
    assert [r["kind"] for r in rows] == ["hash", "hash"]
    assert [r["ts"] for r in rows] == [pytest.approx(27.482), pytest.approx(30.001)]
    assert [r["hash_ids"] for r in rows] == [[7, 8, 9], [7, 8]]
    assert [r["input_length"] for r in rows] == [1100, 1024]
    assert [r["output_tokens"] for r in rows] == [52, 3]
    ((line, reason, _),) = rejects_of(con)
    assert line == 3
    assert reason == (
        "hash_ids has 1 ids, input_length 1100 at block size 512 needs 3 (or 2, full blocks only)"
    )
    assert one(con, "SELECT hash_block_size FROM files") == (512,)


def test_mooncake_block_size_option(con, write_jsonl):
    record = {"timestamp": 0, "input_length": 1100, "output_length": 1, "hash_ids": [1, 2, 3]}
    good = {"timestamp": 1, "input_length": 700, "output_length": 1, "hash_ids": [4, 5, 6]}
    path = write_jsonl("trace.jsonl", [record, good])
    (report,) = ingest_files(con, [path], hash_block_size=256)
    assert (report.requests, report.rejected) == (1, 1)
    assert "needs 5" in rejects_of(con)[0][1]
    assert one(con, "SELECT hash_block_size FROM files") == (256,)


def test_real_mooncake_trace(con, mooncake_dir):
    MOONCAKE = mooncake_dir / "synthetic_trace.jsonl.gz"  # noqa: N806 - a constant path
    expected_total = 0
    expected_blocks = 0
    with gzip.open(MOONCAKE, "rt") as f:
        for text in f:
            rec = json.loads(text)
            expected_total += rec["input_length"]
            expected_blocks += len(rec["hash_ids"])

    (report,) = ingest_files(con, [MOONCAKE])

    assert (report.format, report.lines, report.requests, report.rejected) == (
        "mooncake",
        3993,
        3993,
        0,
    )
    assert one(con, "SELECT count(*) FROM rejects") == (0,)
    total, blocks = one(con, "SELECT sum(input_length), sum(len(hash_ids)) FROM requests")
    assert total == expected_total
    assert blocks == expected_blocks
    assert one(con, "SELECT count(DISTINCT request_id) FROM requests") == (3993,)


# ---------------------------------------------------------------------------------------------
# --format override


def test_format_override_that_fits_another_format_is_one_line(con, write_jsonl):
    """A forced format that fits no line, where another format fits them, is refused in one line
    naming that format; nothing is recorded (a corrected run then loads)."""
    records = [{"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]} for i in range(4)]
    path = write_jsonl("chat.jsonl", records)
    with pytest.raises(InputError, match="looks like openai-chat, not completions; use --format"):
        ingest_files(con, [path], fmt="completions")
    assert one(con, "SELECT count(*) FROM files") == (0,)
    assert one(con, "SELECT count(*) FROM rejects") == (0,)
    (report,) = ingest_files(con, [path])
    assert (report.format, report.requests, report.rejected) == ("openai-chat", 4, 0)
    assert_accounted(con)


def test_format_override_rejects_every_line(con, write_jsonl):
    """A forced format that fits no line, and no other format does either, records nothing and
    names the first reason."""
    records = [{"model": "m", "prompt": 7}, {"model": "m", "prompt": None}]
    path = write_jsonl("bad.jsonl", records)
    with pytest.raises(InputError, match="every line was rejected.*prompt must be a string"):
        ingest_files(con, [path], fmt="completions")
    assert one(con, "SELECT count(*) FROM files") == (0,)


# ---------------------------------------------------------------------------------------------
# Parquet and gzip


CONVERSATION = [
    {"role": "system", "content": "You answer in French."},
    {"role": "user", "content": "Bonjour"},
    {"role": "assistant", "content": "Bonjour !"},
]


def test_parquet_messages_as_json_string(con, tmp_path):
    path = tmp_path / "logs.parquet"
    table = pa.table(
        {
            "request_id": ["p1", "p2"],
            "timestamp": pa.array(
                [datetime(2025, 3, 1, 12, tzinfo=UTC), datetime(2025, 3, 1, 12, 0, 1, tzinfo=UTC)],
                pa.timestamp("ms", tz="UTC"),
            ),
            "model": ["gpt-4o", "gpt-4o"],
            "session_id": ["s1", None],
            "messages": [json.dumps(CONVERSATION), json.dumps(CONVERSATION[:2])],
            "usage": [
                {"prompt_tokens": 40, "completion_tokens": 3},
                {"prompt_tokens": 25, "completion_tokens": 4},
            ],
        }
    )
    pq.write_table(table, path)

    (report,) = ingest_files(con, [path])

    assert (report.format, report.lines, report.requests, report.rejected) == (
        "openai-chat",
        2,
        2,
        0,
    ), report.reasons
    first, second = requests_of(con)
    assert (first["request_id"], first["session_id"], first["model"]) == ("p1", "s1", "gpt-4o")
    assert second["session_id"] is None
    assert first["ts"] == pytest.approx(T0) and second["ts"] == pytest.approx(T0 + 1)
    assert (first["observed_prompt_tokens"], first["output_tokens"]) == (40, 3)
    assert messages_of(con, first) == CONVERSATION
    assert messages_of(con, second) == CONVERSATION[:2]


def test_parquet_messages_as_list_of_structs(con, tmp_path):
    path = tmp_path / "structs.parquet"
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    table = pa.table(
        {
            "id": ["s1", "s2"],
            "created": [1740830400, 1740830460],
            "model": ["m", "m"],
            "messages": pa.array([CONVERSATION, CONVERSATION[:2]], pa.list_(message)),
        }
    )
    pq.write_table(table, path)

    (report,) = ingest_files(con, [path])

    assert (report.format, report.requests, report.rejected) == ("openai-chat", 2, 0)
    first, second = requests_of(con)
    assert [first["request_id"], second["request_id"]] == ["s1", "s2"]
    assert [first["ts"], second["ts"]] == [T0, T0 + 60]
    assert messages_of(con, first) == CONVERSATION
    # the shared system + user messages are stored once, by the same keys
    assert second["message_keys"] == first["message_keys"][:2]
    assert one(con, "SELECT count(*) FROM contents WHERE kind = 'message'") == (3,)


def test_parquet_and_jsonl_share_content_keys(con, tmp_path, write_jsonl):
    path = tmp_path / "structs.parquet"
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    pq.write_table(
        pa.table({"id": ["x"], "messages": pa.array([CONVERSATION], pa.list_(message))}), path
    )
    jsonl = write_jsonl("same.jsonl", [{"id": "y", "messages": CONVERSATION}])

    ingest_files(con, [path, jsonl])

    keys = [r["message_keys"] for r in requests_of(con)]
    assert keys[0] == keys[1]
    assert one(con, "SELECT count(*) FROM contents") == (3,)


def test_jsonl_gz(con, tmp_path):
    path = tmp_path / "logs.jsonl.gz"
    records = [
        {
            "id": f"g{i}",
            "created": 1740830400 + i,
            "model": "m",
            "messages": [{"role": "user", "content": f"question {i}"}],
        }
        for i in range(3)
    ]
    with gzip.open(path, "wb") as f:
        f.write(b"".join(orjson.dumps(r) + b"\n" for r in records))

    (report,) = ingest_files(con, [path])

    assert (report.format, report.lines, report.requests) == ("openai-chat", 3, 3)
    rows = requests_of(con)
    assert [r["request_id"] for r in rows] == ["g0", "g1", "g2"]
    assert [r["ts"] for r in rows] == [T0, T0 + 1, T0 + 2]
    assert body(con, rows[2]["message_keys"][0]) == {"role": "user", "content": "question 2"}
    assert one(con, "SELECT bytes FROM files") == (path.stat().st_size,)


# ---------------------------------------------------------------------------------------------
# content dedup and idempotence


def test_shared_system_prompt_and_tools_stored_once(con, write_jsonl):
    system = {"role": "system", "content": "You are a coding agent. " * 50}
    records = [
        {
            "id": f"r{i}",
            "model": "m",
            "messages": [system, {"role": "user", "content": f"task {i}"}],
            "tools": [WEATHER_TOOL],
        }
        for i in range(10)
    ]
    (report,) = ingest_files(con, [write_jsonl("agent.jsonl", records)])
    assert report.requests == 10

    system_json = orjson.dumps(system).decode()
    assert one(con, "SELECT count(*) FROM contents WHERE body = ?", [system_json]) == (1,)
    assert one(con, "SELECT count(*) FROM contents WHERE kind = 'tools'") == (1,)
    assert one(con, "SELECT count(*) FROM contents WHERE kind = 'message'") == (11,)
    assert one(con, "SELECT count(DISTINCT message_keys[1]) FROM requests") == (1,)
    assert one(con, "SELECT count(DISTINCT tools_key) FROM requests") == (1,)

    # a second file with the same system prompt and catalog adds only its new user messages
    more = [dict(r, id=f"more{i}") for i, r in enumerate(records[:2])]
    more[1]["messages"] = [system, {"role": "user", "content": "a new task"}]
    ingest_files(con, [write_jsonl("agent2.jsonl", more)])
    assert one(con, "SELECT count(*) FROM contents WHERE body = ?", [system_json]) == (1,)
    assert one(con, "SELECT count(*) FROM contents WHERE kind = 'tools'") == (1,)
    assert one(con, "SELECT count(*) FROM contents WHERE kind = 'message'") == (12,)
    assert one(
        con, "SELECT count(*) FROM (SELECT key FROM contents GROUP BY key HAVING count(*) > 1)"
    ) == (0,)


def test_reingest_same_bytes_adds_nothing(con, write_jsonl, tmp_path):
    records = [{"id": f"r{i}", "messages": [{"role": "user", "content": str(i)}]} for i in range(5)]
    records.append(b"{not json")
    path = write_jsonl("a.jsonl", records)
    (first,) = ingest_files(con, [path])
    assert (first.requests, first.rejected, first.skipped) == (5, 1, False)

    def counts():
        return [
            one(con, f"SELECT count(*) FROM {t}")[0]
            for t in ("files", "requests", "contents", "rejects")
        ]

    before = counts()
    copy = tmp_path / "renamed-copy.jsonl"
    shutil.copy(path, copy)
    again, renamed = ingest_files(con, [path, copy])

    assert counts() == before == [1, 5, 5, 1]
    for report, where in ((again, path), (renamed, copy)):
        assert report.skipped
        assert report.to_json()["already_ingested"] is True
        assert report.path == str(where)
        assert (report.file_id, report.format) == (first.file_id, first.format)
        assert (report.lines, report.requests, report.rejected) == (6, 5, 1)
