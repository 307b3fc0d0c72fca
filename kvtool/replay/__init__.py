"""Replay: send the trace's requests to a real vLLM and put what it measured next to the
simulation of the same configuration.

``replay`` prepares the requests from the store (chat logs as chat completions with their
messages and tools), optionally launches vLLM (``kvtool.replay.server``; on a CPU machine with the
tiny model of ``kvtool.replay.model``), scrapes ``/metrics`` before and after, sends the requests
(``kvtool.replay.client``), stores every measurement (``replay_runs``, ``replay_requests``) and
validates: the engine of ``kvtool simulate`` on the same requests with the server's block size,
KV capacity and LRU (``validate``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import xxhash

from kvtool.analyze import WorkloadError, load_traffic
from kvtool.analyze.workload import Workload
from kvtool.replay import metrics
from kvtool.replay.client import Prepared, Result
from kvtool.replay.client import replay as send
from kvtool.replay.model import build_tiny_model
from kvtool.replay.server import ServerConfig, VLLMServer, tier_args
from kvtool.report.progress import NullProgress, Progress
from kvtool.simulate.engine import Engine, block_streams
from kvtool.store import connect, next_id, one
from kvtool.tiers.kv import lookup
from kvtool.tiers.spec import Tier, parse_tier_gb
from kvtool.tokenize.chains import content_keys, load_contents

__all__ = ["LaunchConfig", "replay", "validate"]


@dataclass(frozen=True)
class LaunchConfig:
    """``--launch``: the Python of a vLLM environment, where to build the tiny model and logs,
    and the server's block size and KV capacity in blocks. With ``model`` (a local model
    directory; nothing is downloaded) and ``tier_gb`` the server gets the tiers instead: the
    first sizes the KV blocks, the second is host memory through vLLM's KV offloading
    (``offload``: native or lmcache), a third LMCache's local disk (GPU only)."""

    python: str
    workdir: Path
    block_size: int = 32
    num_blocks: int = 400
    model: Path | None = None
    tier_gb: str | None = None
    offload: str = "native"


TOKEN_RANGE = (1000, 100_000)  # ordinary vocabulary ids for synthetic blocks (no special tokens)


def block_tokens(seed: str, n: int) -> list[int]:
    """``n`` token ids of one hash-trace block, a pure function of ``seed``: equal hash ids give
    equal blocks, so the server's prefix cache sees the trace's sharing exactly."""
    rng = np.random.default_rng(xxhash.xxh3_64_intdigest(seed.encode()))
    return rng.integers(*TOKEN_RANGE, size=n).tolist()


def _hash_prompt(ids: list[int], n: int, B: int, salt: str) -> list[int]:
    """Token ids of a hash-trace request of ``n`` tokens: block j from id j (the last id covers
    the partial block), per-request filler if the trace lists too few ids."""
    out: list[int] = []
    for j, h in enumerate(ids):
        take = min(B, n - j * B)
        if take <= 0:
            break
        out += block_tokens(f"{salt}:{h}", take)
    if len(out) < n:
        out += block_tokens(f"{salt}:filler:{n}:{len(ids)}:{ids[:1]}", n - len(out))
    return out


def _prepare(con: duckdb.DuckDBPyConnection, wl: Workload, model: str, max_tokens: int | None):
    con.register("_kv_sel", pa.table({"req_id": pa.array(wl.req_ids, pa.int64())}))
    rows = con.execute(
        """SELECT r.req_id, r.request_id, r.kind, r.model, r.tenant, r.message_keys,
                  r.tools_key, r.prompt_key, r.output_tokens, r.hash_ids, r.input_length,
                  f.sha256, f.hash_block_size
           FROM requests r JOIN _kv_sel USING (req_id) JOIN files f USING (file_id)"""
    ).fetchall()
    con.unregister("_kv_sel")
    by_id = {r[0]: r for r in rows}
    bodies = load_contents(
        con, content_keys([(r[0], r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows])
    )
    known = wl.ts[~np.isnan(wl.ts)]
    t0 = float(known.min()) if len(known) else 0.0
    out = []
    for k, rid in enumerate(wl.req_ids.tolist()):
        r = by_id[rid]
        tokens = max_tokens or max(1, int(r[8] or 1))
        if r[2] == "chat":
            body: dict = {"model": model, "messages": [bodies[m] for m in r[5]]}
            if r[6] is not None:
                body["tools"] = bodies[r[6]]
                body["tool_choice"] = "none"  # the tools are prompt text here, not calls
            path = "/v1/chat/completions"
        elif r[2] == "completion":
            body = {"model": model, "prompt": bodies[r[7]]}
            path = "/v1/completions"
        else:  # a hash trace: synthetic token ids with the trace's sharing
            salt = f"{r[11]}:{r[4] or ''}"
            body = {"model": model, "prompt": _hash_prompt(r[9] or [], int(r[10]), r[12], salt)}
            path = "/v1/completions"
        body["max_tokens"] = tokens
        offset = 0.0 if np.isnan(wl.ts[k]) else float(wl.ts[k]) - t0
        out.append(Prepared(rid, r[1], path, body, offset))
    return out


def _store(con: duckdb.DuckDBPyConnection, run: dict, results: list[Result]) -> int:
    run_id = next_id(con, "replay_runs", "run_id")
    con.execute(
        "INSERT INTO replay_runs (run_id, endpoint, model, config, metrics) VALUES (?, ?, ?, ?, ?)",
        [
            run_id,
            run["endpoint"],
            run["model"],
            orjson.dumps(run["config"]).decode(),
            orjson.dumps(run["metrics"]).decode(),
        ],
    )
    table = pa.table(
        {
            "run_id": pa.array([run_id] * len(results), pa.int32()),
            "req_id": pa.array([r.req_id for r in results], pa.int64()),
            "request_id": [r.request_id for r in results],
            "ok": pa.array([r.ok for r in results], pa.bool_()),
            "error": [r.error for r in results],
            "started_s": pa.array([r.started_s for r in results], pa.float64()),
            "ttft_s": pa.array([r.ttft_s for r in results], pa.float64()),
            "e2e_s": pa.array([r.e2e_s for r in results], pa.float64()),
            "prompt_tokens": pa.array([r.prompt_tokens for r in results], pa.int64()),
            "cached_tokens": pa.array([r.cached_tokens for r in results], pa.int64()),
        }
    )
    con.register("_kv_results", table)
    con.execute("INSERT INTO replay_requests SELECT * FROM _kv_results")
    con.unregister("_kv_results")
    return run_id


def replay(
    paths: list[str | Path] | None = None,
    *,
    db: str | Path = "kvtool.duckdb",
    endpoint: str | None = None,
    model: str | None = None,
    launch: LaunchConfig | None = None,
    tokenizer: str | None = None,
    block_size: int | None = None,
    num_blocks: int | None = None,
    max_tokens: int | None = None,
    timing: str = "closed",
    concurrency: int | None = 1,
    speedup: float = 1.0,
    timeout_s: float = 120.0,
    max_errors: int = 5,
    hash_block_size: int = 512,
    progress: Progress | None = None,
) -> dict:
    """Replay the traffic of ``paths`` against ``endpoint`` (or a launched server), store the
    run and return it validated (docs/replay.md)."""
    if (endpoint is None) == (launch is None):
        raise WorkloadError("give either --endpoint URL or --launch")
    progress = progress or NullProgress()
    server_config = None
    tiers: list[tuple[str, float]] = []
    kv_bytes: int | None = None
    offload = launch.offload if launch is not None else None
    if launch is not None:
        if launch.model is None:
            tiny = build_tiny_model(launch.workdir / "tiny", launch.python)
            model_dir, tok_dir = tiny.model_dir, tiny.tokenizer_dir
        else:
            model_dir, tok_dir = launch.model, Path(tokenizer or launch.model)
        tokenizer = str(tok_dir)
        block_size, num_blocks = launch.block_size, launch.num_blocks
        extra: list[str] = []
        env: dict[str, str] = {}
        if launch.tier_gb:
            specs = parse_tier_gb(launch.tier_gb)
            tiers = [(t.name, t.gbs[0]) for t in specs]
            kv_bytes = lookup(str(model_dir)).bytes_per_token
            num_blocks, extra, env = tier_args(
                tiers, block_size, kv_bytes, launch.offload, launch.workdir
            )
        server_config = ServerConfig(
            model_dir,
            tok_dir,
            block_size,
            num_blocks,
            served_name=model or "kvtool-replay",
            extra_args=extra,
            env=env,
        )
    con = connect(db)
    try:
        traffic = load_traffic(con, paths, tokenizer, None, hash_block_size, progress)
        served = model or "kvtool-replay"
        requests = _prepare(con, traffic.wl, served, max_tokens)
        config = {
            "timing": timing,
            "concurrency": concurrency,
            "speedup": speedup,
            "max_tokens": max_tokens,
            "block_size": block_size,
            "num_blocks": num_blocks,
            "tokenizer": traffic.signature,
            "file_ids": traffic.file_ids,
            "tiers": tiers,
            "offload": offload,
            "kv_bytes_per_token": kv_bytes,
        }

        def run(url: str) -> tuple[list[Result], dict]:
            before = metrics.scrape(url)
            progress.stage("replay", len(requests))
            results = send(
                requests,
                url,
                timing=timing,
                concurrency=concurrency,
                speedup=speedup,
                timeout_s=timeout_s,
                max_errors=max_errors,
                progress=lambda d, t: progress.update(d, t),
            )
            try:
                after = metrics.scrape(url)
                delta = metrics.diff(before, after)
            except Exception as exc:  # the server died: keep the per-request measurements
                delta = {"error": f"{type(exc).__name__}: {exc}"[:200]}
            return results, delta

        if launch is not None:
            assert server_config is not None
            server = VLLMServer(
                launch.python, server_config, launch.workdir / f"vllm-{int(time.time())}.log"
            )

            config["launch_command"] = server.command
            config["server_log"] = str(server.log)
            with server as url:
                results, delta = run(url)
            endpoint = url
        else:
            assert endpoint is not None
            results, delta = run(endpoint)
        run_id = _store(
            con,
            {"endpoint": endpoint, "model": served, "config": config, "metrics": delta},
            results,
        )
        return validate(run_id, db=con)
    finally:
        progress.close()
        con.close()


def validate(run_id: int, *, db: str | Path | duckdb.DuckDBPyConnection = "kvtool.duckdb") -> dict:
    """A stored replay next to the simulation of its configuration: the engine with the
    server's block size, ``num_blocks - 1`` blocks (vLLM keeps one null block), LRU, one request
    at a time, and running requests holding their partial last block as vLLM allocates it, on
    the requests that succeeded."""
    con = db if isinstance(db, duckdb.DuckDBPyConnection) else connect(db)
    try:
        row = one(
            con,
            "SELECT endpoint, model, config, metrics FROM replay_runs WHERE run_id = ?",
            [run_id],
        )
        if row is None:
            raise WorkloadError(f"no replay run {run_id} in the database")
        config, delta = orjson.loads(row[2]), orjson.loads(row[3])
        got = con.execute(
            "SELECT req_id, ok, error, ttft_s, prompt_tokens, cached_tokens FROM replay_requests "
            "WHERE run_id = ?",
            [run_id],
        ).fetchall()
        ok = {r[0]: r for r in got if r[1]}
        out = {
            "run_id": run_id,
            "endpoint": row[0],
            "model": row[1],
            "config": config,
            "metrics": delta,
            "requests_ok": len(ok),
            "requests_failed": len(got) - len(ok),
            "errors": sorted({r[2] for r in got if not r[1]})[:5],
        }
        queries = delta.get("prefix_cache_queries")
        out["observed_hit_rate"] = (
            delta["prefix_cache_hits"] / queries if isinstance(queries, float) and queries else None
        )
        prompt = sum(r[4] for r in ok.values())
        out["observed_hit_rate_usage"] = (
            sum(r[5] or 0 for r in ok.values()) / prompt if prompt else None
        )
        out.update(_predict(con, config, ok))
        return out
    finally:
        if con is not db:
            con.close()


def _predict(con: duckdb.DuckDBPyConnection, config: dict, ok: dict) -> dict:
    from kvtool.analyze.workload import load_workload

    B, blocks = config.get("block_size"), config.get("num_blocks")
    if not B or not blocks or not ok:
        return {"predicted_hit_rate": None, "request_agreement": None}
    wl = load_workload(con, config["file_ids"], config["tokenizer"])
    if B % wl.base:
        return {
            "predicted_hit_rate": None,
            "request_agreement": None,
            "prediction_note": f"the server's block size {B} is not a multiple of the trace's "
            f"{wl.base}: replay a hash trace with --block-size {wl.base}",
        }
    keep = np.isin(wl.req_ids, np.array(sorted(ok), np.int64))
    offsets, stream = block_streams(wl, B)
    sel = np.flatnonzero(keep)
    sub_off = np.concatenate([[0], np.cumsum(np.diff(offsets)[sel])]).astype(np.int64)
    sub_blocks = (
        np.concatenate([stream[offsets[i] : offsets[i + 1]] for i in sel])
        if len(sel)
        else np.zeros(0, np.int64)
    )
    tiers = [Tier("device", blocks - 1)]
    lower = (config.get("tiers") or [])[1:]
    kv = config.get("kv_bytes_per_token")
    note = None
    if lower and kv:
        # vLLM's offloading stores blocks as they are computed (write-through); LMCache in
        # 256-token chunks; disk after host memory (kvtool simulate's tier model)
        chunk = 256 if config.get("offload") == "lmcache" else None
        for name, gb in lower:
            size = chunk or B
            tiers.append(Tier(name, int(gb * 1e9 // (size * kv)), gb, block_tokens=chunk))
        note = "lower tiers predicted with kvtool's tier model, not yet checked on a GPU"
    engine = Engine(tiers, "lru", B, kv, concurrency=1, write_policy="through", hold_partial=True)
    result = engine.run(
        sub_off, sub_blocks, wl.n_tokens[sel], wl.ts[sel], np.ones(len(sel), np.int64)
    )
    observed = np.array([ok[int(r)][5] or 0 for r in wl.req_ids[sel]], np.int64)
    prompt_obs = np.array([ok[int(r)][4] for r in wl.req_ids[sel]], np.int64)
    ttft = np.array([ok[int(r)][3] or np.nan for r in wl.req_ids[sel]], float)
    hit = observed > 0

    def median(x: np.ndarray) -> float | None:
        x = x[~np.isnan(x)]
        return float(np.median(x)) if len(x) else None

    return {
        "predicted_hit_rate": result.token_hit_rate,
        "predicted_hits_by_tier": dict(zip(result.tiers, result.hit_tokens, strict=True)),
        "predicted_evictions": result.evictions,
        "request_agreement": float((result.cached_per_request == observed).mean()),
        "prompt_token_agreement": float((wl.n_tokens[sel] == prompt_obs).mean()),
        "ttft_median_hits_s": median(ttft[hit]),
        "ttft_median_misses_s": median(ttft[~hit]),
        "simulated": {"block_size": B, "blocks": blocks - 1, "policy": "lru", "concurrency": 1},
        "prediction_note": note,
    }
