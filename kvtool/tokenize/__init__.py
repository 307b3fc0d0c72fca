"""Tokenize: chat template -> token ids -> block chain hashes.

``loader`` (tokenizers, offline; ``tiktoken_bpe``: OpenAI's bundled o200k_base), ``template``
(chat templates), ``segments`` (the segment cache), ``hashing`` (block identity, prefix trie),
``plans`` (prompts as pieces; rebuilding a stored request's ids), ``chains`` (the tokenize pass
and its stored decision).
"""

from kvtool.tokenize.chains import TokenizeReport, tokenize_requests, tokenizer_signature
from kvtool.tokenize.hashing import BASE_BLOCK, chain_blocks, root_seed
from kvtool.tokenize.loader import (
    DEFAULT_TOKENIZER,
    TokenizerBundle,
    default_tokenizer_path,
    load_tokenizer,
)
from kvtool.tokenize.plans import PromptIds, PromptTokens, request_token_ids

__all__ = [
    "BASE_BLOCK",
    "DEFAULT_TOKENIZER",
    "PromptIds",
    "PromptTokens",
    "TokenizeReport",
    "TokenizerBundle",
    "chain_blocks",
    "default_tokenizer_path",
    "load_tokenizer",
    "request_token_ids",
    "root_seed",
    "tokenize_requests",
    "tokenizer_signature",
]
