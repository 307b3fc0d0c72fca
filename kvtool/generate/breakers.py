"""Injected prefix breakers for agent files: which sessions break, where, how, and the truth path.

``BreakerSchedule`` picks, from its own random stream (``kvtool-<kind>-<seed>-breakers``), the
sessions that get a breaker (``per_cause`` sessions per cause of ``BREAK_CAUSES``, never session 0)
and plans each one: session v (0-based) of a cause gets variant ``v % len(variants)``, and a break
step ``k``. Because that stream is separate, sessions without a breaker are byte-identical to a
file generated without breakers.

A ``Breaker`` changes its session from step ``k`` on: the model or tool catalog of the request
(``model``, ``tools``), the system prompt or an earlier message (``apply``, called by the agent
session before it yields a step >= k). Every edit replaces message dicts and never mutates them.
``mark`` says which requests break their predecessor: step ``k``, or every step from ``k`` on for
volatile values (``every``). ``path`` names the first difference, in the order model,
``messages[0]``, ``tools[0..]``, ``messages[1..]``.

The schedule's ``mode`` (``BREAKER_MODES``) says how a planned breaker fires: ``once`` (the
above), ``recurring`` (the request alternates between the broken form B, at steps k, k+2, ...,
and the clean form A, at k+1, k+3, ...: a field with two values, such as two code paths
serializing one catalog, so every request from k on breaks its predecessor; the B form is the
one of step k, a volatile value included, so a request can reuse the one two steps back), or
``stable`` (never: the same sessions, with every side effect of the plan, such as a banned tool
or reasoning in the history, and the field held at its clean value; the baseline that measures
what the breaks cost). A request going back from B to A breaks with the inverse cause
(``INVERSE``: a tool added becomes a tool removed) at the same path.
"""

from __future__ import annotations

import random
import re
import string
import uuid
from dataclasses import dataclass

import orjson

from kvtool.generate.text import Text
from kvtool.generate.tools import TOOL_POOL, tool_schema
from kvtool.generate.turns import Break, Turn, utc
from kvtool.generate.vocabulary import NOUN_SET, NOUNS

# cause -> variants; session v (0-based) of a cause gets variant v % len(variants)
BREAK_CAUSES: dict[str, tuple[str, ...]] = {
    "model_changed": ("other_model",),
    "tool_added": ("middle", "end"),
    "tool_removed": ("middle", "last"),
    "tools_reordered": ("adjacent", "distant"),
    "tool_schema_edited": ("description", "param_description"),
    "json_key_order": ("tool_properties", "tool_call_arguments", "tool_result"),
    "volatile_timestamp": ("iso_z", "epoch", "rfc2822", "iso_ms_offset", "space"),
    "volatile_id": ("uuid4", "counter", "base62", "hex32", "hex8"),
    "system_edited": ("word",),
    "history_edited": ("truncated", "compacted", "reasoning_stripped"),
    "template_changed": ("single_newline", "trailing_spaces"),
}
BREAKER_MODES = ("once", "recurring", "stable")
INVERSE = {"tool_added": "tool_removed", "tool_removed": "tool_added"}  # B -> A; others: itself
# variants that edit an earlier message (its step s <= k - 2 must exist): k >= 3
_HISTORY_VARIANTS = frozenset(
    ("tool_call_arguments", "tool_result", "truncated", "compacted", "reasoning_stripped")
)
_OTHER_MODELS = (
    "deepseek-ai/DeepSeek-R1", "Qwen/Qwen2.5-72B-Instruct", "meta-llama/Llama-3.1-70B-Instruct",
)  # fmt: skip
_TOOL_NOTES = (
    "Prefer this tool over shell commands when both would work.",
    "Large results are truncated; narrow the request instead of repeating it.",
    "Every call is logged for auditing.",
)
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_BASE62 = string.digits + string.ascii_letters


def _stamp(variant: str, ms: int) -> str:
    """The time ``ms`` (UTC) in one of the volatile_timestamp formats."""
    d = utc(ms)
    match variant:
        case "iso_z":
            return f"{d:%Y-%m-%dT%H:%M:%S}Z"
        case "iso_ms_offset":
            return f"{d:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}+00:00"
        case "space":
            return f"{d:%Y-%m-%d %H:%M:%S}"
        case "rfc2822":  # names spelled out: strftime's %a/%b follow the locale
            day, month = _WEEKDAYS[d.weekday()], _MONTHS[d.month - 1]
            return f"{day}, {d.day:02d} {month} {d.year} {d:%H:%M:%S} +0000"
        case _:  # epoch
            return str(ms // 1000)


@dataclass
class Breaker:
    """One injected break: what changes from step ``k`` of one session on, and its truth path.

    ``model`` and ``tools`` (when set) replace the file's model and catalog from step k on; ``ban``
    is a tool the session never calls (it is removed at step k); ``apply`` edits the system prompt
    and the history. ``s`` is the earlier step whose call (message 2+2s) or observation (3+2s) a
    history edit (``edit``) changes; ``s <= k - 2`` so the message is in step k-1's request."""

    cause: str
    variant: str
    k: int
    path: str
    text: Text  # randomness for injected values (not the session's own)
    every: bool = False
    model: str | None = None
    tools: list[dict] | None = None
    ban: str | None = None
    system: str | None = None  # the system prompt from step k on
    prompt: str = ""  # the clean system prompt (volatile edits)
    old: str = ""  # the clean line a volatile edit rewrites ("- Current date: ...\n")
    value: str = ""  # the volatile value of the previous step
    edit: str | None = None  # args, json, truncate, compact, think
    s: int = 0
    mode: str = "once"  # BREAKER_MODES
    broken: list[dict] | None = None  # recurring: step k's messages, as the B form
    broken_from: int = 0  # ... standing for the first this many messages of the clean history

    def mark(self, step: int) -> Break | None:
        """The truth row of the request at ``step`` (>= k) when it breaks its predecessor."""
        if self.mode == "recurring":
            flipped = (step - self.k) % 2 == 1  # back from B to A
            cause = INVERSE.get(self.cause, self.cause) if flipped else self.cause
            return Break(cause, self.variant, self.path)
        if self.mode == "once" and (step == self.k or self.every):
            return Break(self.cause, self.variant, self.path)
        return None

    def turn(
        self,
        history: list[dict],
        step: int,
        ts: int,
        completion: int,
        stripped: dict[int, str | None],
    ) -> Turn:
        """The request of ``step`` (>= k) in this breaker's mode (``once`` edits ``history`` in
        place, as ``apply``; the other modes leave it clean)."""
        if self.mode == "once":
            self.apply(history, step, ts, stripped)
            return Turn(ts, history.copy(), completion, self.model, self.tools, self.mark(step))
        if self.mode == "stable" or (step - self.k) % 2 == 1:
            return Turn(ts, history.copy(), completion, broken=self.mark(step))
        if self.broken is None:  # step k: the B form of the history so far
            self.broken = history.copy()
            self.apply(self.broken, step, ts, stripped)
            self.broken_from = len(history)
        messages = [*self.broken, *history[self.broken_from :]]
        return Turn(ts, messages, completion, self.model, self.tools, self.mark(step))

    def volatile(self, step: int, ts: int) -> str:
        """The value of the volatile line at ``step`` (>= k), different from the previous one."""
        if self.cause == "volatile_timestamp":
            return f"- Current date: {_stamp(self.variant, ts)}\n"
        r = self.text.rng
        stable = self.old[len("- Workspace: ") : -1]
        while True:
            match self.variant:
                case "uuid4":
                    v = str(uuid.UUID(int=r.getrandbits(128), version=4))
                case "counter":
                    v = f"{stable}-{step}"
                case "base62":
                    chars = [r.choice(_BASE62) for _ in range(20)]
                    if not any(ch.isdigit() for ch in chars):
                        chars[r.randrange(20)] = r.choice(string.digits)
                    v = "req_" + "".join(chars)
                case "hex32":
                    v = f"{r.getrandbits(128):032x}"
                case _:  # hex8
                    v = f"ws-{r.getrandbits(32):08x}"
            if v != self.value:
                self.value = v
                return f"- Workspace: {v}\n"

    def apply(
        self, history: list[dict], step: int, ts: int, stripped: dict[int, str | None]
    ) -> None:
        """Edit ``history`` before step ``step`` (replacing message dicts, never mutating them).

        ``stripped`` maps the index of each assistant message to its content without reasoning."""
        if self.every:
            content = self.prompt.replace(self.old, self.volatile(step, ts))
            history[0] = {"role": "system", "content": content}
        if step != self.k:
            return
        if self.system is not None:
            history[0] = {"role": "system", "content": self.system}
        i = 2 + 2 * self.s  # the assistant message of step s; its observation is i + 1
        match self.edit:
            case "args":
                msg = history[i]
                call = msg["tool_calls"][0]
                fn = call["function"]
                args = orjson.loads(fn["arguments"])
                fn = {**fn, "arguments": orjson.dumps(dict(reversed(args.items()))).decode()}
                history[i] = {**msg, "tool_calls": [{**call, "function": fn}]}
            case "json":
                obj = orjson.loads(history[i + 1]["content"])
                again = orjson.dumps(dict(reversed(obj.items())), option=orjson.OPT_INDENT_2)
                history[i + 1] = {**history[i + 1], "content": again.decode()}
            case "truncate":
                text = history[i + 1]["content"]
                history[i + 1] = {
                    **history[i + 1],
                    "content": text[: len(text) // 2] + "\n[... truncated]",
                }
            case "compact":  # every pair but the last (step k-1's) becomes one user message
                calls = [
                    m["tool_calls"][0]["function"]["name"]
                    for m in history[2 : 2 * step]
                    if m["role"] == "assistant"
                ]
                done = "; ".join(f"{n}. called {name}" for n, name in enumerate(calls, 1))
                summary = f"Summary of earlier steps: {done}. {self.text.sentence()}"
                history[2 : 2 * step] = [{"role": "user", "content": summary}]
            case "think":
                history[i] = {**history[i], "content": stripped[i]}


def _reword_word(prompt: str, t: Text) -> str:
    """``prompt`` with one noun of its "Operating principles" section replaced by another noun."""
    head = "## Operating principles\n"
    lo = prompt.index(head) + len(head)
    hi = prompt.index("\n\n", lo)
    spots = [m for m in re.finditer(r"\b[a-z]+\b", prompt[lo:hi]) if m.group() in NOUN_SET]
    m = t.choice(spots)
    other = t.choice([n for n in NOUNS if n != m.group()])
    return prompt[: lo + m.start()] + other + prompt[lo + m.end() :]


class BreakerSchedule:
    """The breakers of one agent file: which sessions get one, and each one's plan.

    The system prompt must hold exactly one ``- Current date: {today}`` line and one
    ``- Workspace: {workspace}`` line (the volatile breakers rewrite them)."""

    def __init__(
        self,
        kind: str,
        seed: int,
        sessions: int,
        per_cause: int,
        *,
        prompt: str,
        tools: list[dict],
        model: str,
        today: str,
        workspace: str,
        mode: str = "once",
    ) -> None:
        self._t = Text(random.Random(f"kvtool-{kind}-{seed}-breakers"))
        self._mode = mode
        self._prompt, self._tools, self._model = prompt, tools, model
        self._today, self._workspace = today, workspace
        picked = self._t.rng.sample(range(1, sessions), len(BREAK_CAUSES) * per_cause)
        jobs = [(cause, v) for cause in BREAK_CAUSES for v in range(per_cause)]
        self._jobs: dict[int, tuple[str, int]] = dict(zip(picked, jobs, strict=True))

    def plan(self, session: int, steps: int) -> Breaker | None:
        """The breaker of ``session`` (which has ``steps`` steps), or None.

        Call it for every session in order: the plans draw from one stream. The session must then
        have at least ``k + 2`` steps (clean steps before and after the break)."""
        if session not in self._jobs:
            return None
        cause, v = self._jobs[session]
        variant = BREAK_CAUSES[cause][v % len(BREAK_CAUSES[cause])]
        kmin = 3 if variant in _HISTORY_VARIANTS else 1
        k = self._t.randint(kmin, max(kmin, steps - 2))
        return self._plan(cause, v, k)

    def _plan(self, cause: str, v: int, k: int) -> Breaker:
        """The ``v``-th breaker of ``cause`` (variant ``v % len(variants)``), from step ``k`` on."""
        t, prompt, tools = self._t, self._prompt, self._tools
        variants = BREAK_CAUSES[cause]
        variant = variants[v % len(variants)]
        b = Breaker(
            cause, variant, k, "messages[0].content", Text(random.Random(t.rng.getrandbits(64)))
        )
        b.mode = self._mode
        n = len(tools)
        props = [tool["function"]["parameters"]["properties"] for tool in tools]
        match cause:
            case "model_changed":
                others = [m for m in _OTHER_MODELS if m != self._model]
                b.model, b.path = others[v % len(others)], "model"
            case "tool_added":
                present = {tool["function"]["name"] for tool in tools}
                spec = t.choice([s for s in TOOL_POOL if s.name not in present])
                j = n // 2 if variant == "middle" else n
                b.tools, b.path = [*tools[:j], tool_schema(spec), *tools[j:]], f"tools[{j}]"
            case "tool_removed":
                j = n // 2 if variant == "middle" else n - 1
                b.ban = tools[j]["function"]["name"]
                b.tools, b.path = [*tools[:j], *tools[j + 1 :]], f"tools[{j}]"
            case "tools_reordered":
                if variant == "adjacent":
                    j = t.randint(0, n - 2)
                    j2 = j + 1
                else:
                    j, j2 = t.randint(0, 2), n - 1 - t.randint(0, 2)
                b.tools = list(tools)
                b.tools[j], b.tools[j2] = tools[j2], tools[j]
                b.path = f"tools[{j}]"
            case "tool_schema_edited":
                j = t.randint(0, n - 1)
                fn = tools[j]["function"]
                if variant == "description":
                    fn = {**fn, "description": f"{fn['description']} {t.choice(_TOOL_NOTES)}"}
                    b.path = f"tools[{j}].function.description"
                else:
                    params = fn["parameters"]
                    pname = t.choice(list(params["properties"]))
                    prop = params["properties"][pname]
                    lead = "Required" if pname in params["required"] else "Optional"
                    desc = f"{lead}: {prop['description'][0].lower()}{prop['description'][1:]}"
                    properties = {**params["properties"], pname: {**prop, "description": desc}}
                    fn = {**fn, "parameters": {**params, "properties": properties}}
                    b.path = f"tools[{j}].function.parameters.properties.{pname}.description"
                b.tools = [*tools[:j], {**tools[j], "function": fn}, *tools[j + 1 :]]
            case "json_key_order":
                if variant == "tool_properties":
                    j = t.choice([j for j in range(n) if len(props[j]) >= 2])
                    fn = tools[j]["function"]
                    reordered = dict(reversed(props[j].items()))
                    fn = {**fn, "parameters": {**fn["parameters"], "properties": reordered}}
                    b.tools = [*tools[:j], {**tools[j], "function": fn}, *tools[j + 1 :]]
                    b.path = f"tools[{j}].function.parameters.properties"
                elif variant == "tool_call_arguments":
                    b.edit, b.s = "args", t.randint(0, k - 2)
                    b.path = f"messages[{2 + 2 * b.s}].tool_calls[0].function.arguments"
                else:
                    b.edit, b.s = "json", t.randint(0, k - 2)
                    b.path = f"messages[{3 + 2 * b.s}].content"
            case "volatile_timestamp" | "volatile_id":
                b.every, b.prompt = True, prompt
                if cause == "volatile_timestamp":
                    b.old = f"- Current date: {self._today}\n"
                else:
                    b.old, b.value = f"- Workspace: {self._workspace}\n", self._workspace
                assert prompt.count(b.old) == 1
            case "system_edited":
                b.system = _reword_word(prompt, t)
            case "history_edited":
                b.s = t.randint(0, k - 2)
                if variant == "truncated":
                    b.edit, b.path = "truncate", f"messages[{3 + 2 * b.s}].content"
                elif variant == "compacted":
                    b.edit, b.path = "compact", "messages[2]"
                else:
                    b.edit, b.path = "think", f"messages[{2 + 2 * b.s}].content"
            case "template_changed":
                if variant == "single_newline":
                    b.system = prompt.replace("\n\n", "\n")
                else:
                    b.system = "\n".join(f"{line}  " for line in prompt.split("\n"))
        return b
