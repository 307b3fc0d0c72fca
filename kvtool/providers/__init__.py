"""Hosted providers' prompt-caching rules and prices, as versioned data with sources and dates
(``data/<provider>.json``), and their loader. The data only: ``kvtool.simulate.providers``
simulates the providers' caches from it (docs/providers.md)."""

from kvtool.providers.load import SCHEMA_VERSION, load_provider, provider_names
from kvtool.providers.model import (
    HourRange,
    ModelMatch,
    ModelPrices,
    ProviderRules,
    Rates,
    Source,
    Ttl,
    min_cacheable_tokens,
    model_prices,
)

__all__ = [
    "SCHEMA_VERSION",
    "HourRange",
    "ModelMatch",
    "ModelPrices",
    "ProviderRules",
    "Rates",
    "Source",
    "Ttl",
    "load_provider",
    "min_cacheable_tokens",
    "model_prices",
    "provider_names",
]
