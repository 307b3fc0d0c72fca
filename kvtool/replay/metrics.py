"""vLLM's prefix-cache counters from ``/metrics``, read with the Prometheus text parser.

Counters (summed over engines and models): ``prefix_cache_queries`` and ``prefix_cache_hits``
(tokens), ``external_prefix_cache_queries``/``_hits`` (a KV connector such as LMCache), and
``prompt_tokens_cached_by_source`` per ``source`` (device, host, disk, p2p, ...). A replay reads
them before and after and reports the difference.

``scrape`` raises ``ServerError`` (one line) when ``/metrics`` cannot be read (refused, an HTTP
error, not Prometheus text); ``check_url`` raises ``OptionError("endpoint", ...)`` for a base
URL that is not ``http(s)://host[:port][/path]``.
"""

from __future__ import annotations

import math

import httpx
from prometheus_client.parser import text_string_to_metric_families

from kvtool.errors import OptionError, ServerError

WANTED = {
    "vllm:prefix_cache_queries": "prefix_cache_queries",
    "vllm:prefix_cache_hits": "prefix_cache_hits",
    "vllm:external_prefix_cache_queries": "external_prefix_cache_queries",
    "vllm:external_prefix_cache_hits": "external_prefix_cache_hits",
    "vllm:prompt_tokens_cached_by_source": "cached_by_source",
    "vllm:prompt_tokens": "prompt_tokens",
}


def parse(text: str) -> dict[str, float]:
    """The wanted counters of one scrape: ``{"prefix_cache_hits": 1234.0,
    "cached_by_source.device": ...}``."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        key = WANTED.get(family.name.removesuffix("_total"))
        if key is None:
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue  # the counter's creation time, not a count
            name = f"{key}.{sample.labels['source']}" if "source" in sample.labels else key
            value = float(sample.value)
            if not math.isfinite(value):
                raise ValueError(f"counter {family.name} is {value}")
            out[name] = out.get(name, 0.0) + value
    return out


def check_url(base_url: str) -> None:
    """``OptionError("endpoint", ...)`` unless ``base_url`` is an http(s) URL with a host."""
    example = "such as http://127.0.0.1:8000"
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise OptionError("endpoint", f"is not a URL ({example}): {base_url!r}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise OptionError(
            "endpoint", f"must be an http:// or https:// URL ({example}): {base_url!r}"
        )


def scrape(base_url: str, timeout: float = 10.0) -> dict[str, float]:
    """The wanted counters of ``base_url``/metrics now; ``ServerError`` when they cannot be read."""
    url = f"{base_url.rstrip('/')}/metrics"
    try:
        response = httpx.get(url, timeout=timeout)
    except (httpx.HTTPError, httpx.StreamError, OSError) as exc:
        raise ServerError(f"cannot read {url!r}: {type(exc).__name__}: {exc!s:.120}") from None
    if response.status_code != 200:
        raise ServerError(f"{url!r} answered HTTP {response.status_code}, not vLLM's counters")
    try:
        return parse(response.text)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ServerError(f"{url!r} is not Prometheus text: {exc!r:.120}") from None


def diff(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """``after - before`` per counter (a counter missing on one side counts as 0)."""
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in sorted({*before, *after})}
