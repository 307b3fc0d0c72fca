"""The reference fixture: the conversation set as OpenAI chat records ingests field by field,
and its hit rates are what every other format's fixture is compared with."""

from __future__ import annotations

from conversations import calls, openai_chat_record
from formats_check import (
    assert_accounted,
    assert_matches_calls,
    hit_rates,
    ingest_one,
    reference_file,
    stored_requests,
    write_jsonl,
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


def test_the_end_user_never_splits_the_cache_domain(tmp_path):
    """Records naming only the end user (no tenant) are one cache domain: the same ideal hit
    rate as the reference (one tenant), with the end user kept per request. Were the end user
    the tenant (the control: the user logged as the tenant), reuse across users would be lost."""
    cs = calls()
    users_only = []
    as_tenant = []
    for c in cs:
        rec = openai_chat_record(c)
        del rec["metadata"]["tenant"]
        users_only.append(rec)
        control = openai_chat_record(c)
        control["metadata"]["tenant"] = c.user
        as_tenant.append(control)
    path = write_jsonl(tmp_path / "users-only.jsonl", users_only)
    con, _ = ingest_one(tmp_path, path)
    got = stored_requests(con)
    assert {s.tenant for s in got} == {None}
    assert [s.end_user for s in got] == [c.user for c in sorted(cs, key=lambda c: c.ts)]
    ideal_ref, _ = hit_rates(reference_file(tmp_path, cs), tmp_path)
    assert hit_rates(path, tmp_path)[0] == ideal_ref
    split, _ = hit_rates(write_jsonl(tmp_path / "user-tenants.jsonl", as_tenant), tmp_path)
    assert split < ideal_ref
