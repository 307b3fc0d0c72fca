"""The synthetic log generator: determinism, file format, and that the truth matches the file."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from kvtool.errors import OptionError
from kvtool.generate import BREAK_CAUSES, BREAKER_MODES, KINDS, GenerationTruth, generate


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


def test_agent_prompt_states_the_start_date_and_a_stable_workspace(tmp_path: Path) -> None:
    default = generate("agent", 2, 1, tmp_path / "a.jsonl", steps=(1, 2))
    moved = generate("agent", 2, 1, tmp_path / "b.jsonl", steps=(1, 2), start=datetime(2027, 1, 2))
    for truth, day in ((default, "2026-11-01"), (moved, "2027-01-02")):
        lines = truth.system_prompt.split("\n")
        assert f"- Current date: {day}" in lines
        (ws,) = [line for line in lines if line.startswith("- Workspace: ")]
        assert re.fullmatch(r"- Workspace: ws-[0-9a-f]{8}", ws)
        assert "Today is" not in truth.system_prompt


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
    with pytest.raises(OptionError, match="kind"):
        generate("batch", 1, 0, tmp_path / "x.jsonl")
    with pytest.raises(OptionError, match="sessions"):
        generate("chat", 0, 0, tmp_path / "x.jsonl")
    with pytest.raises(OptionError, match="steps"):
        generate("agent", 1, 0, tmp_path / "x.jsonl", steps=(5, 2))


# ------------------------------------------------------------------------------------ breakers

_MISSING = object()
_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def _resolve(request: dict, path: str) -> Any:
    """The value at ``path`` (``model``, ``tools[3].function.description``, ``messages[5]``...)."""
    node: Any = request
    for index, key in _PART.findall(path):
        if index:
            if not isinstance(node, list) or int(index) >= len(node):
                return _MISSING
            node = node[int(index)]
        else:
            if not isinstance(node, dict) or key not in node:
                return _MISSING
            node = node[key]
    return node


def _dump(value: Any) -> bytes:
    """Order-sensitive identity of a JSON value (dict key order counts)."""
    return b"<missing>" if value is _MISSING else orjson.dumps(value)


def _first_difference(p: dict, r: dict) -> str | None:
    """Where r first differs from p, in the order model, messages[0], tools[..], messages[1..];
    None when r extends p (same model and tools, p's messages a prefix of r's)."""
    if p["model"] != r["model"]:
        return "model"
    pm, rm = p["messages"], r["messages"]
    if _dump(pm[0]) != _dump(rm[0]):
        return "messages[0]"
    pt, rt = p.get("tools") or [], r.get("tools") or []
    for j in range(max(len(pt), len(rt))):
        if _dump(_resolve(p, f"tools[{j}]")) != _dump(_resolve(r, f"tools[{j}]")):
            return f"tools[{j}]"
    for i in range(1, len(pm)):
        if _dump(pm[i]) != _dump(_resolve(r, f"messages[{i}]")):
            return f"messages[{i}]"
    return None


def _step(request_id: str) -> int:
    return int(request_id.rsplit("-", 1)[1])


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> tuple[GenerationTruth, list[dict], Path]:
    """breakers=5 (every variant of every cause) in 60 sessions, and the clean file beside it."""
    root = tmp_path_factory.mktemp("breakers")
    generate("agent", 60, 3, root / "clean.jsonl", steps=(4, 9))
    truth = generate("agent", 60, 3, root / "broken.jsonl", steps=(4, 9), breakers=5)
    return truth, _records(root / "broken.jsonl"), root


def test_breakers_truth_is_exactly_the_requests_that_do_not_extend(
    broken: tuple[GenerationTruth, list[dict], Path],
) -> None:
    _check_truth_rows(*broken[:2])


def _check_truth_rows(truth: GenerationTruth, records: list[dict]) -> None:
    """The truth lists exactly the requests that do not extend the previous one of their
    session, each with the path of its first difference (and nothing else differs there)."""
    rows = {b["request_id"]: b for b in truth.breaks}
    assert len(rows) == len(truth.breaks)
    by_id = {r["id"]: r for r in records}
    order = {r["id"]: n for n, r in enumerate(records)}
    assert [order[b["request_id"]] for b in truth.breaks] == sorted(
        order[b["request_id"]] for b in truth.breaks
    )  # file order
    seen = set()
    for sid, rs in _by_session(records).items():
        assert [_step(r["id"]) for r in rs] == list(range(len(rs)))
        for p, r in zip(rs, rs[1:], strict=False):
            where = _first_difference(p["request"], r["request"])
            if where is None:
                assert r["id"] not in rows
                continue
            row = rows[r["id"]]
            seen.add(r["id"])
            assert row["predecessor_id"] == p["id"] and row["session_id"] == sid
            path = row["path"]
            assert path == where or path.startswith(where + "."), (row, where)
            old, new = _resolve(p["request"], path), _resolve(r["request"], path)
            assert _dump(old) != _dump(new)
            if path != where:  # nothing else differs inside the element
                element = orjson.loads(orjson.dumps(_resolve(r["request"], where)))
                *parents, last = _PART.findall(path[len(where) + 1 :])
                node = element
                for index, key in parents:
                    node = node[int(index)] if index else node[key]
                node[last[1]] = old
                assert _dump(element) == _dump(_resolve(p["request"], where))
    assert seen == set(rows) and all(rid in by_id for rid in rows)


_EARLIER_MESSAGE = {
    "tool_call_arguments", "tool_result", "truncated", "compacted", "reasoning_stripped"
}  # fmt: skip


def test_breakers_cover_every_cause_and_variant_in_their_own_sessions(
    broken: tuple[GenerationTruth, list[dict], Path],
) -> None:
    truth, records, _ = broken
    assert truth.continuation is False
    sessions: dict[str, list[dict]] = defaultdict(list)
    for b in truth.breaks:
        sessions[b["session_id"]].append(b)
    assert "agent-s00000" not in sessions
    assert len(sessions) == 11 * 5
    per_cause: dict[str, list[str]] = defaultdict(list)
    for sid, bs in sessions.items():
        assert len({(b["cause"], b["variant"], b["path"]) for b in bs}) == 1  # one breaker
        cause, variant = bs[0]["cause"], bs[0]["variant"]
        per_cause[cause].append(variant)
        steps = [_step(b["request_id"]) for b in bs]
        k, n = steps[0], truth.requests_per_session[sid]
        assert k >= (3 if variant in _EARLIER_MESSAGE else 1)  # clean steps before the break
        if cause.startswith("volatile_"):  # every request from k on
            assert steps == list(range(k, n))
        else:
            assert len(steps) == 1 and k + 1 < n  # clean steps after the break
    expected = {
        "model_changed": ["other_model"],
        "tool_added": ["middle", "end"],
        "tool_removed": ["middle", "last"],
        "tools_reordered": ["adjacent", "distant"],
        "tool_schema_edited": ["description", "param_description"],
        "json_key_order": ["tool_properties", "tool_call_arguments", "tool_result"],
        "volatile_timestamp": ["iso_z", "epoch", "rfc2822", "iso_ms_offset", "space"],
        "volatile_id": ["uuid4", "counter", "base62", "hex32", "hex8"],
        "system_edited": ["word"],
        "history_edited": ["truncated", "compacted", "reasoning_stripped"],
        "template_changed": ["single_newline", "trailing_spaces"],
    }
    assert list(expected) == list(BREAK_CAUSES)
    for cause, variants in expected.items():
        assert Counter(per_cause[cause]) == Counter(variants[v % len(variants)] for v in range(5))


def test_breakers_leave_the_other_sessions_untouched(
    broken: tuple[GenerationTruth, list[dict], Path],
) -> None:
    truth, records, root = broken
    clean = _by_session(_records(root / "clean.jsonl"))
    injected = {b["session_id"] for b in truth.breaks}
    by_session = _by_session(records)
    assert len(by_session) == truth.sessions
    for sid, rs in by_session.items():
        if sid not in injected:
            assert rs == clean[sid]
        else:  # the same task, the clean prompt before the break
            assert rs[0]["request"]["messages"][:2] == clean[sid][0]["request"]["messages"][:2]


_DATE = re.compile(r"^- Current date: (.*)$", re.M)
_WORKSPACE = re.compile(r"^- Workspace: (.*)$", re.M)
_STAMPS = {
    "iso_z": "%Y-%m-%dT%H:%M:%SZ",
    "space": "%Y-%m-%d %H:%M:%S",
    "rfc2822": "%a, %d %b %Y %H:%M:%S +0000",
}
_IDS = {
    "uuid4": r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
    "base62": r"req_(?=[A-Za-z0-9]*[0-9])[A-Za-z0-9]{20}",
    "hex32": r"[0-9a-f]{32}",
    "hex8": r"ws-[0-9a-f]{8}",
}


def test_breakers_look_like_their_cause(
    broken: tuple[GenerationTruth, list[dict], Path],
) -> None:
    truth, records, _ = broken
    by_id = {r["id"]: r for r in records}
    stable_date = _DATE.search(truth.system_prompt).group(1)
    stable_ws = _WORKSPACE.search(truth.system_prompt).group(1)
    assert stable_date == "2026-11-01" and re.fullmatch(_IDS["hex8"], stable_ws)
    for b in truth.breaks:
        r, p = by_id[b["request_id"]], by_id[b["predecessor_id"]]
        rq, pq = r["request"], p["request"]
        old, new = _resolve(pq, b["path"]), _resolve(rq, b["path"])
        cause, variant = b["cause"], b["variant"]
        if cause == "model_changed":
            assert new != truth.model and r["response"]["model"] == new
        elif cause == "tool_added":
            assert new["function"]["name"] not in {t["function"]["name"] for t in pq["tools"]}
            assert len(rq["tools"]) == len(pq["tools"]) + 1
        elif cause == "tool_removed":
            gone = old["function"]["name"]
            assert gone not in {t["function"]["name"] for t in rq["tools"]}
            calls = {
                tc["function"]["name"]
                for x in records
                if x["session_id"] == b["session_id"]
                for m in x["request"]["messages"]
                for tc in m.get("tool_calls") or ()
            }
            assert gone not in calls
        elif cause == "tools_reordered":
            assert sorted(map(orjson.dumps, rq["tools"])) == sorted(map(orjson.dumps, pq["tools"]))
        elif cause == "tool_schema_edited":
            assert isinstance(new, str) and new != old and new.split() != old.split()
        elif cause == "json_key_order":
            a, c = (json.loads(x) if isinstance(x, str) else x for x in (old, new))
            assert a == c and list(c) == list(reversed(list(a))) and len(a) >= 2
            if variant == "tool_result":  # re-serialized in the same (indented) style
                assert new == orjson.dumps(c, option=orjson.OPT_INDENT_2).decode()
        elif cause == "volatile_timestamp":
            (value,) = _DATE.findall(new)
            when = datetime.fromisoformat(r["timestamp"])
            assert _DATE.sub("", new) == _DATE.sub("", old)
            if variant == "epoch":
                assert value == str(int(when.timestamp()))
            elif variant == "iso_ms_offset":
                assert value == when.isoformat(timespec="milliseconds")
            else:
                assert value == when.strftime(_STAMPS[variant])
        elif cause == "volatile_id":
            (value,) = _WORKSPACE.findall(new)
            assert _WORKSPACE.sub("", new) == _WORKSPACE.sub("", old)
            if variant == "counter":
                assert value == f"{stable_ws}-{_step(r['id'])}"
            else:
                assert re.fullmatch(_IDS[variant], value) and value != stable_ws
        elif cause == "system_edited":
            ow, nw = old.split(), new.split()
            (diff,) = [(x, y) for x, y in zip(ow, nw, strict=True) if x != y]  # one word
            assert all(w.rstrip(".,?").isalpha() for w in diff)
            at = next(n for n, (x, y) in enumerate(zip(old, new, strict=False)) if x != y)
            assert old.index("## Operating principles") < at < old.index("## Style")
        elif cause == "template_changed":
            assert new != old and new.split() == old.split()
        elif variant == "truncated":
            assert new == old[: len(old) // 2] + "\n[... truncated]"
        elif variant == "compacted":
            assert old["role"] == "assistant" and new["role"] == "user"
            assert new["content"].startswith("Summary of earlier steps: ")
            roles = [m["role"] for m in rq["messages"]]
            assert roles == ["system", "user", "user", "assistant", "tool"]  # the last pair kept
            assert len(pq["messages"]) >= 6  # at least two pairs compacted
        else:  # reasoning_stripped
            assert old.startswith("<think>") and "</think>" in old
            rest = old[old.index("</think>") + len("</think>") :]
            assert new == (rest[1:] if rest else None)


def test_breakers_are_deterministic_and_round_trip(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    ta = generate("agent", 12, 5, a, steps=(3, 5), breakers=1)
    generate("agent", 12, 5, b, steps=(3, 5), breakers=1)
    assert a.read_bytes() == b.read_bytes()
    assert Path(f"{a}.truth.json").read_bytes() == Path(f"{b}.truth.json").read_bytes()
    on_disk = json.loads(Path(f"{a}.truth.json").read_text(encoding="utf-8"))
    assert on_disk["breaks"] and GenerationTruth(**on_disk) == ta
    assert list(on_disk["breaks"][0]) == [
        "request_id", "predecessor_id", "session_id", "cause", "path", "variant"
    ]  # fmt: skip
    assert {x["cause"] for x in ta.breaks} == set(BREAK_CAUSES)
    assert generate("agent", 3, 5, tmp_path / "c.jsonl").breaks == []


def test_breakers_without_session_ids(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    ta = generate("agent", 12, 8, a, steps=(2, 4), breakers=1)
    tb = generate("agent", 12, 8, b, steps=(2, 4), breakers=1, session_ids=False)
    assert ta == tb
    for x, y in zip(_records(a), _records(b), strict=True):
        assert x.pop("session_id") == f"agent-s{x['id'].split('-')[2]}"
        assert x == y


def test_breakers_bad_arguments_raise(tmp_path: Path) -> None:
    for kind in ("chat", "rag"):
        with pytest.raises(OptionError, match="agent"):
            generate(kind, 50, 0, tmp_path / "x.jsonl", breakers=1)
    with pytest.raises(OptionError, match="sessions must be >= 12"):
        generate("agent", 11, 0, tmp_path / "x.jsonl", breakers=1)
    with pytest.raises(OptionError, match="breakers"):
        generate("agent", 50, 0, tmp_path / "x.jsonl", breakers=-1)
    truth = generate("agent", 12, 0, tmp_path / "x.jsonl", breakers=1, steps=(1, 1))
    assert len({b["session_id"] for b in truth.breaks}) == 11  # sessions lengthened as needed


def test_cli_generate_breakers(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kvtool.cli import app

    out = tmp_path / "g.jsonl"
    args = ["generate", "-o", str(out), "--sessions", "12", "--breakers", "1", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    truth = json.loads(Path(f"{out}.truth.json").read_text(encoding="utf-8"))
    assert json.loads(result.stdout) == truth
    assert {b["cause"] for b in truth["breaks"]} == set(BREAK_CAUSES)
    for bad in (["--kind", "chat"], ["--sessions", "5"]):
        result = CliRunner().invoke(app, [*args, *bad])
        assert result.exit_code == 2 and "breakers" in result.output


# ------------------------------------------------------------------------- recurring and stable


@pytest.fixture(scope="module")
def modes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[GenerationTruth, list]]:
    """breakers=3 in 34 sessions, in each breaker mode."""
    root = tmp_path_factory.mktemp("modes")
    out = {}
    for mode in BREAKER_MODES:
        path = root / f"{mode}.jsonl"
        truth = generate("agent", 34, 9, path, steps=(3, 6), breakers=3, breaker_mode=mode)
        out[mode] = (truth, _records(path))
    return out


def test_recurring_breakers_break_every_call_from_their_step(
    modes: dict[str, tuple[GenerationTruth, list]],
) -> None:
    truth, records = modes["recurring"]
    _check_truth_rows(truth, records)  # every truth row is a real first difference
    once: dict[str, dict] = {}  # the first break of each session
    for b in modes["once"][0].breaks:
        once.setdefault(b["session_id"], b)
    by_session: dict[str, list[dict]] = defaultdict(list)
    for b in truth.breaks:
        by_session[b["session_id"]].append(b)
    assert set(by_session) == set(once) and len(by_session) == 11 * 3
    by_id = {r["id"]: r for r in records}
    inverse = {"tool_added": "tool_removed", "tool_removed": "tool_added"}
    for sid, bs in by_session.items():
        first = once[sid]
        k, n = _step(first["request_id"]), truth.requests_per_session[sid]
        assert [_step(b["request_id"]) for b in bs] == list(range(k, n))  # every call from k
        for b in bs:
            flipped = (_step(b["request_id"]) - k) % 2 == 1
            cause = inverse.get(first["cause"], first["cause"]) if flipped else first["cause"]
            assert (b["cause"], b["variant"], b["path"]) == (cause, first["variant"], first["path"])
        # two values, A and B: request k+2 shows the changed field exactly as request k did
        if k + 2 < n:
            at_k, again = (by_id[f"req-agent-{sid[-5:]}-{s:03d}"]["request"] for s in (k, k + 2))
            path = first["path"]
            assert _dump(_resolve(at_k, path)) == _dump(_resolve(again, path))
            back = by_id[f"req-agent-{sid[-5:]}-{k + 1:03d}"]["request"]
            assert _dump(_resolve(back, path)) != _dump(_resolve(at_k, path))


def test_stable_mode_plans_the_same_sessions_and_never_breaks(
    modes: dict[str, tuple[GenerationTruth, list]],
) -> None:
    stable, records = modes["stable"]
    assert stable.breaks == [] and stable.continuation is True
    once_truth, once_records = modes["once"]
    recurring = modes["recurring"][1]
    assert stable.requests_per_session == once_truth.requests_per_session  # lengthened alike
    first: dict[str, int] = {}
    for b in once_truth.breaks:
        first.setdefault(b["session_id"], _step(b["request_id"]))
    for sid, rs in _by_session(records).items():
        k = first.get(sid, len(rs))
        for other in (once_records, recurring):  # the same requests before the break
            assert _by_session(other)[sid][:k] == rs[:k]
        if sid in first:  # recurring: the clean form A is the stable request
            assert _by_session(recurring)[sid][k + 1 :: 2] == rs[k + 1 :: 2]


def test_breaker_mode_is_checked_and_on_the_cli(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="^breaker_mode 'sometimes' is not one of once, "):
        generate("agent", 12, 0, tmp_path / "x.jsonl", breakers=1, breaker_mode="sometimes")
    from typer.testing import CliRunner

    from kvtool.cli import app

    out = tmp_path / "r.jsonl"
    args = ["generate", "-o", str(out), "--sessions", "12", "--breakers", "1", "--json"]
    result = CliRunner().invoke(app, [*args, "--breaker-mode", "recurring"])
    assert result.exit_code == 0, result.output
    truth = json.loads(result.stdout)
    assert truth == generate("agent", 12, 0, tmp_path / "p.jsonl", breakers=1,
                             breaker_mode="recurring").to_json()  # fmt: skip
    assert len(truth["breaks"]) > 11  # recurring: more than one break per session
    bad = CliRunner().invoke(app, [*args, "--breaker-mode", "never"])
    assert bad.exit_code == 2 and "--breaker-mode" in bad.output
