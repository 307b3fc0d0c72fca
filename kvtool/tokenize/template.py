"""Prompt rendering: the tokenizer's own chat template, or kvtool's documented default template.

The default template (docs/tokenization.md) renders a chat request as independent *pieces*:
one head piece (BOS, leading system/developer messages, tool catalog), one piece per remaining
message, and the generation prompt. Each piece starts with a special token, so BPE never merges
across piece boundaries and a request's token ids are the concatenation of its pieces' ids.
``render_prompt`` joins the same pieces into the full prompt text. With OpenAI's ``o200k``
tokenizer the pieces follow OpenAI's chat format (``OpenAIChatFormat``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import xxhash
from jinja2.exceptions import TemplateError, TemplateSyntaxError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from kvtool.errors import InputError
from kvtool.tokenize.loader import TokenizerBundle


@dataclass(frozen=True)
class Markers:
    """The special-token strings of one default-template style."""

    style: str
    bos: str
    system: tuple[str, str]
    user: tuple[str, str]
    assistant: tuple[str, str]
    tool: tuple[str, str]
    calls: tuple[str, str, str, str]  # calls open, call open, name/arguments separator, call close
    calls_close: str
    generation: str


DEEPSEEK = Markers(
    style="deepseek",
    bos="<｜begin▁of▁sentence｜>",
    system=("<｜begin▁sys｜>", "<｜end▁sys｜>"),
    user=("<｜User｜>", ""),
    assistant=("<｜Assistant｜>", "<｜end▁of▁sentence｜>"),
    tool=("<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>"),
    calls=(
        "<｜tool▁calls▁begin｜>",
        "<｜tool▁call▁begin｜>",
        "<｜tool▁sep｜>",
        "<｜tool▁call▁end｜>",
    ),
    calls_close="<｜tool▁calls▁end｜>",
    generation="<｜Assistant｜>",
)
CHATML = Markers(
    style="chatml",
    bos="",
    system=("<|im_start|>system\n", "<|im_end|>\n"),
    user=("<|im_start|>user\n", "<|im_end|>\n"),
    assistant=("<|im_start|>assistant\n", "<|im_end|>\n"),
    tool=("<|im_start|>tool\n", "<|im_end|>\n"),
    calls=("", "<tool_call>\n", "\n", "\n</tool_call>"),
    calls_close="",
    generation="<|im_start|>assistant\n",
)
PLAIN = Markers(
    style="plain",
    bos="",
    system=("### System:\n", "\n\n"),
    user=("### User:\n", "\n\n"),
    assistant=("### Assistant:\n", "\n\n"),
    tool=("### Tool:\n", "\n\n"),
    calls=("", "<tool_call>", " ", "</tool_call>"),
    calls_close="",
    generation="### Assistant:\n",
)


def content_text(content: Any) -> str:
    """Message content as text: strings as is, parts with text joined, other parts as <type>."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    out = []
    for part in content:
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part.get("text"), str):  # text, input_text, output_text, ...
            out.append(part["text"])
        else:
            out.append(f"<{part.get('type')}>")
    return "".join(out)


def _arguments(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


class DefaultTemplate:
    """kvtool's default chat template in one of three marker styles (see module docstring)."""

    def __init__(self, markers: Markers, bos: str):
        self.m = markers
        self.bos = bos
        self.id = f"default-{markers.style}-v1"
        self.segmentable = markers.style != "plain"

    @classmethod
    def for_tokenizer(cls, bundle: TokenizerBundle) -> DefaultTemplate:
        added = set(bundle.added_tokens)
        if set(OPENAI_MARKERS) <= added:
            return OpenAIChatFormat()
        if {"<｜User｜>", "<｜Assistant｜>", "<｜tool▁output▁begin｜>"} <= added:
            markers = DEEPSEEK
        elif {"<|im_start|>", "<|im_end|>"} <= added:
            markers = CHATML
        else:
            markers = PLAIN
        bos = bundle.special_tokens.get("bos_token", markers.bos)
        if bos not in added:
            bos = ""
        return cls(markers, bos)

    def head(self, systems: list[dict], tools: list | None) -> str:
        """The head piece: BOS, the leading system/developer messages and the tool catalog."""
        text = "\n\n".join(content_text(m.get("content")) for m in systems)
        if tools:
            catalog = "\n".join(orjson.dumps(t).decode() for t in tools)
            text = f"{text}\n\n## Tools\n{catalog}" if text else f"## Tools\n{catalog}"
        if self.m.style == "deepseek":
            return self.bos + text
        return self.bos + (f"{self.m.system[0]}{text}{self.m.system[1]}" if text else "")

    def message(self, msg: dict) -> str:
        """One non-leading message as a piece."""
        role = msg.get("role")
        text = content_text(msg.get("content"))
        m = self.m
        if role == "assistant":
            calls = msg.get("tool_calls") or []
            body = text
            if calls:
                inner = "".join(
                    f"{m.calls[1]}{c['function']['name']}{m.calls[2]}"
                    f"{_arguments(c['function'].get('arguments', ''))}{m.calls[3]}"
                    for c in calls
                )
                body += f"{m.calls[0]}{inner}{m.calls_close}"
            return f"{m.assistant[0]}{body}{m.assistant[1]}"
        if role in ("tool", "function"):
            return f"{m.tool[0]}{text}{m.tool[1]}"
        if role in ("system", "developer"):
            return f"{m.system[0]}{text}{m.system[1]}"
        return f"{m.user[0]}{text}{m.user[1]}"

    @property
    def generation(self) -> str:
        return self.m.generation


OPENAI_MARKERS = ("<|start|>", "<|message|>", "<|end|>")


class OpenAIChatFormat(DefaultTemplate):
    """OpenAI's chat format as its published token counts imply (the cookbook "How to count
    tokens with tiktoken": 3 tokens per message, +1 per name, +3 priming the reply), in
    harmony's markers. Invariants: a message is ``<|start|>{role}<|message|>{text}<|end|>``,
    i.e. 3 marker tokens + role + text; a name is written after the role on a line of its own
    (``{role}\n{name}``): 1 token for the newline + the name's, whatever the name (OpenAI allows
    ``[a-zA-Z0-9_-]``); the generation prompt is ``<|start|>assistant<|message|>`` (3 tokens);
    every piece starts with ``<|start|>``. Not published, so approximate: the tool
    catalog (harmony's TypeScript ``namespace functions``, appended to the last leading system
    message or a system message of its own) and assistant tool calls (one ``assistant
    to=functions.{name}`` message each, arguments as logged)."""

    def __init__(self) -> None:
        super().__init__(
            Markers(
                style="openai",
                bos="",
                system=("<|start|>system<|message|>", "<|end|>"),
                user=("<|start|>user<|message|>", "<|end|>"),
                assistant=("<|start|>assistant<|message|>", "<|end|>"),
                tool=("<|start|>tool<|message|>", "<|end|>"),
                calls=("", "<|start|>assistant to=functions.", "<|message|>", "<|end|>"),
                calls_close="",
                generation="<|start|>assistant<|message|>",
            ),
            "",
        )

    @staticmethod
    def render(role: object, name: object, text: str) -> str:
        """One message: the logged role (``user`` when it is not a string) and name, if any."""
        role = role if isinstance(role, str) else "user"
        author = f"{role}\n{name}" if isinstance(name, str) and name else role
        return f"<|start|>{author}<|message|>{text}<|end|>"

    def head(self, systems: list[dict], tools: list | None) -> str:
        catalog = tool_catalog(tools) if tools else ""
        if not systems:
            return self.render("system", None, catalog) if catalog else ""
        out = []
        for i, m in enumerate(systems):
            text = content_text(m.get("content"))
            if catalog and i == len(systems) - 1:
                text = f"{text}\n\n{catalog}" if text else catalog
            out.append(self.render(m.get("role"), m.get("name"), text))
        return "".join(out)

    def message(self, msg: dict) -> str:
        text = content_text(msg.get("content"))
        calls = (msg.get("tool_calls") or []) if msg.get("role") == "assistant" else []
        if not calls:
            return self.render(msg.get("role"), msg.get("name"), text)
        m = self.m
        out = self.render("assistant", msg.get("name"), text) if text else ""
        for call in calls:
            fn = call.get("function") if isinstance(call, dict) else None
            fn = fn if isinstance(fn, dict) else {}
            args = _arguments(fn.get("arguments", ""))
            out += f"{m.calls[1]}{fn.get('name', '')}{m.calls[2]}{args}{m.calls[3]}"
        return out


TS_DEPTH = 8  # array item types nested deeper than this are written as any


def _ts_type(schema: object, depth: int = 0) -> str:
    """A JSON schema as the TypeScript type harmony's tool catalog writes."""
    if not isinstance(schema, dict) or depth > TS_DEPTH:
        return "any"
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return " | ".join(json.dumps(v, ensure_ascii=False) for v in enum)
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(_ts_type({"type": k}, depth + 1) for k in kind)
    if kind == "array":
        return f"{_ts_type(schema.get('items'), depth + 1)}[]"
    names = {
        "string": "string",
        "integer": "number",
        "number": "number",
        "boolean": "boolean",
        "object": "object",
    }
    return names.get(kind, "any") if isinstance(kind, str) else "any"


def _ts_function(fn: dict) -> str:
    params = fn.get("parameters")
    props = params.get("properties") if isinstance(params, dict) else None
    required = params.get("required") if isinstance(params, dict) else None
    required = {r for r in required if isinstance(r, str)} if isinstance(required, list) else set()
    lines = [f"// {fn['description']}"] if isinstance(fn.get("description"), str) else []
    if not isinstance(props, dict) or not props:
        return "\n".join([*lines, f"type {fn.get('name')} = () => any;"])
    lines.append(f"type {fn.get('name')} = (_: {{")
    for key, schema in props.items():
        if isinstance(schema, dict) and isinstance(schema.get("description"), str):
            lines.append(f"// {schema['description']}")
        line = f"{key}{'' if key in required else '?'}: {_ts_type(schema)},"
        if isinstance(schema, dict) and "default" in schema:
            line += f" // default: {json.dumps(schema['default'], ensure_ascii=False)}"
        lines.append(line)
    lines.append("}) => any;")
    return "\n".join(lines)


def tool_catalog(tools: list) -> str:
    """Function tools (Chat Completions' ``{"function": {...}}`` or the Responses API's flat
    shape) in harmony's ``namespace functions`` form; any other tool as its JSON line."""
    parts = []
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) and isinstance(tool, dict) and tool.get("type") == "function":
            fn = tool
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            parts.append(_ts_function(fn))
        else:
            parts.append(orjson.dumps(tool).decode())
    body = "\n\n".join(parts)
    head = "# Tools\n\n## functions\n\nnamespace functions {"
    return f"{head}\n\n{body}\n\n}} // namespace functions"


SYSTEM_ROLES = frozenset({"system", "developer"})


def split_leading_systems(messages: list[dict]) -> tuple[list[dict], list[dict]]:
    """(leading system/developer messages, the rest)."""
    i = 0
    while i < len(messages) and messages[i].get("role") in SYSTEM_ROLES:
        i += 1
    return messages[:i], messages[i:]


# What a chat template can raise while rendering one request: its own ``raise_exception``
# (TemplateError), undefined names, and Python errors of expressions on unexpected content.
RENDER_ERRORS = (
    TemplateError,
    TypeError,
    ValueError,
    LookupError,
    ArithmeticError,
    AttributeError,
    RecursionError,
)
MESSAGE_CHARS = 500  # a template's message is cut to this many characters


def template_message(exc: BaseException) -> str:
    """The message of a rendering failure on one line (control characters and runs of
    whitespace become one space), at most ``MESSAGE_CHARS`` characters."""
    text = str(exc) if isinstance(exc, TemplateError) else f"{type(exc).__name__}: {exc}"
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


class WholeTemplate:
    """A template that renders a whole request at once (no pieces): a tokenizer's own chat
    template, or a model's published encoding. ``id`` names it in the tokenize signature."""

    id: str

    def render(self, messages: list[dict], tools: list | None, generation: bool = True) -> str:
        """The prompt text; ``InputError`` (one line) for a request it cannot render."""
        raise NotImplementedError


Template = DefaultTemplate | WholeTemplate


class HFTemplate(WholeTemplate):
    """A Hugging Face chat template rendered with jinja2 the way transformers renders it.
    Invariant: ``render`` raises only ``InputError`` (the template's message, one line) for a
    request the template refuses or cannot render; the source must parse (``InputError``)."""

    def __init__(self, source: str, special_tokens: dict[str, str]):
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
        )

        def tojson(value: Any, indent: int | None = None, **_: Any) -> str:
            return json.dumps(value, ensure_ascii=False, indent=indent)

        def raise_exception(message: str) -> None:
            raise TemplateError(message)

        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now(UTC).strftime(fmt)
        try:
            self.template = env.from_string(source)
        except TemplateSyntaxError as exc:
            raise InputError(f"chat template does not parse: {template_message(exc)}") from exc
        self.specials = special_tokens
        self.id = "hf-" + xxhash.xxh3_64_hexdigest(source.encode())[:12]

    def render(self, messages: list[dict], tools: list | None, generation: bool = True) -> str:
        """The prompt text; ``InputError`` with the template's message when rendering raises."""
        try:
            return self.template.render(
                messages=[_arguments_as_objects(m) for m in messages],
                tools=tools,
                add_generation_prompt=generation,
                **self.specials,
            )
        except RENDER_ERRORS as exc:
            raise InputError(template_message(exc)) from exc


def _arguments_as_objects(msg: dict) -> dict:
    """The message with its tool-call ``arguments`` JSON strings parsed into objects, as vLLM
    hands them to chat templates (templates then re-serialize them, e.g. with ``tojson``)."""
    calls = msg.get("tool_calls")
    if msg.get("role") != "assistant" or not calls:
        return msg
    out = []
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        args = fn.get("arguments") if isinstance(fn, dict) else None
        if isinstance(args, str):
            try:
                parsed = json.loads(args)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                call = {**call, "function": {**fn, "arguments": parsed}}
        out.append(call)
    return {**msg, "tool_calls": out}


def make_template(bundle: TokenizerBundle) -> Template:
    """The bundle's chat format when it names one (``deepseek-v4``: DeepSeek-V4's encoding),
    else the tokenizer's chat template when it has one, else the default template."""
    if bundle.chat_format is not None:
        from kvtool.tokenize.deepseek_v4 import FORMAT, DeepSeekV4Format  # builds on this module

        if bundle.chat_format != FORMAT:
            raise InputError(f"unknown chat format {bundle.chat_format!r}")
        return DeepSeekV4Format()
    if bundle.chat_template:
        return HFTemplate(bundle.chat_template, bundle.special_tokens)
    return DefaultTemplate.for_tokenizer(bundle)


def render_prompt(
    template: Template,
    messages: list[dict],
    tools: list | None,
    generation: bool = True,
) -> str:
    """The full prompt text of a chat request (what a server tokenizes in one call); without
    the generation prompt when ``generation`` is False. ``InputError`` when a tokenizer's own
    template raises for this request (see ``HFTemplate``)."""
    if isinstance(template, WholeTemplate):
        return template.render(messages, tools, generation)
    systems, rest = split_leading_systems(messages)
    return (
        template.head(systems, tools)
        + "".join(template.message(m) for m in rest)
        + (template.generation if generation else "")
    )


def render_head(template: Template, messages: list[dict], tools: list | None) -> str:
    """The text of the request's head: its leading system/developer messages and tool catalog,
    as the template renders them before the first conversation message ('' when the template
    cannot render a head alone)."""
    systems, _ = split_leading_systems(messages)
    if isinstance(template, DefaultTemplate):
        return template.head(systems, tools)
    try:
        return template.render(systems, tools, generation=False)
    except InputError:
        return ""
