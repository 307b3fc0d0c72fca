"""Prefix breaks (DESIGN.md: break): which change ended a cached prefix, where, and what it cost.

For every request r, its predecessor p is chosen in processing order:
- **within a session** (logged session id): the earlier request of the session with the longest
  common prefix of elements (model, tool catalog, messages), the latest on ties;
- **without a session id**, a request whose head (model, system messages, tools) and first two
  conversation messages equal an earlier request's continues that conversation (the latest one);
- **otherwise** (first request of a session, or a new conversation) p is the earlier request of
  the same tenant whose head text shares the longest prefix, provided the two heads are the same
  logical prompt (common prefix + common suffix cover at least half of the longer head).

r *breaks* when it diverges from p before the reusable part of p ended: p's whole prompt (up to
its generation prompt) for continuations, p's head otherwise (another conversation's messages
were never reusable). The break position is the first differing token; the cause and the field
path come from the structured diff (``kvtool.analyze.diff``). Tokens lost at block size B:
``B * (min(W // B, c) - min(t // B, c))`` with W the reusable length, t the position and
``c = (n_r - 1) // B`` r's cacheable blocks. A model change breaks at token 0 (the model is part of
every block's identity).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb
import numpy as np
import orjson
import pyarrow as pa

from kvtool.analyze.diff import CAUSES, Difference, Req, first_difference, lcp
from kvtool.analyze.workload import Workload
from kvtool.tokenize.chains import PromptIds, PromptTokens, content_keys, load_contents
from kvtool.tokenize.loader import TokenizerBundle
from kvtool.tokenize.template import SYSTEM_ROLES, content_text

CONTEXT_TOKENS = 8  # tokens of context shown before and after a break
RESYNC_WINDOW = 64  # how far to look for the point where the two prompts agree again
RESYNC_RUN = 4  # ... as this many equal tokens
NEIGHBOURS = 8  # sorted head keys examined on each side of a new one
SIMILAR = 0.5  # a cross-session predecessor's head must be this similar (prefix + suffix share)


@dataclass
class Break:
    """One break: request ``req`` diverged from ``pred`` at token ``position``."""

    req: int  # req_id
    pred: int
    request_id: str
    predecessor_id: str
    position: int
    tokens_lost: int
    cause: str
    path: str
    detail: str
    diff: dict = field(default_factory=dict)

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


@dataclass(frozen=True)
class RequestRow:
    req_id: int
    request_id: str
    session: str | None
    tenant: str | None
    model: str | None
    kind: str
    message_keys: tuple[int, ...]
    tools_key: int | None
    prompt_key: int | None
    n_tokens: int

    @property
    def chain_row(self) -> tuple:
        return (
            self.req_id,
            self.kind,
            self.model,
            self.tenant,
            list(self.message_keys),
            self.tools_key,
            self.prompt_key,
        )

    @property
    def elements(self) -> tuple:
        return (self.model, self.tools_key, self.prompt_key, *self.message_keys)


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


class Bodies:
    """Content bodies by key, loaded from the store in batches on demand."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con
        self.cache: dict[int, object] = {}

    def need(self, rows: list[RequestRow]) -> dict[int, object]:
        return self.need_keys(content_keys([r.chain_row for r in rows]))

    def need_keys(self, keys: set[int]) -> dict[int, object]:
        missing = keys - self.cache.keys()
        if missing:
            self.cache.update(load_contents(self.con, missing))
        return self.cache

    def system_keys(self, row: RequestRow) -> tuple[int, ...]:
        """The keys of the row's leading system/developer messages."""
        n = 0
        for key in row.message_keys:
            body = self.need_keys({key})[key]
            if not isinstance(body, dict) or body.get("role") not in SYSTEM_ROLES:
                break
            n += 1
        return row.message_keys[:n]

    def req(self, row: RequestRow) -> Req:
        b = self.need([row])
        if row.kind == "completion":
            return Req(row.model, row.tenant, prompt=b[row.prompt_key])
        tools = b[row.tools_key] if row.tools_key is not None else None
        return Req(row.model, row.tenant, [b[k] for k in row.message_keys], tools)


def _head_key(row: RequestRow, bodies: Bodies, cache: dict[tuple, str]) -> str:
    """The text that decides which earlier request is the same logical prompt: model, leading
    system messages and tool catalog (completions: the prompt text)."""
    ident = (row.model, row.tools_key, row.prompt_key, bodies.system_keys(row))
    key = cache.get(ident)
    if key is None:
        key = cache[ident] = _render_head_key(row, bodies)
    return key


def _render_head_key(row: RequestRow, bodies: Bodies) -> str:
    if row.kind == "completion":
        prompt = bodies.need_keys({row.prompt_key})[row.prompt_key]
        prompt = prompt if isinstance(prompt, str) else orjson.dumps(prompt).decode()
        return f"{row.model}\x00{prompt}"
    keys = bodies.system_keys(row)
    b = bodies.need_keys({*keys, row.tools_key} - {None})
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


def predecessors(rows: list[RequestRow], bodies: Bodies) -> list[tuple[int, int, bool]]:
    """(request, predecessor, continues) index triples for the requests that do not simply
    extend their predecessor, in processing order (see the module docstring)."""
    bodies.need_keys(  # one query for what head keys need in the common case
        {k for r in rows for k in (r.tools_key, r.prompt_key, *r.message_keys[:2]) if k is not None}
    )
    members: dict[str, list[int]] = {}
    conversations: dict[tuple, int] = {}
    heads = _HeadIndex()
    cache: dict[tuple, str] = {}
    out: list[tuple[int, int, bool]] = []
    for i, row in enumerate(rows):
        if row.kind == "hash":
            continue
        pred, continues = None, False
        session = members.get(row.session) if row.session is not None else None
        key = _head_key(row, bodies, cache)
        if session:
            last = session[-1]
            if not extends(rows[last], row):
                best, best_n = last, -1
                for j in reversed(session):
                    n = _element_lcp(rows[j].elements, row.elements)
                    if n > best_n:
                        best, best_n = j, n
                pred, continues = best, True
        else:
            conv = None
            if row.session is None and row.kind == "chat":
                req = bodies.req(row)
                conv = (row.tenant, key, row.message_keys[req.n_system : req.n_system + 2])
                if len(conv[2]) < 2:
                    conv = None
            if conv is not None and conv in conversations:
                pred, continues = conversations[conv], True
            else:
                pred = heads.best(row.tenant, key)
            if conv is not None:
                conversations[conv] = i
            if pred is not None and extends(rows[pred], row):
                pred = None
        heads.add(row.tenant, key, i)
        if row.session is not None:
            members.setdefault(row.session, []).append(i)
        if pred is not None:
            out.append((i, pred, continues))
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


def break_text(
    bundle: TokenizerBundle,
    diff: Difference,
    p_model: str | None,
    r_model: str | None,
    p_ids: PromptIds,
    r_ids: PromptIds,
    position: int,
) -> dict:
    """The diff text of a break: the two model names for a model change, else the decoded
    tokens around ``position``."""
    if diff.cause == "model_changed":
        return {"before": "", "removed": p_model or "", "added": r_model or "", "after": ""}
    return token_diff(bundle, p_ids.ids, r_ids.ids, position)


def lost_tokens(reusable: int, position: int, n_tokens: int, block_size: int) -> int:
    """Cached tokens the break cost r: reusable full blocks before vs after the break, both
    capped by r's own cacheable blocks ((n - 1) // B, vLLM always computes one token)."""
    cap = max(0, (n_tokens - 1) // block_size)
    return block_size * max(0, min(reusable // block_size, cap) - min(position // block_size, cap))


def pair_break(
    p: Req,
    r: Req,
    p_ids: PromptIds,
    r_ids: PromptIds,
    continues: bool,
    block_size: int,
    specials: tuple[str, ...] = (),
) -> tuple[Difference, int, int] | None:
    """(difference, position, tokens lost) when r breaks from p, else None. ``continues``: r is
    meant to continue p (same session or conversation), so all of p was reusable; otherwise only
    p's head was (and a difference in the conversation messages is no break)."""
    diff = first_difference(p, r, specials)
    if diff is None:
        return None
    if not continues and diff.region == "messages":
        return None
    if not continues and diff.region == "prompt" and diff.cause == "other":
        return None  # an unrelated completion prompt, not another render of the same one
    # the model is part of every block's identity: a model change shares nothing
    position = 0 if diff.cause == "model_changed" else _first_mismatch(p_ids.ids, r_ids.ids)
    reusable = p_ids.end if continues or p.messages is None else p_ids.head_end
    if position >= reusable or position >= r_ids.end:
        return None
    return diff, position, lost_tokens(reusable, position, len(r_ids.ids), block_size)


def detect_breaks(
    con: duckdb.DuckDBPyConnection,
    wl: Workload,
    bundle: TokenizerBundle,
    mode: str,
    block_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> list[Break]:
    """Every break of the workload's requests (processing order), with its diff text."""
    con.register("_kv_sel", pa.table({"req_id": pa.array(wl.req_ids, pa.int64())}))
    table = con.execute(
        """SELECT r.req_id, r.request_id, r.session_id, r.tenant, r.model, r.kind,
                  r.message_keys, r.tools_key, r.prompt_key
           FROM requests r JOIN _kv_sel USING (req_id)"""
    ).fetchall()
    con.unregister("_kv_sel")
    by_id = {t[0]: t for t in table}
    rows = []
    for rid, n in zip(wl.req_ids.tolist(), wl.n_tokens.tolist(), strict=True):
        t = by_id[rid]
        rows.append(
            RequestRow(t[0], t[1], t[2], t[3], t[4], t[5], tuple(t[6] or ()), t[7], t[8], n)
        )
    bodies = Bodies(con)
    pairs = predecessors(rows, bodies)
    bodies.need([rows[k] for pair in pairs for k in pair[:2]])  # one query for all candidates
    tokens = PromptTokens(bundle, mode)
    specials = tuple(bundle.added_tokens)
    out = []
    for done, (i, j, continues) in enumerate(pairs, 1):
        r, p = rows[i], rows[j]
        b = bodies.need([r, p])
        p_ids, r_ids = tokens.get(p.chain_row, b), tokens.get(r.chain_row, b)
        found = pair_break(
            bodies.req(p), bodies.req(r), p_ids, r_ids, continues, block_size, specials
        )
        if progress:
            progress(done, len(pairs))
        if found is None:
            continue
        diff, position, lost = found
        text = break_text(bundle, diff, p.model, r.model, p_ids, r_ids, position)
        out.append(
            Break(
                r.req_id,
                p.req_id,
                r.request_id,
                p.request_id,
                position,
                lost,
                diff.cause,
                diff.path,
                diff.detail,
                text,
            )
        )
    return out


def summarize_breaks(
    breaks: list[Break], prompt_tokens: int, price_input: float, examples: int
) -> tuple[dict, dict]:
    """(``breaks`` per cause, totals) as the ``--json`` contract defines them (docs/analyze.md).
    Examples are the costliest breaks of each cause."""
    per: dict[str, dict] = {}
    for cause in CAUSES:
        mine = [b for b in breaks if b.cause == cause]
        lost = sum(b.tokens_lost for b in mine)
        top = sorted(mine, key=lambda b: -b.tokens_lost)[:examples]
        per[cause] = {
            "count": len(mine),
            "tokens_lost": lost,
            "share_of_prompt_tokens": lost / prompt_tokens if prompt_tokens else None,
            "dollars_lost": lost * price_input / 1e6,
            "examples": [b.example() for b in top],
        }
    lost = sum(b.tokens_lost for b in breaks)
    totals = {
        "breaks": len(breaks),
        "tokens_lost": lost,
        "share_of_prompt_tokens": lost / prompt_tokens if prompt_tokens else None,
        "dollars_lost": lost * price_input / 1e6,
        "price_input_per_mtok": price_input,
    }
    return per, totals


def store_breaks(
    con: duckdb.DuckDBPyConnection,
    signature: str,
    block_size: int,
    req_ids: np.ndarray,
    breaks: list[Break],
) -> None:
    """Replace the stored breaks of these requests (for this tokenizer and block size)."""
    con.register("_kv_sel", pa.table({"req_id": pa.array(req_ids, pa.int64())}))
    con.execute(
        "DELETE FROM breaks WHERE tokenizer = ? AND block_size = ? "
        "AND req_id IN (SELECT req_id FROM _kv_sel)",
        [signature, block_size],
    )
    con.unregister("_kv_sel")
    if not breaks:
        return
    table = pa.table(
        {
            "tokenizer": [signature] * len(breaks),
            "block_size": pa.array([block_size] * len(breaks), pa.int32()),
            "req_id": pa.array([b.req for b in breaks], pa.int64()),
            "pred_req_id": pa.array([b.pred for b in breaks], pa.int64()),
            "position": pa.array([b.position for b in breaks], pa.int64()),
            "tokens_lost": pa.array([b.tokens_lost for b in breaks], pa.int64()),
            "cause": [b.cause for b in breaks],
            "path": [b.path for b in breaks],
            "detail": [b.detail for b in breaks],
            "diff": [orjson.dumps(b.diff).decode() for b in breaks],
        }
    )
    con.register("_kv_breaks", table)
    con.execute("INSERT INTO breaks SELECT * FROM _kv_breaks")
    con.unregister("_kv_breaks")
