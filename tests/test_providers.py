"""The hosted providers' caching rules and prices (kvtool/providers): the shipped data files
load and validate, the documented numbers are what the files say, override files replace
values, bad override files fail with one line naming the file and the key, and logged model
names resolve to their prices (or to the flagged fallback).

The expected numbers come from the providers' own pages, read 2026-12-02 (the URLs are in each
data file's ``sources``): Anthropic's prompt-caching and pricing pages, OpenAI's prompt-caching
guide and cookbook, Google's Gemini context-caching page, DeepSeek's context-caching guide,
its 2024 announcement and its pricing page. They are asserted against the loaded file, so an
edit that changes one fails here until this test changes too.
"""

from __future__ import annotations

import json
from importlib import resources

import pytest

from kvtool.errors import InputError, OptionError
from kvtool.providers import (
    load_provider,
    min_cacheable_tokens,
    model_prices,
    provider_names,
)
from kvtool.providers.load import RULES


def shipped(name: str) -> dict:
    path = resources.files("kvtool.providers") / "data" / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def write(tmp_path, name: str, doc) -> str:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def test_provider_names():
    assert provider_names() == ("anthropic", "deepseek", "gemini", "openai")


@pytest.mark.parametrize("name", ["anthropic", "deepseek", "gemini", "openai"])
def test_each_shipped_file_loads_with_sources_and_dates(name):
    rules = load_provider(name)
    doc = shipped(name)
    assert rules.name == name and rules.schema_version == 1
    assert rules.as_of == "2026-12-02"
    assert rules.files == (f"kvtool/providers/data/{name}.json",)
    # every rule is set, and names a source that has an https address and a read date
    assert set(rules.rule_sources) == set(RULES) == set(doc["rules"])
    for rule, sid in rules.rule_sources.items():
        assert rules.sources[sid].url.startswith("https://"), rule
        assert rules.sources[sid].read == "2026-12-02"
    for entry in rules.models:
        assert entry.source in rules.sources
        assert 0 <= entry.cached_input <= entry.input <= entry.output, entry.key
        assert set(entry.cache_write) == {t.name for t in rules.ttls}
    # the fallback is one of the entries, and an unknown model resolves to it, flagged
    match = model_prices(rules, "no-such-model-1")
    assert match.fallback and match.prices.key == rules.fallback_model


def test_anthropic_numbers():
    r = load_provider("anthropic")
    assert r.write_multipliers == {"5m": 1.25, "1h": 2.0}
    assert r.read_multiplier == 0.1
    assert r.max_breakpoints == 4 and r.lookback_blocks == 20
    assert r.automatic and r.explicit_breakpoints
    assert r.prefix_order == ("tools", "system", "messages")
    assert r.default_ttl == "5m"
    assert (r.ttl("5m").seconds, r.ttl("1h").seconds) == (300, 3600)
    assert r.ttl("5m").refresh_on_hit
    assert not r.tokenizer_public and not r.caches_output
    assert min_cacheable_tokens(r, "claude-opus-5") == 512
    assert min_cacheable_tokens(r, "claude-sonnet-4-6") == 1024
    assert min_cacheable_tokens(r, "claude-opus-4-5-20251101") == 4096
    assert min_cacheable_tokens(r, "claude-opus-4-1-20250805") == 1024
    assert min_cacheable_tokens(r, "claude-haiku-4-5") == 4096
    assert min_cacheable_tokens(r, "claude-3-haiku-20240307") == 2048
    assert min_cacheable_tokens(r, "something-else") == 1024
    opus = model_prices(r, "claude-opus-4-6").prices
    assert (opus.input, opus.cached_input, opus.output) == (5.0, 0.5, 25.0)
    assert opus.cache_write == {"5m": 6.25, "1h": 10.0}
    # the multipliers hold for the explicit prices of the pricing page ...
    for entry in r.models:
        assert entry.cache_write["5m"] == pytest.approx(1.25 * entry.input), entry.key
        assert entry.cache_write["1h"] == pytest.approx(2.0 * entry.input), entry.key
    # ... and a model without explicit write prices gets them from the multipliers
    haiku = model_prices(r, "claude-haiku-4-5-20251001").prices
    assert haiku.cache_write == {"5m": 1.25, "1h": 2.0}
    assert model_prices(r, "claude-fable-5-1").prices.cached_input == 0.25


def test_openai_numbers():
    r = load_provider("openai")
    assert r.min_cacheable_tokens == 1024 and r.min_cacheable_by_model == {}
    assert r.increment_tokens == 128
    assert r.cache_key_param == "prompt_cache_key"
    assert r.routing_prefix_tokens == 256 and r.overflow_rpm == 15
    assert r.automatic and not r.explicit_breakpoints and r.max_breakpoints is None
    assert r.ttl("in_memory").max_seconds == 3600
    assert r.ttl("24h").seconds == 86400
    assert r.write_multipliers == {"in_memory": 1.0, "24h": 1.0}
    assert r.tokenizer_public
    gpt55 = model_prices(r, "gpt-5.5").prices
    assert (gpt55.input, gpt55.cached_input, gpt55.output) == (5.0, 0.5, 30.0)
    assert gpt55.cache_write == {"in_memory": 5.0, "24h": 5.0}  # no write surcharge
    assert model_prices(r, "gpt-6-sol").prices.cache_write["24h"] == 2.5


def test_gemini_numbers():
    r = load_provider("gemini")
    assert r.automatic and not r.explicit_breakpoints
    assert min_cacheable_tokens(r, "gemini-2.5-flash") == 2048
    assert min_cacheable_tokens(r, "models/gemini-2.5-pro") == 2048
    assert min_cacheable_tokens(r, "gemini-3.1-pro-preview") == 4096
    assert min_cacheable_tokens(r, "gemini-4-argon") == 4096
    assert r.ttl("explicit").seconds == 3600 and r.ttl("implicit").seconds is None
    pro = model_prices(r, "gemini-2.5-pro").prices
    assert (pro.input, pro.cached_input, pro.storage_per_mtok_hour) == (1.25, 0.31, 4.5)
    assert not r.tokenizer_public


def test_deepseek_numbers():
    r = load_provider("deepseek")
    assert r.increment_tokens == 64 and r.min_cacheable_tokens == 64
    assert r.caches_output and r.tokenizer_public and r.automatic
    assert r.ttl("disk").seconds is None  # best effort, hours to days
    assert [(h.start, h.end) for h in r.peak_hours_utc] == [(1, 4), (6, 10)]
    flash = model_prices(r, "deepseek-v4-flash")
    assert flash.prices.key == "deepseek-flash" and not flash.fallback
    assert (flash.prices.input, flash.prices.cached_input, flash.prices.output) == (
        0.3,
        0.006,
        1.2,
    )
    off = flash.prices.off_peak
    assert (off.input, off.cached_input, off.output) == (0.15, 0.003, 0.6)
    assert model_prices(r, "deepseek-v4-pro").prices.off_peak.input == 0.66


def test_model_name_resolution():
    r = load_provider("openai")
    # longest prefix wins; route prefixes and case do not matter; dated snapshots match
    assert model_prices(r, "gpt-5.4-mini-2026-03-17").prices.key == "gpt-5.4-mini"
    assert model_prices(r, "gpt-5.4-2026-03-05").prices.key == "gpt-5.4"
    assert model_prices(r, "openai/GPT-5.5-pro").prices.key == "gpt-5.5-pro"
    assert model_prices(r, "gpt-5.4-pro").prices.key == "gpt-5.5-pro"  # an alias prefix
    for unknown in ("gpt-4o", "", None, "gpt-"):
        match = model_prices(r, unknown)
        assert match.fallback and match.prices.key == "gpt-5.5"
    a = load_provider("anthropic")
    assert model_prices(a, "anthropic/claude-opus-5-5").prices.key == "claude-opus-5-5"
    assert model_prices(a, "claude-opus-5-20260601").prices.key == "claude-opus-5"
    assert model_prices(a, "claude-mythos-5-1").prices.key == "claude-fable-5-1"
    assert not model_prices(a, "claude-3-7-sonnet-20250219").fallback


def test_override_files_replace_values(tmp_path):
    rules_file = write(
        tmp_path,
        "rules.json",
        {
            "as_of": "2026-12-24",
            "sources": {"mine": {"url": "https://example.com/contract", "read": "2026-12-24"}},
            "rules": {
                "lookback_blocks": {"value": 30, "source": "mine", "note": "negotiated"},
                "write_multipliers": {"value": {"5m": 1.5, "1h": 2.5}, "source": "mine"},
            },
        },
    )
    prices_file = write(
        tmp_path,
        "prices.json",
        {
            "provider": "anthropic",
            "prices": {
                "fallback": "house-model",
                "models": {
                    "house-model": {
                        "match": ["house-"],
                        "input": 1.0,
                        "cached_input": 0.1,
                        "output": 2.0,
                        "source": "pricing",
                    },
                    "claude-opus-5": {
                        "match": ["claude-opus-5"],
                        "input": 4.0,
                        "cached_input": 0.4,
                        "output": 20.0,
                        "source": "pricing",
                    },
                },
            },
        },
    )
    r = load_provider("anthropic", rules_file=rules_file, prices_file=prices_file)
    assert r.files[1:] == (rules_file, prices_file)
    assert r.as_of == "2026-12-24"
    assert r.lookback_blocks == 30 and r.notes["lookback_blocks"] == "negotiated"
    assert r.rule_sources["lookback_blocks"] == "mine"
    assert r.max_breakpoints == 4  # not overridden: shipped value
    assert r.fallback_model == "house-model"
    assert model_prices(r, "unknown").prices.key == "house-model"
    house = model_prices(r, "house-7b").prices
    assert house.cache_write == {"5m": 1.5, "1h": 2.5}  # the overridden multipliers
    opus = model_prices(r, "claude-opus-5").prices
    assert (opus.input, opus.cache_write["5m"]) == (4.0, 6.0)  # replaced whole entry
    # replacing the entry dropped its old aliases: Opus 4.6 now falls to a shorter prefix
    assert model_prices(r, "claude-opus-4-6").prices.key == "claude-opus-4"
    # the shipped data is untouched for the next load
    assert load_provider("anthropic").lookback_blocks == 20


BAD_RULES = [
    ("{", r"rules\.json: not JSON: "),
    ("[]", r"rules\.json: \(top\): must be a JSON object"),
    ({"rule": {}}, r"rules\.json: rule: unknown key"),
    ({"prices": {}}, r"rules\.json: prices: belongs in the prices file"),
    ({"provider": "openai"}, r"rules\.json: provider: is 'openai', but the provider is"),
    ({"schema_version": 2}, r"rules\.json: schema_version: must be 1"),
    ({"as_of": "yesterday"}, r"rules\.json: as_of: must be a date"),
    (
        {"rules": {"max_breakpoints": {"value": "4", "source": "caching"}}},
        r"rules\.json: rules\.max_breakpoints\.value: must be an integer, not '4'",
    ),
    (
        {"rules": {"max_breakpoints": {"value": True, "source": "caching"}}},
        r"rules\.max_breakpoints\.value: must be an integer, not True",
    ),
    (
        {"rules": {"read_multiplier": {"value": 1.5, "source": "caching"}}},
        r"rules\.read_multiplier\.value: must be in \[0, 1\], not 1\.5",
    ),
    (
        {"rules": {"read_multiplier": {"value": float("nan"), "source": "caching"}}},
        r"rules\.json: not JSON|rules\.read_multiplier\.value: must be in",
    ),
    (
        {"rules": {"lookback_blocks": {"value": -1, "source": "caching"}}},
        r"rules\.lookback_blocks\.value: must be in \[0, 10000\], not -1",
    ),
    (
        {"rules": {"lookback_blocks": {"value": 3, "source": "nowhere"}}},
        r"rules\.json: rules\.lookback_blocks\.source: names no source",
    ),
    (
        {"rules": {"lookback_blocks": {"value": 3}}},
        r"rules\.lookback_blocks\.source: is missing",
    ),
    (
        {"rules": {"lookback_blocks": {"value": 3, "source": "caching", "why": "x"}}},
        r"rules\.lookback_blocks\.why: unknown key",
    ),
    (
        {"rules": {"cache_everything": {"value": True, "source": "caching"}}},
        r"rules\.json: rules\.cache_everything: unknown key",
    ),
    (
        {"rules": {"default_ttl": {"value": "1d", "source": "caching"}}},
        r"rules\.json: rules\.default_ttl\.value: must be one of the TTLs",
    ),
    (
        {"rules": {"write_multipliers": {"value": {"5m": 1.25}, "source": "caching"}}},
        r"rules\.write_multipliers\.value: must have one entry per TTL",
    ),
    (
        {
            "rules": {
                "ttls": {
                    "value": [{"name": "5m", "seconds": 0, "max_seconds": None}],
                    "source": "caching",
                }
            }
        },
        r"rules\.ttls\.value\[0\]\.refresh_on_hit: is missing",
    ),
    (
        {"rules": {"min_cacheable_by_model": {"value": {"Claude-X": 5}, "source": "caching"}}},
        r"rules\.min_cacheable_by_model\.value\[0\]: must be lower case",
    ),
    (
        {"sources": {"caching": {"url": "http://insecure", "read": "2026-12-02"}}},
        r"rules\.json: sources\.caching\.url: must be an https:// address",
    ),
]


@pytest.mark.parametrize(("doc", "message"), BAD_RULES)
def test_bad_rules_file_one_line_error(tmp_path, doc, message):
    path = write(tmp_path, "rules.json", doc)
    with pytest.raises(InputError, match=message) as info:
        load_provider("anthropic", rules_file=path)
    assert "\n" not in str(info.value)


def model_entry(**changes):
    entry = {"match": ["x-"], "input": 1.0, "cached_input": 0.1, "output": 2.0}
    entry["source"] = "pricing"
    entry.update(changes)
    return {"prices": {"models": {"x": entry}}}


BAD_PRICES = [
    ({"rules": {}}, r"prices\.json: rules: belongs in the rules file"),
    ({"prices": {"fallback": "nope"}}, r"prices\.json: prices\.fallback: names no model entry"),
    ({"prices": {"cheap": True}}, r"prices\.json: prices\.cheap: unknown key"),
    ({"prices": {"models": []}}, r"prices\.json: prices\.models: must be a JSON object"),
    (model_entry(input=-1), r"prices\.json: prices\.models\.x\.input: must be in \[0, 10000\]"),
    (model_entry(output="2"), r"prices\.models\.x\.output: must be a number, not '2'"),
    (model_entry(output=1e9), r"prices\.models\.x\.output: must be in \[0, 10000\]"),
    (model_entry(match=[]), r"prices\.models\.x\.match: must be a non-empty list"),
    (model_entry(match="x-"), r"prices\.models\.x\.match: must be a non-empty list"),
    (model_entry(match=["claude-opus-5"]), r"prices\.models\.x\.match: prefix 'claude-opus-5'"),
    (model_entry(cache_write={"2h": 3.0}), r"prices\.models\.x\.cache_write\.2h: is no TTL"),
    (model_entry(source="rumour"), r"prices\.models\.x\.source: names no source"),
    (model_entry(tier="gold"), r"prices\.models\.x\.tier: unknown key"),
    (
        model_entry(off_peak={"input": 0.5}),
        r"prices\.models\.x\.off_peak\.cached_input: is missing",
    ),
    (
        model_entry(storage_per_mtok_hour=None, note=""),
        r"prices\.models\.x\.note: must be a non-empty string",
    ),
]


@pytest.mark.parametrize(("doc", "message"), BAD_PRICES)
def test_bad_prices_file_one_line_error(tmp_path, doc, message):
    path = write(tmp_path, "prices.json", doc)
    with pytest.raises(InputError, match=message) as info:
        load_provider("anthropic", prices_file=path)
    assert "\n" not in str(info.value)


def test_missing_override_file_and_unknown_provider(tmp_path):
    with pytest.raises(InputError, match=r"nothere\.json: cannot read"):
        load_provider("openai", rules_file=tmp_path / "nothere.json")
    with pytest.raises(OptionError, match="provider must be one of anthropic, deepseek"):
        load_provider("mistral")


ODD_VALUES = [None, 0, -3, 1.5, "x", "", [], [1], {}, {"a": 1}, True]


@pytest.mark.parametrize("value", ODD_VALUES)
def test_odd_shapes_raise_input_error_only(tmp_path, value):
    """Every rule, every model field and every container takes a wrong-typed value without
    another exception type escaping (a value the rule accepts simply loads)."""
    fields = {"match", "input", "cached_input", "output", "cache_write", "off_peak", "note"}
    docs = [{"rules": {key: {"value": value, "source": "caching"}}} for key in RULES]
    docs += [{"rules": {"automatic": value}}, {"rules": value}, {"sources": value}]
    docs += [{"sources": {"caching": value}}, {"as_of": value}]
    prices = [model_entry(**{field: value}) for field in sorted(fields)]
    prices += [{"prices": value}, {"prices": {"models": {"x": value}}}]
    prices += [{"prices": {"fallback": value}}, model_entry(storage_per_mtok_hour=value)]
    for i, doc in enumerate(docs + prices):
        kind = "rules_file" if i < len(docs) else "prices_file"
        path = write(tmp_path, f"{i}.json", doc)
        try:
            load_provider("gemini", **{kind: path})
        except InputError as exc:
            assert "\n" not in str(exc) and f"{i}.json" in str(exc)
