"""Exact token ids for many texts, tokenizing each distinct segment once.

A text is split at added tokens (what HF ``tokenizers`` itself does before normalization and
pre-tokenization), so no BPE merge crosses a split point: the ids of a text are the ids of its
segments concatenated. Segments are cached by content, so history resent every turn is tokenized
once. ``verify`` compares against one-call tokenization; callers check a sample at run time.
"""

from __future__ import annotations

import re

import numpy as np
from tokenizers import Tokenizer

TOKEN_DTYPE = np.uint32


def _trie_regex(words: list[str]) -> str:
    """A regex matching any of ``words``, longest first (leftmost-longest like HF tokenizers)."""
    trie: dict = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict) -> str:
        ends = "" in node
        alts = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        return f"(?:{body})?" if ends else body

    return build(trie)


BATCH_CHARS = 1 << 20  # characters of text per tokenizer call


class SegmentEncoder:
    """Token ids of texts; the segment cache lives as long as the encoder, or until ``forget``."""

    def __init__(self, tokenizer: Tokenizer, added_tokens: tuple[str, ...]):
        self.tokenizer = tokenizer
        self.added_ids = {t: tokenizer.token_to_id(t) for t in added_tokens}
        self.added_ids = {t: i for t, i in self.added_ids.items() if i is not None}
        words = sorted(self.added_ids, key=len, reverse=True)
        self.pattern = re.compile(f"({_trie_regex(words)})") if words else None
        self.first_chars = {w[0] for w in words}
        self.cache: dict[str, np.ndarray] = {}
        self.forget()
        self.segments_encoded = 0
        self.tokens_encoded = 0
        self._batch = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)

    def forget(self) -> None:
        """Empty the segment cache (a pass that moves on to requests that share no text with
        the earlier ones frees it); added tokens stay: a split never yields text equal to
        one."""
        self.cache = {t: np.array([i], TOKEN_DTYPE) for t, i in self.added_ids.items()}
        self.cached_tokens = 0  # token ids the cache holds for segments (added tokens aside)

    @property
    def splits(self) -> bool:
        """Whether texts split at all (a tokenizer without added tokens encodes whole texts)."""
        return self.pattern is not None

    def split(self, text: str) -> list[str]:
        """Text segments and added tokens in order; empty strings dropped."""
        if self.pattern is None or not any(c in text for c in self.first_chars):
            return [text] if text else []
        return [s for s in self.pattern.split(text) if s]

    def encode_many(self, texts: list[str]) -> list[np.ndarray]:
        """Exact ids of each text (``add_special_tokens=False``); new segments in one batch."""
        split = [self.split(t) for t in texts]
        new = {s for segs in split for s in segs if s not in self.cache}
        self.encode_segments(list(new))
        return [self._compose(segs) for segs in split]

    def encode_segments(self, segments: list[str]) -> None:
        """Encode and cache ``segments``, in calls of about ``BATCH_CHARS`` characters: the
        tokenizer's per-token records of one call (offsets, token strings, masks) are many
        times the ids kept, so one call over a large batch would set the peak memory."""
        start = 0
        while start < len(segments):
            stop, chars = start, 0
            while stop < len(segments) and (stop == start or chars < BATCH_CHARS):
                chars += len(segments[stop])
                stop += 1
            batch = segments[start:stop]
            for seg, enc in zip(batch, self._batch(batch, add_special_tokens=False), strict=True):
                ids = np.asarray(enc.ids, dtype=TOKEN_DTYPE)
                self.cache[seg] = ids
                self.cached_tokens += len(ids)
                self.tokens_encoded += len(ids)
            start = stop
        self.segments_encoded += len(segments)

    def _compose(self, segs: list[str]) -> np.ndarray:
        parts = [self.cache[s] for s in segs]
        if not parts:
            return np.zeros(0, TOKEN_DTYPE)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def encode_whole(self, text: str, add_special_tokens: bool = False) -> np.ndarray:
        """One-call tokenization (the reference the segmented path must equal); the batch call
        gives the same ids as ``encode`` without computing offsets."""
        ids = self._batch([text], add_special_tokens=add_special_tokens)[0].ids
        self.tokens_encoded += len(ids)
        return np.asarray(ids, dtype=TOKEN_DTYPE)

    def verify(self, text: str, ids: np.ndarray) -> bool:
        return np.array_equal(self.encode_whole(text), ids)
