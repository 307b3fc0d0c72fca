"""Belady with bypass: the offline optimum when a block may also not be cached at all.

A block's next use is the ordinal of the next request whose chain contains it (the engine's
``next_uses``). Along a chain next uses never decrease (a request that contains a block contains
its parent), so "farthest next use" always names a descendant before its ancestor.

- **Eviction** is Belady's (``Belady``): the unpinned resident used farthest in the future, ties
  to the least recently touched, which under the engine's tail-first touches is the deeper block.
- **Admission**: a new block ``b`` is cached only if it, and the ``ahead`` non-resident blocks
  before it in its request (they are inserted after it, tail first), all fit in the free slots
  plus the unpinned residents used no sooner than ``b``. This keeps, of the residents and the
  request's blocks, the ones needed soonest, as if the request's blocks were decided head first:
  a block is cached only when its whole prefix is, because a block without its parent never
  hits. Invariant: the resident blocks are closed under "parent of" (except for a request that
  pins more blocks than the cache holds, which only other policies leave half cached).

For one-block requests this is the classic rule (cache the new block only if some resident is
needed no sooner), which is optimal for unit-size items. With chains it is a greedy bound, not
the exact optimum: ``tests/test_belady_bypass.py`` compares it with an exhaustive search.
"""

from __future__ import annotations

import heapq
from collections.abc import Container

from kvtool.simulate.policies.base import INF, register
from kvtool.simulate.policies.belady import Belady


@register(
    "belady_bypass",
    "Belady that may also decline to cache a block, keeping whole prefixes (an upper bound)",
    bound=True,
)
class BeladyBypass(Belady):
    """Belady's eviction plus the admission rule of the module docstring. A block's rank is
    Belady's ``(-next_use, counter)``: the heap's smallest rank is the best victim.

    Once a block is admitted, the block before it in its request (one fewer ahead, a next use no
    later) is admitted too: the slot the first one took was free or held a resident needed no
    sooner than either. ``chain`` remembers an admitted and inserted block's ``(ahead,
    next_use, pinned)`` so that the next one is admitted without a scan; any other hook (a hit,
    a removal, a release, a refusal) forgets it."""

    bypasses = True

    def __init__(self, capacity: int, **options: float) -> None:
        super().__init__(capacity)
        self.granted: tuple[int, int, float, Container[int]] | None = (
            None  # admitted, not yet inserted
        )
        self.chain: tuple[int, float, Container[int]] | None = None

    def admit(
        self, b: int, now: float, next_use: float, pinned: Container[int], ahead: int
    ) -> bool:
        chain, self.chain, self.granted = self.chain, None, None
        if (
            chain is not None
            and ahead == chain[0] - 1
            and next_use <= chain[1]
            and pinned is chain[2]
        ):
            self.granted = (b, ahead, next_use, pinned)
            return True
        need = ahead + 1 - (self.capacity - len(self.rank))  # slots that must come from victims
        if need <= 0:
            return True
        if need > len(self.rank):
            return False
        held: list[tuple[tuple, int]] = []  # live entries popped: pushed back afterwards
        found = 0
        while self.heap and found < need:
            entry = heapq.heappop(self.heap)
            rank, x = entry
            if self.rank.get(x) != rank:
                continue  # stale
            held.append(entry)
            if -rank[0] < next_use:
                break  # x, and every later entry, is needed sooner than b
            found += x not in pinned
        for entry in held:
            heapq.heappush(self.heap, entry)
        if found >= need:
            self.granted = (b, ahead, next_use, pinned)
            return True
        return False

    def insert(self, b: int, now: float, next_use: float = INF) -> None:
        granted, self.granted = self.granted, None
        self.chain = granted[1:] if granted is not None and granted[0] == b else None
        super().insert(b, now, next_use)

    def hit(self, b: int, now: float, next_use: float = INF) -> None:
        self.granted = self.chain = None
        super().hit(b, now, next_use)

    def remove(self, b: int) -> None:
        self.granted = self.chain = None
        super().remove(b)

    def release(self, b: int, now: float) -> None:
        self.granted = self.chain = None
