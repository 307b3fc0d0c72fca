"""What a provider with explicit ``cache_control`` breakpoints (Anthropic) would have cached,
request by request, and the bill with and without it (rules and prices: ``kvtool.providers``
data, docs/providers.md). The markers come placed on kvtool's token ids
(``kvtool.tokenize.breakpoints``: boundaries, their content-block counts and prefix
identities, keyed by model and tenant).

Semantics, per request r in processing order at time t (a request without a timestamp happens
when the previous one did), with minimum cacheable length m (the model's; 0 with
``no_minimum``):

- **No marker, nothing cached.** r neither reads nor writes.
- **Refused.** More markers than ``max_breakpoints`` (the automatic marker counts as one), or
  a marker TTL the provider does not offer: the provider answers HTTP 400, so r reads and
  writes nothing and is billed without caching (``refused``).
- **Entries** exist only where an earlier request wrote a breakpoint: a prefix identity, with
  its write time, last use and the TTL of the marker that wrote it. It is retained at t if
  ``t − last use ≤ idle`` and ``t − write ≤ cap`` (the TTL's; ``idle_seconds`` /
  ``max_seconds`` replace every TTL's; ``no_expiry``: never expires).
- **Lookup.** Each breakpoint b of r at a boundary of at least m tokens looks for a retained
  entry at b, then at r's earlier boundaries while they lie within ``lookback_blocks`` content
  blocks of b (block counts from the boundaries); the first found is b's hit. r's read tokens
  are the longest hit over its breakpoints. A breakpoint below m neither looks up nor writes.
- **Refresh and write.** Every entry found is touched (last use = t) when its TTL refreshes on
  a hit. Every breakpoint of at least m tokens without an entry of its own is written at t
  with its marker's TTL (a marker naming none takes ``ProviderSpec.ttl``, else the provider's
  default). Write tokens are the tokens from the read prefix to the last breakpoint written
  beyond it; each stretch between consecutive written breakpoints is billed at the TTL of the
  breakpoint that ends it (so a 1 h breakpoint before a 5 min one bills its prefix at 2×). A
  breakpoint inside the read prefix is stored without a write charge.
- **Bill** (US dollars, per-model entry from ``model_prices``): read tokens at the cached-input
  price, written stretches at ``input × write multiplier`` of their TTL, the rest of the prompt
  at the input price, output at the output price; without caching, the whole prompt at input.

Approximations: token offsets come from kvtool's tokenizer and rendering, not Claude's
(unpublished); kvtool's head renders system before tools, so a marker on either caches both;
the lookback checks kvtool's boundaries only (message ends with the default template), so an
entry at a part inside a message is found at the message's end (module
``kvtool.tokenize.breakpoints``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kvtool.errors import OptionError
from kvtool.providers import ProviderRules
from kvtool.simulate.providers import (
    ProviderPrediction,
    ProviderSpec,
    arrival_times,
    priced_prediction,
    request_rates,
)
from kvtool.tokenize.breakpoints import Breakpoints
from kvtool.traffic.workload import Workload


def marker_ttls(marks: Breakpoints, spec: ProviderSpec) -> list[str | None]:
    """The TTL each of ``marks.ttl_names`` resolves to (None: not one of the provider's)."""
    offered = {t.name for t in spec.rules.ttls}
    default = spec.ttl or spec.rules.default_ttl
    return [(name or default) if (name or default) in offered else None for name in marks.ttl_names]


def refused(marks: Breakpoints, rules: ProviderRules, ttls: list[str | None]) -> np.ndarray:
    """Per request, whether the provider would have refused its markers: more than
    ``max_breakpoints`` of them, or a TTL it does not offer (``ttls``: ``marker_ttls``)."""
    count = np.diff(marks.marks)
    limit = rules.max_breakpoints
    out = count > limit if limit is not None else np.zeros(marks.n, bool)
    bad = np.array([t is None for t in ttls], bool)
    if bad.any() and len(marks.mark_ttl):
        owner = np.repeat(np.arange(marks.n), count)
        out[np.unique(owner[bad[marks.mark_ttl]])] = True
    return out


@dataclass(frozen=True)
class Life:
    """How long an entry of one TTL lives: ``idle`` seconds after its last use and ``cap``
    seconds after its write (inf: never), and whether a hit restarts the idle clock."""

    idle: float
    cap: float
    refresh: bool


@dataclass(slots=True)
class Entry:
    """A written breakpoint prefix: when it was written and last used, and its TTL's life."""

    written: float
    last_use: float
    life: Life

    def alive(self, t: float) -> bool:
        return t - self.last_use <= self.life.idle and t - self.written <= self.life.cap


def predict_anthropic(wl: Workload, spec: ProviderSpec, marks: Breakpoints) -> ProviderPrediction:
    """Predicted cache reads, writes and bills of every request of ``wl`` under explicit
    breakpoints ``marks`` (same request order; module docstring)."""
    rules = spec.rules
    if not rules.explicit_breakpoints:
        raise OptionError("rules", f"{rules.name} has no explicit breakpoints")
    if marks.n != wl.n:
        raise ValueError(f"breakpoints of {marks.n} requests for a workload of {wl.n}")
    ttls = marker_ttls(marks, spec)
    names = sorted({t for t in ttls if t is not None})
    life = {name: _life(spec, name) for name in names}
    mult = {name: request_rates(rules, wl, name).write_multiplier for name in names}
    rates = request_rates(rules, wl, spec.retention.name)
    lookback = math.inf if rules.lookback_blocks is None else rules.lookback_blocks
    model_names = sorted({m or "" for m in wl.models})
    minimum = {m: spec.min_tokens(m or None) for m in model_names}
    min_tok = np.array([minimum[m or ""] for m in wl.models], np.int64)
    times = arrival_times(wl.ts)
    cached = np.zeros(wl.n, np.int64)
    written = np.zeros(wl.n, np.int64)
    write_cost = np.zeros(wl.n)  # $ per million tokens, before PER_MTOK
    entries: dict[int, Entry] = {}  # prefix identity -> its entry
    ends, blocks, hashes = marks.ends, marks.blocks, marks.hashes
    active = (np.diff(marks.marks) > 0) & ~refused(marks, rules, ttls)
    for i in np.flatnonzero(active):
        t = times[i]
        first = int(marks.bounds[i])
        # the request's breakpoints of at least the minimum, each with its TTL
        ttl_at = {
            k: name
            for k, name in _breakpoint_ttls(marks, i, ttls, life).items()
            if ends[k] >= min_tok[i]
        }
        hit = 0
        own = set()  # breakpoints whose own entry was found
        for k in ttl_at:
            j = k
            while j >= first and blocks[k] - blocks[j] <= lookback:
                entry = entries.get(int(hashes[j]))
                if entry is not None and entry.alive(t):
                    hit = max(hit, int(ends[j]))
                    if entry.life.refresh:
                        entry.last_use = t
                    if j == k:
                        own.add(k)
                    break
                j -= 1
        prev = hit
        for k, name in ttl_at.items():
            if k in own:
                continue
            entries[int(hashes[k])] = Entry(t, t, life[name])
            if ends[k] > prev:
                write_cost[i] += (ends[k] - prev) * rates.input[i] * mult[name][i]
                prev = int(ends[k])
        cached[i] = hit
        written[i] = prev - hit

    return priced_prediction(spec, wl, min_tok, cached, written, write_cost, rates)


def _breakpoint_ttls(
    marks: Breakpoints, i: int, ttls: list[str | None], life: dict[str, Life]
) -> dict[int, str]:
    """Request i's marked boundaries (global indexes, increasing) with the TTL each is written
    with: its marker's, the longest-lived where several markers end at one boundary."""
    out: dict[int, str] = {}
    lo, hi = marks.marks[i], marks.marks[i + 1]
    for k, code in zip(marks.mark_at[lo:hi], marks.mark_ttl[lo:hi], strict=True):
        name = ttls[code]
        assert name is not None, "a request with a TTL the provider lacks is refused"
        old = out.get(int(k))
        if old is None or life[name].idle > life[old].idle:
            out[int(k)] = name
    return dict(sorted(out.items()))


def _life(spec: ProviderSpec, name: str) -> Life:
    """The life of the provider's TTL ``name`` under ``spec``'s overrides."""
    ttl = spec.rules.ttl(name)
    if spec.no_expiry:
        return Life(math.inf, math.inf, ttl.refresh_on_hit)
    idle = spec.idle_seconds if spec.idle_seconds is not None else ttl.seconds
    cap = spec.max_seconds if spec.max_seconds is not None else ttl.max_seconds
    return Life(
        math.inf if idle is None else float(idle),
        math.inf if cap is None else float(cap),
        ttl.refresh_on_hit,
    )
