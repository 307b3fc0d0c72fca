"""Prefix-aware sampling against exact simulation: the LRU curve's error and the time it saves.

Workloads (built once under ``bench/out/`` and reused):

- ``mooncake``: the bundled Mooncake conversation trace ``--repeat`` times (default 20 and 100:
  240,620 and 1,203,100 requests), hash ids and timestamps offset per copy (x20: the database
  of ``bench/simulate_throughput.py``);
- ``agent``: generated agent traffic, ``kvtool generate --kind agent --sessions 5000 --seed 3
  --steps 5,35`` (about 100,000 requests; tokenized on the first run, which takes minutes).

For each, the 32-point LRU curve (one request at a time, capacities from 16 blocks to the
distinct blocks, geometric) exactly and with ``--sample R`` (default 0.01, one salt), through
the library as a command calls it. Printed per capacity: both hit rates, the estimate's
standard error and the rate the point was sampled at (``sample.point_rate``: raised for a
point whose sampled cache would not hold the largest request); then the mean absolute error
over every point and over the points sampled at R itself; then, on the points sampled at R,
the error of ``--draws`` independent draws (``--sample-seed``) and how their error bars
compare with their spread; then LRU (exact: the one-pass curve) and FIFO (exact: each point
simulated directly) exactly and sampled, with the median seconds of the simulate stage over
``--repeats`` runs of each (block streams, the ideal, the points; loading the requests and
storing the run excluded, the same for both).

    python bench/sample_accuracy.py [--rate 0.01] [--salts 1] [--draws 10] [--repeats 5]
        [--repeat 20,100] [--only mooncake|agent]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
from benchlib import StageTimer, agent_log, repeated_trace

from kvtool.progress import NullProgress
from kvtool.simulate import SimConfig, simulate
from kvtool.store import connect
from kvtool.traffic import block_streams, load_traffic

OUT = Path(__file__).resolve().parent / "out"
TRACES = Path(__file__).resolve().parents[1] / "traces" / "mooncake"


def mooncake_db(repeat: int) -> Path:
    db = OUT / ("sim_bench.duckdb" if repeat == 20 else f"sim_bench_x{repeat}.duckdb")
    if not db.exists():
        trace = OUT / f"conversation_x{repeat}.jsonl"
        repeated_trace(TRACES / "conversation_trace.jsonl.gz", repeat, trace)
        _kvtool("ingest", str(trace), "--db", str(db))
    return db


def agent_db(sessions: int) -> Path:
    db = OUT / f"agent_{sessions}.duckdb"
    if not db.exists():
        log = agent_log(OUT / f"agent_{sessions}.jsonl", sessions, "--steps", "5,35")
        _kvtool("ingest", str(log), "--db", str(db))
    return db


def _kvtool(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "kvtool", *args], check=True, capture_output=True)


def _run(db: Path, caps: list[int], config: SimConfig, repeat: int = 1) -> tuple[list, float]:
    """The points, and the median seconds of the simulate stage over ``repeat`` runs."""
    seconds = []
    for _ in range(repeat):
        timer = StageTimer()
        result = simulate(None, db=db, blocks=caps, config=config, progress=timer)
        seconds.append(timer.seconds.get("simulate", float("nan")))
    return list(result.points), float(np.median(seconds))


def compare(name: str, db: Path, rate: float, salts: int, draws: int, repeats: int) -> None:
    con = connect(db)
    traffic = load_traffic(
        con, paths=None, tokenizer=None, fmt=None, hash_block_size=512, progress=NullProgress()
    )
    con.close()
    wl = traffic.wl
    offsets, stream = block_streams(wl, wl.base if wl.kind == "hash" else 16)
    distinct = max(len(np.unique(stream)), 32)
    caps = [int(c) for c in np.unique(np.geomspace(16, distinct, 32).astype(np.int64))]
    sampled_config = SimConfig(concurrency=1, sample=rate, sample_salts=salts)
    exact, exact_s = _run(db, caps, SimConfig(concurrency=1))
    est, est_s = _run(db, caps, sampled_config)
    print(
        f"\n== {name}: {wl.n:,} requests, {len(stream):,} block lookups, {distinct:,} distinct "
        f"blocks; LRU, one request at a time =="
    )
    print(f"{'blocks':>10} {'exact':>8} {'sampled':>8} {'error':>7} {'rate':>6} {'diff':>8}")
    diffs, at_rate = [], []
    for cap, e, s in zip(caps, exact, est, strict=True):
        d = s.token_hit_rate - e.token_hit_rate
        diffs.append(abs(d))
        if s.sample.rate == rate:
            at_rate.append(cap)
        print(
            f"{cap:>10,} {e.token_hit_rate:8.4f} {s.token_hit_rate:8.4f} "
            f"{s.sample.token_hit_rate_error or 0:7.4f} {s.sample.rate:6.3f} {d:+8.4f}"
        )
    mae_rate = np.mean([x for c, x in zip(caps, diffs, strict=True) if c in at_rate])
    print(
        f"mean absolute error: {np.mean(diffs):.4f} over all {len(caps)} points, "
        f"{mae_rate:.4f} over the {len(at_rate)} sampled at {rate}; simulate stage of the whole "
        f"curve: exact {exact_s:.2f} s, sampled {est_s:.2f} s (the smaller capacities sampled "
        "at higher rates, the smallest whole)"
    )
    if not at_rate:
        return
    exact_at = [e for c, e in zip(caps, exact, strict=True) if c in at_rate]
    maes, estimates, errors = [], [], []
    for seed in range(draws):  # independent draws of the samples (--sample-seed)
        config = SimConfig(concurrency=1, sample=rate, sample_salts=salts, sample_seed=seed)
        drawn, _ = _run(db, at_rate, config)
        pairs = zip(exact_at, drawn, strict=True)
        maes.append(float(np.mean([abs(s.token_hit_rate - e.token_hit_rate) for e, s in pairs])))
        estimates.append([s.token_hit_rate for s in drawn])
        errors.append([s.sample.token_hit_rate_error or 0.0 for s in drawn])
    print(
        f"lru on the {len(at_rate)} points sampled at {rate}, {draws} draws of {salts} salts "
        f"(--sample-seed 0..{draws - 1}): mean absolute error per draw "
        f"{' '.join(f'{m:.4f}' for m in maes)}; mean {np.mean(maes):.4f}, largest {max(maes):.4f}"
    )
    if draws > 1:  # the error bar against the spread of the draws, point by point
        est, err = np.array(estimates), np.array(errors)
        truth = np.array([e.token_hit_rate for e in exact_at])
        spread = est.std(axis=0, ddof=1)
        varied = spread > 1e-4  # points where the draws differ (a large cache hits its ideal)
        within = np.abs(est - truth) <= 2 * err
        print(
            f"error bar on the {int(varied.sum())} points where the draws differ: reported "
            f"{err.mean(axis=0)[varied].mean():.4f} on average, spread of the draws "
            f"{spread[varied].mean():.4f}; the exact value within two error bars in "
            f"{within[:, varied].mean():.0%} of draws and points"
        )
    for policy in ("lru", "fifo"):
        exact_pts, e_s = _run(db, at_rate, SimConfig(policy=policy, concurrency=1), repeats)
        sampled = SimConfig(policy=policy, concurrency=1, sample=rate, sample_salts=salts)
        est_pts, s_s = _run(db, at_rate, sampled, repeats)
        pairs = zip(exact_pts, est_pts, strict=True)
        mae = np.mean([abs(s.token_hit_rate - e.token_hit_rate) for e, s in pairs])
        how = "the one-pass curve" if policy == "lru" else "each point simulated directly"
        print(
            f"{policy} on the {len(at_rate)} points sampled at {rate} ({how}): mean absolute "
            f"error {mae:.4f}; simulate stage, median of {repeats} runs: exact {e_s:.3f} s, "
            f"sampled {s_s:.3f} s ({e_s / s_s:.1f}x)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=0.01)
    ap.add_argument("--salts", type=int, default=1)
    ap.add_argument("--draws", type=int, default=10, help="independent draws at R")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of each, median")
    ap.add_argument("--repeat", default="20,100", help="copies of the Mooncake trace, a comma list")
    ap.add_argument("--sessions", type=int, default=5000, help="generated agent sessions")
    ap.add_argument("--only", choices=("mooncake", "agent"))
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    if args.only in (None, "mooncake"):
        for repeat in (int(r) for r in args.repeat.split(",") if r.strip()):
            name = f"Mooncake conversation x{repeat}"
            compare(name, mooncake_db(repeat), args.rate, args.salts, args.draws, args.repeats)
    if args.only in (None, "agent"):
        db = agent_db(args.sessions)
        name = f"generated agent traffic, {args.sessions} sessions"
        compare(name, db, args.rate, args.salts, args.draws, args.repeats)


if __name__ == "__main__":
    main()
