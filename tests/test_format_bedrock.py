"""AWS Bedrock model-invocation logs (format ``bedrock``): the conversation set logged as Converse
and as InvokeModel (Anthropic Messages bodies) records ingests field by field, detects without
``--format``, and analyzes like the reference; the schema's traps are pinned.

Where the schema comes from (no library writes these logs offline: Bedrock writes them server
side, so ``tests/fixtures/bedrock/make_fixtures.py`` follows the documented schema):
- the record (``schemaType``, ``timestamp`` ISO-8601, ``accountId``, ``identity.arn``,
  ``requestId``, ``operation``, ``modelId``, ``input.inputBodyJson`` / ``inputTokenCount`` /
  ``inputBodyS3Path`` for bodies over 100 KB, ``output.*``, ``requestMetadata``; S3 delivery as
  gzip JSON Lines): docs.aws.amazon.com/bedrock/latest/userguide/model-invocation-logging.html;
  the cache counts ``input.cacheReadInputTokenCount`` / ``cacheWriteInputTokenCount`` (not in
  that page's example): Panther's AWS.BedrockModelInvocation schema
  (docs.panther.com/data-onboarding/supported-logs/aws/bedrock-model-invocation) and the
  records shown by projects that read real logs;
- request metadata (Converse ``requestMetadata``; InvokeModel's X-Amzn-Bedrock-Request-Metadata
  header), recorded in the log: .../userguide/cost-mgmt-request-metadata.html;
- Converse bodies: .../APIReference/API_runtime_Converse.html, API_runtime_ContentBlock.html
  (text, image, document, video, audio, toolUse, toolResult, guardContent, cachePoint,
  reasoningContent, citationsContent, searchResult), API_runtime_SystemContentBlock.html,
  API_runtime_ToolResultContentBlock.html, API_runtime_Tool.html (toolSpec, systemTool,
  cachePoint), API_runtime_CachePointBlock.html (``type`` "default", ``ttl`` "5m" | "1h");
- InvokeModel bodies: .../userguide/model-parameters-anthropic-claude-messages.html (Anthropic),
  model-parameters-nova (Nova, ``schemaVersion`` "messages-v1"), -meta (``prompt``), -titan-text
  (``inputText``), -cohere-command-r-plus (``message``, ``chat_history``);
- CloudWatch Logs delivery: a subscription's ``messageType`` / ``logEvents`` (docs.aws.amazon.com
  /AmazonCloudWatch/latest/logs/SubscriptionFilters.html) and ``aws logs filter-log-events``
  output (``events[].message``).
"""

from __future__ import annotations

import copy
import gzip
import math
from pathlib import Path

import orjson
import pytest
from conversations import calls
from formats_check import (
    assert_accounted,
    assert_hit_rates_match_reference,
    assert_matches_calls,
    fixture_module,
    hit_rates,
    ingest_one,
    json_paths,
    reads_or_refuses,
    replaced,
    stored_requests,
    write_jsonl,
)

from kvtool import analyze
from kvtool.errors import InputError
from kvtool.ingest.formats import Skip
from kvtool.ingest.formats.bedrock import normalize_bedrock

FIXTURES = Path(__file__).parent / "fixtures" / "bedrock"
CONVERSE = FIXTURES / "converse.jsonl"
INVOKE = FIXTURES / "invoke-anthropic.jsonl"


make = fixture_module(FIXTURES, "bedrock_fixtures")


def fixture_records(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def converse_log(body: dict, **fields) -> dict:
    """A Converse record of the first call with ``body`` as its input body."""
    rec = copy.deepcopy(fixture_records(CONVERSE)[0])
    rec["input"]["inputBodyJson"] = body
    rec.update(fields)
    return rec


def invoke_log(body: dict, model: str = "meta.llama3-70b-instruct-v1:0", **fields) -> dict:
    rec = copy.deepcopy(fixture_records(INVOKE)[0])
    rec["input"]["inputBodyJson"] = body
    rec["modelId"] = model
    rec.update(fields)
    return rec


# ---------------------------------------------------------------------------------------------
# the fixtures: what calls() says, ingested field by field


@pytest.mark.parametrize("name", make.FILES)
def test_committed_fixtures_are_what_the_script_writes(name):
    assert (FIXTURES / name).read_bytes() == make.content(name)


def _assert_tenants(got, cs) -> None:
    by_time = sorted(cs, key=lambda c: c.ts)
    assert [s.tenant for s in got] == [make.ACCOUNTS[c.tenant] for c in by_time]


def test_converse_records_ingest_field_by_field(tmp_path):
    cs = calls()
    con, report = ingest_one(tmp_path, CONVERSE)
    assert (report.format, report.requests, report.rejected, report.out_of_scope) == (
        "bedrock",
        len(cs),
        0,
        0,
    )
    assert_accounted(con)
    got = stored_requests(con)
    # session and end user from requestMetadata; tenant: the AWS account the calls' team is
    assert_matches_calls(got, cs, tenant=None)
    _assert_tenants(got, cs)
    for s, c in zip(got, sorted(cs, key=lambda c: c.ts), strict=True):
        last = len(c.openai_messages()) - 1  # the cache point closing the last message
        assert s.cache_control == [
            {"message": 0, "part": None, "type": "default", "ttl": "1h"},
            {"message": last, "part": None, "type": "default", "ttl": None},
            {"tool": 1, "type": "default", "ttl": None},
        ], c.request_id


def test_invoke_model_anthropic_records_ingest_field_by_field(tmp_path):
    cs = calls()
    con, report = ingest_one(tmp_path, INVOKE)
    assert (report.format, report.requests, report.rejected) == ("bedrock", len(cs), 0)
    assert_accounted(con)
    got = stored_requests(con)
    # InvokeModel logs carry no session and no end user (no request metadata was tagged; the
    # IAM principal in identity.arn is not an end user)
    assert_matches_calls(got, cs, session=False, tenant=None, end_user=False)
    assert [(s.session_id, s.end_user) for s in got] == [(None, None)] * len(cs)
    _assert_tenants(got, cs)
    for s in got:  # the Anthropic body's cache_control: the system block and the last tool
        marks = {(m.get("message"), m.get("tool"), m["type"]) for m in s.cache_control or ()}
        assert marks == {(0, None, "ephemeral"), (None, 1, "ephemeral")}, s.request_id


def test_s3_delivery_gzip_of_both_operations(tmp_path):
    """S3 writes gzip JSON Lines mixing operations; ``fmt="bedrock"`` reads them too."""
    invoke = fixture_records(INVOKE)
    for rec in invoke:
        rec["requestId"] += "-invoke"
    lines = CONVERSE.read_bytes() + b"".join(orjson.dumps(r) + b"\n" for r in invoke)
    path = tmp_path / "111122223333_BedrockModelInvocationLogs_us-east-1_20260101T0000Z.json.gz"
    path.write_bytes(gzip.compress(lines))
    con, report = ingest_one(tmp_path, path)
    assert (report.format, report.requests, report.rejected) == ("bedrock", 24, 0)
    assert_accounted(con)
    again = tmp_path / "again"
    again.mkdir()
    _, report = ingest_one(again, path, fmt="bedrock")
    assert (report.format, report.requests, report.rejected) == ("bedrock", 24, 0)


def test_contradicted_format_is_one_line(tmp_path):
    with pytest.raises(
        InputError, match="looks like bedrock, not openai-chat; use --format bedrock"
    ):
        ingest_one(tmp_path, CONVERSE, fmt="openai-chat")


@pytest.mark.parametrize("path", [CONVERSE, INVOKE], ids=["converse", "invoke"])
def test_hit_rates_match_the_reference(tmp_path, path):
    # observed from Bedrock's own counts: read / (input + read + write)
    assert_hit_rates_match_reference(path, tmp_path)


# ---------------------------------------------------------------------------------------------
# traps


def test_input_token_count_excludes_cache_reads_and_writes():
    rec = fixture_records(CONVERSE)[1]
    rec["input"].update(inputTokenCount=100, cacheReadInputTokenCount=800)
    rec["input"]["cacheWriteInputTokenCount"] = 50
    out = normalize_bedrock(rec)
    assert (out.observed_prompt_tokens, out.observed_cached_tokens, out.cache_write_tokens) == (
        950,
        800,
        50,
    )
    del rec["input"]["cacheReadInputTokenCount"], rec["input"]["cacheWriteInputTokenCount"]
    out = normalize_bedrock(rec)  # models without prompt caching: no cache counts, read as 0
    assert (out.observed_prompt_tokens, out.observed_cached_tokens, out.cache_write_tokens) == (
        100,
        0,
        0,
    )
    del rec["input"]["inputTokenCount"]
    out = normalize_bedrock(rec)
    assert (out.observed_prompt_tokens, out.observed_cached_tokens) == (None, None)


def test_sessions_only_from_request_metadata():
    """InvokeModel logs have no session; a Converse record has one only when the caller tagged
    it in requestMetadata (the requestId is per call, never a session)."""
    invoke = fixture_records(INVOKE)[3]
    assert normalize_bedrock(invoke).session_id is None
    converse = fixture_records(CONVERSE)[3]
    assert normalize_bedrock(converse).session_id == "sess-1"
    del converse["requestMetadata"]
    assert normalize_bedrock(converse).session_id is None
    # InvokeModel's X-Amzn-Bedrock-Request-Metadata header is logged the same way
    invoke["requestMetadata"] = {"conversation_id": "conv-9", "team": "support"}
    assert normalize_bedrock(invoke).session_id == "conv-9"


def test_tenant_is_the_account():
    rec = fixture_records(CONVERSE)[0]
    rec["identity"]["arn"] = "arn:aws:sts::111122223333:assumed-role/other-role/user-99"
    assert normalize_bedrock(rec).tenant == "111122223333"  # every principal shares its cache
    del rec["accountId"]
    assert normalize_bedrock(rec).tenant == "111122223333"  # the account of identity.arn
    del rec["identity"]
    assert normalize_bedrock(rec).tenant is None


def test_end_user_only_from_request_metadata_or_the_body():
    """The log has no end-user field: a ``requestMetadata`` user tag (free key/value tags) or an
    Anthropic body's ``metadata.user_id``; never the IAM principal, never the tenant."""
    rec = fixture_records(CONVERSE)[0]
    assert rec["requestMetadata"]["user"] == "user-17"
    out = normalize_bedrock(rec)
    assert (out.tenant, out.end_user) == ("111122223333", "user-17")
    rec["requestMetadata"] = {"session_id": "s", "user_id": "u-2"}
    assert normalize_bedrock(rec).end_user == "u-2"
    rec["requestMetadata"] = {"session_id": "s"}
    assert (normalize_bedrock(rec).end_user, normalize_bedrock(rec).tenant) == (
        None,
        "111122223333",
    )
    rec["requestMetadata"] = {"end_user": 7}  # tags are strings; a number reads as its text
    assert normalize_bedrock(rec).end_user == "7"
    rec["requestMetadata"] = {"user": ["u"]}
    with pytest.raises(InputError, match="requestMetadata.user must be a string"):
        normalize_bedrock(rec)
    invoke = fixture_records(INVOKE)[0]
    assert normalize_bedrock(invoke).end_user is None
    invoke["input"]["inputBodyJson"]["metadata"] = {"user_id": "u-body"}
    assert normalize_bedrock(invoke).end_user == "u-body"
    invoke["requestMetadata"] = {"user": "u-tag"}  # the caller's tag first
    assert normalize_bedrock(invoke).end_user == "u-tag"


def test_timestamp_is_iso_never_a_guessed_epoch():
    rec = fixture_records(CONVERSE)[0]
    assert normalize_bedrock(rec).ts == calls()[0].ts
    rec["timestamp"] = "2026-01-01T00:00:00Z"  # real records often have whole seconds
    assert normalize_bedrock(rec).ts == math.floor(calls()[0].ts)
    for bad in (1767225600125, "1767225600", "yesterday"):
        rec["timestamp"] = bad
        with pytest.raises(InputError, match="timestamp"):
            normalize_bedrock(rec)


# ---------------------------------------------------------------------------------------------
# Converse blocks and cache points


def test_converse_blocks_and_cache_points():
    image = {"format": "png", "source": {"s3Location": {"uri": "s3://b/cat.png"}}}
    document = {"format": "pdf", "name": "runbook", "source": {"bytes": "JVBERi0="}}
    reasoning = {"reasoningText": {"text": "think", "signature": "sig"}}
    body = {
        "system": [
            {"text": "Be brief."},
            {"guardContent": {"text": {"text": "No secrets.", "qualifiers": ["guard_content"]}}},
            {"cachePoint": {"type": "default"}},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"text": "Look at this."},
                    {"image": image},
                    {"cachePoint": {"type": "default", "ttl": "5m"}},
                    {"document": document},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"reasoningContent": reasoning},
                    {"text": "Checking."},
                    {"toolUse": {"toolUseId": "t1", "name": "lookup", "input": {"b": 1, "a": 2}}},
                    {"cachePoint": {"type": "default"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"text": "Before"},
                    {
                        "toolResult": {
                            "toolUseId": "t1",
                            "content": [{"json": {"z": 1, "y": [2]}}],
                            "status": "error",
                        }
                    },
                    {"cachePoint": {"type": "default"}},
                    {"text": "Well?"},
                ],
            },
            {"role": "user", "content": [{"cachePoint": {"type": "default"}}, {"text": "Hi"}]},
        ],
        "toolConfig": {
            "tools": [
                {"toolSpec": {"name": "lookup", "inputSchema": {"json": {"type": "object"}}}},
                {"systemTool": {"name": "nova_grounding"}},
                {"cachePoint": {"type": "default"}},
                {"toolSpec": {"name": "x", "description": "d", "strict": True}},
            ],
            "toolChoice": {"auto": {}},
        },
    }
    out = normalize_bedrock(converse_log(body))
    assert out.messages == [
        {
            "role": "system",
            "content": [
                {"type": "text", "text": "Be brief."},
                {"type": "guardContent", "text": "No secrets."},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look at this."},
                {"type": "image", "image": image},
                {"type": "document", "document": document},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "reasoningContent", "reasoningContent": reasoning},
                {"type": "text", "text": "Checking."},
            ],
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"b":1,"a":2}'},
                }
            ],
        },
        {"role": "user", "content": "Before"},
        {"role": "tool", "tool_call_id": "t1", "content": '{"z":1,"y":[2]}', "status": "error"},
        {"role": "user", "content": "Well?"},
        {"role": "user", "content": "Hi"},
    ]
    assert out.tools == [
        {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}},
        {"type": "systemTool", "systemTool": {"name": "nova_grounding"}},
        {"type": "function", "function": {"name": "x", "description": "d", "strict": True}},
    ]
    assert out.cache_control == [
        {"message": 0, "part": 1, "type": "default", "ttl": None},  # after the guard text
        {"message": 1, "part": 1, "type": "default", "ttl": "5m"},  # after the image
        {"message": 2, "tool_call": 0, "type": "default", "ttl": None},  # after the tool use
        {"message": 4, "part": None, "type": "default", "ttl": None},  # after the tool result
        {"message": 5, "part": None, "type": "default", "ttl": None},  # opening a message
        {"tool": 1, "type": "default", "ttl": None},
    ]
    for message in out.messages:  # cache points are markers, never content
        assert "cachePoint" not in orjson.dumps(message).decode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"messages": []}, "messages must be a non-empty list"),
        ({"messages": [{"role": "system", "content": [{"text": "x"}]}]}, "role 'user'"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]},
            "one member",
        ),
        ({"messages": [{"role": "user", "content": [{"video2": {}}]}]}, "unknown block member"),
        ({"messages": [{"role": "user", "content": [{"text": 5}]}]}, r"content\[0\]\.text"),
        ({"system": [{"cachePoint": {"type": "default"}}], "messages": []}, "nothing before it"),
        (
            {
                "messages": [{"role": "user", "content": [{"text": "x"}]}],
                "toolConfig": {"tools": [{"cachePoint": {"type": "default"}}]},
            },
            "no tool before it",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"toolResult": {"content": [{"text": "x"}]}}]}
                ],
            },
            "toolUseId must be a string",
        ),
    ],
)
def test_bad_converse_bodies_are_rejected_with_the_field(body, reason):
    with pytest.raises(InputError, match=reason):
        normalize_bedrock(converse_log(body))


# ---------------------------------------------------------------------------------------------
# InvokeModel bodies of other model families, and what is skipped


def test_invoke_model_bodies_of_other_families():
    llama = normalize_bedrock(invoke_log({"prompt": "<|begin_of_text|>Hi", "max_gen_len": 9}))
    assert (llama.kind, llama.prompt, llama.messages) == ("completion", "<|begin_of_text|>Hi", None)
    titan = normalize_bedrock(invoke_log({"inputText": "User: hi"}, "amazon.titan-text-express-v1"))
    assert (titan.kind, titan.prompt) == ("completion", "User: hi")
    nova_body = {
        "schemaVersion": "messages-v1",
        "system": [{"text": "S"}],
        "messages": [{"role": "user", "content": [{"text": "Q"}]}],
    }
    nova = normalize_bedrock(invoke_log(nova_body, "amazon.nova-pro-v1:0"))
    assert nova.messages == [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    oss_body = {"messages": [{"role": "user", "content": "Q"}], "max_completion_tokens": 9}
    oss = normalize_bedrock(invoke_log(oss_body, "openai.gpt-oss-120b-1:0"))
    assert (oss.kind, oss.messages, oss.messages_checked) == (
        "chat",
        [{"role": "user", "content": "Q"}],
        False,
    )
    with pytest.raises(InputError, match="Cohere Command"):
        normalize_bedrock(invoke_log({"message": "Q", "chat_history": []}, "cohere.command-r-v1:0"))
    with pytest.raises(InputError, match="no messages, prompt or inputText"):
        normalize_bedrock(invoke_log({"foo": 1}))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"modelId": "amazon.titan-embed-text-v2:0"}, "not a text-generation model"),
        ({"modelId": "stability.sd3-5-large-v1:0"}, "not a text-generation model"),
        ({"operation": "ApplyGuardrail"}, "not a text-generation request"),
        ({"errorCode": "ThrottlingException"}, "failed request"),
    ],
)
def test_out_of_scope_records_are_skipped(change, reason):
    rec = fixture_records(INVOKE)[0]
    rec.update(change)
    with pytest.raises(Skip, match=reason):
        normalize_bedrock(rec)


def test_body_delivered_to_s3_is_stored_incomplete(tmp_path):
    records = fixture_records(CONVERSE)
    big = copy.deepcopy(records[0])
    del big["input"]["inputBodyJson"]
    big["input"]["inputBodyS3Path"] = "s3://logs/AWSLogs/data/big_input.json.gz"
    big["requestId"] = "req-big"
    path = write_jsonl(tmp_path / "with-big.jsonl", [*records, big])
    con, report = ingest_one(tmp_path, path)
    assert (report.requests, report.rejected) == (13, 0)
    stored = {s.request_id: s for s in stored_requests(con)}
    assert stored["req-big"].incomplete.startswith("the input body was delivered to S3 (s3://")
    assert stored["req-big"].messages is None
    assert stored["req-big"].observed_prompt_tokens == calls()[0].prompt_tokens
    # analysis leaves it out and says so; the other requests analyze as before
    result = analyze([path], db=tmp_path / "big.duckdb", output_cache=False)  # as hit_rates
    assert result["unusable_prompts"]["incomplete"] == 1
    assert result["ideal_hit_rate"] == hit_rates(CONVERSE, tmp_path)[0]


# ---------------------------------------------------------------------------------------------
# CloudWatch Logs delivery


def test_cloudwatch_events(tmp_path):
    records = fixture_records(CONVERSE)
    events = [
        {"id": str(i), "timestamp": 1767225600125 + i, "message": orjson.dumps(r).decode()}
        for i, r in enumerate(records)
    ]
    subscription = {
        "messageType": "DATA_MESSAGE",
        "owner": "111122223333",
        "logGroup": "/aws/bedrock/modelinvocations",
        "logStream": "aws/bedrock/modelinvocations",
        "subscriptionFilters": ["to-firehose"],
        "logEvents": events[:5],
    }
    control = {"messageType": "CONTROL_MESSAGE", "logEvents": [{"id": "", "message": "CWL"}]}
    filtered = {"events": events[5:11], "searchedLogStreams": []}
    path = write_jsonl(tmp_path / "cw.jsonl", [subscription, control, filtered, events[11]])
    con, report = ingest_one(tmp_path, path)
    assert (report.format, report.requests, report.rejected, report.records) == (
        "bedrock",
        12,
        0,
        12,
    )
    assert_accounted(con)
    assert_matches_calls(stored_requests(con), calls(), tenant=None)
    items = con.execute("SELECT line, item FROM requests ORDER BY line, item").fetchall()
    assert items[:6] == [(1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (3, 0)]


def test_cloudwatch_event_that_is_not_a_log_record(tmp_path):
    good = {"message": CONVERSE.read_bytes().splitlines()[0].decode()}
    path = write_jsonl(tmp_path / "events.jsonl", [{"events": [good, 5, {"message": "CWL"}]}])
    con, report = ingest_one(tmp_path, path)
    assert (report.requests, report.rejected, report.records) == (1, 2, 3)
    assert con.execute("SELECT item, reason FROM rejects ORDER BY item").fetchall() == [
        (1, "record must be an object, got int"),
        (2, "the CloudWatch event's message is not JSON"),
    ]
    with pytest.raises(InputError, match="message is not JSON"):
        normalize_bedrock({"timestamp": 1, "message": "not json"})
    with pytest.raises(InputError, match="schemaType"):
        normalize_bedrock({"schemaType": "Other", "operation": "Converse"})


# ---------------------------------------------------------------------------------------------
# hostile input: wrong types anywhere fail as InputError (or a skip), nothing else


# the largest integer a JSON line can carry (orjson reads up to 2**64 - 1)
BAD_VALUES = (None, True, -1, 2**64 - 1, 1.5, float("nan"), "x", [], {}, [None], {"x": None})


@pytest.mark.parametrize("path", [CONVERSE, INVOKE], ids=["converse", "invoke"])
def test_fuzzed_records_fail_cleanly(path):
    rec = fixture_records(path)[3]
    outcomes = set()
    for where in json_paths(rec):
        for bad in BAD_VALUES:
            result = reads_or_refuses(normalize_bedrock, replaced(rec, where, bad))
            outcomes.add("refused" if result is None else "read")
    assert outcomes == {"refused", "read"}
    for bad in BAD_VALUES:
        with pytest.raises((InputError, Skip)):
            normalize_bedrock(bad)
