"""Volatile spans in prompts (timestamps and ids): the implementation lives in
``kvtool.textscan.volatile``, below the tokenize stage, because a redacted ingest needs the same
spans while the text is still in memory. This module keeps analyze's public names."""

from kvtool.textscan.volatile import (
    Span,
    VolatileChange,
    hazards,
    id_spans,
    timestamp_spans,
    volatile_change,
)

__all__ = ["Span", "VolatileChange", "hazards", "id_spans", "timestamp_spans", "volatile_change"]
