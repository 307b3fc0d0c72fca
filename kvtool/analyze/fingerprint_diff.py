"""The structured diff of two redacted requests: ``kvtool.analyze.diff`` on fingerprints.

Elements are compared in the same render order (model, leading system messages, tools one by
one, the other messages) and a difference gets the same cause: element equality is fingerprint
equality; a tool's first JSON difference is found on its tree of hashes exactly as
``json_difference`` finds it on the value; tool-call arguments that parse to equal values are
a key-order change; and the first difference of two texts is classified from their ``TextFp``:

- it lies in the span between the last boundary both texts share with an equal prefix (``lo``)
  and the next; a JSON value, a timestamp or an id that starts at the same offset at or before
  ``lo`` in both and differs is where the texts first differ (it starts in the common prefix and
  its two versions differ), so the diff's own tests apply: the same JSON value written another
  way (``json_key_order``), a changed timestamp, then a changed id;
- otherwise the whole texts, folded, are compared (``template_changed``).

Paths are the diff's, except that a key of a tool's JSON that is not OpenAI / JSON Schema
vocabulary shows as ``*``; details never quote text. Differences from the text diff are
listed in docs/redaction.md.
"""

from __future__ import annotations

from collections.abc import Callable

from kvtool.analyze.diff import Difference, tool_change
from kvtool.store.fingerprints import MessageFp, PrefixPair, RequestFp, TextFp, ToolFp

TextLookup = Callable[[int], TextFp]
_Step = tuple  # ("key", key hash, name or None) or ("idx", index)


def _cut_prefixes(t: TextFp) -> dict[int, int]:
    return dict(zip(t.cuts, t.prefixes, strict=True))


def _common_lo(a: TextFp, b: TextFp, pa: dict[int, int]) -> int:
    """The longest prefix the texts are known to share: a cut of both with equal hashes."""
    lo = 0
    for cut, h in zip(b.cuts, b.prefixes, strict=True):
        if pa.get(cut) == h:
            lo = cut
    return lo


def _changed_span(
    a_spans: tuple[tuple[int, int], ...],
    b_spans: tuple[tuple[int, int], ...],
    lo: int,
    pa: dict[int, int],
    pb: dict[int, int],
) -> bool:
    """A span starting at the same offset (at or before ``lo``) in both texts, whose two
    versions differ: the texts first differ inside it."""
    ends_a = {s: e for s, e in a_spans if s <= lo}
    best = None
    for s, e in b_spans:
        if s <= lo and s in ends_a and (best is None or s > best[0]):
            best = (s, e)
    if best is None:
        return False
    s, eb = best
    ea = ends_a[s]
    return ea != eb or pa.get(ea) != pb.get(eb)


def text_cause(a: TextFp, b: TextFp, specials: bool) -> tuple[str, str] | None:
    """(cause, detail) of the first difference of two texts, as ``diff.text_cause`` names it:
    a JSON value written another way, a changed timestamp or id, or a change the fold removes
    (whitespace, and special tokens with ``specials``). None for equal texts and plain edits."""
    if a.id == b.id:
        return None
    pa, pb = _cut_prefixes(a), _cut_prefixes(b)
    lo = _common_lo(a, b, pa)
    json_a = {s: (e, h) for (s, e), h in zip(a.json, a.json_hashes, strict=True) if s <= lo}
    for (s, eb), hb in zip(b.json, b.json_hashes, strict=True):
        found = json_a.get(s)
        if found is not None and found[1] == hb:
            ea = found[0]
            if ea != eb or pa.get(ea) != pb.get(eb):
                return "json_key_order", "same JSON value serialized differently"
    if _changed_span(a.timestamps, b.timestamps, lo, pa, pb):
        return "volatile_timestamp", "a timestamp changed"
    if _changed_span(a.ids, b.ids, lo, pa, pb):
        return "volatile_id", "an id changed"
    if (a.fold == b.fold) if specials else (a.fold_plain == b.fold_plain):
        return "template_changed", "same text, different whitespace or special tokens"
    return None


def _tree_difference(a: list, b: list, path: list[_Step]) -> tuple[list[_Step], str] | None:
    """``json_difference`` on two hash trees: (path, 'order' | 'value') or None."""
    if a[0] != b[0]:
        return path, "value"
    if a[0] == "d":
        ka, kb = a[2], b[2]
        for x, y in zip(ka, kb, strict=False):
            if x[0] != y[0]:
                if a[1] == b[1]:
                    return path, "order"
                in_b = {k[0] for k in kb}
                pick = x if x[0] not in in_b else y
                return [*path, ("key", pick[0], pick[1])], "value"
            sub = _tree_difference(x[2], y[2], [*path, ("key", x[0], x[1])])
            if sub is not None:
                return sub
        if len(ka) != len(kb):
            extra = ka[len(kb)] if len(ka) > len(kb) else kb[len(ka)]
            return [*path, ("key", extra[0], extra[1])], "value"
        return None
    if a[0] == "l":
        for j, (x, y) in enumerate(zip(a[2], b[2], strict=False)):
            sub = _tree_difference(x, y, [*path, ("idx", j)])
            if sub is not None:
                return sub
        if len(a[2]) != len(b[2]):
            return [*path, ("idx", min(len(a[2]), len(b[2])))], "value"
        return None
    return None if a[1] == b[1] else (path, "value")


def _resolve(node: list | None, path: list[_Step]) -> list | None:
    for step in path:
        if node is None:
            return None
        if step[0] == "key":
            kids = node[2] if node[0] == "d" else []
            node = next((c[2] for c in kids if c[0] == step[1]), None)
        else:
            node = node[2][step[1]] if node[0] == "l" and step[1] < len(node[2]) else None
    return node


def _path_text(path: list[_Step]) -> str:
    return "".join(f".{s[2] or '*'}" if s[0] == "key" else f"[{s[1]}]" for s in path)


def _tools_difference(ta: list[ToolFp], tb: list[ToolFp], texts: TextLookup) -> Difference | None:
    change = tool_change(ta, tb, lambda t: t.fp, lambda t: t.name)
    if change is None:
        return None
    j = change.index
    if change.cause == "tools_reordered":
        detail = f"tool {change.was} moved to position {j}"
        return Difference("tools_reordered", f"tools[{j}]", detail, "tools", j)
    if change.cause != "tool_schema_edited":
        what = "added" if change.cause == "tool_added" else "removed"
        return Difference(change.cause, f"tools[{j}]", f"tool {j} {what}", "tools", j)
    where = _tree_difference(ta[j].tree, tb[j].tree, [])
    sub, kind = where if where is not None else ([], "value")
    path = f"tools[{j}]{_path_text(sub)}"
    if kind == "order":
        return Difference(
            "json_key_order", path, f"tool {j}: same schema, keys in another order", "tools", j
        )
    va, vb = _resolve(ta[j].tree, sub), _resolve(tb[j].tree, sub)
    if va is not None and vb is not None and va[0] == "s" == vb[0]:
        found = text_cause(texts(va[1]), texts(vb[1]), specials=False)
        if found is not None and found[0] != "json_key_order":
            return Difference(found[0], path, f"tool {j}: {found[1]}", "tools", j)
    return Difference(
        "tool_schema_edited", path, f"tool {j} changed at {_path_text(sub) or 'top'}", "tools", j
    )


def _message_difference(
    ma: MessageFp | None, mb: MessageFp | None, i: int, region: str, texts: TextLookup
) -> Difference | None:
    edited = "system_edited" if region == "system" else "history_edited"
    if ma is None or mb is None:
        what = "added" if ma is None else "removed"
        role = (mb or ma).role  # type: ignore[union-attr]
        return Difference(edited, f"messages[{i}]", f"{role} message {what}", region, i)
    if ma.fp == mb.fp:
        return None
    if ma.role != mb.role:
        return Difference(
            edited,
            f"messages[{i}]",
            f"{ma.role} message replaced by a {mb.role} message",
            region,
            i,
        )
    if ma.content != mb.content:
        path = f"messages[{i}].content"
        found = text_cause(texts(ma.content), texts(mb.content), specials=True)
        if found is not None:
            return Difference(found[0], path, found[1], region, i)
        return Difference(edited, path, f"{ma.role} message edited", region, i)
    calls_a = list(zip(ma.call_names, ma.call_args, ma.call_json, strict=True))
    calls_b = list(zip(mb.call_names, mb.call_args, mb.call_json, strict=True))
    for k, (a, b) in enumerate(zip(calls_a, calls_b, strict=False)):
        if a[:2] == b[:2]:
            continue
        base = f"messages[{i}].tool_calls[{k}].function"
        if a[0] != b[0]:
            return Difference(edited, f"{base}.name", f"call {k} renamed", region, i)
        path = f"{base}.arguments"
        if a[2] is not None and a[2] == b[2]:
            return Difference("json_key_order", path, f"call {k} arguments reserialized", region, i)
        found = text_cause(texts(a[1]), texts(b[1]), specials=True)
        if found is not None:
            return Difference(found[0], path, found[1], region, i)
        return Difference(edited, path, f"call {k} arguments edited", region, i)
    if len(calls_a) != len(calls_b):
        k = min(len(calls_a), len(calls_b))
        return Difference(
            edited, f"messages[{i}].tool_calls[{k}]", "tool call added or removed", region, i
        )
    return None


class Elements:
    """The fingerprints of stored elements, by fingerprint (``messages``, ``tools``, ``texts``;
    filled by the caller) and the recorded prefix pairs (kind, short, long)."""

    def __init__(self) -> None:
        self.messages: dict[int, MessageFp] = {}
        self.tools: dict[int, ToolFp] = {}
        self.texts: dict[int, TextFp] = {}
        self.prefixes: set[PrefixPair] = set()

    def text(self, tid: int) -> TextFp:
        return self.texts[tid]


def first_difference(
    p: RequestFp, r: RequestFp, p_model: str | None, r_model: str | None, el: Elements
) -> Difference | None:
    """``diff.first_difference`` of two redacted requests (models given as stored)."""
    if p_model != r_model:
        return Difference("model_changed", "model", f"{p_model} -> {r_model}", "model")
    if p.messages is None or r.messages is None:
        return _prompt_difference(p, r, el)
    sa, sb = p.n_system, r.n_system
    msg = el.messages
    for i in range(max(sa, sb)):
        ma = msg[p.messages[i]] if i < sa else None
        mb = msg[r.messages[i]] if i < sb else None
        found = _message_difference(ma, mb, i, "system", el.text)
        if found is not None:
            return found
    tools = _tools_difference(
        [el.tools[t] for t in p.tools or ()], [el.tools[t] for t in r.tools or ()], el.text
    )
    if tools is not None:
        return tools
    for i in range(sa, len(p.messages)):
        if i >= len(r.messages):
            return None  # r ends inside p: r is an earlier state of the same conversation
        found = _message_difference(msg[p.messages[i]], msg[r.messages[i]], i, "messages", el.text)
        if found is not None:
            return found
    return None


def _prompt_difference(p: RequestFp, r: RequestFp, el: Elements) -> Difference | None:
    if (p.messages is None) != (r.messages is None):
        return Difference("other", "prompt", "a chat request and a completion request", "prompt")
    if p.prompt == r.prompt and p.prompt_ids == r.prompt_ids:
        return None
    if not p.prompt_ids and not r.prompt_ids:
        if PrefixPair("text", p.prompt, r.prompt) in el.prefixes:
            return None
        assert p.prompt is not None and r.prompt is not None
        found = text_cause(el.text(p.prompt), el.text(r.prompt), specials=True)
        if found is not None:
            return Difference(found[0], "prompt", found[1], "prompt")
        return Difference("other", "prompt", "prompt text edited", "prompt")
    if p.prompt_ids and r.prompt_ids and PrefixPair("ids", p.prompt, r.prompt) in el.prefixes:
        return None
    return Difference("other", "prompt", "prompt token ids differ", "prompt")
