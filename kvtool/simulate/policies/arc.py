"""ARC (Megiddo & Modha, FAST'03): recency and frequency lists with an adaptive split."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container

from kvtool.simulate.policies.base import INF, Policy, register


@register(
    "arc",
    "ARC (Megiddo & Modha), adapting between recency and frequency",
)
class ARC(Policy):
    """ARC (Megiddo & Modha, FAST'03): resident LRU lists ``T1`` (seen once) and ``T2`` (seen
    again), ghost LRU lists ``B1``/``B2`` of their evicted ids, adaptive target ``p`` for ``|T1|``.

    The engine calls ``evict`` before the ``insert`` it makes room for, so the paper's
    ``REPLACE`` cannot see the incoming block. Simplifications, therefore:

    - ``evict`` decides from the current state alone: it takes ``T1``'s LRU block when
      ``|T1| > p`` or ``T2`` has no unpinned block, else ``T2``'s (the paper's tie rule, "or
      ``|T1| == p`` and the request hit ``B2``", is dropped); the victim's id goes to the MRU end
      of ``B1``/``B2``. Pinned blocks are skipped (next LRU candidate of that list, then the other
      list); None only when every resident block is pinned;
    - ``p`` adapts in ``insert`` on a ghost hit (after the eviction, not before): a hit in ``B1``
      raises it by ``max(|B2|/|B1|, 1)`` (capped at ``c``), one in ``B2`` lowers it by
      ``max(|B1|/|B2|, 1)`` (floored at 0); the block goes to the MRU end of ``T2``. A new block
      goes to the MRU end of ``T1``, after dropping ghosts' LRU ids so that ``|T1| + |B1| <= c``
      (``B1`` first) and ``|T1| + |T2| + |B1| + |B2| <= 2c`` (``B2`` first) hold, as in case IV;
    - ``hit`` moves the block to the MRU end of ``T2``; ``remove`` drops it without a ghost.
    """

    def __init__(self, capacity: int, **options: float) -> None:
        super().__init__(capacity)
        self.p = 0.0
        # LRU first, MRU last
        self.t1: OrderedDict[int, None] = OrderedDict()
        self.t2: OrderedDict[int, None] = OrderedDict()
        self.b1: OrderedDict[int, None] = OrderedDict()
        self.b2: OrderedDict[int, None] = OrderedDict()

    def __contains__(self, b: object) -> bool:
        return b in self.t1 or b in self.t2

    def __len__(self) -> int:
        return len(self.t1) + len(self.t2)

    def hit(self, b: int, now: float, next_use: float = INF) -> None:
        if b in self.t1:
            del self.t1[b]
        else:
            del self.t2[b]
        self.t2[b] = None

    def insert(self, b: int, now: float, next_use: float = INF) -> None:
        c = self.capacity
        if b in self.b1:
            self.p = min(float(c), self.p + max(len(self.b2) / len(self.b1), 1.0))
            del self.b1[b]
            self.t2[b] = None
        elif b in self.b2:
            self.p = max(0.0, self.p - max(len(self.b1) / len(self.b2), 1.0))
            del self.b2[b]
            self.t2[b] = None
        else:
            if len(self.t1) + len(self.b1) >= c and self.b1:
                self.b1.popitem(last=False)
            if len(self) + len(self.b1) + len(self.b2) >= 2 * c:
                (self.b2 or self.b1).popitem(last=False)
            self.t1[b] = None

    @staticmethod
    def _pop_lru(lst: OrderedDict[int, None], pinned: Container[int]) -> int | None:
        for b in lst:
            if b not in pinned:
                del lst[b]
                return b
        return None

    def evict(self, pinned: Container[int], now: float) -> int | None:
        if self.t1 and len(self.t1) > self.p:
            order = ((self.t1, self.b1), (self.t2, self.b2))
        else:
            order = ((self.t2, self.b2), (self.t1, self.b1))
        for resident, ghost in order:
            b = self._pop_lru(resident, pinned)
            if b is not None:
                ghost[b] = None
                return b
        return None

    def remove(self, b: int) -> None:
        if b in self.t1:
            del self.t1[b]
        else:
            del self.t2[b]
