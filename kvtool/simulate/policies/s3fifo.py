"""S3-FIFO (Yang et al., SOSP'23): small, main and ghost FIFOs."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container

from kvtool.simulate.policies.base import INF, Policy, register


@register(
    "s3fifo",
    "S3-FIFO: a small FIFO (10%), a main FIFO with second chances, and a ghost queue",
)
class S3FIFO(Policy):
    """S3-FIFO (Yang et al., SOSP'23): a small FIFO ``S``, a main FIFO ``M`` and a ghost FIFO
    ``G`` of ids evicted from ``S``.

    Variant: ``S`` targets ``max(1, capacity // 10)`` blocks, ``G`` keeps the ids of the last
    ``max(1, capacity - len_S_target)`` blocks evicted from ``S`` (ids only, not resident).
    ``freq`` starts at 0 on insert and each hit raises it, capped at 3. Insert puts a block that is
    in ``G`` at the head of ``M`` (dropping it from ``G``), any other at the head of ``S``.
    ``evict`` works on ``S`` while ``|S| > target`` or ``M`` is empty (libCacheSim's rule; the
    paper's pseudocode says ``>=``), else on ``M``:

    - ``S``: the tail moves to the head of ``M`` (keeping its freq) if ``freq > 1`` (the
      pseudocode's rule: hit at least twice), else it is evicted and its id enters ``G``;
    - ``M``: the tail with ``freq > 0`` gets ``freq -= 1`` and goes back to the head, else it is
      evicted.

    ``evict`` loops until exactly one block leaves (a move from ``S`` to ``M`` evicts nothing, so
    ``M`` may hold more than its share for a while; the paper's "if M is full, evictM" is this
    same next step). A pinned tail goes back to the head of its own queue with its freq unchanged;
    a queue whose whole length was rotated that way is marked all-pinned and the other queue is
    used; when both are, ``evict`` returns None. ``remove`` forgets a block without a ghost.
    Invariants: ``S`` and ``M`` are disjoint, ``freq`` has exactly their blocks, ``|G| <= ghosts``.
    """

    def __init__(self, capacity: int, **options: float) -> None:
        super().__init__(capacity)
        self.small_target = max(1, capacity // 10)
        self.ghosts = max(1, capacity - self.small_target)
        # OrderedDicts as FIFOs: the first key is the tail (oldest), the last the head
        self.small: OrderedDict[int, None] = OrderedDict()
        self.main: OrderedDict[int, None] = OrderedDict()
        self.ghost: OrderedDict[int, None] = OrderedDict()
        self.freq: dict[int, int] = {}

    def __contains__(self, b: object) -> bool:
        return b in self.freq

    def __len__(self) -> int:
        return len(self.freq)

    def hit(self, b: int, now: float, next_use: float = INF) -> None:
        self.freq[b] = min(self.freq[b] + 1, 3)

    def insert(self, b: int, now: float, next_use: float = INF) -> None:
        self.freq[b] = 0
        if b in self.ghost:
            del self.ghost[b]
            self.main[b] = None
        else:
            self.small[b] = None

    def evict(self, pinned: Container[int], now: float) -> int | None:
        small, main = self.small, self.main
        small_pinned = main_pinned = False  # the queue holds nothing but pinned blocks
        small_skips = main_skips = 0  # consecutive pinned rotations since the last real step
        while True:
            if (
                small
                and not small_pinned
                and (len(small) > self.small_target or not main or main_pinned)
            ):
                b, _ = small.popitem(last=False)
                if b in pinned:
                    small[b] = None
                    small_skips += 1
                    small_pinned = small_skips >= len(small)
                    continue
                small_skips = 0
                if self.freq[b] > 1:
                    main[b] = None
                    main_pinned, main_skips = False, 0
                    continue
                del self.freq[b]
                self.ghost[b] = None
                if len(self.ghost) > self.ghosts:
                    self.ghost.popitem(last=False)
                return b
            if main and not main_pinned:
                b, _ = main.popitem(last=False)
                if b in pinned:
                    main[b] = None
                    main_skips += 1
                    main_pinned = main_skips >= len(main)
                    continue
                main_skips = 0
                if self.freq[b] > 0:
                    self.freq[b] -= 1
                    main[b] = None
                    continue
                del self.freq[b]
                return b
            return None

    def remove(self, b: int) -> None:
        del self.freq[b]
        if b in self.small:
            del self.small[b]
        else:
            del self.main[b]
