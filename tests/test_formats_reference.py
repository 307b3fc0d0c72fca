"""The reference fixture: the conversation set as OpenAI chat records ingests field by field,
and its hit rates are what every other format's fixture is compared with."""

from __future__ import annotations

from conversations import calls
from formats_check import (
    assert_accounted,
    assert_matches_calls,
    hit_rates,
    ingest_one,
    reference_file,
    stored_requests,
)


def test_reference_records_ingest_field_by_field(tmp_path):
    cs = calls()
    con, report = ingest_one(tmp_path, reference_file(tmp_path, cs))
    assert (report.format, report.requests, report.rejected) == ("openai-chat", len(cs), 0)
    assert_accounted(con)
    # OpenAI chat usage has no cache-write count
    assert_matches_calls(stored_requests(con), cs, cache_write=False)


def test_reference_hit_rates(tmp_path):
    """The observed rate is the logged cached / prompt tokens; the ideal one is below 1 (the
    first request of the set shares nothing) and above the observed one's floor."""
    cs = calls()
    ideal, observed = hit_rates(reference_file(tmp_path, cs), tmp_path)
    assert observed == sum(c.cached_tokens for c in cs) / sum(c.prompt_tokens for c in cs)
    assert 0.5 < ideal < 1.0
