"""Breakpoint placements as the explicit-cache simulation reads them (``Breakpoints``), built
on the advisor's layouts (``kvtool.simulate.prompt_layout``) so that a placement or a moved
field can be simulated without a log that asks for it.

A ``Placement`` gives each request its breakpoint offsets, their content-block counts and
TTL names. Its ``Breakpoints`` have, per request with at least one breakpoint, the layout's
boundaries plus the breakpoint offsets, and as the identity of the prefix ending at offset ``e``
the 64-bit hash of the tokens after its last full 16-token block, seeded with that block's
chain hash (the request's chain: ``chain_blocks`` keyed by tokenizer signature, model and
tenant, as the tokenize pass hashes). Two prefixes get equal identities exactly when model,
tenant and token ids agree (up to hash collisions), whatever the other boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import xxhash

from kvtool.simulate.prompt_layout import PromptLayout
from kvtool.tokenize.breakpoints import Breakpoints, RequestMarks
from kvtool.tokenize.hashing import BASE_BLOCK, chain_blocks, root_seed
from kvtool.traffic.tree import tree_from_paths
from kvtool.traffic.workload import Workload


@dataclass(frozen=True)
class Placement:
    """Per request (processing order): breakpoint token offsets, ascending, each in
    ``1..len(ids)``, the content blocks up to each (what the lookback counts) and the TTL name
    of each ("" names none: the provider's default)."""

    offsets: tuple[tuple[int, ...], ...]
    blocks: tuple[tuple[int, ...], ...]
    ttls: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Chains:
    """Per request, its chain seed and the chain hashes of its full 16-token blocks."""

    seeds: tuple[int, ...]
    hashes: tuple[np.ndarray, ...]


def logged_placement(marks: Breakpoints) -> Placement:
    """The logged markers of ``marks`` as offsets (a marker repeated on one boundary counts
    once, with its first TTL)."""
    offsets, blocks, ttls = [], [], []
    for i in range(marks.n):
        at = marks.mark_at[marks.marks[i] : marks.marks[i + 1]]
        names = [marks.ttl_names[t] for t in marks.mark_ttl[marks.marks[i] : marks.marks[i + 1]]]
        first: dict[int, tuple[int, str]] = {}
        for k, name in zip(at, names, strict=True):
            first.setdefault(int(marks.ends[k]), (int(marks.blocks[k]), name))
        ordered = sorted(first)
        offsets.append(tuple(ordered))
        blocks.append(tuple(first[m][0] for m in ordered))
        ttls.append(tuple(first[m][1] for m in ordered))
    return Placement(tuple(offsets), tuple(blocks), tuple(ttls))


def layout_chains(layouts: list[PromptLayout], signature: str) -> Chains:
    """The block chains of the layouts' ids."""
    seeds = tuple(root_seed(signature, lay.model, lay.tenant) for lay in layouts)
    hashes = tuple(chain_blocks(lay.ids, s) for lay, s in zip(layouts, seeds, strict=True))
    return Chains(seeds, hashes)


def chained_workload(wl: Workload, chains: Chains) -> Workload:
    """``wl`` with its block tree rebuilt from ``chains`` (same requests, in order); every other
    column is kept."""
    parts = [h.view(np.int64) for h in chains.hashes]
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
    flat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    end, parent, depth = tree_from_paths(offsets, flat)
    return replace(wl, end=end, parent=parent, depth=depth)


def placement_breakpoints(
    layouts: list[PromptLayout], chains: Chains, placement: Placement
) -> Breakpoints:
    """``placement`` on the layouts, as the simulation reads it (module docstring)."""
    out: list[RequestMarks | None] = []
    for i, lay in enumerate(layouts):
        offsets = placement.offsets[i]
        if not offsets:
            out.append(None)
            continue
        found = dict(zip(lay.bounds, lay.blocks, strict=True))
        for m, count in zip(offsets, placement.blocks[i], strict=True):
            found.setdefault(m, count)
        ends = np.array(sorted(e for e in found if e > 0), np.int64)
        hashes = [_identity(lay.ids, chains.hashes[i], chains.seeds[i], int(e)) for e in ends]
        out.append(
            RequestMarks(
                ends=ends,
                blocks=np.array([found[int(e)] for e in ends], np.int64),
                hashes=np.asarray(hashes, np.uint64).view(np.int64),
                mark_at=np.searchsorted(ends, np.asarray(offsets, np.int64)).astype(np.int64),
                mark_ttl=placement.ttls[i],
            )
        )
    return Breakpoints.build(out)


def _identity(ids: np.ndarray, chain: np.ndarray, seed: int, end: int) -> int:
    k = end // BASE_BLOCK
    base = int(chain[k - 1]) if k else seed
    tail = np.ascontiguousarray(ids[k * BASE_BLOCK : end], dtype="<u4").tobytes()
    return xxhash.xxh3_64_intdigest(tail, seed=base)
