"""One conversation set, written in every input format: the fixtures of the format tests.

Every format's fixture file is written (or, where the tool's library runs offline, produced) from
``calls()``, so analyzing any of them must give what the OpenAI chat records of the same calls
give (``openai_chat_record``). The set is small but has what breaks and reuse need: three agent
sessions over one shared system prompt and tool catalog, tool calls and tool results in the
history, and usage with cached and cache-written tokens.

Token-count convention (``Call``): ``prompt_tokens`` is the whole prompt, ``cached_tokens`` the
part read from the provider's cache, ``cache_write_tokens`` the part written to it; each format
writes them the way its own schema counts them (e.g. Anthropic's ``input_tokens`` excludes
both).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

MODEL = "acme-chat-1"
TENANT = "team-a"
SYSTEM = (
    "You are the support agent of Acme Cloud. Answer briefly, cite the runbook section you used, "
    "and call a tool whenever the answer depends on live account data."
)
T0 = 1_767_225_600.125  # 2026-01-01T00:00:00.125Z: a millisecond part catches unit mistakes


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict

    def openai(self) -> dict:
        """The OpenAI chat ``tools`` entry (what every format's tools normalize to)."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict

    @property
    def arguments_json(self) -> str:
        """The arguments as compact JSON (how formats with object arguments normalize them)."""
        return orjson.dumps(self.arguments).decode()


@dataclass(frozen=True)
class Message:
    """One conversation message after the system prompt: 'user', 'assistant' (text and/or tool
    calls) or 'tool' (a tool result answering ``tool_call_id``)."""

    role: str
    text: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    def openai(self) -> dict:
        if self.role == "tool":
            return {"role": "tool", "tool_call_id": self.tool_call_id, "content": self.text}
        out: dict = {"role": self.role, "content": self.text}
        if self.tool_calls:
            out["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments_json},
                }
                for c in self.tool_calls
            ]
        return out


@dataclass(frozen=True)
class Call:
    """One logged request: the full prompt sent (system, history, tools), who sent it and when,
    what the provider reported, and the assistant message it returned."""

    request_id: str
    session_id: str
    user: str
    tenant: str
    model: str
    ts: float  # epoch seconds, with a millisecond part
    system: str
    messages: tuple[Message, ...]
    tools: tuple[Tool, ...]
    prompt_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    output_tokens: int
    response: Message = field(default_factory=lambda: Message("assistant", "ok"))

    @property
    def iso(self) -> str:
        """The time as ISO-8601 UTC with milliseconds (``...T00:00:00.125Z``)."""
        dt = datetime.fromtimestamp(self.ts, UTC)
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"

    @property
    def fresh_tokens(self) -> int:
        """Prompt tokens neither read from nor written to the cache."""
        return self.prompt_tokens - self.cached_tokens - self.cache_write_tokens

    def openai_messages(self) -> list[dict]:
        return [{"role": "system", "content": self.system}] + [m.openai() for m in self.messages]

    def openai_tools(self) -> list[dict]:
        return [t.openai() for t in self.tools]


TOOLS = (
    Tool(
        "get_account",
        "Look up an Acme Cloud account by id.",
        {
            "type": "object",
            "properties": {"account_id": {"type": "string", "description": "acct_..."}},
            "required": ["account_id"],
        },
    ),
    Tool(
        "list_incidents",
        "Open incidents of a region, newest first.",
        {
            "type": "object",
            "properties": {
                "region": {"type": "string", "enum": ["eu-west", "us-east"]},
                "limit": {"type": "integer", "minimum": 1},
            },
            "required": ["region"],
        },
    ),
)

_SESSIONS = (
    ("sess-1", "user-17", ["Why is my account acct_42 suspended?", "How do I lift it?"]),
    (
        "sess-2",
        "user-23",
        ["Is eu-west having an outage?", "And us-east?", "Thanks, anything else?"],
    ),
    ("sess-3", "user-17", ["Can you check acct_7 for me?"]),
)


def _tool_turn(session: int, turn: int, question: str) -> tuple[Message, Message, Message]:
    """The agent's answer to one question: a tool call, its result, the final text."""
    call_id = f"call_{session}{turn}"
    if "acct_" in question:
        account = question.split("acct_")[1].split()[0].rstrip("?")
        call = ToolCall(call_id, "get_account", {"account_id": f"acct_{account}"})
        result = f'{{"id": "acct_{account}", "status": "suspended", "reason": "billing"}}'
    else:
        region = "us-east" if "us-east" in question else "eu-west"
        call = ToolCall(call_id, "list_incidents", {"region": region, "limit": 3})
        result = f'[{{"region": "{region}", "title": "degraded storage", "open": true}}]'
    return (
        Message("assistant", None, (call,)),
        Message("tool", result, tool_call_id=call_id),
        Message("assistant", f"Answer {session}.{turn}: see runbook section {turn + 1}."),
    )


def calls() -> list[Call]:
    """The conversation set: every request of three sessions, in time order within a session
    (sessions interleave: each turn of each session is 7 s after the previous one overall)."""
    out: list[Call] = []
    tick = 0
    for s, (session_id, user, questions) in enumerate(_SESSIONS, 1):
        history: list[Message] = []
        for t, question in enumerate(questions):
            history.append(Message("user", question))
            # two requests per question: the one that asks for a tool, the one with its result
            call_msg, result_msg, final = _tool_turn(s, t, question)
            for step, response in ((0, call_msg), (1, final)):
                if step == 1:
                    history += [call_msg, result_msg]
                n = len(history)
                prompt = 900 + 60 * n
                cached = 0 if not out or out[-1].session_id != session_id else 900 + 60 * (n - 2)
                written = 0 if cached else 896
                out.append(
                    Call(
                        request_id=f"req-{s}-{t}-{step}",
                        session_id=session_id,
                        user=user,
                        tenant=TENANT,
                        model=MODEL,
                        ts=T0 + 7 * tick,
                        system=SYSTEM,
                        messages=tuple(history),
                        tools=TOOLS,
                        prompt_tokens=prompt,
                        cached_tokens=cached,
                        cache_write_tokens=written,
                        output_tokens=20 + 5 * n,
                        response=response,
                    )
                )
                tick += 1
            history.append(final)
    return out


def openai_chat_record(call: Call) -> dict:
    """The reference: the call as an OpenAI chat gateway record (request body, response with
    usage, metadata with session and tenant, epoch-second ``created``)."""
    return {
        "request_id": call.request_id,
        "created": call.ts,
        "metadata": {"session_id": call.session_id, "tenant": call.tenant, "user": call.user},
        "request": {
            "model": call.model,
            "messages": call.openai_messages(),
            "tools": call.openai_tools(),
        },
        "response": {
            "id": f"chatcmpl-{call.request_id}",
            "model": call.model,
            "usage": {
                "prompt_tokens": call.prompt_tokens,
                "completion_tokens": call.output_tokens,
                "prompt_tokens_details": {"cached_tokens": call.cached_tokens},
            },
        },
    }
