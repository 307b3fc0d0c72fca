"""Whether a provider's prompt-token counts in kvtool are exact or approximate, and by how much.

A count is exact only when kvtool rendered and tokenized the prompts as the provider bills them:
the provider's tokenizer and chat format are public (``ProviderRules.tokenizer_public``), kvtool
bundles both, and the workload was tokenized with them. Today that is OpenAI with ``o200k`` (for
the model families tiktoken maps to ``o200k_base``) and DeepSeek with ``deepseek-v4-api`` (for
DeepSeek-V4 models; V4.1's encoding differs slightly). Every other pairing is approximate, and
``TokenCounts.expected_error`` says by about how much, from the measurements in
docs/providers.md ("Token counts"). Logged model names quoted in it are cut short; a caller
escapes them like any logged text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kvtool.providers.model import ProviderRules, normalize_model

# kvtool's builtin tokenizer that is each provider's own (kvtool.tokenize.loader)
PROVIDER_TOKENIZERS = {"openai": "o200k", "deepseek": "deepseek-v4-api"}
DEEPSEEK_VOCABULARY = "deepseek-v4"  # the same vocabulary with kvtool's default template
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
# logged model names DeepSeek serves with a DeepSeek-V4 model (the rest of its API, deepseek-flash
# and the names it serves, runs DeepSeek-V4.1): providers/data/deepseek.json
DEEPSEEK_V4_PREFIXES = ("deepseek-v4-pro",)

NAMES_SHOWN, NAME_CHARS = 3, 40  # logged model names quoted in expected_error, at most
EXACT_OPENAI = (
    "exact tokenizer (o200k_base); chat format within 1%: the OpenAI Cookbook's messages give "
    "the API's 124 prompt tokens exactly, its tool example 102 against 101; a tool call with its "
    "result is about 4 tokens short (OpenAI's tool rendering is not published)"
)
DEEPSEEK_DEFAULT_TEMPLATE = (
    "approximate: DeepSeek-V4's tokenizer, but kvtool's default template, not DeepSeek's chat "
    "encoding (use --tokenizer deepseek-v4-api): about 1 token fewer per assistant turn on plain "
    "chats and 14% fewer on agent traffic with tools (the demo trace)"
)
EXACT_DEEPSEEK = (
    "exact tokenizer and chat format: DeepSeek-V4's tokenizer and encoding (chat mode); the same "
    "count as DeepSeek's published encoder on every request of four test traces"
)
DEEPSEEK_V41 = (
    "approximate: counted in DeepSeek-V4's encoding, which only deepseek-v4-pro is served with; "
    "{models} bill as DeepSeek-V4.1 (deepseek-flash), whose encoding adds a system token and "
    "renames the tool-call tags: about 1% more than V4.1's on agent traffic with tools, 0.2% "
    "fewer on chats"
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
    if rules.name == "deepseek" and tokenizer_name == DEEPSEEK_VOCABULARY:
        return TokenCounts(False, tokenizer_name, own, DEEPSEEK_DEFAULT_TEMPLATE)
    if tokenizer_name != own:
        text = OTHER_TOKENIZER.format(tokenizer=tokenizer_name, provider=rules.name, own=own)
        return TokenCounts(False, tokenizer_name, own, text)
    names = sorted({normalize_model(m) for m in models if m})
    prefixes = DEEPSEEK_V4_PREFIXES if rules.name == "deepseek" else O200K_MODEL_PREFIXES
    unconfirmed = [m for m in names if not m.startswith(prefixes)]
    if unconfirmed or (rules.name == "deepseek" and not names):
        shown = ", ".join(m[:NAME_CHARS] for m in unconfirmed[:NAMES_SHOWN])
        more = len(unconfirmed) - NAMES_SHOWN
        shown += f" and {more} more" if more > 0 else ""
        if rules.name == "deepseek":
            text = DEEPSEEK_V41.format(models=shown or "unnamed models")
        else:
            text = UNCONFIRMED_MODEL.format(models=shown)
        return TokenCounts(False, tokenizer_name, own, text)
    exact = EXACT_DEEPSEEK if rules.name == "deepseek" else EXACT_OPENAI
    return TokenCounts(True, tokenizer_name, own, exact)
