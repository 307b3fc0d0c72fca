"""Wall time and peak RSS against trace size: does cost grow linearly with requests?

For each size N (``--sizes``, default 10k, 100k and 1M requests; 10M takes a machine's
afternoon and tens of GB of disk), a hash trace of N requests is written from the bundled
Mooncake conversation trace (repeated, ids and timestamps offset per copy, the last copy cut)
and run through the local engine as a user runs it, each command a subprocess:

1. ``kvtool ingest TRACE --db DB``;
2. ``kvtool analyze --db DB --json``;
3. ``kvtool simulate --db DB --blocks 100000 --concurrency 1 --json`` (exact);
4. the same with ``--sample 0.01``.

Each row gives wall seconds, peak RSS (the child's own, from ``wait4``), and seconds per
thousand requests, which stays flat where cost is linear. The Ray engine of issue 17 is not
built yet, so only the local engine is measured.

    python bench/scale.py [--sizes 10000,100000,1000000] [--keep]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import repeated_trace

OUT = Path(__file__).resolve().parent / "out" / "scale"
SOURCE = Path(__file__).resolve().parents[1] / "traces" / "mooncake" / "conversation_trace.jsonl.gz"
PER_COPY = 12_031  # requests in one copy of the conversation trace


def run(*args: str) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of ``python -m kvtool *args``; exits on failure."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "kvtool", *args], stdout=subprocess.DEVNULL, stderr=err
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        if status != 0:
            err.seek(0)
            last = err.read().decode(errors="replace").strip().splitlines()
            sys.exit(f"kvtool {' '.join(args)} failed: {last[-1] if last else status}")
    return seconds, usage.ru_maxrss / 1024


def measure(n: int, keep: bool) -> list[tuple[str, float, float]]:
    OUT.mkdir(parents=True, exist_ok=True)
    trace, db = OUT / f"trace_{n}.jsonl", OUT / f"scale_{n}.duckdb"
    copies = -(-n // PER_COPY)
    repeated_trace(SOURCE, copies, trace)
    with trace.open("rb+") as f:  # cut the last copy: exactly n requests
        for _ in range(n):
            f.readline()
        f.truncate(f.tell())
    db.unlink(missing_ok=True)
    rows = []
    simulate = ["simulate", "--db", str(db), "--blocks", "100000", "--concurrency", "1", "--json"]
    for name, args in (
        ("ingest", ["ingest", str(trace), "--db", str(db), "--json"]),
        ("analyze", ["analyze", "--db", str(db), "--json"]),
        ("simulate (exact)", simulate),
        ("simulate --sample 0.01", [*simulate, "--sample", "0.01"]),
    ):
        seconds, rss = run(*args)
        rows.append((name, seconds, rss))
    if not keep:
        trace.unlink()
        db.unlink()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="requests, comma list")
    ap.add_argument("--keep", action="store_true", help="keep the traces and databases")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    print(f"{'requests':>10} {'command':24} {'seconds':>9} {'s / 1k req':>10} {'peak RSS MB':>11}")
    for n in sizes:
        for name, seconds, rss in measure(n, args.keep):
            print(f"{n:>10,} {name:24} {seconds:9.2f} {1000 * seconds / n:10.3f} {rss:11,.0f}")


if __name__ == "__main__":
    main()
