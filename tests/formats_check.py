"""Checks the format tests share: the store's accounting invariant, the stored requests read back
field by field, comparison with the conversation set (``conversations.calls()``), a fixture
folder's ``make_fixtures.py`` as a module, and the hostile-input helpers (every path into a
JSON value, a copy with one value replaced, "reads or refuses in one line")."""

from __future__ import annotations

import copy
import importlib.util
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import orjson
from conversations import Call, calls, openai_chat_record

from kvtool import analyze
from kvtool.errors import InputError
from kvtool.ingest.formats import Normalized, Skip
from kvtool.store import connect

# wrong-typed and out-of-range values for fuzzing a record's fields
BAD_VALUES = [1.5, -1, 2**70, True, [], {}, "", "x", "2026-13-45", [1, 2], math.nan, {"a": [1]}]


def assert_accounted(con) -> None:
    """Store invariant: per file, records = requests + rejected + skipped, and the tables agree."""
    rows = con.execute(
        "SELECT f.records, f.requests, f.rejected, f.skipped, "
        "(SELECT count(*) FROM requests r WHERE r.file_id = f.file_id), "
        "(SELECT count(*) FROM rejects j WHERE j.file_id = f.file_id AND NOT j.skipped), "
        "(SELECT count(*) FROM rejects j WHERE j.file_id = f.file_id AND j.skipped) FROM files f"
    ).fetchall()
    for records, n_req, n_rej, n_skip, stored_req, stored_rej, stored_skip in rows:
        assert (n_req, n_rej, n_skip) == (stored_req, stored_rej, stored_skip)
        assert records == n_req + n_rej + n_skip


@dataclass
class Stored:
    """One stored request, its content decoded."""

    request_id: str
    ts: float | None
    session_id: str | None
    tenant: str | None
    model: str | None
    messages: list[dict] | None
    tools: list | None
    observed_prompt_tokens: int | None
    observed_cached_tokens: int | None
    cache_write_tokens: int | None
    output_tokens: int | None
    cache_control: list[dict] | None
    truncated: bool
    incomplete: str | None
    end_user: str | None


def stored_requests(con) -> list[Stored]:
    """Every stored request in (ts, file, line, item) order, content decoded."""
    rows = con.execute(
        "SELECT request_id, ts, session_id, tenant, model, message_keys, tools_key, "
        "observed_prompt_tokens, observed_cached_tokens, cache_write_tokens, output_tokens, "
        "cache_control, truncated, incomplete, end_user FROM requests "
        "ORDER BY ts NULLS LAST, file_id, line, item"
    ).fetchall()
    bodies = dict(con.execute("SELECT key, any_value(body) FROM contents GROUP BY 1").fetchall())
    out = []
    for r in rows:
        messages = None if r[5] is None else [orjson.loads(bodies[k]) for k in r[5]]
        tools = None if r[6] is None else orjson.loads(bodies[r[6]])
        markers = None if r[11] is None else orjson.loads(r[11])
        out.append(Stored(*r[:5], messages, tools, *r[7:11], markers, bool(r[12]), r[13], r[14]))
    return out


def assert_matches_calls(
    got: list[Stored],
    calls: list[Call],
    *,
    request_id: bool = True,
    session: bool = True,
    tenant: str | None = "tenant",
    end_user: bool = True,
    cached: bool = True,
    cache_write: bool = True,
    output: bool = True,
    time_precision: float = 1e-3,
) -> None:
    """Each stored request equals its call field by field: messages and tools (as OpenAI chat
    records carry them), model, time, and whichever of id, session, tenant and token counts the
    format logs (``tenant``: the ``Call`` attribute the format's tenant comes from, or None;
    ``end_user``: whether the format logs the end user)."""
    assert len(got) == len(calls)
    by_time = sorted(calls, key=lambda c: c.ts)
    for s, c in zip(got, by_time, strict=True):
        where = c.request_id
        assert s.messages == c.openai_messages(), where
        assert s.tools == c.openai_tools(), where
        assert s.model == c.model, where
        assert s.ts is not None and abs(s.ts - c.ts) < time_precision, (where, s.ts, c.ts)
        if request_id:
            assert s.request_id == c.request_id, where
        if session:
            assert s.session_id == c.session_id, where
        if tenant is not None:
            assert s.tenant == getattr(c, tenant), where
        if end_user:
            assert s.end_user == c.user, where
        assert s.observed_prompt_tokens == c.prompt_tokens, where
        if cached:
            assert s.observed_cached_tokens == c.cached_tokens, where
        if cache_write:
            assert s.cache_write_tokens == c.cache_write_tokens, where
        if output:
            assert s.output_tokens == c.output_tokens, where
        assert not s.truncated and s.incomplete is None, where


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def reference_file(tmp_path: Path, calls: list[Call]) -> Path:
    """The calls as OpenAI chat gateway records: what every format's analysis must match."""
    return write_jsonl(
        tmp_path / "reference-openai-chat.jsonl", [openai_chat_record(c) for c in calls]
    )


def hit_rates(path: Path, tmp_path: Path, fmt: str | None = None) -> tuple[float, float | None]:
    """(ideal_hit_rate, observed_hit_rate) of analyzing ``path`` alone in a fresh database, on
    prompt blocks only: formats carry the same prompts, but not all of them the answers' token
    counts that output blocks need (a batch input file, OTel's legacy events)."""
    db = tmp_path / f"{path.name}.duckdb"
    result = analyze([path], db=db, fmt=fmt, output_cache=False)
    return result["ideal_hit_rate"], result["observed_hit_rate"]


def assert_hit_rates_match_reference(path: Path, tmp_path: Path) -> None:
    """Analyzing ``path`` gives the reference's ideal hit rate exactly, and the observed hit
    rate sum(cached) / sum(prompt) of the calls (from the format's own cached-token field)."""
    cs = calls()
    ideal_ref, _ = hit_rates(reference_file(tmp_path, cs), tmp_path)
    ideal, observed = hit_rates(path, tmp_path)
    assert ideal == ideal_ref
    assert observed == sum(c.cached_tokens for c in cs) / sum(c.prompt_tokens for c in cs)


def ingest_one(tmp_path: Path, path: Path, fmt: str | None = None):
    """Ingest ``path`` into a fresh database; returns (connection, its FileReport)."""
    from kvtool.ingest import ingest_files

    con = connect(tmp_path / f"ingest-{path.name}.duckdb")
    (report,) = ingest_files(con, [path], fmt=fmt)
    return con, report


def fixture_module(folder: Path, name: str) -> ModuleType:
    """``folder/make_fixtures.py`` loaded as the module ``name`` (fixture folders are no
    packages)."""
    spec = importlib.util.spec_from_file_location(name, folder / "make_fixtures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def json_paths(value: object, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside a JSON value (object keys and list indices), depth first,
    a parent before its children; the value itself (the empty path) is not one."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, inner in value.items():
            out += json_paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            out += json_paths(inner, (*prefix, i))
    return out


def replaced(value: object, path: tuple, new: object) -> object:
    """A deep copy of ``value`` with the value at ``path`` replaced by ``new``."""
    if not path:
        return new
    out = copy.deepcopy(value)
    target = out
    for key in path[:-1]:
        target = target[key]  # type: ignore[index]
    target[path[-1]] = new  # type: ignore[index]
    return out


def reads_or_refuses(normalize: Callable[[object], Normalized], rec: object) -> Normalized | None:
    """``normalize(rec)``: a ``Normalized``, or None when it raised ``InputError`` or ``Skip``
    with a one-line reason; any other exception fails the test."""
    try:
        out = normalize(rec)
    except (InputError, Skip) as exc:
        assert "\n" not in str(exc)
        return None
    assert isinstance(out, Normalized)
    return out


def assert_split_reads_or_refuses(
    split: Callable[[object], Iterable[object]],
    normalize: Callable[[object], Normalized],
    rec: object,
) -> None:
    """A line's record split (``Format.records``) refuses in one line or yields records that
    each read or refuse (``reads_or_refuses``)."""
    try:
        subs = list(split(rec))
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    for sub in subs:
        reads_or_refuses(normalize, sub)
