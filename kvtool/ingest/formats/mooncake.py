"""Hash-only traces (Mooncake): per request the block hash ids, prompt length and a time in ms.

Schema: the Mooncake FAST'25 traces (``timestamp`` ms, ``input_length``, ``output_length``,
``hash_ids``), as aiperf and vLLM's ``timed_trace`` read them. A line lists one id per block,
``⌈n/B⌉`` of them (the last id covers the partial block, Mooncake's convention) or ``⌊n/B⌋``
(full blocks only, as some traces list them); both are accepted. The ids are stored as given;
the workload keys each block by its whole path of ids (``kvtool.traffic.workload``).
"""

from __future__ import annotations

from collections.abc import Callable

from kvtool.errors import InputError
from kvtool.ingest.formats.base import (
    INT64_LIMIT,
    SESSION_KEYS,
    TENANT_KEYS,
    TS_MAX,
    TS_WINDOW,
    Format,
    Normalized,
    first,
    int_or_none,
    shown,
    str_or_none,
)


def check_block_ids(
    ids: object, n: int, block_size: int, what: str = "hash_ids", length: str = "input_length"
) -> list[int]:
    """``ids`` as a list of 64-bit integers, one per ``block_size``-token block of an
    ``n``-token prompt: ``⌈n/B⌉`` of them or ``⌊n/B⌋`` (full blocks only); ``InputError``
    naming ``what``, the ``length`` field and both counts otherwise."""
    if not isinstance(ids, list) or not all(
        isinstance(h, int) and not isinstance(h, bool) for h in ids
    ):
        raise InputError(f"{what} must be a list of integers")
    full, every = n // block_size, -(-n // block_size)
    if len(ids) not in (full, every):
        needs = str(every) if full == every else f"{every} (or {full}, full blocks only)"
        raise InputError(
            f"{what} has {len(ids)} ids, {length} {n} at block size {block_size} needs {needs}"
        )
    if any(h < -(2**63) or h >= 2**63 for h in ids):
        raise InputError(f"{what} must fit in 64 bits")
    return ids


def positive_length(n: object, what: str) -> int:
    """``n`` as a prompt length ``0 < n < 2**63``, else ``InputError`` naming ``what``."""
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise InputError(f"{what} must be a positive integer")
    if n >= INT64_LIMIT:
        raise InputError(f"{what} must be a positive integer below 2**63, got {n}")
    return n


def make_mooncake(block_size: int) -> Callable[[dict], Normalized]:
    """Normalizer for hash traces with ``block_size``-token blocks (Mooncake: 512)."""

    def normalize_mooncake(rec: dict) -> Normalized:
        n = positive_length(rec.get("input_length"), "input_length")
        ids = check_block_ids(rec.get("hash_ids"), n, block_size)
        ts = rec.get("timestamp")
        if isinstance(ts, bool) or not isinstance(ts, int | float) or not ts >= 0:
            raise InputError("timestamp must be a number of milliseconds >= 0")
        if not ts / 1000.0 < TS_MAX:  # Mooncake times are ms, never unit-detected
            raise InputError(f"timestamp {shown(ts)} ms is outside {TS_WINDOW}")
        return Normalized(
            kind="hash",
            request_id=str_or_none(rec.get("request_id") or rec.get("id"), "id"),
            ts=float(ts) / 1000.0,
            session_id=str_or_none(first((rec,), SESSION_KEYS), "session id"),
            tenant=str_or_none(first((rec,), TENANT_KEYS), "tenant"),
            model=str_or_none(rec.get("model"), "model"),
            hash_ids=ids,
            input_length=n,
            output_tokens=int_or_none(rec.get("output_length"), "output_length"),
        )

    return normalize_mooncake


FORMATS = (
    Format(
        "mooncake",
        lambda options: make_mooncake(options.hash_block_size),
        lambda rec: "hash_ids" in rec and "input_length" in rec,
        priority=20,
        summary="Mooncake hash traces (block hash ids, input length, time in ms)",
        hash_trace=True,
    ),
)
