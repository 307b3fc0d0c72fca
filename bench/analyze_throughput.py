"""Analyze throughput and peak RSS on a generated coding-agent workload, next to the naive baseline.

The workload (default about 100 M logical prompt tokens): agent sessions of 30-80 tool-calling
steps whose tool results run from 100 to 3,000 words with a heavy tail (file reads, test logs and
diffs of up to several thousand tokens), as ``kvtool.generate.generate("agent", ...,
tool_output=...)`` writes them.

Naive baseline (measured in the same run, same tokenizer): render every request's full prompt and
tokenize it with ``Tokenizer.encode_batch`` in batches of 256, what a script without segment
reuse does. Only the tokenizer calls are timed for the baseline; kvtool is timed end to end as a
user runs it: ``kvtool analyze log.jsonl --db fresh.duckdb --json`` as a subprocess (start-up,
ingest, tokenize, analysis), its peak RSS read from the child's own rusage.

    python bench/analyze_throughput.py [--sessions 40] [--min-steps 30] [--max-steps 80]
        [--tool-output 100 3000] [--skip-baseline] [--levers]

Smaller runs: ``--sessions 8`` (about 20 M tokens). The goal line compares with 20x.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
from benchlib import StageTimer

from kvtool.generate import generate
from kvtool.tokenize import load_tokenizer
from kvtool.tokenize.template import make_template, render_prompt

OUT = Path(__file__).resolve().parent / "out"
GOAL = 20.0  # x naive, end to end
RSS_BUDGET_MB = 2048


def peak_rss_mb(
    args: list[str], env: dict[str, str] | None = None
) -> tuple[float, dict | None, int]:
    """(wall seconds, parsed JSON stdout or None, peak RSS in MB) of one kvtool subprocess; the
    RSS is this child's alone (``os.wait4`` reaps it)."""
    cmd = [sys.executable, "-m", "kvtool"]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen([*cmd, *args], stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise SystemExit(f"kvtool {' '.join(args)} failed: {err.read().decode()[-2000:]}")
        text = out.read().decode()
    out = json.loads(text) if text.strip().startswith("{") else None
    return wall, out, usage.ru_maxrss // 1024


def levers(log: Path, db: Path, repeats: int = 3) -> None:
    """Each lever of the end-to-end time, measured as an A/B of whole runs (best of
    ``repeats``, interleaved so that a busy machine hurts both sides alike), and the JSON
    readers against the line-by-line parse ingest uses."""

    run = ["analyze", str(log), "--db", str(db), "--json"]
    envs = {
        "as shipped (tokenizer threads: one per core)": None,
        "tokenizer on one thread (RAYON_NUM_THREADS=1)": {**os.environ, "RAYON_NUM_THREADS": "1"},
    }
    rows: dict[str, list[float]] = {name: [] for name in envs}
    for _ in range(repeats):  # interleaved
        for name, env in envs.items():
            db.unlink(missing_ok=True)
            rows[name].append(peak_rss_mb(run, env)[0])
    print(f"  levers (load average {os.getloadavg()[0]:.1f}):")
    for name, times in rows.items():
        sec = min(times)
        print(f"  lever: {name}: {sec:.2f} s end to end (best of {repeats})")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import kvtool"], check=True)
    print(f"  lever: start-up: python -c 'import kvtool' {time.perf_counter() - start:.2f} s")
    start = time.perf_counter()
    with open(log, "rb") as f:
        for line in f:
            orjson.loads(line)
    parse = time.perf_counter() - start
    import duckdb
    import pyarrow.json as pj

    start = time.perf_counter()
    table = pj.read_json(log, read_options=pj.ReadOptions(block_size=1 << 26))
    arrow = time.perf_counter() - start
    start = time.perf_counter()
    table.column("request").to_pylist()
    arrow_py = time.perf_counter() - start
    start = time.perf_counter()
    duckdb.sql(
        f"select count(*) from read_json('{log}', format='newline_delimited', "
        "maximum_object_size=1000000000)"
    ).fetchall()
    duck = time.perf_counter() - start
    print(
        f"  lever: JSON parsing of the file: orjson line by line {parse:.2f} s; pyarrow.json "
        f"{arrow:.2f} s (+{arrow_py:.2f} s to Python objects); DuckDB read_json (count only) "
        f"{duck:.2f} s"
    )


def naive_baseline(path: Path, batch: int = 256) -> tuple[int, float, float]:
    """(tokens, seconds in tokenizer calls, seconds rendering) tokenizing every full prompt."""
    bundle = load_tokenizer()
    template = make_template(bundle)
    opener = gzip.open if path.suffix == ".gz" else open
    tokens = 0
    tok_s = render_s = 0.0
    texts: list[str] = []

    def flush() -> None:
        nonlocal tokens, tok_s
        t0 = time.perf_counter()
        encs = bundle.tokenizer.encode_batch(texts, add_special_tokens=False)
        tok_s += time.perf_counter() - t0
        tokens += sum(len(e.ids) for e in encs)
        texts.clear()

    with opener(path, "rb") as f:
        for line in f:
            body = orjson.loads(line)["request"]
            t0 = time.perf_counter()
            texts.append(render_prompt(template, body["messages"], body.get("tools")))
            render_s += time.perf_counter() - t0
            if len(texts) >= batch:
                flush()
    if texts:
        flush()
    return tokens, tok_s, render_s


def tool_output_tokens(path: Path) -> np.ndarray:
    """Token counts of every distinct tool result of the file (each session's last request holds
    all of its session's results)."""
    last: dict[str, list[dict]] = {}
    with open(path, "rb") as f:
        for line in f:
            rec = orjson.loads(line)
            last[rec["session_id"]] = rec["request"]["messages"]
    texts = [m["content"] for msgs in last.values() for m in msgs if m.get("role") == "tool"]
    tok = load_tokenizer().tokenizer
    encs = tok.encode_batch_fast(texts, add_special_tokens=False)
    return np.array([len(e.ids) for e in encs])


def breakdown(log: Path, db: Path) -> None:
    """Where the time of one analyze goes, in process on a fresh database (imports excluded:
    the start-up line measures them)."""
    from kvtool.analyze import analyze
    from kvtool.tokenize.segments import SegmentEncoder

    spent = 0.0
    encode = SegmentEncoder.encode_segments

    def timed(self: SegmentEncoder, segments: list[str]) -> None:
        nonlocal spent
        start = time.perf_counter()
        encode(self, segments)
        spent += time.perf_counter() - start

    SegmentEncoder.encode_segments = timed  # type: ignore[method-assign]
    db.unlink(missing_ok=True)
    timer = StageTimer()
    t0 = time.perf_counter()
    analyze([log], db=db, progress=timer)
    total = time.perf_counter() - t0
    SegmentEncoder.encode_segments = encode  # type: ignore[method-assign]
    stages = "; ".join(f"{k} {v:.2f} s" for k, v in timer.seconds.items())
    print(f"breakdown (in process, {total:.2f} s): {stages}")
    print(f"  of tokenize: segment encoding (tokenizer batch calls) {spent:.2f} s")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kvtool", "--help"], capture_output=True, check=True)
    print(f"  start-up (python -m kvtool --help): {time.perf_counter() - start:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=40)
    ap.add_argument("--min-steps", type=int, default=30)
    ap.add_argument("--max-steps", type=int, default=80)
    ap.add_argument("--tool-output", type=int, nargs=2, default=(100, 3000), metavar=("LO", "HI"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--levers", action="store_true", help="A/B each lever (several more runs)")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    log = OUT / "agent.jsonl"
    t0 = time.perf_counter()
    truth = generate(
        "agent",
        args.sessions,
        args.seed,
        log,
        steps=(args.min_steps, args.max_steps),
        tool_output=tuple(args.tool_output),
    )
    gen_s = time.perf_counter() - t0
    size_mb = log.stat().st_size / 1e6
    tools = tool_output_tokens(log)
    print(
        f"workload: {truth.requests:,} requests, {truth.sessions} sessions of "
        f"{args.min_steps}-{args.max_steps} steps, {size_mb:,.0f} MB JSONL "
        f"(generated in {gen_s:.1f} s)"
    )
    print(
        f"tool results: {len(tools):,}, tokens mean {tools.mean():,.0f}, median "
        f"{np.median(tools):,.0f}, p90 {np.percentile(tools, 90):,.0f}, max {tools.max():,}"
    )

    db = OUT / "bench.duckdb"
    db.unlink(missing_ok=True)
    wall, summary, rss = peak_rss_mb(["analyze", str(log), "--db", str(db), "--json"])
    assert summary is not None
    logical = summary["prompt_tokens"]
    tok = summary["tokenization"]
    print(
        f"logical prompt tokens: {logical:,}; distinct, run through the tokenizer: "
        f"{tok['tokens_encoded']:,} ({tok['segments_encoded']:,} segments; "
        f"{logical / tok['tokens_encoded']:.1f}x fewer)"
    )
    print(
        f"kvtool analyze end to end (start-up + ingest + tokenize + analysis, fresh db): "
        f"{wall:.2f} s = {logical / wall / 1e6:.2f} M logical tokens/s; peak RSS {rss:,} MB "
        f"(budget {RSS_BUDGET_MB:,} MB; load average {os.getloadavg()[0]:.1f})"
    )
    wall2, _, rss2 = peak_rss_mb(["analyze", "--db", str(db), "--json"])
    print(f"kvtool analyze on the ingested, tokenized db: {wall2:.2f} s; peak RSS {rss2:,} MB")
    db.unlink(missing_ok=True)
    subprocess.run(
        [sys.executable, "-m", "kvtool", "ingest", str(log), "--db", str(db), "--json"],
        capture_output=True,
        check=True,
    )
    wall3, _, _ = peak_rss_mb(["analyze", "--db", str(db), "--json"])
    print(
        f"kvtool analyze on an ingested db (tokenize + analysis): {wall3:.2f} s = "
        f"{logical / wall3 / 1e6:.2f} M logical tokens/s"
    )
    breakdown(log, OUT / "breakdown.duckdb")
    if args.levers:
        levers(log, OUT / "levers.duckdb")
    if args.skip_baseline:
        return
    tokens, tok_s, render_s = naive_baseline(log)
    assert tokens == logical, (tokens, logical)
    print(
        f"naive baseline: {tokens:,} tokens in {tok_s:.1f} s of encode_batch (batches of 256) = "
        f"{tokens / tok_s / 1e6:.2f} M tokens/s (+{render_s:.1f} s rendering, not counted)"
    )
    ratio = tok_s / wall
    print(
        f"speed-up vs naive: end to end {ratio:.1f}x (goal {GOAL:.0f}x: "
        f"{'met' if ratio >= GOAL else 'NOT met'}); on an ingested db {tok_s / wall3:.1f}x; "
        f"peak RSS {'within' if rss <= RSS_BUDGET_MB else 'OVER'} {RSS_BUDGET_MB:,} MB"
    )


if __name__ == "__main__":
    main()
