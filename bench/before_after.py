"""Before and after: the analyze, breaks and simulate benches on old code and the working tree.

"Before" is ``--before REF`` (default ``ccbd1eb``, the last commit before the work on issue 16
began), exported read-only with ``git archive`` into ``bench/out/before-<sha>/``; "after" is the
working tree. Each version runs as a user runs it, ``python -m kvtool ...`` in a subprocess, with
``PYTHONPATH`` set to its root (checked: ``kvtool.__file__`` must lie under that root, because
the venv also holds kvtool installed editable from this checkout), the same venv and
dependencies and the same input files. "Before" compiled its kernels with numba, so numba must
be in the venv (``pip install numba``) for it to run as it did, with its own ``NUMBA_CACHE_DIR``;
"after" runs the C kernels built in the working tree (``make``, or ``python setup.py build_ext
--inplace``). Subprocesses run in ``bench/out/before_after/``, where no kvtool package can shadow
the one on ``PYTHONPATH``, and may write bytecode (``PYTHONDONTWRITEBYTECODE`` is unset for them,
as a pip install compiles it). Before any timing each version runs a warm-up (a small analyze and
one simulate per policy) that writes its bytecode and numba caches; its wall time is reported.
Each figure is the fastest of ``--runs`` runs (1 by default), before and after interleaved.

1. analyze: ``kvtool analyze LOG --db FRESH --json`` on a generated agent log (``--sessions``,
   times ``--scale``), then ``kvtool ingest LOG`` into a new database and ``kvtool analyze --db``;
2. breaks: ``kvtool analyze`` on a generated agent log with ``--breakers`` injected per cause;
3. simulate: the Mooncake conversation trace ``--repeat`` times (ids and timestamps offset per
   repeat, as bench/simulate_throughput.py builds it), ingested once per version, then
   ``--blocks 100000 --policy P --concurrency 1`` for each policy and the 3-point sweep
   ``--blocks 2000,20000,200000`` with unlimited concurrency (slow before; ``--quick`` skips it).

Issue 16 changes speed, not results: every headline result (token counts, hit rates, breaks and
tokens lost) must be equal before and after. A difference is printed and the exit status is 1;
``method`` (how simulate got a point) is shown, not compared. A row more than 5% slower after is
marked "slower". An unusable option or a failed command gives one line and exit status 2.

    python bench/before_after.py [--before REF] [--scale 1] [--repeat 20] [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from benchlib import repeated_trace

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
WORK = OUT / "before_after"
MOONCAKE = ROOT / "traces" / "mooncake" / "conversation_trace.jsonl.gz"
DEFAULT_BEFORE = "ccbd1eb"
POLICIES = ("lru", "fifo", "lfu", "arc", "s3fifo")
SWEEP = "2000,20000,200000"
SEQUENTIAL = ["--concurrency", "1", "--json"]
INFO_KEYS = frozenset({"method"})  # shown, not compared: a faster path may be chosen
SLOWER = 1.05  # after/before above this is marked "slower"


class BenchError(Exception):
    """A setup problem or a failed command: reported in one line, exit status 2."""


@dataclass(frozen=True)
class Version:
    """One version of kvtool: ``name`` is 'before' or 'after'; ``root`` holds its package."""

    name: str
    root: Path
    numba_cache: Path

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(self.root)
        env["NUMBA_CACHE_DIR"] = str(self.numba_cache)
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # a pip install has its bytecode compiled
        return env


@dataclass(frozen=True)
class Run:
    """One kvtool command: wall seconds, peak RSS in MB and its ``--json`` output."""

    seconds: float
    rss_mb: float
    out: dict


@dataclass
class Row:
    """One measurement: the fastest run per version and the headline results of each.

    ``results[version]`` maps a result's name to its value; names in ``INFO_KEYS`` are shown only.
    """

    label: str
    args: list[str]
    runs: dict[str, list[Run]] = field(default_factory=dict)
    results: dict[str, dict[str, object]] = field(default_factory=dict)

    def best(self, version: str) -> Run:
        return min(self.runs[version], key=lambda r: r.seconds)

    def differences(self) -> list[tuple[str, object, object]]:
        before, after = self.results["before"], self.results["after"]
        names = [k for k in {**before, **after} if k not in INFO_KEYS]
        return [(k, before.get(k), after.get(k)) for k in names if before.get(k) != after.get(k)]

    def to_json(self) -> dict:
        b, a = self.best("before"), self.best("after")
        return {
            "label": self.label,
            "command": self.args,
            "before_s": b.seconds,
            "after_s": a.seconds,
            "speed_up": b.seconds / a.seconds,
            "before_runs_s": [r.seconds for r in self.runs["before"]],
            "after_runs_s": [r.seconds for r in self.runs["after"]],
            "before_rss_mb": b.rss_mb,
            "after_rss_mb": a.rss_mb,
            "before": self.results["before"],
            "after": self.results["after"],
            "slower": a.seconds > b.seconds * SLOWER,
            "same": not self.differences(),
        }


def git(*args: str) -> str:
    """A read-only git command in the repository; its stdout, or BenchError with its message."""
    proc = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"git {' '.join(args)}: {proc.stderr.strip() or 'failed'}")
    return proc.stdout.strip()


def export(ref: str) -> tuple[str, Path]:
    """(commit sha, directory) of ``ref``'s tree under bench/out, exported once by git archive."""
    proc = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise BenchError(f"--before {ref}: no such commit in {ROOT}")
    sha = proc.stdout.strip()
    dest = OUT / f"before-{sha[:12]}"
    done = dest / ".exported"
    if not done.exists():
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", sha], capture_output=True)
        if archive.returncode != 0:
            raise BenchError(f"git archive {sha[:12]}: {archive.stderr.decode().strip()}")
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(dest, filter="data")
        done.write_text(sha + "\n")
    if not (dest / "kvtool" / "__main__.py").exists():
        raise BenchError(f"--before {ref}: commit {sha[:12]} has no kvtool/__main__.py")
    return sha, dest


def check_import(v: Version) -> Path:
    """The kvtool package ``v``'s subprocesses import; BenchError unless it lies under its root."""
    proc = subprocess.run(
        [sys.executable, "-c", "import kvtool; print(kvtool.__file__)"],
        capture_output=True,
        text=True,
        env=v.env(),
        cwd=WORK,
    )
    if proc.returncode != 0:
        raise BenchError(f"{v.name}: cannot import kvtool: {proc.stderr.strip().splitlines()[-1]}")
    path = Path(proc.stdout.strip()).resolve()
    if not path.is_relative_to(v.root.resolve()):
        raise BenchError(f"{v.name}: imports kvtool from {path}, not from {v.root}")
    return path


def kvtool(v: Version, args: list[str], fresh: Path | None = None) -> Run:
    """Run ``python -m kvtool ARGS`` as version ``v`` (deleting the database ``fresh`` first)."""
    if fresh is not None:
        for p in (fresh, fresh.with_name(fresh.name + ".wal")):
            p.unlink(missing_ok=True)
    stdout, stderr = WORK / f"{v.name}.stdout", WORK / f"{v.name}.stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "kvtool", *args], stdout=out, stderr=err, env=v.env(), cwd=WORK
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        lines = stderr.read_text(errors="replace").strip().splitlines() or ["no output"]
        raise BenchError(f"{v.name}: kvtool {' '.join(args)} exited {proc.returncode}: {lines[-1]}")
    text = stdout.read_bytes()
    return Run(seconds, usage.ru_maxrss / 1024, orjson.loads(text) if text.strip() else {})


def dig(obj: dict, path: str) -> object:
    """``obj["a"]["b"]`` for the path 'a.b' (None where a key is missing)."""
    for key in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


ANALYZE_KEYS = (
    "requests",
    "prompt_tokens",
    "cached_tokens",
    "ideal_hit_rate",
    "within_session_tokens",
    "cross_session_tokens",
    "working_set_tokens",
)


def analyze_results(out: dict) -> dict[str, object]:
    return {k: dig(out, k) for k in ANALYZE_KEYS}


def ingest_results(out: dict) -> dict[str, object]:
    files = out.get("files") or [{}]
    return {"requests": files[0].get("requests"), "rejected": files[0].get("rejected")}


def breaks_results(out: dict) -> dict[str, object]:
    res: dict[str, object] = {
        "prompt_tokens": out.get("prompt_tokens"),
        "breaks": dig(out, "break_summary.breaks"),
        "tokens_lost": dig(out, "break_summary.tokens_lost"),
    }
    for cause, c in sorted((out.get("breaks") or {}).items()):
        if c.get("count"):
            res[cause] = {"count": c["count"], "tokens_lost": c.get("tokens_lost")}
    return res


def simulate_results(out: dict) -> dict[str, object]:
    if "points" in out:
        return {
            f"token_hit_rate@{p['tiers'][0]['blocks']}": p.get("token_hit_rate")
            for p in out["points"]
        }
    return {"token_hit_rate": out.get("token_hit_rate"), "method": out.get("method")}


class Bench:
    """Runs measurements on both versions, interleaved, and keeps their rows."""

    def __init__(self, versions: list[Version], runs: int) -> None:
        self.versions = versions
        self.runs = runs
        self.rows: dict[str, list[Row]] = {}

    def measure(
        self,
        bench: str,
        label: str,
        args: list[str],
        results: Callable[[dict], dict[str, object]],
        db: str,
        fresh: bool = False,
        setup: list[str] | None = None,
        runs: int | None = None,
    ) -> Row:
        """Time ``kvtool ARGS`` per version; ``{db}`` in the arguments is that version's
        database named ``db``; ``fresh``: deleted before each run, then filled by the untimed
        ``setup`` command where there is one."""
        row = Row(label, args)
        for _ in range(runs or self.runs):
            for v in self.versions:
                path = WORK / f"{v.name}-{db}.duckdb"
                argv = [a.replace("{db}", str(path)) for a in args]
                if setup is not None:
                    kvtool(v, [a.replace("{db}", str(path)) for a in setup], fresh=path)
                run = kvtool(v, argv, fresh=path if fresh and setup is None else None)
                row.runs.setdefault(v.name, []).append(run)
                row.results[v.name] = results(run.out)
        self.rows.setdefault(bench, []).append(row)
        print_row(row)
        return row


def fmt(value: object) -> str:
    if isinstance(value, dict) and set(value) == {"count", "tokens_lost"}:
        return f"{value['count']:,} ({value['tokens_lost']:,} tokens)"
    if isinstance(value, float):
        return f"{value:.6f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


HEADER = (
    f"{'measurement':50} {'before s':>9} {'after s':>9} {'speed-up':>9} "
    f"{'before MB':>10} {'after MB':>9}"
)


def print_row(row: Row) -> None:
    b, a = row.best("before"), row.best("after")
    mark = "  slower" if a.seconds > b.seconds * SLOWER else ""
    print(
        f"{row.label[:50]:50} {b.seconds:9.2f} {a.seconds:9.2f} {b.seconds / a.seconds:8.2f}x "
        f"{b.rss_mb:10,.0f} {a.rss_mb:9,.0f}{mark}",
        flush=True,
    )


def print_results(rows: list[Row]) -> None:
    """The headline results of each row: once where equal, both sides where they differ."""
    for row in rows:
        diffs = {k for k, _, _ in row.differences()}
        before, after = row.results["before"], row.results["after"]
        same = "; ".join(f"{k} {fmt(v)}" for k, v in before.items() if k not in diffs | INFO_KEYS)
        info = "; ".join(
            f"{k} before {fmt(before[k])}, after {fmt(after[k])}"
            for k in sorted(INFO_KEYS & set(before) & set(after))
        )
        print(f"  {row.label}: {same}" + (f" ({info})" if info else ""))
        for k, bv, av in row.differences():
            print(f"    DIFFERS {k}: before {fmt(bv)}, after {fmt(av)}")


def generate(after: Version, path: Path, sessions: int, breakers: int) -> dict:
    """A generated agent log (by the working tree's generator; both versions read the file)."""
    args = ["generate", "--kind", "agent", "--sessions", str(sessions), "--seed", "1"]
    if breakers:
        args += ["--breakers", str(breakers)]
    return kvtool(after, [*args, "--out", str(path), "--json"]).out


def warm_up(versions: list[Version]) -> None:
    """Fill each version's bytecode and numba caches so the timed runs load, not compile."""
    log, trace = WORK / "warmup.jsonl", WORK / "warmup_trace.jsonl"
    generate(versions[-1], log, 2, 0)
    repeated_trace(MOONCAKE, 1, trace, limit=300)
    for v in versions:
        t0 = time.perf_counter()
        db, sim = WORK / f"{v.name}-warmup.duckdb", WORK / f"{v.name}-warmup-sim.duckdb"
        kvtool(v, ["analyze", str(log), "--db", str(db), "--json"], fresh=db)
        kvtool(v, ["ingest", str(trace), "--db", str(sim), "--json"], fresh=sim)
        for p in POLICIES:
            kvtool(v, ["simulate", "--db", str(sim), "--blocks", "400", "--policy", p, *SEQUENTIAL])
        kvtool(v, ["simulate", "--db", str(sim), "--blocks", "100,400", "--json"])
        print(f"warm-up {v.name}: {time.perf_counter() - t0:.1f} s (first runs, caches filled)")


def bench_analyze(bench: Bench, sessions: int) -> None:
    log = WORK / "agent.jsonl"
    truth = generate(bench.versions[-1], log, sessions, 0)
    size = log.stat().st_size / 1e6
    print(
        f"\n== analyze: agent log, {sessions} sessions, {truth['requests']:,} requests, "
        f"{size:,.1f} MB ==\n{HEADER}"
    )
    bench.measure(
        "analyze",
        "analyze LOG (fresh db)",
        ["analyze", str(log), "--db", "{db}", "--json"],
        analyze_results,
        "analyze",
        fresh=True,
    )
    bench.measure(
        "analyze",
        "ingest LOG (fresh db)",
        ["ingest", str(log), "--db", "{db}", "--json"],
        ingest_results,
        "ingested",
        fresh=True,
    )
    bench.measure(
        "analyze",
        "analyze --db (ingested, not tokenized)",
        ["analyze", "--db", "{db}", "--json"],
        analyze_results,
        "ingested",
        fresh=True,
        setup=["ingest", str(log), "--db", "{db}", "--json"],
    )
    print_results(bench.rows["analyze"])


def bench_breaks(bench: Bench, sessions: int, breakers: int) -> None:
    log = WORK / "breakers.jsonl"
    truth = generate(bench.versions[-1], log, sessions, breakers)
    print(
        f"\n== breaks: agent log, {sessions} sessions, {breakers} breakers per cause, "
        f"{truth['requests']:,} requests, {len(truth['breaks']):,} injected breaks ==\n{HEADER}"
    )
    bench.measure(
        "breaks",
        "analyze LOG with breakers (fresh db)",
        ["analyze", str(log), "--db", "{db}", "--json"],
        breaks_results,
        "breaks",
        fresh=True,
    )
    print_results(bench.rows["breaks"])


def bench_simulate(bench: Bench, repeat: int, quick: bool) -> None:
    trace = WORK / f"conversation_x{repeat}.jsonl"
    n = repeated_trace(MOONCAKE, repeat, trace)
    print(f"\n== simulate: Mooncake conversation trace x{repeat}, {n:,} requests ==\n{HEADER}")
    bench.measure(
        "simulate",
        f"ingest trace x{repeat} (fresh db)",
        ["ingest", str(trace), "--db", "{db}", "--json"],
        ingest_results,
        "simulate",
        fresh=True,
        runs=1,  # the database stays for the simulate rows
    )
    for p in POLICIES:
        bench.measure(
            "simulate",
            f"simulate --blocks 100000 --policy {p} --conc 1",
            ["simulate", "--db", "{db}", "--blocks", "100000", "--policy", p, *SEQUENTIAL],
            simulate_results,
            "simulate",
        )
    if not quick:
        bench.measure(
            "simulate",
            f"simulate --blocks {SWEEP} (concurrent)",
            ["simulate", "--db", "{db}", "--blocks", SWEEP, "--json"],
            simulate_results,
            "simulate",
        )
    print_results(bench.rows["simulate"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=DEFAULT_BEFORE, metavar="REF", help="old commit")
    ap.add_argument("--sessions", type=int, default=60, help="agent sessions of the analyze log")
    ap.add_argument("--breakers", type=int, default=3, help="injected sessions per break cause")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies the logs' sessions")
    ap.add_argument("--repeat", type=int, default=20, help="copies of the Mooncake trace")
    ap.add_argument("--runs", type=int, default=1, help="runs per figure; the fastest counts")
    ap.add_argument("--quick", action="store_true", help="skip the slow concurrent sweep")
    ap.add_argument("--only", choices=("analyze", "breaks", "simulate"), action="append")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write all figures as JSON")
    args = ap.parse_args()
    try:
        return run(args)
    except BenchError as e:
        print(f"before_after: error: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    if args.scale <= 0 or args.repeat < 1 or args.runs < 1 or args.sessions < 1:
        raise BenchError("--scale, --sessions, --repeat and --runs must be positive")
    breaks_sessions = max(int(40 * args.scale), 11 * args.breakers + 1)
    if not MOONCAKE.exists():
        raise BenchError(f"needs the Mooncake trace at {MOONCAKE}")
    WORK.mkdir(parents=True, exist_ok=True)
    sha, before_root = export(args.before)
    versions = [
        Version("before", before_root, OUT / f"numba-cache-before-{sha[:12]}"),
        Version("after", ROOT, OUT / "numba-cache-after"),
    ]
    head = git("rev-parse", "--short=12", "HEAD")
    dirty = len(git("status", "--short", "--untracked-files=no").splitlines())
    print(f"before: {args.before} = {sha[:12]} ({git('log', '-1', '--format=%s', sha)[:70]})")
    print(f"after: working tree at {head} with {dirty} modified tracked files")
    for v in versions:
        print(f"{v.name} imports {check_import(v)}")
    warm_up(versions)
    bench = Bench(versions, args.runs)
    only = set(args.only or ("analyze", "breaks", "simulate"))
    if "analyze" in only:
        bench_analyze(bench, max(1, int(args.sessions * args.scale)))
    if "breaks" in only:
        bench_breaks(bench, breaks_sessions, args.breakers)
    if "simulate" in only:
        bench_simulate(bench, args.repeat, args.quick)
    differ = [r.label for rows in bench.rows.values() for r in rows if r.differences()]
    if args.json is not None:
        doc = {
            "before": {"ref": args.before, "commit": sha, "root": str(before_root)},
            "after": {"head": head, "modified_files": dirty, "root": str(ROOT)},
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "benches": {b: [r.to_json() for r in rows] for b, rows in bench.rows.items()},
            "differ": differ,
        }
        args.json.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    if differ:
        print(f"\nresults differ before and after in: {', '.join(differ)}")
        return 1
    print("\nall headline results equal before and after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
