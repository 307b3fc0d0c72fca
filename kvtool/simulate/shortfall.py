"""The shortfall waterfall of a hosted provider: from the ideal cached tokens down to what the
provider gave, in tokens and dollars, one step per cause (docs/providers.md, "Shortfall
waterfall").

Levels, per request i (processing order), each the one before it with one more rule of the
provider applied; the step between two levels is their difference, named after that rule:

1. ``ideal``: an infinite cache with no prompt breaks, ``infinite + breaks``;
   step ``breaks``: the tokens prompt breaks lost (by cause, at the same block size; analyze's,
   passed in as ``kvtool.traffic.BreakLosses``);
2. ``infinite_cache``: the infinite-cache hits of prompt blocks at the workload's block size
   (16 for text logs, a hash trace's own): analyze's ``ideal_hit_rate_prompt_only``
   (``kvtool.traffic``). The waterfall stays prompt-only whatever ``--output-cache`` says: what
   the provider's cached output adds is its own step, ``generated_output``;
   step ``placement``: the provider's breakpoints, lookback and increments (negative where the
   provider serves a whole repeated prompt, of which the ideal computes one token);
3. the provider with no expiry, no minimum, one machine and no cached output;
   step ``generated_output``: what caching the generated output adds (a gain: negative);
4. ... with cached output (where the provider caches it); step ``routing``: the per-machine
   caches and overflow (where the provider routes);
5. ... routed; step ``minimum_length``;
6. ... with the minimum cacheable length; step ``ttl_expiry``;
7. ``predicted``: the provider's rules as they are; step ``unexplained``;
8. ``observed``: the logged cached tokens; ``predicted`` for a request that does not log
   prompt and cached tokens (so it leaves nothing unexplained).

The steps telescope, so they sum to ``ideal − observed`` exactly, request by request. What a
step is charged depends on this order: a prompt below the minimum that also expired counts
under ``minimum_length``. A step's dollars are ``Σ_i Δ_i × (input_i − cached_input_i) / 1e6``
at request i's own rates (the value of a cached token), so they add up exactly too (up to
float rounding).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from kvtool.simulate.providers import (
    PER_MTOK,
    ProviderPrediction,
    ProviderSpec,
    request_rates,
)
from kvtool.traffic import BreakLosses, Workload, base_hit_blocks, ideal_hits, passes, runs

Predictor = Callable[[ProviderSpec], ProviderPrediction]
"""A provider's engine on one workload: ``predict_provider`` or ``predict_anthropic`` with the
workload (and breakpoints) bound."""


def logged_usage(wl: Workload) -> np.ndarray:
    """The requests that log both prompt and cached tokens."""
    return ~np.isnan(wl.observed_prompt) & ~np.isnan(wl.observed_cached)


@dataclass(frozen=True)
class Amount:
    """Cached tokens and what they are worth in US dollars (at the cached-token discount)."""

    tokens: int
    dollars: float


@dataclass(frozen=True)
class CauseAmount:
    """The breaks of one cause: how many, and the cached tokens they lost."""

    breaks: int
    tokens: int
    dollars: float


@dataclass(frozen=True)
class Shortfall:
    """The waterfall's levels and steps over the trace (module docstring). ``breaks`` and
    ``breaks_by_cause`` are None when breaks were not analyzed (then ``ideal`` is the infinite
    cache); ``unexplained`` and ``observed`` are None when no request logs its cached tokens.
    ``logged_requests`` counts the requests that do; ``notes`` say what is left out."""

    ideal: Amount
    breaks: Amount | None
    breaks_by_cause: dict[str, CauseAmount] | None
    infinite_cache: Amount
    placement: Amount
    generated_output: Amount
    routing: Amount
    minimum_length: Amount
    ttl_expiry: Amount
    predicted: Amount
    unexplained: Amount | None
    observed: Amount | None
    logged_requests: int
    notes: tuple[str, ...]

    def to_json(self) -> dict:
        def amount(a: Amount | None) -> dict | None:
            return None if a is None else {"tokens": a.tokens, "dollars": a.dollars}

        breaks = None
        if self.breaks is not None and self.breaks_by_cause is not None:
            by_cause = {
                c: {"breaks": v.breaks, "tokens": v.tokens, "dollars": v.dollars}
                for c, v in self.breaks_by_cause.items()
            }
            breaks = {**amount(self.breaks), "by_cause": by_cause}  # type: ignore[dict-item]
        return {
            "ideal": amount(self.ideal),
            "breaks": breaks,
            "infinite_cache": amount(self.infinite_cache),
            "placement": amount(self.placement),
            "generated_output": amount(self.generated_output),
            "routing": amount(self.routing),
            "minimum_length": amount(self.minimum_length),
            "ttl_expiry": amount(self.ttl_expiry),
            "predicted": amount(self.predicted),
            "unexplained": amount(self.unexplained),
            "observed": amount(self.observed),
            "logged_requests": self.logged_requests,
            "notes": list(self.notes),
        }


def infinite_cache_tokens(wl: Workload) -> np.ndarray:
    """Per request, the infinite-cache cached tokens at the workload's block size."""
    rs = runs(wl)
    ps = passes(wl, rs)
    return ideal_hits(wl, rs, ps, base_hit_blocks(wl, rs, ps), wl.base).cached_tokens


def shortfall(
    wl: Workload,
    spec: ProviderSpec,
    predict: Predictor,
    predicted: ProviderPrediction,
    losses: BreakLosses | None,
) -> Shortfall:
    """The waterfall of ``predicted`` (``predict(spec)``) on ``wl``; ``predict`` runs once more
    per level in between (output and routing levels only where the provider has them).
    ``losses``: what prompt breaks lost (None: not analyzed)."""
    rates = request_rates(spec.rules, wl, predicted.ttl.name)
    value = (rates.input - rates.cached_input) * PER_MTOK

    def amount(tokens: np.ndarray) -> Amount:
        return Amount(int(tokens.sum()), float((tokens * value).sum()))

    def level(s: ProviderSpec) -> np.ndarray:
        return predict(s).predicted_cached_tokens.astype(np.int64)

    infinite = infinite_cache_tokens(wl).astype(np.int64)
    rules = spec.rules
    unbounded = replace(spec, no_expiry=True, no_minimum=True)
    one_machine = replace(unbounded, routing=False)
    prompt_only = level(replace(one_machine, rules=replace(rules, caches_output=False)))
    with_output = level(one_machine) if rules.caches_output else prompt_only
    routed = level(unbounded) if rules.routing_prefix_tokens is not None else with_output
    no_expiry = level(replace(spec, no_expiry=True))
    pred = predicted.predicted_cached_tokens.astype(np.int64)
    notes = []
    by_cause = None
    lost = np.zeros(wl.n, np.int64)
    if losses is None:
        notes.append(
            "breaks not analyzed (a hash trace has no prompt text to diff, or no break finder "
            "was given): the ideal is the infinite cache"
        )
    else:
        by_cause = {}
        costliest = sorted(losses.tokens.items(), key=lambda ct: (-int(ct[1].sum()), ct[0]))
        for cause, tokens in costliest:
            lost += tokens
            a = amount(tokens)
            by_cause[cause] = CauseAmount(losses.counts[cause], a.tokens, a.dollars)
    logged = logged_usage(wl)
    unexplained = observed = None
    if logged.any():
        obs = np.where(logged, np.nan_to_num(wl.observed_cached).astype(np.int64), pred)
        unexplained, observed = amount(pred - obs), amount(obs)
        if not logged.all():
            notes.append(
                f"{int((~logged).sum()):,} of {wl.n:,} requests log no cached tokens: they "
                "count as predicted (nothing unexplained)"
            )
    else:
        notes.append("no request logs cached tokens: the waterfall ends at predicted")
    return Shortfall(
        ideal=amount(infinite + lost),
        breaks=None if losses is None else amount(lost),
        breaks_by_cause=by_cause,
        infinite_cache=amount(infinite),
        placement=amount(infinite - prompt_only),
        generated_output=amount(prompt_only - with_output),
        routing=amount(with_output - routed),
        minimum_length=amount(routed - no_expiry),
        ttl_expiry=amount(no_expiry - pred),
        predicted=amount(pred),
        unexplained=unexplained,
        observed=observed,
        logged_requests=int(logged.sum()),
        notes=tuple(notes),
    )
