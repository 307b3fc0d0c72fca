"""Belady's MIN: the offline optimum, a bound for every online policy."""

from __future__ import annotations

from kvtool.simulate.policies.base import INF, Ranked, register


@register(
    "belady",
    "the offline optimum: evict the block needed farthest in the future (an upper bound)",
    bound=True,
)
class Belady(Ranked):
    """The offline optimum (Belady's MIN): evict the unpinned resident block whose next use (the
    ``next_use`` given at its latest ``hit``/``insert``) is farthest; never-again (``inf``)
    first. Its rank is ``(-next_use, counter)``: ties go to the least recently accessed."""

    needs_next_use = True

    def hit(self, b: int, now: float, next_use: float = INF) -> None:
        self.set_rank(b, -next_use)

    def insert(self, b: int, now: float, next_use: float = INF) -> None:
        self.set_rank(b, -next_use)
