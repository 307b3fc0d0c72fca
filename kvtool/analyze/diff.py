"""The structured diff of two requests: the first rendered difference and its cause.

Elements are compared in render order (docs/architecture.md: breaks): the model, the leading
system/developer messages, the tool catalog tool by tool, then the remaining messages. Each element
is compared by what a chat template renders of it (content text, tool-call names and arguments,
tool schemas as JSON), so fields no template renders (tool-call ids, names) never make a
difference. The cause names the *first* difference only: that is where the cached prefix ends.

Causes (``CAUSES``, a stable contract) are decided in this order, most specific first: the model;
tool churn (added, removed, reordered); the same JSON value serialized differently; a date/time or
an id that changed in place; whitespace-only (or special-token-only) changes, which are a
rendering change; otherwise an edit of the system prompt, a tool schema or the history.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from kvtool.analyze.json_order import json_reordered
from kvtool.textscan import fold_text, lcp, volatile_change
from kvtool.tokenize.template import SYSTEM_ROLES, content_text

_T = TypeVar("_T")

CAUSES = (
    "model_changed",
    "tool_added",
    "tool_removed",
    "tools_reordered",
    "tool_schema_edited",
    "json_key_order",
    "volatile_timestamp",
    "volatile_id",
    "system_edited",
    "history_edited",
    "template_changed",
    "other",
)


@dataclass(frozen=True)
class Req:
    """A request's content as a template sees it (chat: messages and tools; completion: prompt)."""

    model: str | None
    tenant: str | None
    messages: list[dict] | None = None
    tools: list[dict] | None = None
    prompt: str | list[int] | None = None

    @property
    def n_system(self) -> int:
        """How many leading messages are system/developer messages."""
        n = 0
        msgs = self.messages or []
        while n < len(msgs) and msgs[n].get("role") in SYSTEM_ROLES:
            n += 1
        return n


@dataclass(frozen=True)
class Difference:
    """The first rendered difference of r from p. ``region`` is 'model', 'system', 'tools',
    'messages' or 'prompt'; ``index`` is the message index (messages regions) or the tool index
    ('tools'), else -1."""

    cause: str
    path: str
    detail: str
    region: str
    index: int = -1


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def text_cause(a: str, b: str, specials: tuple[str, ...] = ()) -> tuple[str, str, str] | None:
    """(cause, sub-path, detail) when the first difference of two texts is a known breaker:
    a reserialized JSON value, a changed timestamp or id, or whitespace/special tokens only.
    None when the texts are equal or the difference is an ordinary edit."""
    i = lcp(a, b)
    if i == len(a) == len(b):
        return None
    found = json_reordered(a, b, i)
    if found is not None:
        where = f"{found.start}{found.path}"
        return "json_key_order", "", f"same JSON value at char {where} serialized differently"
    change = volatile_change(a, b, i)
    if change is not None:
        return change.cause, "", f"{change.before.text!r} -> {change.after.text!r}"
    if fold_text(a, specials) == fold_text(b, specials):
        return "template_changed", "", "same text, different whitespace or special tokens"
    return None


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def json_difference(a: Any, b: Any, path: str = "") -> tuple[str, str] | None:
    """(path, 'order' | 'value') of the first difference of two JSON values in serialization
    order: 'order' when the values are equal but a dict's keys come in another order."""
    if type(a) is not type(b):
        return path, "value"
    if isinstance(a, dict):
        ka, kb = list(a), list(b)
        for x, y in zip(ka, kb, strict=False):
            if x != y:
                if a == b:
                    return path, "order"
                return f"{path}.{x if x not in b else y}", "value"
            sub = json_difference(a[x], b[x], f"{path}.{x}")
            if sub is not None:
                return sub
        if len(ka) != len(kb):
            extra = ka[len(kb)] if len(ka) > len(kb) else kb[len(ka)]
            return f"{path}.{extra}", "value"
        return None
    if isinstance(a, list):
        for j, (x, y) in enumerate(zip(a, b, strict=False)):
            sub = json_difference(x, y, f"{path}[{j}]")
            if sub is not None:
                return sub
        return (f"{path}[{min(len(a), len(b))}]", "value") if len(a) != len(b) else None
    return None if a == b and type(a) is type(b) else (path, "value")


def _resolve(value: Any, path: str) -> Any:
    """The value at a ``.key`` / ``[i]`` path (None when absent)."""
    for key, idx in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path):
        if key:
            value = value.get(key) if isinstance(value, dict) else None
        else:
            value = value[int(idx)] if isinstance(value, list) and int(idx) < len(value) else None
    return value


def _tool_name(tool: Any) -> str | None:
    if not isinstance(tool, dict):
        return None
    fn = tool.get("function")
    return fn.get("name") if isinstance(fn, dict) else tool.get("name")


@dataclass(frozen=True)
class ToolChange:
    """Where two tool catalogs first differ: at ``index``, a tool was added, removed or moved
    there from ``was`` (``tools_reordered``), or the tool there is the same tool, edited
    (``tool_schema_edited``; the caller finds what changed)."""

    cause: str
    index: int
    was: int = -1


def tool_change(
    ta: Sequence[_T], tb: Sequence[_T], key: Callable[[_T], Any], name: Callable[[_T], Any]
) -> ToolChange | None:
    """The first difference of two tool catalogs: tools with equal ``key`` are equal, tools
    with equal ``name`` are the same tool (``name`` is only called when neither catalog ends
    first). None when the catalogs are equal."""
    keys_a, keys_b = [key(t) for t in ta], [key(t) for t in tb]
    j = 0
    while j < min(len(ta), len(tb)) and keys_a[j] == keys_b[j]:
        j += 1
    if j == len(ta) == len(tb):
        return None
    if j == len(ta):
        return ToolChange("tool_added", j)
    if j == len(tb):
        return ToolChange("tool_removed", j)
    names_a, names_b = [name(t) for t in ta], [name(t) for t in tb]
    na, nb = names_a[j], names_b[j]
    if na != nb:
        if na not in names_b:
            return ToolChange("tool_removed", j)
        if nb not in names_a:
            return ToolChange("tool_added", j)
        return ToolChange("tools_reordered", j, names_a.index(nb))
    return ToolChange("tool_schema_edited", j)


def _tools_difference(ta: list, tb: list) -> Difference | None:
    change = tool_change(ta, tb, _json_text, _tool_name)
    if change is None:
        return None
    j = change.index
    if change.cause == "tool_added":
        nb = _tool_name(tb[j])
        return Difference("tool_added", f"tools[{j}]", f"tool {nb!r} added", "tools", j)
    na = _tool_name(ta[j])
    if change.cause == "tool_removed":
        return Difference("tool_removed", f"tools[{j}]", f"tool {na!r} removed", "tools", j)
    if change.cause == "tools_reordered":
        nb = _tool_name(tb[j])
        detail = f"tool {nb!r} moved to position {j} (was {change.was})"
        return Difference("tools_reordered", f"tools[{j}]", detail, "tools", j)
    where = json_difference(ta[j], tb[j])
    sub, kind = where if where is not None else ("", "value")
    path = f"tools[{j}]{sub}"
    if kind == "order":
        return Difference(
            "json_key_order", path, f"tool {na!r}: same schema, keys in another order", "tools", j
        )
    va, vb = _resolve(ta[j], sub), _resolve(tb[j], sub)
    if isinstance(va, str) and isinstance(vb, str):
        found = text_cause(va, vb)
        if found is not None and found[0] != "json_key_order":
            return Difference(found[0], path, f"tool {na!r}: {found[2]}", "tools", j)
    return Difference(
        "tool_schema_edited", path, f"tool {na!r} changed at {sub or 'top'}", "tools", j
    )


def _arguments_text(value: Any) -> str:
    return value if isinstance(value, str) else _json_text(value)


def _calls(msg: dict) -> list[tuple[str, str]]:
    out = []
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            out.append((str(fn.get("name")), _arguments_text(fn.get("arguments", ""))))
    return out


def _message_difference(
    ma: dict | None, mb: dict | None, i: int, region: str, specials: tuple[str, ...]
) -> Difference | None:
    edited = "system_edited" if region == "system" else "history_edited"
    if ma is None or mb is None:
        what = "added" if ma is None else "removed"
        role = (mb or ma or {}).get("role")
        return Difference(edited, f"messages[{i}]", f"{role} message {what}", region, i)
    if ma.get("role") != mb.get("role"):
        return Difference(
            edited,
            f"messages[{i}]",
            f"{ma.get('role')} message replaced by a {mb.get('role')} message",
            region,
            i,
        )
    ca, cb = content_text(ma.get("content")), content_text(mb.get("content"))
    if ca != cb:
        path = f"messages[{i}].content"
        found = text_cause(ca, cb, specials)
        if found is not None:
            return Difference(found[0], path, found[2], region, i)
        k = lcp(ca, cb)
        detail = f"{ma.get('role')} message edited: {_short(ca[k:])!r} -> {_short(cb[k:])!r}"
        return Difference(edited, path, detail, region, i)
    calls_a, calls_b = _calls(ma), _calls(mb)
    for k, (a, b) in enumerate(zip(calls_a, calls_b, strict=False)):
        if a == b:
            continue
        base = f"messages[{i}].tool_calls[{k}].function"
        if a[0] != b[0]:
            return Difference(edited, f"{base}.name", f"call {a[0]!r} -> {b[0]!r}", region, i)
        path = f"{base}.arguments"
        try:
            same = json.loads(a[1]) == json.loads(b[1])
        except ValueError:
            same = False
        if same:
            return Difference("json_key_order", path, f"{a[0]} arguments reserialized", region, i)
        found = text_cause(a[1], b[1], specials)
        if found is not None:
            return Difference(found[0], path, found[2], region, i)
        return Difference(edited, path, f"{a[0]} arguments edited", region, i)
    if len(calls_a) != len(calls_b):
        k = min(len(calls_a), len(calls_b))
        return Difference(
            edited, f"messages[{i}].tool_calls[{k}]", "tool call added or removed", region, i
        )
    return None


def first_difference(p: Req, r: Req, specials: tuple[str, ...] = ()) -> Difference | None:
    """The first rendered difference of ``r`` from ``p`` within ``p``'s elements (None when r
    renders p's elements unchanged, i.e. r extends p). ``specials``: special-token strings,
    ignored when deciding that two texts differ only in rendering."""
    if p.model != r.model:
        return Difference("model_changed", "model", f"{p.model} -> {r.model}", "model")
    if p.messages is None or r.messages is None:
        return _prompt_difference(p, r, specials)
    sa, sb = p.n_system, r.n_system
    for i in range(max(sa, sb)):
        ma = p.messages[i] if i < sa else None
        mb = r.messages[i] if i < sb else None
        found = _message_difference(ma, mb, i, "system", specials)
        if found is not None:
            return found
    tools = _tools_difference(p.tools or [], r.tools or [])
    if tools is not None:
        return tools
    for i in range(sa, len(p.messages)):
        mb = r.messages[i] if i < len(r.messages) else None
        if mb is None:
            return None  # r ends inside p: r is an earlier state of the same conversation
        found = _message_difference(p.messages[i], mb, i, "messages", specials)
        if found is not None:
            return found
    return None


def _prompt_difference(p: Req, r: Req, specials: tuple[str, ...]) -> Difference | None:
    if (p.messages is None) != (r.messages is None):
        return Difference("other", "prompt", "a chat request and a completion request", "prompt")
    a, b = p.prompt, r.prompt
    if a == b:
        return None
    if isinstance(a, str) and isinstance(b, str):
        if b.startswith(a):
            return None
        found = text_cause(a, b, specials)
        if found is not None:
            return Difference(found[0], "prompt", found[2], "prompt")
        k = lcp(a, b)
        return Difference(
            "other", "prompt", f"prompt text: {_short(a[k:])!r} -> {_short(b[k:])!r}", "prompt"
        )
    if isinstance(a, list) and isinstance(b, list) and b[: len(a)] == a:
        return None
    return Difference("other", "prompt", "prompt token ids differ", "prompt")
