"""LRU simulation throughput next to libCacheSim, the 32-point curve, and peak RSS at 1M requests.

Workload: the bundled Mooncake conversation trace repeated ``--repeat`` times (default 20),
hash ids and timestamps offset per repeat, so each repeat is new content. Measured in one run:

- kvtool direct LRU at one capacity (the general engine), in block lookups per second;
- kvtool one-pass LRU curve (prefix-aware stack distances, compiled with numba) for 32 capacities;
- libCacheSim's LRU (the C library, `pip install libcachesim`) at the same capacity on the same
  block stream (every request's blocks, last to first), read by its C trace reader.

``--rss`` instead measures the peak RSS of ``kvtool simulate`` on a 1M-request hash trace.

    python bench/simulate_throughput.py [--repeat 20] [--rss]
"""

from __future__ import annotations

import argparse
import gzip
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson

from kvtool.progress import NullProgress
from kvtool.simulate import Engine, SimConfig
from kvtool.simulate.sweep import lru_curve
from kvtool.store import connect
from kvtool.tiers.spec import Tier
from kvtool.traffic import block_streams, load_traffic

OUT = Path(__file__).resolve().parent / "out"
TRACES = Path(__file__).resolve().parents[1] / "traces" / "mooncake"


def repeated_trace(src: Path, repeat: int, out: Path) -> int:
    """Write ``src`` ``repeat`` times with ids and timestamps offset per copy; returns lines."""
    recs = [orjson.loads(line) for line in gzip.decompress(src.read_bytes()).splitlines()]
    span = max(max(r["hash_ids"]) for r in recs) + 1
    dt = recs[-1]["timestamp"] + 1
    with out.open("wb") as f:
        for k in range(repeat):
            for r in recs:
                rec = {**r, "timestamp": r["timestamp"] + k * dt}
                rec["hash_ids"] = [h + k * span for h in r["hash_ids"]]
                f.write(orjson.dumps(rec) + b"\n")
    return len(recs) * repeat


def libcachesim_lru(stream: np.ndarray, capacity: int, path: Path) -> tuple[float, float]:
    """(seconds, miss ratio) of libCacheSim's LRU over the block stream (objects of size 1)."""
    import libcachesim as lcs

    rec = np.dtype([("ts", "<u4"), ("id", "<u8"), ("size", "<u4"), ("next", "<i8")])
    data = np.zeros(len(stream), rec)
    data["ts"] = np.arange(len(stream)) // 1000
    data["id"] = stream.astype(np.uint64)
    data["size"] = 1
    data["next"] = -1
    data.tofile(path)
    reader = lcs.TraceReader(str(path), lcs.TraceType.ORACLE_GENERAL_TRACE)
    cache = lcs.LRU(cache_size=capacity)
    t0 = time.perf_counter()
    result = cache.process_trace(reader)
    seconds = time.perf_counter() - t0
    miss = result[0] if isinstance(result, tuple) else result
    return seconds, float(miss)


def throughput(repeat: int) -> None:
    OUT.mkdir(exist_ok=True)
    trace = OUT / f"conversation_x{repeat}.jsonl"
    n = repeated_trace(TRACES / "conversation_trace.jsonl.gz", repeat, trace)
    db = OUT / "sim_bench.duckdb"
    db.unlink(missing_ok=True)
    con = connect(db)
    t0 = time.perf_counter()
    wl = load_traffic(
        con, paths=[trace], tokenizer=None, fmt=None, hash_block_size=512, progress=NullProgress()
    ).wl
    offsets, blocks = block_streams(wl, 512)
    prep = time.perf_counter() - t0
    lookups = len(blocks)
    unique = len(np.unique(blocks))
    capacity = unique // 10
    print(
        f"workload: {n:,} requests, {lookups:,} block lookups, {unique:,} distinct blocks "
        f"(ingest + block streams {prep:.1f} s); capacity {capacity:,} blocks (10%)"
    )
    # libCacheSim: the same references in kvtool's order (each request's blocks, last first)
    order = np.concatenate(
        [np.arange(offsets[i + 1] - 1, offsets[i] - 1, -1) for i in range(len(offsets) - 1)]
    )
    lcs_s, lcs_miss = libcachesim_lru(blocks[order], capacity, OUT / "stream.oracleGeneral")
    print(
        f"libCacheSim LRU (C), one capacity: {lcs_s:.2f} s = {lookups / lcs_s / 1e6:.1f} M "
        f"lookups/s (request miss ratio {lcs_miss:.4f})"
    )
    t0 = time.perf_counter()
    engine = Engine([Tier("hbm", capacity)], config=SimConfig(block_size=512, concurrency=1))
    result = engine.run(offsets, blocks, wl.n_tokens, wl.ts, wl.output_tokens)
    direct = time.perf_counter() - t0
    print(
        f"kvtool direct engine (Python, any policy), one capacity: {direct:.2f} s = "
        f"{lookups / direct / 1e6:.2f} M lookups/s (token hit rate {result.token_hit_rate:.4f})"
    )
    lru_curve(offsets[:3], blocks[: offsets[2]], wl.n_tokens[:2], 512)  # JIT warm-up
    caps = np.unique(np.geomspace(16, unique, 32).astype(np.int64))
    t0 = time.perf_counter()
    curve = lru_curve(offsets, blocks, wl.n_tokens, 512)
    tokens = curve.cached_tokens(caps)
    one_pass = time.perf_counter() - t0
    assert curve.cached_tokens([capacity])[0] == result.cached_tokens  # same answer as direct
    print(
        f"kvtool one-pass LRU curve (numba), {len(caps)} capacities: {one_pass:.2f} s = "
        f"{lookups / one_pass / 1e6:.1f} M lookups/s for all of them; "
        f"{lookups * len(caps) / one_pass / 1e6:.0f} M lookups/s per capacity"
    )
    print(
        f"32-point curve vs libCacheSim's one capacity: {one_pass:.2f} s vs {lcs_s:.2f} s "
        f"({lcs_s / one_pass:.1f}x); hit rate at the largest capacity "
        f"{tokens[-1] / wl.n_tokens.sum():.4f}"
    )
    con.close()


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
    ap.add_argument("--rss", action="store_true", help="peak RSS on a 1M-request trace instead")
    args = ap.parse_args()
    if not TRACES.exists():
        sys.exit(f"needs the Mooncake traces at {TRACES}")
    if args.rss:
        rss(1_000_000)
    else:
        throughput(args.repeat)


if __name__ == "__main__":
    main()
