"""Every input format by name, and detection: which format a file's first records have.

Detection votes over a sample of a file's parsed records: each record votes for the
highest-priority format it looks like; a format's ``absorbs`` take the votes of the formats it
refines; the format with most votes wins. ``check_choice`` then refuses a choice the sample
contradicts with one line ("looks like X; use --format X") instead of one reject per line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kvtool.errors import InputError, OptionError
from kvtool.ingest.formats import (
    anthropic,
    bailian,
    batch,
    bedrock,
    helicone,
    kvcache_tester,
    langfuse,
    litellm,
    mooncake,
    openai,
    otel,
    ragpulse,
    responses,
)
from kvtool.ingest.formats.base import HASH_BLOCK_LIMIT, Format, FormatOptions, Normalized, Skip

_MODULES = (
    openai,
    batch,
    anthropic,
    responses,
    litellm,
    langfuse,
    otel,
    helicone,
    bedrock,
    mooncake,
    ragpulse,
    kvcache_tester,
    bailian,
)
REGISTRY: dict[str, Format] = {f.name: f for m in _MODULES for f in m.FORMATS}
FORMATS = tuple(REGISTRY)
DETECT_SHARE = 0.5  # a choice is refused when fewer than this share of sampled records fit it


def check_ingest_options(fmt: str | None, hash_block_size: int) -> None:
    """``OptionError`` unless ``fmt`` is None or one of ``FORMATS`` and ``0 < hash_block_size <
    HASH_BLOCK_LIMIT`` (the store keeps it as a 32-bit integer)."""
    if fmt is not None and fmt not in REGISTRY:
        raise OptionError("fmt", f"{fmt!r} is not one of {', '.join(FORMATS)}")
    if hash_block_size <= 0:
        raise OptionError("hash_block_size", f"must be positive, got {hash_block_size}")
    if hash_block_size >= HASH_BLOCK_LIMIT:
        raise OptionError("hash_block_size", f"must be below 2**31, got {hash_block_size}")


def normalizer(
    fmt: str, hash_block_size: int, source: Path | None = None
) -> Callable[[dict], Normalized]:
    """The normalizer of one of ``FORMATS`` for the file ``source`` (None: a stream)."""
    return REGISTRY[fmt].make(FormatOptions(hash_block_size=hash_block_size, source=source))


def _safe_looks_like(f: Format, rec: dict) -> bool:
    try:
        return bool(f.looks_like(rec))
    except (TypeError, AttributeError, ValueError, KeyError):  # a hostile shape: not this format
        return False


def detect_record(rec: object) -> str | None:
    """The highest-priority format one parsed record looks like, or None."""
    if not isinstance(rec, dict):
        return None
    fits = [f for f in REGISTRY.values() if _safe_looks_like(f, rec)]
    if not fits:
        return None
    return max(fits, key=lambda f: f.priority).name


def detect_format(records: list[object]) -> str | None:
    """The file's format from a sample of its parsed records (see the module docstring)."""
    votes: dict[str, int] = {}
    for rec in records:
        guess = detect_record(rec)
        if guess:
            votes[guess] = votes.get(guess, 0) + 1
    if not votes:
        return None
    for name in list(votes):
        for absorbed in REGISTRY[name].absorbs:
            if absorbed in votes and name in votes:
                votes[name] += votes.pop(absorbed)
    return max(votes, key=lambda k: (votes[k], REGISTRY[k].priority))


def _fit_share(fmt: str, records: list[object], hash_block_size: int, source: Path | None) -> float:
    """The share of ``records`` that ``fmt`` normalizes (or skips) without an error."""
    f = REGISTRY[fmt]
    normalize = f.make(FormatOptions(hash_block_size=hash_block_size, source=source))
    ok = total = 0
    for rec in records:
        if not isinstance(rec, dict):
            total += 1
            continue
        try:
            subs = list(f.records(rec)) if f.records else [rec]
        except InputError:
            total += 1
            continue
        for sub in subs or [None]:
            total += 1
            if sub is None:
                ok += 1  # a batch with no records: nothing wrong with it
                continue
            try:
                normalize(sub)
                ok += 1
            except Skip:
                ok += 1
            except InputError:
                pass
    return ok / total if total else 1.0


def check_choice(
    name: str,
    fmt: str,
    records: list[object],
    hash_block_size: int,
    source: Path | None = None,
) -> None:
    """``InputError`` (one line) when most sampled ``records`` fail ``fmt`` but another format
    reads them: "looks like X, not fmt; use --format X"."""
    if not records or _fit_share(fmt, records, hash_block_size, source) >= DETECT_SHARE:
        return
    other = detect_format(records)
    if (
        other is not None
        and other != fmt
        and _fit_share(other, records, hash_block_size, source) >= DETECT_SHARE
    ):
        raise InputError(f"{name}: looks like {other}, not {fmt}; use --format {other}")
