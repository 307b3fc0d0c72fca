"""How analyze scales with the number of requests when sessions must be inferred.

Workload: N tiny chat requests without ids or session ids (one shared system prompt, a short
random user message each), the case where every request is a candidate new conversation and
break detection searches for its predecessor. Each size runs ``kvtool analyze`` end to end in a
fresh process and database. The baseline is linear growth from the smallest size, measured in
the same run: a ratio near 1.0 at every size means near-linear cost.

    python bench/inference_scaling.py [--sizes 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from pathlib import Path

import orjson

OUT = Path(__file__).resolve().parent / "out"
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]


def tiny_log(path: Path, n: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    with path.open("wb") as f:
        for _ in range(n):
            msg = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
            rec = {
                "model": "m",
                "messages": [
                    {"role": "system", "content": "You are helpful."},
                    {"role": "user", "content": msg},
                ],
            }
            f.write(orjson.dumps(rec) + b"\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    OUT.mkdir(exist_ok=True)
    base = None
    for n in sizes:
        log, db = OUT / f"tiny{n}.jsonl", OUT / f"tiny{n}.duckdb"
        tiny_log(log, n)
        db.unlink(missing_ok=True)
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "kvtool", "analyze", str(log), "--db", str(db), "--json"],
            check=True,
            capture_output=True,
        )
        wall = time.perf_counter() - t0
        per = wall / n * 1e6
        base = base or per
        print(
            f"{n:>9,} requests: {wall:7.1f} s = {per:6.0f} us/request "
            f"({per / base:.2f}x the {sizes[0]:,}-request cost per request)"
        )
        log.unlink()
        db.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
