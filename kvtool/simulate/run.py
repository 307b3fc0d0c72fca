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
from kvtool.simulate import sample
from kvtool.simulate.compiled_engine import run_compiled, supports
from kvtool.simulate.config import DEFAULT_PREFILL_TPS, SimConfig
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
    Executor,
    OutputPaths,
    Warmup,
    Window,
    Workload,
    WorkloadParts,
    as_executor,
    first_through_hits,
    hit_blocks,
    kv_shape_name,
    load_traffic,
    measurement_window,
    output_blocks,
    parse_warmup,
    streams_with_outputs,
)
from kvtool.traffic.tree import dense_ids, depth_order


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
    engine: Executor | str | None = None,
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
    result's ``warnings``. ``engine``: where ingest and tokenization run ('local', 'ray', an
    ``Executor``: docs/scale.md)."""
    config = config or SimConfig()
    executor = as_executor(engine)
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
                engine=executor,
                parts=True,
            )
            wl = traffic.tree.head  # the requests; ``traffic.wl`` reads the whole tree
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
            lookups = 0
            if config.sample is None:
                wl = traffic.wl
                outputs = output_blocks(wl, config.output_cache)
                offsets, stream = streams_with_outputs(wl, B, outputs)
                lookups = len(stream)
                ideal = _ideals(wl, B, window.start, outputs, offsets, stream)
                point_runs = _point_runs(wl, offsets, stream, grid, config, kv, progress, window)
                points = [
                    SimPoint.of(r.result, tiers, config, duration, r.method)
                    for r, tiers in zip(point_runs, grid, strict=True)
                ]
            else:
                points, ideal = _sampled(
                    traffic.tree, grid, config, kv, duration, progress, warmup, window
                )
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
                wl = traffic.wl
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
                suggestions=tuple(_suggest_sample(lookups, len(grid), config)),
            )
            progress.stage("store", None)  # the run into sim_runs, then the database closed
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


SUGGEST_SAMPLE_LOOKUPS = 200_000_000
"""Above this many block lookups ``simulate`` suggests ``--sample``: the C engine looks up
20-50 M blocks a second (docs/performance.md), so a point of such a trace takes 4-10 s and a
sweep minutes, where a 1% sample simulates 1% of the lookups (35-90 times faster from 28 M
lookups on: docs/validation.md)."""


def _suggest_sample(lookups: int, points: int, config: SimConfig) -> list[str]:
    """The suggestion to use ``--sample`` for a large trace (none when sampling): advice, not a
    warning, so a run that gets it still succeeds."""
    if config.sample is not None or lookups <= SUGGEST_SAMPLE_LOOKUPS:
        return []
    return [
        f"the trace has {lookups:,} block lookups: each of the {points} points simulates all "
        "of them; --sample 0.01 estimates every point from 1% samples of its prefix families, "
        "with an error bar (docs/simulate.md, Sampling)"
    ]


CURVE_POINTS = 3
"""The one-pass curve costs about three direct simulations of one point (its loop does more per
lookup than LRU's: Mooncake conversation x20, 0.28 s against 0.11 s in C); it pays from three
points on, and fewer run directly (the same figures: ``tests/test_simulate.py``)."""


@dataclass(frozen=True)
class PointRun:
    """One grid point's engine result and how it was got (``stack`` or ``direct``)."""

    result: EngineResult
    method: str


def _point_runs(
    wl: Workload,
    offsets: np.ndarray,
    stream: np.ndarray,
    grid: list[list[Tier]],
    config: SimConfig,
    kv: int | None,
    progress: Progress,
    window: Window,
) -> list[PointRun]:
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
    one_pass = _one_pass(config, grid)
    largest = int(np.diff(offsets).max()) if len(offsets) > 1 else 0  # the curve's exact_from
    exact = sum(tiers[0].blocks >= max(largest, 1) for tiers in grid)
    if one_pass and exact >= CURVE_POINTS:
        curve = lru_curve(offsets, stream, wl.n_tokens, B)
    points = []
    for n, tiers in enumerate(grid):
        if curve is not None and tiers[0].blocks >= curve.exact_from:
            result = _from_curve(curve, tiers[0].blocks, tiers[0].name, wl, config, window)
            points.append(PointRun(result, "stack"))
        else:
            tick = (lambda d, t: progress.update(d, t)) if len(grid) == 1 else None
            requests = (offsets, stream, wl.n_tokens, wl.ts, wl.output_tokens, nu)
            if config.compiled and supports(config, tiers, wl.n, len(stream)):
                result = run_compiled(tiers, config, *requests, tick, count_from=window.start)
            else:
                engine = Engine(tiers, config=config, kv_bytes_per_token=kv)
                result = engine.run(*requests, wl.session, tick, count_from=window.start)
            points.append(PointRun(result, "direct"))
        progress.update(n + 1, len(grid))
    return points


def _one_pass(config: SimConfig, grid: list[list[Tier]]) -> bool:
    """Whether the stack model applies: LRU, one request at a time, one replica, one tier."""
    return (
        config.one_pass
        and config.policy == "lru"
        and config.concurrency == 1
        and config.replicas == 1
        and len(grid[0]) == 1
    )


def _sampled(
    tree: WorkloadParts,
    grid: list[list[Tier]],
    config: SimConfig,
    kv: int | None,
    duration: float | None,
    progress: Progress,
    warmup: Warmup | None,
    window: Window,
) -> tuple[list[SimPoint], Ideal]:
    """Each grid point estimated from ``config.sample_salts`` prefix-aware samples
    (``kvtool.simulate.sample``): the families and the ideal of prompt blocks come from the
    block tree, exactly, and only the sampled requests get block streams, output blocks and a
    simulation, on tiers as many times smaller as the sample is. The point's figures are scaled
    to the whole trace (hits by their share of the samples' ideal of prompt blocks times the
    exact one, ``sample.pooled``) and carry the estimate's error. The ideal is exact for a
    hash trace; with a text log's output blocks, the samples give their share over the
    prompts' ideal. A point's rate is ``config.sample``, doubled until its sampled first
    tier holds the largest request (``sample.point_rate``); a point whose samples would cost a
    whole run is simulated whole. A stored hash tree is read as its runs
    (``sample.run_set``): only the sampled requests' paths are unrolled into blocks, unless a
    point is simulated whole. Each sample's requests fall in random groups (``sample.draw``),
    whose spread is the error bar."""
    assert config.sample is not None and config.block_size is not None
    B = config.block_size
    head = tree.head
    largest = max((tree.max_depth() + 1) // (B // head.base), 1)
    rates = [
        sample.point_rate(config.sample, tiers[0].blocks, largest, config.sample_salts)
        for tiers in grid
    ]
    prompt_tokens = int(head.n_tokens[window.start :].sum())
    stack = _one_pass(config, grid)  # LRU one request at a time: the stack model, scaled
    whole: list[tuple[Workload, OutputPaths, np.ndarray, np.ndarray]] = []  # built if needed

    def whole_streams() -> tuple[Workload, OutputPaths, np.ndarray, np.ndarray]:
        if not whole:
            wl = tree.whole()
            outputs = output_blocks(wl, config.output_cache)
            whole.append((wl, outputs, *streams_with_outputs(wl, B, outputs)))
        return whole[0]

    sampled_rates = sorted({r for r in rates if r < 1})
    runs = tree.runs()
    if runs is not None:  # a stored hash tree: read as runs, not nodes
        kept_set = sample.run_set(head, runs, tree.index, sampled_rates, config.salts)
    else:
        kept_set = sample.whole_set(tree.whole(), sampled_rates, config.salts)
    # the auxiliary variable of the estimates: the ideal of prompt blocks, exact from the tree
    # (a text log's outputs would cost a pass over every request)
    base = kept_set.base_hits
    ideal_per_request = hit_blocks(head, base, B) * B
    prompt_ideal = int(ideal_per_request[window.start :].sum())
    drawn: list[tuple[int, int]] = []  # the smallest rate's samples: ideal with outputs, without
    points: list[SimPoint | None] = [None] * len(grid)
    for rate in sorted(set(rates)):
        members = [k for k, r in enumerate(rates) if r == rate]
        sub_grid = [grid[k] for k in members]
        if rate >= 1:  # the whole trace
            wl, _, offsets, stream = whole_streams()
            runs = _point_runs(wl, offsets, stream, sub_grid, config, kv, progress, window)
            one_group = np.zeros(wl.n, np.int64)
            for k, run in zip(members, runs, strict=True):
                totals = sample.GroupTotals.of(
                    one_group, run.result.cached_per_request, ideal_per_request, window.start
                )
                result, estimate = sample.pooled(
                    [run.result], [totals], 1.0, window.counted, prompt_tokens, prompt_ideal
                )
                point = SimPoint.of(result, grid[k], config, duration, run.method)
                points[k] = replace(point, sample=estimate)
            continue
        by_point: list[list[EngineResult]] = [[] for _ in members]
        by_groups: list[list[sample.GroupTotals]] = [[] for _ in members]
        pool, unit_keys, trunk = kept_set.wl, kept_set.keys[rate], kept_set.trunk[rate]
        for salt in config.salts:
            drawn_groups = sample.draw(unit_keys, rate, salt)
            kept = np.flatnonzero(drawn_groups >= 0)
            if not len(kept):
                continue
            pruned = sample.pruned(pool.select(kept))  # its own paths' nodes alone
            part = pruned.wl
            part_window = measurement_window(part, warmup)
            outputs = output_blocks(part, config.output_cache)
            part_offsets, part_stream = streams_with_outputs(part, B, outputs)
            own_hits = _ideal_hits(part, B, outputs, part_offsets, part_stream)
            if rate == min(rates):
                own = own_hits.ideal(part, B, part_window.start)
                drawn.append((own.cached_tokens, own.prompt_only_tokens))
            group, own_prompt = drawn_groups[kept], own_hits.prompt * B

            # the sample's blocks renumbered 0.. (the engines size their state by the ids)
            dense = dense_ids(part_stream, len(part.parent))
            ids, part_stream = dense.distinct, dense.index
            if stack:  # every capacity from the sample's stack distances, scaled
                curves = sample.corrected_curve(
                    part_offsets,
                    part_stream,
                    part.n_tokens,
                    B,
                    unit_keys[kept],
                    trunk[pruned.nodes[ids]],
                    rate,
                    kept_set.rows[kept],
                    head.n,
                    group,
                )
                assert curves.grouped is not None
                for j, tiers in enumerate(sub_grid):
                    capacity = tiers[0].blocks * rate
                    result = _from_curve(
                        curves.curve, capacity, tiers[0].name, part, config, part_window
                    )
                    by_point[j].append(result)
                    alone = curves.grouped.hits(capacity) * B  # each group's own estimate
                    by_groups[j].append(
                        sample.GroupTotals.of(group, alone, own_prompt, part_window.start)
                    )
                continue
            scaled = [
                [replace(t, blocks=max(1, round(t.blocks * rate))) for t in tiers]
                for tiers in sub_grid
            ]
            salt_runs = _point_runs(
                part, part_offsets, part_stream, scaled, config, kv, progress, part_window
            )
            for j, run in enumerate(salt_runs):
                by_point[j].append(run.result)
                by_groups[j].append(
                    sample.GroupTotals.of(
                        group, run.result.cached_per_request, own_prompt, part_window.start
                    )
                )
        if not by_point[0]:
            raise OptionError(
                "sample",
                f"{config.sample:g} kept no request in {config.sample_salts} salts: raise it "
                f"(the trace has {head.n} requests)",
            )
        for j, k in enumerate(members):
            result, estimate = sample.pooled(
                by_point[j], by_groups[j], rate, window.counted, prompt_tokens, prompt_ideal
            )
            point = SimPoint.of(result, grid[k], config, duration, "sampled")
            points[k] = replace(point, sample=estimate)
    if head.kind == "hash":  # no output blocks: the ideal is exact
        ideal = Ideal.of(prompt_tokens, prompt_ideal, prompt_ideal)
    elif drawn:  # with outputs: their share over the prompts' in the samples, times the exact
        with_outputs, prompts = (sum(x) for x in zip(*drawn, strict=True))
        cached = round(prompt_ideal * with_outputs / prompts) if prompts else 0
        ideal = Ideal.of(prompt_tokens, cached, prompt_ideal)
    else:  # every point simulated whole: so is the ideal
        wl, outputs, offsets, stream = whole_streams()
        ideal = _ideals(wl, B, window.start, outputs, offsets, stream)
    return [p for p in points if p is not None], ideal


def _prompt_blocks(wl: Workload, block_size: int) -> np.ndarray:
    """Per request, its prompt's full blocks at ``block_size``: the first of its stream."""
    prompt = np.zeros(wl.n, np.int64)
    has = wl.end >= 0
    prompt[has] = (wl.depth[wl.end[has]] + 1) // (block_size // wl.base)
    return prompt


@dataclass(frozen=True)
class Ideal:
    """The infinite cache over the counted requests: its token hit rate (None without prompt
    tokens) and cached tokens with the outputs cached, and its hit rate and cached tokens on
    prompts alone."""

    rate: float | None
    cached_tokens: int
    prompt_only_rate: float | None
    prompt_only_tokens: int

    @classmethod
    def of(cls, total: int, cached: int, prompt_only: int) -> Ideal:
        """From the counted prompt tokens and the cached tokens with and without outputs."""
        return cls(
            cached / total if total else None,
            cached,
            prompt_only / total if total else None,
            prompt_only,
        )


@dataclass(frozen=True)
class IdealHits:
    """Per request, the blocks the infinite cache hits: with the outputs cached, and on prompt
    blocks alone."""

    with_outputs: np.ndarray
    prompt: np.ndarray

    def ideal(self, wl: Workload, block_size: int, first: int) -> Ideal:
        """The ``Ideal`` over requests ``first..``."""
        total = int(wl.n_tokens[first:].sum())
        cached, prompt = (
            int(h[first:].sum()) * block_size for h in (self.with_outputs, self.prompt)
        )
        return Ideal.of(total, cached, prompt)


def _ideals(
    wl: Workload,
    block_size: int,
    first: int,
    outputs: OutputPaths,
    offsets: np.ndarray,
    stream: np.ndarray,
) -> Ideal:
    """The infinite cache over requests ``first..``, the cache having seen every request before
    them and (for ``rate``) the ``outputs`` of each (``_ideal_hits``)."""
    return _ideal_hits(wl, block_size, outputs, offsets, stream).ideal(wl, block_size, first)


def _ideal_hits(
    wl: Workload, block_size: int, outputs: OutputPaths, offsets: np.ndarray, stream: np.ndarray
) -> IdealHits:
    """Per request, the infinite cache's hits, every earlier request and (``with_outputs``) the
    ``outputs`` of each seen. ``offsets``/``stream``: the requests' blocks at ``block_size``,
    outputs last (``streams_with_outputs``). One pass over the stream in C
    (``kv_ideal_hits``), or from the block tree (``first_through_hits``) on an install without
    the C kernels: the same figures (leading blocks seen earlier, capped at
    ``(n - 1) // B``; availability only grows along a path, so counting whole blocks of the
    stream equals the tree's base-block count divided by ``k``)."""
    lib = library()
    if lib is None:
        order = depth_order(wl.depth)
        prompt = first_through_hits(wl, order)
        with_outputs = first_through_hits(wl, order, outputs) if len(outputs.nodes) else prompt
        return IdealHits(
            hit_blocks(wl, with_outputs, block_size), hit_blocks(wl, prompt, block_size)
        )
    caps = np.minimum(np.diff(offsets), np.maximum(wl.n_tokens - 1, 0) // block_size)
    prompt_blocks = _prompt_blocks(wl, block_size)  # the prompt's full blocks lead each stream
    n_ids = int(stream.max()) + 1 if len(stream) else 0
    hits = np.empty(wl.n, np.int64), np.empty(wl.n, np.int64)
    lib.kv_ideal_hits(
        wl.n,
        np.ascontiguousarray(offsets, np.int64),
        np.ascontiguousarray(stream, np.int64),
        prompt_blocks,
        np.ascontiguousarray(caps, np.int64),
        np.zeros(n_ids, np.uint8),
        *hits,
    )
    return IdealHits(*hits)


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
    curve: LRUCurve, capacity: float, tier: str, wl: Workload, config: SimConfig, window: Window
) -> EngineResult:
    """A one-tier LRU result from the stack curve at ``capacity`` blocks, counting the requests
    of ``window``; TTFT from the one-at-a-time schedule."""
    first = window.start
    hits = curve.hits(capacity)
    cached = hits * curve.block_size
    counted = int(cached[first:].sum())
    result = EngineResult([tier], hit_tokens=[counted], first_counted=first)
    result.requests = wl.n - first
    result.prompt_tokens = int(wl.n_tokens[first:].sum())
    result.cached_tokens = counted
    result.requests_with_hit = int((hits[first:] > 0).sum())
    result.evictions = -1  # not tracked by the stack algorithm
    result.cached_per_request = cached
    result.ttft = sequential_ttft(wl.ts, wl.n_tokens, cached, wl.output_tokens, config.timing)
    return result
