"""Whether a provider's prompt-token counts in kvtool are exact or approximate, and by how much.

A count is exact only when kvtool rendered and tokenized the prompts as the provider bills them:
the provider's tokenizer and chat format are public (``ProviderRules.tokenizer_public``), kvtool
bundles both, and the workload was tokenized with them. Today that is OpenAI with ``o200k`` (for
the model families tiktoken maps to ``o200k_base``). Every other pairing is approximate, and
``TokenCounts.expected_error`` says by about how much, from the measurements in
docs/providers.md ("Token counts"). Logged model names quoted in it are cut short; a caller
escapes them like any logged text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kvtool.providers.model import ProviderRules, normalize_model

# kvtool's builtin tokenizer that is each provider's own (kvtool.tokenize.loader)
PROVIDER_TOKENIZERS = {"openai": "o200k", "deepseek": "deepseek-v4"}
# logged model names tiktoken 0.14 maps to o200k_base (tiktoken/model.py)
O200K_MODEL_PREFIXES = (
    "gpt-4o",
    "chatgpt-4o",
    "gpt-4.1",
    "gpt-4.5",
    "gpt-5",
    "o1",
    "o3",
    "o4-mini",
    "ft:gpt-4o",
)

NAMES_SHOWN, NAME_CHARS = 3, 40  # logged model names quoted in expected_error, at most
EXACT_OPENAI = (
    "exact tokenizer (o200k_base); chat format within 1%: the OpenAI Cookbook's messages give "
    "the API's 124 prompt tokens exactly, its tool example 102 against 101; a tool call with its "
    "result is about 4 tokens short (OpenAI's tool rendering is not published)"
)
DEEPSEEK_FORMAT = (
    "approximate: DeepSeek's own tokenizer, but kvtool's default template, not DeepSeek-V4's "
    "chat encoding: about 1 token fewer per assistant turn on plain chats and about 14% fewer "
    "on agent traffic with tools (the demo trace)"
)
NOT_PUBLIC = (
    "approximate: {provider}'s tokenizer is not public; counted with {tokenizer}. Two public "
    "tokenizers (DeepSeek-V4, o200k) differ by 5% on the demo trace's message texts and 14% on "
    "its rendered prompts, an indication of the error, not a measurement of {provider}'s"
)
GEMMA_TEXT = (
    "approximate: {tokenizer} is the text tokenizer Google's SDK counts Gemini with (Gemma 3 for "
    "Gemini 2.0 to 3.0, Gemma 4 for 3.1 and 3.5), but how the API counts roles, turns and tools "
    "is not published"
)
OTHER_TOKENIZER = (
    "approximate: counted with {tokenizer}, not {provider}'s own {own} (use --tokenizer {own}); "
    "DeepSeek-V4 and o200k counts differ by 5% on the demo trace's message texts and 14% on "
    "its rendered prompts"
)
UNCONFIRMED_MODEL = (
    "approximate: o200k_base is not confirmed for {models}; for the families tiktoken maps to "
    "it (GPT-4o to GPT-5.x, o1/o3/o4-mini) the count is within 1%"
)


@dataclass(frozen=True)
class TokenCounts:
    """How a provider's prompt-token counts were made. ``exact``: within 1% of the provider's
    bill (the provider's public tokenizer and chat format); ``tokenizer``: the kvtool tokenizer
    the workload was tokenized with; ``provider_tokenizer``: kvtool's name for the provider's
    own tokenizer (None when not public or not bundled); ``expected_error``: one line."""

    exact: bool
    tokenizer: str
    provider_tokenizer: str | None
    expected_error: str

    def to_json(self) -> dict:
        return {
            "exact": self.exact,
            "tokenizer": self.tokenizer,
            "provider_tokenizer": self.provider_tokenizer,
            "expected_error": self.expected_error,
        }


def token_counts(
    rules: ProviderRules, tokenizer_name: str, models: Iterable[str] = ()
) -> TokenCounts:
    """The label of ``rules.name``'s counts for a workload tokenized with ``tokenizer_name``
    (a ``TokenizerBundle.name``) whose logged model names are ``models`` (for OpenAI, a model
    outside the o200k families makes the count approximate)."""
    own = PROVIDER_TOKENIZERS.get(rules.name) if rules.tokenizer_public else None
    if rules.name == "gemini" and tokenizer_name.lower().startswith("gemma"):
        return TokenCounts(False, tokenizer_name, None, GEMMA_TEXT.format(tokenizer=tokenizer_name))
    if own is None:
        text = NOT_PUBLIC.format(provider=rules.name, tokenizer=tokenizer_name)
        return TokenCounts(False, tokenizer_name, None, text)
    if tokenizer_name != own:
        text = OTHER_TOKENIZER.format(tokenizer=tokenizer_name, provider=rules.name, own=own)
        return TokenCounts(False, tokenizer_name, own, text)
    if rules.name == "deepseek":
        return TokenCounts(False, tokenizer_name, own, DEEPSEEK_FORMAT)
    names = sorted({normalize_model(m) for m in models if m})
    unconfirmed = [m for m in names if not m.startswith(O200K_MODEL_PREFIXES)]
    if unconfirmed:
        shown = ", ".join(m[:NAME_CHARS] for m in unconfirmed[:NAMES_SHOWN])
        more = len(unconfirmed) - NAMES_SHOWN
        text = UNCONFIRMED_MODEL.format(models=shown + (f" and {more} more" if more > 0 else ""))
        return TokenCounts(False, tokenizer_name, own, text)
    return TokenCounts(True, tokenizer_name, own, EXACT_OPENAI)
