"""The compiled engine: ``Engine.run``'s results, bit for bit, at compiled speed.

``run_compiled`` reproduces ``Engine(tiers, config=config).run(...)`` exactly (totals, hits,
evictions, uncached blocks, per-request cached tokens and TTFT, the same float operations in
the same order) whenever ``supports(config, tiers)`` holds: one tier, one replica, no partial
blocks held (``hold_partial=False``, the engine's default), a policy of ``POLICY_CODES``, any
concurrency, timing, warm-up (``count_from``) and output blocks in the stream. The kernel is C
(``kernels.c``, compiled when kvtool is installed, loaded by ``kvtool.native``).
Requests run in chunks so that ``progress(done, total)`` is called between them, the state kept
in arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kvtool import native as k
from kvtool.simulate.config import SimConfig
from kvtool.simulate.engine import EngineResult
from kvtool.tiers.spec import Tier

# the kernel's policy codes (``native.LRU`` ...)
POLICY_CODES = {
    "lru": 0,
    "fifo": 1,
    "lfu": 2,
    "arc": 3,
    "s3fifo": 4,
    "ttl": 5,
    "infinite": 6,
    "belady": 7,
}
CHUNK = 8192  # requests per kernel call: progress between calls
RANKED = frozenset({"lfu", "belady"})  # the policies whose blocks carry a packed rank
MAX_REQUESTS = 1 << 22  # ranks pack (head, counter) into one int64: heads stay below 2**23
MAX_LOOKUPS = (1 << 31) - 1  # a block's list links are int32


def supports(config: SimConfig, tiers: list[Tier], n_requests: int, n_lookups: int = 0) -> bool:
    """Whether ``run_compiled`` reproduces the Python engine for this configuration: any
    number of requests for the unranked policies, fewer than ``MAX_REQUESTS`` for LFU and
    Belady (their rank's head counts requests), and fewer block lookups than an int32 link
    can name (``n_lookups`` bounds the distinct blocks)."""
    return (
        k.library() is not None
        and config.policy in POLICY_CODES
        and len(tiers) == 1
        and config.replicas == 1
        and (config.policy not in RANKED or n_requests < MAX_REQUESTS)
        and n_lookups < MAX_LOOKUPS
    )


@dataclass
class EngineState:
    """The kernel's state arrays, which it continues from call to call.

    The layout (block ids are dense, ``0..n_ids-1``; index names are the enums of ``kernels.c``,
    repeated in ``native``):

    - ``node[b, field]``, int32 (a block's fields side by side, all 0 at first): ``NEXT``/``PREV``
      link b in the one list that holds it (-1 ends a list); ``WHERE`` names that list (``NONE``;
      ``MAIN`` = the resident list of LRU, FIFO, TTL, ARC's T1, S3-FIFO's S, and "resident" for
      LFU, Belady and the infinite cache; ``SECOND`` = ARC's T2, S3-FIFO's M; ``GHOST`` = ARC's B1,
      S3-FIFO's G; ``GHOST2`` = ARC's B2); ``FREQ``: S3-FIFO's freq; ``PINS``: how many running
      requests hold b; ``SEEN``: the mark of the last admission count that saw b;
    - ``rank[b]``, int64 (LFU and Belady only): the rank as one int64, ``head << 40 | counter``:
      unique, and ordered as the tuples of ``policies.base.Ranked``;
    - ``stamp[b]``, float64 (TTL only): the time of b's latest use (``order[b]``);
    - ``lists[HEAD|TAIL|LEN, list]``, int64: each list's oldest end (the OrderedDict's first
      key), its newest end and length;
    - ``heap[k] = (key, block)``: LFU's and Belady's binary min-heap on the key, with stale entries
      (key no longer the block's, or the block gone) skipped when popped, as ``Ranked.evict`` does;
      rebuilt from the live keys once it outgrows ``2 * resident + 64`` (keys are unique, so the
      rebuild changes no victim);
    - one request at a time, LFU runs as ``LFU_LISTS``: ``rank[b]`` is b's count (the key's
      head) and ``heap[f] = (HEAD, TAIL, UP, DOWN)`` holds the blocks of count f in a list
      linked through ``NEXT``/``PREV``, oldest first (a key's counter is the order of
      ``set_rank`` calls, so appending keeps each list in key order), and the counts that have
      blocks in a list of their own, smallest first from ``ints[LOW]`` (``UP`` the next larger,
      ``DOWN`` the next smaller).
      The victim is the first unpinned block from the smallest count up: the heap's victim, in
      O(1) instead of a pop (the only pinned blocks are the running request's);
    - ``run_end``/``run_idx``: the running requests as a binary min-heap on (end, request index),
      the engine's ``heapq`` of ``(end, i, blocks)``;
    - ``ints``/``floats``: the scalars (``native``'s index names).
    """

    node: np.ndarray
    rank: np.ndarray
    stamp: np.ndarray
    lists: np.ndarray
    heap: np.ndarray
    run_end: np.ndarray
    run_idx: np.ndarray
    ints: np.ndarray
    floats: np.ndarray

    @classmethod
    def empty(cls, n_ids: int, n_requests: int, code: int, max_count: int = 0) -> EngineState:
        """Zeros (pages mapped as they are first touched): no list, no pin, no mark.
        ``LFU_LISTS`` keeps a list per count up to ``max_count`` where the others keep a heap."""
        ranked = code in (k.LFU, k.BELADY, k.LFU_LISTS)
        node = np.zeros((n_ids, k.NODE_FIELDS), np.int32)  # a block's fields side by side
        lists = np.full((3, k.N_LISTS), -1, np.int64)
        lists[k.LEN] = 0
        heap_size = 3 * n_ids + 128 if ranked else 0  # live keys + stale ones (bounded)
        floats = np.zeros(k.N_FLOATS)
        floats[k.LAST_START] = -np.inf
        ints = np.zeros(k.N_INTS, np.int64)
        ints[k.LOW] = -1  # no count has blocks
        if code == k.LFU_LISTS:
            heap = np.full((max_count + 2, 4), -1, np.int64)
        else:
            heap = np.empty((heap_size, 2), np.int64)
        return cls(
            node=node,
            rank=np.zeros(n_ids if ranked else 0, np.int64),
            stamp=np.zeros(n_ids if code == k.TTL else 0),
            lists=lists,
            heap=heap,
            run_end=np.empty(n_requests),
            run_idx=np.empty(n_requests, np.int64),
            ints=ints,
            floats=floats,
        )


def run_compiled(
    tiers: list[Tier],
    config: SimConfig,
    offsets: np.ndarray,
    blocks: np.ndarray,
    n_tokens: np.ndarray,
    arrivals: np.ndarray,
    output_tokens: np.ndarray,
    next_use: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
    count_from: int = 0,
) -> EngineResult:
    """``Engine(tiers, config=config).run(offsets, blocks, ...)`` for a configuration that
    ``supports`` (arguments as there; ``config.block_size`` resolved)."""
    B = config.block_size
    assert B is not None and supports(config, tiers, len(n_tokens), len(blocks))
    code = POLICY_CODES[config.policy]
    n_req = len(n_tokens)
    stream = np.ascontiguousarray(blocks, np.int64)
    n_ids = int(stream.max()) + 1 if len(stream) else 0
    if n_ids > 2 * len(stream) + 1024:  # sparse ids (not node ids): dense ones first
        _, stream = np.unique(stream, return_inverse=True)
        n_ids = int(stream.max()) + 1
    stream = k.first_use_ids(stream, n_ids)
    max_count = 0
    if code == k.LFU and config.concurrency == 1:  # one pinned request: count lists
        code = k.LFU_LISTS
        max_count = int(np.bincount(stream).max()) if len(stream) else 0  # counts never pass it
    state = EngineState.empty(n_ids, n_req, code, max_count)
    room = tiers[0].blocks
    capacity = (1 << 62) if code == k.INFINITE else room
    nu = (
        np.ascontiguousarray(next_use, np.float64)
        if code == k.BELADY and next_use is not None
        else np.zeros(0)
    )
    timing = config.timing
    ttft = np.zeros(n_req)
    cached_per = np.zeros(n_req, np.int64)
    offs = np.ascontiguousarray(offsets, np.int64)
    ns = np.ascontiguousarray(n_tokens, np.int64)
    ts = np.ascontiguousarray(arrivals, np.float64)
    outs = np.ascontiguousarray(output_tokens, np.int64)
    run_requests = k.library().kv_run_requests
    for first in range(0, n_req, CHUNK):
        if progress is not None:
            progress(first, n_req)
        run_requests(
            first,
            min(first + CHUNK, n_req),
            code,
            room,
            capacity,
            float(config.ttl_s or 0.0),
            B,
            config.concurrency or 0,
            float(timing.prefill_tps),
            float(timing.decode_tps),
            count_from,
            n_req,
            offs,
            stream,
            ns,
            ts,
            outs,
            nu.ctypes.data if len(nu) else None,
            state.node,
            state.rank,
            state.stamp,
            state.lists,
            state.heap,
            state.run_end,
            state.run_idx,
            state.ints,
            state.floats,
            ttft,
            cached_per,
        )
    ints = state.ints  # the warm-up marks stay 0 when ``count_from`` is never reached
    result = EngineResult(
        [tiers[0].name],
        requests=n_req - count_from,
        prompt_tokens=int(n_tokens[count_from:].sum()),
        cached_tokens=int(ints[k.CACHED]),
        hit_tokens=[int(ints[k.CACHED])],
        requests_with_hit=int(ints[k.WITH_HIT]),
        evictions=int(ints[k.EVICTIONS] - ints[k.WARM_EVICTIONS]),
        uncached_blocks=int(ints[k.UNCACHED] - ints[k.WARM_UNCACHED]),
        ttft=ttft,
        cached_per_request=cached_per,
        first_counted=count_from,
    )
    return result
