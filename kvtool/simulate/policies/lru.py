"""LRU: least recently used first, in vLLM's free-queue order."""

from __future__ import annotations

from kvtool.simulate.policies.base import INF, Ordered, register


@register("lru", "least recently used, in vLLM's order")
class LRU(Ordered):
    """Least recently used first; a hit moves the block to the most-recent end (vLLM's free
    queue: with the engine's tail-first touches, a chain's last block is evicted first). A
    release counts as a use."""

    def hit(self, b: int, now: float, next_use: float = INF) -> None:
        self.order[b] = now
        self.order.move_to_end(b)

    def release(self, b: int, now: float) -> None:
        self.hit(b, now)
