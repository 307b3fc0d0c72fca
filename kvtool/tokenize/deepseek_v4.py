"""DeepSeek-V4's own chat encoding (its non-thinking "chat" mode), which the ``deepseek-v4-api``
tokenizer renders with, so that prompt-token counts match what DeepSeek bills.

DeepSeek publishes the encoding as Python (``encoding/encoding_dsv4.py`` in the model
repository), not as a chat template. This is kvtool's own implementation of its structure, as
a serving engine applies it to an OpenAI-shaped request (vLLM's ``deepseek_v4`` tokenizer):

- the request's tools join the leading message when it is a system or developer message, else a
  system message without text is put first for them;
- runs of user and tool messages merge into one user turn ``<｜User｜>`` whose parts are joined by
  a blank line; a tool result is ``<tool_result>{text}</tool_result>``, and a turn's results
  are put in the order of the calls of the last assistant message that made calls;
- a user (or developer) turn followed by an assistant message, or ending the request, is
  followed by ``<｜Assistant｜></think>``: the last one is the generation prompt;
- an assistant message is its text, its tool calls as DSML (``\\n\\n<｜DSML｜tool_calls>`` …, one
  ``invoke`` per call, one ``parameter`` per argument, strings as is and other values as JSON)
  and ``<｜end▁of▁sentence｜>``; a system message is its bare text; the prompt starts with BOS;
- the tool section is a blank line, DeepSeek's instructions, a blank line, one JSON line per
  function (``json.dumps`` defaults, key order as logged), a blank line and DeepSeek's closing
  sentence. DeepSeek's prose is not reproduced: each part is rendered as as many placeholder
  tokens as DeepSeek's text has (``PREAMBLE_TOKENS``, ``CLOSING_TOKENS``, counted with
  DeepSeek-V4's tokenizer in that position), which keeps both the count and the prefix
  (``TokenizerBundle.preview`` shows each run as one label).

Not modelled: thinking mode (the ``<think>`` after the last user turn instead of ``</think>``
is the same count; with tools, thinking mode also keeps each earlier turn's reasoning, which
logs rarely carry), ``response_format`` (not stored), and DeepSeek-V4.1's variant (a
``<｜System｜>`` token and other DSML tag names; see docs/providers.md, "Token counts").
Invariant: ``render`` never raises for a stored request.
"""

from __future__ import annotations

import json
from typing import Any

from kvtool.tokenize.loader import PLACEHOLDER
from kvtool.tokenize.template import WholeTemplate, content_text

FORMAT = "deepseek-v4"  # TokenizerBundle.chat_format of the deepseek-v4-api tokenizer
BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
USER, ASSISTANT, THINK_END = "<｜User｜>", "<｜Assistant｜>", "</think>"
DSML = "｜DSML｜"
# DeepSeek-V4 tokens of its tool instructions before the schemas and of its closing sentence
# after them (measured on encoding_dsv4.py's text; docs/providers.md, "Token counts")
PREAMBLE_TOKENS = 202
CLOSING_TOKENS = 18


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def tool_section(tools: list) -> str:
    """The text DeepSeek-V4 appends to the leading message for ``tools`` (module docstring)."""
    functions = []
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        functions.append(_json(fn if isinstance(fn, dict) else tool))
    schemas = "\n".join(functions)
    return f"\n\n{PLACEHOLDER * PREAMBLE_TOKENS}\n\n{schemas}\n\n{PLACEHOLDER * CLOSING_TOKENS}"


def _arguments(raw: Any) -> dict:
    """A call's arguments as a dict: a JSON object string parsed, anything else under
    ``arguments`` (as the encoder does with arguments that are not JSON)."""
    if isinstance(raw, dict):
        return raw
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"arguments": raw}


def tool_calls(calls: list) -> str:
    """An assistant message's tool calls in DSML."""
    invokes = []
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        fn = fn if isinstance(fn, dict) else {}
        params = "\n".join(
            f'<{DSML}parameter name="{key}" string="{"true" if isinstance(v, str) else "false"}">'
            f"{v if isinstance(v, str) else _json(v)}</{DSML}parameter>"
            for key, v in _arguments(fn.get("arguments", "")).items()
        )
        invokes.append(f'<{DSML}invoke name="{fn.get("name")}">\n{params}\n</{DSML}invoke>')
    body = "\n".join(invokes)
    return f"\n\n<{DSML}tool_calls>\n{body}\n</{DSML}tool_calls>"


def _turns(messages: list[dict]) -> list[dict]:
    """The messages with runs of user and tool messages merged into user turns holding
    ``parts`` (('text' | 'tool', text, call id)), tool results in call order."""
    turns: list[dict] = []
    order: dict[str, int] = {}  # call id -> position in the last assistant message with calls
    for msg in messages:
        role = msg.get("role")
        if role == "assistant":
            calls = msg.get("tool_calls") or []
            if calls:
                order = {}
                for k, call in enumerate(calls):
                    fn = call.get("function") if isinstance(call, dict) else None
                    cid = (call.get("id") if isinstance(call, dict) else None) or (
                        fn.get("id") if isinstance(fn, dict) else None
                    )
                    if isinstance(cid, str) and cid:
                        order[cid] = k
            turns.append({"role": "assistant", "msg": msg})
            continue
        if role in ("system", "developer"):
            turns.append({"role": role, "msg": msg})
            continue
        if role in ("tool", "function"):
            cid = msg.get("tool_call_id")
            part = ("tool", _result_text(msg.get("content")), cid if isinstance(cid, str) else "")
        else:  # user, and any other role, as the user's
            part = ("text", content_text(msg.get("content")), "")
        if turns and turns[-1]["role"] == "user":
            turns[-1]["parts"].append(part)
        else:
            turns.append({"role": "user", "parts": [part], "order": order})
    for turn in turns:
        if turn["role"] == "user" and turn["order"]:
            results = [p for p in turn["parts"] if p[0] == "tool"]
            if len(results) > 1:
                ranked = iter(sorted(results, key=lambda p: turn["order"].get(p[2], 0)))
                turn["parts"] = [next(ranked) if p[0] == "tool" else p for p in turn["parts"]]
    return turns


def _result_text(content: Any) -> str:
    """A tool result's text: a list of parts joined by a blank line, non-text parts named."""
    if not isinstance(content, list):
        return content_text(content)
    out = []
    for part in content:
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            out.append(part["text"])
        elif isinstance(part, str):
            out.append(part)
        else:
            kind = part.get("type") if isinstance(part, dict) else None
            out.append(f"[Unsupported {kind}]")
    return "\n\n".join(out)


class DeepSeekV4Format(WholeTemplate):
    """DeepSeek-V4's chat encoding, chat mode (module docstring)."""

    id = "deepseek-v4-chat-v1"

    def render(self, messages: list[dict], tools: list | None, generation: bool = True) -> str:
        msgs = list(messages)
        lead = msgs[0].get("role") if msgs else None
        turns = _turns(msgs)
        if tools and lead not in ("system", "developer"):
            turns.insert(0, {"role": "system", "msg": {}})
        out = [BOS]
        for i, turn in enumerate(turns):
            role = turn["role"]
            section = tool_section(tools) if tools and i == 0 else ""
            if role == "system":
                out.append(content_text(turn["msg"].get("content")) + section)
            elif role == "developer":
                out.append(USER + content_text(turn["msg"].get("content")) + section)
            elif role == "user":
                out.append(USER + "\n\n".join(_part(p) for p in turn["parts"]))
            else:
                msg = turn["msg"]
                calls = msg.get("tool_calls") or []
                text = content_text(msg.get("content"))
                out.append(text + (tool_calls(calls) if calls else "") + EOS)
            last = i + 1 == len(turns)
            if role in ("user", "developer") and (
                (last and generation) or (not last and turns[i + 1]["role"] == "assistant")
            ):
                out.append(ASSISTANT + THINK_END)
        return "".join(out)


def _part(part: tuple[str, str, str]) -> str:
    kind, text, _ = part
    return f"<tool_result>{text}</tool_result>" if kind == "tool" else text
