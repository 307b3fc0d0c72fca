"""What a hosted provider's prompt cache does and costs, as named, frozen types.

A ``ProviderRules`` is one provider's data file (``data/<provider>.json``) after validation,
with any override files applied. Prices are US dollars per million tokens. Model names are
resolved by ``model_prices`` / ``min_cacheable_tokens``:

- the logged name is lower-cased and anything up to its last ``/`` is dropped
  (``anthropic/claude-opus-4-5`` and ``models/gemini-2.5-pro`` route prefixes);
- the longest ``match`` prefix of any model entry wins, so a dated snapshot
  (``claude-opus-4-5-20251101``) finds its family and ``gpt-5.4-mini`` beats ``gpt-5.4``;
- no prefix matches: the file's ``fallback`` entry, with ``ModelMatch.fallback`` set, so a
  caller can say that the price is a guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    """Where a value was read (``url``) and when (``read``, an ISO date)."""

    url: str
    read: str
    note: str | None = None


@dataclass(frozen=True)
class Ttl:
    """One cache lifetime a provider offers. ``seconds`` is the idle time after which an entry
    goes (None: not documented, best effort); ``max_seconds`` a hard cap on an entry's life
    since it was written, hits or not, when documented; ``refresh_on_hit``: a hit restarts the
    idle clock."""

    name: str
    seconds: int | None
    max_seconds: int | None
    refresh_on_hit: bool


@dataclass(frozen=True)
class HourRange:
    """Hours ``[start, end)`` of a UTC day (0-24) with peak prices."""

    start: int
    end: int


@dataclass(frozen=True)
class Rates:
    """Input (uncached), cached input (a cache read) and output, $ per million tokens."""

    input: float
    cached_input: float
    output: float


@dataclass(frozen=True)
class ModelPrices:
    """One model entry of a price table. ``cache_write`` has a price for every TTL of the
    provider (explicit in the file, else ``input × write_multipliers[ttl]``);
    ``storage_per_mtok_hour`` is an explicit cache's storage price (Gemini), ``off_peak`` the
    rates outside ``ProviderRules.peak_hours_utc`` (DeepSeek); both None where not offered."""

    key: str
    match: tuple[str, ...]
    input: float
    cached_input: float
    output: float
    cache_write: Mapping[str, float]
    storage_per_mtok_hour: float | None
    off_peak: Rates | None
    source: str
    note: str | None


@dataclass(frozen=True)
class ModelMatch:
    """A logged model name resolved to its prices; ``fallback`` when no entry matched."""

    model: str
    prices: ModelPrices
    fallback: bool


@dataclass(frozen=True)
class ProviderRules:
    """One provider's caching rules and prices (see docs/providers.md for each field's meaning
    and source). ``rule_sources`` and ``notes`` map a rule's name to its source id (a key of
    ``sources``) and to what the docs leave vague; ``files`` are the files read, shipped first."""

    name: str
    schema_version: int
    as_of: str
    sources: Mapping[str, Source]
    automatic: bool
    explicit_breakpoints: bool
    max_breakpoints: int | None
    lookback_blocks: int | None
    min_cacheable_tokens: int
    min_cacheable_by_model: Mapping[str, int]
    increment_tokens: int
    ttls: tuple[Ttl, ...]
    default_ttl: str
    write_multipliers: Mapping[str, float]
    read_multiplier: float
    prefix_order: tuple[str, ...]
    cache_key_param: str | None
    routing_prefix_tokens: int | None
    overflow_rpm: int | None
    caches_output: bool
    tokenizer_public: bool
    peak_hours_utc: tuple[HourRange, ...] | None
    rule_sources: Mapping[str, str]
    notes: Mapping[str, str]
    models: tuple[ModelPrices, ...]
    fallback_model: str
    files: tuple[str, ...]

    def ttl(self, name: str) -> Ttl:
        """The TTL called ``name``; KeyError if the provider has none of that name."""
        for ttl in self.ttls:
            if ttl.name == name:
                return ttl
        raise KeyError(name)


def normalize_model(model: str) -> str:
    """The part of a logged model name that prefixes are matched against."""
    return model.strip().lower().rsplit("/", 1)[-1]


def _longest_prefix(name: str, prefixes: Mapping[str, object]) -> str | None:
    best = None
    for prefix in prefixes:
        if name.startswith(prefix) and (best is None or len(prefix) > len(best)):
            best = prefix
    return best


def model_prices(rules: ProviderRules, model: str | None) -> ModelMatch:
    """Resolve a logged model name (None or empty: unknown) to its price entry."""
    name = normalize_model(model or "")
    by_prefix = {prefix: entry for entry in rules.models for prefix in entry.match}
    prefix = _longest_prefix(name, by_prefix) if name else None
    if prefix is not None:
        return ModelMatch(model or "", by_prefix[prefix], fallback=False)
    fallback = next(entry for entry in rules.models if entry.key == rules.fallback_model)
    return ModelMatch(model or "", fallback, fallback=True)


def min_cacheable_tokens(rules: ProviderRules, model: str | None) -> int:
    """The shortest prompt the provider caches for ``model``: the longest matching prefix of
    ``min_cacheable_by_model``, else the provider's default ``min_cacheable_tokens``."""
    name = normalize_model(model or "")
    prefix = _longest_prefix(name, rules.min_cacheable_by_model) if name else None
    if prefix is None:
        return rules.min_cacheable_tokens
    return rules.min_cacheable_by_model[prefix]
