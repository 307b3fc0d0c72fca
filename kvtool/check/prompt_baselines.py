"""Committed prompt baselines for tests: one JSON file per named prompt, compared by the gate.

A test renders a prompt with the application's own code and names it; its baseline is the file
``<directory>/<name>.json``: the request body the application would send (the chat body
``{"model", "messages", "tools"}``, a completion body ``{"prompt"}``, or any request body
``kvtool ingest`` reads), pretty-printed so that a review shows which line of the prompt changed.
Key order is kept as given: it is part of the prompt.

The comparison is ``kvtool.check.gate.check`` on the two bodies (baseline, consistency and
volatile checks with the caller's ``Policy``): nothing here decides what a break is. Appending
never fails; an edit before the end of the baseline prompt fails when it loses more cached
tokens than the policy allows. The pytest fixture is ``kvtool.check.pytest_plugin``.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import orjson

from kvtool.check.gate import CheckResult, Policy, check
from kvtool.errors import InputError, OptionError
from kvtool.tokenize import TokenizerBundle

# A baseline name is one file name: no separators, no leading dot, no shell-hostile characters.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class PromptOutcome:
    """What checking one named prompt did: ``result`` is the gate's (None when the baseline is
    ``missing``); ``written`` when this check wrote or rewrote the baseline file."""

    name: str
    baseline: Path
    missing: bool
    written: bool
    result: CheckResult | None

    @property
    def passed(self) -> bool:
        return self.result is not None and self.result.passed


def prompt_request(
    prompt: list | dict | str, *, tools: list | None = None, model: str | None = None
) -> dict:
    """The request body ``prompt`` stands for: a list of chat messages (with ``tools`` and
    ``model`` when given), a request body as it is, or a rendered prompt string (a completion
    body). ``OptionError`` for any other type, or ``tools``/``model`` next to a body."""
    if isinstance(prompt, dict):
        if tools is not None or model is not None:
            raise OptionError("prompt", "is a request body: put tools and model inside it")
        return prompt
    body: dict = {} if model is None else {"model": model}
    if isinstance(prompt, str):
        if tools is not None:
            raise OptionError("tools", "cannot go with a rendered prompt string")
        return {**body, "prompt": prompt}
    if isinstance(prompt, list):
        body["messages"] = prompt
        if tools is not None:
            body["tools"] = tools
        return body
    kind = type(prompt).__name__
    raise OptionError(
        "prompt", f"must be a list of messages, a request body (dict) or a string, got {kind}"
    )


def baseline_path(directory: Path, name: str) -> Path:
    """``directory/<name>.json``; ``OptionError`` unless ``name`` is a plain file name of
    letters, digits, ``.``, ``_`` and ``-`` (at most 128, not starting with a dot)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise OptionError(
            "name",
            f"{name!r}: expected 1-128 letters, digits, '.', '_' or '-', not starting with '.', "
            "'_' or '-'",
        )
    return directory / f"{name}.json"


def baseline_bytes(request: dict) -> bytes:
    """The baseline file's content for ``request``: indented JSON, keys in the given order,
    ending with a newline. ``OptionError`` when the request is not JSON data."""
    try:
        return orjson.dumps(request, option=orjson.OPT_INDENT_2) + b"\n"
    except TypeError as exc:
        raise OptionError("prompt", f"is not JSON data ({exc})") from exc


def read_baseline(path: Path) -> dict:
    """The request body stored at ``path``; ``InputError`` when it is not a JSON object."""
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise InputError(f"baseline {path}: not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(f"baseline {path}: expected a request body (a JSON object)")
    return data


def check_prompt(
    name: str,
    request: dict,
    directory: Path,
    bundle: TokenizerBundle,
    policy: Policy,
    *,
    update: bool = False,
) -> PromptOutcome:
    """Check the prompt ``request`` named ``name`` against its baseline in ``directory``.
    ``update``: first write the baseline (when it is missing or differs), so only the
    consistency and volatile checks can fail. Without ``update`` a missing baseline is reported
    (``missing``), never written. ``InputError``/``OptionError`` for a request or baseline the
    gate cannot read."""
    path = baseline_path(directory, name)
    content = baseline_bytes(request)
    written = False
    if update and (not path.is_file() or path.read_bytes() != content):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        written = True
    if not path.is_file():
        return PromptOutcome(name=name, baseline=path, missing=True, written=False, result=None)
    baseline = None if update else read_baseline(path)
    # the gate reads JSON Lines files; their names appear in its messages (a bad baseline:
    # ".../baseline/NAME.json:1: tools must be a list")
    with tempfile.TemporaryDirectory(prefix="kvtool-prompt-") as tmp:
        candidate = Path(tmp) / "candidate" / path.name
        candidate.parent.mkdir()
        candidate.write_bytes(orjson.dumps(request) + b"\n")
        spec = None
        if baseline is not None:
            compact = Path(tmp) / "baseline" / path.name
            compact.parent.mkdir()
            compact.write_bytes(orjson.dumps(baseline) + b"\n")
            spec = str(compact)
        result = check(candidate, bundle, baseline=spec, policy=policy)
    return PromptOutcome(name=name, baseline=path, missing=False, written=written, result=result)
