"""What ``simulate`` returns: named results, and their ``--json`` form.

``SimulateResult.to_json()`` is the documented JSON (docs/simulate.md, "JSON keys (stable)"):
for one configuration the point's keys sit at the top level; for a sweep they are under
``points`` beside ``sweep``. Every number in it is a Python int or float (no numpy scalars), so
the object serializes as it is. ``points_frame()`` is the same points as a pandas table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from kvtool.jsonview import JsonView
from kvtool.providers.tokens import TokenCounts
from kvtool.simulate.config import SimConfig
from kvtool.simulate.engine import EngineResult
from kvtool.simulate.providers import ProviderPrediction, ProviderSpec, request_rates
from kvtool.simulate.sample import SampleEstimate
from kvtool.simulate.shortfall import Shortfall, logged_usage
from kvtool.tiers.spec import Tier
from kvtool.traffic import Window
from kvtool.traffic.workload import Workload

if TYPE_CHECKING:
    import pandas as pd

    from kvtool.simulate.advisor import Advice  # advice is asked for with a provider only

MONTH_S = 30 * 86400
AGREEMENT = 0.02  # a request agrees when its predicted and logged hit rates differ by at most this
FRACTIONS = (0.5, 0.9, 0.99)  # the shares of the ideal hit rate a sweep reports capacities for


@dataclass(frozen=True)
class TierPoint:
    """One tier at one point: its capacity in GB (None when given in blocks without a known KV
    size), in blocks of ``block_tokens`` tokens, and in tokens."""

    name: str
    gb: float | None
    blocks: int
    block_tokens: int
    tokens: int


@dataclass(frozen=True)
class Percentiles:
    """p50, p90 and p99 of a distribution (None when it is empty)."""

    p50: float | None
    p90: float | None
    p99: float | None

    @classmethod
    def of(cls, values: np.ndarray) -> Percentiles:
        if len(values) == 0:
            return cls(None, None, None)
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return cls(float(p50), float(p90), float(p99))


@dataclass(frozen=True)
class Cost:
    """Dollars: recompute avoided over the trace and per month (scaled from the trace's
    duration; None without one), storage per month (every replica's private tiers), net."""

    recompute_avoided: float
    recompute_avoided_per_month: float | None
    storage_per_month: float
    storage_per_month_by_tier: dict[str, float]
    net_per_month: float | None


@dataclass(frozen=True)
class SimPoint:
    """One configuration's result. ``method``: ``stack`` (from the one-pass LRU curve; no
    eviction count), ``direct`` (simulated event by event) or ``sampled`` (estimated from
    samples, ``sample`` says how; the figures are scaled to the whole trace)."""

    tiers: tuple[TierPoint, ...]
    token_hit_rate: float | None
    hits_by_tier: dict[str, int]
    prefill_tokens_saved: int
    request_hit_rate: float | None
    ttft_estimate: Percentiles
    evictions: int | None
    uncached_blocks: int
    cost: Cost
    method: str
    sample: SampleEstimate | None = None

    @classmethod
    def of(
        cls,
        result: EngineResult,
        tiers: list[Tier],
        config: SimConfig,
        duration_s: float | None,
        method: str,
    ) -> SimPoint:
        """The point of an engine result on ``tiers`` (``config.block_size`` resolved)."""
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
        return cls(
            tiers=tuple(
                TierPoint(
                    name=t.name,
                    gb=t.gb,
                    blocks=t.blocks,
                    block_tokens=t.block_tokens or B,
                    tokens=t.blocks * (t.block_tokens or B),
                )
                for t in tiers
            ),
            token_hit_rate=result.token_hit_rate,
            hits_by_tier=dict(zip(result.tiers, result.hit_tokens, strict=True)),
            prefill_tokens_saved=result.cached_tokens,
            request_hit_rate=(
                result.requests_with_hit / result.requests if result.requests else None
            ),
            ttft_estimate=Percentiles.of(result.counted_ttft),
            evictions=None if result.evictions < 0 else result.evictions,
            uncached_blocks=result.uncached_blocks,
            cost=Cost(
                recompute_avoided=avoided,
                recompute_avoided_per_month=per_month,
                storage_per_month=storage_total,
                storage_per_month_by_tier=storage,
                net_per_month=None if per_month is None else per_month - storage_total,
            ),
            method=method,
        )

    def to_json(self) -> dict:
        """The point's object; ``sample`` only where the point was sampled."""
        out = asdict(self)
        out["tiers"] = [asdict(t) for t in self.tiers]
        if self.sample is None:
            del out["sample"]
        return out


def knee(xs: list[float], ys: list[float]) -> int | None:
    """Index of the knee of an increasing curve (Kneedle): the point farthest above the chord
    from the first to the last point, both axes normalized; None for fewer than 3 points."""
    if len(xs) < 3 or xs[-1] == xs[0] or ys[-1] == ys[0]:
        return None
    x = (np.asarray(xs) - xs[0]) / (xs[-1] - xs[0])
    y = (np.asarray(ys) - ys[0]) / (ys[-1] - ys[0])
    return int(np.argmax(y - x))


@dataclass(frozen=True)
class Sweep:
    """What a sweep over one tier's capacity says: the swept ``tier``, the ``unit`` of its
    capacity (``gb`` or ``blocks``), the ``knee`` and, for each share of the ideal hit rate in
    ``FRACTIONS`` (``"50%"``...), the smallest swept capacity reaching it (None: none does)."""

    tier: str
    unit: str
    knee: float | None
    capacity_for_share_of_ideal: dict[str, float | None]

    @classmethod
    def of(cls, points: list[SimPoint], tier: int, by_blocks: bool, ideal: float | None) -> Sweep:
        xs = [p.tiers[tier].blocks if by_blocks else p.tiers[tier].gb for p in points]
        ys = [p.token_hit_rate or 0.0 for p in points]
        k = knee(xs, ys)
        need = {}
        for f in FRACTIONS:
            reached = [x for x, y in zip(xs, ys, strict=True) if ideal and y >= f * ideal - 1e-12]
            need[f"{round(f * 100)}%"] = min(reached) if reached else None
        return cls(
            tier=points[0].tiers[tier].name,
            unit="blocks" if by_blocks else "gb",
            knee=None if k is None else xs[k],
            capacity_for_share_of_ideal=need,
        )


@dataclass(frozen=True)
class ProviderBill:
    """Dollars over the trace: without caching, with the predicted cache, and with the logged
    cached tokens (None when no request logs them; a request that does not log them counts
    at its predicted bill)."""

    no_cache: float
    predicted: float
    observed: float | None


@dataclass(frozen=True)
class ProviderReport:
    """A hosted provider's predicted cache next to the logged one (docs/simulate.md). The
    observed figures cover the requests that log prompt and cached tokens (None: none do);
    ``shortfall`` is the waterfall from the ideal down to them (``kvtool.simulate.shortfall``);
    ``advice`` the breakpoint advisor's changes (``kvtool.simulate.advisor``; None for a
    provider without explicit breakpoints); ``token_counts`` whether the prompt tokens are the
    provider's own count or approximate (``kvtool.providers.tokens``)."""

    name: str
    ttl: str
    predicted_cached_tokens: int
    predicted_hit_rate: float
    observed_cached_tokens: int | None
    observed_hit_rate: float | None
    request_agreement: float | None
    bill: ProviderBill
    fallback_models: tuple[str, ...]
    shortfall: Shortfall
    advice: tuple[Advice, ...] | None = None
    token_counts: TokenCounts | None = None

    @classmethod
    def of(
        cls,
        wl: Workload,
        spec: ProviderSpec,
        pred: ProviderPrediction,
        shortfall: Shortfall,
        writes: np.ndarray | None = None,
    ) -> ProviderReport:
        """``pred`` (``predict_provider(wl, spec)``, same request order) against ``wl``'s logs,
        with its ``shortfall``. ``writes``: the logged cache-write tokens per request (NaN: not
        logged), for a provider with explicit breakpoints.

        Observed bill per logged request, what the provider charged: the logged prompt tokens,
        of which the logged cached tokens (at most the prompt) at the cached-input price, the
        prompt rounded down to the increment minus them written at the
        TTL's write price (0 below the minimum), the rest at the input price, output at the
        output price, as the prediction bills its own hit. With ``writes`` (explicit
        breakpoints: only what a breakpoint writes is written) the written tokens are the
        logged ones, else the predicted ones, at most the prompt minus the logged cached."""
        totals = pred.totals
        logged = logged_usage(wl)
        obs_cached_tokens = obs_rate = agreement = observed_bill = None
        if logged.any():
            obs_prompt = wl.observed_prompt[logged]
            obs_cached = wl.observed_cached[logged]
            obs_cached_tokens = int(obs_cached.sum())
            total = float(obs_prompt.sum())
            obs_rate = obs_cached_tokens / total if total else None
            n = pred.prompt_tokens[logged].astype(float)
            with np.errstate(divide="ignore", invalid="ignore"):
                want = np.where(obs_prompt > 0, obs_cached / obs_prompt, 0.0)
                got = np.where(n > 0, pred.predicted_cached_tokens[logged] / n, 0.0)
            agreement = float(np.mean(np.abs(got - want) <= AGREEMENT + 1e-12))
            observed_bill = float(pred.bill_predicted[~logged].sum()) + float(
                _logged_bill(wl, spec, pred, logged, writes).sum()
            )
        return cls(
            name=pred.provider,
            ttl=pred.ttl.name,
            predicted_cached_tokens=totals.predicted_cached_tokens,
            predicted_hit_rate=totals.predicted_hit_rate,
            observed_cached_tokens=obs_cached_tokens,
            observed_hit_rate=obs_rate,
            request_agreement=agreement,
            bill=ProviderBill(totals.bill_no_cache, totals.bill_predicted, observed_bill),
            fallback_models=totals.fallback_models,
            shortfall=shortfall,
        )

    def to_json(self) -> dict:
        out = asdict(self)
        out["fallback_models"] = list(self.fallback_models)
        out["shortfall"] = self.shortfall.to_json()
        out["advice"] = None if self.advice is None else [a.to_json() for a in self.advice]
        out["token_counts"] = None if self.token_counts is None else self.token_counts.to_json()
        return out


def _logged_bill(
    wl: Workload,
    spec: ProviderSpec,
    pred: ProviderPrediction,
    logged: np.ndarray,
    writes: np.ndarray | None,
) -> np.ndarray:
    """The dollars of each logged request at its logged cached tokens (``ProviderReport.of``)."""
    rates = request_rates(spec.rules, wl, pred.ttl.name)
    inc = spec.rules.increment_tokens
    n = wl.observed_prompt[logged].astype(np.int64)
    cached = np.minimum(wl.observed_cached[logged].astype(np.int64), n)
    eligible = n >= pred.min_cacheable_tokens[logged]
    written = np.where(eligible, np.maximum((n // inc) * inc - cached, 0), 0)
    if writes is not None:
        guess = pred.predicted_write_tokens[logged].astype(np.int64)
        logged_writes = writes[logged]
        told = np.nan_to_num(logged_writes).astype(np.int64)
        written = np.minimum(np.where(np.isnan(logged_writes), guess, told), n - cached)
    out = wl.output_tokens[logged].astype(np.int64)
    return (
        (n - cached - written) * rates.input[logged]
        + written * rates.input[logged] * rates.write_multiplier[logged]
        + cached * rates.cached_input[logged]
        + out * rates.output[logged]
    ) * 1e-6


@dataclass(frozen=True, eq=False)
class SimulateResult(JsonView):
    """One ``simulate`` run: the resolved ``config`` (``block_size`` and ``prefill_tps`` set),
    the tier options as given, the model and KV size used, the traffic's totals, the ideal
    (infinite-cache) hit rate at this block size, one ``SimPoint`` per configuration (``sweep``
    is None exactly when there is one), the ``sim_runs`` row (``run_id``) and, with a provider,
    its predicted and logged cache (``provider``). ``window``: the requests counted after a
    warm-up (None: all); ``requests``, ``prompt_tokens``, ``duration_s``, the ideal and every
    point count only those. ``ideal_hit_rate`` follows ``config.output_cache``;
    ``ideal_hit_rate_prompt_only`` is the ideal of prompt blocks alone (equal to it when output
    caching is off or adds nothing). ``hash_identity``: what names a hash trace's block
    ('path'; None for text); ``warnings``: one line per file this run ingested whose records
    were mostly rejected (``FileReport.warning``)."""

    config: SimConfig
    tier_gb: str
    tier_overrides: tuple[str, ...]
    blocks: tuple[int, ...] | None
    model: str | None
    kv_bytes_per_token: int | None
    usable_lower_tiers: dict[str, bool]
    requests: int
    prompt_tokens: int
    trace_kind: str
    hash_identity: str | None
    duration_s: float | None
    ideal_hit_rate: float | None
    ideal_cached_tokens: int
    points: tuple[SimPoint, ...]
    sweep: Sweep | None = None
    run_id: int | None = None
    provider: ProviderReport | None = None
    window: Window | None = None
    warnings: tuple[str, ...] = ()
    ideal_hit_rate_prompt_only: float | None = None
    suggestions: tuple[str, ...] = ()

    @property
    def point(self) -> SimPoint:
        """The point of a run that is not a sweep."""
        if self.sweep is not None:
            raise ValueError("a sweep has several points: read .points")
        return self.points[0]

    def config_json(self) -> dict:
        """The ``config`` object: what the run used."""
        return {
            **self.config.to_json(),
            "tier_gb": self.tier_gb,
            "tier_overrides": list(self.tier_overrides),
            "blocks": None if self.blocks is None else list(self.blocks),
            "model": self.model,
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "usable_lower_tiers": dict(self.usable_lower_tiers),
        }

    def to_json(self) -> dict:
        """The ``--json`` object (module docstring)."""
        out = {
            "config": self.config_json(),
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "trace_kind": self.trace_kind,
            "hash_identity": self.hash_identity,
            "warnings": list(self.warnings),
            "suggestions": list(self.suggestions),
            "duration_s": self.duration_s,
            "warmup": None if self.window is None else self.window.to_json(),
            "ideal_hit_rate": self.ideal_hit_rate,
            "ideal_cached_tokens": self.ideal_cached_tokens,
            "ideal_hit_rate_prompt_only": self.ideal_hit_rate_prompt_only,
        }
        if self.sweep is None:
            out.update(self.point.to_json())
        else:
            out["sweep"] = asdict(self.sweep)
            out["points"] = [p.to_json() for p in self.points]
        if self.provider is not None:
            out["provider"] = self.provider.to_json()
        out["run_id"] = self.run_id
        return out

    def points_frame(self) -> pd.DataFrame:
        """One row per point: each tier's capacity (``<tier>_gb``, ``<tier>_blocks``), the hit
        rates, tokens saved, TTFT percentiles, evictions, the cost figures and ``method``."""
        import pandas as pd

        rows = []
        for p in self.points:
            row: dict[str, object] = {}
            for t in p.tiers:
                row[f"{t.name}_gb"] = t.gb
                row[f"{t.name}_blocks"] = t.blocks
            row.update(
                token_hit_rate=p.token_hit_rate,
                request_hit_rate=p.request_hit_rate,
                prefill_tokens_saved=p.prefill_tokens_saved,
                ttft_p50=p.ttft_estimate.p50,
                ttft_p90=p.ttft_estimate.p90,
                ttft_p99=p.ttft_estimate.p99,
                evictions=p.evictions,
                uncached_blocks=p.uncached_blocks,
                recompute_avoided=p.cost.recompute_avoided,
                recompute_avoided_per_month=p.cost.recompute_avoided_per_month,
                storage_per_month=p.cost.storage_per_month,
                net_per_month=p.cost.net_per_month,
                method=p.method,
            )
            rows.append(row)
        return pd.DataFrame(rows)
