"""LFU: least frequently used first."""

from __future__ import annotations

from kvtool.simulate.policies.base import INF, Ranked, register


@register("lfu", "least frequently used; ties go to the least recent")
class LFU(Ranked):
    """Least frequently used first; ties go to the least recently accessed block. A block's
    frequency counts its accesses while resident (insert = 1, each hit +1) and is forgotten when
    it leaves: its rank is ``(freq, counter)``."""

    def hit(self, b: int, now: float, next_use: float = INF) -> None:
        self.set_rank(b, self.rank[b][0] + 1)

    def insert(self, b: int, now: float, next_use: float = INF) -> None:
        self.set_rank(b, 1)
