"""Simulation throughput next to libCacheSim: the general engine per policy, the LRU curve, the
concurrent timed engine, and peak RSS at 1M requests.

Workload: the bundled Mooncake conversation trace repeated ``--repeat`` times (default 20),
hash ids and timestamps offset per repeat, so each repeat is new content; the trace and its
database (``bench/out/sim_bench.duckdb``) are built once and reused (``--rebuild`` builds them
again). Measured in one run:

- per policy (lru, fifo, lfu, arc, s3fifo) at 100,000 blocks, one request at a time:
  libCacheSim's ``process_trace`` (the C library, ``pip install libcachesim``) on the same block
  stream (every request's blocks, last to first, read by its C trace reader), kvtool's compiled
  engine alone, the Python engine (``--skip-python``: not), and the whole command
  ``kvtool simulate --db ... --blocks 100000 --policy P --concurrency 1 --json`` (a subprocess:
  start-up, loading, the ideal, JSON, storing the run; the block tree is already stored, by the
  load at the start of this script, as by the first command on a database). libCacheSim's
  figure is its object miss ratio (every block reference counts); kvtool's the token hit rate
  (a request's prefix up to its first miss): the figures differ by definition, and
  libCacheSim's ARC, LFU and S3-FIFO are variants of kvtool's (docs/simulate.md);
- the one-pass LRU curve (its C kernel) for 32 capacities, against libCacheSim's LRU at
  one capacity (10% of the distinct blocks);
- the 3-point concurrent example (``--blocks 2000,20000,200000``, unlimited concurrency): the
  whole command, and the library call with the compiled engine and with the Python engine
  (``SimConfig(compiled=False)``; ``--skip-python``: not).

``--rss`` instead measures the peak RSS of ``kvtool simulate`` on a 1M-request hash trace.

Every time at one capacity is the median of ``--runs`` runs (3 by default; libCacheSim's and
the command's alike, interleaved), as a machine shared with other work moves single runs by
10-20%.

    python bench/simulate_throughput.py [--repeat 20] [--runs 3] [--skip-python] [--rebuild]
    python bench/simulate_throughput.py --rss
"""

from __future__ import annotations

import argparse
import gzip
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
from benchlib import repeated_trace

from kvtool.progress import NullProgress
from kvtool.simulate import Engine, SimConfig, simulate
from kvtool.simulate.compiled_engine import run_compiled
from kvtool.simulate.sweep import lru_curve
from kvtool.store import connect
from kvtool.tiers.spec import Tier
from kvtool.traffic import load_traffic, output_blocks, streams_with_outputs

OUT = Path(__file__).resolve().parent / "out"
TRACES = Path(__file__).resolve().parents[1] / "traces" / "mooncake"


POLICIES = {"lru": "LRU", "fifo": "FIFO", "lfu": "LFU", "arc": "ARC", "s3fifo": "S3FIFO"}
CAPACITY = 100_000  # blocks, the one capacity
POINTS = [2000, 20000, 200000]  # the 3-point concurrent example


def write_oracle(stream: np.ndarray, path: Path) -> None:
    """The block stream as libCacheSim's oracleGeneral binary trace (objects of size 1)."""
    rec = np.dtype([("ts", "<u4"), ("id", "<u8"), ("size", "<u4"), ("next", "<i8")])
    data = np.zeros(len(stream), rec)
    data["ts"] = np.arange(len(stream)) // 1000
    data["id"] = stream.astype(np.uint64)
    data["size"] = 1
    data["next"] = -1
    data.tofile(path)


def libcachesim(policy: str, capacity: int, path: Path) -> tuple[float, float]:
    """(seconds of ``process_trace``, object miss ratio) of libCacheSim's ``policy``."""
    import libcachesim as lcs

    reader = lcs.TraceReader(str(path), lcs.TraceType.ORACLE_GENERAL_TRACE)
    cache = getattr(lcs, policy)(cache_size=capacity)
    t0 = time.perf_counter()
    result = cache.process_trace(reader)
    seconds = time.perf_counter() - t0
    miss = result[0] if isinstance(result, tuple) else result
    return seconds, float(miss)


def whole_command(db: Path, *args: str) -> tuple[float, dict]:
    """(wall seconds, JSON) of ``python -m kvtool simulate --db db *args --json``."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "kvtool", "simulate", "--db", str(db), *args, "--json"],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - t0, orjson.loads(out.stdout)


def _seconds(times: list[float]) -> str:
    return " ".join(f"{t:.2f}" for t in times)


def prepare(repeat: int, rebuild: bool) -> tuple[Path, Path]:
    """The repeated trace and its ingested database, built when missing (or ``rebuild``)."""
    OUT.mkdir(exist_ok=True)
    trace = OUT / f"conversation_x{repeat}.jsonl"
    db = OUT / "sim_bench.duckdb" if repeat == 20 else OUT / f"sim_bench_x{repeat}.duckdb"
    if rebuild or not trace.exists() or not db.exists():
        repeated_trace(TRACES / "conversation_trace.jsonl.gz", repeat, trace)
        db.unlink(missing_ok=True)
        subprocess.run(
            [sys.executable, "-m", "kvtool", "ingest", str(trace), "--db", str(db)],
            check=True,
            capture_output=True,
        )
    return trace, db


def throughput(repeat: int, skip_python: bool, rebuild: bool, runs: int) -> None:
    trace, db = prepare(repeat, rebuild)
    con = connect(db)
    t0 = time.perf_counter()
    wl = load_traffic(
        con, paths=None, tokenizer=None, fmt=None, hash_block_size=512, progress=NullProgress()
    ).wl
    con.close()
    offsets, blocks = streams_with_outputs(wl, 512, output_blocks(wl, True))  # as simulate
    prep = time.perf_counter() - t0
    lookups = len(blocks)
    unique = len(np.unique(blocks))
    print(
        f"workload: {wl.n:,} requests, {lookups:,} block lookups, {unique:,} distinct blocks "
        f"(loading + block streams {prep:.1f} s)"
    )
    # libCacheSim: the same references in kvtool's order (each request's blocks, last first)
    counts = np.diff(offsets)
    order = np.repeat(offsets[1:] - 1, counts) - (
        np.arange(lookups) - np.repeat(offsets[:-1], counts)
    )
    oracle = OUT / "stream.oracleGeneral"
    write_oracle(blocks[order], oracle)
    args = (offsets, blocks, wl.n_tokens, wl.ts, wl.output_tokens)
    tiers = [Tier("hbm", CAPACITY)]
    print(
        f"\none capacity ({CAPACITY:,} blocks), one request at a time; seconds (hit rates: "
        "libCacheSim 1 - object miss ratio, kvtool token hit rate)"
    )
    print(
        f"{'policy':8} {'libCacheSim':>12} {'compiled':>9} {'python':>8} {'command':>8}  "
        "hit rates (libCacheSim / kvtool)"
    )
    for policy, lcs_name in POLICIES.items():
        config = SimConfig(policy=policy, block_size=512, concurrency=1)
        run_compiled(tiers, config, offsets[:3], blocks[: offsets[2]], *(a[:2] for a in args[2:]))
        lcs_times, kernel_times, command_times = [], [], []
        for _ in range(runs):
            lcs_s, miss = libcachesim(lcs_name, CAPACITY, oracle)
            lcs_times.append(lcs_s)
            t0 = time.perf_counter()
            fast = run_compiled(tiers, config, *args)
            kernel_times.append(time.perf_counter() - t0)
            command_s, body = whole_command(
                db, "--blocks", str(CAPACITY), "--policy", policy, "--concurrency", "1"
            )
            command_times.append(command_s)
        times = (lcs_times, kernel_times, command_times)
        lcs_s, kernel_s, command_s = map(statistics.median, times)
        python_s = float("nan")
        if not skip_python:
            t0 = time.perf_counter()
            slow = Engine(tiers, config=config).run(*args)
            python_s = time.perf_counter() - t0
            assert slow.cached_tokens == fast.cached_tokens, policy
            assert np.array_equal(slow.ttft, fast.ttft), policy
        rate = body["token_hit_rate"]  # one point: its keys at the top
        assert rate == fast.token_hit_rate, (policy, rate, fast.token_hit_rate)
        print(
            f"{policy:8} {lcs_s:12.2f} {kernel_s:9.2f} {python_s:8.2f} {command_s:8.2f}  "
            f"{1 - miss:.4f} / {rate:.4f}   ({lookups / kernel_s / 1e6:.1f} M lookups/s "
            f"compiled, {lookups / lcs_s / 1e6:.1f} M/s libCacheSim; runs: libCacheSim "
            f"{_seconds(lcs_times)}, command {_seconds(command_times)})"
        )
    capacity = unique // 10
    lcs_s, _ = libcachesim("LRU", capacity, oracle)
    lru_curve(offsets[:3], blocks[: offsets[2]], wl.n_tokens[:2], 512)  # warm-up
    caps = np.unique(np.geomspace(16, unique, 32).astype(np.int64))
    t0 = time.perf_counter()
    curve = lru_curve(offsets, blocks, wl.n_tokens, 512)
    tokens = curve.cached_tokens(caps)
    one_pass = time.perf_counter() - t0
    print(
        f"\none-pass LRU curve (C), {len(caps)} capacities: {one_pass:.2f} s = "
        f"{lookups / one_pass / 1e6:.1f} M lookups/s for all of them; against libCacheSim's "
        f"LRU at one capacity ({capacity:,} blocks): {lcs_s:.2f} s ({lcs_s / one_pass:.1f}x); "
        f"hit rate at the largest capacity {tokens[-1] / wl.n_tokens.sum():.4f}"
    )
    blocks_arg = ",".join(map(str, POINTS))
    command_s, body = whole_command(db, "--blocks", blocks_arg)
    rates = [p["token_hit_rate"] for p in body["points"]]
    timings = {}
    for compiled in (True, False)[: 1 if skip_python else 2]:
        t0 = time.perf_counter()
        result = simulate(None, db=db, blocks=POINTS, config=SimConfig(compiled=compiled))
        timings[compiled] = time.perf_counter() - t0
        assert [p.token_hit_rate for p in result.points] == rates
    python = f"{timings[False]:.1f} s" if False in timings else "skipped"
    print(
        f"\n3-point concurrent example (--blocks {blocks_arg}, unlimited concurrency, LRU): "
        f"whole command {command_s:.1f} s; library call compiled {timings[True]:.1f} s, "
        f"Python engine {python}"
        + (f" ({timings[False] / timings[True]:.1f}x)" if False in timings else "")
        + f"; hit rates {', '.join(f'{r:.4f}' for r in rates)}"
    )


def rss(requests: int) -> None:
    OUT.mkdir(exist_ok=True)
    trace = OUT / "mooncake_1m.jsonl"
    src = TRACES / "conversation_trace.jsonl.gz"
    repeat = -(-requests // len(gzip.decompress(src.read_bytes()).splitlines()))
    n = repeated_trace(src, repeat, trace)
    db = OUT / "rss.duckdb"
    db.unlink(missing_ok=True)
    runs = [
        ["ingest", str(trace)],
        ["simulate", "--blocks", "20000", "--concurrency", "1"],
        ["simulate", "--blocks", "2000,20000,200000", "--concurrency", "1"],
    ]
    for args in runs:
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "kvtool", *args, "--db", str(db), "--json"],
            check=True,
            capture_output=True,
        )
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(
            f"kvtool {' '.join(args)} ({n:,} requests): {time.perf_counter() - t0:.1f} s, "
            f"peak RSS of the runs so far {peak:,.0f} MB"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3, help="median of this many runs per figure")
    ap.add_argument("--rss", action="store_true", help="peak RSS on a 1M-request trace instead")
    ap.add_argument("--skip-python", action="store_true", help="skip the Python engine (slow)")
    ap.add_argument("--rebuild", action="store_true", help="build the trace and database again")
    args = ap.parse_args()
    if not TRACES.exists():
        sys.exit(f"needs the Mooncake traces at {TRACES}")
    if args.rss:
        rss(1_000_000)
    else:
        throughput(args.repeat, args.skip_python, args.rebuild, max(1, args.runs))


if __name__ == "__main__":
    main()
