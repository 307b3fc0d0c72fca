"""Whitespace folding: the text a rendering change (whitespace, special tokens) leaves equal."""

from __future__ import annotations

import functools
import re

__all__ = ["fold_text"]


def fold_text(text: str, specials: tuple[str, ...] = ()) -> str:
    """``text`` with special tokens as spaces and whitespace runs collapsed to one space."""
    pattern = _specials_pattern(specials)
    if pattern is not None:
        text = pattern.sub(" ", text)
    return " ".join(text.split())


@functools.lru_cache(maxsize=8)
def _specials_pattern(specials: tuple[str, ...]) -> re.Pattern[str] | None:
    """One alternation of the special tokens, longest first (so a token that contains another
    is replaced whole, as one replace per token in that order would)."""
    tokens = sorted({t for t in specials if t}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, tokens))) if tokens else None
