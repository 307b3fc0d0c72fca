"""``kvtool check --provider NAME``: count only the tokens a hosted provider would have cached,
and price what a change loses in dollars (the rules and prices are ``kvtool.providers`` data,
docs/providers.md).

For a baseline prompt p and a candidate r that shares its first ``t`` tokens with it:

- **cached(x, n)**, what the provider reads of a prompt of ``n`` tokens whose first ``x`` tokens
  are in its cache: 0 when ``n`` is below the model's minimum cacheable length; else, for an
  automatic provider (OpenAI, DeepSeek, Gemini), ``x`` rounded down to ``increment_tokens``
  (128, 64, 1), and 0 when that is below the minimum; for a provider with explicit breakpoints
  (Anthropic), the longest prefix that ends at one of p's ``cache_control`` markers, is at most
  ``x`` and reaches the minimum (no marker: nothing is cached).
- **kept** = cached(t, n_r): what r still reads after the change; **cacheable** =
  cached(min(W, n_r), n_r) with W p's reusable length (its prompt up to the generation prompt;
  only its head for a consistency break between two conversations): what r would read had
  nothing changed. **Lost** = cacheable − kept, and ``lost × (input − cached_input) / 1e6``
  dollars per call at the model's price entry (``model_prices``; peak rates), times
  ``calls_per_month`` when given.
- A pair whose p caches nothing at all (cached(W_p, n_p) = 0) passes with a note: below the
  minimum, or (Anthropic) no marker.

Marker offsets (Anthropic) are token positions in p's prompt as kvtool renders it, placed by
``kvtool.tokenize.breakpoints.request_marks``: a marker on a tool or a leading system message
ends the head; ``auto`` (top-level caching) and a marker on the last message end the last
message; a marker on an earlier message (any part of it) ends that message. The candidate is
assumed to carry its markers where p does, and the ~20-block lookback is not modelled: every
marker of p at or before the change counts as found. A cache write's premium (Anthropic 1.25×
or 2×) is not in the dollars: they price reads lost, at peak rates (DeepSeek).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kvtool.analyze.breaks import Prompt, Prompts
from kvtool.errors import OptionError
from kvtool.providers import ProviderRules, min_cacheable_tokens, model_prices
from kvtool.store import Connection
from kvtool.store.requests import RequestRow, cache_logs
from kvtool.tokenize.breakpoints import request_marks

PER_MTOK = 1e-6
MAX_CALLS_PER_MONTH = 10**12


@dataclass(frozen=True)
class ProviderGate:
    """Count losses by ``rules``' provider. ``model`` prices (and picks the minimum for) a
    fixture that names no model; ``calls_per_month`` (optional, positive) turns dollars per call
    into dollars per month. Validated on creation (``OptionError`` naming the parameter)."""

    rules: ProviderRules
    model: str | None = None
    calls_per_month: float | None = None

    def __post_init__(self) -> None:
        n = self.calls_per_month
        if n is not None and not (math.isfinite(n) and 0 < n <= MAX_CALLS_PER_MONTH):
            raise OptionError(
                "calls_per_month", f"must be in (0, {MAX_CALLS_PER_MONTH:.0e}], not {n}"
            )


@dataclass(frozen=True)
class ProviderLoss:
    """One pair counted by a provider's rules (see the module docstring). ``model`` is the
    model priced (the fixture's, else ``ProviderGate.model``; '' when neither names one);
    ``price_entry`` the price-table entry used and ``price_fallback`` whether that entry is the
    provider's fallback, i.e. the price is a guess; ``breakpoints``: the baseline's marker
    offsets (None for an automatic provider)."""

    provider: str
    model: str
    price_entry: str
    price_fallback: bool
    min_cacheable_tokens: int
    increment_tokens: int
    cacheable_tokens: int
    kept_tokens: int
    tokens_lost: int
    usd_per_call: float
    usd_per_month: float | None
    breakpoints: tuple[int, ...] | None

    @property
    def price_note(self) -> str:
        """'' for a known model, else why the price is a guess."""
        if not self.price_fallback:
            return ""
        name = self.model or "an unnamed model"
        return (
            f"price is a guess: {name} is not in {self.provider}'s price list, "
            f"priced as {self.price_entry}"
        )

    @property
    def cost(self) -> str:
        """The dollars lost, in words: per call, and per month when known."""
        text = f"${self.usd_per_call:.6f} per call"
        if self.usd_per_month is not None:
            text += f", ${self.usd_per_month:,.2f} per month"
        return text


class ProviderCounter:
    """Counts pairs of one fixture store by ``gate``'s provider; marker offsets are resolved
    once per baseline request."""

    def __init__(self, gate: ProviderGate, con: Connection, prompts: Prompts):
        self.gate = gate
        self.rules = gate.rules
        self.prompts = prompts
        self.explicit = gate.rules.explicit_breakpoints
        self.markers: dict[int, tuple[dict, ...]] = {}
        self.offsets: dict[int, tuple[int, ...]] = {}
        self.con = con

    def load_markers(self, rows: list[RequestRow]) -> None:
        """Read the ``cache_control`` markers of ``rows`` (only with explicit breakpoints)."""
        if self.explicit and rows:
            logs = cache_logs(self.con, [r.req_id for r in rows])
            self.markers.update((log.prompt.req_id, log.markers) for log in logs)

    def model(self, row: RequestRow) -> str | None:
        return row.model or self.gate.model

    def min_tokens(self, row: RequestRow) -> int:
        return min_cacheable_tokens(self.rules, self.model(row))

    def breakpoints(self, row: RequestRow) -> tuple[int, ...] | None:
        """The token offsets of ``row``'s markers, sorted (None: an automatic provider)."""
        if not self.explicit:
            return None
        found = self.offsets.get(row.req_id)
        if found is None:
            marks = self.markers.get(row.req_id, ())
            bodies = self.prompts.load([row])
            placed = request_marks(self.prompts.tokens, row.prompt, bodies, marks)
            found = (
                () if placed is None else tuple(sorted(set(placed.ends[placed.mark_at].tolist())))
            )
            self.offsets[row.req_id] = found
        return found

    def cached(self, x: int, n: int, minimum: int, marks: tuple[int, ...] | None) -> int:
        """What the provider reads of a prompt of ``n`` tokens whose first ``x`` are cached."""
        if n < minimum:
            return 0
        if marks is not None:
            return max((o for o in marks if minimum <= o <= x), default=0)
        inc = self.rules.increment_tokens
        got = x // inc * inc
        return got if got >= minimum else 0

    def caches_nothing(self, row: RequestRow, p: Prompt) -> str | None:
        """Why the provider caches nothing of ``p`` (a note), or None when it caches some."""
        minimum = self.min_tokens(row)
        marks = self.breakpoints(row)
        if self.cached(p.ids.end, len(p.ids.ids), minimum, marks) > 0:
            return None
        model = self.model(row) or "an unnamed model"
        name = self.rules.name
        if marks is not None and not marks:
            return f"no cache_control marker: {name} caches nothing, nothing lost"
        longest = max(marks) if marks else p.ids.end
        return (
            f"{longest:,} cacheable tokens, below {name}'s minimum of {minimum:,} tokens "
            f"for {model}: nothing cached, nothing lost"
        )

    def loss(
        self, row: RequestRow, p: Prompt, r: Prompt, reusable: int, shared: int
    ) -> ProviderLoss:
        """The pair (baseline ``p`` of ``row``, candidate ``r``) counted by the provider:
        ``reusable`` tokens of p could be reused, r shares the first ``shared`` with it."""
        minimum = self.min_tokens(row)
        marks = self.breakpoints(row)
        n = len(r.ids.ids)
        cacheable = self.cached(min(reusable, n), n, minimum, marks)
        kept = min(cacheable, self.cached(shared, n, minimum, marks))
        lost = cacheable - kept
        match = model_prices(self.rules, self.model(row))
        usd = lost * (match.prices.input - match.prices.cached_input) * PER_MTOK
        per_month = self.gate.calls_per_month
        return ProviderLoss(
            provider=self.rules.name,
            model=match.model,
            price_entry=match.prices.key,
            price_fallback=match.fallback,
            min_cacheable_tokens=minimum,
            increment_tokens=self.rules.increment_tokens,
            cacheable_tokens=cacheable,
            kept_tokens=kept,
            tokens_lost=lost,
            usd_per_call=usd,
            usd_per_month=None if per_month is None else usd * per_month,
            breakpoints=marks,
        )
