"""LiteLLM (formats ``litellm-payload`` and ``litellm-spendlogs``): the conversation set logged
by the real library ingests field by field, detects without ``--format``, and analyzes like the
reference; the schemas' traps are pinned.

Where the schema comes from: the fixtures are written by LiteLLM itself (``litellm[proxy]``
1.108.7, offline, by ``tests/fixtures/litellm/make_fixtures.py``):
- StandardLoggingPayload: ``get_standard_logging_object_payload`` in
  ``litellm/litellm_core_utils/litellm_logging.py`` (the TypedDict is in
  ``litellm/types/utils.py``), as a ``CustomLogger`` callback receives it;
- SpendLogs rows: the proxy's ``get_logging_payload`` in
  ``litellm/proxy/spend_tracking/spend_tracking_utils.py``, columns of ``model
  LiteLLM_SpendLogs`` in ``litellm/proxy/schema.prisma``; the script writes them as Postgres
  exports them (JSONL ``row_to_json``, CSV, Parquet);
- the truncation note: ``_truncated_for_db`` there ("... (litellm_truncated skipped N chars.
  <note>) ..."; earlier releases end it with "chars) ..."); redaction:
  ``_redact_standard_logging_object`` in ``litellm/litellm_core_utils/redact_messages.py``.
- ``/v1/messages`` (``anthropic_messages``) and ``/v1/responses`` (``aresponses``) calls: the
  real ``litellm.anthropic_messages`` / ``litellm.aresponses`` through an in-process mock HTTP
  transport answering in the API each request went to (Anthropic Message, Response, chat
  completion), so LiteLLM's own routes, bridges and usage conversions made the records; where
  each field sits was read in ``get_standard_logging_object_payload`` (``messages`` from the
  call's messages/input plus a string ``system``; ``model_parameters`` from the optional
  params, without ``system``/``input``/``prompt``) and ``get_logging_payload``.
LiteLLM has no ``prefix_block_hashes`` field (searched its code and the public repository), so
no hash-only LiteLLM format is tested.
"""

from __future__ import annotations

import base64
import copy
import csv
import gzip
import math
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from conversations import SYSTEM, calls
from formats_check import (
    assert_accounted,
    assert_matches_calls,
    hit_rates,
    ingest_one,
    json_paths,
    reads_or_refuses,
    reference_file,
    replaced,
    stored_requests,
    write_jsonl,
)

from kvtool import analyze
from kvtool.errors import InputError
from kvtool.ingest.formats import Skip
from kvtool.ingest.formats.litellm import (
    GENERATED_ID,
    NO_BODY,
    NO_INPUT,
    REDACTED_REASON,
    normalize_payload,
    normalize_spendlog,
)
from kvtool.ingest.formats.registry import detect_format

FIXTURES = Path(__file__).parent / "fixtures" / "litellm"
PAYLOAD = FIXTURES / "payload.jsonl.gz"
CORRELATED = FIXTURES / "payload-correlated.jsonl.gz"
UNCORRELATED = FIXTURES / "payload-uncorrelated.jsonl.gz"
SPEND_JSONL = FIXTURES / "spendlogs.jsonl.gz"
SPEND_CSV = FIXTURES / "spendlogs.csv.gz"
SPEND_PARQUET = FIXTURES / "spendlogs.parquet"
ANTHROPIC = FIXTURES / "payload-anthropic.jsonl.gz"
ANTHROPIC_BLOCKS = FIXTURES / "payload-anthropic-system-blocks.jsonl.gz"
ANTHROPIC_VIA_RESPONSES = FIXTURES / "payload-anthropic-via-responses.jsonl.gz"
ANTHROPIC_VIA_CHAT = FIXTURES / "payload-anthropic-via-chat.jsonl.gz"
RESPONSES = FIXTURES / "payload-responses.jsonl.gz"
RESPONSES_VIA_CHAT = FIXTURES / "payload-responses-via-chat.jsonl.gz"
SPEND_ANTHROPIC = FIXTURES / "spendlogs-anthropic.jsonl.gz"
SPEND_RESPONSES = FIXTURES / "spendlogs-responses.jsonl.gz"
PAYLOADS = (PAYLOAD, CORRELATED, UNCORRELATED)
SPENDLOGS = (SPEND_JSONL, SPEND_CSV, SPEND_PARQUET)
PASSTHROUGH = (ANTHROPIC, RESPONSES, SPEND_ANTHROPIC, SPEND_RESPONSES)  # complete prompts
LOSSY = (ANTHROPIC_BLOCKS, ANTHROPIC_VIA_CHAT, RESPONSES_VIA_CHAT)  # LiteLLM dropped the system
TRUNCATED_ID = "req-4-0-0"  # the extra SpendLogs row whose user message LiteLLM cut
TRUNCATED = {"prompt": 2400, "cached": 896, "session": "sess-4", "user": "user-31"}


def records(path: Path) -> list[dict]:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return [orjson.loads(line) for line in data.splitlines()]


def payload(i: int = 0, path: Path = PAYLOAD, **fields) -> dict:
    """A copy of the ``i``-th payload record of ``path`` with ``fields`` replaced."""
    rec = copy.deepcopy(records(path)[i])
    rec.update(fields)
    return rec


def spendlog(i: int = 0, path: Path = SPEND_JSONL, **fields) -> dict:
    """A copy of the ``i``-th SpendLogs row (JSONL export) of ``path`` with ``fields`` replaced."""
    rec = copy.deepcopy(records(path)[i])
    rec.update(fields)
    return rec


def response_id(call) -> str:
    """The id the mock OpenAI server gave the call's Response (LiteLLM logs it encoded)."""
    return "resp_" + call.request_id.replace("-", "")


def decoded(litellm_id: str) -> str:
    """The upstream response id inside LiteLLM's encoded Responses id ("resp_" + base64 of
    "litellm:custom_llm_provider:...;model_id:...;response_id:<id>")."""
    assert litellm_id.startswith("resp_")
    return base64.b64decode(litellm_id[5:]).decode().rsplit("response_id:", 1)[1]


def without_strict(tools: list) -> list:
    """Tools with the ``strict`` flag LiteLLM's bridges add removed from each function."""
    return [
        {**t, "function": {k: v for k, v in t["function"].items() if k != "strict"}} for t in tools
    ]


@pytest.fixture(scope="module")
def reference_rates(tmp_path_factory) -> tuple[float, float | None]:
    tmp = tmp_path_factory.mktemp("reference")
    return hit_rates(reference_file(tmp, calls()), tmp)


# ---------------------------------------------------------------------------------------------
# the committed fixtures are what calls() says


def test_payload_fixtures_follow_the_calls():
    cs = calls()
    for path in PAYLOADS:
        recs = records(path)
        assert [r["id"] for r in recs] == [c.request_id for c in cs]
        for r, c in zip(recs, cs, strict=True):
            assert r["startTime"] == c.ts  # epoch seconds with the millisecond part
            assert r["messages"] == c.openai_messages()
            assert r["model_parameters"]["tools"] == c.openai_tools()
            assert (r["model"], r["prompt_tokens"], r["completion_tokens"]) == (
                c.model,
                c.prompt_tokens,
                c.output_tokens,
            )
            details = r["metadata"]["usage_object"]["prompt_tokens_details"]
            assert details["cached_tokens"] == c.cached_tokens
            assert details["cache_creation_tokens"] == c.cache_write_tokens
            assert r["metadata"]["user_api_key_team_id"] == c.tenant
            assert r["end_user"] == c.user
            assert r["cache_hit"] is None and r["status"] == "success"
    # the three session modes of LiteLLM
    legacy, correlated, uncorrelated = (records(p) for p in PAYLOADS)
    assert [(r["trace_id"], r["session_id"]) for r in legacy] == [(c.session_id, "") for c in cs]
    assert [r["session_id"] for r in correlated] == [c.session_id for c in cs]
    assert [r["trace_id"] for r in correlated] == [f"trace-{c.request_id}" for c in cs]
    trace_ids = [r["trace_id"] for r in uncorrelated]
    assert all(GENERATED_ID.fullmatch(t) for t in trace_ids) and len(set(trace_ids)) == len(cs)
    assert all(r["session_id"] == "" for r in uncorrelated)


def _csv_rows() -> list[dict]:
    with gzip.open(SPEND_CSV, "rt", newline="") as f:
        return list(csv.DictReader(f))


def test_spendlog_fixtures_follow_the_calls():
    """The three exports hold the same rows: the calls plus one truncated request."""
    cs = calls()
    rows = records(SPEND_JSONL)
    assert [r["request_id"] for r in rows] == [c.request_id for c in cs] + [TRUNCATED_ID]
    for r, c in zip(rows, cs, strict=False):
        body = r["proxy_server_request"]
        assert body["messages"] == c.openai_messages() and body["tools"] == c.openai_tools()
        assert body["litellm_session_id"] == r["session_id"] == c.session_id
        assert (r["team_id"], r["end_user"], r["messages"]) == (c.tenant, c.user, {})
        assert r["prompt_tokens"] == c.prompt_tokens
        assert r["startTime"] == c.iso[:-1]  # timestamp(3) without time zone, UTC
    cut = rows[-1]["proxy_server_request"]["messages"][1]["content"]
    assert "... (litellm_truncated skipped " in cut and len(cut) < 2048 + 300
    text_rows = _csv_rows()
    table = pq.read_table(SPEND_PARQUET).to_pylist()
    for r, t, p in zip(rows, text_rows, table, strict=True):
        assert t["request_id"] == p["request_id"] == r["request_id"]
        for col in ("proxy_server_request", "metadata", "response"):
            assert orjson.loads(t[col]) == orjson.loads(p[col]) == r[col]
        assert int(t["prompt_tokens"]) == p["prompt_tokens"] == r["prompt_tokens"]
        assert t["startTime"].replace(" ", "T") == p["startTime"].isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------------------------------
# ingest field by field


@pytest.mark.parametrize("path", [PAYLOAD, CORRELATED], ids=["trace_id", "session_id"])
def test_payload_ingests_field_by_field(tmp_path, path):
    cs = calls()
    con, report = ingest_one(tmp_path, path)
    assert (report.format, report.requests, report.rejected, report.out_of_scope) == (
        "litellm-payload",
        len(cs),
        0,
        0,
    )
    assert_accounted(con)
    assert_matches_calls(stored_requests(con), cs)


def test_payload_with_generated_trace_ids_has_no_sessions(tmp_path):
    """Without a caller's session LiteLLM logs a fresh uuid4 ``trace_id`` per call: kvtool keeps
    no session (12 one-call sessions would hide all within-session reuse); analyze infers the
    three sessions and finds the same within-session reuse as with logged sessions."""
    cs = calls()
    con, report = ingest_one(tmp_path, UNCORRELATED)
    assert (report.requests, report.rejected) == (len(cs), 0)
    got = stored_requests(con)
    assert_matches_calls(got, cs, session=False)
    assert all(s.session_id is None for s in got)
    inferred = analyze([UNCORRELATED], db=tmp_path / "u.duckdb")
    logged = analyze([PAYLOAD], db=tmp_path / "l.duckdb")
    assert (inferred["sessions"], inferred["sessions_inferred"]) == (3, 3)
    assert (logged["sessions"], logged["sessions_inferred"]) == (3, 0)
    assert inferred["within_session_tokens"] == logged["within_session_tokens"] > 0


@pytest.mark.parametrize("path", SPENDLOGS, ids=["jsonl", "csv", "parquet"])
def test_spendlogs_ingest_field_by_field(tmp_path, path):
    cs = calls()
    con, report = ingest_one(tmp_path, path)
    assert (report.format, report.requests, report.rejected, report.out_of_scope) == (
        "litellm-spendlogs",
        len(cs) + 1,
        0,
        0,
    )
    assert_accounted(con)
    got = stored_requests(con)
    cut = [s for s in got if s.truncated]
    assert [s.request_id for s in cut] == [TRUNCATED_ID]
    assert_matches_calls([s for s in got if not s.truncated], cs)
    s = cut[0]
    assert (s.observed_prompt_tokens, s.observed_cached_tokens, s.session_id, s.tenant) == (
        TRUNCATED["prompt"],
        TRUNCATED["cached"],
        TRUNCATED["session"],
        cs[0].tenant,
    )
    assert s.end_user == TRUNCATED["user"]
    assert s.incomplete is None


@pytest.mark.parametrize("path", PAYLOADS + SPENDLOGS, ids=lambda p: p.name)
def test_hit_rates_equal_the_reference(tmp_path, path, reference_rates):
    """The ideal rate equals the OpenAI chat reference's (the truncated SpendLogs row is left out
    of the analysis); the observed rate is the logged cached / prompt tokens of the calls."""
    cs = calls()
    ideal, observed = hit_rates(path, tmp_path)
    assert ideal == reference_rates[0]
    assert observed == sum(c.cached_tokens for c in cs) / sum(c.prompt_tokens for c in cs)


# ---------------------------------------------------------------------------------------------
# detection


def test_detection_picks_litellm_over_openai_chat(tmp_path):
    """A payload record has ``messages`` like an OpenAI chat record (it was read as one, losing
    its tools and startTime); a SpendLogs row has a ``messages`` column too."""
    assert detect_format(records(PAYLOAD)) == "litellm-payload"
    assert detect_format(records(SPEND_JSONL)) == "litellm-spendlogs"
    for path, fmt in ((PAYLOAD, "litellm-payload"), (SPEND_JSONL, "litellm-spendlogs")):
        _, report = ingest_one(tmp_path, path, fmt=fmt)
        assert (report.format, report.rejected) == (fmt, 0)


def test_a_contradicted_format_is_refused_in_one_line(tmp_path):
    with pytest.raises(InputError, match="looks like litellm-payload.*use --format"):
        ingest_one(tmp_path, PAYLOAD, fmt="litellm-spendlogs")
    with pytest.raises(InputError, match="looks like litellm-spendlogs.*use --format"):
        ingest_one(tmp_path, SPEND_JSONL, fmt="litellm-payload")


# ---------------------------------------------------------------------------------------------
# payload traps


def test_trace_id_is_a_session_only_when_the_caller_set_it():
    assert normalize_payload(payload(trace_id="conv-9")).session_id == "conv-9"
    generated = "0f3e7213-3a68-4426-b154-0241236d4c3a"
    assert normalize_payload(payload(trace_id=generated)).session_id is None
    assert normalize_payload(payload(trace_id=generated.upper())).session_id is not None
    both = payload(trace_id="conv-9", session_id="sess-x")
    assert normalize_payload(both).session_id == "sess-x"
    rec = payload(trace_id=generated)
    rec["metadata"]["requester_metadata"] = {"session_id": "from-client"}
    assert normalize_payload(rec).session_id == "from-client"


def test_tenant_is_the_team_then_org_then_key_never_a_user():
    """Tenant: team, organization, key hash; never the key's internal user nor the end user
    (providers cache per organization): with none of the three logged it is None (one
    domain). The end user is ``end_user``, else ``metadata.user_api_key_end_user_id``, else the
    chat request's ``user`` (``model_parameters``)."""
    rec = payload()
    meta = rec["metadata"]
    assert (normalize_payload(rec).tenant, normalize_payload(rec).end_user) == ("team-a", "user-17")
    meta["user_api_key_team_id"] = None
    meta["team_id"] = "team-b"
    assert normalize_payload(rec).tenant == "team-b"
    meta["team_id"] = None
    meta["user_api_key_org_id"] = "org-1"
    assert normalize_payload(rec).tenant == "org-1"
    meta["user_api_key_org_id"] = None
    assert normalize_payload(rec).tenant == meta["user_api_key_hash"]
    meta["user_api_key_hash"] = None
    assert meta["user_api_key_user_id"] == "default_user_id" and rec["end_user"] == "user-17"
    assert (normalize_payload(rec).tenant, normalize_payload(rec).end_user) == (None, "user-17")
    rec["end_user"] = ""
    meta["user_api_key_end_user_id"] = "u-meta"
    assert normalize_payload(rec).end_user == "u-meta"
    meta["user_api_key_end_user_id"] = None
    assert rec["model_parameters"]["user"] == "user-17"
    rec["model_parameters"]["user"] = "u-param"
    assert normalize_payload(rec).end_user == "u-param"
    del rec["model_parameters"]["user"]
    assert (normalize_payload(rec).tenant, normalize_payload(rec).end_user) == (None, None)


def test_cache_hit_is_litellms_response_cache_not_a_kv_hit(tmp_path):
    """A call served from LiteLLM's response cache never reached the model: skipped, counted."""
    with pytest.raises(Skip, match="response cache"):
        normalize_payload(payload(cache_hit=True))
    assert normalize_payload(payload(cache_hit=False)).request_id == "req-1-0-0"
    recs = records(PAYLOAD)
    recs[1]["cache_hit"] = True
    con, report = ingest_one(tmp_path, write_jsonl(tmp_path / "hit.jsonl", recs))
    assert (report.requests, report.out_of_scope, report.rejected) == (11, 1, 0)
    assert_accounted(con)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"status": "failure"}, "failed call"),
        ({"call_type": "aembedding"}, "not a chat, Anthropic Messages or Responses call"),
        ({"call_type": "atext_completion"}, "not a chat, Anthropic Messages or Responses call"),
    ],
)
def test_out_of_scope_calls_are_skipped(fields, reason):
    with pytest.raises(Skip, match=reason):
        normalize_payload(payload(**fields))


def test_start_time_is_epoch_seconds_never_guessed():
    assert normalize_payload(payload()).ts == calls()[0].ts
    with pytest.raises(InputError, match="startTime"):
        normalize_payload(payload(startTime=calls()[0].ts * 1000))  # ms: out of the window


def test_redacted_and_truncated_payload_messages():
    redacted = payload(messages=[{"role": "user", "content": "redacted-by-litellm"}])
    out = normalize_payload(redacted)
    assert "redacted" in out.incomplete and not out.truncated
    assert out.observed_prompt_tokens == calls()[0].prompt_tokens
    rec = payload()
    rec["messages"][1]["content"] = (
        "head... (litellm_truncated skipped 912 chars. Truncation is a stdout logging "
        "safeguard.) ...tail"
    )
    assert normalize_payload(rec).truncated
    rec["messages"][1]["content"] = "head... (litellm_truncated skipped 912 chars) ...tail"
    assert normalize_payload(rec).truncated
    assert not normalize_payload(payload()).truncated


def test_payload_usage_sources():
    """``metadata.usage_object`` first, else ``response.usage``; Anthropic-style cache keys are
    read when ``prompt_tokens_details`` lacks them (LiteLLM's prompt_tokens includes them)."""
    rec = payload(1)
    rec["metadata"]["usage_object"] = None
    out = normalize_payload(rec)
    assert (out.observed_prompt_tokens, out.observed_cached_tokens) == (1080, 960)
    rec["response"]["usage"] = {
        "prompt_tokens": 1080,
        "cache_read_input_tokens": 900,
        "cache_creation_input_tokens": 100,
    }
    out = normalize_payload(rec)
    assert (out.observed_cached_tokens, out.cache_write_tokens) == (900, 100)
    rec["response"] = None
    rec["prompt_tokens"] = 0
    out = normalize_payload(rec)
    assert out.observed_prompt_tokens is None and out.observed_cached_tokens is None
    bad = payload(1, prompt_tokens=100)
    with pytest.raises(InputError, match="exceed"):
        normalize_payload(bad)


# ---------------------------------------------------------------------------------------------
# SpendLogs traps


def test_a_spendlog_without_a_body_keeps_its_usage(tmp_path):
    """``store_prompts_in_spend_logs`` is off by default: no body, so the prompt is incomplete,
    but the row's id, time and usage are kept (a file of such rows is not rejected)."""
    rows = [spendlog(i, proxy_server_request="{}") for i in range(3)]
    out = normalize_spendlog(rows[1])
    assert (out.incomplete, out.messages) == (NO_BODY, None)
    assert (out.observed_prompt_tokens, out.observed_cached_tokens) == (1080, 960)
    con, report = ingest_one(tmp_path, write_jsonl(tmp_path / "nobody.jsonl", rows))
    assert (report.format, report.requests, report.rejected) == ("litellm-spendlogs", 3, 0)
    assert [s.incomplete for s in stored_requests(con)] == [NO_BODY] * 3


def test_spendlog_session_column_is_read_like_a_trace_id():
    """The ``session_id`` column falls back to the per-call trace id: a generated uuid4 there is
    not a session; the body's ``litellm_session_id`` / ``metadata.session_id`` win."""
    generated = "2bc3c60d-860f-43b1-83db-e7717d4e8ca2"
    rec = spendlog(session_id=generated)
    assert normalize_spendlog(rec).session_id == "sess-1"  # from the body
    del rec["proxy_server_request"]["litellm_session_id"]
    assert normalize_spendlog(rec).session_id is None
    rec["proxy_server_request"]["metadata"] = {"session_id": "conv-3"}
    assert normalize_spendlog(rec).session_id == "conv-3"
    rec = spendlog(session_id="conv-4")
    del rec["proxy_server_request"]["litellm_session_id"]
    assert normalize_spendlog(rec).session_id == "conv-4"


def test_spendlog_start_time_is_a_date_time():
    assert normalize_spendlog(spendlog()).ts == calls()[0].ts
    assert normalize_spendlog(spendlog(startTime="2026-01-01T00:00:00.125Z")).ts == calls()[0].ts
    for value in (1767225600.125, "1767225600125", None):
        with pytest.raises(InputError, match="startTime"):
            normalize_spendlog(spendlog(startTime=value))


def test_spendlog_tenant_and_scope():
    """The team (column, else the metadata's), the organization, the key hash; never the key's
    user (``user``) nor the end user (``end_user``, else the body's ``user``), which is kept
    as the end user."""
    rec = spendlog()
    assert normalize_spendlog(rec).tenant == "team-a"
    rec["team_id"] = ""
    assert normalize_spendlog(rec).tenant == "team-a"  # metadata.user_api_key_team_id
    rec["metadata"]["user_api_key_team_id"] = None
    rec["organization_id"] = "org-1"
    assert normalize_spendlog(rec).tenant == "org-1"
    rec["organization_id"] = None
    assert normalize_spendlog(rec).tenant == rec["api_key"]
    rec["api_key"] = ""
    assert rec["user"] == "default_user_id"
    assert (normalize_spendlog(rec).tenant, normalize_spendlog(rec).end_user) == (None, "user-17")
    rec["end_user"] = ""
    rec["proxy_server_request"]["user"] = "u-body"
    assert (normalize_spendlog(rec).tenant, normalize_spendlog(rec).end_user) == (None, "u-body")
    del rec["proxy_server_request"]["user"]
    assert normalize_spendlog(rec).end_user is None
    with pytest.raises(Skip, match="response cache"):
        normalize_spendlog(spendlog(cache_hit="True"))
    with pytest.raises(Skip, match="not a chat, Anthropic Messages or Responses call"):
        normalize_spendlog(spendlog(call_type="aembedding"))
    with pytest.raises(InputError, match="proxy_server_request is a string that is not JSON"):
        normalize_spendlog(spendlog(proxy_server_request='{"model": '))
    with pytest.raises(InputError, match="no 'messages'"):
        normalize_spendlog(spendlog(proxy_server_request={"model": "acme-chat-1"}))


# ---------------------------------------------------------------------------------------------
# /v1/messages (anthropic_messages) and /v1/responses (aresponses) calls


def test_passthrough_payload_fixtures_follow_the_calls():
    """Where LiteLLM put each part of the calls: Anthropic messages with a string system prompt
    prepended as a system message (a system block list nowhere), Responses ``input`` items in
    ``messages`` and ``instructions`` in ``model_parameters``; bridged calls log the tools (and
    the system prompt) in the shape sent on. Usage is LiteLLM's chat ``Usage`` everywhere."""
    cs = calls()
    for path in (ANTHROPIC, ANTHROPIC_BLOCKS, ANTHROPIC_VIA_RESPONSES, ANTHROPIC_VIA_CHAT):
        for r, c in zip(records(path), cs, strict=True):
            assert r["call_type"] == "anthropic_messages" and r["startTime"] == c.ts
            history = r["messages"][1:] if path == ANTHROPIC else r["messages"]
            assert [m["role"] for m in history] == [
                "assistant" if m.role == "assistant" else "user" for m in c.messages
            ]
            assert history[-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
            usage = r["metadata"]["usage_object"]
            assert (r["prompt_tokens"], usage["prompt_tokens"]) == (c.prompt_tokens,) * 2
            assert usage["prompt_tokens_details"]["cached_tokens"] == c.cached_tokens
            assert (
                r["trace_id"] == c.session_id and r["metadata"]["user_api_key_team_id"] == c.tenant
            )
    for r in records(ANTHROPIC):
        assert r["messages"][0] == {"role": "system", "content": SYSTEM}
        assert [t["input_schema"] for t in r["model_parameters"]["tools"]] == [
            t.parameters for t in calls()[0].tools
        ]
    for path in (ANTHROPIC_BLOCKS, ANTHROPIC_VIA_CHAT):  # the system prompt is not logged
        assert all(SYSTEM not in orjson.dumps(r).decode() for r in records(path))
    for r in records(ANTHROPIC_VIA_RESPONSES):
        assert r["model_parameters"]["instructions"] == SYSTEM
        assert all(t["type"] == "function" and "name" in t for t in r["model_parameters"]["tools"])
    for r in records(ANTHROPIC_VIA_CHAT):
        assert all("function" in t for t in r["model_parameters"]["tools"])
    for path in (RESPONSES, RESPONSES_VIA_CHAT):
        for r, c in zip(records(path), cs, strict=True):
            assert r["call_type"] == "aresponses" and r["startTime"] == c.ts
            assert r["messages"][0] == {"role": "user", "content": c.messages[0].text}
            usage = r["metadata"]["usage_object"]
            assert (r["prompt_tokens"], usage["prompt_tokens"]) == (c.prompt_tokens,) * 2
            assert usage["prompt_tokens_details"]["cached_tokens"] == c.cached_tokens
    for r, c in zip(records(RESPONSES), cs, strict=True):
        params = r["model_parameters"]
        assert params["instructions"] == SYSTEM and params["prompt_cache_key"] == "acme-support-v1"
        assert decoded(r["id"]) == response_id(c)
    for r in records(RESPONSES_VIA_CHAT):  # bridged to an Anthropic model: no instructions
        assert "instructions" not in r["model_parameters"]
        assert SYSTEM not in orjson.dumps(r).decode()
        assert all("function" in t for t in r["model_parameters"]["tools"])


def test_passthrough_spendlog_fixtures_keep_the_client_body():
    cs = calls()
    for r, c in zip(records(SPEND_ANTHROPIC), cs, strict=True):
        body = r["proxy_server_request"]
        assert r["call_type"] == "anthropic_messages" and r["request_id"] == c.request_id
        assert body["system"] == [
            {"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}
        ]
        assert body["metadata"] == {"user_id": c.user}
        assert (r["session_id"], r["team_id"], r["prompt_tokens"]) == (
            c.session_id,
            c.tenant,
            c.prompt_tokens,
        )
        assert "litellm_session_id" not in body  # the session came in a header
    for r, c in zip(records(SPEND_RESPONSES), cs, strict=True):
        body = r["proxy_server_request"]
        assert r["call_type"] == "aresponses" and decoded(r["request_id"]) == response_id(c)
        assert body["instructions"] == SYSTEM and isinstance(body["input"], list)
        assert (r["session_id"], r["team_id"], r["prompt_tokens"]) == (
            c.session_id,
            c.tenant,
            c.prompt_tokens,
        )


@pytest.mark.parametrize("path", PASSTHROUGH, ids=lambda p: p.name)
def test_passthrough_calls_ingest_field_by_field(tmp_path, path):
    """Messages, tools, model, time, session, tenant, end user and all four token counts equal
    the calls; the id is LiteLLM's (for Responses calls its encoding of the upstream response
    id)."""
    cs = calls()
    fmt = "litellm-spendlogs" if path.name.startswith("spendlogs") else "litellm-payload"
    con, report = ingest_one(tmp_path, path)
    assert (report.format, report.requests, report.rejected, report.out_of_scope) == (
        fmt,
        len(cs),
        0,
        0,
    )
    assert_accounted(con)
    got = stored_requests(con)
    responses = path in (RESPONSES, SPEND_RESPONSES)
    assert_matches_calls(got, cs, request_id=not responses)
    if responses:
        assert [decoded(s.request_id) for s in got] == [response_id(c) for c in cs]


def test_anthropic_cache_control_markers_are_kept(tmp_path):
    """The markers of the Anthropic body: the last block of the last message, the last tool
    (1h), and in SpendLogs (which keep the system blocks) the system prompt."""
    cs = calls()
    for path, system in ((ANTHROPIC, []), (SPEND_ANTHROPIC, [{"message": 0}])):
        con, _ = ingest_one(tmp_path, path)
        for s, c in zip(stored_requests(con), cs, strict=True):
            expected = [
                *({**m, "part": None, "type": "ephemeral", "ttl": None} for m in system),
                {"message": len(c.messages), "part": None, "type": "ephemeral", "ttl": None},
                {"tool": 1, "type": "ephemeral", "ttl": "1h"},
            ]
            assert s.cache_control == expected, (path.name, c.request_id)


def test_bridged_anthropic_call_reads_instructions_and_responses_tools(tmp_path):
    """``/v1/messages`` sent on to the Responses API: the system prompt comes from
    ``instructions``, the tools from their Responses shape (``strict`` kept in ``function``)."""
    cs = calls()
    con, report = ingest_one(tmp_path, ANTHROPIC_VIA_RESPONSES)
    assert (report.requests, report.rejected) == (len(cs), 0)
    got = stored_requests(con)
    for s, c in zip(got, cs, strict=True):
        assert s.messages == c.openai_messages()
        assert without_strict(s.tools) == c.openai_tools()
        assert all(t["function"]["strict"] is False for t in s.tools)
        assert (s.session_id, s.tenant, s.observed_prompt_tokens, s.observed_cached_tokens) == (
            c.session_id,
            c.tenant,
            c.prompt_tokens,
            c.cached_tokens,
        )
        assert s.end_user == c.user


@pytest.mark.parametrize("path", LOSSY, ids=lambda p: p.name)
def test_a_system_prompt_litellm_did_not_log_is_missing(tmp_path, path):
    """The trap: a system block list (native route) and every bridge to chat completions leave
    the system prompt out of the payload; the rest of each call is read (chat-shaped tools as
    logged), with nothing invented."""
    cs = calls()
    con, report = ingest_one(tmp_path, path)
    assert (report.format, report.requests, report.rejected) == ("litellm-payload", len(cs), 0)
    got = stored_requests(con)
    for s, c in zip(got, cs, strict=True):
        assert s.messages == c.openai_messages()[1:]  # everything but the system prompt
        assert without_strict(s.tools) == c.openai_tools()
        assert (s.model, s.ts, s.session_id, s.tenant) == (c.model, c.ts, c.session_id, c.tenant)
        assert s.end_user == c.user
        assert (s.observed_prompt_tokens, s.observed_cached_tokens) == (
            c.prompt_tokens,
            c.cached_tokens,
        )
        assert s.incomplete is None and not s.truncated


@pytest.mark.parametrize(
    "path", PASSTHROUGH + (ANTHROPIC_VIA_RESPONSES, *LOSSY), ids=lambda p: p.name
)
def test_passthrough_hit_rates(tmp_path, path, reference_rates):
    """The observed rate is the logged cached / prompt tokens of the calls on every route; the
    ideal rate equals the reference's where the whole prompt was logged as sent."""
    cs = calls()
    ideal, observed = hit_rates(path, tmp_path)
    assert observed == sum(c.cached_tokens for c in cs) / sum(c.prompt_tokens for c in cs)
    if path in PASSTHROUGH:
        assert ideal == reference_rates[0]


def test_a_proxy_log_of_every_call_type_is_one_file(tmp_path, reference_rates):
    """One session through each API (chat, /v1/messages, /v1/responses) in one file: one
    format, nothing rejected, and the conversation set analyzes like the reference."""
    cs = calls()
    session = {"sess-1": PAYLOAD, "sess-2": ANTHROPIC, "sess-3": RESPONSES}
    spend_session = {"sess-1": SPEND_JSONL, "sess-2": SPEND_ANTHROPIC, "sess-3": SPEND_RESPONSES}
    for by_session, fmt in ((session, "litellm-payload"), (spend_session, "litellm-spendlogs")):
        recs = [records(by_session[c.session_id])[i] for i, c in enumerate(cs)]
        assert detect_format(recs) == fmt
        path = write_jsonl(tmp_path / f"mixed-{fmt}.jsonl", recs)
        con, report = ingest_one(tmp_path, path)
        assert (report.format, report.requests, report.rejected) == (fmt, len(cs), 0)
        assert_accounted(con)
        got = stored_requests(con)
        assert [s.messages for s in got] == [c.openai_messages() for c in cs]
        ideal, observed = hit_rates(path, tmp_path)
        assert ideal == reference_rates[0]
        assert observed == sum(c.cached_tokens for c in cs) / sum(c.prompt_tokens for c in cs)


@pytest.mark.parametrize(
    "call_type", ["anthropic_messages", "aanthropic_messages", "responses", "aresponses"]
)
def test_every_passthrough_call_type_name_is_read(call_type):
    path = ANTHROPIC if "anthropic" in call_type else RESPONSES
    out = normalize_payload(payload(1, path, call_type=call_type))
    assert out.messages == calls()[1].openai_messages()
    row = spendlog(1, SPEND_ANTHROPIC if "anthropic" in call_type else SPEND_RESPONSES)
    assert normalize_spendlog({**row, "call_type": call_type}).messages == out.messages


def _without_litellm_usage(rec: dict, usage: dict) -> dict:
    """``rec`` with LiteLLM's converted usage gone and ``usage`` (a provider's own shape) in
    ``response.usage``; the record's ``prompt_tokens`` 0, as LiteLLM writes when it had none."""
    rec["metadata"]["usage_object"] = None
    rec["response"] = {"usage": usage}
    rec["prompt_tokens"] = 0
    rec["completion_tokens"] = 0
    return rec


def test_provider_shaped_usage_is_read_by_what_it_counts():
    """Anthropic ``input_tokens`` excludes the cache reads and writes; Responses
    ``input_tokens`` includes them. Either way the stored prompt is the whole prompt."""
    c = calls()[1]  # 1080 prompt tokens, 960 of them cached
    anthropic_usage = {
        "input_tokens": c.fresh_tokens,
        "cache_read_input_tokens": c.cached_tokens,
        "cache_creation_input_tokens": c.cache_write_tokens,
        "output_tokens": c.output_tokens,
    }
    responses_usage = {
        "input_tokens": c.prompt_tokens,
        "input_tokens_details": {"cached_tokens": c.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": c.output_tokens,
    }
    for path, usage in ((ANTHROPIC, anthropic_usage), (RESPONSES, responses_usage)):
        out = normalize_payload(_without_litellm_usage(payload(1, path), usage))
        assert (out.observed_prompt_tokens, out.observed_cached_tokens) == (1080, 960), path
        assert (out.cache_write_tokens, out.output_tokens) == (0, c.output_tokens), path
    # the SpendLogs column fallback holds the response's own keys
    row = spendlog(1, SPEND_ANTHROPIC, prompt_tokens=None, completion_tokens=None)
    row["metadata"]["usage_object"] = None
    row["metadata"]["additional_usage_values"] = anthropic_usage
    out = normalize_spendlog(row)
    assert (out.observed_prompt_tokens, out.observed_cached_tokens) == (1080, 960)
    # the record's own prompt_tokens (LiteLLM's whole prompt) wins over any reading
    out = normalize_payload(
        {**_without_litellm_usage(payload(1, ANTHROPIC), {}), "prompt_tokens": 1080}
    )
    assert (out.observed_prompt_tokens, out.observed_cached_tokens) == (1080, None)
    empty = normalize_payload(_without_litellm_usage(payload(1, RESPONSES), {"total_tokens": 5}))
    assert empty.observed_prompt_tokens is None  # 0 from LiteLLM means "no usage", not 0 tokens


def test_passthrough_redaction_and_truncation():
    redacted = [{"role": "user", "content": "redacted-by-litellm"}]
    for path in (ANTHROPIC, RESPONSES):
        out = normalize_payload(payload(1, path, messages=redacted))
        assert (out.incomplete, out.messages) == (REDACTED_REASON, redacted)
        assert out.observed_prompt_tokens == 1080
    row = spendlog(1, SPEND_RESPONSES)  # LiteLLM's body redaction: messages set, input ""
    row["proxy_server_request"].update(messages=redacted, input="")
    assert normalize_spendlog(row).incomplete == REDACTED_REASON
    cut = "head... (litellm_truncated skipped 912 chars. Truncation is a DB safeguard.) ...tail"
    row = spendlog(1, SPEND_ANTHROPIC)
    row["proxy_server_request"]["system"][0]["text"] = cut
    assert normalize_spendlog(row).truncated
    row = spendlog(1, SPEND_RESPONSES)
    row["proxy_server_request"]["instructions"] = cut
    assert normalize_spendlog(row).truncated
    row = spendlog(1, SPEND_RESPONSES)
    row["proxy_server_request"]["metadata"] = {"note": cut}  # not a prompt field
    assert not normalize_spendlog(row).truncated
    rec = payload(1, ANTHROPIC)
    rec["messages"][2]["content"][0]["input"] = {"account_id": cut}  # inside a tool_use input
    assert normalize_payload(rec).truncated


def test_responses_calls_continuing_stored_state_are_incomplete():
    rec = payload(1, RESPONSES)
    rec["model_parameters"]["previous_response_id"] = "resp_prev"
    out = normalize_payload(rec)
    assert "previous_response_id resp_prev" in out.incomplete
    assert out.session_id == "sess-1"  # the trace id the caller set
    rec = payload(1, RESPONSES, trace_id="0f3e7213-3a68-4426-b154-0241236d4c3a")
    rec["model_parameters"]["conversation"] = {"id": "conv_7"}
    out = normalize_payload(rec)
    assert (out.session_id, out.incomplete.startswith("conversation conv_7")) == ("conv_7", True)
    out = normalize_payload(payload(1, RESPONSES, messages=None))
    assert (out.incomplete, out.messages, out.observed_cached_tokens) == (NO_INPUT, None, 960)
    row = spendlog(1, SPEND_RESPONSES)
    del row["proxy_server_request"]["input"]
    with pytest.raises(InputError, match="proxy_server_request has no 'input'"):
        normalize_spendlog(row)
    row["proxy_server_request"]["prompt"] = {"id": "pmpt_1"}  # a template: stored, incomplete
    assert "prompt template pmpt_1" in normalize_spendlog(row).incomplete


def test_passthrough_end_user_falls_back_to_the_bodys():
    """Without LiteLLM's ``end_user``, the end user is what the body's normalizer takes
    (Anthropic ``metadata.user_id``, Responses ``safety_identifier``); neither is ever the
    tenant, which is None without a team, org or key."""
    for path in (SPEND_ANTHROPIC, SPEND_RESPONSES):
        row = spendlog(1, path, team_id="", organization_id="", api_key="", user="", end_user="")
        row["metadata"]["user_api_key_team_id"] = None
        out = normalize_spendlog(row)
        assert (out.tenant, out.end_user) == (None, "user-17"), path.name
        row["proxy_server_request"].pop("metadata", None)
        row["proxy_server_request"].pop("safety_identifier", None)
        out = normalize_spendlog(row)
        assert (out.tenant, out.end_user) == (None, None), path.name


# ---------------------------------------------------------------------------------------------
# hostile values


WRONG = (1, -1, 2.5, math.nan, 1e300, True, "x", "", [], {}, [1], {"a": 1}, None)
PAYLOAD_FIELDS = (
    "id",
    "trace_id",
    "session_id",
    "call_type",
    "status",
    "cache_hit",
    "startTime",
    "model",
    "model_group",
    "end_user",
    "messages",
    "model_parameters",
    "metadata",
    "response",
    "prompt_tokens",
    "completion_tokens",
)
SPENDLOG_FIELDS = (
    "request_id",
    "session_id",
    "call_type",
    "status",
    "cache_hit",
    "startTime",
    "model",
    "team_id",
    "organization_id",
    "api_key",
    "user",
    "end_user",
    "messages",
    "metadata",
    "proxy_server_request",
    "prompt_tokens",
    "completion_tokens",
)


def test_fuzz_wrong_types_never_crash():
    base_payload, base_row = payload(1), spendlog(1)
    for field in PAYLOAD_FIELDS:
        for value in WRONG:
            reads_or_refuses(normalize_payload, {**copy.deepcopy(base_payload), field: value})
    for field in SPENDLOG_FIELDS:
        for value in WRONG:
            reads_or_refuses(normalize_spendlog, {**copy.deepcopy(base_row), field: value})
    nested = (
        ("metadata", "usage_object"),
        ("metadata", "requester_metadata"),
        ("metadata", "user_api_key_team_id"),
        ("model_parameters", "tools"),
    )
    for outer, inner in nested:
        for value in WRONG:
            rec = copy.deepcopy(base_payload)
            rec[outer][inner] = value
            reads_or_refuses(normalize_payload, rec)
    for key in ("messages", "tools", "litellm_session_id", "metadata", "model"):
        for value in WRONG:
            row = copy.deepcopy(base_row)
            row["proxy_server_request"][key] = value
            reads_or_refuses(normalize_spendlog, row)
    deep: dict = {}
    for _ in range(400):  # deeper than JSON output allows
        deep = {"x": deep}
    rec = copy.deepcopy(base_payload)
    rec["messages"][1]["content"] = [{"type": "text", "text": "hi", "extra": deep}]
    with pytest.raises(InputError, match="cannot be serialized"):
        normalize_payload(rec)
    for value in WRONG:
        rec = copy.deepcopy(base_payload)
        rec["metadata"]["usage_object"]["prompt_tokens_details"] = value
        reads_or_refuses(normalize_payload, rec)
        rec = copy.deepcopy(base_payload)
        rec["metadata"]["usage_object"]["prompt_tokens_details"]["cached_tokens"] = value
        reads_or_refuses(normalize_payload, rec)


FUZZED = ("messages", "model_parameters", "proxy_server_request", "response")


@pytest.mark.parametrize(
    ("normalize", "rec"),
    [
        (normalize_payload, payload(1, ANTHROPIC)),
        (normalize_payload, payload(1, ANTHROPIC_VIA_RESPONSES)),
        (normalize_payload, payload(1, RESPONSES)),
        (normalize_payload, payload(1, RESPONSES_VIA_CHAT)),
        (normalize_spendlog, spendlog(1, SPEND_ANTHROPIC)),
        (normalize_spendlog, spendlog(1, SPEND_RESPONSES)),
    ],
    ids=["anthropic", "anthropic-bridged", "responses", "responses-bridged", "spend-a", "spend-r"],
)
def test_fuzz_passthrough_records_never_crash(normalize, rec):
    """A wrong-typed value anywhere in the prompt parts, the usage or the top level gives a
    request or a one-line ``InputError`` (or ``Skip``), never another exception."""
    paths = [p for p in json_paths(rec) if len(p) == 1 or p[0] in FUZZED]
    paths += [("metadata", "usage_object", *p) for p in json_paths(rec["metadata"]["usage_object"])]
    for path in paths:
        for value in WRONG:
            reads_or_refuses(normalize, replaced(rec, path, value))
