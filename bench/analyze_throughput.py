"""Analyze throughput and peak RSS on a generated agent workload, next to the naive baseline.

Naive baseline (measured in the same run, same tokenizer): render every request's full prompt and
tokenize it with ``Tokenizer.encode_batch`` — what a script without segment reuse does. Only the
tokenizer calls are timed for the baseline; kvtool is timed end to end as a user runs it.

    python bench/analyze_throughput.py [--sessions 270] [--min-steps 20] [--max-steps 40]
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson

from kvtool.generate import generate
from kvtool.tokenize import load_tokenizer, tokenize_requests
from kvtool.tokenize.template import make_template, render_prompt

OUT = Path(__file__).resolve().parent / "out"


def run_child(args: list[str]) -> tuple[float, dict | None, int]:
    """(wall seconds, parsed JSON stdout or None, peak RSS in MB) of a kvtool subprocess."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "kvtool", *args], capture_output=True, text=True, check=True
    )
    wall = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    out = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else None
    return wall, out, rss_mb


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


def breakdown(db: Path) -> None:
    """Where the time of tokenize + analyze goes, in process, on a freshly ingested db."""
    from kvtool.analyze import summarize
    from kvtool.store import connect
    from kvtool.traffic import load_workload

    con = connect(db)
    t0 = time.perf_counter()
    bundle = load_tokenizer()
    t1 = time.perf_counter()
    encoder = bundle.encoder
    batch = encoder._batch
    spent = 0.0

    def timed(*a: object, **k: object) -> object:
        nonlocal spent
        start = time.perf_counter()
        out = batch(*a, **k)
        spent += time.perf_counter() - start
        return out

    encoder._batch = timed
    report = tokenize_requests(con, bundle)
    t2 = time.perf_counter()
    wl = load_workload(con, [0], report.signature)
    summarize(wl, 16)
    t3 = time.perf_counter()
    print(
        f"breakdown: tokenizer load {t1 - t0:.2f} s; tokenize {t2 - t1:.2f} s, of which the "
        f"tokenizer's own batch calls {spent:.2f} s; load + statistics {t3 - t2:.2f} s"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=270)
    ap.add_argument("--min-steps", type=int, default=20)
    ap.add_argument("--max-steps", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-baseline", action="store_true")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    log = OUT / "agent.jsonl"
    t0 = time.perf_counter()
    truth = generate("agent", args.sessions, args.seed, log, steps=(args.min_steps, args.max_steps))
    gen_s = time.perf_counter() - t0
    size_mb = log.stat().st_size / 1e6
    print(
        f"workload: {truth.requests:,} requests, {truth.sessions} sessions, "
        f"{size_mb:,.0f} MB JSONL (generated in {gen_s:.1f} s)"
    )

    db = OUT / "bench.duckdb"
    db.unlink(missing_ok=True)
    wall, summary, rss = run_child(["analyze", str(log), "--db", str(db), "--json"])
    assert summary is not None
    logical = summary["prompt_tokens"]
    tok = summary["tokenization"]
    print(
        f"logical prompt tokens: {logical:,}; tokens run through the tokenizer: "
        f"{tok['tokens_encoded']:,} ({tok['segments_encoded']:,} distinct segments)"
    )
    print(
        f"kvtool analyze (ingest + tokenize + analyze, fresh db): {wall:.1f} s = "
        f"{logical / wall / 1e6:.2f} M logical tokens/s; peak RSS {rss:,} MB"
    )
    db.unlink(missing_ok=True)
    subprocess.run(
        [sys.executable, "-m", "kvtool", "ingest", str(log), "--db", str(db), "--json"],
        capture_output=True,
        check=True,
    )
    shutil.copy(db, OUT / "breakdown.duckdb")
    wall2, _, _ = run_child(["analyze", "--db", str(db), "--json"])
    print(
        f"kvtool analyze on an ingested db (tokenize + analyze): {wall2:.1f} s = "
        f"{logical / wall2 / 1e6:.2f} M logical tokens/s"
    )
    breakdown(OUT / "breakdown.duckdb")
    if args.skip_baseline:
        return
    tokens, tok_s, render_s = naive_baseline(log)
    assert tokens == logical, (tokens, logical)
    print(
        f"naive baseline: {tokens:,} tokens in {tok_s:.1f} s of encode_batch = "
        f"{tokens / tok_s / 1e6:.2f} M tokens/s (+{render_s:.1f} s rendering, not counted)"
    )
    print(
        f"speed-up vs naive: end to end {tok_s / wall:.1f}x; on an ingested db {tok_s / wall2:.1f}x"
    )


if __name__ == "__main__":
    main()
