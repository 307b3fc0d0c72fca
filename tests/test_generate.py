"""The synthetic log generator: determinism, file format, and that the truth matches the file."""

from __future__ import annotations

import gzip
import json
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from kvtool.generate import KINDS, GenerationTruth, generate


def _records(path: Path) -> list[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        return [orjson.loads(line) for line in f]


def _by_session(records: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        out[r["session_id"]].append(r)
    return out


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[GenerationTruth, list[dict]]]:
    """One small file per kind, shared by the read-only tests."""
    root = tmp_path_factory.mktemp("gen")
    out = {}
    for kind in KINDS:
        path = root / f"{kind}.jsonl"
        truth = generate(kind, 12, 7, path)
        out[kind] = (truth, _records(path))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path, kind: str) -> None:
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    generate(kind, 6, 3, a)
    generate(kind, 6, 3, b)
    generate(kind, 6, 4, c)
    assert a.read_bytes() == b.read_bytes()
    assert Path(f"{a}.truth.json").read_bytes() == Path(f"{b}.truth.json").read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_gzip_output_is_deterministic_and_holds_the_plain_records(tmp_path: Path) -> None:
    plain, gz1, gz2 = tmp_path / "x.jsonl", tmp_path / "y.jsonl.gz", tmp_path / "z.jsonl.gz"
    for path in (plain, gz1, gz2):
        generate("agent", 4, 11, path, steps=(2, 5))
    assert gz1.read_bytes()[:2] == b"\x1f\x8b"
    assert gz1.read_bytes() == gz2.read_bytes()  # no mtime or file name in the header
    assert gzip.decompress(gz1.read_bytes()) == plain.read_bytes()
    assert Path(f"{gz1}.truth.json").exists()


@pytest.mark.parametrize("kind", KINDS)
def test_truth_matches_the_file(
    logs: dict[str, tuple[GenerationTruth, list[dict]]], kind: str
) -> None:
    truth, records = logs[kind]
    per_session = Counter(r["session_id"] for r in records)
    assert truth.kind == kind and truth.seed == 7
    assert truth.sessions == 12 == len(per_session) == len(truth.requests_per_session)
    assert truth.requests == len(records) == sum(truth.requests_per_session.values())
    assert dict(per_session) == truth.requests_per_session
    assert truth.output_tokens == sum(r["response"]["usage"]["completion_tokens"] for r in records)
    assert len({r["id"] for r in records}) == len(records)
    assert all(r["request"]["model"] == truth.model == r["response"]["model"] for r in records)
    system = {"role": "system", "content": truth.system_prompt}
    assert all(r["request"]["messages"][0] == system for r in records)
    assert truth.shared_prefix_messages == 1


@pytest.mark.parametrize("kind", KINDS)
def test_truth_json_file_round_trips(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "t.jsonl"
    truth = generate(kind, 3, 5, out)
    on_disk = json.loads(Path(f"{out}.truth.json").read_text(encoding="utf-8"))
    assert on_disk == truth.to_json()
    assert GenerationTruth(**on_disk) == truth


@pytest.mark.parametrize("kind", KINDS)
def test_timestamps_are_ordered_utc_millis(
    logs: dict[str, tuple[GenerationTruth, list[dict]]], kind: str
) -> None:
    _, records = logs[kind]
    stamps = [r["timestamp"] for r in records]
    for s in stamps:
        assert len(s) == 24 and s.endswith("Z") and s[19] == "."
    parsed = [datetime.fromisoformat(s) for s in stamps]
    assert parsed == sorted(parsed)
    assert datetime(2026, 11, 1, 9, tzinfo=UTC) <= parsed[0] < parsed[-1]
    for r, t in zip(records, parsed, strict=True):
        assert r["response"]["created"] == int(t.timestamp())
    assert len(set(stamps)) > len(stamps) // 2


def _interleaves(records: list[dict]) -> bool:
    """Whether some session has a request between two requests of another session."""
    order = [r["session_id"] for r in records]
    last = {s: i for i, s in enumerate(order)}
    first = {s: order.index(s) for s in last}
    return any(first[s] < first[t] < last[s] for s in last for t in last)


def test_sessions_interleave_and_arrive_over_about_an_hour(tmp_path: Path) -> None:
    out = tmp_path / "i.jsonl"
    generate("agent", 60, 1, out, steps=(10, 12))
    records = _records(out)
    assert _interleaves(records)
    starts = sorted(rs[0]["timestamp"] for rs in _by_session(records).values())
    first, last = (datetime.fromisoformat(s) for s in (starts[0], starts[-1]))
    assert 1800 < (last - first).total_seconds() < 7200


def test_start_moves_the_whole_log(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    generate("chat", 3, 1, a)
    generate("chat", 3, 1, b, start=datetime(2027, 1, 2, 3, 4, 5))
    ra, rb = _records(a), _records(b)
    assert [r["request"] for r in ra] == [r["request"] for r in rb]
    assert all(r["timestamp"].startswith("2027-01-02") for r in rb)
    delta = datetime(2027, 1, 2, 3, 4, 5, tzinfo=UTC) - datetime(2026, 11, 1, 9, tzinfo=UTC)
    for x, y in zip(ra, rb, strict=True):
        tx, ty = (datetime.fromisoformat(r["timestamp"]) for r in (x, y))
        assert ty - tx == delta


def test_agent_requests_extend_the_previous_by_one_call_and_one_observation(
    logs: dict[str, tuple[GenerationTruth, list[dict]]],
) -> None:
    truth, records = logs["agent"]
    assert truth.continuation is True
    for rs in _by_session(records).values():
        first = rs[0]["request"]["messages"]
        assert [m["role"] for m in first] == ["system", "user"]
        for prev, cur in zip(rs, rs[1:], strict=False):
            p, c = prev["request"]["messages"], cur["request"]["messages"]
            assert len(c) == len(p) + 2
            assert c[: len(p)] == p
            call, obs = c[-2], c[-1]
            assert call["role"] == "assistant" and list(call) == ["role", "content", "tool_calls"]
            (tc,) = call["tool_calls"]
            assert tc["type"] == "function"
            assert isinstance(json.loads(tc["function"]["arguments"]), dict)
            assert obs == {"role": "tool", "tool_call_id": tc["id"], "content": obs["content"]}
            assert list(obs) == ["role", "tool_call_id", "content"]


def test_agent_tool_catalog_is_shared_and_well_formed(
    logs: dict[str, tuple[GenerationTruth, list[dict]]],
) -> None:
    truth, records = logs["agent"]
    assert truth.tools is not None and 10 <= len(truth.tools) <= 14
    assert all(r["request"]["tools"] == truth.tools for r in records)
    names = {t["function"]["name"] for t in truth.tools}
    assert len(names) == len(truth.tools)
    for tool in truth.tools:
        params = tool["function"]["parameters"]
        assert tool["type"] == "function" and params["type"] == "object"
        assert set(params["required"]) <= set(params["properties"])
    called = {
        tc["function"]["name"]
        for r in records
        for m in r["request"]["messages"]
        for tc in m.get("tool_calls") or ()
    }
    assert called and called <= names


def test_agent_text_shape(logs: dict[str, tuple[GenerationTruth, list[dict]]]) -> None:
    truth, records = logs["agent"]
    assert 280 <= len(truth.system_prompt.split()) <= 520
    longest = max(records, key=lambda r: len(r["request"]["messages"]))["request"]["messages"]
    assert 40 <= len(longest[1]["content"].split()) <= 170  # the user task
    observations = [
        m["content"] for r in records for m in r["request"]["messages"] if m["role"] == "tool"
    ]
    assert any("\n" in o for o in observations)
    assert any(any(ord(ch) > 0x2E80 for ch in o) for o in observations)  # CJK or emoji


def test_agent_steps_range_is_respected(tmp_path: Path) -> None:
    truth = generate("agent", 8, 2, tmp_path / "s.jsonl", steps=(3, 5))
    assert all(3 <= n <= 5 for n in truth.requests_per_session.values())
    truth = generate("agent", 3, 2, tmp_path / "t.jsonl", steps=(6, 6))
    assert list(truth.requests_per_session.values()) == [6, 6, 6]


def test_chat_turns_resend_the_conversation(
    logs: dict[str, tuple[GenerationTruth, list[dict]]],
) -> None:
    truth, records = logs["chat"]
    assert truth.continuation is True and truth.tools is None
    assert all("tools" not in r["request"] for r in records)
    for rs in _by_session(records).values():
        assert 1 <= len(rs) <= 8
        for k, r in enumerate(rs):
            msgs = r["request"]["messages"]
            assert len(msgs) == 2 + 2 * k
            assert [m["role"] for m in msgs[1:]] == ["user", "assistant"] * k + ["user"]
            if k:
                prev = rs[k - 1]["request"]["messages"]
                assert msgs[: len(prev)] == prev


def test_rag_requests_are_system_plus_context_and_do_not_extend(
    logs: dict[str, tuple[GenerationTruth, list[dict]]],
) -> None:
    truth, records = logs["rag"]
    assert truth.continuation is False
    lead_docs = Counter()
    for r in records:
        msgs = r["request"]["messages"]
        assert len(msgs) == 2 and msgs[1]["role"] == "user"
        text = msgs[1]["content"]
        assert text.startswith("Context:\n[doc-") and "\n\nQuestion: " in text
        heads = [line for line in text.split("\n") if line.startswith("[doc-")]
        doc_ids = [int(line[5 : line.index("]")]) for line in heads]
        assert 1 <= len(doc_ids) <= 3 and doc_ids == sorted(doc_ids)  # most popular first
        lead_docs[doc_ids[0]] += 1
    assert lead_docs.most_common(1)[0][1] >= 3  # a popular document leads many prompts
    for rs in _by_session(records).values():
        assert 1 <= len(rs) <= 4
        assert len({r["user"] for r in rs}) == 1


def test_session_ids_false_omits_only_the_key(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    ta = generate("agent", 5, 9, a, steps=(2, 4))
    tb = generate("agent", 5, 9, b, steps=(2, 4), session_ids=False)
    ra, rb = _records(a), _records(b)
    assert all("session_id" not in r for r in rb)
    for x, y in zip(ra, rb, strict=True):
        del x["session_id"]
        assert x == y
    assert ta == tb


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sessions", [1, 30])
def test_writes_exactly_the_requested_sessions(tmp_path: Path, kind: str, sessions: int) -> None:
    out = tmp_path / "n.jsonl"
    truth = generate(kind, sessions, 0, out, steps=(2, 3))
    records = _records(out)
    assert truth.sessions == sessions == len({r["session_id"] for r in records})
    # one agent or chat session: its first user message also leads every request
    expected = 2 if sessions == 1 and kind != "rag" else 1
    assert truth.shared_prefix_messages == expected


def test_record_layout(logs: dict[str, tuple[GenerationTruth, list[dict]]]) -> None:
    for kind in KINDS:
        _, records = logs[kind]
        r = records[0]
        assert list(r) == ["id", "timestamp", "session_id", "user", "request", "response"]
        assert r["id"].startswith(f"req-{kind}-") and r["session_id"].startswith(f"{kind}-s")
        assert r["user"].startswith("user-")
        want = ["model", "messages", "tools", "temperature"]
        assert list(r["request"]) == (
            want if kind == "agent" else [k for k in want if k != "tools"]
        )
        assert list(r["response"]) == ["id", "created", "model", "usage"]
        assert all(20 <= x["response"]["usage"]["completion_tokens"] <= 400 for x in records), kind


def test_bad_arguments_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kind"):
        generate("batch", 1, 0, tmp_path / "x.jsonl")
    with pytest.raises(ValueError, match="sessions"):
        generate("chat", 0, 0, tmp_path / "x.jsonl")
    with pytest.raises(ValueError, match="steps"):
        generate("agent", 1, 0, tmp_path / "x.jsonl", steps=(5, 2))
