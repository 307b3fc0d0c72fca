"""What a hosted provider with automatic prefix caching would have cached, request by request,
and the bill with and without it (OpenAI, DeepSeek, Gemini implicit caching; the rules and
prices are ``kvtool.providers`` data, docs/providers.md).

Semantics, per request r in processing order (timestamp order; a request without a timestamp
happens when the previous one did), with prompt n tokens and full 16-token blocks b_1..b_m
(b_k names the prefix of k·16 tokens, keyed by model and tenant, so nothing is shared across
them):

- **Retained**: a prefix b_k is in the cache at time t if an earlier request wrote it, it was
  last used at u with ``t − u ≤ idle`` and written at w with ``t − w ≤ max_lifetime``. A bound
  that is None never expires (best-effort retention: DeepSeek, Gemini implicit).
- **Hit**: the longest retained prefix b_1..b_h (stopping at the first prefix not retained),
  ``16·h`` tokens, rounded down to the provider's increment (OpenAI 128, DeepSeek 64), and 0
  when that or n is below the model's minimum cacheable length. The match is at 16-token
  resolution: with an increment that is not a multiple of 16 (Gemini: 1) a hit can come out
  up to 15 tokens short of the provider's token-exact match.
- **Refresh and write**: after r, every prefix of r is retained. The prefixes of the hit are
  touched (last use = t) when the TTL refreshes on a hit, and keep their write time; every
  other prefix of r (new, expired, or cut off by the rounding) is written at t.
- **Routing** (providers with ``routing_prefix_tokens``: OpenAI): each machine has its own
  cache, so "retained" above means retained on the machine r is sent to. r's *route* is its
  first ``R = routing_prefix_tokens`` tokens (the prefix of ⌊R/B⌋ base blocks, at least one;
  the whole prompt's full blocks when it has fewer), its cache key (``prompt_cache_key``; None
  is one key) and its model; the tenant is in the block hashes. Within a route, r goes to the
  lowest machine m = 0, 1, ... that took fewer than ``overflow_rpm`` of the route's requests
  in the 60 s before r (``t − s < 60``), so each machine takes at most ``overflow_rpm`` per
  minute and the rest overflow to the next. Machine m of one route shares no cache with any
  other route or machine. A request without a timestamp goes to machine 0 and is not counted
  (a rate needs times). ``ProviderSpec.routing=False`` puts every request on one machine.
- **Generated output** (providers with ``caches_output``: DeepSeek): after r's prefixes, the
  blocks its output adds (``kvtool.traffic.output_blocks.output_paths``: seen where a later
  request of the session sends the answer back) are retained too, written at t unless already
  retained (then touched), on r's machine.
- **Bill** in US dollars: ``predicted_write_tokens`` (the prompt rounded down to the increment,
  minus the hit; 0 below the minimum) at the model's cache-write price for the TTL, the hit at
  the cached-input price, the rest of the prompt at the input price, output at the output
  price; without caching, the whole prompt at the input price. Where the provider has peak
  hours (DeepSeek), a request outside them (weekends included) is billed at the off-peak rates
  and its write at the off-peak input price times the entry's write multiplier.

Not modelled here: Anthropic's breakpoints, long-prompt tariffs; routing is the documented
rule made deterministic (docs/providers.md, "OpenAI routing"): a real router hashes, so two
routes can share a machine, and an overflow request may meet a machine that another route's
overflow warmed.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from kvtool.errors import OptionError
from kvtool.providers import ModelPrices, ProviderRules, min_cacheable_tokens, model_prices
from kvtool.traffic.blocks import block_streams
from kvtool.traffic.output_blocks import output_paths
from kvtool.traffic.workload import Workload

PER_MTOK = 1e-6
ROUTING_WINDOW_S = 60.0  # overflow_rpm counts the requests of this many seconds


@dataclass(frozen=True)
class ProviderSpec:
    """A provider's rules and the retention to simulate. ``ttl`` names one of the provider's
    TTLs (None: its default); ``idle_seconds`` / ``max_seconds`` replace the TTL's idle time
    and hard cap (needed where the data has none: best effort); ``no_expiry`` keeps every
    entry forever and ``no_minimum`` caches prompts of any length (the what-if steps of the
    shortfall waterfall); ``routing=False`` sends every request to one machine (no per-machine
    caches, no overflow; only matters where the provider routes). Validated on creation."""

    rules: ProviderRules
    ttl: str | None = None
    idle_seconds: float | None = None
    max_seconds: float | None = None
    no_expiry: bool = False
    no_minimum: bool = False
    routing: bool = True

    def __post_init__(self) -> None:
        if not self.rules.automatic:
            raise OptionError("rules", f"{self.rules.name} has no automatic prefix caching")
        names = [t.name for t in self.rules.ttls]
        if self.ttl is not None and self.ttl not in names:
            raise OptionError("ttl", f"{self.ttl!r} is not one of {self.rules.name}'s {names}")
        for param in ("idle_seconds", "max_seconds"):
            value = getattr(self, param)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise OptionError(param, f"must be a positive number of seconds, not {value}")

    @property
    def retention(self) -> Retention:
        """The TTL simulated, with the overrides applied."""
        ttl = self.rules.ttl(self.ttl or self.rules.default_ttl)
        if self.no_expiry:
            return Retention(ttl.name, None, None, ttl.refresh_on_hit)
        idle = self.idle_seconds if self.idle_seconds is not None else ttl.seconds
        cap = self.max_seconds if self.max_seconds is not None else ttl.max_seconds
        return Retention(ttl.name, idle, cap, ttl.refresh_on_hit)

    def min_tokens(self, model: str | None) -> int:
        """The shortest prompt cached for ``model`` (0 with ``no_minimum``)."""
        return 0 if self.no_minimum else min_cacheable_tokens(self.rules, model)


@dataclass(frozen=True)
class Retention:
    """The retention simulated: the provider's TTL ``name`` with its idle time and hard cap
    since the write, in seconds (None: never expires), and whether a hit refreshes it."""

    name: str
    idle_seconds: float | None
    max_seconds: float | None
    refresh_on_hit: bool


@dataclass(frozen=True)
class PredictedRequest:
    """One request's prediction: tokens and dollars (``bill_predicted`` with caching,
    ``bill_no_cache`` without)."""

    req_id: int
    model: str | None
    prompt_tokens: int
    predicted_cached_tokens: int
    predicted_write_tokens: int
    min_cacheable_tokens: int
    bill_no_cache: float
    bill_predicted: float


@dataclass(frozen=True)
class ProviderTotals:
    """Sums over the trace; ``predicted_hit_rate`` = cached / prompt tokens (0 when empty)."""

    prompt_tokens: int
    predicted_cached_tokens: int
    predicted_write_tokens: int
    predicted_hit_rate: float
    bill_no_cache: float
    bill_predicted: float
    fallback_models: tuple[str, ...]


@dataclass(frozen=True)
class ProviderPrediction:
    """Per-request columns (numpy arrays, processing order) and their totals. ``ttl`` is the
    retention simulated; ``fallback_models`` in the totals are logged names priced by the
    provider's fallback entry (a guess)."""

    provider: str
    ttl: Retention
    req_ids: np.ndarray
    models: list[str | None]
    prompt_tokens: np.ndarray
    predicted_cached_tokens: np.ndarray
    predicted_write_tokens: np.ndarray
    min_cacheable_tokens: np.ndarray
    bill_no_cache: np.ndarray
    bill_predicted: np.ndarray
    totals: ProviderTotals

    def request(self, i: int) -> PredictedRequest:
        """Request i (in processing order) as a named row."""
        return PredictedRequest(
            req_id=int(self.req_ids[i]),
            model=self.models[i],
            prompt_tokens=int(self.prompt_tokens[i]),
            predicted_cached_tokens=int(self.predicted_cached_tokens[i]),
            predicted_write_tokens=int(self.predicted_write_tokens[i]),
            min_cacheable_tokens=int(self.min_cacheable_tokens[i]),
            bill_no_cache=float(self.bill_no_cache[i]),
            bill_predicted=float(self.bill_predicted[i]),
        )

    def requests(self) -> list[PredictedRequest]:
        return [self.request(i) for i in range(len(self.req_ids))]


def arrival_times(ts: np.ndarray) -> np.ndarray:
    """Timestamps with each unknown one replaced by the latest earlier one (0 before any)."""
    t = np.where(np.isnan(ts), -np.inf, ts)
    t = np.maximum.accumulate(t) if len(t) else t
    return np.where(np.isneginf(t), 0.0, t)


@dataclass(frozen=True)
class Routing:
    """Where each request (processing order) is sent: ``route`` (a dense id of its routing
    prefix, cache key and model), ``machine`` (0, 1, ... within the route: above 0 it
    overflowed) and ``cache`` (a dense id of the (route, machine) pair: requests of different
    ``cache`` ids never share a cached block). All zeros where the provider does not route."""

    route: np.ndarray
    machine: np.ndarray
    cache: np.ndarray


def routing(wl: Workload, spec: ProviderSpec) -> Routing:
    """Route and machine of every request of ``wl`` under ``spec`` (module docstring)."""
    offsets, blocks = block_streams(wl, wl.base)
    return _routing(wl, spec, offsets, blocks)


def _routing(wl: Workload, spec: ProviderSpec, offsets: np.ndarray, blocks: np.ndarray) -> Routing:
    rules = spec.rules
    prefix_tokens, rpm = rules.routing_prefix_tokens, rules.overflow_rpm
    if not spec.routing or prefix_tokens is None or wl.n == 0:
        zeros = np.zeros(wl.n, np.int64)
        return Routing(zeros, zeros, zeros)
    k = max(prefix_tokens // wl.base, 1)
    counts = np.diff(offsets)
    at = np.where(counts >= k, offsets[:-1] + k - 1, offsets[1:] - 1)
    head = np.full(wl.n, -1, np.int64)  # -1: no full block, one route per key and model
    head[counts > 0] = blocks[at[counts > 0]]
    keys = _codes(wl.cache_keys)
    models = _codes(wl.models)
    _, route = np.unique(np.stack([head, keys, models], axis=1), axis=0, return_inverse=True)
    route = route.reshape(-1).astype(np.int64)
    machine = _machines(route, wl.ts, math.inf if rpm is None else rpm)
    _, cache = np.unique(np.stack([route, machine], axis=1), axis=0, return_inverse=True)
    return Routing(route, machine, cache.reshape(-1).astype(np.int64))


def _codes(values: list[str | None]) -> np.ndarray:
    """A small integer per distinct value; None is -1."""
    code = {v: k for k, v in enumerate(sorted({v for v in values if v is not None}))}
    return np.array([-1 if v is None else code[v] for v in values], np.int64)


def _machines(route: np.ndarray, ts: np.ndarray, rpm: float) -> np.ndarray:
    """Per request, the lowest machine of its route that took fewer than ``rpm`` of the
    route's requests in the ``ROUTING_WINDOW_S`` seconds before it; requests without a
    timestamp go to machine 0 uncounted."""
    machine = np.zeros(len(route), np.int64)
    recent: dict[int, list[deque[float]]] = {}
    for i in np.flatnonzero(~np.isnan(ts)):
        t = float(ts[i])
        queues = recent.setdefault(int(route[i]), [])
        m = 0
        while True:
            if m == len(queues):
                queues.append(deque())
            q = queues[m]
            while q and t - q[0] >= ROUTING_WINDOW_S:
                q.popleft()
            if len(q) < rpm:
                q.append(t)
                break
            m += 1
        machine[i] = m
    return machine


def cached_prefix_blocks(wl: Workload, spec: ProviderSpec) -> np.ndarray:
    """Per request, the number of its 16-token prefixes found retained on the machine it is
    routed to (before rounding). A cached entry is a (machine, block) pair: the tree's nodes
    are renumbered densely per ``Routing.cache`` id, so the loop stays on integer arrays."""
    ttl = spec.retention
    idle = math.inf if ttl.idle_seconds is None else float(ttl.idle_seconds)
    cap = math.inf if ttl.max_seconds is None else float(ttl.max_seconds)
    offsets, blocks = block_streams(wl, wl.base)
    cache = _routing(wl, spec, offsets, blocks).cache
    outputs = output_paths(wl) if spec.rules.caches_output else None
    out_offsets = outputs.offsets if outputs is not None else np.zeros(wl.n + 1, np.int64)
    out_nodes = outputs.nodes if outputs is not None else np.zeros(0, np.int64)
    # (cache id, node) pairs -> dense entry ids, prompt blocks first, then output blocks
    span = len(wl.parent)
    pairs = np.concatenate(
        [
            np.repeat(cache, np.diff(offsets)) * span + blocks,
            np.repeat(cache, np.diff(out_offsets)) * span + out_nodes,
        ]
    )
    uniq, entry = np.unique(pairs, return_inverse=True)
    entry = entry.reshape(-1)
    paths, outs = entry[: len(blocks)], entry[len(blocks) :]
    last_use = np.full(len(uniq), -np.inf)
    written = np.full(len(uniq), -np.inf)
    times = arrival_times(wl.ts)
    hits = np.zeros(wl.n, np.int64)
    for i in range(wl.n):
        t = times[i]
        path = paths[offsets[i] : offsets[i + 1]]
        if len(path):
            seen = written[path]
            alive = (seen > -np.inf) & (t - last_use[path] <= idle) & (t - seen <= cap)
            h = len(path) if alive.all() else int(np.argmin(alive))
            hits[i] = h
            if ttl.refresh_on_hit:
                last_use[path[:h]] = t
            rest = path[h:]
            last_use[rest] = t
            written[rest] = t
        out = outs[out_offsets[i] : out_offsets[i + 1]]
        if len(out):
            seen = written[out]
            kept = (seen > -np.inf) & (t - last_use[out] <= idle) & (t - seen <= cap)
            written[out[~kept]] = t
            last_use[out] = t
    return hits


def off_peak_mask(rules: ProviderRules, ts: np.ndarray) -> np.ndarray:
    """Requests billed at off-peak rates: the provider has peak hours (UTC, Monday to Friday)
    and the request is outside them. Unknown timestamps are billed at peak rates."""
    if rules.peak_hours_utc is None:
        return np.zeros(len(ts), bool)
    known = ~np.isnan(ts)
    secs = np.where(known, ts, 0.0)
    day = np.floor(secs / 86400.0)
    hour = np.floor((secs - day * 86400.0) / 3600.0)
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    peak = np.zeros(len(ts), bool)
    for r in rules.peak_hours_utc:
        peak |= (hour >= r.start) & (hour < r.end)
    return known & ~(peak & (weekday < 5))


@dataclass(frozen=True)
class RequestRates:
    """Per request (processing order), $ per million tokens: input, cached input and output
    (off-peak rates where they apply), and the cache-write price over the input price."""

    input: np.ndarray
    cached_input: np.ndarray
    output: np.ndarray
    write_multiplier: np.ndarray


def request_rates(rules: ProviderRules, wl: Workload, ttl: str) -> RequestRates:
    """The prices each request of ``wl`` is billed at, with the write price of TTL ``ttl``."""
    match = {m: model_prices(rules, m or None) for m in {m or "" for m in wl.models}}
    prices = [match[m or ""].prices for m in wl.models]
    price_in = np.array([p.input for p in prices], float)
    price_cached = np.array([p.cached_input for p in prices], float)
    price_out = np.array([p.output for p in prices], float)
    write_mult = np.array([_write_multiplier(p, ttl) for p in prices], float)
    for i in np.flatnonzero(off_peak_mask(rules, wl.ts)):
        low = prices[i].off_peak
        if low is not None:
            price_in[i], price_cached[i], price_out[i] = low.input, low.cached_input, low.output
    return RequestRates(price_in, price_cached, price_out, write_mult)


def predict_provider(wl: Workload, spec: ProviderSpec) -> ProviderPrediction:
    """Predicted cache reads, writes and bills of every request of ``wl`` (module docstring)."""
    rules = spec.rules
    ttl = spec.retention
    inc = rules.increment_tokens
    n = wl.n_tokens.astype(np.int64)
    matched = np.minimum(cached_prefix_blocks(wl, spec) * wl.base, n)
    names = sorted({m or "" for m in wl.models})
    minimum = {m: spec.min_tokens(m or None) for m in names}
    min_tok = np.array([minimum[m or ""] for m in wl.models], np.int64)
    eligible = n >= min_tok
    cached = (matched // inc) * inc
    cached = np.where(eligible & (cached >= min_tok), cached, 0)
    cacheable = np.where(eligible, (n // inc) * inc, 0)
    written = np.maximum(cacheable - cached, 0)

    rates = request_rates(rules, wl, ttl.name)
    write_cost = written * rates.input * rates.write_multiplier
    return priced_prediction(spec, wl, min_tok, cached, written, write_cost, rates)


def priced_prediction(
    spec: ProviderSpec,
    wl: Workload,
    min_tok: np.ndarray,
    cached: np.ndarray,
    written: np.ndarray,
    write_cost: np.ndarray,
    rates: RequestRates,
) -> ProviderPrediction:
    """The prediction of per-request ``cached`` (read) and ``written`` tokens, whose writes
    cost ``write_cost`` ($ per million tokens times tokens): the rest of each prompt at the
    input price, the reads at the cached-input price, output at the output price; without
    caching, the whole prompt at the input price. Shared by every provider engine."""
    rules = spec.rules
    n = wl.n_tokens.astype(np.int64)
    out = wl.output_tokens.astype(np.int64)
    no_cache = (n * rates.input + out * rates.output) * PER_MTOK
    with_cache = (
        (n - cached - written) * rates.input
        + write_cost
        + cached * rates.cached_input
        + out * rates.output
    ) * PER_MTOK
    total_prompt = int(n.sum())
    total_cached = int(cached.sum())
    names = sorted({m or "" for m in wl.models})
    totals = ProviderTotals(
        prompt_tokens=total_prompt,
        predicted_cached_tokens=total_cached,
        predicted_write_tokens=int(written.sum()),
        predicted_hit_rate=total_cached / total_prompt if total_prompt else 0.0,
        bill_no_cache=float(no_cache.sum()),
        bill_predicted=float(with_cache.sum()),
        fallback_models=tuple(m for m in names if model_prices(rules, m or None).fallback),
    )
    return ProviderPrediction(
        provider=rules.name,
        ttl=spec.retention,
        req_ids=wl.req_ids,
        models=list(wl.models),
        prompt_tokens=n,
        predicted_cached_tokens=cached,
        predicted_write_tokens=written,
        min_cacheable_tokens=min_tok,
        bill_no_cache=no_cache,
        bill_predicted=with_cache,
        totals=totals,
    )


def _write_multiplier(prices: ModelPrices, ttl: str) -> float:
    """The entry's cache-write price for ``ttl`` over its input price (1 when input is free)."""
    write = prices.cache_write[ttl]
    return write / prices.input if prices.input > 0 else 1.0
