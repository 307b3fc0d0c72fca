"""`analyze` recovers the generator's known values, and matches a brute-force replay exactly."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from kvtool import AnalyzeOptions, AnalyzeResult, analyze
from kvtool.analyze import BreakSummary
from kvtool.analyze.prefix import assign_sessions, infer_parents
from kvtool.cli import app
from kvtool.errors import OptionError
from kvtool.generate import generate
from kvtool.store import connect
from kvtool.tokenize import load_tokenizer, tokenizer_signature
from kvtool.tokenize.template import make_template, render_prompt
from kvtool.traffic import load_workload, passes, runs

REPO = Path(__file__).resolve().parents[1]


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _oracle(records: list[dict], sizes=(16, 64, 256, 512), outputs: bool = True) -> dict:
    """Brute force: one-call tokenization of every full prompt, prefix sets of token tuples.
    With ``outputs``, after request i the cache also holds its output blocks (docs/definitions.md):
    the prefixes of the first later request of its session that extends i's full 16-token
    blocks, beyond them and ending within ``n + o − 1`` tokens."""
    bundle = load_tokenizer()
    template = make_template(bundle)
    toks = []
    for rec in sorted(records, key=lambda r: r["timestamp"]):  # ISO strings sort as times
        body = rec["request"]
        text = render_prompt(template, body["messages"], body.get("tools"))
        out_tokens = rec.get("response", {}).get("usage", {}).get("completion_tokens") or 0
        toks.append((rec.get("session_id"), bundle.tokenizer.encode(text).ids, out_tokens))
    out: dict = {"prompt_tokens": sum(len(t) for _, t, _ in toks), "cached": {}, "within": {}}
    for B in sizes:
        seen: set = set()
        by_session: dict = defaultdict(set)
        cached = within = 0
        for i, (sess, ids, o) in enumerate(toks):
            nb = len(ids) // B
            h = 0
            while h < nb and tuple(ids[: (h + 1) * B]) in seen:
                h += 1
            used = min(h, (len(ids) - 1) // B)
            cached += used * B
            within += B * sum(tuple(ids[: (i + 1) * B]) in by_session[sess] for i in range(used))
            for k in range(nb):
                seen.add(tuple(ids[: (k + 1) * B]))
                by_session[sess].add(tuple(ids[: (k + 1) * B]))
            full16 = len(ids) // 16 * 16
            nxt = next(
                (
                    later
                    for s2, later, _ in toks[i + 1 :]
                    if s2 == sess
                    and len(later) // 16 * 16 > full16 > 0
                    and later[:full16] == ids[:full16]
                ),
                None,
            )
            if outputs and nxt is not None:
                end = min(len(nxt) // 16 * 16, (len(ids) + o - 1) // 16 * 16)
                for k in range(full16 // B, end // B):
                    seen.add(tuple(nxt[: (k + 1) * B]))
                    by_session[sess].add(tuple(nxt[: (k + 1) * B]))
        out["cached"][B] = cached
        out["within"][B] = within
    common = toks[0][1]
    for _, ids, _ in toks[1:]:
        n = next((i for i, (a, b) in enumerate(zip(common, ids, strict=False)) if a != b), None)
        common = common[: n if n is not None else min(len(common), len(ids))]
    out["common_prefix"] = len(common)
    return out


@pytest.mark.parametrize("kind", ["agent", "chat", "rag"])
def test_analyze_matches_truth_and_bruteforce(tmp_path, kind):
    log = tmp_path / f"{kind}.jsonl"
    truth = generate(kind, 6, seed=11, out=log, steps=(3, 8))
    s = analyze([log], db=tmp_path / "k.duckdb")
    assert s["requests"] == truth.requests
    assert s["sessions"] == truth.sessions and s["sessions_inferred"] == 0
    assert s["output_tokens"] == truth.output_tokens
    assert s["rejected_lines"] == 0
    assert s["tokenization"]["mode"] == "pieces" and s["tokenization"]["verified"] > 0
    oracle = _oracle(_records(log))
    assert s["prompt_tokens"] == oracle["prompt_tokens"]
    for B in (16, 64, 256, 512):
        assert s["ideal_hit_rate_by_block_size"][str(B)] == pytest.approx(
            oracle["cached"][B] / oracle["prompt_tokens"], abs=0, rel=1e-12
        )
    assert s["cached_tokens"] == oracle["cached"][16]
    assert s["within_session_tokens"] == oracle["within"][16]
    prompt_only = _oracle(_records(log), (16,), outputs=False)["cached"][16]
    oc = s["output_caching"]
    assert s["cached_tokens"] - oc["cached_tokens_added"] == prompt_only
    if kind != "rag":  # agents and chats send their answers back
        assert oc["cached_tokens_added"] > 0
    # the top prefix is the system prompt (and tools) every request shares, across all sessions
    top = max(s["top_prefixes"], key=lambda p: p["requests"])
    if kind != "rag":  # rag: the shared system prompt may be shorter than a block plus the doc
        assert top["requests"] == truth.requests and top["sessions"] == truth.sessions
        assert top["tokens"] == oracle["common_prefix"] // 16 * 16
        assert truth.system_prompt[:20] in top["preview"]


@pytest.mark.parametrize("kind", ["agent", "chat"])
def test_sessions_are_inferred_exactly_without_ids(tmp_path, kind):
    with_ids = tmp_path / "ids.jsonl"
    without = tmp_path / "no-ids.jsonl"
    truth = generate(kind, 12, seed=5, out=with_ids, steps=(2, 6))
    generate(kind, 12, seed=5, out=without, session_ids=False, steps=(2, 6))
    a = analyze([with_ids], db=tmp_path / "a.duckdb")
    b = analyze([without], db=tmp_path / "b.duckdb")
    assert b["sessions_inferred"] == b["sessions"] == truth.sessions
    assert b["within_session_tokens"] == a["within_session_tokens"]
    # the inferred partition is the generator's, request by request
    con = connect(tmp_path / "b.duckdb")
    wl = load_workload(con, [0], tokenizer_signature(load_tokenizer()))
    rs = runs(wl)
    codes = assign_sessions(wl, infer_parents(wl, rs, passes(wl, rs))).code
    ids = dict(con.execute("SELECT req_id, request_id FROM requests").fetchall())
    truth_session = {r["id"]: r["id"].rsplit("-", 1)[0] for r in _records(with_ids)}
    pairs = {(int(c), truth_session[ids[int(r)]]) for c, r in zip(codes, wl.req_ids, strict=True)}
    assert len(pairs) == truth.sessions == len({c for c, _ in pairs})


def test_rerun_reuses_the_database(tmp_path):
    log = tmp_path / "agent.jsonl"
    generate("agent", 4, seed=2, out=log, steps=(2, 4))
    first = analyze([log], db=tmp_path / "k.duckdb")
    again = analyze([log], db=tmp_path / "k.duckdb")
    assert again["tokenization"]["requests"] == 0  # nothing re-tokenized
    assert {k: v for k, v in again.items() if k != "tokenization"} == {
        k: v for k, v in first.items() if k != "tokenization"
    }
    everything = analyze(None, db=tmp_path / "k.duckdb")
    assert everything["ideal_hit_rate"] == first["ideal_hit_rate"]


def test_model_sizes_the_working_set(tmp_path):
    log = tmp_path / "chat.jsonl"
    generate("chat", 3, seed=4, out=log)
    s = analyze([log], db=tmp_path / "k.duckdb", model="meta-llama/Llama-3.1-70B-Instruct")
    assert s["kv_bytes_per_token"] == 2 * 80 * 8 * 128 * 2
    assert s["working_set_gb"] == pytest.approx(s["working_set_tokens"] * 327680 / 1e9)
    cfg = tmp_path / "config.json"
    cfg.write_text(
        json.dumps(
            {
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
                "hidden_size": 128,
                "torch_dtype": "float32",
            }
        )
    )
    s = analyze([log], db=tmp_path / "k.duckdb", model=str(cfg))
    assert s["kv_bytes_per_token"] == 2 * 2 * 1 * 64 * 4


def test_observed_hit_rate_next_to_prediction(tmp_path):
    log = tmp_path / "obs.jsonl"
    system = "You are a careful assistant. " * 40
    rows = []
    for i in range(4):
        msgs = [{"role": "system", "content": system}, {"role": "user", "content": f"q{i}"}]
        usage = {
            "prompt_tokens": 300,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 256 if i else 0},
        }
        rows.append(
            {
                "id": f"r{i}",
                "timestamp": 1_700_000_000 + i,
                "request": {"model": "m", "messages": msgs},
                "response": {"usage": usage},
            }
        )
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    s = analyze([log], db=tmp_path / "k.duckdb")
    assert s["observed_requests"] == 4
    assert s["observed_hit_rate"] == pytest.approx(3 * 256 / 1200)
    assert s["predicted_hit_rate_on_observed"] == pytest.approx(s["ideal_hit_rate"])
    assert s["predicted_hit_rate_on_observed"] > 0.5


def test_demo_trace_through_the_cli(tmp_path):
    demo = REPO / "traces" / "demo-agent.jsonl.gz"
    result = CliRunner().invoke(
        app, ["analyze", str(demo), "--db", str(tmp_path / "d.duckdb"), "--json"]
    )
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    truth = json.loads((REPO / "traces" / "demo-agent.truth.json").read_text())
    assert s["requests"] == truth["requests"] and s["sessions"] == truth["sessions"]
    assert s["output_tokens"] == truth["output_tokens"]
    assert 0.5 < s["ideal_hit_rate"] < 1
    table = CliRunner().invoke(app, ["analyze", "--db", str(tmp_path / "d.duckdb")])
    assert table.exit_code == 0 and "ideal token hit rate" in table.stdout


def test_unusable_input_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    r = CliRunner().invoke(app, ["analyze", str(bad), "--db", str(tmp_path / "x.duckdb")])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "bad.csv: no known request format" in r.stderr  # CSV is read; no format fits
    r = CliRunner().invoke(app, ["analyze", "--db", str(tmp_path / "empty.duckdb")])
    assert r.exit_code == 2 and "no ingested files" in r.stderr
    log = tmp_path / "chat.jsonl"
    generate("chat", 2, seed=1, out=log)
    args = ["analyze", str(log), "--db", str(tmp_path / "y.duckdb"), "--model", "no-such-model"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "unknown model 'no-such-model'" in r.stderr
    assert r.stdout == ""


def test_result_is_typed_and_its_json_is_what_the_cli_prints(tmp_path):
    log = tmp_path / "agent.jsonl"
    generate("agent", 5, seed=3, out=log, steps=(2, 5))
    db = tmp_path / "k.duckdb"
    result = analyze([log], db=db, charts=True)
    assert isinstance(result, AnalyzeResult) and isinstance(result.breaks, BreakSummary)
    printed = CliRunner().invoke(
        app, ["analyze", "--db", str(db), "--json", "--html", str(tmp_path / "a.html")]
    )
    assert printed.exit_code == 0, printed.output
    cli = json.loads(printed.stdout)
    mine = orjson.loads(orjson.dumps(result.to_json()))  # plain JSON types only
    assert list(cli) == list(mine)  # same keys, same order
    assert {k: v for k, v in cli.items() if k != "tokenization"} == {
        k: v for k, v in mine.items() if k != "tokenization"
    }
    # the mapping is the JSON view; the attributes are typed
    assert result == result.to_json() and list(result) == list(mine)
    assert result["ideal_hit_rate"] == result.ideal_hit_rate
    assert result["break_summary"]["breaks"] == result.breaks.breaks
    assert result["top_prefixes"][0]["tokens"] == result.top_prefixes[0].prefix.tokens
    # one row per request in processing order, summing to the totals
    frame = result.requests_frame()
    assert len(frame) == result.requests and frame["req_id"].is_unique
    assert frame["ts"].is_monotonic_increasing
    assert frame["n_tokens"].sum() == result.prompt_tokens
    assert frame["cached_tokens"].sum() == result.cached_tokens
    assert frame["within_session_tokens"].sum() == result.within_session_tokens
    assert frame["cross_session_tokens"].sum() == result.cross_session_tokens
    assert frame["output_tokens"].sum() == result.output_tokens
    assert frame["session"].nunique() == result.sessions and not frame["session_inferred"].any()


@pytest.mark.parametrize(
    ("option", "param"),
    [
        ({"block_size": 40}, "block_size"),
        ({"fmt": "csv"}, "fmt"),
        ({"hash_block_size": 0}, "hash_block_size"),
        ({"top": -1}, "top"),
        ({"examples": -2}, "examples"),
        ({"price_input": float("nan")}, "price_input"),
    ],
)
def test_options_are_validated_before_anything_runs(tmp_path, option, param):
    with pytest.raises(OptionError) as info:
        analyze([tmp_path / "missing.jsonl"], db=tmp_path / "x.duckdb", **option)
    assert info.value.param == param and "--" not in str(info.value)  # no CLI flag names
    assert not (tmp_path / "x.duckdb").exists()
    with pytest.raises(OptionError, match="^block_size must be a positive multiple of 16, got 40$"):
        AnalyzeOptions(block_size=40)


# ----------------------------------------------------------------- breaks: recall and their cost


@pytest.fixture(scope="module")
def breaker_modes(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, bool], tuple]:
    """The same agent sessions with breakers=3 (every cause, 3 sessions each) in each breaker
    mode, analyzed with output caching on (the default) and off: by (mode, output_cache),
    (truth, per-request frame indexed by request id, stored breaks)."""
    root = tmp_path_factory.mktemp("modes")
    out = {}
    for mode in ("stable", "once", "recurring"):
        log = root / f"{mode}.jsonl"
        truth = generate("agent", 34, 9, log, steps=(3, 6), breakers=3, breaker_mode=mode)
        db = root / f"{mode}.duckdb"
        for output_cache in (True, False):  # the second run reuses the tokenized database
            frame = analyze([log], db=db, output_cache=output_cache).requests_frame()
            con = connect(db)
            ids = dict(con.execute("SELECT req_id, request_id FROM requests").fetchall())
            breaks = con.execute(
                """SELECT r.request_id, p.request_id, b.cause, b.tokens_lost
                   FROM breaks b JOIN requests r ON r.req_id = b.req_id
                   JOIN requests p ON p.req_id = b.pred_req_id"""
            ).fetchall()
            con.close()
            frame.index = [ids[int(r)] for r in frame["req_id"]]
            out[(mode, output_cache)] = (truth, frame, breaks)
    return out


def _session(request_id: str) -> str:
    return request_id.rsplit("-", 1)[0]


@pytest.mark.parametrize("mode", ["once", "recurring"])
def test_breaks_recall_and_precision_per_cause(breaker_modes, mode):
    """Every injected break found with its cause and predecessor, nothing else (recall and
    precision of each cause >= 0.95; here exactly 1), recurring ones included."""
    truth, _, breaks = breaker_modes[(mode, True)]
    expected = {(b["request_id"], b["predecessor_id"], b["cause"]) for b in truth.breaks}
    found = {row[:3] for row in breaks}
    for cause in {c for _, _, c in expected | found}:
        want = {e for e in expected if e[2] == cause}
        got = {f for f in found if f[2] == cause}
        assert len(want & got) >= 0.95 * len(want), (cause, sorted(want - got))
        assert len(want & got) >= 0.95 * len(got), (cause, sorted(got - want))
    assert found == expected
    per_session = Counter(_session(r) for r, *_ in breaks)
    if mode == "recurring":  # every call from the break on
        k = {_session(b["request_id"]): int(b["request_id"][-3:]) for b in truth.breaks[::-1]}
        for s, n in per_session.items():
            assert n == truth.requests_per_session[f"agent-s{s[-5:]}"] - k[s] > 1


@pytest.mark.parametrize("output_cache", [True, False])
@pytest.mark.parametrize("mode", ["once", "recurring"])
def test_tokens_lost_are_what_the_stable_traffic_saves(breaker_modes, mode, output_cache):
    """The invariant of break attribution, for every breaker kind (a session each), once and
    recurring, with output blocks cached (the default: a break inside the predecessor's answer
    costs those blocks too) and without: the tokens analyze attributes to a session's breaks
    equal the extra tokens the session recomputes compared with the same session whose breaking
    field stayed stable (the generator's stable mode), under the same semantics, within a block
    per request from the first break on (block rounding of prompts the break lengthened or
    shortened). Recomputed tokens (prompt - cached) equal the cached tokens' difference
    whenever a break keeps the prompt's length."""
    truth, frame, breaks = breaker_modes[(mode, output_cache)]
    _, stable, _ = breaker_modes[("stable", output_cache)]
    assert list(stable.index) == list(frame.index)  # the same requests, in the same order
    extra = (frame["n_tokens"] - frame["cached_tokens"]) - (
        stable["n_tokens"] - stable["cached_tokens"]
    )
    lost: Counter = Counter()
    for rid, _, _, tokens in breaks:
        lost[_session(rid)] += tokens
    first: dict[str, int] = {}
    kinds: dict[str, str] = {}
    for b in truth.breaks:
        s = _session(b["request_id"])
        first.setdefault(s, int(b["request_id"][-3:]))
        kinds.setdefault(s, f"{b['cause']}/{b['variant']}")
    assert len(set(kinds.values())) == 24  # 3 sessions per cause: 24 variants
    sessions = Counter(_session(rid) for rid in frame.index)
    by_session: Counter = Counter()
    slack: Counter = Counter()
    for rid, value in extra.items():
        by_session[_session(rid)] += int(value)
    for s in sessions:
        if s not in first:
            assert by_session[s] == 0 and lost[s] == 0, s
            continue
        slack[s] = 16 * (sessions[s] - first[s])
        assert abs(lost[s] - by_session[s]) <= slack[s], (kinds[s], lost[s], by_session[s])
    total = sum(lost.values())
    assert total > 10 * sum(slack.values())  # the bound is tight next to what is lost
    assert total == pytest.approx(sum(by_session.values()), rel=0.01)
