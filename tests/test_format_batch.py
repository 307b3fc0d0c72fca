"""OpenAI Batch API input lines (format ``openai-batch``, ``kvtool/ingest/formats/batch.py``): the
conversation set as chat completions, completions and Responses batch lines ingests field by
field, routed by ``url``; a line for another endpoint is one clear reject.

Schema: the Batch API reference ("The request input object": ``custom_id``, ``method``,
``url`` -- one of ``/v1/responses``, ``/v1/chat/completions``, ``/v1/embeddings``,
``/v1/completions``, ``/v1/moderations`` -- and ``body``, the endpoint's request body). The
bodies are the conversation set's: chat bodies from ``conversations.openai_chat_record``,
Responses bodies as the ``openai`` SDK sent them (``tests/fixtures/openai/responses.jsonl``,
made from ``calls()`` by the script next to it), completions bodies with the calls' transcript
as the prompt. A batch line has no time, session or usage of its own (the results file has
the usage), so only what the bodies carry is asserted.
"""

from __future__ import annotations

import contextlib
import copy
import math
from pathlib import Path

import orjson
import pytest
from conversations import Call, calls, openai_chat_record
from formats_check import (
    assert_accounted,
    hit_rates,
    ingest_one,
    reference_file,
    stored_requests,
    write_jsonl,
)

from kvtool.errors import InputError
from kvtool.ingest.formats import Normalized, Skip, openai
from kvtool.ingest.formats.batch import normalize_batch
from kvtool.ingest.formats.registry import REGISTRY, detect_format, detect_record

RESPONSES_FIXTURE = Path(__file__).parent / "fixtures" / "openai" / "responses.jsonl"
URLS = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "responses": "/v1/responses",
}


def transcript(call: Call) -> str:
    """The call's prompt as one completions prompt string."""
    lines = [f"system: {call.system}"]
    for m in call.openai_messages()[1:]:
        text = m["content"] if m["content"] is not None else orjson.dumps(m["tool_calls"]).decode()
        lines.append(f"{m['role']}: {text}")
    return "\n".join(lines) + "\nassistant:"


def bodies(kind: str) -> list[dict]:
    """The calls' request bodies for one endpoint."""
    cs = calls()
    if kind == "chat":
        return [openai_chat_record(c)["request"] for c in cs]
    if kind == "completions":
        return [{"model": c.model, "prompt": transcript(c), "max_tokens": 64} for c in cs]
    recs = [orjson.loads(line) for line in RESPONSES_FIXTURE.read_bytes().splitlines()]
    assert [r["request_id"] for r in recs] == [c.request_id for c in cs]
    return [r["request"] for r in recs]


def batch_lines(kind: str) -> list[dict]:
    return [
        {"custom_id": f"{kind}-{c.request_id}", "method": "POST", "url": URLS[kind], "body": b}
        for c, b in zip(calls(), bodies(kind), strict=True)
    ]


def prompts(con) -> list[tuple[str, str, str, str]]:
    """(request id, kind, model, prompt text) of the stored completion requests, in line order."""
    rows = con.execute(
        "SELECT r.request_id, r.kind, r.model, c.body FROM requests r "
        "JOIN (SELECT key, any_value(body) AS body FROM contents GROUP BY key) c "
        "ON c.key = r.prompt_key ORDER BY r.line"
    ).fetchall()
    return [(*row[:3], orjson.loads(row[3])) for row in rows]


# ---------------------------------------------------------------------------------------------
# each endpoint, field by field


@pytest.mark.parametrize("kind", ["chat", "responses"])
@pytest.mark.parametrize("explicit", [False, True])
def test_chat_and_responses_lines_ingest_field_by_field(tmp_path, kind, explicit):
    cs = calls()
    path = write_jsonl(tmp_path / f"batch-{kind}.jsonl", batch_lines(kind))
    con, report = ingest_one(tmp_path, path, "openai-batch" if explicit else None)
    assert (report.format, report.requests, report.rejected, report.out_of_scope) == (
        "openai-batch",
        len(cs),
        0,
        0,
    )
    assert_accounted(con)
    got = stored_requests(con)  # no times: stored in line order
    for s, c in zip(got, cs, strict=True):
        assert s.request_id == f"{kind}-{c.request_id}"  # custom_id
        assert s.messages == c.openai_messages(), c.request_id
        assert s.tools == c.openai_tools(), c.request_id
        assert s.model == c.model and s.ts is None
        assert s.observed_prompt_tokens is None and s.observed_cached_tokens is None
        assert s.incomplete is None and not s.truncated
        # the Responses body's safety_identifier is its end user, never its tenant (none is
        # logged: one domain); its prompt_cache_key, shared by every session, is never a session
        assert (s.tenant, s.session_id) == (None, None)
        assert s.end_user == (c.user if kind == "responses" else None)  # chat bodies: no `user`


def test_completions_lines_ingest_their_prompts(tmp_path):
    cs = calls()
    path = write_jsonl(tmp_path / "batch-completions.jsonl", batch_lines("completions"))
    con, report = ingest_one(tmp_path, path)
    assert (report.format, report.requests, report.rejected) == ("openai-batch", len(cs), 0)
    assert prompts(con) == [
        (f"completions-{c.request_id}", "completion", c.model, transcript(c)) for c in cs
    ]


@pytest.mark.parametrize("kind", ["chat", "responses"])
def test_batch_analyzes_like_the_reference(tmp_path, kind):
    """Chat and Responses batch lines carry the reference's prompts: the same ideal hit rate (no
    usage, so no observed rate). Responses lines name their end user (``safety_identifier``),
    which is not a cache-isolation domain, so their requests share one domain as the
    reference's (one tenant) do."""
    cs = calls()
    path = write_jsonl(tmp_path / f"b-{kind}.jsonl", batch_lines(kind))
    ideal, observed = hit_rates(path, tmp_path)
    assert (ideal, observed) == (hit_rates(reference_file(tmp_path, cs), tmp_path)[0], None)
    assert 0 < ideal < 1


# ---------------------------------------------------------------------------------------------
# routing


def test_one_file_of_every_endpoint_and_a_clear_reject_for_others(tmp_path):
    """A batch file mixing the three endpoints ingests all of them; an embeddings line, a line
    without a url and one for a moderation are each one reject naming what is wrong."""
    lines = batch_lines("chat") + batch_lines("completions") + batch_lines("responses")
    others = [
        {"custom_id": "e-1", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}},
        {"custom_id": "n-1", "method": "POST", "body": {"model": "m", "messages": []}},
        {"custom_id": "m-1", "method": "POST", "url": "/v1/moderations", "body": {"input": "y"}},
    ]
    path = write_jsonl(tmp_path / "mixed.jsonl", lines + others)
    assert detect_format([orjson.loads(x) for x in path.read_bytes().splitlines()]) == (
        "openai-batch"
    )
    con, report = ingest_one(tmp_path, path)
    assert (report.format, report.requests, report.rejected) == ("openai-batch", 36, 3)
    assert_accounted(con)
    kinds = con.execute("SELECT kind, count(*) FROM requests GROUP BY 1 ORDER BY 1").fetchall()
    assert kinds == [("chat", 24), ("completion", 12)]
    reasons = [
        r for _, r in con.execute("SELECT line, reason FROM rejects ORDER BY line").fetchall()
    ]
    assert reasons == [
        "batch line for '/v1/embeddings' is not a chat or completion or Responses request "
        "(/v1/chat/completions, /v1/completions, /v1/responses)",
        "batch line has no 'url' (one of /v1/chat/completions, /v1/completions, /v1/responses)",
        "batch line for '/v1/moderations' is not a chat or completion or Responses request "
        "(/v1/chat/completions, /v1/completions, /v1/responses)",
    ]


def test_the_url_decides_the_body_format():
    """The url, not the body's keys, picks the normalizer: a chat body sent to /v1/responses is
    rejected by the Responses reader, with its reason."""
    chat_body = bodies("chat")[0]
    line = {"custom_id": "x", "url": "/v1/responses", "body": chat_body}
    with pytest.raises(InputError, match="no 'input' in the request body"):
        normalize_batch(line)
    line = {"custom_id": "x", "url": "/v1/completions", "body": chat_body}
    with pytest.raises(InputError, match="prompt must be a string"):
        normalize_batch(line)
    full = {
        "custom_id": "x",
        "url": "https://api.openai.com/v1/responses?x=1",
        "body": bodies("responses")[0],
    }
    assert normalize_batch(full).messages == calls()[0].openai_messages()


def test_batch_lines_are_not_read_as_their_bodies_format():
    """The batch format lives in its own module (it imports the openai and responses readers);
    a Responses batch line is a batch line, not a Responses record."""
    assert "openai-batch" not in {f.name for f in openai.FORMATS}
    assert REGISTRY["openai-batch"].make(None) is normalize_batch
    for kind in URLS:
        assert {detect_record(line) for line in batch_lines(kind)} == {"openai-batch"}


# ---------------------------------------------------------------------------------------------
# hostile values


WRONG = (1, -1, 2.5, math.nan, True, "x", "", [], {}, [1], {"a": 1}, None)


def test_fuzz_wrong_types_never_crash():
    for kind in URLS:
        base = batch_lines(kind)[1]
        for field in ("custom_id", "url", "body", "method"):
            for value in WRONG:
                rec = {**copy.deepcopy(base), field: value}
                try:
                    out = normalize_batch(rec)
                except (InputError, Skip):
                    continue
                assert isinstance(out, Normalized)
        for key in list(base["body"]):
            for value in WRONG:
                rec = copy.deepcopy(base)
                rec["body"][key] = value
                with contextlib.suppress(InputError, Skip):
                    normalize_batch(rec)
