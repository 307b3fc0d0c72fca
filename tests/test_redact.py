"""No-text mode (`--redact`, docs/redaction.md): no prompt text anywhere, the same numbers.

Inputs are real files read by the real ingest, tokenized with the default bundled tokenizer:
the shared conversation set (`tests/conversations.py`, written as OpenAI chat gateway records by
`openai_chat_record`) with a canary planted in every kind of prompt text, the demo agent trace,
and generated agent logs with every break cause planted (`kvtool.generate`, which writes the
OpenAI chat request shape).
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import duckdb
import orjson
import pytest
from conversations import calls, openai_chat_record
from typer.testing import CliRunner

from kvtool import ingest
from kvtool.analyze import analyze
from kvtool.analyze.diff import json_difference, text_cause
from kvtool.analyze.fingerprint_diff import Elements, first_difference
from kvtool.analyze.fingerprint_diff import text_cause as fp_text_cause
from kvtool.cli import app
from kvtool.errors import InputError
from kvtool.generate import generate
from kvtool.simulate import simulate
from kvtool.store import connect
from kvtool.store.fingerprints import PrefixPair, RequestFp, staging_db
from kvtool.textscan import lcp
from kvtool.tokenize import default_tokenizer_path
from kvtool.tokenize.redact.elements import (
    SCHEMA_KEYS,
    Texts,
    head_text,
    message_fp,
    text_fp,
    tool_fp,
)
from kvtool.tokenize.redact.heads import head_table
from kvtool.tokenize.redact.prefixes import prefix_pairs, sequence_key

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "traces" / "demo-agent.jsonl.gz"
CANARY = "Zq9canaryXv"
SPECIALS = ("<｜User｜>", "<｜Assistant｜>")
T0 = 1_767_225_600
OUTPUTS = ("ingest_json", "ingest_text", "analyze_json", "analyze_text", "report", "simulate")


def _cli(args: list[str], code: int = 0) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == code, (result.output, result.exception)
    return result.stdout + result.stderr


def _error_line(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kvtool: error:"), result.stderr
    return lines[0]


def _canary_log(path: Path) -> Path:
    """The conversation set with the canary in the system prompt and a tool description ("Acme
    Cloud"), user messages and a tool result ("suspended"), assistant messages ("runbook"),
    tool-call arguments, user messages and tool results ("acct_"), plus three lines that are
    rejected with the canary in them."""
    lines = []
    for call in calls():
        text = orjson.dumps(openai_chat_record(call)).decode()
        for word in ("Acme Cloud", "suspended", "runbook", "acct_"):
            assert word in text or word in ("suspended", "acct_")
            text = text.replace(word, f"{word}{CANARY}")
        lines.append(text)
    assert all(CANARY in line for line in lines)
    bad_role = {"role": CANARY, "content": f"hi {CANARY}"}
    lines += [
        orjson.dumps({"request_id": "bad-1", "request": {"model": "m", "messages": [bad_role]}}),
        orjson.dumps({"request_id": "bad-2", "request": {"model": "m", "messages": CANARY}}),
        '{"request": {"messages": [{"role": "user", "content": "' + CANARY,
    ]
    path.write_text("\n".join(x if isinstance(x, str) else x.decode() for x in lines) + "\n")
    return path


def _varchar_hits(db: Path, needle: str) -> list[str]:
    """``table.column`` of every VARCHAR value (of every table) that holds ``needle``."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        cols = con.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE data_type = 'VARCHAR'"
        ).fetchall()
        assert len(cols) > 20
        return [
            f"{t}.{c}"
            for t, c in cols
            if con.execute(
                f'SELECT count(*) FROM "{t}" WHERE contains("{c}", ?)', [needle]
            ).fetchall()[0][0]
        ]
    finally:
        con.close()


@pytest.fixture(scope="module")
def canary(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every command that writes something, on a redacted database of the canary log."""
    root = tmp_path_factory.mktemp("canary")
    log = _canary_log(root / "canary.jsonl")
    db = root / "red.duckdb"
    out = {"db": db, "log": log, "root": root}
    out["ingest_json"] = _cli(["ingest", "--redact", "--db", str(db), str(log), "--json"])
    out["ingest_text"] = _cli(["ingest", "--redact", "--db", str(root / "t.duckdb"), str(log)])
    out["analyze_json"] = _cli(["analyze", "--db", str(db), "--json"])
    out["analyze_text"] = _cli(["analyze", "--db", str(db), "--html", str(root / "a.html")])
    out["report"] = _cli(["report", "--db", str(db), "-o", str(root / "r.html")])
    out["simulate"] = _cli(["simulate", "--db", str(db), "--blocks", "100", "--json"])
    out["html"] = (root / "a.html").read_text() + (root / "r.html").read_text()
    return out


def test_the_canary_is_nowhere(canary: dict) -> None:
    db = canary["db"]
    assert not Path(f"{db}.wal").exists()
    for needle in (CANARY, CANARY.lower()):
        assert needle.encode() not in db.read_bytes()
        assert _varchar_hits(db, needle) == []
        for key in OUTPUTS:
            assert needle not in canary[key], key
        assert needle not in canary["html"]
    summary = json.loads(canary["analyze_json"])
    assert summary["requests"] == len(calls())
    assert summary["rejected_lines"] == 3
    assert summary["top_prefixes"] and all(p["ends_with"] is None for p in summary["top_prefixes"])
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM contents").fetchall() == [(0,)]
        assert con.execute("SELECT count(*) FROM rejects WHERE raw IS NOT NULL").fetchall() == [
            (0,)
        ]
        assert con.execute("SELECT bool_and(redacted) FROM files").fetchall() == [(True,)]
    finally:
        con.close()


@pytest.fixture(scope="module")
def plain(canary: dict) -> dict:
    """The canary log analyzed without --redact."""
    db = canary["root"] / "plain.duckdb"
    return {"db": db, "summary": analyze([canary["log"]], db=db).to_json()}


def test_the_scan_would_have_found_it(plain: dict) -> None:
    """The control: without --redact the same log puts the canary where the scans look."""
    assert {"contents.body", "rejects.raw"} <= set(_varchar_hits(plain["db"], CANARY))
    assert CANARY in _cli(["analyze", "--db", str(plain["db"])])  # the top prefixes' previews


def test_observed_and_ideal_hit_rates_are_those_of_the_text(canary: dict, plain: dict) -> None:
    plain = plain["summary"]
    red = json.loads(canary["analyze_json"])
    for key in ("ideal_hit_rate", "ideal_hit_rate_by_block_size", "observed_hit_rate"):
        assert red[key] == plain[key], key
    expected = sum(c.cached_tokens for c in calls()) / sum(c.prompt_tokens for c in calls())
    assert red["observed_hit_rate"] == pytest.approx(expected)
    assert red["break_summary"] == plain["break_summary"]


def _stored_breaks(db: Path) -> set[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return set(
            con.execute(
                """SELECT r.request_id, p.request_id, b.cause, b.tokens_lost, b.position // 16
                   FROM breaks b JOIN requests r ON r.req_id = b.req_id
                   JOIN requests p ON p.req_id = b.pred_req_id"""
            ).fetchall()
        )
    finally:
        con.close()


def _assert_same(plain: dict, red: dict) -> None:
    for key in ("requests", "prompt_tokens", "ideal_hit_rate", "ideal_hit_rate_by_block_size"):
        assert red[key] == plain[key], key
    assert red["observed_hit_rate"] == plain["observed_hit_rate"]
    counts = {c: (v["count"], v["tokens_lost"]) for c, v in plain["breaks"].items()}
    assert {c: (v["count"], v["tokens_lost"]) for c, v in red["breaks"].items()} == counts
    assert red["break_summary"] == plain["break_summary"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("demo")
    plain_db, red_db = root / "plain.duckdb", root / "red.duckdb"
    return {
        "plain": analyze([DEMO], db=plain_db).to_json(),
        "red": analyze([DEMO], db=red_db, redact=True).to_json(),
        "plain_db": plain_db,
        "red_db": red_db,
    }


def test_the_demo_trace_gives_the_same_numbers(demo: dict) -> None:
    plain, red = demo["plain"], demo["red"]
    _assert_same(plain, red)
    assert sum(v["count"] for v in plain["breaks"].values()) >= 20
    assert all(v["count"] for c, v in plain["breaks"].items() if c != "other")
    assert _stored_breaks(demo["red_db"]) == _stored_breaks(demo["plain_db"])
    again = analyze(None, db=demo["red_db"]).to_json()  # from the database alone
    _assert_same(plain, again)
    for b in again["breaks"].values():
        for ex in b["examples"]:
            assert ex["diff"]["before"] == ex["diff"]["after"] == ""


def test_simulate_gives_the_same_hit_rate(
    demo: dict, canary: dict, plain: dict, tmp_path: Path
) -> None:
    text = simulate(None, db=demo["plain_db"], blocks=[2000]).to_json()
    red = simulate(None, db=demo["red_db"], blocks=[2000]).to_json()
    assert red["ideal_hit_rate"] == text["ideal_hit_rate"]
    assert red["token_hit_rate"] == text["token_hit_rate"]
    assert 0 < text["token_hit_rate"] < text["ideal_hit_rate"]
    text = simulate(None, db=plain["db"], blocks=[30]).to_json()
    log = canary["log"]  # simulate's own redacted ingest
    fresh = simulate([log], db=tmp_path / "s.duckdb", blocks=[30], redact=True).to_json()
    assert fresh["token_hit_rate"] == text["token_hit_rate"] > 0


@pytest.mark.parametrize("session_ids", [True, False])
def test_planted_breaks_of_every_cause_are_found_alike(tmp_path: Path, session_ids: bool) -> None:
    log = tmp_path / "agent.jsonl"
    truth = generate(
        "agent", 11 + 3, 7, log, steps=(3, 7), breakers=1, session_ids=session_ids
    ).to_json()
    plain = analyze([log], db=tmp_path / "plain.duckdb").to_json()
    ingest([log], db=tmp_path / "red.duckdb", redact=True)
    red = analyze(None, db=tmp_path / "red.duckdb").to_json()
    _assert_same(plain, red)
    causes = {b["cause"] for b in truth["breaks"]}
    assert len(causes) == 11
    found = {c for c, v in red["breaks"].items() if v["count"]}
    assert found == causes if session_ids else len(found) >= 7
    assert _stored_breaks(tmp_path / "red.duckdb") == _stored_breaks(tmp_path / "plain.duckdb")


def _hub_tokenizer(tmp_path: Path) -> Path:
    tok = tmp_path / "tok"
    tok.mkdir()
    shutil.copy(default_tokenizer_path(), tok / "tokenizer.json")
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (tok / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    return tok


def test_another_tokenizer_is_one_error(canary: dict, tmp_path: Path) -> None:
    tok = _hub_tokenizer(tmp_path)
    line = _error_line(["analyze", "--db", str(canary["db"]), "--tokenizer", str(tok)])
    assert "redacted at ingest with tokenizer deepseek-v4; re-ingest to use" in line
    line = _error_line(["ingest", "--redact", "--db", str(canary["db"]), "--tokenizer", str(tok),
                        str(DEMO)])  # fmt: skip
    assert "re-ingest to use" in line


def test_replay_refuses_a_redacted_database(canary: dict) -> None:
    line = _error_line(["replay", "--db", str(canary["db"]), "--endpoint", "http://127.0.0.1:9"])
    assert "replay needs prompt text" in line


def test_a_database_is_redacted_or_not(canary: dict, tmp_path: Path) -> None:
    line = _error_line(["ingest", "--db", str(canary["db"]), str(DEMO)])
    assert "the database is redacted" in line
    plain = tmp_path / "plain.duckdb"
    _cli(["ingest", "--db", str(plain), str(canary["log"])])
    line = _error_line(["ingest", "--redact", "--db", str(plain), str(DEMO)])
    assert "already holds prompt text" in line
    assert "needs --redact" in _error_line(["ingest", "--db", str(plain), "--tokenizer", "x", "y"])
    with pytest.raises(InputError):
        analyze([DEMO], db=plain, redact=True)


def test_reingesting_is_idempotent_and_ids_stay_unique(canary: dict, tmp_path: Path) -> None:
    db = tmp_path / "r.duckdb"
    first = ingest([canary["log"]], db=db, redact=True)
    again = ingest([canary["log"]], db=db, redact=True)
    assert again[0].skipped and again[0].requests == first[0].requests
    copy = tmp_path / "copy.jsonl"  # other bytes, the same request ids
    copy.write_text(canary["log"].read_text().replace('"created":', '"created" :'))
    (dup,) = ingest([copy], db=db, redact=True)
    assert dup.requests == 0 and dup.rejected == first[0].requests + first[0].rejected
    con = connect(db)
    try:
        rows = con.execute(
            "SELECT records, requests, rejected, skipped FROM files ORDER BY file_id"
        ).fetchall()
        assert all(r == q + j + s for r, q, j, s in rows)
        n = con.execute("SELECT count(*), count(DISTINCT request_id) FROM requests").fetchall()
        assert n[0][0] == n[0][1] == first[0].requests
        assert con.execute("SELECT count(*) FROM fp_requests").fetchall()[0][0] == n[0][0]
    finally:
        con.close()


def test_the_staging_database_never_spills_to_disk() -> None:
    mem = staging_db(5, 7)
    try:
        assert mem.execute("SELECT current_setting('temp_directory')").fetchall() == [("",)]
        ids = "SELECT (SELECT max(file_id) FROM files), (SELECT max(req_id) FROM requests)"
        assert mem.execute(ids).fetchall() == [(4, 6)]
    finally:
        mem.close()


# ---------------------------------------------------------------------------------------------
# The stand-ins, against the text functions they stand in for

TEXT_PAIRS = [
    ("Now: 2026-11-01T09:03:12Z. Be brief.", "Now: 2026-11-01T09:04:40Z. Be brief."),
    ("Today is Sunday, November 1, 2026.\nHelp.", "Today is Monday, November 2, 2026.\nHelp."),
    ("run req_01HF8K2M9QAB7 now", "run req_01HF8K2M9QZZ9 now"),
    ("Workspace: ws-7f3a9c2e\nok", "Workspace: ws-11aa22bb\nok"),
    ('result {"a": 1, "b": [1, 2]} end', 'result {"b": [1, 2], "a": 1} end'),
    ('{"x": {"a": 1, "b": 2}, "y": 3}', '{"x": {"b": 2, "a": 1}, "y": 4}'),
    ('{"a": 1,\n  "b": 2}', '{"a": 1, "b": 2}'),
    ('{"a": 1}', '{"a": 1.0}'),
    ("one  two\n\nthree", "one two\nthree"),
    ("one <｜User｜>two", "one two"),
    ("The cat sat.", "The dog sat."),
    ("At 09:03 the cat sat.", "At 09:03 the dog sat."),
    ("Time 2026-11-01 then the cat.", "Time 2026-11-02 then the dog."),
    ("the cat 2026-11-01", "the dog 2026-11-02"),
    ("id 123e4567-e89b-12d3-a456-426614174000.", "id 123e4567-e89b-12d3-a456-426614174001."),
    ("Request #1042 done", "Request #1043 done"),
    ("abc", "abcdef"),
    ("", "x"),
]


@pytest.mark.parametrize(("a", "b"), TEXT_PAIRS)
def test_text_causes_are_those_of_the_text_diff(a: str, b: str) -> None:
    expected = text_cause(a, b, SPECIALS)
    found = fp_text_cause(text_fp(a, SPECIALS), text_fp(b, SPECIALS), specials=True)
    assert (found and found[0]) == (expected and expected[0])


def _tool(name: str, props: dict, description: str = "Look it up.") -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": props, "required": list(props)},
        },
    }


TOOL_PAIRS = [
    (_tool("a", {"q": {"type": "string"}}), _tool("a", {"q": {"type": "string"}}, "Find it.")),
    (_tool("a", {"q": {"type": "string"}, "n": {"type": "integer"}}),
     _tool("a", {"n": {"type": "integer"}, "q": {"type": "string"}})),
    (_tool("a", {"q": {"type": "string", "description": "the query"}}),
     _tool("a", {"q": {"type": "string", "description": "the query text"}})),
    (_tool("a", {"q": {"type": "integer", "minimum": 1}}),
     _tool("a", {"q": {"type": "integer", "minimum": 1.0}})),
    (_tool("a", {"q": {"enum": [1, 2]}}), _tool("a", {"q": {"enum": [1, 2, 3]}})),
    (_tool("a", {"q": {"type": "string"}}), {**_tool("a", {"q": {"type": "string"}}), "x": 1}),
    (_tool("a", {}, "As of 2026-01-01."), _tool("a", {}, "As of 2026-01-02.")),
]  # fmt: skip


@pytest.mark.parametrize(("ta", "tb"), TOOL_PAIRS)
def test_tool_trees_differ_where_the_values_do(ta: dict, tb: dict) -> None:
    texts = Texts(())
    fa, fb = tool_fp(ta, texts), tool_fp(tb, texts)
    where = json_difference(ta, tb)
    assert where is not None and fa.fp != fb.fp
    el = Elements()
    el.tools, el.texts = {fa.fp: fa, fb.fp: fb}, texts.rows
    p = _request_fp(tools=(fa.fp,))
    r = _request_fp(tools=(fb.fp,))
    found = first_difference(p, r, "m", "m", el)
    masked = re.sub(r"\.(\w+)", lambda m: m[0] if m[1] in SCHEMA_KEYS else ".*", where[0])
    assert found is not None and found.path == f"tools[0]{masked}"
    assert (found.cause == "json_key_order") == (where[1] == "order")


def _request_fp(messages: tuple = (), tools: tuple | None = None) -> RequestFp:
    return RequestFp(0, 0, 0, 0, messages, tools, None, False, 0, 0, None, None)


def test_messages_and_calls_compare_as_the_diff_compares_them() -> None:
    texts = Texts(SPECIALS)

    def call(args: object) -> dict:
        fn = {"name": "f", "arguments": args}
        return {"role": "assistant", "content": None, "tool_calls": [{"function": fn}]}

    same = [
        ({"role": "user", "content": "hi"}, {"role": "user", "content": [{"text": "hi"}]}),
        ({"role": "user", "content": "hi", "name": "x"}, {"role": "user", "content": "hi"}),
        (call('{"a":1}'), {**call('{"a":1}'), "id": "other"}),
    ]
    for a, b in same:
        assert message_fp(a, texts).fp == message_fp(b, texts).fp
    cases = [
        (call('{"a": 1, "b": 2}'), call('{"b": 2, "a": 1}'), "json_key_order"),
        (call('{"a": 1}'), call({"a": 1}), "json_key_order"),
        (call('{"a": 1}'), call('{"a": 2}'), "history_edited"),
        (call("not json 2026-01-01"), call("not json 2026-01-02"), "volatile_timestamp"),
        ({"role": "user", "content": "a"}, {"role": "tool", "content": "a"}, "history_edited"),
    ]
    for a, b, cause in cases:
        ma, mb = message_fp(a, texts), message_fp(b, texts)
        el = Elements()
        el.messages, el.texts = {ma.fp: ma, mb.fp: mb}, texts.rows
        found = first_difference(_request_fp((ma.fp,)), _request_fp((mb.fp,)), "m", "m", el)
        assert found is not None and found.cause == cause, (a, b)


def test_head_ranks_give_exact_common_prefixes_and_suffixes() -> None:
    from kvtool.analyze.redacted import RankedHeads
    from kvtool.store.fingerprints import HeadRanks

    rng = random.Random(3)
    heads = {"".join(rng.choice("ab\x00") for _ in range(rng.randint(0, 12))) for _ in range(60)}
    table = head_table(0, heads).to_pylist()
    by_text = {h: next(r for r in table if r["length"] == len(h) and r["rank"] == k)
               for k, h in enumerate(sorted(heads))}  # fmt: skip
    lcp_next = [0] * len(table)
    lcs_next = [0] * len(table)
    for row in table:
        lcp_next[row["rank"]] = row["lcp_next"]
        lcs_next[row["rank_rev"]] = row["lcs_next"]
    import numpy as np

    hr = HeadRanks(
        0,
        rank={r["head"]: r["rank"] for r in table},
        rank_rev={r["head"]: r["rank_rev"] for r in table},
        length={r["head"]: r["length"] for r in table},
        lcp_next=np.array(lcp_next),
        lcs_next=np.array(lcs_next),
    )
    ranked = RankedHeads({}, {0: hr})
    texts = sorted(heads)
    for _ in range(300):
        a, b = rng.choice(texts), rng.choice(texts)
        ha, hb = by_text[a]["head"], by_text[b]["head"]
        assert ranked._shared(hr, ha, hb, reverse=False) == lcp(a, b)
        assert ranked._shared(hr, ha, hb, reverse=True) == lcp(a[::-1], b[::-1])


def test_head_text_is_what_break_analysis_keys_on() -> None:
    msgs = [{"role": "system", "content": "s1"}, {"role": "developer", "content": [{"text": "s2"}]},
            {"role": "user", "content": "u"}]  # fmt: skip
    assert head_text("m", msgs, [{"a": 1}], None) == 'm\x00s1\x01s2\x02[{"a":1}]'
    assert head_text(None, None, None, [1, 2]) == "None\x00[1,2]"


def test_prefix_pairs_are_exact() -> None:
    import numpy as np

    rng = np.random.default_rng(5)
    base = rng.integers(0, 50, 40)
    seqs = [base[:n] for n in (1, 5, 17, 40)] + [rng.integers(0, 50, 30), base[:5] + 1]
    keyed = {sequence_key(s): s for s in seqs}
    found = prefix_pairs("piece", keyed)
    expected = {
        PrefixPair("piece", sequence_key(a), sequence_key(b))
        for a in seqs
        for b in seqs
        if len(a) < len(b) and np.array_equal(b[: len(a)], a)
    }
    assert found == expected and len(expected) == 6
    old = {sequence_key(base[:3])}  # stored before: still found as a prefix
    pair = PrefixPair("piece", sequence_key(base[:3]), sequence_key(base[:40]))
    assert pair in prefix_pairs("piece", keyed, old)


def test_odd_shapes_and_hostile_values_redact_like_text(tmp_path: Path) -> None:
    """Content parts, arguments as objects or not JSON, a tool without ``function``, an empty
    catalog, completions as text and as token ids; and wrong-typed values (rejected, never a
    crash)."""
    sys_msg = {"role": "system", "content": [{"type": "text", "text": "Be brief. 2026-01-01"}]}
    tools = [
        {"type": "function", "function": {"name": "f", "parameters": {"a": 1}}},
        {"name": "bare", "input_schema": {"b": [1, 2.5, True, None]}},
    ]
    calls_ = [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}},
        {"id": "d", "type": "function", "function": {"name": "g", "arguments": "raw ["}},
    ]
    rows = []
    for i in range(6):
        result = '{"k": 1, "j": 2}' if i < 3 else '{"j": 2, "k": 1}'
        history = [
            sys_msg,
            {"role": "user", "content": f"q{i % 2}"},
            {"role": "assistant", "content": None, "tool_calls": calls_},
            {"role": "tool", "tool_call_id": "c", "content": result},
        ]
        request = {"model": "m", "messages": history, "tools": tools if i % 3 else []}
        meta = {"session_id": f"s{i % 2}"}
        row = {"request_id": f"c{i}", "created": T0 + i, "metadata": meta, "request": request}
        rows.append(row)
    for i in range(3):
        request = {"model": "m", "prompt": "Complete: " + "word " * (20 + i)}
        rows.append({"request_id": f"p{i}", "created": T0 + 100 + i, "request": request})
    hostile = [
        {"model": 5, "messages": [{"role": "user"}]},
        {"model": "m", "messages": [None]},
        {"model": "m", "messages": [{"role": "user", "content": 3}], "tools": "x"},
        {"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"function": 1}]}]},
    ]
    rows += [{"request_id": f"h{i}", "request": r} for i, r in enumerate(hostile)]
    log = tmp_path / "odd.jsonl"
    log.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    fmt = "openai-chat"
    plain = analyze([log], db=tmp_path / "plain.duckdb", fmt=fmt).to_json()
    red = analyze([log], db=tmp_path / "red.duckdb", fmt=fmt, redact=True).to_json()
    _assert_same(plain, red)
    assert red["requests"] == plain["requests"] >= 6
    assert red["rejected_lines"] == plain["rejected_lines"] >= 2
    # c5 is compared with c3, the request before it in its session: the catalog came back first
    assert red["breaks"]["json_key_order"]["count"] == 1 and red["break_summary"]["breaks"] == 4
    assert red["breaks"]["tool_added"]["count"] == 2
    assert _stored_breaks(tmp_path / "red.duckdb") == _stored_breaks(tmp_path / "plain.duckdb")


def test_head_text_equals_the_text_key_on_the_demo(demo: dict) -> None:
    from kvtool.analyze.breaks import Prompts, _render_head_key
    from kvtool.store.requests import request_rows
    from kvtool.tokenize import load_tokenizer, tokenizer_signature

    bundle = load_tokenizer(None)
    con = connect(demo["plain_db"])
    try:
        prompts = Prompts(con, bundle, "pieces")
        rows = request_rows(con, tokenizer_signature(bundle))
        seen = set()
        for row in rows[::7]:
            b = prompts.load([row])
            msgs = [b[k] for k in row.message_keys]
            tools = b[row.tools_key] if row.tools_key is not None else None
            text = head_text(row.model, msgs, tools, None)
            assert text == _render_head_key(row, prompts)
            seen.add(text)
        assert len(seen) > 3
    finally:
        con.close()
