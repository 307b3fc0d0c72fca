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
LiteLLM has no ``prefix_block_hashes`` field (searched its code and the public repository), so
no hash-only LiteLLM format is tested.
"""

from __future__ import annotations

import copy
import csv
import gzip
import math
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from conversations import calls
from formats_check import (
    assert_accounted,
    assert_matches_calls,
    hit_rates,
    ingest_one,
    reference_file,
    stored_requests,
    write_jsonl,
)

from kvtool import analyze
from kvtool.errors import InputError
from kvtool.ingest.formats import Normalized, Skip
from kvtool.ingest.formats.litellm import (
    GENERATED_ID,
    NO_BODY,
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
PAYLOADS = (PAYLOAD, CORRELATED, UNCORRELATED)
SPENDLOGS = (SPEND_JSONL, SPEND_CSV, SPEND_PARQUET)
TRUNCATED_ID = "req-4-0-0"  # the extra SpendLogs row whose user message LiteLLM cut
TRUNCATED = {"prompt": 2400, "cached": 896, "session": "sess-4"}


def records(path: Path) -> list[dict]:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return [orjson.loads(line) for line in data.splitlines()]


def payload(i: int = 0, **fields) -> dict:
    """A copy of the ``i``-th payload record with ``fields`` replaced."""
    rec = copy.deepcopy(records(PAYLOAD)[i])
    rec.update(fields)
    return rec


def spendlog(i: int = 0, **fields) -> dict:
    """A copy of the ``i``-th SpendLogs row (JSONL export) with ``fields`` replaced."""
    rec = copy.deepcopy(records(SPEND_JSONL)[i])
    rec.update(fields)
    return rec


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


def test_tenant_is_the_team_then_org_then_key_then_end_user():
    rec = payload()
    meta = rec["metadata"]
    assert normalize_payload(rec).tenant == "team-a"
    meta["user_api_key_team_id"] = None
    meta["team_id"] = "team-b"
    assert normalize_payload(rec).tenant == "team-b"
    meta["team_id"] = None
    meta["user_api_key_org_id"] = "org-1"
    assert normalize_payload(rec).tenant == "org-1"
    meta["user_api_key_org_id"] = None
    assert normalize_payload(rec).tenant == meta["user_api_key_hash"]
    meta["user_api_key_hash"] = None
    meta["user_api_key_user_id"] = None
    assert normalize_payload(rec).tenant == rec["end_user"] == "user-17"


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
        ({"call_type": "aembedding"}, "not a chat completion"),
        ({"call_type": "anthropic_messages"}, "not a chat completion"),
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
    """The team (column, else the metadata's), the organization, the key hash, the key's user,
    and only then the end user."""
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
    assert normalize_spendlog(rec).tenant == rec["user"] == "default_user_id"
    rec["user"] = ""
    assert normalize_spendlog(rec).tenant == "user-17"
    with pytest.raises(Skip, match="response cache"):
        normalize_spendlog(spendlog(cache_hit="True"))
    with pytest.raises(Skip, match="not a chat completion"):
        normalize_spendlog(spendlog(call_type="aanthropic_messages"))
    with pytest.raises(InputError, match="proxy_server_request is a string that is not JSON"):
        normalize_spendlog(spendlog(proxy_server_request='{"model": '))
    with pytest.raises(InputError, match="no 'messages'"):
        normalize_spendlog(spendlog(proxy_server_request={"model": "acme-chat-1"}))


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


def _only_input_errors(normalize, rec: dict) -> None:
    try:
        out = normalize(rec)
    except (InputError, Skip):
        return
    assert isinstance(out, Normalized)


def test_fuzz_wrong_types_never_crash():
    base_payload, base_row = payload(1), spendlog(1)
    for field in PAYLOAD_FIELDS:
        for value in WRONG:
            _only_input_errors(normalize_payload, {**copy.deepcopy(base_payload), field: value})
    for field in SPENDLOG_FIELDS:
        for value in WRONG:
            _only_input_errors(normalize_spendlog, {**copy.deepcopy(base_row), field: value})
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
            _only_input_errors(normalize_payload, rec)
    for key in ("messages", "tools", "litellm_session_id", "metadata", "model"):
        for value in WRONG:
            row = copy.deepcopy(base_row)
            row["proxy_server_request"][key] = value
            _only_input_errors(normalize_spendlog, row)
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
        _only_input_errors(normalize_payload, rec)
        rec = copy.deepcopy(base_payload)
        rec["metadata"]["usage_object"]["prompt_tokens_details"]["cached_tokens"] = value
        _only_input_errors(normalize_payload, rec)
