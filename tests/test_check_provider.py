"""`kvtool check --provider NAME`: only the tokens a hosted provider would have cached count, the
loss is priced in dollars, and a fixture below the provider's minimum passes with a note.

Fixtures are real files in tmp, tokenized by the default (DeepSeek-V4) tokenizer. The expected
token positions are computed here with the same tokenizer (``PromptTokens``, the ids the gate
compares), and pinned as literal numbers; the provider's arithmetic is done by hand below."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

import kvtool
from kvtool.check import Policy, ProviderGate
from kvtool.check.sarif import sarif_log
from kvtool.cli import app
from kvtool.ingest import ingest_file
from kvtool.providers import load_provider
from kvtool.store import open_db
from kvtool.store.requests import load_contents, request_rows
from kvtool.tokenize import PromptIds, PromptTokens, load_tokenizer, tokenize_requests

GPT = "gpt-5.5"  # openai.json: input $5.00, cached input $0.50 per million tokens
SONNET = "claude-sonnet-4-5"  # anthropic.json: claude-sonnet-4 entry, $3.00 / $0.30; min 1,024


@pytest.fixture(scope="module")
def bundle():
    return load_tokenizer(None)


def _run(*args: object):
    return CliRunner().invoke(app, ["check", *map(str, args)])


def _rules(n: int, edit: int | None = None) -> str:
    """A system prompt of n numbered rules (about 12 tokens each); rule ``edit`` reworded."""
    return "\n".join(
        f"Rule {i}: answer {'briefly' if i == edit else 'politely'} and cite source {i}."
        for i in range(n)
    )


def _chat(path: Path, system: str, user: str = "Where is my order?", model: str | None = GPT):
    body: dict = {
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]
    }
    if model is not None:
        body["model"] = model
    path.write_bytes(orjson.dumps({"id": "f", "request": body}) + b"\n")
    return path


def _anthropic(path: Path, system: str, user: str, marks: tuple[str, ...]) -> Path:
    """An Anthropic Messages fixture; ``marks`` names the blocks with a cache_control marker
    ('system', 'user') or 'auto' (top-level automatic caching)."""
    mark = {"type": "ephemeral"}
    sys_block = {
        "type": "text",
        "text": system,
        **({"cache_control": mark} if "system" in marks else {}),
    }
    user_block = {
        "type": "text",
        "text": user,
        **({"cache_control": mark} if "user" in marks else {}),
    }
    body: dict = {
        "model": SONNET,
        "max_tokens": 256,
        "system": [sys_block],
        "messages": [{"role": "user", "content": [user_block]}],
    }
    if "auto" in marks:
        body["cache_control"] = mark
    path.write_bytes(orjson.dumps({"id": "f", "request": body}) + b"\n")
    return path


def _ids(path: Path, bundle) -> PromptIds:
    """The prompt ids of the file's one fixture, as a tokenize pass computes them."""
    with open_db(":memory:") as con:
        ingest_file(con, path)
        tok = tokenize_requests(con, bundle)
        (row,) = request_rows(con, tok.signature)
        bodies = load_contents(con, row.prompt.content_keys())
        return PromptTokens(bundle, tok.mode).get(row.prompt, bodies)


def _first_difference(a: PromptIds, b: PromptIds) -> int:
    m = min(len(a.ids), len(b.ids))
    return int(np.flatnonzero(a.ids[:m] != b.ids[:m])[0])


def _json(out) -> dict:
    return json.loads(out.stdout)


def test_a_300_token_pair_below_every_minimum_passes_with_a_note(tmp_path, bundle):
    base = _chat(tmp_path / "base.jsonl", _rules(25))
    cand = _chat(tmp_path / "cand.jsonl", _rules(25, edit=5))
    b, c = _ids(base, bundle), _ids(cand, bundle)
    pos = _first_difference(b, c)
    assert (len(b.ids), b.end, pos) == (308, 307, 66)
    # kvtool's own cache: 16 × (min(307 // 16, (308 − 1) // 16) − 66 // 16) = 16 × (19 − 4) = 240
    plain = _run(cand, "--baseline", base, "--format", "json")
    assert plain.exit_code == 1, plain.output
    (finding,) = _json(plain)["findings"]
    assert finding["tokens_lost"] == 240 and finding["provider"] is None
    assert _json(plain)["provider"] is None
    # OpenAI caches nothing under 1,024 prompt tokens: the pair passes, with a note saying so
    out = _run(cand, "--baseline", base, "--provider", "openai", "--format", "json")
    assert out.exit_code == 0, out.output
    result = _json(out)
    assert result["findings"] == []
    note = (
        f"{cand}:1 'f': 307 cacheable tokens, below openai's minimum of 1,024 tokens "
        f"for {GPT}: nothing cached, nothing lost"
    )
    assert result["notes"] == [note]
    assert result["provider"] == {
        "name": "openai",
        "as_of": load_provider("openai").as_of,
        "model": None,
        "calls_per_month": None,
        "pairs": 0,
        "tokens_lost": 0,
        "usd_per_call": 0,
        "usd_per_month": None,
        "price_guess": False,
    }
    text = _run(cand, "--baseline", base, "--provider", "openai")
    assert text.exit_code == 0 and "PASS" in text.stdout
    assert "below openai's minimum of 1,024 tokens" in " ".join(text.stdout.split())
    sarif = _json(_run(cand, "--baseline", base, "--provider", "openai", "--format", "sarif"))
    (run,) = sarif["runs"]
    assert run["results"] == []
    assert run["invocations"][0]["toolExecutionNotifications"] == [
        {"level": "note", "message": {"text": note}}
    ]
    # DeepSeek's minimum is 64 tokens: it caches this prompt, so the edit costs
    # floor64(307) − floor64(66) = 256 − 64 = 192 tokens
    # (the fixtures name gpt-5.5, so --model is not used and the price is DeepSeek's fallback)
    ds = _run(cand, "--baseline", base, "--provider", "deepseek", "--model", "deepseek-chat")
    text = " ".join(ds.stdout.split())
    assert ds.exit_code == 1 and "192 cached tokens lost at deepseek" in text
    assert "price is a guess: gpt-5.5 is not in deepseek's price list" in text


@pytest.fixture(scope="module")
def long_pair(tmp_path_factory, bundle) -> tuple[Path, Path, int, int]:
    """A 2,408-token baseline and its candidate with rule 121 of 200 reworded at token ~1,460."""
    tmp = tmp_path_factory.mktemp("long")
    base = _chat(tmp / "base.jsonl", _rules(200))
    cand = _chat(tmp / "cand.jsonl", _rules(200, edit=121))
    b, c = _ids(base, bundle), _ids(cand, bundle)
    pos = _first_difference(b, c)
    assert (len(b.ids), b.end, len(c.ids), pos) == (2408, 2407, 2408, 1458)
    return base, cand, b.end, pos


def test_openai_counts_128_token_increments_and_prices_the_loss(long_pair):
    base, cand, end, pos = long_pair
    # kvtool's blocks: 16 × (2407 // 16 − 1458 // 16) = 16 × (150 − 91) = 944
    plain = _json(_run(cand, "--baseline", base, "--format", "json"))
    assert plain["findings"][0]["tokens_lost"] == 944
    # OpenAI: floor128(2407) − floor128(1458) = 2304 − 1408 = 896
    assert end // 128 * 128 - pos // 128 * 128 == 896
    out = _run(
        cand, "--baseline", base, "--provider", "openai", "--calls-per-month", 10_000,
        "--format", "json",
    )  # fmt: skip
    assert out.exit_code == 1, out.output
    result = _json(out)
    (finding,) = result["findings"]
    p = finding["provider"]
    assert finding["tokens_lost"] == p["tokens_lost"] == 896
    assert (p["cacheable_tokens"], p["kept_tokens"]) == (2304, 1408)
    assert (p["min_cacheable_tokens"], p["increment_tokens"]) == (1024, 128)
    assert (p["model"], p["price_entry"], p["price_fallback"]) == (GPT, GPT, False)
    # 896 × ($5.00 − $0.50) / 1e6 = $0.004032 per call; × 10,000 calls = $40.32 per month
    assert p["usd_per_call"] == pytest.approx(0.004032)
    assert p["usd_per_month"] == pytest.approx(40.32)
    assert "$0.004032 per call, $40.32 per month" in finding["message"]
    assert result["provider"]["usd_per_month"] == pytest.approx(40.32)
    assert result["provider"]["pairs"] == 1
    sarif = sarif_log(_api(cand, base, ProviderGate(load_provider("openai"), calls_per_month=1e4)))
    props = sarif["runs"][0]["results"][0]["properties"]
    assert props["tokensLost"] == 896 and props["usdPerCall"] == pytest.approx(0.004032)
    assert props["provider"] == "openai" and props["priceGuess"] is False


def _api(cand: Path, base: Path, gate: ProviderGate, **policy) -> kvtool.CheckResult:
    return kvtool.check(cand, baseline=str(base), provider=gate, policy=Policy(**policy))


def test_the_policy_applies_to_the_providers_tokens(long_pair):
    base, cand, _, _ = long_pair
    gate = ProviderGate(load_provider("openai"))
    # 896 lost of 2,304 cacheable = 38.9 %: a 39 % limit passes, 38 % fails
    assert _api(cand, base, gate, max_loss_pct=39.0).passed
    assert not _api(cand, base, gate, max_loss_pct=38.0).passed
    assert _api(cand, base, gate, max_loss=896).passed
    assert not _api(cand, base, gate, max_loss=895).passed
    # the prefix OpenAI still caches is 1,408 tokens; kvtool's own count (16-token blocks)
    # keeps 1,456 (91 × 16), so 1,420 separates the two
    assert _api(cand, base, gate, max_loss=10_000, min_stable_tokens=1408).passed
    short = _api(cand, base, gate, max_loss=10_000, min_stable_tokens=1420)
    assert "prefix openai caches 1,408 < --min-stable-tokens 1420" in short.findings[0].message
    assert kvtool.check(
        cand, baseline=str(base), policy=Policy(max_loss=10_000, min_stable_tokens=1420)
    ).passed


def test_deepseek_counts_64_token_units(long_pair):
    base, cand, end, pos = long_pair
    # floor64(2407) − floor64(1458) = 2368 − 1408 = 960 (OpenAI: 896, kvtool's blocks: 944)
    assert end // 64 * 64 - pos // 64 * 64 == 960
    result = _api(cand, base, ProviderGate(load_provider("deepseek"), model="deepseek-chat"))
    (finding,) = result.findings
    assert finding.tokens_lost == 960 and finding.provider is not None
    assert finding.provider.price_entry == "deepseek-flash"
    # 960 × ($0.30 − $0.006) / 1e6 = $0.00028224 per call (peak rates)
    assert finding.provider.usd_per_call == pytest.approx(0.00028224)
    assert finding.provider.usd_per_month is None


def test_a_fixture_without_a_model_takes_model_and_an_unknown_model_is_a_guess(tmp_path):
    base = _chat(tmp_path / "base.jsonl", _rules(200), model=None)
    cand = _chat(tmp_path / "cand.jsonl", _rules(200, edit=121), model=None)
    gate = ProviderGate(load_provider("openai"), model="gpt-5.4-mini")
    (known,) = _api(cand, base, gate).findings
    assert known.provider is not None and not known.provider.price_fallback
    # 896 × ($0.75 − $0.075) / 1e6 = $0.0006048
    assert known.provider.usd_per_call == pytest.approx(0.0006048)
    assert "price is a guess" not in known.message
    base = _chat(tmp_path / "base.jsonl", _rules(200), model="acme-finetune-7")
    cand = _chat(tmp_path / "cand.jsonl", _rules(200, edit=121), model="acme-finetune-7")
    out = _run(cand, "--baseline", base, "--provider", "openai", "--format", "json")
    result = _json(out)
    (finding,) = result["findings"]
    assert finding["provider"]["price_fallback"] is True
    assert finding["provider"]["price_entry"] == "gpt-5.5"  # openai.json's fallback entry
    assert result["provider"]["price_guess"] is True
    assert (
        "price is a guess: acme-finetune-7 is not in openai's price list, priced as gpt-5.5"
        in finding["message"]
    )


def test_anthropic_counts_up_to_the_baselines_markers(tmp_path, bundle):
    system, user = _rules(120), "Summarize the rules. " + "Be thorough. " * 300
    edited_user = (
        "Summarize the rules. " + "Be thorough. " * 150 + "Be brief. " + "Be thorough. " * 149
    )
    # no marker: Anthropic caches nothing, the pair passes with a note
    base = _anthropic(tmp_path / "b0.jsonl", system, user, ())
    cand = _anthropic(tmp_path / "c0.jsonl", _rules(120, edit=60), user, ())
    out = _run(cand, "--baseline", base, "--provider", "anthropic", "--format", "json")
    assert out.exit_code == 0, out.output
    assert _json(out)["notes"] == [
        f"{cand}:1 'f': no cache_control marker: anthropic caches nothing, nothing lost"
    ]
    # markers on the system block and the user block; the user message is edited
    base = _anthropic(tmp_path / "b1.jsonl", system, user, ("system", "user"))
    cand = _anthropic(tmp_path / "c1.jsonl", system, edited_user, ("system", "user"))
    b, c = _ids(base, bundle), _ids(cand, bundle)
    pos = _first_difference(b, c)
    assert (b.head_end, pos, b.end) == (1441, 1898, 2348)
    # kept: the longest marker at or before 1,898 and at least 1,024 = the head, 1,441;
    # cacheable: the user marker, 2,348; lost 2,348 − 1,441 = 907, × ($3.00 − $0.30) / 1e6
    gate = ProviderGate(load_provider("anthropic"))
    (finding,) = _api(cand, base, gate).findings
    assert finding.provider is not None and finding.provider.breakpoints == (1441, 2348)
    assert (finding.provider.kept_tokens, finding.tokens_lost) == (1441, 907)
    assert finding.provider.usd_per_call == pytest.approx(907 * 2.7e-6)
    # the marker on the system block only: an edit after it costs nothing
    base = _anthropic(tmp_path / "b2.jsonl", system, user, ("system",))
    cand = _anthropic(tmp_path / "c2.jsonl", system, edited_user, ("system",))
    assert not kvtool.check(cand, baseline=str(base)).passed  # kvtool's own cache loses some
    assert _api(cand, base, gate).passed
    # top-level automatic caching: the prompt up to its last message (2,348 tokens), all of it
    # lost by an edit in the system prompt (before the only breakpoint)
    base = _anthropic(tmp_path / "b3.jsonl", system, user, ("auto",))
    cand = _anthropic(tmp_path / "c3.jsonl", _rules(120, edit=60), user, ("auto",))
    (finding,) = _api(cand, base, gate).findings
    assert finding.provider is not None and finding.provider.breakpoints == (2348,)
    assert (finding.provider.kept_tokens, finding.tokens_lost) == (0, 2348)


def test_options_without_a_provider_or_an_unknown_provider_exit_2(long_pair):
    base, cand, _, _ = long_pair
    out = _run(cand, "--baseline", base, "--provider", "azure")
    assert out.exit_code == 2
    assert out.output.strip().splitlines() == [
        "kvtool: error: --provider must be one of anthropic, deepseek, gemini, openai, not 'azure'"
    ]
    out = _run(cand, "--baseline", base, "--model", GPT)
    assert out.exit_code == 2 and "--provider is needed by --model" in out.output
    for bad in ("0", "-5", "nan", "inf"):
        out = _run(cand, "--baseline", base, "--provider", "openai", "--calls-per-month", bad)
        assert out.exit_code == 2 and "--calls-per-month must be in" in out.output, bad


def _renders(path: Path, systems: list[str], model: str = GPT) -> Path:
    """Several renders of one prompt in one fixture file (the consistency check)."""
    lines = [
        orjson.dumps(
            {
                "id": f"render-{i}",
                "request": {
                    "model": model,
                    "messages": [
                        {"role": "system", "content": system},
                        {"role": "user", "content": "Where is my order?"},
                    ],
                },
            }
        )
        for i, system in enumerate(systems)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_consistency_breaks_are_counted_by_the_provider_too(tmp_path, bundle):
    short = _renders(tmp_path / "short.jsonl", [_rules(25), _rules(25, edit=5)])
    # another conversation reuses only the head (the system message, 301 tokens):
    # 16 × (301 // 16 − 66 // 16) = 16 × (18 − 4) = 224
    (finding,) = kvtool.check(short).findings
    assert finding.check == "consistency" and finding.tokens_lost == 224
    result = kvtool.check(short, provider=ProviderGate(load_provider("openai")))
    assert result.passed and result.notes == [
        f"{short}:2 'render-1': 307 cacheable tokens, below openai's minimum of 1,024 tokens "
        f"for {GPT}: nothing cached, nothing lost"
    ]
    # two renders of the long prompt: another conversation shares only the head (the system
    # message, up to token h); OpenAI: floor128(h) − floor128(1458)
    long = _renders(tmp_path / "long.jsonl", [_rules(200), _rules(200, edit=121)])
    head_end = _ids(_chat(tmp_path / "one.jsonl", _rules(200)), bundle).head_end
    assert head_end == 2401  # floor128(2401) − floor128(1458) = 2304 − 1408 = 896
    (plain,) = kvtool.check(long).findings
    assert plain.tokens_lost == 944  # 16 × (2401 // 16 − 1458 // 16) = 16 × (150 − 91)
    (counted,) = kvtool.check(long, provider=ProviderGate(load_provider("openai"))).findings
    assert counted.check == "consistency" and counted.tokens_lost == 896
    assert counted.provider is not None and counted.provider.cacheable_tokens == 2304


def test_model_names_from_fixtures_print_literally(tmp_path):
    model = "acme-[bold red]x[/]"
    base = _chat(tmp_path / "base.jsonl", _rules(200), model=model)
    cand = _chat(tmp_path / "cand.jsonl", _rules(200, edit=121), model=model)
    out = _run(cand, "--baseline", base, "--provider", "openai")
    assert out.exit_code == 1
    assert f"price is a guess: {model} is not in openai's price list" in " ".join(
        out.stdout.split()
    )
