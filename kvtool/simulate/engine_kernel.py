"""The compiled twin of ``Engine.run`` for one tier and one replica: numba kernels on arrays.

Imported only by ``kvtool.simulate.compiled_engine`` (which imports it on first use, as numba
takes a noticeable part of a second to import); every function is ``njit(cache=True)``, so only
the first run of an install compiles them, and the entry points release the GIL (``simulate``
computes the ideal meanwhile). The semantics are the engine's (its module
docstring) and the policies' (their classes in ``kvtool.simulate.policies``): each function
below names the Python code it mirrors, step for step, so that victims, hits and times are the
same numbers in the same order.

State (allocated by ``compiled_engine.EngineState``; block ids are dense, ``0..n_ids-1``):

- ``node[b, field]``, int32 (a block's fields side by side, all 0 at first): ``NEXT``/``PREV``
  link b in the one list that holds it (-1 ends a list); ``WHERE`` names that list (``NONE``;
  ``MAIN`` = the resident list of LRU, FIFO, TTL, ARC's T1, S3-FIFO's S, and "resident" for LFU,
  Belady and the infinite cache; ``SECOND`` = ARC's T2, S3-FIFO's M; ``GHOST`` = ARC's B1,
  S3-FIFO's G; ``GHOST2`` = ARC's B2); ``FREQ``: S3-FIFO's freq; ``PINS``: how many running
  requests hold b; ``SEEN``: the mark of the last admission count that saw b;
- ``rank[b]``, int64 (LFU and Belady only): the rank as one int64, ``head << 40 | counter``:
  unique, and ordered as the tuples of ``policies.base.Ranked``;
- ``stamp[b]``, float64 (TTL only): the time of b's latest use (``order[b]``);
- ``lists[HEAD|TAIL|LEN, list]``: each list's oldest end (the OrderedDict's first key), its
  newest end and length;
- ``heap[k] = (key, block)``: LFU's and Belady's binary min-heap on the key, with stale entries
  (key no longer the block's, or the block gone) skipped when popped, as ``Ranked.evict`` does;
  rebuilt from the live keys once it outgrows ``2 * resident + 64`` (keys are unique, so the
  rebuild changes no victim);
- one request at a time, LFU runs as ``LFU_LISTS``: ``rank[b]`` is b's count (the key's head)
  and ``heap[f] = (HEAD, TAIL, UP, DOWN)`` holds the blocks of count f in a list linked through
  ``NEXT``/``PREV``, oldest first (a key's counter is the order of ``set_rank`` calls, so
  appending keeps each list in key order), and the counts that have blocks in a list of their
  own, smallest first from ``ints[LOW]`` (``UP`` the next larger, ``DOWN`` the next smaller).
  The victim is the first unpinned block from the smallest count up: the heap's victim, in
  O(1) instead of a pop (the only pinned blocks are the running request's);
- ``run_end``/``run_idx``: the running requests as a binary min-heap on (end, request index),
  the engine's ``heapq`` of ``(end, i, blocks)``;
- ``ints``/``floats``: the scalars (index constants below).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# policy codes (``compiled_engine.POLICY_CODES``)
LRU, FIFO, LFU, ARC, S3FIFO, TTL, INFINITE, BELADY = 0, 1, 2, 3, 4, 5, 6, 7
LFU_LISTS = 8  # LFU one request at a time: count lists instead of the heap
# node rows
NEXT, PREV, WHERE, FREQ, PINS, SEEN = 0, 1, 2, 3, 4, 5
IN_HEAP = FREQ  # LFU and Belady: whether the heap holds b's current key
# lists (``WHERE`` values)
NONE, MAIN, SECOND, GHOST, GHOST2, HELD = 0, 1, 2, 3, 4, 5
# ``lists`` rows; LFU_LISTS's count lists: ``heap[f, HEAD|TAIL|UP|DOWN]``
HEAD, TAIL, LEN = 0, 1, 2
UP, DOWN = 2, 3
# ``ints``
(
    RESIDENT,
    PINNED,
    EVICTIONS,
    UNCACHED,
    CACHED,
    WITH_HIT,
    WARM_EVICTIONS,
    WARM_UNCACHED,
    CLOCK,
    HEAP_LEN,
    RUN_LEN,
    MARK,
    LOW,
    N_INTS,
) = range(14)
# ``floats``
PREV_ARRIVAL, LAST_START, ARC_P, N_FLOATS = 0, 1, 2, 3
KEY_SHIFT = 1 << 40  # a rank's head above, its counter below


@njit(cache=True, nogil=True)
def first_use_ids(stream, n_ids):
    """The stream with ids renumbered 0, 1, ... in order of first use: no id's meaning
    changes, and blocks used together sit together in the state arrays (fewer cache misses)."""
    new_id = np.full(n_ids, -1, np.int64)
    out = np.empty(len(stream), np.int64)
    k = 0
    for p in range(len(stream)):
        b = stream[p]
        if new_id[b] < 0:
            new_id[b] = k
            k += 1
        out[p] = new_id[b]
    return out


# -- linked lists (OrderedDicts: first key = HEAD) -----------------------------------------------
@njit(cache=True)
def _append(node, lists, lst, b):
    """``od[b] = None`` for a b in no list: b becomes the newest of ``lst``."""
    t = lists[TAIL, lst]
    node[b, PREV] = t
    node[b, NEXT] = -1
    if t >= 0:
        node[t, NEXT] = b
    else:
        lists[HEAD, lst] = b
    lists[TAIL, lst] = b
    lists[LEN, lst] += 1
    node[b, WHERE] = lst


@njit(cache=True)
def _unlink(node, lists, b):
    """``del od[b]`` from the list that holds b."""
    lst = node[b, WHERE]
    p = node[b, PREV]
    n = node[b, NEXT]
    if p >= 0:
        node[p, NEXT] = n
    else:
        lists[HEAD, lst] = n
    if n >= 0:
        node[n, PREV] = p
    else:
        lists[TAIL, lst] = p
    lists[LEN, lst] -= 1
    node[b, WHERE] = NONE


@njit(cache=True)
def _pop_unpinned(node, lists, lst):
    """The oldest block of ``lst`` that no running request pins, unlinked; -1 if none
    (``Ordered.evict``, ``ARC._pop_lru``)."""
    b = lists[HEAD, lst]
    while b >= 0:
        if node[b, PINS] == 0:
            _unlink(node, lists, b)
            return b
        b = node[b, NEXT]
    return -1


# -- binary heaps ------------------------------------------------------------------------------
@njit(cache=True)
def _heap_push(heap, size, key, b):
    """Push (key, b) onto ``heap[:size]``; returns the new size."""
    k = size
    while k > 0:
        parent = (k - 1) >> 1
        if heap[parent, 0] <= key:
            break
        heap[k, 0] = heap[parent, 0]
        heap[k, 1] = heap[parent, 1]
        k = parent
    heap[k, 0] = key
    heap[k, 1] = b
    return size + 1


@njit(cache=True)
def _heap_pop(heap, size):
    """Remove the smallest entry of ``heap[:size]`` (read ``heap[0]`` first); returns the
    new size."""
    size -= 1
    key = heap[size, 0]
    b = heap[size, 1]
    k = 0
    while True:
        c = 2 * k + 1
        if c >= size:
            break
        if c + 1 < size and heap[c + 1, 0] < heap[c, 0]:
            c += 1
        if key <= heap[c, 0]:
            break
        heap[k, 0] = heap[c, 0]
        heap[k, 1] = heap[c, 1]
        k = c
    heap[k, 0] = key
    heap[k, 1] = b
    return size


@njit(cache=True)
def _set_rank(node, rank, heap, ints, b, head):
    """``Ranked.set_rank(b, head)``: a fresh unique key; the heap rebuilt from the live keys
    when stale entries outnumber them. ``ints[RESIDENT]`` already counts b."""
    ints[CLOCK] += 1
    key = head * KEY_SHIFT + ints[CLOCK]
    rank[b] = key
    node[b, IN_HEAP] = 1
    ints[HEAP_LEN] = _heap_push(heap, ints[HEAP_LEN], key, b)
    if ints[HEAP_LEN] > 2 * ints[RESIDENT] + 64:
        size = 0
        for k in range(ints[HEAP_LEN]):
            x = heap[k, 1]
            if node[x, WHERE] == MAIN and rank[x] == heap[k, 0]:
                heap[size, 0] = heap[k, 0]
                heap[size, 1] = x
                size += 1
        ints[HEAP_LEN] = 0
        for k in range(size):  # re-heapify by pushes (the live keys are unique)
            ints[HEAP_LEN] = _heap_push(heap, ints[HEAP_LEN], heap[k, 0], heap[k, 1])


@njit(cache=True)
def _belady_head(next_use, n_req):
    """The head of Belady's rank ``-next_use`` as a non-negative int: never again (inf) first,
    then the farthest next use."""
    if math.isinf(next_use):
        return 0
    return n_req + 1 - np.int64(next_use)


# -- LFU_LISTS: a list per count ----------------------------------------------------------------
@njit(cache=True)
def _count_append(node, counts, ints, b, f, below):
    """b becomes the newest block of count f; ``below``: a count with blocks smaller than f and
    none between them (-1: f is the smallest), where f's list joins when it was empty."""
    t = counts[f, TAIL]
    node[b, PREV] = t
    node[b, NEXT] = -1
    counts[f, TAIL] = b
    if t >= 0:
        node[t, NEXT] = b
        return
    counts[f, HEAD] = b
    up = ints[LOW] if below < 0 else counts[below, UP]
    if below < 0:
        ints[LOW] = f
    else:
        counts[below, UP] = f
    counts[f, DOWN] = below
    counts[f, UP] = up
    if up >= 0:
        counts[up, DOWN] = f


@njit(cache=True)
def _count_unlink(node, counts, ints, b, f):
    """b leaves the list of count f; an emptied count leaves the chain of counts."""
    p = node[b, PREV]
    n = node[b, NEXT]
    if p >= 0:
        node[p, NEXT] = n
    else:
        counts[f, HEAD] = n
    if n >= 0:
        node[n, PREV] = p
    else:
        counts[f, TAIL] = p
    if counts[f, HEAD] < 0:
        down = counts[f, DOWN]
        up = counts[f, UP]
        if down >= 0:
            counts[down, UP] = up
        else:
            ints[LOW] = up
        if up >= 0:
            counts[up, DOWN] = down


@njit(cache=True)
def _evict_counted(node, rank, counts, ints):
    """``Ranked.evict`` on the count lists: the oldest unpinned block of the smallest count."""
    f = ints[LOW]
    while f >= 0:
        b = counts[f, HEAD]
        while b >= 0:
            if node[b, PINS] == 0:
                _count_unlink(node, counts, ints, b, f)
                node[b, WHERE] = NONE
                return b
            b = node[b, NEXT]
        f = counts[f, UP]
    return -1


# -- the policies' hooks -----------------------------------------------------------------------
@njit(cache=True)
def _resident(node, b):
    w = node[b, WHERE]
    return w in (MAIN, SECOND, HELD)


@njit(cache=True)
def _hit(policy, node, rank, stamp, lists, heap, ints, b, now, next_use, n_req):
    """``Policy.hit`` of each policy class."""
    if policy in (LRU, TTL):
        if policy == TTL:
            stamp[b] = now
        if node[b, WHERE] == MAIN:  # a ``HELD`` block joins the list when its pins end
            _unlink(node, lists, b)
            _append(node, lists, MAIN, b)
    elif policy == LFU:
        _set_rank(node, rank, heap, ints, b, rank[b] // KEY_SHIFT + 1)
    elif policy == LFU_LISTS:
        f = rank[b]
        rank[b] = f + 1
        alone = heap[f, HEAD] == b and heap[f, TAIL] == b
        _count_unlink(node, heap, ints, b, f)
        # an emptied count's list would be where f + 1 joins: it joins above what was below f
        _count_append(node, heap, ints, b, f + 1, heap[f, DOWN] if alone else f)
    elif policy == BELADY:
        _set_rank(node, rank, heap, ints, b, _belady_head(next_use, n_req))
    elif policy == ARC:
        _unlink(node, lists, b)
        _append(node, lists, SECOND, b)
    elif policy == S3FIFO:
        node[b, FREQ] = min(node[b, FREQ] + 1, 3)


@njit(cache=True)
def _drop_oldest(node, lists, lst):
    b = lists[HEAD, lst]
    _unlink(node, lists, b)


@njit(cache=True)
def _insert(
    policy, node, rank, stamp, lists, heap, ints, floats, b, now, next_use, n_req, capacity
):
    """``Policy.insert`` of each policy class (b is not resident; there is room)."""
    ints[RESIDENT] += 1
    if policy in (LRU, TTL, FIFO):
        if policy == TTL:
            stamp[b] = now
        if policy != FIFO and node[b, PINS] > 0:
            node[b, WHERE] = HELD
        else:
            _append(node, lists, MAIN, b)
    elif policy == LFU:
        node[b, WHERE] = MAIN
        _set_rank(node, rank, heap, ints, b, 1)
    elif policy == LFU_LISTS:
        node[b, WHERE] = MAIN
        rank[b] = 1
        _count_append(node, heap, ints, b, 1, -1)
    elif policy == BELADY:
        node[b, WHERE] = MAIN
        _set_rank(node, rank, heap, ints, b, _belady_head(next_use, n_req))
    elif policy == INFINITE:
        node[b, WHERE] = MAIN
    elif policy == ARC:  # ``ARC.insert``
        c = capacity
        w = node[b, WHERE]
        if w == GHOST:
            floats[ARC_P] = min(
                float(c), floats[ARC_P] + max(lists[LEN, GHOST2] / lists[LEN, GHOST], 1.0)
            )
            _unlink(node, lists, b)
            _append(node, lists, SECOND, b)
        elif w == GHOST2:
            floats[ARC_P] = max(
                0.0, floats[ARC_P] - max(lists[LEN, GHOST] / lists[LEN, GHOST2], 1.0)
            )
            _unlink(node, lists, b)
            _append(node, lists, SECOND, b)
        else:
            if lists[LEN, MAIN] + lists[LEN, GHOST] >= c and lists[LEN, GHOST] > 0:
                _drop_oldest(node, lists, GHOST)
            resident = lists[LEN, MAIN] + lists[LEN, SECOND]
            if resident + lists[LEN, GHOST] + lists[LEN, GHOST2] >= 2 * c:
                _drop_oldest(node, lists, GHOST2 if lists[LEN, GHOST2] > 0 else GHOST)
            _append(node, lists, MAIN, b)
    elif policy == S3FIFO:  # ``S3FIFO.insert``
        node[b, FREQ] = 0
        if node[b, WHERE] == GHOST:
            _unlink(node, lists, b)
            _append(node, lists, SECOND, b)
        else:
            _append(node, lists, MAIN, b)


@njit(cache=True)
def _evict_ranked(node, rank, heap, ints):
    """``Ranked.evict``: the live, unpinned entry of the smallest key. A pinned block's entry is
    dropped rather than pushed back, and pushed again when its last pin ends (``_release``):
    the same victims, without popping every pinned block at every eviction."""
    while ints[HEAP_LEN] > 0:
        key = heap[0, 0]
        b = heap[0, 1]
        ints[HEAP_LEN] = _heap_pop(heap, ints[HEAP_LEN])
        if node[b, WHERE] != MAIN or rank[b] != key:
            continue  # stale
        if node[b, PINS] > 0:
            node[b, IN_HEAP] = 0
            continue
        node[b, WHERE] = NONE
        return b
    return -1


@njit(cache=True)
def _evict_s3fifo(node, lists, small_target, ghosts):
    """``S3FIFO.evict``, rotation of pinned tails and all-pinned marks included."""
    small_pinned = False
    main_pinned = False
    small_skips = 0
    main_skips = 0
    while True:
        n_small = lists[LEN, MAIN]
        n_main = lists[LEN, SECOND]
        if (
            n_small > 0
            and not small_pinned
            and (n_small > small_target or n_main == 0 or main_pinned)
        ):
            b = lists[HEAD, MAIN]
            _unlink(node, lists, b)
            if node[b, PINS] > 0:
                _append(node, lists, MAIN, b)
                small_skips += 1
                small_pinned = small_skips >= lists[LEN, MAIN]
                continue
            small_skips = 0
            if node[b, FREQ] > 1:
                _append(node, lists, SECOND, b)
                main_pinned = False
                main_skips = 0
                continue
            _append(node, lists, GHOST, b)
            if lists[LEN, GHOST] > ghosts:
                _drop_oldest(node, lists, GHOST)
            return b
        if n_main > 0 and not main_pinned:
            b = lists[HEAD, SECOND]
            _unlink(node, lists, b)
            if node[b, PINS] > 0:
                _append(node, lists, SECOND, b)
                main_skips += 1
                main_pinned = main_skips >= lists[LEN, SECOND]
                continue
            main_skips = 0
            if node[b, FREQ] > 0:
                node[b, FREQ] -= 1
                _append(node, lists, SECOND, b)
                continue
            return b
        return -1


@njit(cache=True)
def _evict(policy, node, rank, lists, heap, ints, floats, capacity):
    """``Policy.evict(pinned, now)`` of each policy class: the victim (now non-resident), or
    -1 when every resident block is pinned."""
    if policy in (LRU, FIFO, TTL):
        v = _pop_unpinned(node, lists, MAIN)
    elif policy in (LFU, BELADY):
        v = _evict_ranked(node, rank, heap, ints)
    elif policy == LFU_LISTS:
        v = _evict_counted(node, rank, heap, ints)
    elif policy == ARC:  # ``ARC.evict``
        n_t1 = lists[LEN, MAIN]
        if n_t1 > 0 and n_t1 > floats[ARC_P]:
            v = _pop_unpinned(node, lists, MAIN)
            if v >= 0:
                _append(node, lists, GHOST, v)
            else:
                v = _pop_unpinned(node, lists, SECOND)
                if v >= 0:
                    _append(node, lists, GHOST2, v)
        else:
            v = _pop_unpinned(node, lists, SECOND)
            if v >= 0:
                _append(node, lists, GHOST2, v)
            else:
                v = _pop_unpinned(node, lists, MAIN)
                if v >= 0:
                    _append(node, lists, GHOST, v)
    elif policy == S3FIFO:
        small_target = max(1, capacity // 10)
        v = _evict_s3fifo(node, lists, small_target, max(1, capacity - small_target))
    else:  # the infinite cache never evicts
        v = -1
    if v >= 0:
        ints[RESIDENT] -= 1
    return v


@njit(cache=True)
def _remove(policy, node, rank, lists, heap, ints, b):
    """``Policy.remove``: b leaves without a ghost (a stale heap key is skipped later)."""
    ints[RESIDENT] -= 1
    if policy == LFU_LISTS:
        _count_unlink(node, heap, ints, b, rank[b])
        node[b, WHERE] = NONE
    elif policy in (LFU, BELADY, INFINITE) or node[b, WHERE] == HELD:
        node[b, WHERE] = NONE
    else:
        _unlink(node, lists, b)


# -- the engine ----------------------------------------------------------------------------------
@njit(cache=True)
def _release(policy, node, rank, stamp, lists, heap, ints, offsets, stream, i, now, n_req):
    """``Engine._release`` of request i's blocks, last to first: LRU and TTL count it as a
    use (``HELD`` blocks whose last pin ends join the list's newest end: where every release
    moves them); the other policies' ``release`` does nothing."""
    for p in range(offsets[i + 1] - 1, offsets[i] - 1, -1):
        b = stream[p]
        node[b, PINS] -= 1
        if node[b, PINS] == 0:
            ints[PINNED] -= 1
        if policy in (LRU, TTL) and _resident(node, b):
            if policy == TTL:
                stamp[b] = now
            if node[b, PINS] == 0:
                _append(node, lists, MAIN, b)
        elif (
            policy in (LFU, BELADY)
            and node[b, PINS] == 0
            and node[b, WHERE] == MAIN
            and node[b, IN_HEAP] == 0
        ):  # unpinned: a candidate again
            node[b, IN_HEAP] = 1
            ints[HEAP_LEN] = _heap_push(heap, ints[HEAP_LEN], rank[b], b)


@njit(cache=True)
def _pop_running(run_end, run_idx, ints):
    """Pop the running request of the smallest (end, index); returns (end, index)."""
    end = run_end[0]
    idx = run_idx[0]
    size = ints[RUN_LEN] - 1
    ints[RUN_LEN] = size
    e = run_end[size]
    x = run_idx[size]
    k = 0
    while True:
        c = 2 * k + 1
        if c >= size:
            break
        if c + 1 < size and (
            run_end[c + 1] < run_end[c]
            or (run_end[c + 1] == run_end[c] and run_idx[c + 1] < run_idx[c])
        ):
            c += 1
        if e < run_end[c] or (e == run_end[c] and x < run_idx[c]):
            break
        run_end[k] = run_end[c]
        run_idx[k] = run_idx[c]
        k = c
    run_end[k] = e
    run_idx[k] = x
    return end, idx


@njit(cache=True)
def _push_running(run_end, run_idx, ints, end, idx):
    k = ints[RUN_LEN]
    ints[RUN_LEN] = k + 1
    while k > 0:
        parent = (k - 1) >> 1
        pe = run_end[parent]
        if pe < end or (pe == end and run_idx[parent] < idx):
            break
        run_end[k] = pe
        run_idx[k] = run_idx[parent]
        k = parent
    run_end[k] = end
    run_idx[k] = idx


@njit(cache=True)
def _new_blocks(node, stream, lo, hi, ints):
    """``sum(1 for b in set(mine) if b not in rep.pins)`` for ``mine = stream[lo:hi]``; each
    call marks its blocks with a fresh number (``ints[MARK]``) to count each one once."""
    ints[MARK] += 1
    mark = ints[MARK]
    new = 0
    for p in range(lo, hi):
        b = stream[p]
        if node[b, SEEN] != mark:
            node[b, SEEN] = mark
            if node[b, PINS] == 0:
                new += 1
    return new


@njit(cache=True, nogil=True)
def run_requests(
    first,
    last,
    policy,
    room,
    capacity,
    ttl,
    block_size,
    concurrency,
    prefill_tps,
    decode_tps,
    count_from,
    offsets,
    stream,
    n_tokens,
    arrivals,
    output_tokens,
    next_use,
    node,
    rank,
    stamp,
    lists,
    heap,
    run_end,
    run_idx,
    ints,
    floats,
    ttft,
    cached_per_request,
):
    """``Engine.run``'s loop over requests ``first..last-1`` (one tier of ``room`` blocks, the
    policy's ``capacity``; ``concurrency`` 0: unlimited; ``next_use`` empty unless Belady),
    continuing from the state arrays and leaving it there for the next call. The requests still
    running at the end are not released: nothing counted depends on it."""
    n_req = len(n_tokens)
    has_next_use = len(next_use) > 0
    for i in range(first, last):
        if i == count_from:  # what the warm-up evicted is not counted
            ints[WARM_EVICTIONS] = ints[EVICTIONS]
            ints[WARM_UNCACHED] = ints[UNCACHED]
        a = arrivals[i]
        arrival = floats[PREV_ARRIVAL] if math.isnan(a) else a
        floats[PREV_ARRIVAL] = arrival
        while ints[RUN_LEN] > 0 and run_end[0] <= arrival:
            end, done = _pop_running(run_end, run_idx, ints)
            _release(
                policy, node, rank, stamp, lists, heap, ints, offsets, stream, done, end, n_req
            )
        lo = offsets[i]
        hi = offsets[i + 1]
        n = n_tokens[i]
        cap = min(hi - lo, max(n - 1, 0) // block_size)
        start = max(arrival, floats[LAST_START])
        if concurrency > 0:
            while ints[RUN_LEN] >= concurrency:
                end, done = _pop_running(run_end, run_idx, ints)
                _release(
                    policy, node, rank, stamp, lists, heap, ints, offsets, stream, done, end, n_req
                )
                start = max(start, end)
            while ints[RUN_LEN] > 0 and run_end[0] <= start:
                end, done = _pop_running(run_end, run_idx, ints)
                _release(
                    policy, node, rank, stamp, lists, heap, ints, offsets, stream, done, end, n_req
                )
        # admission control: a request waits until its blocks fit beside the pinned ones
        # (``new`` only matters while a request runs)
        new = _new_blocks(node, stream, lo, hi, ints) if ints[RUN_LEN] > 0 else 0
        while ints[RUN_LEN] > 0 and ints[PINNED] + new > room:
            end, done = _pop_running(run_end, run_idx, ints)
            _release(
                policy, node, rank, stamp, lists, heap, ints, offsets, stream, done, end, n_req
            )
            start = max(start, end)
            new = _new_blocks(node, stream, lo, hi, ints)
        floats[LAST_START] = start
        hits = 0
        for p in range(lo, lo + cap):  # ``Engine._where`` on the one tier
            b = stream[p]
            if _resident(node, b):
                if policy != TTL or start - stamp[b] <= ttl:
                    hits += 1
                    continue
                _remove(policy, node, rank, lists, heap, ints, b)
            break
        cached = hits * block_size
        if i >= count_from:
            ints[CACHED] += cached
            if hits > 0:
                ints[WITH_HIT] += 1
        cached_per_request[i] = cached
        for p in range(lo, hi):  # pinned first
            b = stream[p]
            if node[b, PINS] == 0:
                ints[PINNED] += 1
                if policy in (LRU, TTL) and node[b, WHERE] == MAIN:
                    _unlink(node, lists, b)  # out of the list while pinned: ``HELD``
                    node[b, WHERE] = HELD
            node[b, PINS] += 1
        for p in range(hi - 1, lo - 1, -1):  # touched last to first
            b = stream[p]
            nu = next_use[p] if has_next_use else math.inf
            if _resident(node, b) and (policy != TTL or start - stamp[b] <= ttl):
                _hit(policy, node, rank, stamp, lists, heap, ints, b, start, nu, n_req)
                continue
            if _resident(node, b):
                _remove(policy, node, rank, lists, heap, ints, b)
            if room <= 0:  # ``Engine._put``
                continue
            # b is not resident here, so ``_put``'s hit branch cannot apply
            placed = True
            while ints[RESIDENT] >= capacity:
                victim = _evict(policy, node, rank, lists, heap, ints, floats, capacity)
                if victim < 0:
                    ints[UNCACHED] += 1
                    placed = False
                    break
                ints[EVICTIONS] += 1
            if placed:
                _insert(
                    policy,
                    node,
                    rank,
                    stamp,
                    lists,
                    heap,
                    ints,
                    floats,
                    b,
                    start,
                    nu,
                    n_req,
                    capacity,
                )
        prefill = (n - cached) / prefill_tps  # + the loads of lower-tier hits: none here
        ttft[i] = start - arrival + prefill
        _push_running(run_end, run_idx, ints, start + prefill + output_tokens[i] / decode_tps, i)
