"""Infinite: a cache that never evicts (the ideal hit rate)."""

from __future__ import annotations

from collections.abc import Container

from kvtool.simulate.policies.base import INF, Policy, register


@register("infinite", "never evicts; equals analyze's `ideal_hit_rate`", bound=True)
class Infinite(Policy):
    """Never evicts (the capacity is ignored): the ideal hit rate."""

    def __init__(self, capacity: int = 0, **options: float) -> None:
        super().__init__(1 << 62)
        self.resident: set[int] = set()

    def __contains__(self, b: object) -> bool:
        return b in self.resident

    def __len__(self) -> int:
        return len(self.resident)

    def hit(self, b: int, now: float, next_use: float = INF) -> None:
        pass

    def insert(self, b: int, now: float, next_use: float = INF) -> None:
        self.resident.add(b)

    def evict(self, pinned: Container[int], now: float) -> int | None:
        return None

    def remove(self, b: int) -> None:
        self.resident.discard(b)
