"""AWS Bedrock model-invocation logs (``schemaType`` "ModelInvocationLog"), as S3 delivers them
(gzip JSON Lines, one record per line) or as CloudWatch Logs events (a record's JSON in an
event's ``message``; ``records`` splits ``aws logs filter-log-events`` output and the
``logEvents`` of subscription deliveries).

Fields read: ``requestId``, ``timestamp`` (ISO-8601, the only form the schema gives),
``modelId``, ``operation``, ``accountId``, ``requestMetadata``, ``input.inputBodyJson`` and the
counts ``input.inputTokenCount``, ``input.cacheReadInputTokenCount``,
``input.cacheWriteInputTokenCount``, ``output.outputTokenCount``.

- Tokens: ``inputTokenCount`` EXCLUDES cache reads and writes, so the prompt is input + read +
  write; a cache count the record leaves out is read as 0.
- Tenant (the cache-isolation domain): ``accountId``. Bedrock isolates its prompt cache per
  AWS account, so every principal (``identity.arn``) of an account shares one cache; the
  account of ``identity.arn`` when ``accountId`` is missing; None without either.
- End user: the log has no end-user field; ``requestMetadata`` (free key/value tags the caller
  sets) is read under a user key (``user``, ``user_id``, ``end_user``), else what the body
  names (an Anthropic body's ``metadata.user_id``); None otherwise. The IAM principal
  (``identity.arn``) is not an end user and is not read as one.
- Session: only what the caller tagged in ``requestMetadata`` (Converse's ``requestMetadata``,
  InvokeModel's ``X-Amzn-Bedrock-Request-Metadata`` header) under a session key (``session_id``,
  ``conversation_id``, ...); nothing else in the log is a session, so InvokeModel records (and
  untagged Converse ones) have none.
- Converse / ConverseStream bodies (and Amazon Nova's InvokeModel body, ``schemaVersion``
  "messages-v1", which has the same shape) become OpenAI chat messages: ``system`` blocks the
  first message, ``toolUse`` blocks ``tool_calls``, each ``toolResult`` a tool message at its
  place in the turn (``json`` results as compact JSON text, an "error" status kept as
  ``status``), ``text`` a text part, ``guardContent`` text a ``guardContent`` part with
  its text, other blocks (image, document, video, audio, reasoningContent, citationsContent,
  searchResult) a part ``{"type": member, member: value}``; a content of exactly one text part
  is that text. ``toolConfig.tools`` become OpenAI tools (a ``systemTool`` stays as
  ``{"type": "systemTool", ...}``).
- Cache points: a ``cachePoint`` block marks the end of the prompt content before it; it becomes
  a ``cache_control`` marker (``type``, ``ttl``) on that content and is not kept in it, with
  the indices ``kvtool.ingest.formats.anthropic`` uses: ``{"message": i, "part": j}`` after a
  part (``part`` None when the content is a plain string), ``{"message": i, "tool_call": k}``
  after a tool use, ``{"message": i, "part": None}`` after a tool result (its tool message) or
  at the start of a message (the message before), ``{"tool": k}`` after a tool.
- InvokeModel / InvokeModelWithResponseStream bodies are the provider's own: Anthropic Messages
  (``anthropic_version``) are read by ``kvtool.ingest.formats.anthropic``; OpenAI-shaped
  ``messages`` (Mistral chat, AI21 Jamba, OpenAI gpt-oss) as OpenAI chat; a ``prompt`` string
  (Meta Llama, Mistral, DeepSeek, Anthropic text completions) or ``inputText`` (Amazon Titan
  Text) as a completion. Rejected: Cohere Command (``message``/``chat_history``: its own chat
  template, not the OpenAI chat shape). Skipped, not errors: embedding, rerank, image and speech
  models, operations other than the four above, and failed requests (``errorCode``: whether
  the prompt was processed, and cached, is unknown).
- A body Bedrock delivered to S3 (``input.inputBodyS3Path``, bodies over 100 KB) or not logged
  at all (text delivery off) is stored with ``incomplete`` saying so, its counts kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from kvtool.errors import InputError
from kvtool.ingest.formats.anthropic import normalize_anthropic
from kvtool.ingest.formats.base import (
    END_USER_KEYS,
    INT64_LIMIT,
    SESSION_KEYS,
    Format,
    Normalized,
    Skip,
    first,
    first_item,
    int_or_none,
    parse_timestamp,
    set_usage,
    shown,
    str_or_none,
)
from kvtool.ingest.formats.chat import (
    check_openai_messages,
    check_tools,
    openai_tool,
    openai_tool_call,
)

SCHEMA_TYPE = "ModelInvocationLog"
CONVERSE_OPS = frozenset({"Converse", "ConverseStream"})
INVOKE_OPS = frozenset({"InvokeModel", "InvokeModelWithResponseStream"})
CONVERSE_BLOCKS = frozenset(
    {
        "text",
        "image",
        "document",
        "video",
        "audio",
        "searchResult",
        "citationsContent",
        "reasoningContent",
        "guardContent",
        "toolUse",
        "toolResult",
        "cachePoint",
    }
)
SYSTEM_BLOCKS = frozenset({"text", "guardContent", "cachePoint"})
RESULT_BLOCKS = frozenset({"text", "json", "image", "document", "video", "searchResult"})
NOT_TEXT_MODELS = (
    "embed",
    "rerank",
    "stability.",
    "titan-image",
    "nova-canvas",
    "nova-reel",
    "nova-sonic",
)


# ---------------------------------------------------------------------------------------------
# the log record


def _log_record(rec: object) -> dict:
    """The ModelInvocationLog record of a line: the line itself, or the JSON in the
    ``message`` of a CloudWatch Logs event."""
    if not isinstance(rec, dict):
        raise InputError(f"record must be an object, got {type(rec).__name__}")
    message = rec.get("message")
    if "schemaType" not in rec and "operation" not in rec and isinstance(message, str):
        try:
            rec = orjson.loads(message)
        except orjson.JSONDecodeError as exc:
            raise InputError("the CloudWatch event's message is not JSON") from exc
        if not isinstance(rec, dict):
            raise InputError("the CloudWatch event's message is not a JSON object")
    kind = rec.get("schemaType")
    if kind is not None and kind != SCHEMA_TYPE:
        raise InputError(f"schemaType {shown(kind)} is not {SCHEMA_TYPE!r}")
    return rec


def _section(rec: dict, key: str) -> dict:
    value = rec.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{key} must be an object, got {type(value).__name__}")
    return value


def _time(value: Any) -> float | None:
    """``timestamp``: the schema gives ISO-8601 (RFC 3339) strings; epoch numbers are refused
    rather than read in a guessed unit."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"timestamp must be an ISO-8601 string, got {type(value).__name__}")
    try:
        float(value)
    except ValueError:
        return parse_timestamp(value, "timestamp")
    raise InputError(f"timestamp must be an ISO-8601 string, got {shown(value)}")


def _tenant(rec: dict) -> str | None:
    account = str_or_none(rec.get("accountId"), "accountId")
    if account:
        return account
    arn = str_or_none(_section(rec, "identity").get("arn"), "identity.arn")
    parts = arn.split(":") if arn else []
    return (parts[4] or None) if len(parts) > 5 else None


def _session(rec: dict) -> str | None:
    return str_or_none(first((_section(rec, "requestMetadata"),), SESSION_KEYS), "session id")


def _end_user(rec: dict) -> str | None:
    key, user = first_item((_section(rec, "requestMetadata"),), END_USER_KEYS)
    return str_or_none(user, f"requestMetadata.{key}")


def _usage(out: Normalized, inp: dict, output: dict) -> None:
    """Bedrock's counts in kvtool's convention: prompt = input + cache read + cache write."""
    fresh = int_or_none(inp.get("inputTokenCount"), "input.inputTokenCount")
    read = int_or_none(inp.get("cacheReadInputTokenCount"), "input.cacheReadInputTokenCount")
    write = int_or_none(inp.get("cacheWriteInputTokenCount"), "input.cacheWriteInputTokenCount")
    prompt = None
    if fresh is not None:
        prompt = fresh + (read or 0) + (write or 0)
        read, write = read or 0, write or 0
        if prompt >= INT64_LIMIT:
            raise InputError(f"input token counts add up out of range, got {prompt}")
    set_usage(
        out,
        prompt=prompt,
        cached=read,
        written=write,
        output=int_or_none(output.get("outputTokenCount"), "output.outputTokenCount"),
        what="input token counts",
    )


def _body(inp: dict) -> dict | None:
    body = inp.get("inputBodyJson")
    if isinstance(body, str):  # pipelines that re-serialize the body
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InputError("input.inputBodyJson is a string that is not JSON") from exc
    if body is not None and not isinstance(body, dict):
        raise InputError(f"input.inputBodyJson must be an object, got {type(body).__name__}")
    return body


def _missing_body(inp: dict) -> str:
    path = str_or_none(inp.get("inputBodyS3Path"), "input.inputBodyS3Path")
    if path:
        return f"the input body was delivered to S3 ({path[:100]}), not in this log"
    return "the log has no input body (text data delivery is off)"


def normalize_bedrock(line: object) -> Normalized:
    rec = _log_record(line)
    op = rec.get("operation")
    if not isinstance(op, str):
        raise InputError("operation must be a string")
    if op not in CONVERSE_OPS and op not in INVOKE_OPS:
        raise Skip(f"operation {op[:40]!r} is not a text-generation request")
    error = rec.get("errorCode")
    if error:
        raise Skip(f"failed request (errorCode {shown(error)})")
    model = str_or_none(rec.get("modelId"), "modelId")
    inp, output = _section(rec, "input"), _section(rec, "output")
    body = _body(inp)
    if body is None:
        out = Normalized(kind="chat", incomplete=_missing_body(inp))
    elif op in CONVERSE_OPS:
        out = converse_request(body)
    else:
        out = invoke_request(body, model or "")
    out.request_id = str_or_none(rec.get("requestId"), "requestId")
    out.ts = _time(rec.get("timestamp"))
    out.model = model
    out.tenant = _tenant(rec)
    out.session_id = _session(rec)
    out.end_user = _end_user(rec) or out.end_user
    _usage(out, inp, output)
    return out


# ---------------------------------------------------------------------------------------------
# Converse bodies


def _member(block: Any, where: str, allowed: frozenset[str]) -> tuple[str, Any]:
    """The one member of a union block (``{"text": ...}``), checked against ``allowed``."""
    if not isinstance(block, dict) or len(block) != 1:
        raise InputError(f"{where} must be an object with exactly one member")
    ((key, value),) = block.items()
    if key not in allowed:
        raise InputError(f"{where}: unknown block member {key[:40]!r}")
    return key, value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{where}.text must be a string")
    return value


def _part(key: str, value: Any, where: str) -> dict:
    """A content part for a block that is neither a tool use, a tool result nor a cache point."""
    if key == "text":
        return {"type": "text", "text": _text(value, where)}
    if key == "guardContent" and isinstance(value, dict) and "text" in value:
        inner = value["text"]
        text = inner.get("text") if isinstance(inner, dict) else None
        return {"type": "guardContent", "text": _text(text, f"{where}.guardContent.text")}
    return {"type": key, key: value}


def _cache_point(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise InputError(f"{where}.cachePoint must be an object")
    kind = value.get("type")
    ttl = value.get("ttl")
    if not isinstance(kind, str) or (ttl is not None and not isinstance(ttl, str)):
        raise InputError(f"{where}.cachePoint type and ttl must be strings")
    return {"type": kind, "ttl": ttl}


def _collapse(parts: list[dict]) -> str | list[dict] | None:
    """No parts: None; one text part: its text; otherwise the parts."""
    if not parts:
        return None
    if len(parts) == 1 and parts[0]["type"] == "text":
        return parts[0]["text"]
    return parts


class _Converse:
    """Builds the normalized messages and markers of one Converse body."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.markers: list[dict] = []

    def _mark_previous(self, point: dict, where: str) -> None:
        if not self.messages:
            raise InputError(f"{where} is a cachePoint with nothing before it")
        self.markers.append({"message": len(self.messages) - 1, "part": None, **point})

    def _add(self, message: dict, parts: list[dict], part_marks: list[tuple[int, dict]]) -> None:
        """Append ``message`` with content ``parts``; ``part_marks`` are (part, point) pairs."""
        content = _collapse(parts)
        message["content"] = content
        index = len(self.messages)
        self.messages.append(message)
        for j, point in part_marks:
            part = None if isinstance(content, str) else j
            self.markers.append({"message": index, "part": part, **point})

    def system(self, blocks: Any) -> None:
        if not isinstance(blocks, list):
            raise InputError(f"system must be a list of blocks, got {type(blocks).__name__}")
        parts: list[dict] = []
        marks: list[tuple[int, dict]] = []
        for j, block in enumerate(blocks):
            where = f"system[{j}]"
            key, value = _member(block, where, SYSTEM_BLOCKS)
            if key == "cachePoint":
                if not parts:
                    raise InputError(f"{where} is a cachePoint with nothing before it")
                marks.append((len(parts) - 1, _cache_point(value, where)))
            else:
                parts.append(_part(key, value, where))
        if parts:
            self._add({"role": "system"}, parts, marks)

    def message(self, msg: Any, where: str) -> None:
        """One Converse message as chat messages: its text and other parts with its tool calls,
        split around each tool result, which becomes a tool message at its place."""
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
            raise InputError(f"{where} must be an object with role 'user' or 'assistant'")
        blocks = msg.get("content")
        if not isinstance(blocks, list) or not blocks:
            raise InputError(f"{where}.content must be a non-empty list of blocks")
        turn = _Turn(msg["role"])
        for j, block in enumerate(blocks):
            at = f"{where}.content[{j}]"
            key, value = _member(block, at, CONVERSE_BLOCKS)
            if key == "cachePoint":
                point = _cache_point(value, at)
                if not turn.mark(point):  # after a tool result, or opening the message
                    self._mark_previous(point, at)
            elif key == "toolUse":
                turn.calls.append(_tool_call(value, f"{at}.toolUse"))
                turn.last = "call"
            elif key == "toolResult":
                self._flush(turn)
                self.messages.append(_tool_result(value, f"{at}.toolResult"))
            else:
                turn.parts.append(_part(key, value, at))
                turn.last = "part"
        self._flush(turn)

    def _flush(self, turn: _Turn) -> None:
        """Emit the message ``turn`` has gathered (if any) with its markers; start it anew."""
        if turn.parts or turn.calls:
            message: dict = {"role": turn.role}
            self._add(message, turn.parts, turn.part_marks)
            if turn.calls:
                message["tool_calls"] = turn.calls
            index = len(self.messages) - 1
            self.markers += [{"message": index, "tool_call": k, **p} for k, p in turn.call_marks]
        turn.parts, turn.calls, turn.part_marks, turn.call_marks = [], [], [], []
        turn.last = ""


class _Turn:
    """The parts and tool calls of the chat message being gathered from a Converse message,
    and the cache points on them (by part / tool-call index)."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.parts: list[dict] = []
        self.calls: list[dict] = []
        self.part_marks: list[tuple[int, dict]] = []
        self.call_marks: list[tuple[int, dict]] = []
        self.last = ""  # what a cache point here follows: "part", "call" or nothing gathered

    def mark(self, point: dict) -> bool:
        """Put ``point`` on the part or tool call just gathered; False when there is none."""
        if self.last == "part":
            self.part_marks.append((len(self.parts) - 1, point))
        elif self.last == "call":
            self.call_marks.append((len(self.calls) - 1, point))
        return self.last in ("part", "call")


def _tool_call(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise InputError(f"{where} must be an object")
    return openai_tool_call(value.get("toolUseId"), value.get("name"), value.get("input"), where)


def _tool_result(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise InputError(f"{where} must be an object")
    call_id = value.get("toolUseId")
    if not isinstance(call_id, str):
        raise InputError(f"{where}.toolUseId must be a string")
    blocks = value.get("content", [])
    if not isinstance(blocks, list):
        raise InputError(f"{where}.content must be a list of blocks")
    parts: list[dict] = []
    for j, block in enumerate(blocks):
        at = f"{where}.content[{j}]"
        key, item = _member(block, at, RESULT_BLOCKS)
        if key == "json":
            parts.append({"type": "text", "text": orjson.dumps(item).decode()})
        else:
            parts.append(_part(key, item, at))
    content = _collapse(parts)
    message = {
        "role": "tool",
        "tool_call_id": call_id,
        "content": "" if content is None else content,
    }
    status = value.get("status")
    if status is not None and not isinstance(status, str):
        raise InputError(f"{where}.status must be a string")
    if status not in (None, "success"):
        message["status"] = status
    return message


def _tools(config: Any, markers: list[dict]) -> list | None:
    if config is None:
        return None
    if not isinstance(config, dict):
        raise InputError(f"toolConfig must be an object, got {type(config).__name__}")
    tools = config.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise InputError(f"toolConfig.tools must be a list, got {type(tools).__name__}")
    out: list[dict] = []
    for k, tool in enumerate(tools):
        where = f"toolConfig.tools[{k}]"
        key, value = _member(tool, where, frozenset({"toolSpec", "systemTool", "cachePoint"}))
        if key == "cachePoint":
            if not out:
                raise InputError(f"{where} is a cachePoint with no tool before it")
            markers.append({"tool": len(out) - 1, **_cache_point(value, where)})
        elif key == "systemTool":
            out.append({"type": "systemTool", "systemTool": value})
        else:
            out.append(_tool_spec(value, f"{where}.toolSpec"))
    return out or None


def _tool_spec(spec: Any, where: str) -> dict:
    if not isinstance(spec, dict):
        raise InputError(f"{where} must be an object")
    schema = spec.get("inputSchema")
    if schema is not None and not isinstance(schema, dict):
        raise InputError(f"{where}.inputSchema must be an object")
    params = schema.get("json") if schema else None
    tool = openai_tool(spec.get("name"), spec.get("description"), params, where)
    strict = spec.get("strict")
    if strict is not None:
        if not isinstance(strict, bool):
            raise InputError(f"{where}.strict must be a boolean")
        tool["function"]["strict"] = strict
    return tool


def converse_request(body: dict) -> Normalized:
    """A Converse request body (or Nova's InvokeModel body) as a chat request (see module)."""
    build = _Converse()
    if body.get("system") is not None:
        build.system(body["system"])
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InputError("input.inputBodyJson.messages must be a non-empty list")
    for i, msg in enumerate(messages):
        build.message(msg, f"messages[{i}]")
    tools = _tools(body.get("toolConfig"), build.markers)
    return Normalized(
        kind="chat", messages=build.messages, tools=tools, cache_control=build.markers or None
    )


# ---------------------------------------------------------------------------------------------
# InvokeModel bodies


def invoke_request(body: dict, model: str) -> Normalized:
    """An InvokeModel body in its provider's own shape (see the module docstring)."""
    name = model.lower()
    if any(word in name for word in NOT_TEXT_MODELS):
        raise Skip(f"model {model[:60]!r} is not a text-generation model")
    if "anthropic_version" in body or ("messages" in body and "anthropic." in name):
        return normalize_anthropic({"request": body})  # record fields are set by the caller
    if body.get("schemaVersion") == "messages-v1":  # Amazon Nova: the Converse shape
        return converse_request(body)
    if "messages" in body:
        return Normalized(
            kind="chat",
            messages=check_openai_messages(body["messages"]),
            tools=check_tools(body.get("tools")),
            messages_checked=False,
        )
    for key in ("prompt", "inputText"):
        if isinstance(body.get(key), str):
            return Normalized(kind="completion", prompt=body[key])
    if "chat_history" in body or "message" in body:
        raise InputError(
            "Cohere Command bodies (message, chat_history) are not read: their chat template "
            "is not the OpenAI chat shape"
        )
    if "taskType" in body or "text_prompts" in body:
        raise Skip("an image-generation request")
    raise InputError(
        "input.inputBodyJson has no messages, prompt or inputText (an InvokeModel body of "
        f"model {model[:60]!r} kvtool does not read)"
    )


# ---------------------------------------------------------------------------------------------
# detection and CloudWatch batches


def _is_log_message(value: Any) -> bool:
    return isinstance(value, str) and f'"{SCHEMA_TYPE}"' in value


def looks_like_bedrock(rec: dict) -> bool:
    if rec.get("schemaType") == SCHEMA_TYPE:
        return True
    if (
        "schemaType" not in rec
        and isinstance(rec.get("operation"), str)
        and "modelId" in rec
        and isinstance(rec.get("input"), dict)
    ):
        return True
    for key in ("logEvents", "events"):
        events = rec.get(key)
        if isinstance(events, list) and events:
            head = events[0]
            return isinstance(head, dict) and _is_log_message(head.get("message"))
    return _is_log_message(rec.get("message"))


def bedrock_records(line: dict) -> Iterator[dict]:
    """The records of one parsed line: the line, or each event of a CloudWatch Logs batch
    (``logEvents`` of a subscription delivery, ``events`` of ``filter-log-events`` /
    ``get-log-events`` output); a subscription's CONTROL_MESSAGE holds none."""
    if line.get("messageType") == "CONTROL_MESSAGE":
        return
    if "schemaType" not in line:
        for key in ("logEvents", "events"):
            events = line.get(key)
            if isinstance(events, list):
                yield from events
                return
    yield line


FORMATS = (
    Format(
        "bedrock",
        lambda _: normalize_bedrock,
        looks_like_bedrock,
        records=bedrock_records,
        priority=10,
        summary="AWS Bedrock model-invocation logs (Converse and InvokeModel; S3 or CloudWatch)",
    ),
)
