"""TTL: LRU whose blocks expire, as hosted prompt caches work."""

from __future__ import annotations

from collections.abc import Container

from kvtool.simulate.policies.base import register
from kvtool.simulate.policies.lru import LRU


@register(
    "ttl",
    "LRU whose blocks expire `ttl_s` seconds (`--ttl`) after their last use, as hosted prompt "
    "caches work",
)
class TTL(LRU):
    """LRU with expiry: a block is usable only within ``ttl`` seconds (> 0) of its last use
    (each use refreshes it). Capacity still bounds it (LRU order)."""

    needs_ttl = True

    def __init__(self, capacity: int, ttl: float = 300.0, **options: float) -> None:
        super().__init__(capacity)
        self.ttl = ttl

    def valid(self, b: int, now: float) -> bool:
        return now - self.order[b] <= self.ttl

    def evict(self, pinned: Container[int], now: float) -> int | None:
        return super().evict(pinned, now)  # the oldest use is also the first to expire
