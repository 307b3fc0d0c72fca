"""Break detection in `kvtool analyze`: exact on generated logs with injected breakers, token
positions and losses against one-call tokenization, no false breaks on stable dates and ids."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import duckdb
import numpy as np
import pytest
from typer.testing import CliRunner

from kvtool.analyze import analyze, breaks
from kvtool.analyze.diff import CAUSES
from kvtool.cli import app
from kvtool.generate import generate
from kvtool.tokenize import default_tokenizer_path, load_tokenizer
from kvtool.tokenize.template import make_template, render_head, render_prompt

BREAKERS = 5  # sessions per cause: every variant of every cause appears


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    """A generated agent log with every kind of breaker injected, analyzed once."""
    root = tmp_path_factory.mktemp("breaks")
    log = root / "agent.jsonl"
    truth = generate("agent", 11 * BREAKERS + 9, 11, log, steps=(3, 9), breakers=BREAKERS)
    db = root / "k.duckdb"
    summary = analyze([log], db=db, examples=2)
    return db, summary, truth.to_json()


def _stored(db: Path) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(
            """SELECT r.request_id, p.request_id, b.cause, b.path, b.position, b.tokens_lost,
                      r.req_id, p.req_id
               FROM breaks b JOIN requests r ON r.req_id = b.req_id
               JOIN requests p ON p.req_id = b.pred_req_id ORDER BY r.req_id"""
        ).fetchall()
    finally:
        con.close()


def test_injected_breaks_are_found_exactly(broken):
    db, summary, truth = broken
    expected = {
        (b["request_id"], b["predecessor_id"], b["cause"], b["path"]) for b in truth["breaks"]
    }
    found = {row[:4] for row in _stored(db)}
    assert found == expected
    assert len(expected) > 11 * BREAKERS  # volatile causes break every later request too
    counts = Counter(b["cause"] for b in truth["breaks"])
    assert set(summary["breaks"]) == set(CAUSES)
    for cause in CAUSES:
        assert summary["breaks"][cause]["count"] == counts.get(cause, 0), cause
    assert summary["breaks"]["other"]["count"] == 0


def test_json_contract_totals_and_examples(broken):
    db, summary, _ = broken
    rows = _stored(db)
    total = summary["break_summary"]
    assert total["breaks"] == len(rows)
    assert total["tokens_lost"] == sum(r[5] for r in rows) > 0
    assert total["share_of_prompt_tokens"] == pytest.approx(
        total["tokens_lost"] / summary["prompt_tokens"]
    )
    assert total["dollars_lost"] == pytest.approx(total["tokens_lost"] * 3.0 / 1e6)
    by_req = {r[0]: r for r in rows}
    for cause, entry in summary["breaks"].items():
        assert entry["tokens_lost"] == sum(r[5] for r in rows if r[2] == cause)
        assert len(entry["examples"]) == min(2, entry["count"])
        lost = [e["tokens_lost"] for e in entry["examples"]]
        assert lost == sorted(lost, reverse=True)
        for ex in entry["examples"]:
            stored = by_req[ex["request_id"]]
            assert (ex["predecessor_id"], ex["path"], ex["position"]) == (
                stored[1],
                stored[3],
                stored[4],
            )
            assert set(ex["diff"]) == {"before", "removed", "added", "after"}
            assert ex["diff"]["removed"] != ex["diff"]["added"]


def _appended(p: list[dict], r: list[dict]) -> int:
    """The messages r appended to p: its trailing run of messages p lacks, at most what r grew
    by; when r did not grow, the first of them stands for what it replaced."""
    run = 0
    while run < len(r) and r[len(r) - 1 - run] not in p:
        run += 1
    grow = len(r) - len(p)
    return min(run, grow) if grow > 0 else max(0, run - 1)


def test_positions_and_losses_match_one_call_tokenization(broken):
    """Every break's token position and loss, recomputed from whole-prompt tokenization: the
    blocks of p's part as r renders it (with p's generation prompt where r repeats it, then the
    blocks of p's answer when r is the next request of p's session: output blocks are cached
    by default), less those r found cached anyway (at least those before the break)."""
    db, summary, _ = broken
    cached = dict(summary.requests_frame()[["req_id", "cached_tokens"]].to_numpy().tolist())
    bundle = load_tokenizer(None)
    template = make_template(bundle)
    con = duckdb.connect(str(db), read_only=True)

    def body(req_id: int) -> tuple[str | None, list[dict], list | None]:
        model, keys, tools_key = con.execute(
            "SELECT model, message_keys, tools_key FROM requests WHERE req_id = ?", [req_id]
        ).fetchall()[0]
        bodies = dict(
            con.execute("SELECT key, any_value(body) FROM contents GROUP BY 1").fetchall()
        )
        tools = json.loads(bodies[tools_key]) if tools_key is not None else None
        return model, [json.loads(bodies[k]) for k in keys], tools

    def ids(text: str) -> np.ndarray:
        return np.array(bundle.tokenizer.encode(text, add_special_tokens=False).ids)

    B = summary["block_size"]
    outputs = dict(con.execute("SELECT req_id, output_tokens FROM requests").fetchall())
    extended = 0
    for r_rid, p_rid, cause, _, position, lost, r_id, p_id in _stored(db):
        (_, pmsgs, ptools), (_, rmsgs, rtools) = body(p_id), body(r_id)
        p_ids = ids(render_prompt(template, pmsgs, ptools))
        r_ids = ids(render_prompt(template, rmsgs, rtools))
        p_end = len(ids(render_prompt(template, pmsgs, ptools, generation=False)))
        m = min(len(p_ids), len(r_ids))
        mismatch = np.flatnonzero(p_ids[:m] != r_ids[:m])
        expected = 0 if cause == "model_changed" else int(mismatch[0])
        assert position == expected, cause
        r_end = len(ids(render_prompt(template, _kept(pmsgs, rmsgs), rtools, generation=False)))
        answer = _answer_end(r_rid, p_rid, len(p_ids), outputs[p_id])
        want = _lost(p_ids, p_end, r_ids, r_end, expected, cached[r_id], B, answer)
        assert lost == want, cause
        extended += want > _lost(p_ids, p_end, r_ids, r_end, expected, cached[r_id], B)
    assert extended > 0  # some breaks also cost blocks of the predecessor's answer
    con.close()


def _kept(p: list[dict], r: list[dict]) -> list[dict]:
    """r's messages that stand for p's (r less those it appended)."""
    return r[: len(r) - _appended(p, r)]


def _answer_end(r_rid: str, p_rid: str, n_p: int, o_p: int) -> int:
    """Where the cached blocks of p's answer end in p's tokens when r is the next request of
    p's session (0 otherwise): vLLM never caches the last sampled token."""
    follows = r_rid.rsplit("-", 1)[0] == p_rid.rsplit("-", 1)[0]
    # generated agent sessions are linear: r follows p iff its number is p's plus one
    assert not follows or int(r_rid[-3:]) == int(p_rid[-3:]) + 1
    return (n_p + o_p - 1) // 16 * 16 if follows else 0


def _lost(
    p_ids, p_end: int, r_ids, r_end: int, position: int, cached: int, B: int, answer: int = 0
) -> int:
    """The blocks of p's part as r renders it (up to ``r_end``, then p's generation prompt as
    far as r repeats it, then p's answer up to ``answer`` in p's tokens, shifted as r shifts
    p's messages, when r carries p's last full block) that r did not find cached, at size B."""
    tail = p_ids[p_end:]
    same = np.flatnonzero(tail != r_ids[r_end : r_end + len(tail)][: len(tail)])
    end = r_end + (int(same[0]) if len(same) else min(len(tail), len(r_ids) - r_end))
    shift = r_end - p_end
    if answer > len(p_ids) and end >= len(p_ids) // 16 * 16 + shift:
        end = max(end, answer + shift)
    cap = (len(r_ids) - 1) // B
    assert cached >= B * min(position // B, cap)  # what precedes the break is cached
    return B * (min(end // B, cap) - min(max(position, cached) // B, cap))


def test_clean_logs_with_stable_dates_and_ids_have_no_breaks(tmp_path, write_jsonl):
    log = tmp_path / "clean.jsonl"
    generate("agent", 12, 3, log)  # its system prompt holds a date and a workspace id, stable
    text = log.read_text()
    assert "- Current date: 2026-11-01" in text and "- Workspace: ws-" in text
    assert analyze([log], db=tmp_path / "a.duckdb")["break_summary"]["breaks"] == 0

    policy = (
        "You are the billing assistant of Example Ltd (support id SUP-2231, account "
        "acct_9f8e7d6c5b4a). Policy effective 2024-03-01, revised March 3, 2025 09:00 UTC; "
        "refunds within 30 days. Trace 4f9c2a1e7b3d9e8f. Contact: +1 555 0100."
    )
    records = []
    for s in range(4):
        history = [{"role": "system", "content": policy}]
        for turn in range(4):
            history.append(
                {
                    "role": "user",
                    "content": f"Invoice INV-{2024 + s}-{turn:04d} dated 2026-11-0{turn + 1} "
                    f"(request 7c9e6679-7425-40de-944b-e07fc1f90ae{turn}) is wrong.",
                }
            )
            records.append(
                {
                    "id": f"s{s}-{turn}",
                    "timestamp": f"2026-11-01T10:{s:02d}:{turn:02d}Z",
                    "session_id": f"s{s}",
                    "request": {"model": "m", "messages": list(history)},
                }
            )
            history.append(
                {"role": "assistant", "content": f"Checked on 2026-11-01 at 10:0{turn}."}
            )
    path = write_jsonl("policy.jsonl", records)
    s = analyze([path], db=tmp_path / "b.duckdb")
    assert s["break_summary"]["breaks"] == 0
    assert s["ideal_hit_rate"] > 0.5


def test_without_session_ids_head_breaks_are_still_found(tmp_path):
    log = tmp_path / "nosession.jsonl"
    truth = generate("agent", 11 * 3 + 7, 5, log, breakers=3, session_ids=False).to_json()
    summary = analyze([log], db=tmp_path / "n.duckdb")
    rows = _stored(tmp_path / "n.duckdb")
    by_req = {r[0]: r[2] for r in rows}
    truth_by_req = {b["request_id"]: b["cause"] for b in truth["breaks"]}
    assert set(by_req) <= set(truth_by_req)  # nothing reported that was not injected
    for rid, cause in truth_by_req.items():
        if cause in ("volatile_timestamp", "volatile_id", "model_changed"):
            assert by_req.get(rid) == cause, rid
    assert len(rows) >= 0.9 * len(truth_by_req)
    assert summary["sessions_inferred"] > 0


def test_a_timestamp_at_the_very_start_breaks_every_session(tmp_path, write_jsonl):
    """Without a shared block at all, the most similar earlier head is still found."""
    records = []
    for s in range(5):
        system = f"[{2026}-11-01T09:{s:02d}:17Z] You are a careful assistant. " + "Rule. " * 40
        records.append(
            {
                "id": f"r{s}",
                "timestamp": f"2026-11-01T09:{s:02d}:17Z",
                "session_id": f"s{s}",
                "request": {
                    "model": "m",
                    "messages": [
                        {"role": "system", "content": system},
                        {"role": "user", "content": f"Question number {s}?"},
                    ],
                },
            }
        )
    s = analyze([write_jsonl("ts.jsonl", records)], db=tmp_path / "t.duckdb", block_size=16)
    b = s["breaks"]["volatile_timestamp"]
    assert b["count"] == 4 and s["break_summary"]["breaks"] == 4
    assert all(e["position"] < 16 for e in b["examples"])
    # the reusable part was the other session's head (the system prompt), all of it lost
    bundle = load_tokenizer(None)
    head = render_head(make_template(bundle), records[0]["request"]["messages"], None)
    head_tokens = len(bundle.tokenizer.encode(head, add_special_tokens=False).ids)
    assert b["tokens_lost"] == 4 * 16 * (head_tokens // 16) > 0


def test_rerun_replaces_stored_breaks_and_price_scales(broken, tmp_path):
    db, summary, _ = broken
    again = analyze(None, db=db, price_input=10.0)
    assert len(_stored(db)) == summary["break_summary"]["breaks"]
    assert again["break_summary"]["dollars_lost"] == pytest.approx(
        summary["break_summary"]["tokens_lost"] * 10.0 / 1e6
    )


def test_bounded_prompt_caches_find_the_same_breaks(broken, tmp_path, monkeypatch):
    # pairs in batches of 5, the caches emptied before every batch (a budget of one token):
    # the same breaks, positions and losses, with the prompts encoded again and again
    db, summary, _ = broken
    copy = tmp_path / "copy.duckdb"
    shutil.copy(db, copy)
    monkeypatch.setattr(breaks, "PAIR_BATCH", 5)
    monkeypatch.setattr(breaks, "CACHE_TOKENS", 1)
    made = []
    real = breaks.PromptTokens
    monkeypatch.setattr(breaks, "PromptTokens", lambda *a: made.append(1) or real(*a))
    again = analyze(None, db=copy, examples=2)
    assert len(made) > summary["break_summary"]["breaks"] // 5
    assert _stored(copy) == _stored(db)
    assert again["breaks"] == summary["breaks"]


def test_terminal_breaks_section(broken):
    db, _, _ = broken
    out = CliRunner().invoke(app, ["analyze", "--db", str(db)])
    assert out.exit_code == 0, out.output
    assert "prefix breaks" in out.stdout
    for cause in ("volatile_timestamp", "tool_added", "history_edited", "json_key_order"):
        assert cause in out.stdout
    assert "[-" in out.stdout and "{+" in out.stdout


def test_hash_traces_have_no_breaks_section(tmp_path, write_jsonl):
    path = write_jsonl(
        "m.jsonl",
        [
            {"timestamp": 0, "input_length": 1024, "output_length": 1, "hash_ids": [1, 2]},
            {"timestamp": 1, "input_length": 1024, "output_length": 1, "hash_ids": [1, 3]},
        ],
    )
    s = analyze([path], db=tmp_path / "h.duckdb")
    assert s["breaks"] is None and s["break_summary"] is None


def test_breaks_through_a_hub_chat_template(tmp_path):
    """The tokenizer's own jinja template (segments mode): same breaks, positions exact."""
    tokdir = tmp_path / "tok"
    tokdir.mkdir()
    shutil.copy(default_tokenizer_path(), tokdir / "tokenizer.json")
    template = (
        "{{ bos_token }}{% if tools %}<tools>{{ tools | tojson }}</tools>{% endif %}"
        "{% for m in messages %}"
        "{% if m['role'] == 'user' %}<｜User｜>{{ m['content'] }}"
        "{% elif m['role'] == 'assistant' %}<｜Assistant｜>{{ m['content'] or '' }}"
        "{% for c in m['tool_calls'] or [] %}<｜tool▁call▁begin｜>{{ c['function']['name'] }}"
        "<｜tool▁sep｜>{{ c['function']['arguments'] }}<｜tool▁call▁end｜>{% endfor %}"
        "<｜end▁of▁sentence｜>{% elif m['role'] == 'tool' %}<｜tool▁output▁begin｜>"
        "{{ m['content'] }}<｜tool▁output▁end｜>{% else %}{{ m['content'] }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}<｜Assistant｜>{% endif %}"
    )
    (tokdir / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": template, "bos_token": "<｜begin▁of▁sentence｜>"})
    )
    log = tmp_path / "agent.jsonl"
    truth = generate("agent", 14, 4, log, steps=(3, 6), breakers=1).to_json()
    db = tmp_path / "hf.duckdb"
    summary = analyze([log], db=db, tokenizer=str(tokdir))
    assert summary["tokenization"]["mode"] == "segments"
    expected = {
        (b["request_id"], b["predecessor_id"], b["cause"], b["path"]) for b in truth["breaks"]
    }
    rows = _stored(db)
    assert {r[:4] for r in rows} == expected
    bundle = load_tokenizer(str(tokdir))
    hf = make_template(bundle)
    con = duckdb.connect(str(db), read_only=True)
    bodies = dict(con.execute("SELECT key, any_value(body) FROM contents GROUP BY 1").fetchall())

    cached = dict(summary.requests_frame()[["req_id", "cached_tokens"]].to_numpy().tolist())

    def request(req_id: int) -> tuple[list[dict], list | None]:
        keys, tools_key = con.execute(
            "SELECT message_keys, tools_key FROM requests WHERE req_id = ?", [req_id]
        ).fetchall()[0]
        tools = json.loads(bodies[tools_key]) if tools_key is not None else None
        return [json.loads(bodies[k]) for k in keys], tools

    def ids(messages: list[dict], tools: list | None, generation: bool = True) -> np.ndarray:
        text = render_prompt(hf, messages, tools, generation)
        return np.array(bundle.tokenizer.encode(text, add_special_tokens=False).ids)

    outputs = dict(con.execute("SELECT req_id, output_tokens FROM requests").fetchall())
    for r_rid, p_rid, cause, _, position, lost, r_id, p_id in rows:
        (pm, pt), (rm, rt) = request(p_id), request(r_id)
        a, b = ids(pm, pt), ids(rm, rt)
        m = min(len(a), len(b))
        first = int(np.flatnonzero(a[:m] != b[:m])[0]) if cause != "model_changed" else 0
        assert position == first, cause
        p_end, r_end = len(ids(pm, pt, False)), len(ids(_kept(pm, rm), rt, False))
        answer = _answer_end(r_rid, p_rid, len(a), outputs[p_id])
        assert lost == _lost(a, p_end, b, r_end, first, cached[r_id], 16, answer), cause
    con.close()


def _agent_session(tools_a: list, tools_b: list, steps: int, session: str = "s") -> list[dict]:
    """One growing tool-calling session whose request i sends ``tools_a`` (even i) or
    ``tools_b`` (odd i)."""
    system = {"role": "system", "content": "You are a careful agent. " + "Rule one. " * 60}
    history = [system, {"role": "user", "content": f"Fix the failing test in {session}."}]
    out = []
    for i in range(steps):
        request = {"model": "m", "messages": list(history), "tools": tools_b if i % 2 else tools_a}
        stamp = f"2026-11-01T10:{len(out):02d}:00Z"
        out.append({"id": f"{session}-{i}", "timestamp": stamp, "session_id": session,
                    "request": request})  # fmt: skip
        args = f'{{"path": "src/m{i}.py"}}'
        call = {"id": f"c{i}", "type": "function", "function": {"name": "read", "arguments": args}}
        history += [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"c{i}", "content": f"line {i}: " + "x = 1\n" * 40},
        ]
    return out


def test_a_break_that_alternates_costs_every_request_the_turn_before_it(tmp_path, write_jsonl):
    """Tool schemas serialized in two key orders, A B A B: every request from the second breaks
    its immediate predecessor (json_key_order), and loses what the cache would have given a
    stable session, i.e. the turn its predecessor added, not only the first flip."""
    props = {"path": {"type": "string", "description": "File to read."},
             "limit": {"type": "integer", "description": "Lines to read at most."}}  # fmt: skip
    a = [{"type": "function", "function": {"name": "read", "description": "Read a file.",
          "parameters": {"type": "object", "properties": props}}}]  # fmt: skip
    b = [{"type": "function", "function": {**a[0]["function"], "parameters": {
          "type": "object", "properties": dict(reversed(props.items()))}}}]  # fmt: skip
    flipping = analyze([write_jsonl("ab.jsonl", _agent_session(a, b, 8))], db=tmp_path / "ab.db")
    stable = analyze([write_jsonl("aa.jsonl", _agent_session(a, a, 8))], db=tmp_path / "aa.db")
    rows = _stored(tmp_path / "ab.db")
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (f"s-{i}", f"s-{i - 1}", "json_key_order") for i in range(1, 8)
    ]
    assert stable["break_summary"]["breaks"] == 0
    extra = stable["cached_tokens"] - flipping["cached_tokens"]  # same lengths: cached = missed
    lost = flipping["break_summary"]["tokens_lost"]
    assert abs(lost - extra) <= 16 * 7 and lost > 0.9 * extra > 0
    f, g = flipping.requests_frame(), stable.requests_frame()
    for (*_, lost_i, _, _), i in zip(rows, range(1, 8), strict=True):
        gap = int(g["cached_tokens"][i] - f["cached_tokens"][i])
        assert abs(lost_i - gap) <= 16, i  # request by request
        if i >= 2:  # it reuses request i - 2 (its own order): only request i - 1's turn is lost
            turn = int(g["cached_tokens"][i] - g["cached_tokens"][i - 1])
            assert abs(lost_i - turn) <= 16 and turn > 200, i


def test_two_threads_in_one_session_are_not_breaks(tmp_path, write_jsonl):
    """A session id shared by two interleaved conversations (sub-agents): a request is compared
    with its own thread, not with the other thread's request just before it."""
    tools = [{"type": "function", "function": {"name": "read", "parameters": {}}}]
    one, two = _agent_session(tools, tools, 4, "x"), _agent_session(tools, tools, 4, "y")
    records = []
    for i, (r1, r2) in enumerate(zip(one, two, strict=True)):
        for j, r in enumerate((r1, r2)):
            r["session_id"] = "one-id"
            r["timestamp"] = f"2026-11-01T10:{2 * i + j:02d}:00Z"
            records.append(r)
    s = analyze([write_jsonl("threads.jsonl", records)], db=tmp_path / "t.db")
    assert s["ideal_hit_rate"] > 0.5
    # only the second thread's opening, which rewrites the first thread's task
    assert [r[:3] for r in _stored(tmp_path / "t.db")] == [("y-0", "x-0", "history_edited")]
