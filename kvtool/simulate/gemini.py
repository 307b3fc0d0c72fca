"""Gemini's explicit context caches (``cachedContents``) beside its implicit caching: what a
gateway that turns ``cache_control`` markers into explicit caches (LiteLLM) would have cached,
and the bill with each cache's storage (rules and prices: ``kvtool.providers`` data,
docs/providers.md "Gemini").

A provider has explicit caches when its data names a TTL ``explicit`` and it has no explicit
breakpoints (Gemini). Semantics, per request r in processing order at time t (a request
without a timestamp happens when the previous one did):

- **No marker: implicit.** r is predicted by the automatic engine (``predict_provider``) run
  over the whole workload, so its implicit cache also sees the prompts of marked requests.
- **Cached prefix.** With markers, LiteLLM puts the first continuous run of marked messages
  into one ``cachedContents`` object: r's prefix P ends at the boundary that ends that run
  (boundaries and prefix identities: ``kvtool.tokenize.breakpoints``, keyed by model, tenant
  and token ids). A prefix below the model's minimum (0 with ``no_minimum``) cannot be cached
  explicitly, so r stays implicit.
- **Lifetime.** The cache lives ``ttl`` seconds from its creation, not refreshed by use: the
  first TTL of r's markers that parses ("300s", "5m", "1h"; none: the provider's
  ``explicit`` TTL); ``no_expiry`` keeps it forever.
- **Read or create.** A live cache of P: r reads P at the cached-input price. Otherwise r
  creates it: P is written at ``input × write multiplier`` of the ``explicit`` TTL (1: the
  input price) and the cache's storage is billed once, for its whole life:
  ``P × ttl / 3600 × storage_per_mtok_hour / 1e6`` (0 where the model entry has no storage
  price; none for a TTL the data leaves open). The rest of the prompt is billed at the input
  price, output at the output price.

Storage is in ``bill_predicted`` only: the cached and written token columns (and so the
shortfall waterfall, which counts cached tokens) do not include it.

Approximations: with a tokenizer's own chat template only the marked messages end a
boundary, so a gap of unmarked messages between two marked ones is not seen and the run goes
on to the later marker; the request that creates a cache is billed for the creation only,
not also for reading it; implicit caching of the part after P is not modelled.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import numpy as np

from kvtool.providers import ProviderRules, model_prices
from kvtool.simulate.providers import (
    PER_MTOK,
    ProviderPrediction,
    ProviderSpec,
    arrival_times,
    predict_provider,
    priced_prediction,
    request_rates,
)
from kvtool.tokenize.breakpoints import Breakpoints
from kvtool.traffic.workload import Workload

EXPLICIT_TTL = "explicit"  # the name of an explicit cache's TTL in the provider's data
_DURATION = re.compile(r"^\s*(\d{1,9}(?:\.\d{1,9})?)\s*([smh])\s*$")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0}


def has_explicit_caches(rules: ProviderRules) -> bool:
    """Whether ``rules`` describe explicit caches created ahead (a TTL named ``explicit``,
    no breakpoints in the request)."""
    return not rules.explicit_breakpoints and any(t.name == EXPLICIT_TTL for t in rules.ttls)


def ttl_seconds(name: str, default: float) -> float:
    """A marker's TTL ("300s", "5m", "1.5h") in seconds; ``default`` when it does not parse or
    is not positive."""
    found = _DURATION.match(name)
    if found is None:
        return default
    seconds = float(found.group(1)) * _UNIT[found.group(2)]
    return seconds if seconds > 0 else default


@dataclass(frozen=True)
class ExplicitPrefix:
    """A marked request's explicit cache: the prefix's tokens, identity and TTL in seconds."""

    tokens: int
    identity: int
    ttl: float


def explicit_prefix(marks: Breakpoints, i: int, default_ttl: float) -> ExplicitPrefix | None:
    """Request i's cached prefix: up to the end of the first run of consecutive marked
    boundaries, with the first TTL of its markers (logged order) that parses, else
    ``default_ttl``; None without markers."""
    lo, hi = int(marks.marks[i]), int(marks.marks[i + 1])
    if lo == hi:
        return None
    marked = set(int(k) for k in marks.mark_at[lo:hi])
    last = min(marked)
    while last + 1 in marked:
        last += 1
    valid = (ttl_seconds(marks.ttl_names[int(c)], 0.0) for c in marks.mark_ttl[lo:hi])
    ttl = next((t for t in valid if t > 0), default_ttl)
    return ExplicitPrefix(int(marks.ends[last]), int(marks.hashes[last]), ttl)


def predict_gemini(wl: Workload, spec: ProviderSpec, marks: Breakpoints) -> ProviderPrediction:
    """Predicted reads, writes and bills of every request of ``wl``: explicit caches for the
    requests with markers ``marks`` (same request order), implicit caching for the rest
    (module docstring)."""
    rules = spec.rules
    if marks.n != wl.n:
        raise ValueError(f"breakpoints of {marks.n} requests for a workload of {wl.n}")
    implicit = predict_provider(wl, spec)
    default = rules.ttl(EXPLICIT_TTL).seconds
    default_ttl = math.inf if default is None else float(default)
    rates = request_rates(rules, wl, spec.retention.name)
    explicit_mult = request_rates(rules, wl, EXPLICIT_TTL).write_multiplier
    storage_price = {
        m: model_prices(rules, m or None).prices.storage_per_mtok_hour or 0.0
        for m in {m or "" for m in wl.models}
    }
    n = wl.n_tokens.astype(np.int64)
    min_tok = implicit.min_cacheable_tokens
    cached = implicit.predicted_cached_tokens.copy()
    written = implicit.predicted_write_tokens.copy()
    write_cost = written * rates.input * rates.write_multiplier
    storage = np.zeros(wl.n)
    times = arrival_times(wl.ts)
    expires: dict[int, float] = {}  # prefix identity -> when its cache goes
    for i in np.flatnonzero(np.diff(marks.marks) > 0):
        prefix = explicit_prefix(marks, int(i), default_ttl)
        assert prefix is not None
        size = min(prefix.tokens, int(n[i]))
        if size <= 0 or size < min_tok[i]:
            continue
        t = float(times[i])
        if prefix.identity in expires and (spec.no_expiry or t <= expires[prefix.identity]):
            cached[i], written[i], write_cost[i] = size, 0, 0.0
            continue
        expires[prefix.identity] = t + prefix.ttl
        cached[i], written[i] = 0, size
        write_cost[i] = size * rates.input[i] * explicit_mult[i]
        if math.isfinite(prefix.ttl):
            hours = prefix.ttl / 3600.0
            storage[i] = size * hours * storage_price[wl.models[i] or ""] * PER_MTOK
    pred = priced_prediction(spec, wl, min_tok, cached, written, write_cost, rates)
    bill = pred.bill_predicted + storage
    return replace(
        pred,
        bill_predicted=bill,
        totals=replace(pred.totals, bill_predicted=float(bill.sum())),
    )
