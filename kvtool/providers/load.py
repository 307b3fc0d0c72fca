"""Reading a provider's data file, and the override files of ``--rules`` / ``--prices``.

A data file (``data/<provider>.json``, JSON so that loading needs nothing but the standard
library) holds ``schema_version``, ``provider``, ``as_of``, ``sources`` (id -> url and read
date), ``rules`` (name -> ``{"value", "source", "note"?}``) and ``prices`` (``fallback`` and
``models``: key -> an entry with ``match`` prefixes, rates and ``source``).

An override file has the same shape, every part optional: a rules file may hold ``rules``,
a prices file ``prices``; both may add ``sources`` and set ``as_of``. Each rule, each model
entry, each source it names replaces the shipped one of that name (a new model key adds a
model); ``prices.fallback`` replaces the fallback. The merged whole is then validated as the
shipped file is, so an override can never produce rules the shipped data could not.

Invariants: every field is type- and range-checked, unknown keys are refused, every source id
used exists, every TTL has a write multiplier and the default TTL exists, the fallback model
exists. A violation raises ``InputError`` with one line: ``FILE: key.path: reason``; an unknown
provider name raises ``OptionError`` for ``provider``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from kvtool.errors import InputError, OptionError
from kvtool.providers.model import (
    HourRange,
    ModelPrices,
    ProviderRules,
    Rates,
    Source,
    Ttl,
)

SCHEMA_VERSION = 1
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_PRICE = 10_000.0  # $ per million tokens; anything above is a typo (a price per token?)
MAX_TOKENS = 10_000_000


class _Bad(Exception):
    """A validation failure at ``path`` (joined with dots); turned into one InputError."""

    def __init__(self, path: str, reason: str):
        super().__init__(reason)
        self.path = path
        self.reason = reason


def provider_names() -> tuple[str, ...]:
    """The providers with a shipped data file, sorted."""
    data = resources.files("kvtool.providers") / "data"
    return tuple(
        sorted(p.name[: -len(".json")] for p in data.iterdir() if p.name.endswith(".json"))
    )


def load_provider(
    name: str, *, rules_file: str | Path | None = None, prices_file: str | Path | None = None
) -> ProviderRules:
    """The shipped rules and prices of provider ``name``, with the override files applied."""
    names = provider_names()
    if name not in names:
        raise OptionError("provider", f"must be one of {', '.join(names)}, not {name!r}")
    shipped = resources.files("kvtool.providers") / "data" / f"{name}.json"
    label = f"kvtool/providers/data/{name}.json"
    doc = _parse(label, shipped.read_text(encoding="utf-8"))
    files = [label]
    try:
        _check_keys(doc, "", required=_TOP_KEYS, allowed=_TOP_KEYS)
    except _Bad as bad:
        raise _error(label, bad) from None
    # Which file a merged part came from, for the message of a later failure.
    origin: dict[str, str] = {}
    for path, part in ((rules_file, "rules"), (prices_file, "prices")):
        if path is None:
            continue
        text = _read(Path(path))
        over = _parse(str(path), text)
        try:
            _merge(doc, over, name, part, origin, str(path))
        except _Bad as bad:
            raise _error(str(path), bad) from None
        files.append(str(path))
    try:
        return _build(doc, tuple(files))
    except _Bad as bad:
        raise _error(_blame(bad.path, origin, label), bad) from None


def _blame(path: str, origin: Mapping[str, str], shipped: str) -> str:
    """The file that set the part of the merged document at ``path``."""
    best = ""
    for key in origin:
        if (path == key or path.startswith(key + ".")) and len(key) > len(best):
            best = key
    return origin[best] if best else shipped


def _error(file: str, bad: _Bad) -> InputError:
    return InputError(f"{file}: {bad.path or '(top)'}: {bad.reason}")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc.__class__.__name__}") from None


def _parse(label: str, text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{label}: not JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(doc, dict):
        raise InputError(f"{label}: (top): must be a JSON object")
    return doc


_TOP_KEYS = ("schema_version", "provider", "as_of", "sources", "rules", "prices")


def _merge(
    doc: dict[str, Any],
    over: dict[str, Any],
    name: str,
    part: str,
    origin: dict[str, str],
    file: str,
) -> None:
    """Apply one override file ``over`` (whose own part is ``part``) onto ``doc``."""
    allowed = ("schema_version", "provider", "as_of", "sources", part)
    other = "prices" if part == "rules" else "rules"
    if other in over:
        raise _Bad(other, f"belongs in the {other} file, not the {part} file")
    _check_keys(over, "", required=(), allowed=allowed)
    if "schema_version" in over and over["schema_version"] != SCHEMA_VERSION:
        raise _Bad("schema_version", f"must be {SCHEMA_VERSION}")
    if "provider" in over and over["provider"] != name:
        raise _Bad("provider", f"is {over['provider']!r}, but the provider is {name!r}")
    if "as_of" in over:
        doc["as_of"] = _date(over["as_of"], "as_of")
    for sid, src in _obj(over.get("sources", {}), "sources").items():
        doc["sources"][sid] = src
        origin[f"sources.{sid}"] = file
    body = _obj(over.get(part, {}), part)
    if part == "rules":
        for key, entry in body.items():
            doc["rules"][key] = entry
            origin[f"rules.{key}"] = file
        return
    _check_keys(body, "prices", required=(), allowed=("fallback", "models"))
    if "fallback" in body:
        doc["prices"]["fallback"] = body["fallback"]
        origin["prices.fallback"] = file
    for key, entry in _obj(body.get("models", {}), "prices.models").items():
        doc["prices"]["models"][key] = entry
        origin[f"prices.models.{key}"] = file


# ---------------------------------------------------------------- checks of single values


def _obj(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(path, "must be a JSON object")
    return value


def _check_keys(obj: Any, path: str, *, required: tuple[str, ...], allowed: tuple[str, ...]):
    obj = _obj(obj, path)
    for key in obj:
        if key not in allowed:
            where = f"{path}.{key}" if path else key
            raise _Bad(where, f"unknown key (allowed: {', '.join(allowed)})")
    for key in required:
        if key not in obj:
            raise _Bad(f"{path}.{key}" if path else key, "is missing")


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _Bad(path, f"must be true or false, not {value!r}")
    return value


def _int(value: Any, path: str, lo: int, hi: int = MAX_TOKENS) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(path, f"must be an integer, not {value!r}")
    if not lo <= value <= hi:
        raise _Bad(path, f"must be in [{lo}, {hi}], not {value}")
    return value


def _float(value: Any, path: str, lo: float = 0.0, hi: float = MAX_PRICE) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(path, f"must be a number, not {value!r}")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise _Bad(path, f"must be in [{lo:g}, {hi:g}], not {value}")
    return float(value)


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad(path, f"must be a non-empty string, not {value!r}")
    return value


def _date(value: Any, path: str) -> str:
    if not isinstance(value, str) or not DATE.match(value):
        raise _Bad(path, f"must be a date YYYY-MM-DD, not {value!r}")
    return value


def _prefixes(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise _Bad(path, "must be a non-empty list of model-name prefixes")
    out = []
    for i, item in enumerate(value):
        text = _str(item, f"{path}[{i}]")
        if text != text.strip().lower() or "/" in text:
            raise _Bad(f"{path}[{i}]", f"must be lower case without '/' or spaces: {text!r}")
        out.append(text)
    return tuple(out)


# ---------------------------------------------------------------- rules


def _ttls(value: Any, path: str) -> tuple[Ttl, ...]:
    if not isinstance(value, list) or not value:
        raise _Bad(path, "must be a non-empty list of TTLs")
    out = []
    for i, item in enumerate(value):
        where = f"{path}[{i}]"
        keys = ("name", "seconds", "max_seconds", "refresh_on_hit")
        _check_keys(item, where, required=keys, allowed=keys)
        seconds = item["seconds"]
        cap = item["max_seconds"]
        out.append(
            Ttl(
                name=_str(item["name"], f"{where}.name"),
                seconds=None if seconds is None else _int(seconds, f"{where}.seconds", 1),
                max_seconds=None if cap is None else _int(cap, f"{where}.max_seconds", 1),
                refresh_on_hit=_bool(item["refresh_on_hit"], f"{where}.refresh_on_hit"),
            )
        )
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        raise _Bad(path, f"TTL names repeat: {names}")
    return tuple(out)


def _int_map(value: Any, path: str) -> dict[str, int]:
    return {
        _prefixes([k], path)[0]: _int(v, f"{path}.{k}", 0) for k, v in _obj(value, path).items()
    }


def _float_map(value: Any, path: str) -> dict[str, float]:
    return {k: _float(v, f"{path}.{k}", 0.0, 100.0) for k, v in _obj(value, path).items()}


def _str_list(value: Any, path: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Bad(path, "must be a list of strings")
    return tuple(_str(v, f"{path}[{i}]") for i, v in enumerate(value))


def _hours(value: Any, path: str) -> tuple[HourRange, ...]:
    if not isinstance(value, list):
        raise _Bad(path, "must be a list of [start, end] hour pairs")
    out = []
    for i, pair in enumerate(value):
        if not isinstance(pair, list) or len(pair) != 2:
            raise _Bad(f"{path}[{i}]", "must be a [start, end] pair")
        start = _int(pair[0], f"{path}[{i}][0]", 0, 23)
        end = _int(pair[1], f"{path}[{i}][1]", 1, 24)
        if end <= start:
            raise _Bad(f"{path}[{i}]", f"end {end} must be after start {start}")
        out.append(HourRange(start, end))
    return tuple(out)


def _nullable(check: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    return lambda value, path: None if value is None else check(value, path)


# Every rule a file must set (null where the provider has no such thing), with its check.
RULES: Mapping[str, Callable[[Any, str], Any]] = {
    "automatic": _bool,
    "explicit_breakpoints": _bool,
    "max_breakpoints": _nullable(lambda v, p: _int(v, p, 0, 64)),
    "lookback_blocks": _nullable(lambda v, p: _int(v, p, 0, 10_000)),
    "min_cacheable_tokens": lambda v, p: _int(v, p, 0),
    "min_cacheable_by_model": _int_map,
    "increment_tokens": lambda v, p: _int(v, p, 1, 100_000),
    "ttls": _ttls,
    "default_ttl": _str,
    "write_multipliers": _float_map,
    "read_multiplier": lambda v, p: _float(v, p, 0.0, 1.0),
    "prefix_order": _str_list,
    "cache_key_param": _nullable(_str),
    "routing_prefix_tokens": _nullable(lambda v, p: _int(v, p, 1)),
    "overflow_rpm": _nullable(lambda v, p: _int(v, p, 1, 1_000_000)),
    "caches_output": _bool,
    "tokenizer_public": _bool,
    "peak_hours_utc": _nullable(_hours),
}


def _sources(value: Any) -> dict[str, Source]:
    out = {}
    for sid, src in _obj(value, "sources").items():
        where = f"sources.{sid}"
        _check_keys(src, where, required=("url", "read"), allowed=("url", "read", "note"))
        url = _str(src["url"], f"{where}.url")
        if not url.startswith("https://"):
            raise _Bad(f"{where}.url", f"must be an https:// address, not {url!r}")
        note = src.get("note")
        out[sid] = Source(
            url, _date(src["read"], f"{where}.read"), None if note is None else _str(note, where)
        )
    if not out:
        raise _Bad("sources", "must name at least one source")
    return out


def _source_id(value: Any, path: str, sources: Mapping[str, Source]) -> str:
    sid = _str(value, path)
    if sid not in sources:
        raise _Bad(path, f"names no source (known: {', '.join(sorted(sources))})")
    return sid


@dataclass(frozen=True)
class _Rule:
    value: Any
    source: str
    note: str | None


def _rules(value: Any, sources: Mapping[str, Source]) -> dict[str, _Rule]:
    body = _obj(value, "rules")
    _check_keys(body, "rules", required=tuple(RULES), allowed=tuple(RULES))
    out = {}
    for key, check in RULES.items():
        where = f"rules.{key}"
        entry = body[key]
        _check_keys(entry, where, required=("value", "source"), allowed=("value", "source", "note"))
        note = entry.get("note")
        out[key] = _Rule(
            check(entry["value"], f"{where}.value"),
            _source_id(entry["source"], f"{where}.source", sources),
            None if note is None else _str(note, f"{where}.note"),
        )
    ttl_names = [t.name for t in out["ttls"].value]
    if out["default_ttl"].value not in ttl_names:
        raise _Bad("rules.default_ttl.value", f"must be one of the TTLs {ttl_names}")
    if set(out["write_multipliers"].value) != set(ttl_names):
        raise _Bad("rules.write_multipliers.value", f"must have one entry per TTL {ttl_names}")
    return out


# ---------------------------------------------------------------- prices

_MODEL_KEYS = (
    "match",
    "input",
    "cached_input",
    "output",
    "cache_write",
    "storage_per_mtok_hour",
    "off_peak",
    "source",
    "note",
)
_RATE_KEYS = ("input", "cached_input", "output")


def _model(
    key: str, entry: Any, rules: Mapping[str, _Rule], sources: Mapping[str, Source]
) -> ModelPrices:
    where = f"prices.models.{key}"
    _check_keys(entry, where, required=("match", *_RATE_KEYS, "source"), allowed=_MODEL_KEYS)
    rates = {k: _float(entry[k], f"{where}.{k}") for k in _RATE_KEYS}
    ttls = [t.name for t in rules["ttls"].value]
    given = _obj(entry.get("cache_write", {}), f"{where}.cache_write")
    for ttl in given:
        if ttl not in ttls:
            raise _Bad(f"{where}.cache_write.{ttl}", f"is no TTL of the provider {ttls}")
    multipliers = rules["write_multipliers"].value
    writes = {
        ttl: _float(given[ttl], f"{where}.cache_write.{ttl}")
        if ttl in given
        else rates["input"] * multipliers[ttl]
        for ttl in ttls
    }
    storage = entry.get("storage_per_mtok_hour")
    off_peak = entry.get("off_peak")
    if off_peak is not None:
        _check_keys(off_peak, f"{where}.off_peak", required=_RATE_KEYS, allowed=_RATE_KEYS)
        off_peak = Rates(**{k: _float(off_peak[k], f"{where}.off_peak.{k}") for k in _RATE_KEYS})
    note = entry.get("note")
    return ModelPrices(
        key=key,
        match=_prefixes(entry["match"], f"{where}.match"),
        cache_write=writes,
        storage_per_mtok_hour=None
        if storage is None
        else _float(storage, f"{where}.storage_per_mtok_hour"),
        off_peak=off_peak,
        source=_source_id(entry["source"], f"{where}.source", sources),
        note=None if note is None else _str(note, f"{where}.note"),
        **rates,
    )


def _prices(
    value: Any, rules: Mapping[str, _Rule], sources: Mapping[str, Source]
) -> tuple[tuple[ModelPrices, ...], str]:
    body = _obj(value, "prices")
    _check_keys(body, "prices", required=("fallback", "models"), allowed=("fallback", "models"))
    models = tuple(
        _model(key, entry, rules, sources)
        for key, entry in _obj(body["models"], "prices.models").items()
    )
    if not models:
        raise _Bad("prices.models", "must hold at least one model")
    seen: dict[str, str] = {}
    for entry in models:
        for prefix in entry.match:
            if prefix in seen:
                raise _Bad(
                    f"prices.models.{entry.key}.match",
                    f"prefix {prefix!r} is also a prefix of {seen[prefix]}",
                )
            seen[prefix] = entry.key
    fallback = _str(body["fallback"], "prices.fallback")
    if fallback not in {m.key for m in models}:
        raise _Bad("prices.fallback", f"names no model entry: {fallback!r}")
    return models, fallback


def _build(doc: dict[str, Any], files: tuple[str, ...]) -> ProviderRules:
    version = doc["schema_version"]
    if version != SCHEMA_VERSION:
        raise _Bad("schema_version", f"must be {SCHEMA_VERSION}, not {version!r}")
    name = _str(doc["provider"], "provider")
    sources = _sources(doc["sources"])
    rules = _rules(doc["rules"], sources)
    models, fallback = _prices(doc["prices"], rules, sources)
    values = {key: rule.value for key, rule in rules.items()}
    return ProviderRules(
        name=name,
        schema_version=version,
        as_of=_date(doc["as_of"], "as_of"),
        sources=sources,
        rule_sources={key: rule.source for key, rule in rules.items()},
        notes={key: rule.note for key, rule in rules.items() if rule.note},
        models=models,
        fallback_model=fallback,
        files=files,
        **values,
    )
