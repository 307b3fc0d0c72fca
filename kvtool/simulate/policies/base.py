"""What every eviction policy is: the hooks, two shared bases, and the registry.

The engine (``kvtool.simulate.engine``) owns *when* things happen; a policy only decides *which*
resident block goes. Contract, for every policy:

- blocks are ints; ``b in policy`` tells residency, ``len(policy)`` the number resident;
- ``insert(b, now, next_use)`` is called only for a non-resident ``b`` while
  ``len(policy) < capacity``; ``hit(b, now, next_use)`` only for a resident ``b``;
- ``evict(pinned, now)`` removes and returns one resident block that is not in ``pinned`` (blocks
  of running requests), or returns None when every resident block is pinned;
- ``remove(b)`` drops a resident block (the engine moved it elsewhere);
- ``valid(b, now)`` is False for a resident block that must not be used any more (TTL expiry);
  the engine then removes it and treats the lookup as a miss;
- ``release(b, now)``: a running request that held resident ``b`` ended;
- ``admit(b, now, next_use, pinned, ahead)``, called only when ``bypasses`` is set, before a
  non-resident ``b`` is inserted (room made or not): False declines to cache ``b`` (it is
  computed but not kept). ``ahead`` counts the blocks before ``b`` in the same request that are
  not resident either and will be inserted after it (each needs a slot too).

``now`` is the simulated time in seconds; ``next_use`` the ordinal of the next request that
could hit the block (``kvtool.simulate.engine.next_uses``; ``math.inf`` when none): only policies
with ``needs_next_use`` read it.
Within one request the engine touches blocks from the last to the first, as vLLM frees a finished
request's blocks tail-first, so a chain's first block ends up most recent. Constructor arguments
are trusted: ``capacity >= 0`` and the options (``ttl``) were validated by ``SimConfig``.

A policy module registers its class with ``@register(name, help)``; the package imports every
module in it, so the registry (``kvtool.simulate.policies.POLICIES``) knows them all.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import ClassVar, TypeVar

INF = math.inf


class Policy:
    """Base class: the hooks above. ``name`` is set by ``register``."""

    name: ClassVar[str] = "base"
    needs_ttl: ClassVar[bool] = False  # reads the ``ttl`` option (``SimConfig.ttl_s``)
    needs_next_use: ClassVar[bool] = False  # reads ``next_use`` (an offline policy)
    bypasses: ClassVar[bool] = False  # may decline a block: the engine calls ``admit``

    def __init__(self, capacity: int, **options: float) -> None:
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

    def admit(
        self, b: int, now: float, next_use: float, pinned: Container[int], ahead: int
    ) -> bool:
        """Whether to cache the non-resident ``b`` (only read when ``bypasses`` is set)."""
        return True


@dataclass(frozen=True)
class PolicyInfo:
    """One registered policy: its name, class and one-line description (the docs' table row).
    ``bound``: a reference bound rather than a policy a server runs (the offline optimum, the
    infinite cache); listed after the others."""

    name: str
    cls: type[Policy]
    help: str
    bound: bool = False


REGISTRY: dict[str, PolicyInfo] = {}

P = TypeVar("P", bound=type[Policy])


def register(name: str, help: str, *, bound: bool = False) -> Callable[[P], P]:
    """Class decorator: add the policy to the registry under ``name``."""

    def add(cls: P) -> P:
        if name in REGISTRY:
            raise ValueError(f"policy {name!r} is registered twice")
        cls.name = name
        REGISTRY[name] = PolicyInfo(name, cls, help, bound)
        return cls

    return add


class Ordered(Policy):
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


class Ranked(Policy):
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

    def set_rank(self, b: int, *head: float) -> None:
        """Give ``b`` the rank ``(*head, counter)``."""
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
