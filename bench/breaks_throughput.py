"""Break detection cost on a generated agent workload with injected breakers, next to a naive
baseline measured in the same run.

Naive baseline: for every request, tokenize its full prompt and its session predecessor's in one
call each (``Tokenizer.encode_batch``) and find the first differing token — the obvious way to
locate breaks without kvtool's structural diff and segment cache. Only tokenizer calls and the
comparison are timed for it. kvtool is timed on the same database: the whole break pass
(predecessors, diffs, token positions, losses, diff text) after tokenization.

    python bench/breaks_throughput.py [--sessions 120] [--breakers 8]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import orjson
from benchlib import StageTimer

from kvtool.analyze import analyze
from kvtool.analyze.breaks import detect_breaks
from kvtool.generate import generate
from kvtool.store import connect
from kvtool.tokenize import load_tokenizer, tokenizer_signature
from kvtool.tokenize.template import make_template, render_prompt
from kvtool.traffic import load_workload

OUT = Path(__file__).resolve().parent / "out"


def naive(log: Path, batch: int = 128) -> tuple[int, float, int]:
    """(pairs compared, seconds, pairs that diverge before the predecessor's end)."""
    bundle = load_tokenizer()
    template = make_template(bundle)
    last: dict[str, str] = {}
    pairs: list[tuple[str, str]] = []
    for line in log.read_bytes().splitlines():
        rec = orjson.loads(line)
        body = rec["request"]
        text = render_prompt(template, body["messages"], body.get("tools"))
        prev = last.get(rec["session_id"])
        if prev is not None:
            pairs.append((prev, text))
        last[rec["session_id"]] = text
    seconds = 0.0
    diverged = 0
    for start in range(0, len(pairs), batch):
        chunk = pairs[start : start + batch]
        t0 = time.perf_counter()
        encs = bundle.tokenizer.encode_batch(
            [t for pair in chunk for t in pair], add_special_tokens=False
        )
        for k in range(len(chunk)):
            a, b = np.array(encs[2 * k].ids), np.array(encs[2 * k + 1].ids)
            m = min(len(a), len(b))
            mismatch = np.flatnonzero(a[:m] != b[:m])
            diverged += bool(len(mismatch)) and int(mismatch[0]) < len(a) - 1
        seconds += time.perf_counter() - t0
    return len(pairs), seconds, diverged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=120)
    ap.add_argument("--breakers", type=int, default=8, help="sessions per cause")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    log = OUT / "breakers.jsonl"
    truth = generate("agent", args.sessions, args.seed, log, steps=(20, 40), breakers=args.breakers)
    db = OUT / "breakers.duckdb"
    db.unlink(missing_ok=True)
    timer = StageTimer()
    t0 = time.perf_counter()
    summary = analyze([log], db=db, progress=timer)
    total = time.perf_counter() - t0
    print(
        f"workload: {truth.requests:,} requests, {truth.sessions} sessions, "
        f"{summary.prompt_tokens:,} prompt tokens, {len(truth.breaks):,} injected breaks"
    )
    stages = ", ".join(f"{name} {sec:.2f} s" for name, sec in timer.seconds.items())
    print(f"kvtool analyze end to end: {total:.2f} s ({stages})")

    con = connect(db)
    bundle = load_tokenizer()
    signature = tokenizer_signature(bundle)
    wl = load_workload(con, [0], signature)
    pairs = 0

    def count(done: int, _total: int) -> None:
        nonlocal pairs
        pairs = done

    t0 = time.perf_counter()
    breaks = detect_breaks(con, wl, bundle, summary.tokenization.mode, 16, count)
    kv_s = time.perf_counter() - t0
    con.close()
    assert len(breaks) == len(truth.breaks), (len(breaks), len(truth.breaks))
    print(
        f"kvtool break pass alone, new process state (cold segment cache): {len(breaks):,} "
        f"breaks from {pairs:,} candidate pairs in {kv_s:.2f} s"
    )
    n_pairs, naive_s, diverged = naive(log)
    print(
        f"naive baseline: {n_pairs:,} consecutive pairs tokenized whole in {naive_s:.1f} s, "
        f"{diverged:,} diverge (positions only, no causes)"
    )
    warm = timer.seconds["breaks"]
    print(
        f"speed-up of the break pass vs naive: {naive_s / warm:.0f}x inside analyze, "
        f"{naive_s / kv_s:.0f}x cold"
    )


if __name__ == "__main__":
    main()
