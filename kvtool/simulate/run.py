"""``simulate``: the traffic of some logs through a cache tiering, for one configuration or a
sweep over one tier's capacity.

Steps: load the traffic (ingesting and tokenizing what is new), resolve the block size (16, or a
hash trace's own) and the prefill speed (the model's preset), expand every request into its
blocks, then run each grid point: LRU sweeps of one tier, one request at a time, come from the
one-pass stack curve wherever it is exact (``kvtool.simulate.sweep``), everything else from the
engine. With output caching (``SimConfig.output_cache``, the default) each request's stream
ends with its output blocks (``kvtool.traffic.output_blocks``): the cache keeps them as vLLM
keeps a finished request's full blocks, and the ideal counts them the same way. With a warm-up
(``SimConfig.warmup``) every request goes through the cache and every
figure counts the requests of the measurement window only. Each run is stored in ``sim_runs``
with the JSON it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

from kvtool.errors import NotFoundError, OptionError
from kvtool.native import library
from kvtool.progress import NullProgress, Progress
from kvtool.providers import load_provider
from kvtool.providers.tokens import token_counts
from kvtool.simulate.compiled_engine import run_compiled, supports
from kvtool.simulate.config import DEFAULT_PREFILL_TPS, SimConfig, Timing
from kvtool.simulate.engine import Engine, EngineResult, next_uses, sequential_ttft, tier_loads
from kvtool.simulate.policies import POLICIES
from kvtool.simulate.providers import ProviderSpec, predict_provider
from kvtool.simulate.result import ProviderReport, SimPoint, SimulateResult, Sweep
from kvtool.simulate.shortfall import Predictor, shortfall
from kvtool.simulate.sweep import LRUCurve, lru_curve
from kvtool.store import DEFAULT_DB, DbArg, open_db
from kvtool.store.runs import insert_sim_run
from kvtool.tiers.kv import lookup
from kvtool.tiers.spec import Tier, TierSpec, apply_overrides, check_block_sizes, parse_tier_gb
from kvtool.traffic import (
    BreakFinder,
    OutputPaths,
    Window,
    Workload,
    base_hit_blocks,
    ideal_hits,
    kv_shape_name,
    load_traffic,
    measurement_window,
    output_blocks,
    output_hit_blocks,
    parse_warmup,
    passes,
    runs,
    streams_with_outputs,
)


def simulate(
    paths: list[str | Path] | None = None,
    *,
    db: DbArg = DEFAULT_DB,
    tier_gb: str = "hbm=80",
    tier_overrides: list[str] | None = None,
    blocks: list[int] | None = None,
    config: SimConfig | None = None,
    model: str | None = None,
    tokenizer: str | None = None,
    fmt: str | None = None,
    hash_block_size: int = 512,
    progress: Progress | None = None,
    redact: bool = False,
    provider: str | None = None,
    provider_ttl: str | None = None,
    rules: str | Path | None = None,
    prices: str | Path | None = None,
    breaks: BreakFinder | None = None,
) -> SimulateResult:
    """Simulate the traffic of ``paths`` (everything in ``db`` when None) on the tiers of
    ``tier_gb``; ``blocks`` gives the first tier's capacity in blocks instead (several values:
    a sweep). Stores the run in ``sim_runs``. Raises ``OptionError`` (naming the parameter),
    ``NotFoundError`` (an unknown ``model``) or ``WorkloadError`` for unusable input.
    ``redact``: ingest ``paths`` without prompt text (docs/redaction.md). ``provider`` (with
    its TTL ``provider_ttl`` and the override files ``rules`` and ``prices``) adds that hosted
    provider's predicted cache and bill (``SimulateResult.provider``; docs/providers.md);
    ``breaks`` finds what prompt breaks lost for its shortfall waterfall (the command line
    passes ``kvtool.analyze.break_losses``; None: the waterfall starts at the infinite cache).
    A file of ``paths`` whose records were mostly rejected is simulated, and named in the
    result's ``warnings``."""
    config = config or SimConfig()
    if config.warmup is not None and provider is not None:
        raise OptionError(
            "warmup",
            "does not apply to provider predictions: their bill and shortfall cover every "
            "request; run the provider without it",
        )
    spec = _provider_spec(provider, provider_ttl, rules, prices)
    specs = apply_overrides(parse_tier_gb(tier_gb), tier_overrides or [])
    if blocks is not None and (not blocks or any(b < 0 for b in blocks)):
        raise OptionError("blocks", "needs capacities >= 0")
    swept = next((k for k, s in enumerate(specs) if len(s.gbs) > 1), None)
    if blocks is not None and len(blocks) > 1 and swept is not None:
        raise OptionError("blocks", "cannot be a list while a tier_gb tier is swept")
    progress = progress or NullProgress()
    try:
        with open_db(db) as con:
            traffic = load_traffic(
                con,
                paths=paths,
                tokenizer=tokenizer,
                fmt=fmt,
                hash_block_size=hash_block_size,
                progress=progress,
                redact=redact,
            )
            wl = traffic.wl
            B = config.block_size or (wl.base if wl.kind == "hash" else 16)
            if B % wl.base:
                raise OptionError(
                    "block_size", f"{B} is not a multiple of the trace's block size {wl.base}"
                )
            check_block_sizes(specs, B)
            model_name, kv = kv_shape_name(model, wl)
            config = replace(
                config,
                block_size=B,
                prefill_tps=config.prefill_tps or _preset_prefill_tps(model_name),
            )
            progress.stage("simulate", None)
            warmup = None if config.warmup is None else parse_warmup(config.warmup)
            window = measurement_window(wl, warmup)
            outputs = output_blocks(wl, config.output_cache)
            offsets, stream = streams_with_outputs(wl, B, outputs)
            ideal = _ideals(wl, B, window.start, outputs, offsets, stream)
            counted_ts = wl.ts[window.start :]
            known = counted_ts[~np.isnan(counted_ts)]
            duration = float(known.max() - known.min()) if len(known) > 1 else None
            try:
                grid = _grid(specs, blocks, swept, B, kv)
            except OptionError as exc:
                if spec is None or exc.param != "model":
                    raise
                raise OptionError(
                    "model",
                    f"{exc.message}; the provider's figures do not depend on the self-hosted "
                    "tiers simulated next to them: any built-in model or --blocks N will do",
                ) from None
            points = _points(wl, offsets, stream, grid, config, kv, duration, progress, window)
            _, usable = tier_loads(grid[0], B, kv, config.timing.prefill_tps)
            report = None
            if spec is not None:
                # the provider's engines and the breakpoint advisor (they tokenize prompt text)
                from kvtool.simulate.advisor import advise_breakpoints
                from kvtool.simulate.anthropic import predict_anthropic
                from kvtool.simulate.gemini import has_explicit_caches, predict_gemini
                from kvtool.traffic.breakpoints import load_breakpoints, logged_cache_writes

                explicit = spec.rules.explicit_breakpoints
                # explicit breakpoints: the markers placed on the prompts, once for the engine
                # and the advisor; explicit caches (Gemini): the markers where there is prompt
                # text to place them on, else implicit caching only; otherwise automatic
                # prefix caching
                gemini = has_explicit_caches(spec.rules) and not (
                    wl.kind == "hash" or traffic.bundle is None or traffic.redacted
                )
                marks = load_breakpoints(con, traffic, progress) if explicit or gemini else None
                predict: Predictor = partial(predict_provider, wl)
                if marks is not None:
                    engine = predict_gemini if gemini else predict_anthropic
                    predict = partial(engine, wl, marks=marks)
                pred = predict(spec)
                losses = breaks(con, traffic, progress) if breaks is not None else None
                waterfall = shortfall(wl, spec, predict, pred, losses)
                writes = logged_cache_writes(con, traffic) if explicit else None
                report = replace(
                    ProviderReport.of(wl, spec, pred, waterfall, writes),
                    advice=(
                        advise_breakpoints(con, traffic, spec, marks)
                        if explicit and marks is not None
                        else None
                    ),
                    token_counts=token_counts(
                        spec.rules,
                        traffic.bundle.name if traffic.bundle else "the trace's own counts",
                        (m for m in wl.models if m),
                    ),
                )
            result = SimulateResult(
                config=config,
                tier_gb=tier_gb,
                tier_overrides=tuple(tier_overrides or ()),
                blocks=None if blocks is None else tuple(blocks),
                model=model_name,
                kv_bytes_per_token=kv,
                usable_lower_tiers=dict(zip([s.name for s in specs[1:]], usable[1:], strict=True)),
                requests=window.counted,
                prompt_tokens=int(wl.n_tokens[window.start :].sum()),
                trace_kind=wl.kind,
                hash_identity=wl.hash_identity,
                duration_s=duration,
                ideal_hit_rate=ideal.rate,
                ideal_cached_tokens=ideal.cached_tokens,
                ideal_hit_rate_prompt_only=ideal.prompt_only_rate,
                points=tuple(points),
                # ``blocks`` sweeps the first tier (and excludes a swept tier_gb tier)
                sweep=(
                    None
                    if len(points) == 1
                    else Sweep.of(points, swept or 0, blocks is not None, ideal.rate)
                ),
                provider=report,
                window=window if warmup is not None else None,
                warnings=tuple(traffic.warnings),
            )
            body = result.to_json()
            run_id = insert_sim_run(
                con,
                file_ids=traffic.file_ids,
                policy=config.policy,
                block_size=B,
                config=body["config"],
                result={k: v for k, v in body.items() if k not in ("config", "run_id")},
            )
            return replace(result, run_id=run_id)
    finally:
        progress.close()


def _provider_spec(
    name: str | None, ttl: str | None, rules: str | Path | None, prices: str | Path | None
) -> ProviderSpec | None:
    """The provider to predict (None: none), checked before any log is read."""
    if name is None:
        for param, value in (("provider_ttl", ttl), ("rules", rules), ("prices", prices)):
            if value is not None:
                raise OptionError(param, "needs provider")
        return None
    loaded = load_provider(name, rules_file=rules, prices_file=prices)
    try:
        return ProviderSpec(loaded, ttl=ttl)
    except OptionError as exc:
        raise OptionError("provider_ttl", exc.message) from None


def _preset_prefill_tps(model_name: str | None) -> float:
    """The model's prefill estimate (``KVShape.prefill_tps``), else ``DEFAULT_PREFILL_TPS``."""
    if model_name:
        try:
            preset = lookup(model_name).prefill_tps()
        except NotFoundError:
            preset = None
        if preset:
            return preset
    return DEFAULT_PREFILL_TPS


def _grid(
    specs: list[TierSpec], blocks: list[int] | None, swept: int | None, B: int, kv: int | None
) -> list[list[Tier]]:
    """The tiers of each point: one per first-tier capacity in ``blocks``, else one per GB of the
    ``swept`` tier, else one."""
    firsts = [s.gbs[0] for s in specs]
    if blocks is not None:
        return [_tiers_for(specs, firsts, b, B, kv) for b in blocks]
    if swept is not None:
        sizes = [[*firsts[:swept], gb, *firsts[swept + 1 :]] for gb in specs[swept].gbs]
        return [_tiers_for(specs, gbs, None, B, kv) for gbs in sizes]
    return [_tiers_for(specs, firsts, None, B, kv)]


CURVE_POINTS = 3
"""The one-pass curve costs about three direct simulations of one point (its loop does more per
lookup than LRU's: Mooncake conversation x20, 0.28 s against 0.11 s in C); it pays from three
points on, and fewer run directly (the same figures: ``tests/test_simulate.py``)."""


def _points(
    wl: Workload,
    offsets: np.ndarray,
    stream: np.ndarray,
    grid: list[list[Tier]],
    config: SimConfig,
    kv: int | None,
    duration: float | None,
    progress: Progress,
    window: Window,
) -> list[SimPoint]:
    """Each grid point from the one-pass LRU curve where it is exact and serves at least
    ``CURVE_POINTS`` points, else from the engine (its compiled twin wherever that reproduces
    it: ``compiled_engine.supports``); each counts the
    requests of ``window``. Request i's blocks are ``stream[offsets[i]:offsets[i + 1]]``
    (``streams_with_outputs``: its output blocks last, which it inserts but cannot hit, its hits
    stopping at ``(n - 1) // B``)."""
    B = config.block_size
    assert B is not None
    reach = np.maximum(wl.n_tokens - 1, 0) // B  # the blocks a request can hit
    nu = next_uses(offsets, stream, reach) if POLICIES[config.policy].cls.needs_next_use else None
    curve = None
    one_pass = (
        config.one_pass
        and config.policy == "lru"
        and config.concurrency == 1
        and config.replicas == 1
        and len(grid[0]) == 1
    )
    largest = int(np.diff(offsets).max()) if len(offsets) > 1 else 0  # the curve's exact_from
    exact = sum(tiers[0].blocks >= max(largest, 1) for tiers in grid)
    if one_pass and exact >= CURVE_POINTS:
        curve = lru_curve(offsets, stream, wl.n_tokens, B)
    points = []
    for n, tiers in enumerate(grid):
        if curve is not None and tiers[0].blocks >= curve.exact_from:
            result = _from_curve(curve, tiers[0], wl, config.timing, window.start)
            points.append(SimPoint.of(result, tiers, config, duration, "stack"))
        else:
            tick = (lambda d, t: progress.update(d, t)) if len(grid) == 1 else None
            requests = (offsets, stream, wl.n_tokens, wl.ts, wl.output_tokens, nu)
            if config.compiled and supports(config, tiers, wl.n):
                result = run_compiled(tiers, config, *requests, tick, count_from=window.start)
            else:
                engine = Engine(tiers, config=config, kv_bytes_per_token=kv)
                result = engine.run(*requests, wl.session, tick, count_from=window.start)
            points.append(SimPoint.of(result, tiers, config, duration, "direct"))
        progress.update(n + 1, len(grid))
    return points


@dataclass(frozen=True)
class Ideal:
    """The infinite cache over the counted requests: its token hit rate (None without prompt
    tokens) and cached tokens with the outputs cached, and its hit rate on prompts alone."""

    rate: float | None
    cached_tokens: int
    prompt_only_rate: float | None


def _ideals(
    wl: Workload,
    block_size: int,
    first: int,
    outputs: OutputPaths,
    offsets: np.ndarray,
    stream: np.ndarray,
) -> Ideal:
    """The infinite cache over requests ``first..``, the cache having seen every request before
    them and (for ``rate``) the ``outputs`` of each. ``offsets``/``stream``: the requests' blocks
    at ``block_size``, outputs last (``streams_with_outputs``). One pass over the stream in C
    (``kv_ideal_hits``), or the block tree's passes (``kvtool.traffic.ideal``) on an install
    without the C kernels: the same figures (leading blocks seen earlier, capped at
    ``(n - 1) // B``; availability only grows along a path, so counting whole blocks of the
    stream equals the tree's base-block count divided by ``k``)."""
    total = int(wl.n_tokens[first:].sum())
    lib = library()
    if lib is not None:
        caps = np.minimum(np.diff(offsets), np.maximum(wl.n_tokens - 1, 0) // block_size)
        k = block_size // wl.base
        has = wl.end >= 0
        prompt = np.zeros(wl.n, np.int64)  # the prompt's full blocks lead each stream
        prompt[has] = (wl.depth[wl.end[has]] + 1) // k
        n_ids = int(stream.max()) + 1 if len(stream) else 0
        hits = np.empty(wl.n, np.int64), np.empty(wl.n, np.int64)
        lib.kv_ideal_hits(
            wl.n,
            np.ascontiguousarray(offsets, np.int64),
            np.ascontiguousarray(stream, np.int64),
            prompt,
            np.ascontiguousarray(caps, np.int64),
            np.zeros(n_ids, np.uint8),
            *hits,
        )
        with_outputs, prompt_only = (int(h[first:].sum()) * block_size for h in hits)
    else:
        rs = runs(wl)
        ps = passes(wl, rs)

        def cached(base: np.ndarray) -> int:
            return int(ideal_hits(wl, rs, ps, base, block_size).cached_tokens[first:].sum())

        prompt_only = cached(base_hit_blocks(wl, rs, ps))
        with_outputs = (
            cached(output_hit_blocks(wl, rs, ps, outputs).base_hits)
            if len(outputs.nodes)
            else prompt_only
        )
    return Ideal(
        with_outputs / total if total else None,
        with_outputs,
        prompt_only / total if total else None,
    )


def _tiers_for(
    specs: list[TierSpec], gbs: list[float], first_blocks: int | None, B: int, kv: int | None
) -> list[Tier]:
    out = []
    for k, (spec, gb) in enumerate(zip(specs, gbs, strict=True)):
        if k == 0 and first_blocks is not None:
            out.append(spec.tier(first_blocks * B * kv / 1e9 if kv else None, first_blocks))
            continue
        if kv is None:
            raise OptionError(
                "model",
                f"is needed: tier {spec.name!r} is given in GB but the KV size per token is "
                "unknown (a built-in name or a config.json; or blocks for the first tier)",
            )
        out.append(spec.tier(gb, int(gb * 1e9 // ((spec.block_tokens or B) * kv))))
    return out


def _from_curve(
    curve: LRUCurve, tier: Tier, wl: Workload, timing: Timing, first: int
) -> EngineResult:
    """A one-tier LRU result from the stack curve, counting requests ``first..``; TTFT from the
    one-at-a-time schedule."""
    hits = curve.hits(tier.blocks)
    cached = hits * curve.block_size
    counted = int(cached[first:].sum())
    result = EngineResult([tier.name], hit_tokens=[counted], first_counted=first)
    result.requests = wl.n - first
    result.prompt_tokens = int(wl.n_tokens[first:].sum())
    result.cached_tokens = counted
    result.requests_with_hit = int((hits[first:] > 0).sum())
    result.evictions = -1  # not tracked by the stack algorithm
    result.cached_per_request = cached
    result.ttft = sequential_ttft(wl.ts, wl.n_tokens, cached, wl.output_tokens, timing)
    return result
