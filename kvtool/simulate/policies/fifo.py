"""FIFO: first inserted, first evicted."""

from __future__ import annotations

from kvtool.simulate.policies.base import INF, Ordered, register


@register("fifo", "first in, first out")
class FIFO(Ordered):
    """First inserted, first evicted; hits change nothing."""

    def hit(self, b: int, now: float, next_use: float = INF) -> None:
        pass
