"""Tokenize: chat template -> token ids -> block chain hashes (see ``chains``)."""

from kvtool.tokenize.chains import (
    BASE_BLOCK,
    TokenizeReport,
    request_token_ids,
    tokenize_requests,
    tokenizer_signature,
)
from kvtool.tokenize.loader import TokenizerBundle, TokenizerNotFound, load_tokenizer

__all__ = [
    "BASE_BLOCK",
    "TokenizeReport",
    "TokenizerBundle",
    "TokenizerNotFound",
    "load_tokenizer",
    "request_token_ids",
    "tokenize_requests",
    "tokenizer_signature",
]
