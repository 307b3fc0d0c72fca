"""What several bench scripts use: a stage timer and the repeated Mooncake trace.

Imports nothing from kvtool, so ``before_after.py`` can use it without loading either version
of kvtool in its own process. Bench scripts run as ``python bench/<script>.py``, which puts this
directory first on ``sys.path``.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import time
from pathlib import Path

import orjson


class StageTimer:
    """A progress sink (``kvtool.progress.Progress``'s methods) that records how long each
    stage took, in seconds by stage name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._stage: str | None = None
        self._start = 0.0

    def _close(self) -> None:
        if self._stage is not None:
            self.seconds[self._stage] = time.perf_counter() - self._start

    def stage(self, name: str, total: float | None) -> None:
        self._close()
        self._stage, self._start = name, time.perf_counter()

    def advance(self, amount: float) -> None:
        pass

    def update(self, completed: float, total: float | None = None) -> None:
        pass

    def close(self) -> None:
        self._close()
        self._stage = None


def repeated_trace(src: Path, repeat: int, out: Path, limit: int | None = None) -> int:
    """Write the Mooncake trace ``src`` (gzipped JSONL) ``repeat`` times into ``out``, hash ids
    and timestamps offset per copy so that each copy is new content, at most ``limit`` records
    per copy; returns the lines written."""
    recs = [orjson.loads(line) for line in gzip.decompress(src.read_bytes()).splitlines()]
    span = max(max(r["hash_ids"]) for r in recs) + 1
    dt = recs[-1]["timestamp"] + 1
    recs = recs[:limit]
    with out.open("wb") as f:
        for k in range(repeat):
            for r in recs:
                rec = {**r, "timestamp": r["timestamp"] + k * dt}
                rec["hash_ids"] = [h + k * span for h in r["hash_ids"]]
                f.write(orjson.dumps(rec) + b"\n")
    return len(recs) * repeat


def agent_log(out: Path, sessions: int, *extra: str) -> Path:
    """``kvtool generate --kind agent --sessions N --seed 3 [extra]`` into ``out`` unless it
    is there already (the bench workloads share the seed, so a log is made once)."""
    if not out.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "kvtool",
                "generate",
                "--kind",
                "agent",
                "--sessions",
                str(sessions),
                "--seed",
                "3",
                *extra,
                "-o",
                str(out),
            ],
            check=True,
            capture_output=True,
        )
    return out
