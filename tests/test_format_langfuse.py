"""Langfuse observation exports (format ``langfuse``).

The fixtures (``tests/fixtures/langfuse/``) are written from ``conversations.calls()`` by
``make_fixtures.py`` following Langfuse's own definitions, since its exports come from its server
and cannot be produced offline (the CSV one as ``transformStreamToCsv.ts`` writes it, read by
kvtool's CSV reader): ``fern/apis/server/definition/commons.yml`` (``Observation``,
``ObservationsView``, ``ObservationV2``, ``TraceWithFullDetails``, ``Usage``),
``observations-v2.yml`` (field groups), ``packages/shared/src/domain/observation-field-groups.ts``
and ``repositories/observations.ts`` (the blob-storage export's snake_case columns),
``observations_converters.ts`` (``reduceUsageOrCostDetails``: input = every usage key naming
input), ``ingestion/types.ts`` and ``otel/OtelIngestionProcessor.ts`` (``input`` has every
``input_*`` detail subtracted; the cache key names), langfuse-python's ``openai.py`` (the
``{"tools", "messages"}`` input) and ``langchain/CallbackHandler.py`` (LangChain shapes and
usage keys).
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
    ingest_one,
    stored_requests,
    write_jsonl,
)

from kvtool.errors import InputError
from kvtool.ingest.formats.base import Skip
from kvtool.ingest.formats.langfuse import langfuse_records, normalize_langfuse

FIXTURES = Path(__file__).parent / "fixtures" / "langfuse"
SKIPPED = {
    "batch-export-observations.csv": {"observation type SPAN": 6},
    "observations-v2.jsonl": {"observation type AGENT": 6, "observation type TOOL": 6},
    "traces.jsonl": {"observation type TOOL": 6},
    "blob-observations-v2.jsonl": {},
}


def generation(**fields) -> dict:
    """A minimal v1-shaped GENERATION observation; ``fields`` override or add keys."""
    rec = {
        "id": "gen-1",
        "traceId": "trace-1",
        "type": "GENERATION",
        "startTime": "2026-01-01T00:00:00.125Z",
        "model": "acme-chat-1",
        "input": [{"role": "user", "content": "hi"}],
        "usageDetails": {"input": 10, "output": 2, "total": 12},
    }
    rec.update(fields)
    return rec


# ---------------------------------------------------------------------------------------------
# the fixtures


def test_committed_fixtures_are_what_the_script_writes():
    built = fixture_module(FIXTURES, "langfuse_fixtures").build()
    assert sorted(built) == sorted(SKIPPED)
    for name, data in built.items():
        assert (FIXTURES / name).read_bytes() == data, name


@pytest.mark.parametrize("name", sorted(SKIPPED))
def test_fixture_ingests_field_by_field(tmp_path, name):
    """Detected without a format; every generation stored as its call; every other
    observation counted as skipped (by type), none rejected."""
    cs = calls()
    con, report = ingest_one(tmp_path, FIXTURES / name)
    assert (report.format, report.requests, report.rejected) == ("langfuse", len(cs), 0)
    assert report.out_of_scope == sum(SKIPPED[name].values())
    assert report.out_of_scope_reasons == SKIPPED[name]
    assert_accounted(con)
    assert_matches_calls(stored_requests(con), cs)
    skipped = con.execute("SELECT reason FROM rejects WHERE skipped ORDER BY line, item").fetchall()
    assert all(r[0].startswith("observation type ") for r in skipped)


def test_trace_fixture_carries_session_and_user_from_the_trace():
    """The traces fixture's observations have no session or user of their own (v1 leaves them
    out), so the field-by-field test above shows they come from the enclosing trace."""
    trace = orjson.loads((FIXTURES / "traces.jsonl").read_bytes().splitlines()[0])
    assert trace["sessionId"] == "sess-1" and trace["userId"] == "user-17"
    assert all("sessionId" not in o and "userId" not in o for o in trace["observations"])
    obs = list(langfuse_records(trace))
    assert [o["type"] for o in obs] == ["GENERATION", "TOOL", "GENERATION"]
    assert {(o["sessionId"], o["userId"]) for o in obs} == {("sess-1", "user-17")}


def test_explicit_format_and_a_contradicted_one(tmp_path):
    path = FIXTURES / "observations-v2.jsonl"
    con, report = ingest_one(tmp_path, path, fmt="langfuse")
    assert (report.format, report.requests, report.rejected, report.out_of_scope) == (
        "langfuse",
        12,
        0,
        12,
    )
    assert_matches_calls(stored_requests(con), calls())
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(InputError, match="looks like langfuse.*use --format langfuse"):
        ingest_one(other, path, fmt="openai-chat")


@pytest.mark.parametrize("name", sorted(SKIPPED))
def test_hit_rates_match_the_reference(tmp_path, name):
    """The ideal hit rate equals the OpenAI chat reference's exactly; the observed one is the
    logged cache reads over the whole prompts (input + every input detail)."""
    assert_hit_rates_match_reference(FIXTURES / name, tmp_path)


# ---------------------------------------------------------------------------------------------
# the usage trap


def test_usage_input_excludes_its_details():
    """usageDetails.input is what is left after every input_* detail was subtracted: the
    prompt is their sum, reads and writes are the cache parts, output adds its details."""
    out = normalize_langfuse(
        generation(
            usageDetails={
                "input": 100,
                "input_cached_tokens": 800,
                "input_cache_creation": 50,
                "input_audio_tokens": 10,
                "output": 5,
                "output_reasoning_tokens": 7,
                "total": 972,
            }
        )
    )
    assert (out.observed_prompt_tokens, out.observed_cached_tokens, out.cache_write_tokens) == (
        960,
        800,
        50,
    )
    assert out.output_tokens == 12


@pytest.mark.parametrize(
    ("details", "prompt", "cached", "written"),
    [
        # LangChain input_token_details / Bedrock provider metadata
        ({"input": 100, "input_cache_read": 800, "input_cache_write": 50}, 950, 800, 50),
        # Anthropic TTL breakdown: the aggregate already has the 5m/1h parts subtracted
        (
            {
                "input": 100,
                "input_cached_tokens": 800,
                "input_cache_creation": 0,
                "input_cache_creation_5m": 30,
                "input_cache_creation_1h": 20,
            },
            950,
            800,
            50,
        ),
        # raw Anthropic usage kept by LangChain's handler: input_tokens -> input (uncached),
        # the cache_creation breakdown next to the aggregate it is part of
        (
            {
                "input": 100,
                "cache_read_input_tokens": 800,
                "cache_creation_input_tokens": 50,
                "cache_creation_ephemeral_5m_input_tokens": 50,
                "cache_creation_ephemeral_1h_input_tokens": 0,
            },
            950,
            800,
            50,
        ),
        # LangChain's priority-tier keys are not subtracted from input: not added again
        ({"input": 100, "input_cache_read": 800, "input_priority": 900}, 900, 800, None),
        # Vertex through LangChain: cached_modality_* subtracted from input
        ({"input": 100, "cached_modality_text": 800}, 900, 800, None),
        # ClickHouse quotes 64-bit counts
        ({"input": "100", "input_cached_tokens": "800"}, 900, 800, None),
        # no cache keys (e.g. counts Langfuse inferred): cached tokens unknown
        ({"input": 900, "output": 5}, 900, None, None),
    ],
)
def test_usage_key_variants(details, prompt, cached, written):
    out = normalize_langfuse(generation(usageDetails=details))
    assert (out.observed_prompt_tokens, out.observed_cached_tokens, out.cache_write_tokens) == (
        prompt,
        cached,
        written,
    )


def test_deprecated_usage_is_the_whole_input():
    """v1's ``usage.input`` is Langfuse's own whole-input sum; it is read only without
    usageDetails and gives no cached count."""
    for details in (None, {}):
        rec = generation(usageDetails=details, usage={"unit": "TOKENS", "input": 900, "output": 5})
        out = normalize_langfuse(rec)
        assert (out.observed_prompt_tokens, out.observed_cached_tokens, out.output_tokens) == (
            900,
            None,
            5,
        )
    out = normalize_langfuse(
        generation(
            usageDetails={"input": 100, "input_cached_tokens": 800},
            usage={"input": 900, "output": 0, "total": 900},
        )
    )
    assert (out.observed_prompt_tokens, out.observed_cached_tokens) == (900, 800)


# ---------------------------------------------------------------------------------------------
# records, ids, sessions, tenants


def test_records_of_pages_traces_and_observations():
    obs = generation()
    assert list(langfuse_records(obs)) == [obs]
    page = {"data": [obs, {**obs, "id": "gen-2"}], "meta": {"page": 1}}
    assert [o["id"] for o in langfuse_records(page)] == ["gen-1", "gen-2"]
    trace = {
        "id": "trace-1",
        "timestamp": "2026-01-01T00:00:00Z",
        "sessionId": "s-trace",
        "userId": "u-trace",
        "observations": [obs, {**obs, "id": "gen-2", "sessionId": "s-own", "userId": ""}],
    }
    got = list(langfuse_records(trace))
    assert [(o["sessionId"], o["userId"]) for o in got] == [
        ("s-trace", "u-trace"),
        ("s-own", "u-trace"),
    ]
    assert "sessionId" not in obs  # the observation itself is not changed
    listing = {"id": "trace-2", "timestamp": "2026-01-01T00:00:00Z", "observations": ["a", "b"]}
    assert list(langfuse_records(listing)) == [listing]
    with pytest.raises(Skip, match="trace without observation objects"):
        normalize_langfuse(listing)
    with pytest.raises(InputError, match=r"observations\[1\] must be an object"):
        list(langfuse_records({**trace, "observations": [obs, 7]}))
    with pytest.raises(InputError, match=r"data\[0\] must be an object"):
        list(langfuse_records({"data": ["x"]}))


def test_fields_tenant_and_end_user():
    """tenant = projectId, end user = userId; a generation naming only a user has tenant None
    (one domain): the end user is never the tenant."""
    out = normalize_langfuse(
        generation(projectId="proj-9", userId="user-1", sessionId="s-1", startTime="2026-01-01")
    )
    assert (out.request_id, out.session_id, out.tenant, out.end_user, out.model) == (
        "gen-1",
        "s-1",
        "proj-9",
        "user-1",
        "acme-chat-1",
    )
    assert out.ts == 1_767_225_600.0
    # off-schema epoch numbers are JavaScript milliseconds, never guessed
    assert normalize_langfuse(generation(startTime=1_767_225_600_125)).ts == 1_767_225_600.125
    only_user = normalize_langfuse(generation(userId="user-1"))
    assert (only_user.tenant, only_user.end_user) == (None, "user-1")
    assert normalize_langfuse(generation(userId="")).end_user is None
    assert normalize_langfuse(generation(traceId="t")).session_id is None  # no traceId fallback
    v2 = generation(providedModelName="m-v2")
    del v2["model"]
    assert normalize_langfuse(v2).model == "m-v2"
    blob = {
        "id": "g",
        "trace_id": "t",
        "type": "GENERATION",
        "start_time": "2026-01-01 00:00:00.125",
        "provided_model_name": "m",
        "session_id": "s",
        "user_id": "u",
        "input": '[{"role": "user", "content": "hi"}]',
        "usage_details": {"input": "3", "input_cached_tokens": "16"},
    }
    out = normalize_langfuse(blob)
    assert (out.ts, out.model, out.session_id, out.tenant, out.end_user) == (
        1_767_225_600.125,
        "m",
        "s",
        None,
        "u",
    )
    assert out.messages == [{"role": "user", "content": "hi"}]
    assert (out.observed_prompt_tokens, out.observed_cached_tokens) == (19, 16)


# ---------------------------------------------------------------------------------------------
# input shapes


def test_input_shapes():
    call = calls()[3]
    messages, tools = call.openai_messages(), call.openai_tools()
    out = normalize_langfuse(generation(input=messages))
    assert (out.kind, out.messages, out.tools) == ("chat", messages, None)
    out = normalize_langfuse(generation(input={"tools": tools, "messages": messages}))
    assert (out.messages, out.tools) == (messages, tools)
    functions = [t["function"] for t in tools]
    out = normalize_langfuse(generation(input={"functions": functions, "messages": messages}))
    assert out.tools == tools
    text = orjson.dumps({"tools": tools, "messages": messages}).decode()  # CSV / v2 raw JSON
    out = normalize_langfuse(generation(input=text))
    assert (out.messages, out.tools) == (messages, tools)
    out = normalize_langfuse(generation(input="Complete this: the sky is"))
    assert (out.kind, out.prompt, out.messages) == ("completion", "Complete this: the sky is", None)
    out = normalize_langfuse(generation(input=None))
    assert out.messages is None and out.incomplete == "the observation's input is not in the export"
    with pytest.raises(InputError, match="input is an object without 'messages'"):
        normalize_langfuse(generation(input={"question": "hi"}))


def test_langchain_input_becomes_openai_shaped():
    """LangChain's handler: tool calls as {name, args, id}, tools appended as trailing
    {"role": "tool", "content": <tool>} messages, additional_kwargs next to the message."""
    call = calls()[1]  # system, user, assistant tool call, tool result
    tools = call.openai_tools()
    lc_messages = []
    for msg in call.openai_messages():
        if msg.get("tool_calls"):
            calls_lc = [
                {
                    "name": c["function"]["name"],
                    "args": orjson.loads(c["function"]["arguments"]),
                    "id": c["id"],
                    "type": "tool_call",
                }
                for c in msg["tool_calls"]
            ]
            msg = {"role": "assistant", "content": None, "tool_calls": calls_lc}
            msg["additional_kwargs"] = {"refusal": None}
        lc_messages.append(msg)
    lc_input = lc_messages + [{"role": "tool", "content": t} for t in tools]
    out = normalize_langfuse(generation(input=lc_input))
    assert out.messages == call.openai_messages()
    assert out.tools == tools
    with pytest.raises(InputError, match="follows a tool definition"):
        normalize_langfuse(generation(input=lc_input + [{"role": "user", "content": "x"}]))


def test_observation_without_input_is_stored_incomplete(tmp_path):
    path = write_jsonl(tmp_path / "noio.jsonl", [generation(input=None), generation(id="gen-2")])
    con, report = ingest_one(tmp_path, path)
    assert (report.format, report.requests, report.rejected) == ("langfuse", 2, 0)
    rows = con.execute("SELECT request_id, incomplete FROM requests ORDER BY request_id").fetchall()
    assert rows == [("gen-1", "the observation's input is not in the export"), ("gen-2", None)]


# ---------------------------------------------------------------------------------------------
# hostile input


FIELDS = [
    "type",
    "id",
    "startTime",
    "sessionId",
    "userId",
    "projectId",
    "model",
    "input",
    "usageDetails",
    "usage",
    "observations",
    "data",
]


@pytest.mark.parametrize("field", FIELDS)
def test_wrong_types_give_one_line_reasons(field):
    """Every wrong-typed field either still reads or raises InputError/Skip (one line, naming
    the field), through the record split too; never another exception."""
    for bad in BAD_VALUES:
        assert_split_reads_or_refuses(
            langfuse_records, normalize_langfuse, generation(**{field: bad})
        )


def test_wrong_typed_counts_name_their_key():
    for bad in BAD_VALUES:
        for rec in (
            generation(usageDetails={"input": 1, "input_cached_tokens": bad}),
            generation(usageDetails=None, usage={"input": bad}),
        ):
            try:
                normalize_langfuse(rec)
            except InputError as exc:
                assert "input" in str(exc) and "\n" not in str(exc)


def test_out_of_range_counts_and_times_are_rejected(tmp_path):
    lines = [
        generation(id="ok"),
        generation(id="huge", usageDetails={"input": 2**62, "input_cached_tokens": 2**62}),
        generation(id="huge-out", usageDetails={"input": 1, "output": 2**62, "output_x": 2**62}),
        generation(id="digits", usageDetails={"input": "9" * 30}),
        generation(id="neg", usageDetails={"input": -3}),
        generation(id="far", startTime="2200-01-01T00:00:00Z"),
        generation(id="text", usageDetails={"input": "12a"}),
    ]
    con, report = ingest_one(tmp_path, write_jsonl(tmp_path / "bad.jsonl", lines))
    assert (report.requests, report.rejected) == (1, 6)
    assert_accounted(con)
    reasons = [r[0] for r in con.execute("SELECT reason FROM rejects ORDER BY line").fetchall()]
    assert "input" in reasons[0] and "output" in reasons[1]
    assert "usageDetails.input" in reasons[2] and "usageDetails.input" in reasons[3]
    assert "startTime" in reasons[4] and "usageDetails.input" in reasons[5]
