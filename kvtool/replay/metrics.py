"""vLLM's prefix-cache counters from ``/metrics``, read with the Prometheus text parser.

Counters (summed over engines and models): ``prefix_cache_queries`` and ``prefix_cache_hits``
(tokens), ``external_prefix_cache_queries``/``_hits`` (a KV connector such as LMCache), and
``prompt_tokens_cached_by_source`` per ``source`` (device, host, disk, p2p, ...). A replay reads
them before and after and reports the difference.
"""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

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
            out[name] = out.get(name, 0.0) + float(sample.value)
    return out


def scrape(base_url: str, timeout: float = 10.0) -> dict[str, float]:
    response = httpx.get(f"{base_url.rstrip('/')}/metrics", timeout=timeout)
    response.raise_for_status()
    return parse(response.text)


def diff(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in sorted({*before, *after})}
