"""Which sequences are a prefix of which: token pieces, and completion prompts.

A break is no break when the predecessor's reusable part is a prefix of the new prompt (text
appended at the end of a system prompt, a tool appended to a catalog, a longer last message);
once the text is gone, that can no longer be tested. So a redacted ingest records every pair
(short, long) among the sequences it holds, and those already stored, where ``short`` is a proper
prefix of ``long``.

Sequences are integer arrays (token ids, or a text's code points). ``sequence_key`` is the
identity of a sequence: the sum, modulo 2**64, of a 64-bit mix of each element with its position,
so the key of every prefix of a sequence is one cumulative sum away; ``prefix_pairs`` finds all
pairs with one sorted search per sequence, never comparing sequences pairwise.
"""

from __future__ import annotations

import numpy as np

from kvtool.store import as_bigint
from kvtool.store.fingerprints import PrefixPair

_K = np.uint64(0x9E3779B97F4A7C15)
_LENGTH_SALT = 0xD6E8FEB86659FD93


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer (uint64 arithmetic wraps)."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def prefix_keys(seq: np.ndarray) -> np.ndarray:
    """``keys[k]`` is the key of ``seq[:k + 1]`` (uint64), salted by its length."""
    n = len(seq)
    with np.errstate(over="ignore"):
        pos = np.arange(n, dtype=np.uint64) * _K
        sums = np.cumsum(_mix(seq.astype(np.uint64) + pos), dtype=np.uint64)
        return sums ^ _mix(np.arange(1, n + 1, dtype=np.uint64) + np.uint64(_LENGTH_SALT))


def sequence_key(seq: np.ndarray) -> int:
    """The identity of ``seq`` (signed 64-bit; 0 for an empty sequence)."""
    if not len(seq):
        return 0
    return as_bigint(int(prefix_keys(seq)[-1]))


def prefix_pairs(
    kind: str,
    new: dict[int, np.ndarray],
    known: set[int] | None = None,
    ids: dict[int, int] | None = None,
) -> set[PrefixPair]:
    """``PrefixPair``s of ``kind`` where sequence ``short`` is a proper prefix of ``long``:
    ``long`` among ``new`` (key -> sequence), ``short`` among ``new`` or ``known`` (keys of
    sequences stored before). ``ids`` maps keys to what the pairs name instead (text ids)."""
    shorts = np.array(sorted({*new, *(known or ())} - {0}), dtype=np.int64).view(np.uint64)
    shorts.sort()
    out: set[PrefixPair] = set()
    if not len(shorts):
        return out
    for key, seq in new.items():
        if len(seq) < 2:
            continue
        keys = prefix_keys(seq)[:-1]
        at = np.searchsorted(shorts, keys)
        at[at == len(shorts)] = 0
        for k in np.flatnonzero(shorts[at] == keys):
            short = as_bigint(int(keys[k]))
            if ids is None:
                out.add(PrefixPair(kind, short, key))
            else:
                out.add(PrefixPair(kind, ids[short], ids[key]))
    return out
