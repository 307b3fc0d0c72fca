"""Eviction policies: one small object per policy, all with the same hooks (libCacheSim style).

The engine (``kvtool.simulate.engine``) owns *when* things happen; a policy only decides *which*
resident block goes. Contract, for every policy:

- blocks are ints; ``b in policy`` tells residency, ``len(policy)`` the number resident;
- ``insert(b, now, next_use)`` is called only for a non-resident ``b`` while
  ``len(policy) < capacity``; ``hit(b, now, next_use)`` only for a resident ``b``;
- ``evict(pinned, now)`` removes and returns one resident block that is not in ``pinned`` (blocks
  of running requests), or returns None when every resident block is pinned;
- ``remove(b)`` drops a resident block (the engine moved it elsewhere);
- ``valid(b, now)`` is False for a resident block that must not be used any more (TTL expiry);
  the engine then removes it and treats the lookup as a miss.

``now`` is the simulated time in seconds; ``next_use`` the ordinal of the next request that
references the block (``math.inf`` when none): only the offline optimum (Belady) reads it.
Within one request the engine touches blocks from the last to the first, as vLLM frees a finished
request's blocks tail-first, so a chain's first block ends up most recent.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Container

INF = math.inf


class Policy:
    """Base class: the hooks above. Subclasses set ``name`` and implement the hooks."""

    name = "base"

    def __init__(self, capacity: int, **options: float) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = capacity

    def __contains__(self, b: object) -> bool:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def hit(self, b: int, now: float, next_use: float = INF) -> None:
        raise NotImplementedError

    def insert(self, b: int, now: float, next_use: float = INF) -> None:
        raise NotImplementedError

    def evict(self, pinned: Container[int], now: float) -> int | None:
        raise NotImplementedError

    def remove(self, b: int) -> None:
        raise NotImplementedError

    def valid(self, b: int, now: float) -> bool:
        return True

    def release(self, b: int, now: float) -> None:
        """A running request that held resident ``b`` finished (recency-ordered policies count
        the release as the latest use, as vLLM's free queue does)."""


class _Ordered(Policy):
    """Residents in an OrderedDict; eviction takes the first unpinned one from the front."""

    def __init__(self, capacity: int, **options: float) -> None:
        super().__init__(capacity)
        self.order: OrderedDict[int, float] = OrderedDict()

    def __contains__(self, b: object) -> bool:
        return b in self.order

    def __len__(self) -> int:
        return len(self.order)

    def insert(self, b: int, now: float, next_use: float = INF) -> None:
        self.order[b] = now

    def evict(self, pinned: Container[int], now: float) -> int | None:
        for b in self.order:
            if b not in pinned:
                del self.order[b]
                return b
        return None

    def remove(self, b: int) -> None:
        del self.order[b]


class LRU(_Ordered):
    """Least recently used first; a hit moves the block to the most-recent end (vLLM's free
    queue: with the engine's tail-first touches, a chain's last block is evicted first)."""

    name = "lru"

    def hit(self, b: int, now: float, next_use: float = INF) -> None:
        self.order[b] = now
        self.order.move_to_end(b)

    def release(self, b: int, now: float) -> None:
        self.hit(b, now)


class FIFO(_Ordered):
    """First inserted, first evicted; hits change nothing."""

    name = "fifo"

    def hit(self, b: int, now: float, next_use: float = INF) -> None:
        pass


class TTL(LRU):
    """LRU with expiry, as hosted prompt caches work: a block is usable only within ``ttl``
    seconds of its last use (each use refreshes it). Capacity still bounds it (LRU order)."""

    name = "ttl"

    def __init__(self, capacity: int, ttl: float = 300.0, **options: float) -> None:
        super().__init__(capacity)
        if ttl <= 0:
            raise ValueError(f"ttl must be positive, got {ttl}")
        self.ttl = ttl

    def valid(self, b: int, now: float) -> bool:
        return now - self.order[b] <= self.ttl

    def evict(self, pinned: Container[int], now: float) -> int | None:
        return super().evict(pinned, now)  # the oldest use is also the first to expire


class Infinite(Policy):
    """Never evicts (the capacity is ignored): the ideal hit rate."""

    name = "infinite"

    def __init__(self, capacity: int = 0, **options: float) -> None:
        super().__init__(0)
        self.capacity = 1 << 62
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


class _Ranked(Policy):
    """Evicts the unpinned resident block of the smallest rank.

    Invariant: ``rank[b]`` is the rank of every resident ``b``, a tuple ending in a counter that
    grows with every access (so ranks are unique and ties go to the least recently accessed);
    the heap holds ``(rank, b)`` for each of them plus stale entries (a rank that no longer
    matches), skipped lazily and dropped by a rebuild once they outnumber the live ones.
    """

    def __init__(self, capacity: int, **options: float) -> None:
        super().__init__(capacity)
        self.rank: dict[int, tuple] = {}
        self.heap: list[tuple[tuple, int]] = []
        self.clock = 0

    def __contains__(self, b: object) -> bool:
        return b in self.rank

    def __len__(self) -> int:
        return len(self.rank)

    def _set(self, b: int, *head: float) -> None:
        self.clock += 1
        rank = (*head, self.clock)
        self.rank[b] = rank
        heapq.heappush(self.heap, (rank, b))
        if len(self.heap) > 2 * len(self.rank) + 64:
            self.heap = [(r, x) for x, r in self.rank.items()]
            heapq.heapify(self.heap)

    def evict(self, pinned: Container[int], now: float) -> int | None:
        held: list[tuple[tuple, int]] = []  # live but pinned: pushed back afterwards
        victim = None
        while self.heap:
            entry = heapq.heappop(self.heap)
            rank, b = entry
            if self.rank.get(b) != rank:
                continue  # stale
            if b in pinned:
                held.append(entry)
                continue
            del self.rank[b]
            victim = b
            break
        for entry in held:
            heapq.heappush(self.heap, entry)
        return victim

    def remove(self, b: int) -> None:
        del self.rank[b]  # its heap entry turns stale


class LFU(_Ranked):
    """Least frequently used first; ties go to the least recently accessed block. A block's
    frequency counts its accesses while resident (insert = 1, each hit +1) and is forgotten when
    it leaves: its rank is ``(freq, counter)``."""

    name = "lfu"

    def hit(self, b: int, now: float, next_use: float = INF) -> None:
        self._set(b, self.rank[b][0] + 1)

    def insert(self, b: int, now: float, next_use: float = INF) -> None:
        self._set(b, 1)


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

    name = "s3fifo"

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

    name = "arc"

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


class Belady(_Ranked):
    """The offline optimum (Belady's MIN): evict the unpinned resident block whose next use (the
    ``next_use`` given at its latest ``hit``/``insert``) is farthest; never-again (``inf``)
    first. Its rank is ``(-next_use, counter)``: ties go to the least recently accessed."""

    name = "belady"

    def hit(self, b: int, now: float, next_use: float = INF) -> None:
        self._set(b, -next_use)

    def insert(self, b: int, now: float, next_use: float = INF) -> None:
        self._set(b, -next_use)


POLICIES: dict[str, type[Policy]] = {
    p.name: p for p in (LRU, FIFO, TTL, Infinite, LFU, S3FIFO, ARC, Belady)
}


def make_policy(name: str, capacity: int, **options: float) -> Policy:
    """A policy by name; ``options`` (e.g. ``ttl``) are passed to the ones that take them."""
    try:
        cls = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; one of {', '.join(POLICIES)}") from None
    return cls(capacity, **options)
