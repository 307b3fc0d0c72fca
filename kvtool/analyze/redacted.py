"""Prefix breaks of a redacted database: the rules of ``kvtool.analyze.breaks`` on fingerprints.

A redacted ingest kept no prompt text (docs/redaction.md), so each piece of a break is rebuilt
from what it kept:

- **predecessors**: the same rules (``choose_predecessors``). Sessions and conversations use the
  stored content keys and head identities; the most similar earlier head comes from the head
  ranks of the request's ingest batch (exact text order and exact common prefix and suffix
  lengths within a batch; a head of another batch only matches when it is identical);
- **cause and field path**: ``fingerprint_diff.first_difference``;
- **position**: the first 16-token block where the two chains differ; with the default template,
  also the first differing piece (one per element) and whether one piece extends the other, which
  makes the appended cases exact. The break's stored ``position`` is the first token of what is
  known (exact when the pieces say, else the start of the differing block); tokens lost at any
  block size that is a multiple of 16 are exact either way, since ``t // B`` depends only on
  ``t // 16``;
- the diff text is empty, and details never quote text.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np

from kvtool.analyze.breaks import (
    NEIGHBOURS,
    SIMILAR,
    Break,
    Carried,
    PairBreak,
    Predecessor,
    Pricing,
    appended,
    choose_predecessors,
    lost_tokens,
    pricing,
)
from kvtool.analyze.fingerprint_diff import Elements, first_difference
from kvtool.errors import InputError
from kvtool.store import Connection
from kvtool.store.fingerprints import (
    HeadRanks,
    PrefixPair,
    RequestFp,
    head_ranks,
    message_fps,
    prefix_pairs,
    request_fps,
    text_fps,
    tool_fps,
)
from kvtool.store.requests import RequestRow, request_rows
from kvtool.tokenize import BASE_BLOCK
from kvtool.traffic import Workload

EMPTY_DIFF = {"before": "", "removed": "", "added": "", "after": ""}


class _Sparse:
    """Range minimum over a fixed array: ``min(values[lo:hi])`` in O(1) after O(n log n)."""

    def __init__(self, values: np.ndarray):
        self.levels = [values]
        k = 1
        while 2 * k <= len(values):
            prev = self.levels[-1]
            self.levels.append(np.minimum(prev[:-k], prev[k:]))
            k *= 2

    def min(self, lo: int, hi: int) -> int:
        level = (hi - lo).bit_length() - 1
        row = self.levels[level]
        return int(min(row[lo], row[hi - (1 << level)]))


class RankedHeads:
    """``Heads`` on fingerprints: a head is its identity; similarity is measured with the head
    ranks of the batch the new request was ingested in (see the module docstring)."""

    def __init__(self, fps: dict[int, RequestFp], ranks: dict[int, HeadRanks]):
        self.fps = fps
        self.ranks = ranks
        self.by_rank = {b: {r: h for h, r in hr.rank.items()} for b, hr in ranks.items()}
        self.batches_of: dict[int, list[int]] = {}
        for b, hr in ranks.items():
            for h in hr.rank:
                self.batches_of.setdefault(h, []).append(b)
        self.sparse: dict[tuple[int, bool], _Sparse] = {}
        self.seen: dict[tuple[str | None, int], list[int]] = {}  # (tenant, batch) -> ranks
        self.latest: dict[tuple[str | None, int], int] = {}

    def key(self, row: RequestRow) -> int:
        return self.fps[row.req_id].head

    def n_system(self, row: RequestRow) -> int:
        return self.fps[row.req_id].n_system

    def _shared(self, hr: HeadRanks, a: int, b: int, reverse: bool) -> int:
        ra, rb = (hr.rank_rev[a], hr.rank_rev[b]) if reverse else (hr.rank[a], hr.rank[b])
        if ra == rb:
            return hr.length[a]
        table = self.sparse.get((hr.batch, reverse))
        if table is None:
            table = self.sparse[(hr.batch, reverse)] = _Sparse(
                hr.lcs_next if reverse else hr.lcp_next
            )
        return table.min(min(ra, rb), max(ra, rb))

    def best(self, row: RequestRow, key: Hashable) -> int | None:
        head = int(key)  # type: ignore[call-overload]
        batch = self.fps[row.req_id].batch
        hr = self.ranks.get(batch)
        ranks = self.seen.get((row.tenant, batch))
        if hr is None or head not in hr.rank or not ranks:
            return None
        pos = bisect.bisect_left(ranks, hr.rank[head])
        scored = []
        for j in range(max(0, pos - NEIGHBOURS), min(len(ranks), pos + NEIGHBOURS)):
            other = self.by_rank[batch][ranks[j]]
            pre = self._shared(hr, other, head, reverse=False)
            suf = self._shared(hr, other, head, reverse=True)
            if pre + suf >= SIMILAR * max(hr.length[other], hr.length[head]):
                scored.append((pre, suf, ranks[j], other))
        if not scored:
            return None
        return self.latest[(row.tenant, max(scored)[3])]

    def add(self, row: RequestRow, key: Hashable, index: int) -> None:
        head = int(key)  # type: ignore[call-overload]
        if (row.tenant, head) not in self.latest:
            for batch in self.batches_of.get(head, ()):
                ranks = self.seen.setdefault((row.tenant, batch), [])
                bisect.insort(ranks, self.ranks[batch].rank[head])
        self.latest[(row.tenant, head)] = index


@dataclass(frozen=True)
class Position:
    """Where two chains first differ: ``exact`` when known, else somewhere in ``lo``..``hi``
    (token offsets, both in one 16-token block)."""

    lo: int
    hi: int
    exact: int | None = None

    def at_least(self, limit: int) -> bool:
        """Whether the first difference is at or after ``limit``; when unknown (a limit inside
        the block, without pieces), it is taken to be before (docs/redaction.md)."""
        if self.exact is not None:
            return self.exact >= limit
        return self.lo >= limit

    @property
    def value(self) -> int:
        return self.exact if self.exact is not None else self.lo


def _first_mismatch(a: np.ndarray, b: np.ndarray) -> int:
    m = min(len(a), len(b))
    diff = np.flatnonzero(a[:m] != b[:m])
    return int(diff[0]) if len(diff) else m


class RedactedPrompts:
    """The fingerprints of some stored requests, their elements and their block paths."""

    def __init__(self, con: Connection, signature: str, rows: list[RequestRow], wl: Workload):
        self.fps = request_fps(con, signature, [r.req_id for r in rows])
        missing = [r.request_id for r in rows if r.req_id not in self.fps]
        if missing:
            raise InputError(
                f"the redacted database has no fingerprints for {len(missing)} requests "
                f"(first: {missing[0]}); re-ingest their logs with redaction"
            )
        self.el = Elements()
        mids = {m for f in self.fps.values() for m in f.messages or ()}
        tids = {t for f in self.fps.values() for t in f.tools or ()}
        self.el.messages = message_fps(con, mids)
        self.el.tools = tool_fps(con, tids)
        texts = {f.prompt for f in self.fps.values() if f.prompt is not None and not f.prompt_ids}
        for m in self.el.messages.values():
            texts.add(m.content)
            texts.update(m.call_args)
        for t in self.el.tools.values():
            _tree_texts(t.tree, texts)
        self.el.texts = text_fps(con, texts)
        self.el.prefixes = prefix_pairs(con, signature)
        self.heads = RankedHeads(self.fps, head_ranks(con, {f.batch for f in self.fps.values()}))
        self.index = {int(r): i for i, r in enumerate(wl.req_ids.tolist())}
        self.end = wl.end.tolist()
        self.parent = wl.parent.tolist()
        self.paths: dict[int, np.ndarray] = {}

    def path(self, req_id: int) -> np.ndarray:
        """The request's full blocks, as tree nodes from the first."""
        found = self.paths.get(req_id)
        if found is None:
            out = []
            v = self.end[self.index[req_id]]
            while v >= 0:
                out.append(v)
                v = self.parent[v]
            found = self.paths[req_id] = np.array(out[::-1], np.int64)
        return found

    def position(self, p: RequestRow, r: RequestRow) -> Position:
        """Where the chains of ``p`` and ``r`` first differ (see ``Position``)."""
        pf, rf = self.fps[p.req_id], self.fps[r.req_id]
        n = min(p.n_tokens, r.n_tokens)
        lo, hi = 0, n
        if p.tenant == r.tenant:  # the chains share a seed: blocks compare
            c = _first_mismatch(self.path(p.req_id), self.path(r.req_id))
            lo = BASE_BLOCK * c
            hi = min(n, lo + BASE_BLOCK - 1)
        if pf.piece_fps is None or rf.piece_fps is None:
            return Position(lo, hi)
        k = _first_mismatch(np.array(pf.piece_fps), np.array(rf.piece_fps))
        off = pf.piece_ends[k - 1] if k else 0
        if k >= len(pf.piece_fps) or k >= len(rf.piece_fps):
            return Position(lo, hi, exact=n)  # one's pieces start the other's
        len_p, len_r = pf.piece_ends[k] - off, rf.piece_ends[k] - off
        a, b = pf.piece_fps[k], rf.piece_fps[k]
        if PrefixPair("piece", a, b) in self.el.prefixes:
            return Position(lo, hi, exact=off + len_p)
        if PrefixPair("piece", b, a) in self.el.prefixes:
            return Position(lo, hi, exact=off + len_r)
        lo, hi = max(lo, off), min(hi, off + min(len_p, len_r) - 1)
        if lo > hi:  # the blocks agree past the shorter piece: it is a prefix of the other
            return Position(lo, hi, exact=off + min(len_p, len_r))
        return Position(lo, hi)


def _tree_texts(node: list, out: set[int]) -> None:
    if node[0] == "s":
        out.add(node[1])
    elif node[0] == "d":
        for child in node[2]:
            _tree_texts(child[2], out)
    elif node[0] == "l":
        for child in node[2]:
            _tree_texts(child, out)


def _carried(prompts: RedactedPrompts, p: RequestRow, r: RequestRow, continues: bool) -> Carried:
    """``breaks.carried_end`` from the pieces' ends (p's own end without them): r up to the
    pieces of the messages that stand for p's, then as many of p's generation-prompt pieces as
    r repeats there (equal, or the last one a prefix of r's piece)."""
    pf, rf = prompts.fps[p.req_id], prompts.fps[r.req_id]
    reusable = Carried(pf.end if continues or pf.messages is None else pf.head_end)
    if rf.messages is None or pf.messages is None:
        return reusable
    if not continues:
        return Carried(rf.head_end)
    if rf.piece_ends is None or pf.piece_ends is None or rf.piece_fps is None:
        return reusable
    at = len(r.message_keys) - appended(p.message_keys, r.message_keys) - rf.n_system
    if not 0 <= at < len(rf.piece_ends):
        return reusable
    end = start = min(rf.piece_ends[at], rf.end)
    i, j = len(pf.messages) - pf.n_system + 1, at + 1  # p's generation prompt; r's next piece
    while i < len(pf.piece_fps) and j < len(rf.piece_fps):
        a, b = pf.piece_fps[i], rf.piece_fps[j]
        size = pf.piece_ends[i] - pf.piece_ends[i - 1]
        if a == b or PrefixPair("piece", a, b) in prompts.el.prefixes:
            end += size
        if a != b:
            break
        i, j = i + 1, j + 1
    return Carried(end, start - pf.end)


def compare(
    prompts: RedactedPrompts,
    p: RequestRow,
    r: RequestRow,
    pair: Predecessor,
    *,
    block_size: int,
    price: Pricing,
) -> PairBreak | None:
    """``breaks.compare`` for two redacted requests (``pair``: how r follows p), priced as
    ``breaks.detect_breaks`` prices them (``price``: the workload's ``Pricing``)."""
    continues = pair.continues
    pf, rf = prompts.fps[p.req_id], prompts.fps[r.req_id]
    diff = first_difference(pf, rf, p.model, r.model, prompts.el)
    if diff is None:
        return None
    if not continues and diff.region == "messages":
        return None
    if not continues and diff.region == "prompt" and diff.cause == "other":
        return None
    reusable = pf.end if continues or pf.messages is None else pf.head_end
    changed = diff.cause == "model_changed"  # the model seeds every block: nothing is shared
    pos = Position(0, 0, exact=0) if changed else prompts.position(p, r)
    if pos.at_least(reusable) or pos.at_least(rf.end):
        return None
    end = price.reusable(pair, _carried(prompts, p, r, continues))
    lost = lost_tokens(end, max(pos.value, int(price.reused[pair.index])), r.n_tokens, block_size)
    return PairBreak(difference=diff, position=pos.value, tokens_lost=lost)


def detect_breaks(
    con: Connection,
    wl: Workload,
    signature: str,
    block_size: int,
    progress: Callable[[int, int], None] | None = None,
    *,
    output_cache: bool = True,
) -> list[Break]:
    """``breaks.detect_breaks`` on a redacted database: every break of the workload's requests
    (processing order), without diff text, priced under the same semantics (``output_cache``)."""
    rows = request_rows(con, signature, req_ids=wl.req_ids.tolist())
    prompts = RedactedPrompts(con, signature, rows, wl)
    pairs = choose_predecessors(rows, prompts.heads)
    if not pairs:
        return []
    price = pricing(wl, block_size, output_cache=output_cache)
    out = []
    for done, pair in enumerate(pairs, 1):
        r, p = rows[pair.index], rows[pair.pred]
        found = compare(prompts, p, r, pair, block_size=block_size, price=price)
        if progress:
            progress(done, len(pairs))
        if found is None:
            continue
        text = dict(EMPTY_DIFF)
        if found.difference.cause == "model_changed":
            text.update(removed=p.model or "", added=r.model or "")
        out.append(Break.of(r, p, found, text, continues=pair.continues))
    return out
