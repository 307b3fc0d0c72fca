"""Simulate: what hit rate, prefill saved, TTFT and dollars a cache tiering gives on real traffic.

``simulate`` ingests and tokenizes like analyze, expands every request into its block ids at the
chosen block size, runs the engine (``kvtool.simulate.engine``) for each configuration — one, or
a sweep over one tier's capacity — and stores each run in the ``sim_runs`` table.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import duckdb
import numpy as np
import orjson

from kvtool.analyze.prefix import base_hit_blocks, ideal_hits, passes, runs
from kvtool.progress import NullProgress, Progress
from kvtool.simulate.engine import (
    ROUTINGS,
    Engine,
    SimResult,
    Timing,
    next_uses,
    sequential_ttft,
    tier_loads,
)
from kvtool.simulate.policies import POLICIES
from kvtool.simulate.sweep import LRUCurve, lru_curve
from kvtool.store import connect, next_id
from kvtool.tiers.kv import UnknownModel, lookup
from kvtool.tiers.spec import Tier, TierSpec, TierSpecError, apply_overrides, parse_tier_gb
from kvtool.traffic import (
    PRICE_INPUT,
    Workload,
    WorkloadError,
    block_streams,
    kv_shape_name,
    load_traffic,
)

MONTH_S = 30 * 86400
DEFAULT_PREFILL_TPS = 8000.0
FRACTIONS = (0.5, 0.9, 0.99)

__all__ = ["SimConfig", "TierSpecError", "simulate"]


@dataclass(frozen=True)
class SimConfig:
    """Everything that defines one simulation besides the traffic."""

    policy: str = "lru"
    block_size: int | None = None
    write_policy: str = "back"
    concurrency: int | None = None
    ttl_s: float | None = None
    prefill_tps: float | None = None  # None: the model's preset, else DEFAULT_PREFILL_TPS
    decode_tps: float = 40.0
    price_input: float = PRICE_INPUT
    replicas: int = 1
    routing: str = "round_robin"
    shared_lower: bool = False


def _percentiles(values: np.ndarray) -> dict[str, float | None]:
    if len(values) == 0:
        return {"p50": None, "p90": None, "p99": None}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99)}


def _point(
    result: SimResult, tiers: list[Tier], config: SimConfig, duration_s: float | None
) -> dict:
    """One configuration's JSON (docs/simulate.md)."""
    B = config.block_size or 0
    avoided = result.cached_tokens * config.price_input / 1e6
    per_month = avoided * MONTH_S / duration_s if duration_s else None
    copies = [
        config.replicas if k == 0 or not config.shared_lower else 1 for k in range(len(tiers))
    ]
    storage = {
        t.name: (t.gb or 0.0) * t.price_gb_month * c for t, c in zip(tiers, copies, strict=True)
    }
    storage_total = sum(storage.values())
    return {
        "tiers": [
            {
                "name": t.name,
                "gb": t.gb,
                "blocks": t.blocks,
                "block_tokens": t.block_tokens or B,
                "tokens": t.blocks * (t.block_tokens or B),
            }
            for t in tiers
        ],
        "token_hit_rate": result.token_hit_rate,
        "hits_by_tier": dict(zip(result.tiers, result.hit_tokens, strict=True)),
        "prefill_tokens_saved": result.cached_tokens,
        "request_hit_rate": result.requests_with_hit / result.requests if result.requests else None,
        "ttft_estimate": _percentiles(result.ttft),
        "evictions": None if result.evictions < 0 else result.evictions,
        "uncached_blocks": result.uncached_blocks,
        "cost": {
            "recompute_avoided": avoided,
            "recompute_avoided_per_month": per_month,
            "storage_per_month": storage_total,
            "storage_per_month_by_tier": storage,
            "net_per_month": None if per_month is None else per_month - storage_total,
        },
    }


def _ideal(wl: Workload, block_size: int) -> tuple[float | None, int]:
    rs = runs(wl)
    ps = passes(wl, rs)
    hits = ideal_hits(wl, rs, ps, base_hit_blocks(wl, rs, ps), block_size)
    cached = int(hits.cached_tokens.sum())
    total = int(wl.n_tokens.sum())
    return (cached / total if total else None), cached


def knee(xs: list[float], ys: list[float]) -> int | None:
    """Index of the knee of an increasing curve (Kneedle): the point farthest above the chord
    from the first to the last point, both axes normalized; None for fewer than 3 points."""
    if len(xs) < 3 or xs[-1] == xs[0] or ys[-1] == ys[0]:
        return None
    x = (np.asarray(xs) - xs[0]) / (xs[-1] - xs[0])
    y = (np.asarray(ys) - ys[0]) / (ys[-1] - ys[0])
    return int(np.argmax(y - x))


def _tiers_for(
    specs: list[TierSpec], gbs: list[float], first_blocks: int | None, B: int, kv: int | None
) -> list[Tier]:
    out = []
    for k, (spec, gb) in enumerate(zip(specs, gbs, strict=True)):
        if k == 0 and first_blocks is not None:
            out.append(spec.tier(first_blocks * B * kv / 1e9 if kv else None, first_blocks))
            continue
        if kv is None:
            raise WorkloadError(
                f"tier {spec.name!r} is given in GB but the KV size per token is unknown: "
                "pass --model (a built-in name or a config.json), or --blocks for the first tier"
            )
        out.append(spec.tier(gb, int(gb * 1e9 // ((spec.block_tokens or B) * kv))))
    return out


def simulate(
    paths: list[str | Path] | None = None,
    *,
    db: str | Path | duckdb.DuckDBPyConnection = "kvtool.duckdb",
    tier_gb: str = "hbm=80",
    tier_overrides: list[str] | None = None,
    blocks: list[int] | None = None,
    config: SimConfig | None = None,
    model: str | None = None,
    tokenizer: str | None = None,
    fmt: str | None = None,
    hash_block_size: int = 512,
    progress: Progress | None = None,
) -> dict:
    """Simulate the traffic of ``paths`` (everything in ``db`` when None) on the tiers of
    ``tier_gb``; ``blocks`` gives the first tier's capacity in blocks instead (several values:
    a sweep). Returns the documented JSON (docs/simulate.md) and stores each run in
    ``sim_runs``. Raises ``WorkloadError``/``TierSpecError``/``UnknownModel`` for unusable input."""
    config = config or SimConfig()
    if config.policy not in POLICIES:
        raise WorkloadError(f"--policy {config.policy!r}: one of {', '.join(POLICIES)}")
    if config.write_policy not in ("back", "through"):
        raise WorkloadError(f"--write-policy {config.write_policy!r}: 'back' or 'through'")
    if config.concurrency is not None and config.concurrency < 1:
        raise WorkloadError(f"--concurrency must be >= 1, got {config.concurrency}")
    if (config.prefill_tps is not None and config.prefill_tps <= 0) or config.decode_tps <= 0:
        raise WorkloadError("--prefill-tps and --decode-tps must be positive")
    if config.replicas < 1:
        raise WorkloadError(f"--replicas must be >= 1, got {config.replicas}")
    if config.routing not in ROUTINGS:
        raise WorkloadError(f"--routing {config.routing!r}: one of {', '.join(ROUTINGS)}")
    if config.policy == "ttl" and config.ttl_s is None:
        raise WorkloadError("--policy ttl needs --ttl (e.g. 5m)")
    specs = apply_overrides(parse_tier_gb(tier_gb), tier_overrides or [])
    if blocks is not None and (not blocks or any(b < 0 for b in blocks)):
        raise WorkloadError("--blocks needs capacities >= 0")
    if blocks is not None and len(blocks) > 1 and any(len(s.gbs) > 1 for s in specs):
        raise WorkloadError("sweep either --blocks or one --tier-gb tier, not both")
    progress = progress or NullProgress()
    con = db if isinstance(db, duckdb.DuckDBPyConnection) else connect(db)
    try:
        traffic = load_traffic(
            con,
            paths=paths,
            tokenizer=tokenizer,
            fmt=fmt,
            hash_block_size=hash_block_size,
            progress=progress,
        )
        wl = traffic.wl
        B = config.block_size or (wl.base if wl.kind == "hash" else 16)
        if B <= 0 or B % wl.base:
            raise WorkloadError(f"--block-size {B} is not a multiple of the trace's {wl.base}")
        config = SimConfig(**{**config.__dict__, "block_size": B})
        if specs[0].block_tokens not in (None, B):
            raise WorkloadError(
                f"the first tier computes in blocks of --block-size ({B}); "
                f"--tier {specs[0].name}:block= applies to lower tiers only"
            )
        for spec in specs[1:]:
            if spec.block_tokens is not None and spec.block_tokens % B:
                raise WorkloadError(
                    f"tier {spec.name!r}: block {spec.block_tokens} is not a multiple of "
                    f"--block-size {B}"
                )
        model_name, kv = kv_shape_name(model, wl)
        if config.prefill_tps is None:
            preset = None
            if model_name:
                try:
                    preset = lookup(model_name).prefill_tps()
                except UnknownModel:
                    preset = None
            config = replace(config, prefill_tps=preset or DEFAULT_PREFILL_TPS)
        progress.stage("simulate", None)
        offsets, stream = block_streams(wl, B)
        nu = next_uses(offsets, stream) if config.policy == "belady" else None
        ideal_rate, ideal_cached = _ideal(wl, B)
        known = wl.ts[~np.isnan(wl.ts)]
        duration = float(known.max() - known.min()) if len(known) > 1 else None
        # the sweep: one list of first-tier blocks, or one tier's GB list
        swept = next((k for k, s in enumerate(specs) if len(s.gbs) > 1), None)
        grid: list[tuple[list[float], int | None]] = []
        if blocks is not None:
            grid = [([s.gbs[0] for s in specs], b) for b in blocks]
        elif swept is not None:
            for gb in specs[swept].gbs:
                gbs = [s.gbs[0] for s in specs]
                gbs[swept] = gb
                grid.append((gbs, None))
        else:
            grid = [([s.gbs[0] for s in specs], None)]
        timing = Timing(config.prefill_tps or DEFAULT_PREFILL_TPS, config.decode_tps)
        curve = None
        one_pass = config.policy == "lru" and config.concurrency == 1 and config.replicas == 1
        if len(grid) > 1 and len(specs) == 1 and one_pass:
            curve = lru_curve(offsets, stream, wl.n_tokens, B)
        points = []
        for n, (gbs, first_blocks) in enumerate(grid):
            tiers = _tiers_for(specs, gbs, first_blocks, B, kv)
            if curve is not None and tiers[0].blocks >= curve.exact_from:
                result = _from_curve(curve, tiers[0], wl, timing)
                points.append({**_point(result, tiers, config, duration), "method": "stack"})
                progress.update(n + 1, len(grid))
                continue
            engine = Engine(
                tiers,
                config.policy,
                B,
                kv,
                timing,
                config.concurrency,
                config.write_policy,
                config.ttl_s,
                config.replicas,
                config.routing,
                config.shared_lower,
            )
            result = engine.run(
                offsets,
                stream,
                wl.n_tokens,
                wl.ts,
                wl.output_tokens,
                nu,
                wl.session,
                (lambda d, t: progress.update(d, t)) if len(grid) == 1 else None,
            )
            points.append({**_point(result, tiers, config, duration), "method": "direct"})
            progress.update(n + 1, len(grid))
        _, usable = tier_loads(tiers, B, kv, timing.prefill_tps)  # same for every grid point
        echo = {
            **config.__dict__,
            "tier_gb": tier_gb,
            "tier_overrides": tier_overrides or [],
            "blocks": blocks,
            "model": model_name,
            "kv_bytes_per_token": kv,
            "usable_lower_tiers": {t.name: ok for t, ok in zip(specs[1:], usable[1:], strict=True)},
        }
        out = {
            "config": echo,
            "requests": wl.n,
            "prompt_tokens": int(wl.n_tokens.sum()),
            "trace_kind": wl.kind,
            "duration_s": duration,
            "ideal_hit_rate": ideal_rate,
            "ideal_cached_tokens": ideal_cached,
        }
        if len(points) == 1:
            out.update(points[0])
        else:
            out.update(_sweep(points, swept, blocks is not None, ideal_rate))
        out["run_id"] = _store(con, traffic.file_ids, out)
        return out
    finally:
        progress.close()
        if con is not db:
            con.close()


def _from_curve(curve: LRUCurve, tier: Tier, wl: Workload, timing: Timing) -> SimResult:
    """A one-tier LRU result from the stack curve; TTFT from the one-at-a-time schedule."""
    hits = curve.hits(tier.blocks)
    cached = hits * curve.block_size
    result = SimResult([tier.name], hit_tokens=[int(cached.sum())])
    result.requests = wl.n
    result.prompt_tokens = int(wl.n_tokens.sum())
    result.cached_tokens = int(cached.sum())
    result.requests_with_hit = int((hits > 0).sum())
    result.evictions = -1  # not tracked by the stack algorithm
    result.cached_per_request = cached
    result.ttft = sequential_ttft(wl.ts, wl.n_tokens, cached, wl.output_tokens, timing)
    return result


def _sweep(points: list[dict], swept: int | None, by_blocks: bool, ideal: float | None) -> dict:
    tier = 0 if by_blocks else swept
    assert tier is not None
    xs = [p["tiers"][tier]["blocks"] if by_blocks else p["tiers"][tier]["gb"] for p in points]
    ys = [p["token_hit_rate"] or 0.0 for p in points]
    k = knee(xs, ys)
    unit = "blocks" if by_blocks else "gb"
    need = {}
    for f in FRACTIONS:
        reached = [x for x, y in zip(xs, ys, strict=True) if ideal and y >= f * ideal - 1e-12]
        need[f"{round(f * 100)}%"] = min(reached) if reached else None
    return {
        "sweep": {
            "tier": points[0]["tiers"][tier]["name"],
            "unit": unit,
            "knee": None if k is None else xs[k],
            "capacity_for_share_of_ideal": need,
        },
        "points": points,
    }


def _store(con: duckdb.DuckDBPyConnection, file_ids: list[int], out: dict) -> int:
    run_id = next_id(con, "sim_runs", "run_id")
    cfg = out["config"]
    con.execute(
        "INSERT INTO sim_runs (run_id, file_ids, policy, block_size, config, result) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [
            run_id,
            file_ids,
            cfg["policy"],
            cfg["block_size"],
            orjson.dumps(cfg).decode(),
            orjson.dumps({k: v for k, v in out.items() if k != "config"}).decode(),
        ],
    )
    return run_id
