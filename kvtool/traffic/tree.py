"""Block trees from paths of block keys: the construction every block tree is built with.

A request is a path of block keys (a key names a block together with everything before it); the
tree's nodes are the distinct keys, ``parent`` the key before, ``depth`` the 0-based position,
numbered shallowest first (``by_depth``). ``tree_from_paths`` builds it with one sort;
``chain_ids`` turns per-block ids into path keys;
``rooted_tree`` builds a large trace partition by partition of first blocks (``part_of``), which
gives the same tree: requests with different first blocks share no node.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvtool.native import library


def tree_from_paths(
    offsets: np.ndarray, blocks: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(end per request, parent per node, depth per node) from flat per-request block hashes
    (``blocks[offsets[i]:offsets[i+1]]`` is request i's chain); a node's parent and depth come
    from its first occurrence. One sort of the flat array; flat temporaries are 32-bit."""
    counts = np.diff(offsets)
    n = len(blocks)
    small = np.int32 if n < 2**31 - 1 else np.int64
    inv, n_nodes = _dense_ids(blocks, small)
    parent_of_flat = np.empty(n, small)
    parent_of_flat[1:] = inv[:-1]
    starts = offsets[:-1][counts > 0]
    parent_of_flat[starts] = -1
    parent = np.empty(n_nodes, np.int64)
    parent[inv[::-1]] = parent_of_flat[::-1]  # repeated indices: the last write (first) wins
    del parent_of_flat
    pos = np.arange(n, dtype=small) - np.repeat(offsets[:-1].astype(small), counts)
    depth = np.empty(n_nodes, np.int64)
    depth[inv[::-1]] = pos[::-1]
    del pos
    end = np.full(len(counts), -1, np.int64)
    has = counts > 0
    end[has] = inv[offsets[1:][has] - 1]
    return by_depth(end, parent, depth)


def by_depth(
    end: np.ndarray, parent: np.ndarray, depth: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tree renumbered shallowest first (ties in the old order): a parent's id is below its
    children's, and a pass over the nodes level by level reads them in order (``depth_order``
    is then the identity), which keeps the random accesses of a pass up or down the tree
    within two neighbouring levels."""
    if not len(depth) or bool((depth[1:] >= depth[:-1]).all()):
        return end, parent, depth
    perm = np.argsort(depth, kind="stable")
    new = np.empty(len(perm), np.int64)
    new[perm] = np.arange(len(perm), dtype=np.int64)
    up = parent[perm]
    parent = np.where(up >= 0, new[np.maximum(up, 0)], -1)
    return np.where(end >= 0, new[np.maximum(end, 0)], -1), parent, depth[perm]


def _dense_ids(values: np.ndarray, dtype: type) -> tuple[np.ndarray, int]:
    """(id per element, number of distinct values): equal values get equal ids, numbered in
    value order; what ``np.unique(return_inverse=True)`` gives, with fewer big temporaries.
    Equal values get equal ids whatever their order in the sort: it need not be stable."""
    if len(values) == 0:
        return np.zeros(0, dtype), 0
    perm = values.argsort()
    ordered = values[perm]
    ids = np.empty(len(values), dtype)
    ids[0] = 0
    np.cumsum(ordered[1:] != ordered[:-1], out=ids[1:])
    del ordered
    n = int(ids[-1]) + 1
    inv = np.empty(len(values), dtype)
    inv[perm] = ids
    return inv, n


@dataclass(frozen=True)
class DenseIds:
    """Values renumbered 0..: ``distinct``, the values that occur, sorted; ``index``, each
    value's position among them."""

    distinct: np.ndarray
    index: np.ndarray


def dense_ids(values: np.ndarray, bound: int) -> DenseIds:
    """What ``np.unique(values, return_inverse=True)`` gives, for values in ``0..bound-1``: a
    mark per possible value and a running count, O(values + bound) instead of a sort
    (``_dense_ids`` sorts, for values of any range)."""
    used = np.zeros(bound, bool)
    used[values] = True
    rank = np.cumsum(used, dtype=np.int64) - 1
    return DenseIds(np.flatnonzero(used), rank[values])


def depth_order(depth: np.ndarray) -> np.ndarray:
    """Node ids sorted by depth, shallowest first, ties by id: a child after its parent. The
    identity for a tree numbered by depth (``by_depth``: every partition's); a stable argsort
    for trees laid one partition after another (``rooted_tree``'s whole tree)."""
    if not len(depth) or bool((depth[1:] >= depth[:-1]).all()):
        return np.arange(len(depth), dtype=np.int64)
    if int(depth.max()) < 1 << 15:  # NumPy's stable sort of 16-bit keys is a radix sort
        return np.argsort(depth.astype(np.int16), kind="stable").astype(np.int64)
    return np.argsort(depth, kind="stable")


def depth_levels(depth: np.ndarray, order: np.ndarray) -> list[np.ndarray]:
    """The nodes of each depth, shallowest first, from ``depth_order``'s ``order`` (for the
    numpy passes that go level by level)."""
    if not len(depth):
        return []
    bounds = np.searchsorted(depth[order], np.arange(int(depth.max()) + 2))
    return [order[bounds[d] : bounds[d + 1]] for d in range(len(bounds) - 1)]


def mix64(x: np.ndarray, salt: int, chunk: int = 1 << 22) -> np.ndarray:
    """splitmix64 finalizer of ``x + salt`` (uint64 arithmetic wraps), in chunks so that the
    temporaries stay small."""
    out = np.empty(len(x), np.uint64)
    with np.errstate(over="ignore"):
        for lo in range(0, len(x), chunk):
            z = x[lo : lo + chunk].astype(np.uint64) + np.uint64(salt)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            out[lo : lo + chunk] = z ^ (z >> np.uint64(31))
    return out


_CHAIN = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplying by it is a bijection of uint64


def chain_ids(offsets: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Each element's path key: ``k_0 = mix(x_0)``, ``k_j = mix(k_{j-1} * C ^ x_j)`` along each
    request (``ids[offsets[i]:offsets[i+1]]``, uint64), so two blocks get the same key only when
    their whole prefixes of ids are equal (up to 64-bit collisions). One vectorized step per
    depth, over the requests that reach it (longest first)."""
    counts = np.diff(offsets)
    out = np.empty(len(ids), np.uint64)
    if len(ids) == 0:
        return out
    order = np.argsort(-counts, kind="stable")
    starts = offsets[:-1][order]
    reach = -counts[order]  # ascending: the requests longer than d are a prefix of ``order``
    key = np.zeros(len(order), np.uint64)
    with np.errstate(over="ignore"):
        for d in range(int(-reach[0])):
            active = int(np.searchsorted(reach, -d, side="left"))
            at = starts[:active] + d
            key = mix64(key[:active] * _CHAIN ^ ids[at], 0)
            out[at] = key
    return out


def part_of(first: np.ndarray, sizes: np.ndarray, parts: int) -> np.ndarray:
    """Per request, its partition of ``parts`` (uint64): a mix of its first salted block id
    ``first`` (ignored where ``sizes`` is 0: such a request has no node), so that requests with
    the same first block are in the same partition."""
    salted = np.where(sizes > 0, first, np.uint64(0)).astype(np.uint64)
    return mix64(salted, 0x5EED) % np.uint64(max(1, parts))


def part_tree(offsets: np.ndarray, salted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``tree_from_paths`` of the chains of salted ids (request i's:
    ``salted[offsets[i]:offsets[i + 1]]``, uint64): one partition's tree. The nodes, numbered by
    depth then key, and their parents and depths do not depend on the order of the requests."""
    keys = chain_ids(offsets, mix64(salted, 0))
    return tree_from_paths(offsets, keys.view(np.int64))


def rooted_tree(
    starts: np.ndarray, sizes: np.ndarray, ids: np.ndarray, salts: np.ndarray, parts: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``tree_from_paths`` of the chains (``chain_ids``) of request i's block ids
    ``ids[starts[i]:starts[i] + sizes[i]]`` (uint64), each salted with ``salts[i]``, built in
    ``parts`` partitions of requests by their first salted block (``part_of``): requests with
    different first blocks share no node, so each partition's tree is independent, and only a
    partition's ids are ever copied (gathered, salted, keyed, sorted). Nodes are numbered
    partition by partition (depth, then key, within one); one partition is the whole-trace
    build."""
    parts = max(1, parts)
    has = sizes > 0
    first = np.zeros(len(sizes), np.uint64)
    with np.errstate(over="ignore"):
        first[has] = ids[starts[has]] + salts[has]
    part = part_of(first, sizes, parts)
    del first
    order = np.argsort(part, kind="stable")  # request order kept within a partition
    bounds = np.searchsorted(part[order], np.arange(parts + 1, dtype=np.uint64))
    del part
    end = np.full(len(sizes), -1, np.int64)
    parents: list[np.ndarray] = []
    depths: list[np.ndarray] = []
    base = 0
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        rows = order[lo:hi]
        if not len(rows):
            continue
        counts = sizes[rows]
        sub = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(counts, out=sub[1:])
        at = np.repeat(starts[rows] - sub[:-1], counts) + np.arange(sub[-1])
        with np.errstate(over="ignore"):
            salted = ids[at] + np.repeat(salts[rows], counts)
        del at
        e, parent, depth = part_tree(sub, salted)
        del salted
        end[rows] = np.where(e >= 0, e + base, -1)
        parents.append(np.where(parent >= 0, parent + base, -1))
        depths.append(depth)
        base += len(parent)
    if not parents:
        return end, np.zeros(0, np.int64), np.zeros(0, np.int64)
    return end, np.concatenate(parents), np.concatenate(depths)


@dataclass
class Runs:
    """A block tree with unary stretches merged: ``of[v]`` is node v's run; run c covers depths
    ``lo[c]..hi[c]`` and hangs below run ``parent[c]`` (-1 at a root). Runs are numbered in
    the order of their first nodes, so a tree numbered by depth gives every run a higher id
    than its parent's."""

    of: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    parent: np.ndarray


def unary_runs(parent: np.ndarray, depth: np.ndarray, end: np.ndarray) -> Runs:
    """Merge the unary stretches of the tree (``parent``, ``depth`` per node; ``end`` per
    request, -1 for none): a node starts a run unless its parent has exactly one child and no
    request ends at the parent. So the requests through a run are the same at each of its nodes,
    and a request ends at the last node of its run. Pointer jumping finds every node's run head
    in O(log depth) passes."""
    n_nodes = len(parent)
    has_parent = parent >= 0
    children = np.bincount(parent[has_parent], minlength=n_nodes)
    is_end = np.zeros(n_nodes, bool)
    is_end[end[end >= 0]] = True
    head = ~has_parent
    head[has_parent] = (children[parent[has_parent]] != 1) | is_end[parent[has_parent]]
    ptr = np.where(head, np.arange(n_nodes), parent)
    while True:
        nxt = ptr[ptr]
        if np.array_equal(nxt, ptr):
            break
        ptr = nxt
    heads = np.nonzero(head)[0]
    run_id = np.empty(n_nodes, np.int64)
    run_id[heads] = np.arange(len(heads))
    of = run_id[ptr]
    lo = depth[heads]
    hi = lo + np.bincount(of, minlength=len(heads)) - 1  # a run's depths are consecutive
    up = np.where(has_parent[heads], of[np.maximum(parent[heads], 0)], -1)
    return Runs(of, lo, hi, up)


def pass_order(parent: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """The nodes in an order with every parent before its children, for a pass over the tree
    in C: the ids themselves where every parent's id is below its children's (every tree built
    here: ``by_depth``, partitions laid one after another, runs), else ``depth_order``."""
    ids = np.arange(len(parent), dtype=np.int64)
    return ids if bool((parent < ids).all()) else depth_order(depth)


def subtree_min(
    parent: np.ndarray, depth: np.ndarray, values: np.ndarray, order: np.ndarray | None = None
) -> None:
    """Each node's ``values`` entry (int64, one per node) lowered to the least over its
    subtree, in place: one pass up the tree, deepest first (C ``kv_first_through``, or a numpy
    level loop). ``order``: ``depth_order(depth)`` where the caller has it."""
    if not len(values):
        return
    parent = np.ascontiguousarray(parent, np.int64)
    lib = library()
    if lib is not None:
        order = pass_order(parent, depth) if order is None else order
        lib.kv_first_through(len(values), parent, np.ascontiguousarray(order, np.int64), values)
        return
    order = depth_order(depth) if order is None else order
    for level in reversed(depth_levels(depth, order)):  # deepest first: minima flow up
        up = level[parent[level] >= 0]
        np.minimum.at(values, parent[up], values[up])


def seen_blocks(runs: Runs, end: np.ndarray) -> np.ndarray:
    """Per request (``end``: its last node, -1 for none; requests in processing order), its
    leading blocks that an earlier request went through: its path's length less the runs of
    it that it goes through first (the first request through a run is the first to end
    anywhere below it, ``subtree_min``; requests pass a run whole). What the infinite cache
    hits of its prompt blocks, as ``kvtool.traffic.ideal.first_through_hits`` counts it."""
    n = len(end)
    has = np.flatnonzero(end >= 0)
    out = np.zeros(n, np.int64)
    if not len(has):
        return out
    last = runs.of[end[has]]
    first = np.full(len(runs.lo), n, np.int64)
    first[last[::-1]] = has[::-1]  # repeated runs: the last write (earliest) wins
    subtree_min(runs.parent, runs.lo, first)
    mine = first < n
    length = runs.hi - runs.lo + 1
    misses = np.bincount(first[mine], length[mine], minlength=n).astype(np.int64)
    out[has] = runs.hi[last] + 1 - misses[has]
    return out
