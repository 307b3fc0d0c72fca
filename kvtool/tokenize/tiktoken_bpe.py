"""OpenAI's ``o200k_base`` vocabulary (tiktoken's format) as a Hugging Face ``tokenizers`` BPE.

The vocabulary ships in ``data/o200k_base.tiktoken.gz``: OpenAI's published rank file, gzipped
(one ``base64(token bytes) rank`` line per token); decompressed, its SHA-256 is the one tiktoken
checks (``O200K_SHA256``). tiktoken encodes a pre-token by merging, again and again, the
adjacent pair whose concatenation has the lowest rank; a ``tokenizers`` BPE merges by the
priority of its merge list. The two agree when each token's merge is the last merge tiktoken's
own procedure makes on the token's bytes with the ranks below it (``last_merge``), listed in
rank order, and a pre-token that is itself a token is taken whole (``ignore_merges``).
Computing those merges takes seconds, so they ship too, in ``data/o200k_base.splits.gz``
(``merge_splits``: one byte per token of two or more bytes, in rank order, the length of the
merge's left part); a test recomputes them.

The chat-format markers ``<|start|>``, ``<|message|>`` and ``<|end|>`` are added as special
tokens with the ids tiktoken's ``o200k_harmony`` gives them, so a rendered prompt splits at
them (kvtool's OpenAI chat format, ``kvtool.tokenize.template``).
"""

from __future__ import annotations

import base64
import gzip
from functools import cache
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

O200K_PATH = Path(__file__).parent / "data" / "o200k_base.tiktoken.gz"
O200K_SPLITS_PATH = Path(__file__).parent / "data" / "o200k_base.splits.gz"
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
# tiktoken's o200k_base split pattern (tiktoken_ext/openai_public.py)
O200K_PATTERN = "|".join(
    [
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"\p{N}{1,3}",
        r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
        r"\s*[\r\n]+",
        r"\s+(?!\S)",
        r"\s+",
    ]
)
# the chat-format markers and their ids in tiktoken's o200k_harmony
CHAT_MARKERS = {"<|start|>": 200006, "<|end|>": 200007, "<|message|>": 200008}


def _byte_chars() -> list[str]:
    """The printable character that byte-level BPE uses for each byte value (GPT-2's table)."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def read_ranks(path: Path) -> dict[bytes, int]:
    """The token bytes -> rank table of a gzipped tiktoken rank file."""
    ranks: dict[bytes, int] = {}
    with gzip.open(path, "rb") as fh:
        for line in fh:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def last_merge(token: bytes, rank: int, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The two parts tiktoken's merge procedure joins last when it encodes ``token`` with the
    ranks below ``rank`` (lowest-ranked adjacent pair first, leftmost on a tie)."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best, at = rank, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1], rank)
            if r < best:
                best, at = r, i
        if at < 0:
            break
        parts[at : at + 2] = [parts[at] + parts[at + 1]]
    if len(parts) != 2:
        raise ValueError(f"token of rank {rank} is not a merge of two lower-ranked tokens")
    return parts[0], parts[1]


def merge_splits(ranks: dict[bytes, int]) -> bytes:
    """For each token of two or more bytes, in rank order, the byte length of the left part of
    its ``last_merge`` (tokens are at most 255 bytes long)."""
    out = bytearray()
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1:
            out.append(len(last_merge(token, rank, ranks)[0]))
    return bytes(out)


def bpe_tokenizer(
    ranks: dict[bytes, int], splits: bytes, pattern: str, specials: dict[str, int]
) -> Tokenizer:
    """A byte-level ``tokenizers`` BPE that encodes as tiktoken does with ``ranks`` (merged as
    ``splits``, from ``merge_splits``) and the split ``pattern``; ``specials`` become special
    tokens with the given ids. ``ValueError`` when ``splits`` does not fit ``ranks``."""
    chars = _byte_chars()

    def text(token: bytes) -> str:
        return "".join(chars[b] for b in token)

    vocab = {text(t): r for t, r in ranks.items()}
    multi = [t for t, _ in sorted(ranks.items(), key=lambda item: item[1]) if len(t) > 1]
    if len(multi) != len(splits):
        raise ValueError(f"{len(splits)} merge splits for {len(multi)} merged tokens")
    merges = [(text(t[:at]), text(t[at:])) for t, at in zip(multi, splits, strict=True)]
    vocab.update(specials)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return tok


def o200k_source() -> bytes:
    """Everything ``o200k_tokenizer`` is built from (a bundle's signature hashes it)."""
    parts = [O200K_PATH.read_bytes(), O200K_SPLITS_PATH.read_bytes(), O200K_PATTERN.encode()]
    return b"".join(parts) + repr(sorted(CHAT_MARKERS.items())).encode()


@cache
def o200k_tokenizer() -> Tokenizer:
    """``o200k_base`` with the chat markers (built once per process, about a second)."""
    splits = gzip.decompress(O200K_SPLITS_PATH.read_bytes())
    return bpe_tokenizer(read_ranks(O200K_PATH), splits, O200K_PATTERN, CHAT_MARKERS)
