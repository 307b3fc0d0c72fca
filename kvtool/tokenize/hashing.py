"""Block identity (docs/architecture.md): chained hashes of 16-token blocks, and the prefix trie.

``h_i = xxh3_64(tokens of block i as little-endian u32, seed=h_{i-1})`` with
``h_{-1} = xxh3_64(tokenizer signature, model, tenant salt)``, so different tokenizers, models or
tenants never share a block. A block of any multiple of 16 tokens is identified by the base hash
where it ends.

``PrefixTrie`` memoizes the chain state after each distinct piece sequence, so a request that
resends a known history only hashes the blocks its new pieces complete: work is proportional to
distinct content.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import xxhash

from kvtool.tokenize.segments import TOKEN_DTYPE

BASE_BLOCK = 16
_U64 = np.uint64


def root_seed(signature: str, model: str | None, tenant: str | None) -> int:
    """The chain's extra keys: tokenizer/template signature, model and tenant salt."""
    return xxhash.xxh3_64_intdigest(f"{signature}\x00{model or ''}\x00{tenant or ''}".encode())


def chain_blocks(tokens: np.ndarray, seed: int, block: int = BASE_BLOCK) -> np.ndarray:
    """Chain hashes (uint64) of the full ``block``-token blocks of ``tokens``, chained from
    ``seed``."""
    nb = len(tokens) // block
    out = np.empty(nb, dtype=_U64)
    if nb == 0:
        return out
    view = memoryview(np.ascontiguousarray(tokens[: nb * block], dtype="<u4").tobytes())
    step = block * 4
    h = seed
    digest = xxhash.xxh3_64_intdigest
    for i in range(nb):
        h = digest(view[i * step : (i + 1) * step], seed=h)
        out[i] = h
    return out


class PrefixTrie:
    """Chain state per distinct piece sequence, and the distinct blocks it has produced.

    Node invariant: ``n[v]`` tokens so far; ``last[v]`` is the chain hash of the last full block
    (the root seed before any); ``tail[v]`` holds the ``n[v] % 16`` tokens after it. Blocks
    completed by a new node are queued (hash, parent hash or None, depth) until
    ``take_blocks``; every block is queued once per trie (a block reached through two different
    piece sequences is queued twice and deduplicated by the store).
    """

    def __init__(self) -> None:
        self.children: dict[tuple[int, int], int] = {}
        self.roots: dict[int, int] = {}
        self.n: list[int] = []
        self.last: list[int] = []
        self.tail: list[np.ndarray] = []
        self._hashes: list[np.ndarray] = []
        self._parents: list[int | None] = []  # parent of the first block of each queued run
        self._depths: list[int] = []

    def _new(self, n: int, last: int, tail: np.ndarray) -> int:
        self.n.append(n)
        self.last.append(last)
        self.tail.append(tail)
        return len(self.n) - 1

    def root(self, seed: int) -> int:
        node = self.roots.get(seed)
        if node is None:
            node = self._new(0, seed, np.zeros(0, TOKEN_DTYPE))
            self.roots[seed] = node
        return node

    def extend(self, node: int, piece: int, tokens: Callable[[int], np.ndarray]) -> int:
        """The child of ``node`` by piece id ``piece``; ``tokens(piece)`` gives its ids."""
        key = (node, piece)
        child = self.children.get(key)
        if child is None:
            ids = tokens(piece)
            tail = self.tail[node]
            seq = np.concatenate([tail, ids]) if len(tail) else ids
            new = chain_blocks(seq, self.last[node])
            full = len(new) * BASE_BLOCK
            if len(new):
                self._hashes.append(new)
                self._parents.append(self.last[node] if self.n[node] >= BASE_BLOCK else None)
                self._depths.append(self.n[node] // BASE_BLOCK)
            last = int(new[-1]) if len(new) else self.last[node]
            child = self._new(self.n[node] + len(ids), last, seq[full:].copy())
            self.children[key] = child
        return child

    def last_block(self, node: int) -> int | None:
        """Hash of the node's last full block (None before the first)."""
        return self.last[node] if self.n[node] >= BASE_BLOCK else None

    def take_blocks(self) -> pa.Table:
        """The queued blocks as (hash, parent, depth), signed 64-bit; clears the queue."""
        if not self._hashes:
            hashes = np.zeros(0, _U64)
            parents = pa.array([], pa.int64())
            depths = np.zeros(0, np.int32)
        else:
            hashes = np.concatenate(self._hashes)
            sizes = np.array([len(h) for h in self._hashes])
            prev = np.empty_like(hashes)
            prev[1:] = hashes[:-1]
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            firsts = np.array([p if p is not None else 0 for p in self._parents], _U64)
            prev[starts] = firsts
            null = np.zeros(len(hashes), bool)
            null[starts] = [p is None for p in self._parents]
            parents = pa.array(prev.view(np.int64), mask=null)
            depths = (
                np.repeat(np.array(self._depths) - starts, sizes) + np.arange(len(hashes))
            ).astype(np.int32)
        self._hashes, self._parents, self._depths = [], [], []
        return pa.table(
            {"hash": pa.array(hashes.view(np.int64)), "parent": parents, "depth": depths}
        )
