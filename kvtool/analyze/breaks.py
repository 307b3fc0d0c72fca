"""Prefix breaks (docs/architecture.md: breaks): which change ended a cached prefix, where, and
what it cost.

For every request r, its predecessor p is chosen in processing order:
- **within a session** (logged session id): the immediate predecessor, the previous request of
  the session, when r carries on its conversation (same first conversation message, so a request
  that flips back to an older variant, A after B, is still compared with B); otherwise (another
  thread of the session, or no conversation message) the earlier request of the session with
  the longest common prefix of elements (model, tool catalog, messages), the latest on ties;
- **without a session id**, a request whose head (model, system messages, tools) and first two
  conversation messages equal an earlier request's continues that conversation (the latest one);
- **otherwise** (first request of a session, or a new conversation) p is the earlier request of
  the same tenant whose head text shares the longest prefix, provided the two heads are the same
  logical prompt (common prefix + common suffix cover at least half of the longer head).

r *breaks* when it diverges from p before the reusable part of p ended: p's whole prompt (up to
its generation prompt) for continuations, p's head otherwise (another conversation's messages
were never reusable). The break position t is the first differing token; the cause and the field
path come from the structured diff (``kvtool.analyze.diff``).

Tokens lost are what a stable prompt would have kept, less what the cache still gave r: at block
size B, ``B * (min(W // B, c) - min(max(t, h) // B, c))`` with ``c = (n_r - 1) // B`` r's
cacheable blocks, ``h`` r's ideal (infinite-cache) cached tokens in the workload (what r reuses
anyway, e.g. an older request of the same variant), and ``W`` where p's reusable part ends *in
r's own rendering* (``carried_end``): r's head for a head break, else r up to the messages that
stand for p's (r less the messages it appended, ``appended``) and p's generation prompt as far
as r repeats it. So the breaks of a session cost the tokens it recomputes because of them,
compared with the same session whose changed field had held r's value (within a block per
request, block rounding): a request that returns to an older variant loses only what its
predecessor added; content r inserted counts (a stable prompt had it cached), content r dropped
does not. A model change breaks at token 0 (the model is part of every block's identity).

Breaks are priced under the analysis' semantics (``Pricing``): with output caching (analyze's
default, where ``caches_outputs``), ``h`` counts output blocks, and when r continues p, its
immediate predecessor, and carries p's last full block, ``W`` extends over p's answer up to
``⌊(n_p + o_p − 1)/b⌋·b`` in p's coordinates (``b`` the base block; shifted as r's rendering
shifts p's messages): the output blocks a stable r, p's successor, would have found cached
(``kvtool.traffic.output_blocks``). Without output caching both are prompt-only, as the
provider shortfall needs (``kvtool.analyze.losses``).

The public break API (what ``kvtool.check`` uses): ``Prompts`` turns stored rows into ``Prompt``s
(content and token ids), ``compare`` says whether and where one prompt breaks from another
(a ``PairBreak``), ``break_text`` decodes the tokens around it and ``lost_tokens`` prices a
position; ``detect_breaks`` runs the predecessor rules over a workload (``Break``s) and
``store_breaks`` / ``summarize_breaks`` store them and summarize them (a ``BreakSummary``).
Rows are read and breaks written through ``kvtool.store`` only. ``choose_predecessors`` takes
the heads through ``Heads``, so that a redacted database (no text) runs the same rules on its
fingerprints (``kvtool.analyze.redacted``), and so do ``pricing`` and ``appended``.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import orjson

from kvtool.analyze.diff import CAUSES, Difference, Req, first_difference
from kvtool.errors import InputError
from kvtool.store import Connection
from kvtool.store.requests import RequestRow, content_keys, load_contents, request_rows
from kvtool.store.runs import StoredBreak, replace_breaks
from kvtool.textscan import lcp
from kvtool.tokenize import PromptIds, PromptTokens, tokenizer_signature
from kvtool.tokenize.loader import TokenizerBundle
from kvtool.tokenize.template import SYSTEM_ROLES, content_text
from kvtool.traffic import (
    Workload,
    base_hit_blocks,
    caches_outputs,
    ideal_hits,
    output_blocks,
    output_hit_blocks,
    passes,
    runs,
)
from kvtool.traffic.output_blocks import VLLM_UNCOMPUTED

CONTEXT_TOKENS = 8  # tokens of context shown before and after a break
RESYNC_WINDOW = 64  # how far to look for the point where the two prompts agree again
RESYNC_RUN = 4  # ... as this many equal tokens
NEIGHBOURS = 8  # sorted head keys examined on each side of a new one
SIMILAR = 0.5  # a cross-session predecessor's head must be this similar (prefix + suffix share)
PAIR_BATCH = 4096  # pairs whose contents are fetched in one query (fewer past CACHE_TOKENS / 4)
CACHE_TOKENS = 1 << 24  # token ids the prompt caches may hold before they are emptied


@dataclass(frozen=True)
class Prompt:
    """One stored request as breaks compare it: its content as a template sees it (``req``) and
    its token ids as the tokenize pass computed them (``ids``)."""

    req: Req
    ids: PromptIds

    @property
    def model(self) -> str | None:
        return self.req.model


@dataclass(frozen=True)
class PairBreak:
    """Where and why a prompt breaks from the one before it: the first rendered ``difference``
    (cause, field path, detail), the first differing token ``position``, and the cached tokens
    that break costs at the block size (``tokens_lost``, a multiple of it)."""

    difference: Difference
    position: int
    tokens_lost: int


@dataclass
class Break:
    """One break of a workload: request ``req_id`` diverged from ``pred_req_id`` at token
    ``position``; ``diff`` is the decoded text around it (``break_text``); ``continues``: r
    continued p (all of p was reusable), else only p's head was."""

    req_id: int
    pred_req_id: int
    request_id: str
    predecessor_id: str
    position: int
    tokens_lost: int
    cause: str
    path: str
    detail: str
    diff: dict = field(default_factory=dict)
    continues: bool = True

    @classmethod
    def of(
        cls, r: RequestRow, p: RequestRow, found: PairBreak, diff: dict, *, continues: bool
    ) -> Break:
        """The break of request ``r`` from its predecessor ``p`` that ``compare`` found."""
        return cls(
            req_id=r.req_id,
            pred_req_id=p.req_id,
            request_id=r.request_id,
            predecessor_id=p.request_id,
            position=found.position,
            tokens_lost=found.tokens_lost,
            cause=found.difference.cause,
            path=found.difference.path,
            detail=found.difference.detail,
            diff=diff,
            continues=continues,
        )

    def example(self) -> dict:
        return {
            "request_id": self.request_id,
            "predecessor_id": self.predecessor_id,
            "position": self.position,
            "path": self.path,
            "tokens_lost": self.tokens_lost,
            "detail": self.detail,
            "diff": self.diff,
        }


@dataclass(frozen=True, slots=True)
class Predecessor:
    """Row ``index`` is compared with the earlier row ``pred`` (indices into the rows given to
    ``predecessors``); ``continues``: it is meant to continue it (same session or conversation),
    so all of the predecessor was reusable, not only its head; ``immediate``: it continues the
    request just before it in its session (or its conversation), whose answer it would carry."""

    index: int
    pred: int
    continues: bool
    immediate: bool = False


def extends(p: RequestRow, r: RequestRow) -> bool:
    """r resends p's model, tools and messages unchanged (and maybe adds messages)."""
    return (
        p.model == r.model
        and p.tools_key == r.tools_key
        and p.prompt_key == r.prompt_key
        and r.message_keys[: len(p.message_keys)] == p.message_keys
    )


def _element_lcp(a: tuple, b: tuple) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class Prompts:
    """Stored requests of one database as ``Prompt``s. Content bodies are loaded by key in
    batches on demand and kept; token ids are rebuilt as a tokenize pass in ``mode`` computed
    them (``PromptTokens``)."""

    def __init__(self, con: Connection, bundle: TokenizerBundle, mode: str):
        self.con = con
        self.bundle, self.mode = bundle, mode
        self.cache: dict[int, object] = {}
        self.tokens = PromptTokens(bundle, mode)

    def trim(self) -> None:
        """Empty the caches (bodies, encoded pieces, the encoder's segments) once their token
        ids pass ``CACHE_TOKENS``: memory stays bounded over a long log, and the requests that come
        next encode their prompts once more (a pass compares requests in processing order,
        so what it needs next is what the live conversations hold)."""
        if self.tokens.pieces.held + self.bundle.encoder.cached_tokens > CACHE_TOKENS:
            self.cache = {}
            self.tokens = PromptTokens(self.bundle, self.mode)
            self.bundle.encoder.forget()

    def load(self, rows: Iterable[RequestRow]) -> dict[int, object]:
        """The content bodies of ``rows`` (fetched in one query where missing) by key."""
        return self.load_keys(content_keys(r.prompt for r in rows))

    def load_keys(self, keys: set[int]) -> dict[int, object]:
        missing = {k for k in keys if k not in self.cache}  # not ``keys - cache.keys()``:
        if missing:  # that copies the whole cache into a set on every call
            self.cache.update(load_contents(self.con, missing))
        return self.cache

    def system_keys(self, row: RequestRow) -> tuple[int, ...]:
        """The keys of the row's leading system/developer messages."""
        n = 0
        for key in row.message_keys:
            body = self.load_keys({key})[key]
            if not isinstance(body, dict) or body.get("role") not in SYSTEM_ROLES:
                break
            n += 1
        return row.message_keys[:n]

    def req(self, row: RequestRow) -> Req:
        """The row's content as a template sees it."""
        b = self.load([row])
        if row.kind == "completion":
            return Req(model=row.model, tenant=row.tenant, prompt=b[row.prompt_key])
        return Req(
            model=row.model,
            tenant=row.tenant,
            messages=[b[k] for k in row.message_keys],
            tools=b[row.tools_key] if row.tools_key is not None else None,
        )

    def get(self, row: RequestRow) -> Prompt:
        """The row's content and token ids."""
        return Prompt(self.req(row), self.tokens.get(row.prompt, self.load([row])))


def _head_key(row: RequestRow, prompts: Prompts, cache: dict[tuple, str]) -> str:
    """The text that decides which earlier request is the same logical prompt: model, leading
    system messages and tool catalog (completions: the prompt text)."""
    ident = (row.model, row.tools_key, row.prompt_key, prompts.system_keys(row))
    key = cache.get(ident)
    if key is None:
        key = cache[ident] = _render_head_key(row, prompts)
    return key


def _render_head_key(row: RequestRow, prompts: Prompts) -> str:
    if row.kind == "completion":
        prompt = prompts.load_keys({row.prompt_key})[row.prompt_key]
        prompt = prompt if isinstance(prompt, str) else orjson.dumps(prompt).decode()
        return f"{row.model}\x00{prompt}"
    keys = prompts.system_keys(row)
    b = prompts.load_keys({*keys, row.tools_key} - {None})
    systems = "\x01".join(content_text(b[k].get("content")) for k in keys)
    tools = orjson.dumps(b[row.tools_key]).decode() if row.tools_key is not None else ""
    return f"{row.model}\x00{systems}\x02{tools}"


def _shared(a: str, b: str) -> tuple[int, int]:
    """(common prefix, common suffix) lengths."""
    return lcp(a, b), lcp(a[::-1], b[::-1])


class _HeadIndex:
    """Distinct head keys seen so far per tenant (sorted) and the latest request of each. The
    keys sharing the longest prefix with a new key are its sorted neighbours; of the nearest
    ``NEIGHBOURS`` on each side that are the same logical prompt, the one with the longest common
    prefix (then suffix) wins."""

    def __init__(self) -> None:
        self.keys: dict[str | None, list[str]] = {}
        self.latest: dict[tuple[str | None, str], int] = {}

    def best(self, tenant: str | None, key: str) -> int | None:
        keys = self.keys.get(tenant)
        if not keys:
            return None
        pos = bisect.bisect_left(keys, key)
        scored = []
        for j in range(max(0, pos - NEIGHBOURS), min(len(keys), pos + NEIGHBOURS)):
            pre, suf = _shared(keys[j], key)
            if pre + suf >= SIMILAR * max(len(keys[j]), len(key)):
                scored.append((pre, suf, keys[j]))
        if not scored:
            return None
        return self.latest[(tenant, max(scored)[2])]

    def add(self, tenant: str | None, key: str, index: int) -> None:
        if (tenant, key) not in self.latest:
            bisect.insort(self.keys.setdefault(tenant, []), key)
        self.latest[(tenant, key)] = index


class Heads(Protocol):
    """What the predecessor rules need to know of request heads: ``key`` (equal for the same
    head text), ``n_system`` (leading system messages), and an index of the heads seen so far
    per tenant (``best``: the latest request of the most similar one, or None; ``add``)."""

    def key(self, row: RequestRow) -> Hashable: ...
    def n_system(self, row: RequestRow) -> int: ...
    def best(self, row: RequestRow, key: Hashable) -> int | None: ...
    def add(self, row: RequestRow, key: Hashable, index: int) -> None: ...


class TextHeads:
    """``Heads`` on prompt text (``_head_key``, ``_HeadIndex``)."""

    def __init__(self, prompts: Prompts) -> None:
        self.prompts = prompts
        self.index = _HeadIndex()
        self.cache: dict[tuple, str] = {}

    def key(self, row: RequestRow) -> str:
        return _head_key(row, self.prompts, self.cache)

    def n_system(self, row: RequestRow) -> int:
        return len(self.prompts.system_keys(row))

    def best(self, row: RequestRow, key: Hashable) -> int | None:
        return self.index.best(row.tenant, str(key))

    def add(self, row: RequestRow, key: Hashable, index: int) -> None:
        self.index.add(row.tenant, str(key), index)


def predecessors(rows: list[RequestRow], prompts: Prompts) -> list[Predecessor]:
    """The predecessor of each row that does not simply extend it, in processing order (see
    the module docstring); rows without one (first requests, pure extensions) are left out."""
    prompts.load_keys(  # one query for what head keys need in the common case
        {k for r in rows for k in (r.tools_key, r.prompt_key, *r.message_keys[:2]) if k is not None}
    )
    return choose_predecessors(rows, TextHeads(prompts))


def _opening(row: RequestRow, heads: Heads) -> Hashable | None:
    """The key of a chat row's first conversation message (after its system messages)."""
    if row.kind != "chat":
        return None
    n = heads.n_system(row)
    return row.message_keys[n] if n < len(row.message_keys) else None


def choose_predecessors(rows: list[RequestRow], heads: Heads) -> list[Predecessor]:
    """``predecessors`` with the heads' text (or what stands in for it) behind ``heads``."""
    members: dict[str, list[int]] = {}
    conversations: dict[tuple, int] = {}
    out: list[Predecessor] = []
    for i, row in enumerate(rows):
        if row.kind == "hash":
            continue
        pred, continues, immediate = None, False, False
        session = members.get(row.session) if row.session is not None else None
        key = heads.key(row)
        if session:
            last = session[-1]
            if not extends(rows[last], row):
                opening = _opening(row, heads)
                best = last
                if opening is None or opening != _opening(rows[last], heads):
                    best_n = -1  # another thread of the session: the closest earlier request
                    for j in reversed(session):
                        n = _element_lcp(rows[j].elements, row.elements)
                        if n > best_n:
                            best, best_n = j, n
                pred, continues, immediate = best, True, best == last
        else:
            conv = None
            if row.session is None and row.kind == "chat":
                n_sys = heads.n_system(row)
                conv = (row.tenant, key, row.message_keys[n_sys : n_sys + 2])
                if len(conv[2]) < 2:
                    conv = None
            if conv is not None and conv in conversations:
                pred, continues, immediate = conversations[conv], True, True
            else:
                pred = heads.best(row, key)
            if conv is not None:
                conversations[conv] = i
            if pred is not None and extends(rows[pred], row):
                pred = None
        heads.add(row, key, i)
        if row.session is not None:
            members.setdefault(row.session, []).append(i)
        if pred is not None:
            out.append(Predecessor(i, pred, continues=continues, immediate=immediate))
    return out


def _first_mismatch(a: np.ndarray, b: np.ndarray) -> int:
    m = min(len(a), len(b))
    diff = np.flatnonzero(a[:m] != b[:m])
    return int(diff[0]) if len(diff) else m


def _resync(a: np.ndarray, b: np.ndarray, t: int) -> tuple[int, int] | None:
    """The smallest (i, j), by i + j, such that a[t+i:] and b[t+j:] agree on RESYNC_RUN
    tokens (or both end there): where the two prompts line up again after the break."""
    end = RESYNC_WINDOW + RESYNC_RUN
    wa, wb = a[t : t + end].tolist(), b[t : t + end].tolist()
    grams: dict[tuple, int] = {}
    for j in range(len(wb) - RESYNC_RUN, -1, -1):  # the first occurrence in b wins
        grams[tuple(wb[j : j + RESYNC_RUN])] = j
    if t + len(wb) == len(b):
        grams.setdefault((), len(wb))  # b's end, matched only by a's end
    best = None
    for i in range(len(wa) + 1):
        tail = tuple(wa[i : i + RESYNC_RUN])
        if len(tail) < RESYNC_RUN and not (t + i == len(a) and tail == ()):
            continue
        j = grams.get(tail)
        if j is not None and (best is None or i + j < sum(best)):
            best = (i, j)
    return best


def token_diff(bundle: TokenizerBundle, a: np.ndarray, b: np.ndarray, t: int) -> dict:
    """Decoded text around the first differing token ``t``: ``before``, the ``removed`` and
    ``added`` strings, and ``after`` (context where the prompts agree again)."""

    def dec(ids: np.ndarray) -> str:
        return bundle.tokenizer.decode(ids.tolist(), skip_special_tokens=False)

    found = _resync(a, b, t)
    if found is None:
        i = j = 2 * CONTEXT_TOKENS
        tail = "…"
    else:
        i, j = found
        tail = ""
    return {
        "before": dec(a[max(0, t - CONTEXT_TOKENS) : t]),
        "removed": dec(a[t : t + i]) + tail,
        "added": dec(b[t : t + j]) + tail,
        "after": "" if found is None else dec(a[t + i : t + i + CONTEXT_TOKENS]),
    }


def break_text(bundle: TokenizerBundle, p: Prompt, r: Prompt, found: PairBreak) -> dict:
    """The diff text of a break of ``r`` from ``p``: the two model names for a model change,
    else the decoded tokens around its position (``token_diff``)."""
    if found.difference.cause == "model_changed":
        return {"before": "", "removed": p.model or "", "added": r.model or "", "after": ""}
    return token_diff(bundle, p.ids.ids, r.ids.ids, found.position)


def lost_tokens(reusable: int, position: int, n_tokens: int, block_size: int) -> int:
    """Cached tokens the break cost r: reusable full blocks before vs after the break, both
    capped by r's own cacheable blocks ((n - 1) // B, vLLM always computes one token)."""
    cap = max(0, (n_tokens - 1) // block_size)
    return block_size * max(0, min(reusable // block_size, cap) - min(position // block_size, cap))


@dataclass(frozen=True)
class Pricing:
    """What pricing a workload's breaks takes from it, under one semantics (output caching on or
    off), per request in processing order (the order of ``request_rows`` of ``wl.req_ids``, so
    indexed by a ``Predecessor``'s indices): ``reused``, its ideal (infinite-cache) cached
    tokens, whatever broke; ``full_end``, where its last full base block ends (``⌊n/b⌋·b``);
    ``answer_end``, where the cached blocks of its answer end (``⌊(n + o − 1)/b⌋·b``: vLLM
    never caches its last sampled token), both in its own coordinates, -1 where its answer
    completes no block (every request without output caching)."""

    reused: np.ndarray
    full_end: np.ndarray
    answer_end: np.ndarray

    def reusable(self, pair: Predecessor, carried: Carried) -> int:
        """``W`` of the module docstring: where p's reusable prompt ends in r's rendering,
        extended by p's answer blocks (shifted into r's rendering) when r is the continuation of
        p (its immediate predecessor) and carries p's last full block, as p's successor in the
        stable traffic would (``kvtool.traffic.output_blocks``)."""
        stop = int(self.answer_end[pair.pred])
        if stop < 0 or not (pair.continues and pair.immediate):
            return carried.end
        if carried.end < int(self.full_end[pair.pred]) + carried.shift:
            return carried.end
        return max(carried.end, stop + carried.shift)


def pricing(
    wl: Workload,
    block_size: int,
    *,
    output_cache: bool,
    cached_tokens: np.ndarray | None = None,
) -> Pricing:
    """The workload's ``Pricing`` at ``block_size``: with ``output_cache`` (where it applies,
    ``caches_outputs``) as analyze's ideal counts output blocks, else prompt blocks only.
    ``cached_tokens``: each request's ideal cached tokens at ``block_size`` under the same
    ``output_cache`` when the caller has them (analyze's summary: ``RequestFigures``); used
    where it applies, so the ideal is not computed twice."""
    on = output_cache and caches_outputs(wl)
    if cached_tokens is None or (output_cache and not on):
        rs = runs(wl)
        ps = passes(wl, rs)
        if on:
            base = output_hit_blocks(wl, rs, ps, output_blocks(wl)).base_hits
        else:
            base = base_hit_blocks(wl, rs, ps)
        cached_tokens = ideal_hits(wl, rs, ps, base, block_size).cached_tokens
    b = wl.base
    n = wl.n_tokens.astype(np.int64)
    full = n // b * b
    stop = (n + wl.output_tokens.astype(np.int64) - VLLM_UNCOMPUTED) // b * b
    answers = on & (full > 0) & (stop > n)
    return Pricing(
        np.asarray(cached_tokens, np.int64), full, np.where(answers, stop, -1).astype(np.int64)
    )


def appended(p_messages: Sequence[Hashable], r_messages: Sequence[Hashable]) -> int:
    """How many of r's last messages r appended to p's conversation: the trailing run of
    messages p does not hold, at most the count r grew by; when r did not grow (it replaced
    some, e.g. a compaction), the first of that run stands for what it replaced."""
    have = set(p_messages)
    run = 0
    for key in reversed(r_messages):
        if key in have:
            break
        run += 1
    grow = len(r_messages) - len(p_messages)
    return min(run, grow) if grow > 0 else max(0, run - 1)


@dataclass(frozen=True)
class Carried:
    """Where p's reusable prompt ends in r's own rendering (``end``, ``W`` before p's answer) and
    how far r's rendering of p's messages is shifted from p's own (``shift``: r's position of
    p's generation prompt less p's), which maps p's answer into r."""

    end: int
    shift: int = 0


def carried_end(
    prompts: Prompts, p: RequestRow, r: RequestRow, pp: Prompt, rp: Prompt, *, continues: bool
) -> Carried:
    """Where p's reusable part ends in r's own rendering (``pp`` and ``rp`` are the rows'
    prompts): r's head for a head break, else r up to the messages that stand for p's, and as
    much of p's generation prompt as r renders there (a stable r would reuse it); p's own
    reusable end for completions (and where the template refuses r's shorter conversation)."""
    own = Carried(reusable_end(pp, continues=continues))
    if rp.req.messages is None or p.kind != "chat":
        return own
    if not continues:
        return Carried(rp.ids.head_end)
    k = appended(p.message_keys, r.message_keys)
    end = rp.ids.end
    if k:
        kept = replace(r.prompt, message_keys=r.message_keys[: len(r.message_keys) - k])
        try:
            end = min(prompts.tokens.get(kept, prompts.load([r])).end, end)
        except InputError:  # the template refuses the shorter conversation: p's own end counts
            return own
    # p's generation prompt, as far as r renders the same tokens there
    gen = _first_mismatch(pp.ids.ids[pp.ids.end :], rp.ids.ids[end:])
    return Carried(end + gen, end - pp.ids.end)


def reusable_end(p: Prompt, *, continues: bool) -> int:
    """Where the reusable part of ``p`` ends: all of it (up to its generation prompt) for a
    request that continues it or a completion, else its head."""
    return p.ids.end if continues or p.req.messages is None else p.ids.head_end


def compare(
    p: Prompt,
    r: Prompt,
    *,
    continues: bool,
    block_size: int,
    specials: tuple[str, ...] = (),
) -> PairBreak | None:
    """Whether, where and why ``r`` breaks from ``p`` (None: it does not). ``continues``: r is
    meant to continue p (same session or conversation), so all of p was reusable; otherwise only
    p's head was (and a difference in the conversation messages is no break). ``specials``:
    special-token strings, ignored when deciding that two texts differ only in rendering. The
    tokens lost are priced on the pair alone (p's reusable part, from the position);
    ``detect_breaks`` prices a workload's breaks in r's rendering, net of what r reused."""
    diff = first_difference(p.req, r.req, specials)
    if diff is None:
        return None
    if not continues and diff.region == "messages":
        return None
    if not continues and diff.region == "prompt" and diff.cause == "other":
        return None  # an unrelated completion prompt, not another render of the same one
    # the model is part of every block's identity: a model change shares nothing
    position = 0 if diff.cause == "model_changed" else _first_mismatch(p.ids.ids, r.ids.ids)
    reusable = reusable_end(p, continues=continues)
    if position >= reusable or position >= r.ids.end:
        return None
    lost = lost_tokens(reusable, position, len(r.ids.ids), block_size)
    return PairBreak(difference=diff, position=position, tokens_lost=lost)


def _pair_batches(pairs: list[Predecessor], rows: list[RequestRow]) -> dict[int, int]:
    """The batches ``detect_breaks`` fetches contents for, as start -> stop (indices into
    ``pairs``): at most ``PAIR_BATCH`` pairs, and no more once their prompts reach a quarter
    of ``CACHE_TOKENS``; every batch holds at least one pair."""
    out: dict[int, int] = {}
    start = 0
    while start < len(pairs):
        stop, tokens = start, 0
        full = False
        while stop < len(pairs) and not full:
            tokens += rows[pairs[stop].index].n_tokens + rows[pairs[stop].pred].n_tokens
            stop += 1
            full = stop - start >= PAIR_BATCH or tokens >= CACHE_TOKENS // 4
        out[start] = stop
        start = stop
    return out


def detect_breaks(
    con: Connection,
    wl: Workload,
    bundle: TokenizerBundle,
    mode: str,
    block_size: int,
    progress: Callable[[int, int], None] | None = None,
    *,
    signature: str | None = None,
    output_cache: bool = True,
    cached_tokens: np.ndarray | None = None,
) -> list[Break]:
    """Every break of the workload's requests (processing order), with its diff text and its
    tokens lost (the module docstring), priced with output blocks cached where
    ``output_cache`` (analyze's default) and it applies, else on prompt blocks alone. The rows
    are those with a chain for ``signature`` (default: the one ``bundle`` writes).
    ``cached_tokens``: the ideal's per-request cached tokens, when known (``pricing``)."""
    signature = signature or tokenizer_signature(bundle)
    rows = request_rows(con, signature, req_ids=wl.req_ids.tolist())
    prompts = Prompts(con, bundle, mode)
    pairs = predecessors(rows, prompts)
    specials = tuple(bundle.added_tokens)
    price = None
    if pairs:
        price = pricing(wl, block_size, output_cache=output_cache, cached_tokens=cached_tokens)
    starts = _pair_batches(pairs, rows)
    out = []
    for done, pair in enumerate(pairs, 1):
        if done - 1 in starts:  # the next batch's contents in one query, the caches bounded
            prompts.trim()
            batch = pairs[done - 1 : starts[done - 1]]
            prompts.load(rows[k] for b in batch for k in (b.index, b.pred))
        r, p = rows[pair.index], rows[pair.pred]
        pp, rp = prompts.get(p), prompts.get(r)
        found = compare(pp, rp, continues=pair.continues, block_size=block_size, specials=specials)
        if found is not None and price is not None:
            carried = carried_end(prompts, p, r, pp, rp, continues=pair.continues)
            end = price.reusable(pair, carried)
            at = max(found.position, int(price.reused[pair.index]))
            found = replace(found, tokens_lost=lost_tokens(end, at, len(rp.ids.ids), block_size))
        if progress:
            progress(done, len(pairs))
        if found is None:
            continue
        text = break_text(bundle, pp, rp, found)
        out.append(Break.of(r, p, found, text, continues=pair.continues))
    return out


@dataclass
class CauseSummary:
    """The breaks of one cause: how many, the tokens they lost (share of all prompt tokens,
    dollars at the input price) and the costliest of them (``examples``)."""

    count: int
    tokens_lost: int
    share_of_prompt_tokens: float | None
    dollars_lost: float
    examples: list[Break]

    def to_json(self) -> dict:
        return {
            "count": self.count,
            "tokens_lost": self.tokens_lost,
            "share_of_prompt_tokens": self.share_of_prompt_tokens,
            "dollars_lost": self.dollars_lost,
            "examples": [b.example() for b in self.examples],
        }


@dataclass
class BreakSummary:
    """A workload's breaks summarized: ``causes`` holds every cause of ``CAUSES`` (in that order,
    zero counts included); the totals are their sums. ``causes_json()`` is the ``--json``
    ``breaks`` object, ``totals_json()`` its ``break_summary`` (docs/analyze.md)."""

    causes: dict[str, CauseSummary]
    breaks: int
    tokens_lost: int
    share_of_prompt_tokens: float | None
    dollars_lost: float
    price_input_per_mtok: float

    def causes_json(self) -> dict:
        return {cause: c.to_json() for cause, c in self.causes.items()}

    def totals_json(self) -> dict:
        return {
            "breaks": self.breaks,
            "tokens_lost": self.tokens_lost,
            "share_of_prompt_tokens": self.share_of_prompt_tokens,
            "dollars_lost": self.dollars_lost,
            "price_input_per_mtok": self.price_input_per_mtok,
        }


def summarize_breaks(
    breaks: list[Break], prompt_tokens: int, price_input: float, examples: int
) -> BreakSummary:
    """Per cause and in total, priced at ``price_input`` $ per million tokens; the ``examples``
    costliest breaks of each cause (ties in detection order)."""

    def share(lost: int) -> float | None:
        return lost / prompt_tokens if prompt_tokens else None

    causes: dict[str, CauseSummary] = {}
    for cause in CAUSES:
        mine = [b for b in breaks if b.cause == cause]
        lost = sum(b.tokens_lost for b in mine)
        top = sorted(mine, key=lambda b: -b.tokens_lost)[:examples]
        causes[cause] = CauseSummary(len(mine), lost, share(lost), lost * price_input / 1e6, top)
    lost = sum(b.tokens_lost for b in breaks)
    return BreakSummary(
        causes=causes,
        breaks=len(breaks),
        tokens_lost=lost,
        share_of_prompt_tokens=share(lost),
        dollars_lost=lost * price_input / 1e6,
        price_input_per_mtok=price_input,
    )


def store_breaks(
    con: Connection,
    signature: str,
    block_size: int,
    req_ids: np.ndarray | list[int],
    breaks: list[Break],
) -> None:
    """Replace the stored breaks of these requests (for this tokenizer and block size)."""
    replace_breaks(
        con,
        signature=signature,
        block_size=block_size,
        req_ids=np.asarray(req_ids, np.int64).tolist(),
        breaks=[
            StoredBreak(
                req_id=b.req_id,
                pred_req_id=b.pred_req_id,
                position=b.position,
                tokens_lost=b.tokens_lost,
                cause=b.cause,
                path=b.path,
                detail=b.detail,
                diff=b.diff,
            )
            for b in breaks
        ],
    )
