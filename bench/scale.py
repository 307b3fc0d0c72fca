"""Wall time and peak RSS against trace size: does cost grow linearly with requests?

For each size N (``--sizes``, default 10k, 100k and 1M requests; add 10000000 for the 10M
row: about 20 minutes, 11 GB of memory and 6 GB of disk), a hash trace of N requests is written
from the bundled Mooncake conversation trace (repeated, ids and timestamps offset per copy, the
last copy cut), as ``--shards`` files (4: log rotation, what lets the Ray engine parse in
parallel), and run through kvtool as a user runs it, each command a subprocess:

1. ``kvtool ingest SHARDS --db DB``;
2. ``kvtool analyze --db DB --json``;
3. ``kvtool simulate --db DB --blocks 100000 --concurrency 1 --json`` (exact);
4. the same with ``--sample 0.01``;
5. with ``--ray``: ``kvtool ingest SHARDS --engine ray`` into a second database, on a local
   cluster of 2 worker CPUs (``ray start --head --num-cpus 2``, ``--ray-address auto``).

``--chat N`` adds a generated agent log of N sessions (``--chat-steps LO,HI`` requests each,
default the generator's 4 to 24), analyzed from its file by the local engine and, with
``--ray``, by the Ray engine: the case where tokenization dominates. Issue 17's 1M-request
chat log is ``--chat 50000 --chat-steps 5,35`` (23.6 GB).

Each row gives wall seconds, peak RSS (the command's own process from ``wait4``; for a Ray row
the driver's, the workers run in the cluster's processes) and seconds per thousand requests,
which stays flat where cost is linear. ``--write-docs`` puts the table between the markers of
docs/performance.md and draws the curve (docs/img/scale.svg).

    python bench/scale.py [--sizes 10000,100000,1000000] [--ray] [--chat 500] [--write-docs]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchlib import agent_log, repeated_trace

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "scale"
SOURCE = ROOT / "traces" / "mooncake" / "conversation_trace.jsonl.gz"
PERF = ROOT / "docs" / "performance.md"
SVG = ROOT / "docs" / "img" / "scale.svg"
BEGIN, END = "<!-- scale table: bench/scale.py --write-docs -->", "<!-- end of scale table -->"
PER_COPY = 12_031  # requests in one copy of the conversation trace
GOAL_MB = 4000  # issue 17: analyze and simulate --sample of 10M requests in 4 GB


@dataclass(frozen=True)
class Row:
    """One measured command."""

    requests: int
    command: str
    seconds: float
    rss_mb: float


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


def shards(n: int, parts: int) -> list[Path]:
    """The hash trace of ``n`` requests as ``parts`` files under ``OUT``."""
    whole = OUT / f"trace_{n}.jsonl"
    repeated_trace(SOURCE, -(-n // PER_COPY), whole)
    paths = [OUT / f"trace_{n}.{k}.jsonl" for k in range(parts)]
    per = -(-n // parts)
    with whole.open("rb") as src:
        for k, path in enumerate(paths):
            with path.open("wb") as dst:
                for _ in range(min(per, n - k * per)):
                    dst.write(src.readline())
    whole.unlink()
    return paths


def measure(n: int, parts: int, ray: bool, keep: bool) -> list[Row]:
    OUT.mkdir(parents=True, exist_ok=True)
    files = [str(p) for p in shards(n, parts)]
    db, ray_db = OUT / f"scale_{n}.duckdb", OUT / f"scale_{n}_ray.duckdb"
    db.unlink(missing_ok=True)
    ray_db.unlink(missing_ok=True)
    simulate = ["simulate", "--db", str(db), "--blocks", "100000", "--concurrency", "1", "--json"]
    commands = [
        ("ingest", ["ingest", *files, "--db", str(db), "--json"]),
        ("analyze --db", ["analyze", "--db", str(db), "--json"]),
        ("simulate (exact)", simulate),
        ("simulate --sample 0.01", [*simulate, "--sample", "0.01"]),
    ]
    if ray:
        ray_args = ["--engine", "ray", "--ray-address", "auto"]
        commands.append(
            ("ingest --engine ray", ["ingest", *files, "--db", str(ray_db), *ray_args, "--json"])
        )
    rows = []
    for name, args in commands:
        rows.append(Row(n, name, *run(*args)))
        show(rows[-1])
    if not keep:
        for path in [*files, db, ray_db]:
            Path(path).unlink(missing_ok=True)
    return rows


def measure_chat(sessions: int, steps: str | None, ray: bool) -> list[Row]:
    OUT.mkdir(parents=True, exist_ok=True)
    name = f"agent_{sessions}" + (f"_steps{steps.replace(',', '-')}" if steps else "")
    log = agent_log(OUT / f"{name}.jsonl", sessions, *(["--steps", steps] if steps else []))
    n = sum(1 for _ in log.open("rb"))
    rows = []
    for name, extra in (
        ("analyze LOG (agent)", []),
        ("analyze LOG --engine ray", ["--engine", "ray", "--ray-address", "auto"]),
    ):
        if extra and not ray:
            continue
        db = OUT / f"{name}_{len(extra)}.duckdb"
        db.unlink(missing_ok=True)
        rows.append(Row(n, name, *run("analyze", str(log), "--db", str(db), "--json", *extra)))
        show(rows[-1])
        db.unlink()
    return rows


def show(r: Row) -> None:
    print(
        f"{r.requests:>10,} {r.command:26} {r.seconds:9.2f} "
        f"{1000 * r.seconds / r.requests:10.3f} {r.rss_mb:11,.0f}",
        flush=True,
    )


def table(rows: list[Row]) -> str:
    lines = [
        "| requests | command | seconds | s / 1k requests | peak RSS |",
        "|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.requests:,} | `{r.command}` | {r.seconds:.2f} | "
            f"{1000 * r.seconds / r.requests:.3f} | {r.rss_mb:,.0f} MB |"
        )
    return "\n".join(lines)


def svg(rows: list[Row]) -> str:
    """Peak RSS (MB) against requests, log-log, one line per hash-trace command, and the
    issue's 4 GB goal."""
    import math

    series: dict[str, list[Row]] = {}
    for r in rows:
        if "LOG" not in r.command:
            series.setdefault(r.command, []).append(r)
    W, H, L, B = 640, 360, 70, 50
    plotted = [r for points in series.values() for r in points]
    xs = [math.log10(r.requests) for r in plotted]
    ys = [math.log10(max(r.rss_mb, 1)) for r in plotted] + [math.log10(GOAL_MB)]
    x0, x1 = min(xs), max(xs) + 1e-9
    y0, y1 = math.floor(min(ys)), math.ceil(max(ys) + 1e-9)

    def px(x: float, y: float) -> tuple[float, float]:
        return (
            L + (x - x0) / (x1 - x0) * (W - L - 50),
            H - B - (y - y0) / (y1 - y0) * (H - B - 20),
        )

    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
    ]
    for e in range(int(y0), int(y1) + 1):
        _, y = px(x0, e)
        out.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W - 50}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">{10**e:,} MB</text>')
    _, goal = px(x0, math.log10(GOAL_MB))
    out.append(
        f'<line x1="{L}" y1="{goal:.1f}" x2="{W - 50}" y2="{goal:.1f}" stroke="#d62728" '
        'stroke-dasharray="6 4"/>'
    )
    out.append(
        f'<text x="{W - 52}" y="{goal - 4:.1f}" text-anchor="end" fill="#d62728">'
        "goal at 10M requests: 4 GB</text>"
    )
    for r in sorted({r.requests for r in plotted}):
        x, _ = px(math.log10(r), y0)
        out.append(f'<text x="{x:.1f}" y="{H - B + 16}" text-anchor="middle">{r:,}</text>')
    out.append(f'<text x="{(W + L) / 2}" y="{H - 12}" text-anchor="middle">requests</text>')
    for k, (name, points) in enumerate(series.items()):
        c = colors[k % len(colors)]
        pts = " ".join(
            "{:.1f},{:.1f}".format(*px(math.log10(p.requests), math.log10(p.rss_mb)))
            for p in points
        )
        out.append(f'<polyline points="{pts}" fill="none" stroke="{c}" stroke-width="2"/>')
        out.append(f'<text x="{L + 10}" y="{20 + 14 * k}" fill="{c}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_docs(rows: list[Row]) -> None:
    text = PERF.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    PERF.write_text(text[:start] + "\n\n" + table(rows) + "\n\n" + text[end:])
    SVG.parent.mkdir(parents=True, exist_ok=True)
    SVG.write_text(svg(rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="requests, comma list")
    ap.add_argument("--shards", type=int, default=4, help="files the trace is written as")
    ap.add_argument("--ray", action="store_true", help="also the Ray engine, 2 worker CPUs")
    ap.add_argument("--chat", type=int, default=0, help="sessions of a generated agent log")
    ap.add_argument("--chat-steps", help="its requests per session, as kvtool generate --steps")
    ap.add_argument("--keep", action="store_true", help="keep the traces and databases")
    ap.add_argument("--write-docs", action="store_true", help="table and curve into docs/")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.ray:
        ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
        subprocess.run(
            [
                ray,
                "start",
                "--head",
                "--num-cpus",
                "2",
                "--include-dashboard=false",
                "--disable-usage-stats",
            ],
            check=True,
            capture_output=True,
        )
    rows: list[Row] = []
    print(f"{'requests':>10} {'command':26} {'seconds':>9} {'s / 1k req':>10} {'peak RSS MB':>11}")
    try:
        for got in (
            *(lambda n=n: measure(n, args.shards, args.ray, args.keep) for n in sizes),
            *([lambda: measure_chat(args.chat, args.chat_steps, args.ray)] if args.chat else []),
        ):
            rows.extend(got())  # each row is shown as it is measured
    finally:
        if args.ray:
            subprocess.run([ray, "stop", "--force"], capture_output=True)
    if args.write_docs:
        write_docs(rows)


if __name__ == "__main__":
    main()
