"""``cache_control`` in OpenAI-shaped requests (LiteLLM's convention for Anthropic, Gemini and
Bedrock models: on a content part, on a message, on a tool): taken out of the stored content
into ``requests.cache_control`` markers, as the Anthropic format does
(kvtool/ingest/formats/chat.py ``take_chat_markers``)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from formats_check import ingest_one, stored_requests
from typer.testing import CliRunner

from kvtool.cli import app
from kvtool.errors import InputError
from kvtool.ingest.formats.chat import take_chat_markers

ANTHROPIC_FIXTURE = Path(__file__).parent / "fixtures" / "anthropic_cache" / "conversation.jsonl.gz"
MARK = {"type": "ephemeral"}
TOOL = {"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}


def test_markers_leave_parts_messages_and_tools():
    plain = {"role": "user", "content": "hi"}
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "S", "cache_control": MARK}]},
        plain,
        {"role": "user", "content": "q", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
    ]
    found = take_chat_markers(messages, [{**TOOL, "cache_control": MARK}])
    assert found.markers == [
        {"message": 0, "part": 0, "type": "ephemeral", "ttl": None},
        {"message": 2, "part": None, "type": "ephemeral", "ttl": "1h"},
        {"tool": 0, "type": "ephemeral", "ttl": None},
    ]
    assert found.messages[0] == {"role": "system", "content": [{"type": "text", "text": "S"}]}
    assert found.messages[2] == {"role": "user", "content": "q"}
    assert found.messages[1] is plain and found.tools == [TOOL]
    assert "cache_control" in messages[0]["content"][0]  # the logged record is not changed
    unmarked = [plain]
    assert take_chat_markers(unmarked, None).messages is unmarked


@pytest.mark.parametrize(
    ("value", "field"),
    [("yes", "messages[0].content[0].cache_control"), ({"type": 5}, "messages[0].content[0]"),
     ({"type": "ephemeral", "ttl": 300}, "messages[0].content[0].cache_control.ttl")],
)  # fmt: skip
def test_a_bad_marker_names_its_field(value, field):
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "x", "cache_control": value}]}
    ]
    with pytest.raises(InputError, match=field.replace("[", r"\[").replace("]", r"\]")):
        take_chat_markers(messages, None)


def _openai_records(anthropic_fixture: Path, tmp: Path) -> list[dict]:
    """The Anthropic fixture's requests as OpenAI chat gateway records, their markers put back
    on the parts, messages and tools they name (what a LiteLLM client sends); Anthropic's
    request-level automatic marker, which caches up to the last message, on the last message."""
    con, _ = ingest_one(tmp, anthropic_fixture)
    out = []
    for s in stored_requests(con):
        messages = [dict(m) for m in s.messages]
        tools = [dict(t) for t in s.tools] if s.tools else None
        for m in s.cache_control or []:
            mark = {k: v for k, v in m.items() if k in ("type", "ttl") and v is not None}
            if "tool" in m:
                tools[m["tool"]]["cache_control"] = mark
            elif m.get("auto"):
                messages[-1]["cache_control"] = mark
            elif m.get("part") is None:
                messages[m["message"]]["cache_control"] = mark
            else:
                parts = [dict(p) for p in messages[m["message"]]["content"]]
                parts[m["part"]]["cache_control"] = mark
                messages[m["message"]]["content"] = parts
        body = {"model": s.model, "messages": messages, **({"tools": tools} if tools else {})}
        usage = {"prompt_tokens": s.observed_prompt_tokens, "completion_tokens": s.output_tokens}
        out.append({"request_id": s.request_id, "created": s.ts,
                    "metadata": {"tenant": s.tenant}, "request": body,
                    "response": {"usage": usage}})  # fmt: skip
    con.close()
    return out


def _provider(log: Path, db: Path) -> dict:
    r = CliRunner().invoke(
        app, ["simulate", "--blocks", "300", str(log), "--db", str(db), "--provider", "anthropic",
              "--json"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return orjson.loads(r.stdout)["provider"]


def test_openai_shaped_markers_predict_what_anthropic_shaped_ones_do(tmp_path):
    """The same six requests, logged in Anthropic's format and as OpenAI-shaped records with
    ``cache_control`` on parts and messages: the same markers, the same stored prompts, the
    same predicted reads, writes and bill."""
    records = _openai_records(ANTHROPIC_FIXTURE, tmp_path)
    assert sum("cache_control" in orjson.dumps(r).decode() for r in records) >= 4
    log = tmp_path / "openai-shaped.jsonl"
    log.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    con, report = ingest_one(tmp_path, log)
    assert report.rejected == 0
    via_openai = stored_requests(con)
    con.close()
    con, _ = ingest_one(tmp_path, ANTHROPIC_FIXTURE)
    via_anthropic = stored_requests(con)
    con.close()
    for a, b in zip(via_openai, via_anthropic, strict=True):
        assert (a.messages, a.tools) == (b.messages, b.tools)  # no cache_control left inside
        last = {"message": len(b.messages) - 1, "part": None}
        want = [{**last, **m} if m.pop("auto", False) else m for m in b.cache_control or []]
        assert a.cache_control == (want or None)

    got = _provider(log, tmp_path / "openai.duckdb")
    want = _provider(ANTHROPIC_FIXTURE, tmp_path / "anthropic.duckdb")
    assert got["predicted_cached_tokens"] == want["predicted_cached_tokens"] > 0
    assert got["bill"]["predicted"] == pytest.approx(want["bill"]["predicted"], rel=1e-12)
