"""Agent sessions: one shared system prompt and tool catalog, then tool-calling steps.

``agent_setting`` draws what every request of an agent file shares. ``agent_session`` yields one
``Turn`` per step: a user task, then step k's request holds k assistant tool calls and k tool
observations, so each request extends the previous one by exactly two messages (unless a
``Breaker`` changes it). The last step's completion is the final answer, never shown later.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import orjson

from kvtool.generate.breakers import Breaker
from kvtool.generate.observations import json_body, observation
from kvtool.generate.text import Text
from kvtool.generate.tools import TOOL_POOL, TOOL_SPECS, TOOL_WEIGHT, arg_value, tool_schema
from kvtool.generate.turns import Turn
from kvtool.generate.vocabulary import ADJS, AGENT_NAMES, COMPANIES, NOTES, NOUNS

_TASK_OPENERS = (
    "The {noun} tests in {path} started failing after the last merge.",
    "We need to add a {adj} {noun} option to the {noun2} module in {path}.",
    "Users report that the {noun} endpoint is {adj} when the {noun2} is large.",
    "Refactor {path} so the {noun} handling no longer duplicates the {noun2} logic.",
    "The nightly job that builds the {noun} report crashes on {adj} input.",
)


DEFAULT_TOOL_OUTPUT = (60, 400)  # words of a tool result (lo, hi)


@dataclass(frozen=True)
class AgentSetting:
    """What every request of an agent file shares.

    ``system_prompt`` (300-500 words) has an environment section stating ``today``
    (``- Current date: YYYY-MM-DD``) and ``workspace`` (``- Workspace: ws-`` and 8 hex digits),
    each on exactly one line; ``tools`` is the catalog of 10-14 tools from ``TOOL_POOL``."""

    system_prompt: str
    tools: list[dict]
    today: str
    workspace: str


def agent_setting(t: Text, today: str) -> AgentSetting:
    """The system prompt, tool catalog and workspace id of one agent file."""
    name, company = t.choice(AGENT_NAMES), t.choice(COMPANIES)
    repo = f"{t.choice(NOUNS)}-{t.choice(NOUNS)}"
    workspace = f"ws-{t.hexid(32)}"
    head = (
        f"You are {name}, an autonomous software engineering agent working in the {repo} "
        f"repository for {company}. You act only through the tools described below, you never "
        "guess the contents of a file you have not read, and you stop to ask when a request is "
        "ambiguous or would destroy data."
    )
    tail = (
        "## Environment\n"
        f"- Working directory: /workspace/{repo}\n"
        "- Default branch: main; never push, never force.\n"
        "- Python 3.12 and Node 20 are installed; network access is limited to package mirrors.\n"
        f"- Current date: {today}\n"
        f"- Workspace: {workspace}\n\n"
        "## Output\nWhen the task is done, reply with a short summary of what changed, the files "
        "touched and the commands that verify it."
    )
    target = t.randint(300, 480) - len(head.split()) - len(tail.split())
    rules = t.sentences(target // 2)
    style = t.sentences(target - sum(len(r.split()) for r in rules))
    prompt = "\n\n".join(
        [
            head,
            "## Operating principles\n" + "\n".join(f"{i}. {r}" for i, r in enumerate(rules, 1)),
            "## Style\n" + " ".join(style),
            tail,
        ]
    )
    specs = t.rng.sample(TOOL_POOL, t.randint(10, 14))
    return AgentSetting(prompt, [tool_schema(s) for s in specs], today, workspace)


def agent_session(
    t: Text,
    system: dict,
    tools: list[dict],
    steps: int,
    t0: int,
    brk: Breaker | None = None,
    tool_output: tuple[int, int] = DEFAULT_TOOL_OUTPUT,
) -> Iterator[Turn]:
    """One ``Turn`` per step of one agent session starting at ``t0`` (ms).

    ``brk`` (an injected breaker) changes the requests from its step on; without it the session
    draws exactly the same random numbers as it always did. ``tool_output`` (lo, hi): the words
    of a tool result, ``lo + (hi - lo) * u**3`` for a uniform ``u`` (a heavy tail, mean
    ``lo + (hi - lo) / 4``); the default gives the same bytes as before the option existed."""
    lo, hi = tool_output
    c, randint = t.choice, t.randint
    opener = c(_TASK_OPENERS).format(noun=c(NOUNS), noun2=c(NOUNS), adj=c(ADJS), path=t.path())
    closer = c(("Please fix it and run the tests.", "Keep the change small.", "Explain the cause."))
    task = f"{opener} {t.paragraph(randint(40, 150) - 20)} {closer}"
    history: list[dict] = [system, {"role": "user", "content": task}]
    names = [tool["function"]["name"] for tool in tools]
    if brk is not None and brk.ban is not None:
        names.remove(brk.ban)  # the removed tool is never called
    weights = [TOOL_WEIGHT.get(n, 1) for n in names]
    stripped: dict[int, str | None] = {}  # assistant message index -> content without reasoning
    ts = t0
    for step in range(steps):
        if brk is not None and brk.edit == "args" and step == brk.s:
            # a call with every parameter (at least two), re-serialized at step k
            multi = [n for n in names if len(TOOL_SPECS[n].params) >= 2]
            name = t.rng.choices(multi, [TOOL_WEIGHT.get(n, 1) for n in multi])[0]
            args = {p.name: arg_value(t, p.kind) for p in TOOL_SPECS[name].params}
        else:
            name = t.rng.choices(names, weights)[0]
            args = {}
            for p in TOOL_SPECS[name].params:
                if p.required or t.random() < 0.4:
                    args[p.name] = arg_value(t, p.kind)
        arguments = orjson.dumps(args).decode()
        content = None if t.random() < 0.7 else t.sentence(NOTES)
        if brk is not None and brk.edit == "think":
            stripped[len(history)] = content
            reasoning = f"<think>{brk.text.paragraph(brk.text.randint(15, 60))}</think>"
            content = f"{reasoning}\n{content}" if content else reasoning
        call_id = f"call_{t.hexid()}"
        if step == steps - 1:  # the final answer: a summary, not shown in any later request
            completion = randint(80, 400)
        else:
            extra = len(content.split()) * 4 // 3 if content else 0
            completion = min(400, max(20, len(arguments) // 4 + extra + randint(5, 120)))
        if brk is not None and step >= brk.k:
            yield brk.turn(history, step, ts, completion, stripped)
        else:
            yield Turn(ts, history.copy(), completion)
        history.append(
            {
                "role": "assistant",
                "content": content,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    }
                ],
            }
        )
        words = lo + int((hi - lo) * t.random() ** 3)  # default 60-400, mean 145: a heavy tail
        if brk is not None and brk.edit == "json" and step == brk.s:
            # a pretty-printed JSON object, re-serialized with its keys reversed at step k
            result = orjson.dumps(json_body(t, 6 * words), option=orjson.OPT_INDENT_2).decode()
        else:
            result = observation(t, name, args, words)
        history.append({"role": "tool", "tool_call_id": call_id, "content": result})
        ts += randint(2000, 20000)
