"""``kvtool simulate --provider``: the ``provider`` JSON object (docs/simulate.md, "Provider
JSON keys") on the shared conversation set written as OpenAI chat gateway records
(tests/conversations.py; the usage schema is OpenAI's: ``usage.prompt_tokens`` is the whole prompt,
``usage.prompt_tokens_details.cached_tokens`` the cached part). Prices are the shipped OpenAI data
(kvtool/providers/data/openai.json); the logged model is unknown to it, so the fallback entry
prices it."""

from __future__ import annotations

import orjson
import pytest
from conversations import MODEL, calls
from formats_check import reference_file
from test_docs import DOCS, documented_keys
from typer.testing import CliRunner

from kvtool.cli import app
from kvtool.providers import load_provider, model_prices


def _invoke(args: list[str]):
    return CliRunner().invoke(app, ["simulate", "--blocks", "300", *args])


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("provider")
    log = reference_file(tmp, calls())
    db = str(tmp / "kv.duckdb")
    r = _invoke([str(log), "--db", db, "--provider", "openai", "--json"])
    assert r.exit_code == 0, r.output
    plain = _invoke(["--db", db, "--json"])
    assert plain.exit_code == 0, plain.output
    return {"tmp": tmp, "log": log, "db": db, "out": orjson.loads(r.stdout),
            "plain": orjson.loads(plain.stdout)}  # fmt: skip


def test_provider_keys_are_the_documented_ones(run):
    out, plain = run["out"], run["plain"]
    assert "provider" not in plain
    assert set(out) - set(plain) == {"provider"}
    p = out["provider"]
    assert set(p) == documented_keys(DOCS / "simulate.md", "## Provider JSON keys")
    assert set(p["bill"]) == {"no_cache", "predicted", "observed"}
    assert p["shortfall"]["predicted"]["tokens"] == p["predicted_cached_tokens"]
    assert p["name"] == "openai" and p["ttl"] == "in_memory"
    assert p["fallback_models"] == [MODEL]


def test_observed_numbers_are_the_logged_ones(run):
    p = run["out"]["provider"]
    cs = calls()
    assert p["observed_cached_tokens"] == sum(c.cached_tokens for c in cs)
    assert p["observed_hit_rate"] == pytest.approx(
        sum(c.cached_tokens for c in cs) / sum(c.prompt_tokens for c in cs)
    )
    assert 0.0 <= p["request_agreement"] <= 1.0
    assert 0 <= p["predicted_cached_tokens"] <= run["out"]["prompt_tokens"]
    assert p["predicted_hit_rate"] == pytest.approx(
        p["predicted_cached_tokens"] / run["out"]["prompt_tokens"]
    )
    # OpenAI caches in 128-token increments from 1,024 tokens
    assert p["predicted_cached_tokens"] % 128 == 0


def test_bill_arithmetic_by_hand(run):
    """The fallback entry writes at the input price (no surcharge), so caching only changes the
    price of the cached tokens: input → cached input."""
    out, p = run["out"], run["out"]["provider"]
    prices = model_prices(load_provider("openai"), MODEL).prices
    assert prices.cache_write["in_memory"] == prices.input
    cs = calls()
    output = sum(c.output_tokens for c in cs)
    no_cache = (out["prompt_tokens"] * prices.input + output * prices.output) / 1e6
    saving = prices.input - prices.cached_input
    assert p["bill"]["no_cache"] == pytest.approx(no_cache, rel=1e-12)
    assert p["bill"]["predicted"] == pytest.approx(
        no_cache - p["predicted_cached_tokens"] * saving / 1e6, rel=1e-12
    )
    # observed: what the provider charged, at the logged prompt and cached tokens
    assert all(c.cached_tokens <= c.prompt_tokens for c in cs)
    charged = sum(
        c.prompt_tokens * prices.input - c.cached_tokens * saving + c.output_tokens * prices.output
        for c in cs
    )
    assert p["bill"]["observed"] == pytest.approx(charged / 1e6, rel=1e-12)
    assert p["bill"]["observed"] != pytest.approx(no_cache)


def test_terminal_prints_the_provider_table(run):
    r = _invoke(["--db", run["db"], "--provider", "openai"])
    assert r.exit_code == 0, r.output
    assert "provider openai" in r.stdout and "bill $" in r.stdout


def test_anthropic_caches_nothing_without_cache_control(run):
    # OpenAI chat logs carry no cache_control markers: Anthropic would have cached nothing
    # (tests/test_provider_anthropic.py has the breakpoint rules)
    r = _invoke(["--db", run["db"], "--provider", "anthropic", "--json"])
    assert r.exit_code == 0, r.output
    p = orjson.loads(r.stdout)["provider"]
    assert p["name"] == "anthropic" and p["predicted_cached_tokens"] == 0
    assert p["bill"]["predicted"] == pytest.approx(p["bill"]["no_cache"])


def test_bad_rules_file_is_one_line(run):
    bad = run["tmp"] / "rules.json"
    bad.write_text('{"rules": {"increment_tokens": {"value": "many"}}}')
    r = _invoke(["--db", run["db"], "--provider", "openai", "--rules", str(bad), "--json"])
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0]


def test_provider_options_need_provider_and_a_known_ttl(run):
    r = _invoke(["--db", run["db"], "--provider-ttl", "24h"])
    assert r.exit_code == 2 and "--provider-ttl needs provider" in r.output
    r = _invoke(["--db", run["db"], "--provider", "openai", "--provider-ttl", "1w"])
    assert r.exit_code == 2 and "--provider-ttl" in r.output
    r = _invoke(["--db", run["db"], "--provider", "openai", "--provider-ttl", "24h", "--json"])
    assert r.exit_code == 0, r.output
    assert orjson.loads(r.stdout)["provider"]["ttl"] == "24h"


def test_token_counts_say_whose_tokenizer_counted(run):
    """The default tokenizer is DeepSeek-V4's, not OpenAI's: approximate, naming o200k; with
    ``--tokenizer o200k`` the tokenizer is OpenAI's, but the logged model is not one tiktoken
    maps to o200k_base, so the counts stay approximate and say why."""
    counts = run["out"]["provider"]["token_counts"]
    assert counts["exact"] is False
    assert (counts["tokenizer"], counts["provider_tokenizer"]) == ("deepseek-v4", "o200k")
    assert "use --tokenizer o200k" in counts["expected_error"]
    db = str(run["tmp"] / "o200k.duckdb")
    r = _invoke([str(run["log"]), "--db", db, "--provider", "openai", "--tokenizer", "o200k",
                 "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    counts = orjson.loads(r.stdout)["provider"]["token_counts"]
    assert counts["exact"] is False and counts["tokenizer"] == "o200k"
    assert "not confirmed for " + MODEL.lower() in counts["expected_error"]
    text = _invoke(["--db", run["db"], "--provider", "openai"])
    assert "token counts: approximate: counted with deepseek-v4" in " ".join(text.stdout.split())


def test_an_unknown_kv_shape_says_the_provider_does_not_need_it(run):
    """The logged model (``acme-chat-1``) has no KV shape, so the default ``--tier-gb hbm=80``
    cannot be sized: one line, exit 2, saying that any model or --blocks will do."""
    r = CliRunner().invoke(app, ["simulate", "--db", run["db"], "--provider", "openai"])
    assert r.exit_code == 2
    message = " ".join(r.output.split())
    assert "KV size per token is unknown" in message
    assert "the provider's figures do not depend on the self-hosted tiers" in message
