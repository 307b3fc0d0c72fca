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

from kvtool.analyze import analyze
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


def test_positions_and_losses_match_one_call_tokenization(broken):
    """Every break's token position and loss, recomputed from whole-prompt tokenization."""
    db, summary, _ = broken
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
    for _, _, cause, _, position, lost, r_id, p_id in _stored(db):
        (_, pmsgs, ptools), (_, rmsgs, rtools) = body(p_id), body(r_id)
        p_ids = ids(render_prompt(template, pmsgs, ptools))
        r_ids = ids(render_prompt(template, rmsgs, rtools))
        p_end = len(ids(render_prompt(template, pmsgs, ptools, generation=False)))
        m = min(len(p_ids), len(r_ids))
        mismatch = np.flatnonzero(p_ids[:m] != r_ids[:m])
        expected = 0 if cause == "model_changed" else int(mismatch[0])
        assert position == expected, cause
        cap = (len(r_ids) - 1) // B
        assert lost == B * (min(p_end // B, cap) - min(expected // B, cap)), cause
    con.close()


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

    def prompt(req_id: int, generation: bool = True) -> list[int]:
        keys, tools_key = con.execute(
            "SELECT message_keys, tools_key FROM requests WHERE req_id = ?", [req_id]
        ).fetchall()[0]
        tools = json.loads(bodies[tools_key]) if tools_key is not None else None
        text = render_prompt(hf, [json.loads(bodies[k]) for k in keys], tools, generation)
        return bundle.tokenizer.encode(text, add_special_tokens=False).ids

    for _, _, cause, _, position, lost, r_id, p_id in rows:
        a, b = np.array(prompt(p_id)), np.array(prompt(r_id))
        m = min(len(a), len(b))
        first = int(np.flatnonzero(a[:m] != b[:m])[0]) if cause != "model_changed" else 0
        assert position == first, cause
        cap = (len(b) - 1) // 16
        p_end = len(prompt(p_id, generation=False))
        assert lost == 16 * (min(p_end // 16, cap) - min(first // 16, cap)), cause
    con.close()
