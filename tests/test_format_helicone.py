"""Helicone request exports (format ``helicone``).

The fixtures (``tests/fixtures/helicone/``) are written from ``conversations.calls()`` by
``make_fixtures.py`` following Helicone's own code, since its exports come from its server and
cannot be produced offline: ``HeliconeRequest`` (``packages/llm-mapper/types.ts``), the columns of
``getRequestsClickhouse`` (``valhalla/jawn/src/lib/stores/request/request.ts``, the query API
``POST /v1/request/query-clickhouse``), the ``@helicone/export`` CLI
(``examples/export/typescript``: JSONL, bodies from the signed URL with ``--include-body``), the
token columns as jawn's ``openaiBodyProcessor`` / ``anthropicBodyProcessor`` fill them
(``prompt_tokens`` without the cached part) and the ``Helicone-Session-Id`` property
(docs.helicone.ai, HQL: ``properties['Helicone-Session-Id']``). The CSV fixture is written as
the CLI's ``convertToCSVRow`` writes it and read by kvtool's CSV reader.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from conversations import calls
from formats_check import (
    BAD_VALUES,
    assert_accounted,
    assert_hit_rates_match_reference,
    assert_matches_calls,
    assert_split_reads_or_refuses,
    fixture_module,
    hit_rates,
    ingest_one,
    reference_file,
    stored_requests,
    write_jsonl,
)

from kvtool.errors import InputError
from kvtool.ingest.formats.base import Skip
from kvtool.ingest.formats.helicone import NOT_EXPORTED, helicone_records, normalize_helicone

FIXTURES = Path(__file__).parent / "fixtures" / "helicone"
NAMES = ["anthropic.jsonl", "query-pages.jsonl", "requests.jsonl"]


def request(**fields) -> dict:
    """A minimal query-API request object; ``fields`` override or add keys."""
    rec = {
        "response_id": "resp-1",
        "response_body": None,
        "request_id": "req-1",
        "request_body": {"model": "acme-chat-1", "messages": [{"role": "user", "content": "hi"}]},
        "request_created_at": "2026-01-01 00:00:00.125",
        "request_user_id": "user-1",
        "request_properties": {"Helicone-Session-Id": "s-1", "team": "team-a"},
        "provider": "OPENAI",
        "request_model": "acme-chat-1",
        "prompt_tokens": 100,
        "prompt_cache_read_tokens": 800,
        "prompt_cache_write_tokens": 50,
        "completion_tokens": 7,
    }
    rec.update(fields)
    return rec


# ---------------------------------------------------------------------------------------------
# the fixtures


def test_committed_fixtures_are_what_the_script_writes():
    built = fixture_module(FIXTURES, "helicone_fixtures").build()
    assert sorted(built) == sorted([*NAMES, "export.csv"])
    for name, data in built.items():
        assert (FIXTURES / name).read_bytes() == data, name


@pytest.mark.parametrize("name", NAMES)
def test_fixture_ingests_field_by_field(tmp_path, name):
    cs = calls()
    con, report = ingest_one(tmp_path, FIXTURES / name)
    assert (report.format, report.requests, report.rejected) == ("helicone", len(cs), 0)
    assert report.out_of_scope == 0
    assert_accounted(con)
    assert_matches_calls(stored_requests(con), cs)


def test_export_cli_csv(tmp_path):
    """The export CLI's CSV: no request id (the response id stands in), no cache columns and
    no response body, so the prompt count stays unknown rather than being Helicone's
    prompt-minus-cached; everything else is read, object cells undoubled."""
    cs = sorted(calls(), key=lambda c: c.ts)
    path = FIXTURES / "export.csv"
    con, report = ingest_one(tmp_path, path)
    assert (report.format, report.requests, report.rejected) == ("helicone", len(cs), 0)
    assert_accounted(con)
    got = stored_requests(con)
    for s, c in zip(got, cs, strict=True):
        assert (s.messages, s.tools, s.model) == (c.openai_messages(), c.openai_tools(), c.model)
        assert (s.request_id, s.session_id, s.tenant, s.end_user) == (
            f"resp-{c.request_id}",
            c.session_id,
            c.tenant,
            c.user,
        )
        assert abs(s.ts - c.ts) < 1e-3
        assert (s.observed_prompt_tokens, s.observed_cached_tokens, s.output_tokens) == (
            None,
            None,
            c.output_tokens,
        )
    ideal_ref, _ = hit_rates(reference_file(tmp_path, cs), tmp_path)
    assert hit_rates(path, tmp_path) == (ideal_ref, None)


def test_fixture_prompt_tokens_column_is_not_the_prompt():
    """The fixtures carry the trap: Helicone's prompt_tokens column is below the prompt
    wherever something was cached or written, so the field-by-field test above shows the
    rebuild."""
    cs = {c.request_id: c for c in calls()}
    rows = [orjson.loads(line) for line in (FIXTURES / "requests.jsonl").read_bytes().splitlines()]
    assert all(r["prompt_tokens"] < cs[r["request_id"]].prompt_tokens for r in rows)


def test_explicit_format_and_a_contradicted_one(tmp_path):
    path = FIXTURES / "requests.jsonl"
    con, report = ingest_one(tmp_path, path, fmt="helicone")
    assert (report.format, report.requests, report.rejected) == ("helicone", 12, 0)
    assert_matches_calls(stored_requests(con), calls())
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(InputError, match="looks like helicone.*use --format helicone"):
        ingest_one(other, path, fmt="langfuse")


@pytest.mark.parametrize("name", NAMES)
def test_hit_rates_match_the_reference(tmp_path, name):
    assert_hit_rates_match_reference(FIXTURES / name, tmp_path)


# ---------------------------------------------------------------------------------------------
# the usage trap


def test_prompt_is_rebuilt_from_the_cache_columns():
    out = normalize_helicone(request(prompt_audio_tokens=10))
    assert (out.observed_prompt_tokens, out.observed_cached_tokens, out.cache_write_tokens) == (
        960,
        800,
        50,
    )
    assert out.output_tokens == 7


def test_columns_win_over_the_response_usage_and_csv_without_cache_columns():
    """The body's own usage is the fallback: columns when they can rebuild the prompt; the
    CLI's CSV has prompt_tokens but no cache columns, so its prompt stays unknown unless a
    response body says it."""
    body_usage = {
        "usage": {
            "prompt_tokens": 999,
            "completion_tokens": 3,
            "prompt_tokens_details": {"cached_tokens": 512},
        }
    }
    out = normalize_helicone(request(response_body=body_usage))
    assert (out.observed_prompt_tokens, out.observed_cached_tokens) == (950, 800)
    csv_row = request()
    del csv_row["prompt_cache_read_tokens"], csv_row["prompt_cache_write_tokens"]
    out = normalize_helicone(csv_row)
    assert (out.observed_prompt_tokens, out.observed_cached_tokens, out.output_tokens) == (
        None,
        None,
        7,
    )
    out = normalize_helicone({**csv_row, "response_body": body_usage})
    assert (out.observed_prompt_tokens, out.observed_cached_tokens, out.output_tokens) == (
        999,
        512,
        7,
    )
    out = normalize_helicone(request(prompt_cache_read_tokens=None, prompt_cache_write_tokens=0))
    assert (out.observed_prompt_tokens, out.observed_cached_tokens) == (100, 0)


# ---------------------------------------------------------------------------------------------
# bodies, fields, records


def test_bodies_not_exported_and_non_chat_bodies():
    placeholder = {"helicone_message": "fetching body from signed_url... contact engineering"}
    for body in (None, placeholder):
        out = normalize_helicone(request(request_body=body, response_body=placeholder))
        assert (out.messages, out.incomplete) == (None, NOT_EXPORTED)
        assert (out.request_id, out.session_id, out.observed_prompt_tokens) == ("req-1", "s-1", 950)
    with pytest.raises(Skip, match="without 'messages' or 'prompt'"):
        normalize_helicone(request(request_body={"model": "emb", "input": ["a", "b"]}))
    out = normalize_helicone(request(request_body={"model": "m", "prompt": "The sky is"}))
    assert (out.kind, out.prompt) == ("completion", "The sky is")


def test_csv_shaped_row_reads_like_the_object_row():
    """CSV rows arrive with JSON columns as JSON text and times as text."""
    obj = request(response_body={"id": "x", "usage": {"prompt_tokens": 1}})
    text = {k: orjson.dumps(v).decode() if isinstance(v, dict) else v for k, v in obj.items()}
    a, b = normalize_helicone(obj), normalize_helicone(text)
    assert a == b
    assert (a.messages, a.session_id, a.tenant, a.ts) == (
        [{"role": "user", "content": "hi"}],
        "s-1",
        "team-a",
        1_767_225_600.125,
    )


def test_session_tenant_model_and_id_sources():
    """``request_user_id`` (Helicone-User-Id) is the end user, never the tenant: without a
    team/org property (or a body tenant) the tenant is None (one domain)."""
    out = normalize_helicone(request(request_properties={"helicone-session-id": "lower"}))
    assert (out.session_id, out.tenant, out.end_user) == ("lower", None, "user-1")
    out = normalize_helicone(
        request(request_properties=None, properties={"Helicone-Session-Id": "p", "Org": "o-1"})
    )
    assert (out.session_id, out.tenant, out.end_user) == ("p", "o-1", "user-1")
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "user": "u-body"}
    out = normalize_helicone(request(request_body=body))
    assert (out.tenant, out.end_user) == ("team-a", "user-1")  # the column before the body's
    out = normalize_helicone(request(request_body=body, request_user_id=None))
    assert (out.tenant, out.end_user) == ("team-a", "u-body")
    assert normalize_helicone(request(request_user_id="")).end_user is None
    out = normalize_helicone(request(request_model=None, model=None, response_model="resp-m"))
    assert out.model == "acme-chat-1"  # the body's model before the response's
    body = {"messages": [{"role": "user", "content": "hi"}]}
    out = normalize_helicone(request(request_body=body, request_model=None, response_model="r"))
    assert out.model == "r"
    assert normalize_helicone(request(request_created_at=1_767_225_600_125)).ts == 1_767_225_600.125
    csv_row = request()
    del csv_row["request_id"]  # the CLI's CSV has only response_id
    assert normalize_helicone(csv_row).request_id == "resp-1"


def test_anthropic_body_is_read_by_the_anthropic_reader():
    body = {
        "model": "claude-x",
        "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "hi"}],
    }
    out = normalize_helicone(request(request_body=body, provider="ANTHROPIC"))
    assert out.messages == [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]
    assert out.cache_control == [{"message": 0, "part": None, "type": "ephemeral", "ttl": None}]


def test_records_of_pages():
    rec = request()
    assert list(helicone_records(rec)) == [rec]
    page = {"data": [rec, {**rec, "request_id": "req-2"}], "error": None}
    assert [r["request_id"] for r in helicone_records(page)] == ["req-1", "req-2"]
    with pytest.raises(InputError, match=r"data\[1\] must be an object"):
        list(helicone_records({"data": [rec, 3], "error": None}))


# ---------------------------------------------------------------------------------------------
# hostile input

FIELDS = [
    "request_body",
    "response_body",
    "request_properties",
    "properties",
    "request_id",
    "response_id",
    "request_created_at",
    "request_user_id",
    "request_model",
    "model",
    "prompt_tokens",
    "prompt_cache_read_tokens",
    "prompt_cache_write_tokens",
    "prompt_audio_tokens",
    "completion_tokens",
    "data",
]


@pytest.mark.parametrize("field", FIELDS)
def test_wrong_types_give_one_line_reasons(field):
    for bad in BAD_VALUES:
        assert_split_reads_or_refuses(helicone_records, normalize_helicone, request(**{field: bad}))


def test_out_of_range_counts_and_times_are_rejected(tmp_path):
    lines = [
        request(request_id="ok"),
        request(request_id="huge", prompt_tokens=2**62, prompt_cache_read_tokens=2**62),
        request(request_id="neg", prompt_cache_write_tokens=-5),
        request(request_id="far", request_created_at="2200-01-01 00:00:00"),
        request(request_id="text", completion_tokens="7 tokens"),
        request(request_id="props", request_properties=["Helicone-Session-Id"]),
    ]
    con, report = ingest_one(tmp_path, write_jsonl(tmp_path / "bad.jsonl", lines))
    assert (report.requests, report.rejected) == (1, 5)
    assert_accounted(con)
    reasons = [r[0] for r in con.execute("SELECT reason FROM rejects ORDER BY line").fetchall()]
    assert "out of range" in reasons[0]
    assert "prompt_cache_write_tokens" in reasons[1]
    assert "request_created_at" in reasons[2]
    assert "completion_tokens" in reasons[3]
    assert "request_properties" in reasons[4]
