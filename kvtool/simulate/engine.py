"""The tiered KV-cache simulator: requests in timestamp order through HBM and lower tiers.

Semantics (docs/architecture.md, "Cached tokens"), per request r with full blocks b_0..b_{m-1}
at block size B:

- **Lookup** walks b_0, b_1, ... through the tiers, fastest first, and stops at the first block
  that no tier holds, or that only a lower tier holds and loading it would be slower than
  recomputing it (``tier_loads``). At most ``(n - 1) // B`` blocks count: vLLM always computes
  one token. A TTL policy's expired block is a miss.
- **Admission**: r runs from ``start`` to ``end`` (prefill + decode estimates); all its blocks are
  pinned first (so making room never evicts r's own hits), then put in the first tier (hits
  touched, lower-tier hits promoted, the rest inserted), and stay pinned until r ends: a running
  request's blocks cannot be evicted. Blocks are touched last to first and released last to
  first when r ends, as vLLM frees blocks tail-first, so a chain's last block is the first
  candidate for eviction.
- **Eviction** from the first tier: ``write_policy='back'`` demotes the victim into the next tier
  (and so on down; the last tier drops it); ``'through'`` writes every block into all lower
  tiers at insertion, so a first-tier victim is simply dropped.
- **Time**: r arrives at its timestamp (requests without one arrive when the previous did); it
  starts at arrival, or, with a concurrency limit, when a slot frees, and in any case only once
  its blocks fit in the first tier beside those of running requests (vLLM's scheduler waits
  for free blocks), and never before an earlier request on the same replica started (first
  come, first served); a request larger than the first tier runs alone and caches what fits.
  Prefill takes ``(n - cached) / prefill_tps`` plus the load time of its lower-tier hits;
  decode takes ``output_tokens / decode_tps``. TTFT = queueing + prefill.

- **Window**: with ``count_from`` (a warm-up: ``kvtool.traffic.measurement_window``) every
  request goes through the cache, but the totals count requests ``count_from..`` only: tokens,
  hits per tier, requests with a hit, evictions and uncached blocks from the admission of
  request ``count_from`` on.

A request's stream may end with its output blocks (``kvtool.traffic.streams_with_outputs``):
they are pinned and inserted with its prompt blocks, as vLLM caches each block of a running
request once it is full, and never hit by the request itself (the cap above stays below them).

The compiled twin, ``kvtool.simulate.compiled_engine`` (numba kernels in
``kvtool.simulate.engine_kernel``), gives the same results bit for bit for one tier and one
replica; ``simulate`` runs it wherever it applies. A change of semantics here is made there too
(``tests/test_compiled_engine.py`` compares the two).

Block ids are node ids of the block tree (docs/architecture.md, "Block identity"): equal ids
are equal prefixes, and the tree is keyed by model and tenant, so tenants never share. The
engine trusts its inputs: the ``SimConfig`` validated itself, and a lower tier's block is a
multiple of ``block_size`` (``kvtool.tiers.spec.check_block_sizes``).
"""

from __future__ import annotations

import heapq
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from kvtool.native import library
from kvtool.simulate.config import SimConfig, Timing
from kvtool.simulate.policies import Policy, make_policy
from kvtool.tiers.spec import Tier

INF = math.inf


@dataclass
class EngineResult:
    """Totals of one simulation over the counted requests ``first_counted..`` (all of them
    without a warm-up). ``hit_tokens[t]`` are cached tokens served from tier t. ``ttft`` and
    ``cached_per_request`` list every request, warm-up included."""

    tiers: list[str]
    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    hit_tokens: list[int] = field(default_factory=list)
    requests_with_hit: int = 0
    evictions: int = 0
    uncached_blocks: int = 0
    ttft: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cached_per_request: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    first_counted: int = 0

    @property
    def counted_ttft(self) -> np.ndarray:
        """TTFT of the counted requests."""
        return self.ttft[self.first_counted :]

    @property
    def token_hit_rate(self) -> float | None:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else None


def sequential_ttft(
    arrivals: np.ndarray,
    n_tokens: np.ndarray,
    cached: np.ndarray,
    output_tokens: np.ndarray,
    timing: Timing,
) -> np.ndarray:
    """TTFT of each request when requests run one at a time (no lower-tier loads): queueing
    behind the previous request plus the prefill of its uncached tokens. In C
    (``kv_sequential_ttft``, the same float operations) where kvtool's kernels are built."""
    out = np.zeros(len(n_tokens))
    lib = library()
    if lib is not None:
        lib.kv_sequential_ttft(
            len(n_tokens),
            np.ascontiguousarray(arrivals, np.float64),
            *(np.ascontiguousarray(a, np.int64) for a in (n_tokens, cached, output_tokens)),
            float(timing.prefill_tps),
            float(timing.decode_tps),
            out,
        )
        return out
    free = -INF
    prev = 0.0
    for i, (a, n, c, o) in enumerate(
        zip(
            arrivals.tolist(),
            n_tokens.tolist(),
            cached.tolist(),
            output_tokens.tolist(),
            strict=True,
        )
    ):
        arrival = prev if math.isnan(a) else a
        prev = arrival
        start = max(arrival, free)
        prefill = (n - c) / timing.prefill_tps
        out[i] = start - arrival + prefill
        free = start + prefill + o / timing.decode_tps
    return out


def next_uses(
    offsets: np.ndarray, blocks: np.ndarray, reach: np.ndarray | None = None
) -> np.ndarray:
    """For each stream position, the ordinal of the next request that uses the same block (inf
    when none): what the offline optima need. ``reach[r]``: how many leading blocks request r
    can hit (``(n - 1) // B``); a block past it is no use there, as it can never hit (None:
    every reference is a use). Along a chain next uses never decrease."""
    m = len(blocks)
    req = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    order = np.lexsort((req, blocks))
    uses = np.ones(m, bool) if reach is None else np.arange(m) - offsets[req] < reach[req]
    # in (block, request) order: the first use after each position, m when none
    first = np.where(uses[order], np.arange(m), m)
    after = np.full(m, m)
    after[:-1] = np.minimum.accumulate(first[::-1])[::-1][1:]
    found = after < m
    found[found] = blocks[order][after[found]] == blocks[order][found]
    nxt = np.full(m, np.inf)
    nxt[order[found]] = req[order][after[found]]
    return nxt


def tier_loads(
    tiers: list[Tier], block_size: int, kv_bytes_per_token: int | None, prefill_tps: float
) -> tuple[list[float], list[bool]]:
    """(seconds to load one block from each tier, whether each tier is used): a lower tier
    serves hits only if loading a block beats recomputing it; a chunk's latency is paid once
    per chunk. The first tier is where requests compute (no load)."""
    block_bytes = block_size * (kv_bytes_per_token or 0)
    recompute = block_size / prefill_tps
    load_s = [0.0]
    for t in tiers[1:]:
        k = (t.block_tokens or block_size) // block_size
        load_s.append(t.latency_s / k + (t.load_seconds(block_bytes) - t.latency_s))
    usable = [True] + [kv_bytes_per_token is not None and s < recompute for s in load_s[1:]]
    return load_s, usable


class _Replica:
    """One serving replica: its tiers' caches (lower ones possibly shared), the pins of its
    running requests and their end times."""

    def __init__(self, caches: list[Policy]):
        self.caches = caches
        self.pins: dict[int, int] = {}
        self.running: list[tuple[float, int, list[int]]] = []
        self.last_start = -INF  # first come, first served: no request starts before an earlier one


class Engine:
    """``config.replicas`` copies of ``tiers`` (fastest first) under one eviction policy; with
    ``config.shared_lower`` the tiers below the first are one pool that every replica reads and
    writes (Mooncake's global cache), else each replica has its own. ``config.block_size`` must
    be resolved (not None). With ``hold_partial`` a running request also holds its partial last
    block, as vLLM allocates it: a slot that is never shared and, freed without a hash, is
    reused before any cached block (what validation of a real server needs at small
    capacities). ``config.routing`` picks a replica per request: ``round_robin``, ``session`` (a
    session stays on one replica) or ``prefix_aware``: the best score = share of the request's
    blocks that the replica's own tiers hold as a prefix minus its running requests as a share
    of the busiest replica's (plus one): a prefix scorer and a load scorer weighed equally; ties
    go to the less busy, then the lower index."""

    def __init__(
        self,
        tiers: list[Tier],
        *,
        config: SimConfig,
        kv_bytes_per_token: int | None = None,
        hold_partial: bool = False,
    ):
        if not tiers:
            raise ValueError("at least one tier")
        if config.block_size is None:
            raise ValueError("config.block_size must be resolved before the engine runs")
        block_size = config.block_size
        self.config = config
        self.tiers = tiers
        self.block_size = block_size
        self.timing = config.timing
        self.concurrency = config.concurrency
        self.write_through = config.write_policy == "through"
        self.routing = config.routing
        self.shared_lower = config.shared_lower
        self.hold_partial = hold_partial
        options = {"ttl": config.ttl_s} if config.ttl_s is not None else {}

        def caches(k: int) -> list[Policy]:
            return [make_policy(config.policy, t.blocks, **options) for t in tiers[k:]]

        shared = caches(1) if config.shared_lower else None
        self.replicas = [
            _Replica(caches(0)[:1] + (shared if shared is not None else caches(1)))
            for _ in range(config.replicas)
        ]
        # a chunked tier stores blocks of k first-tier blocks, named by the chunk's last block
        self.chunk = [1] + [(t.block_tokens or block_size) // block_size for t in tiers[1:]]
        # where a block evicted from tier t goes under write-back: the next tier that stores
        # single blocks (chunked tiers are written as requests compute, see ``_write_chunks``)
        self.demote_to = [
            next((u for u in range(t + 1, len(tiers)) if self.chunk[u] == 1), None)
            for t in range(len(tiers))
        ]
        self.load_s, self.usable = tier_loads(
            tiers, block_size, kv_bytes_per_token, self.timing.prefill_tps
        )
        self._rr = 0

    @property
    def caches(self) -> list[Policy]:
        """The first replica's caches (the only ones without replicas)."""
        return self.replicas[0].caches

    # -- tier operations -------------------------------------------------------------------
    def _where(self, rep: _Replica, blocks: list[int], j: int, now: float) -> int:
        """The fastest tier of ``rep`` holding a valid copy of block j of ``blocks``, or -1. A
        chunked tier holds block j when it holds the whole chunk around it (named by the
        chunk's last block), and only full chunks exist."""
        for t, cache in enumerate(rep.caches):
            k = self.chunk[t]
            e = j if k == 1 else (j // k + 1) * k - 1
            if e >= len(blocks):
                continue
            b = blocks[e]
            if b in cache:
                if cache.valid(b, now):
                    return t
                cache.remove(b)
        return -1

    def _write_chunks(self, rep: _Replica, blocks: list[int], now: float, result: EngineResult):
        """Chunked tiers store every full chunk of a request as it is computed (as LMCache and
        vLLM's CPU offloading do), whatever the write policy."""
        for t in range(1, len(rep.caches)):
            k = self.chunk[t]
            if k > 1:
                for e in range(k - 1, len(blocks), k):
                    self._put(rep, t, blocks[e], now, INF, result)

    def _put(
        self,
        rep: _Replica,
        t: int,
        b: int,
        now: float,
        nu: float,
        result: EngineResult,
        ahead: int = 0,
    ) -> None:
        """Insert b into tier t of ``rep`` (only the first tier pins), evicting as the write
        policy says; a bypassing policy may decline b (``ahead``: ``Policy.admit``)."""
        cache = rep.caches[t]
        if self.tiers[t].blocks <= 0:
            return
        if b in cache:
            cache.hit(b, now, nu)
            return
        pinned = rep.pins if t == 0 else ()
        if cache.bypasses and not cache.admit(b, now, nu, pinned, ahead):
            return
        while len(cache) >= cache.capacity:
            victim = cache.evict(pinned, now)
            if victim is None:
                result.uncached_blocks += t == 0
                return
            result.evictions += t == 0
            below = self.demote_to[t]
            if not self.write_through and below is not None and self.chunk[t] == 1:
                self._put(rep, below, victim, now, INF, result)
        cache.insert(b, now, nu)
        if self.write_through and t == 0:
            for lower in range(1, len(rep.caches)):
                if self.chunk[lower] == 1:
                    self._put(rep, lower, b, now, nu, result)

    def _release(self, rep: _Replica, blocks: list[int], now: float) -> None:
        first = rep.caches[0]
        for b in reversed(blocks):
            left = rep.pins[b] - 1
            if left:
                rep.pins[b] = left
            else:
                del rep.pins[b]
            if b in first:
                if b < 0:  # a partial block: freed without a hash, reused before any cached one
                    first.remove(b)
                else:
                    first.release(b, now)

    def _route(self, blocks: list[int], cap: int, session: str | None, now: float) -> int:
        n = len(self.replicas)
        if n == 1:
            return 0
        if self.routing == "session" and session is not None:
            return zlib.crc32(session.encode()) % n
        if self.routing == "prefix_aware":
            own = 1 if self.shared_lower else len(self.tiers)
            busiest = max(len(rep.running) for rep in self.replicas) + 1
            best, best_key = 0, None
            for k, rep in enumerate(self.replicas):
                h = 0
                while h < cap and 0 <= self._where(rep, blocks, h, now) < own:
                    h += 1
                load = len(rep.running)
                key = ((h / cap if cap else 0.0) - load / busiest, -load, -k)
                if best_key is None or key > best_key:
                    best, best_key = k, key
            return best
        self._rr += 1
        return (self._rr - 1) % n

    # -- the run ---------------------------------------------------------------------------
    def run(
        self,
        offsets: np.ndarray,
        blocks: np.ndarray,
        n_tokens: np.ndarray,
        arrivals: np.ndarray,
        output_tokens: np.ndarray,
        next_use: np.ndarray | None = None,
        sessions: list[str | None] | None = None,
        progress: Callable[[int, int], None] | None = None,
        count_from: int = 0,
    ) -> EngineResult:
        """Simulate the requests in order (arrays indexed by request, in processing order);
        ``progress(done, total)`` is called every few thousand requests. The totals count
        requests ``count_from..`` (module docstring, "Window")."""
        B = self.block_size
        result = EngineResult(
            [t.name for t in self.tiers], hit_tokens=[0] * len(self.tiers), first_counted=count_from
        )
        n_req = len(n_tokens)
        result.requests = n_req - count_from
        result.prompt_tokens = int(n_tokens[count_from:].sum())
        warm_evictions = warm_uncached = 0
        ttft = np.zeros(n_req)
        cached_per = np.zeros(n_req, np.int64)
        nus = next_use.tolist() if next_use is not None else None
        offs = offsets.tolist()
        ns = n_tokens.tolist()
        outs = output_tokens.tolist()
        arr = arrivals.tolist()
        prev_arrival = 0.0
        timing = self.timing
        usable = self.usable
        load_s = self.load_s
        for i in range(n_req):
            if progress is not None and i % 4096 == 0:
                progress(i, n_req)
            if i == count_from:  # what the warm-up evicted is not counted
                warm_evictions, warm_uncached = result.evictions, result.uncached_blocks
            a = arr[i]
            arrival = prev_arrival if math.isnan(a) else float(a)
            prev_arrival = arrival
            for rep in self.replicas:  # requests that finished by now free their blocks
                while rep.running and rep.running[0][0] <= arrival:
                    end, _, done = heapq.heappop(rep.running)
                    self._release(rep, done, end)
            mine = blocks[offs[i] : offs[i + 1]].tolist()  # per request: no 8-byte-int copy of all
            n = ns[i]
            cap = min(len(mine), max(n - 1, 0) // B)
            rep = self.replicas[self._route(mine, cap, sessions[i] if sessions else None, arrival)]
            start = max(arrival, rep.last_start)
            if self.concurrency is not None:
                while len(rep.running) >= self.concurrency:
                    end, _, done = heapq.heappop(rep.running)
                    self._release(rep, done, end)
                    start = max(start, end)
                while rep.running and rep.running[0][0] <= start:
                    end, _, done = heapq.heappop(rep.running)
                    self._release(rep, done, end)
            # admission control: a request waits until its blocks fit beside the pinned ones
            room = self.tiers[0].blocks
            new = sum(1 for b in set(mine) if b not in rep.pins)
            while rep.running and len(rep.pins) + new > room:
                end, _, done = heapq.heappop(rep.running)
                self._release(rep, done, end)
                start = max(start, end)
                new = sum(1 for b in set(mine) if b not in rep.pins)
            rep.last_start = start
            caches = rep.caches
            hits = 0
            load = 0.0
            tiers_hit = []
            for j in range(cap):
                t = self._where(rep, mine, j, start)
                if t < 0 or not usable[t]:
                    break
                tiers_hit.append(t)
                load += load_s[t]
                hits += 1
            cached = hits * B
            if i >= count_from:
                for t in tiers_hit:
                    result.hit_tokens[t] += B
                result.cached_tokens += cached
                result.requests_with_hit += hits > 0
            cached_per[i] = cached
            base = offs[i]
            pins = rep.pins
            full = len(mine)
            if self.hold_partial and n > full * B:
                # vLLM also allocates the partial last block: never shared (a fresh id), and
                # freed without a hash when the request ends (``_release`` drops it)
                mine = [*mine, -1 - i]
            for b in mine:  # pinned first, as vLLM takes its hits out of the free queue first
                pins[b] = pins.get(b, 0) + 1
            ahead: list[int] = []  # a bypassing policy: non-resident blocks before each one
            if caches[0].bypasses:
                missing = 0
                for b in mine:
                    ahead.append(missing)
                    missing += b not in caches[0]
            for j in range(len(mine) - 1, -1, -1):
                b = mine[j]
                nu = nus[base + j] if nus is not None and j < full else INF
                if b in caches[0] and caches[0].valid(b, start):
                    caches[0].hit(b, start, nu)
                else:
                    if b in caches[0]:
                        caches[0].remove(b)
                    self._put(rep, 0, b, start, nu, result, ahead[j] if ahead else 0)
            if len(self.chunk) > 1 and max(self.chunk) > 1:
                self._write_chunks(rep, mine, start, result)
            prefill = (n - cached) / timing.prefill_tps + load
            ttft[i] = start - arrival + prefill
            end = start + prefill + outs[i] / timing.decode_tps
            heapq.heappush(rep.running, (end, i, mine))
        for rep in self.replicas:
            while rep.running:
                end, _, done = heapq.heappop(rep.running)
                self._release(rep, done, end)
        result.evictions -= warm_evictions
        result.uncached_blocks -= warm_uncached
        result.ttft = ttft
        result.cached_per_request = cached_per
        return result
