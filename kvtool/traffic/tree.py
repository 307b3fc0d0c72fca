"""Block trees from paths of block keys: the construction every block tree is built with.

A request is a path of block keys (a key names a block together with everything before it); the
tree's nodes are the distinct keys, ``parent`` the key before, ``depth`` the 0-based position,
numbered shallowest first (``by_depth``). ``tree_from_paths`` builds it with one sort;
``chain_ids`` turns per-block ids into path keys;
``rooted_tree`` builds a large trace partition by partition of first blocks (``part_of``), which
gives the same tree: requests with different first blocks share no node.
"""

from __future__ import annotations

import numpy as np


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


def depth_order(depth: np.ndarray) -> np.ndarray:
    """Node ids sorted by depth, shallowest first, ties by id: a child after its parent. The
    identity for a tree numbered by depth (``by_depth``: every partition's); a stable argsort
    for trees laid one partition after another (``rooted_tree``'s whole tree)."""
    if not len(depth) or bool((depth[1:] >= depth[:-1]).all()):
        return np.arange(len(depth), dtype=np.int64)
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
