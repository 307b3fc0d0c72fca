"""The store: schema migration, connection handling, transactions, temp tables, named rows."""

from __future__ import annotations

import duckdb
import orjson
import pyarrow as pa
import pytest

from kvtool import analyze
from kvtool.errors import SchemaError
from kvtool.ingest import ingest_files
from kvtool.store import SCHEMA_VERSION, atomic, connect, one, open_db, temp_table
from kvtool.store.db import append_arrow, release_cache
from kvtool.store.files import file_rows
from kvtool.store.requests import request_rows
from kvtool.store.tokenizations import get_tokenization, last_tokenizer_spec


def _chat(i: int, with_id: bool) -> dict:
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "You are a careful assistant. " * 20},
            {"role": "user", "content": f"question number {i}"},
        ],
    }
    return {"id": f"r{i}", "request": body} if with_id else {"request": body}


def _log(tmp_path, name: str, with_id: bool, n: int = 6):
    path = tmp_path / name
    path.write_bytes(b"".join(orjson.dumps(_chat(i, with_id)) + b"\n" for i in range(n)))
    return path


_V4_COLUMNS = {"requests": ("cache_key",)}
_V3_COLUMNS = {
    "files": ("records", "skipped", "redacted"),
    "requests": (
        "item",
        "cache_write_tokens",
        "cache_control",
        "truncated",
        "incomplete",
        "end_user",
    ),
    "rejects": ("item", "skipped"),
}


def _downgrade(path, columns: dict[str, tuple[str, ...]], version: int) -> None:
    """Drop ``columns`` (by table) of a database file and record schema ``version``."""
    con = duckdb.connect(str(path))
    for table, names in columns.items():
        for column in names:
            con.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(version)])
    con.close()


def _downgrade_to_v3(path) -> None:
    """Rewrite a current database file into schema version 3: no routing keys."""
    _downgrade(path, _V4_COLUMNS, 3)


def _downgrade_to_v2(path) -> None:
    """Rewrite a current database file into schema version 2: no multi-record lines, skipped
    records, cache-write counts, cache markers, truncated/incomplete flags or redaction."""
    _downgrade_to_v3(path)
    _downgrade(path, _V3_COLUMNS, 2)


def _downgrade_to_v1(path) -> None:
    """Rewrite a current database file into schema version 1: files.sha256 instead of digest,
    no synthetic-id flag, no tokenizations table, the tokenizer spec in meta."""
    _downgrade_to_v2(path)
    con = duckdb.connect(str(path))
    con.execute("ALTER TABLE files RENAME COLUMN digest TO sha256")
    con.execute("ALTER TABLE requests DROP COLUMN synthetic_id")
    spec = one(con, "SELECT spec FROM tokenizations")[0]
    con.execute("DROP TABLE tokenizations")
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.execute("INSERT INTO meta VALUES ('tokenizer_spec', ?)", [spec])
    con.close()


def test_version_1_file_is_migrated_and_recomputed(tmp_path):
    db = tmp_path / "old.duckdb"
    logged = _log(tmp_path, "ids.jsonl", with_id=True)
    anonymous = _log(tmp_path, "anon.jsonl", with_id=False)
    before = analyze([logged, anonymous], db=db)
    _downgrade_to_v1(db)

    con = connect(db)
    assert one(con, "SELECT value FROM meta WHERE key = 'schema_version'") == (str(SCHEMA_VERSION),)
    files = file_rows(con)
    assert [f.path for f in files] == [str(logged), str(anonymous)]
    assert all(len(f.digest) == 32 for f in files)  # the xxh3-128 digest kept its values
    flags = dict(con.execute("SELECT request_id, synthetic_id FROM requests").fetchall())
    assert sum(flags.values()) == 6  # the anonymous file's ids were made up by kvtool
    assert not any(flags[f"r{i}"] for i in range(6))
    # chains of version 1 were computed in an unrecorded mode: dropped, to be recomputed
    assert one(con, "SELECT count(*) FROM chains") == (0,)
    con.close()

    after = analyze(None, db=db)
    keep = ("requests", "prompt_tokens", "cached_tokens", "ideal_hit_rate", "top_prefixes")
    assert {k: after[k] for k in keep} == {k: before[k] for k in keep}
    assert after["tokenization"]["requests"] == 12  # retokenized after the migration


def test_version_2_file_is_migrated_and_keeps_its_chains(tmp_path):
    """Version 3 only adds columns: a version-2 file keeps its requests and chains, its files
    count one record per line, and the same analysis comes out without retokenizing."""
    db = tmp_path / "v2.duckdb"
    logged = _log(tmp_path, "ids.jsonl", with_id=True)
    before = analyze([logged], db=db)
    _downgrade_to_v2(db)

    con = connect(db)
    assert one(con, "SELECT value FROM meta WHERE key = 'schema_version'") == (str(SCHEMA_VERSION),)
    assert one(con, "SELECT records, skipped, redacted FROM files") == (6, 0, False)
    assert one(con, "SELECT count(*) FROM requests WHERE item = 0 AND NOT truncated") == (6,)
    assert one(con, "SELECT count(*) FROM chains") == (6,)
    # a later ingest appends rows in the migrated column order
    more = _log(tmp_path, "more.jsonl", with_id=False, n=2)
    (report,) = ingest_files(con, [more])
    assert report.requests == 2
    con.close()

    after = analyze(None, db=db)
    assert after["tokenization"]["requests"] == 2  # only the new file's requests were tokenized
    # the migrated database analyzes both files as a fresh database does
    fresh = analyze([logged, more], db=tmp_path / "fresh.duckdb")
    keep = ("requests", "prompt_tokens", "cached_tokens", "ideal_hit_rate", "top_prefixes")
    assert {k: after[k] for k in keep} == {k: fresh[k] for k in keep}
    assert before["requests"] == 6 and after["requests"] == 8


def test_version_3_file_is_migrated_and_keeps_its_chains(tmp_path):
    """Version 4 only adds ``requests.cache_key``: a version-3 file keeps its requests and
    chains (cache keys NULL), and a later ingest stores the key in the migrated column."""
    db = tmp_path / "v3.duckdb"
    logged = _log(tmp_path, "ids.jsonl", with_id=True)
    before = analyze([logged], db=db)
    _downgrade_to_v3(db)

    con = connect(db)
    assert one(con, "SELECT value FROM meta WHERE key = 'schema_version'") == (str(SCHEMA_VERSION),)
    assert one(con, "SELECT count(*), count(cache_key) FROM requests") == (6, 0)
    assert one(con, "SELECT count(*) FROM chains") == (6,)
    keyed = tmp_path / "keyed.jsonl"
    body = {**_chat(9, with_id=True), "id": "k9"}
    body["request"]["prompt_cache_key"] = "tenant-a/faq"
    keyed.write_bytes(orjson.dumps(body) + b"\n")
    (report,) = ingest_files(con, [keyed])
    assert report.requests == 1
    assert one(con, "SELECT cache_key FROM requests WHERE request_id = 'k9'") == ("tenant-a/faq",)
    con.close()

    after = analyze(None, db=db)
    assert after["tokenization"]["requests"] == 1  # only the new request was tokenized
    assert before["requests"] == 6 and after["requests"] == 7


def test_newer_schema_is_refused(tmp_path):
    db = tmp_path / "new.duckdb"
    connect(db).close()
    con = duckdb.connect(str(db))
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 1)])
    con.close()
    with pytest.raises(SchemaError, match="upgrade kvtool"):
        connect(db)


def test_open_db_passes_a_connection_through_and_closes_what_it_opened(tmp_path):
    db = tmp_path / "a.duckdb"
    with open_db(db) as con:
        con.execute("INSERT INTO meta VALUES ('k', 'v')")
    with pytest.raises(duckdb.ConnectionException):
        con.execute("SELECT 1")
    outer = connect(db)
    with open_db(outer) as inner:
        assert inner is outer
    assert one(outer, "SELECT value FROM meta WHERE key = 'k'") == ("v",)  # still open
    outer.close()


def test_atomic_rolls_back_and_temp_table_is_gone(tmp_path):
    con = connect(tmp_path / "t.duckdb")
    with pytest.raises(RuntimeError), atomic(con):
        con.execute("INSERT INTO meta VALUES ('half', 'done')")
        raise RuntimeError("interrupted")
    assert one(con, "SELECT count(*) FROM meta WHERE key = 'half'") == (0,)
    with temp_table(con, "_kv_x", pa.table({"a": [1, 2, 3]})):
        assert one(con, "SELECT sum(a) FROM _kv_x") == (6,)
    with pytest.raises(duckdb.CatalogException):
        con.execute("SELECT * FROM _kv_x")
    con.close()


def test_request_rows_and_tokenization_are_named(tmp_path):
    db = tmp_path / "r.duckdb"
    con = connect(db)
    ingest_files(con, [_log(tmp_path, "ids.jsonl", with_id=True, n=3)])
    con.close()
    summary = analyze(None, db=db)
    con = connect(db)
    signature = summary["tokenizer"]
    rows = request_rows(con, signature)
    assert [(r.request_id, r.synthetic_id, r.line) for r in rows] == [
        ("r0", False, 1),
        ("r1", False, 2),
        ("r2", False, 3),
    ]
    assert [r.n_tokens for r in rows] == sorted(r.n_tokens for r in rows)  # same prompt shape
    assert all(r.kind == "chat" and len(r.message_keys) == 2 for r in rows)
    t = get_tokenization(con, signature)
    assert t is not None and t.mode == summary["tokenization"]["mode"] == "pieces"
    assert t.verified >= 1 and last_tokenizer_spec(con) == t.spec == "deepseek-v4"
    con.close()


def test_append_inside_a_transaction_holds_no_arrow_batch(tmp_path):
    # one file's ingest is one transaction of many appends: a batch must be freed once
    # appended (a registered view dropped inside a transaction keeps its table to the commit)
    con = connect(tmp_path / "a.duckdb")
    con.execute("CREATE TEMP TABLE t (a BIGINT, s VARCHAR)")
    pool = pa.default_memory_pool()
    with atomic(con):
        for i in range(20):
            rows = pa.table({"a": pa.array(range(i * 100, (i + 1) * 100)), "s": ["x" * 1000] * 100})
            append_arrow(con, "t", rows, "a % 2 = 0")
            del rows
        assert pool.bytes_allocated() < 100_000  # 20 batches of 100 kB were appended
    assert one(con, "SELECT count(*), sum(a) FROM t") == (1000, sum(range(0, 2000, 2)))


def test_heap_trim_gives_freed_memory_back():
    # 50 MB of 1 kB objects (malloc'd from glibc's heap, below its mmap threshold), freed:
    # glibc keeps the pages until trim gives them back; elsewhere trim reports nothing done
    from kvtool import heap

    if heap._malloc_trim() is None:
        assert heap.trim() is False
        return
    held = [bytearray(1024) for _ in range(50_000)]
    del held
    assert heap.trim() is True


def _cached_mb(con) -> float:
    (mb,) = one(con, "SELECT sum(memory_usage_bytes) / 2^20 FROM duckdb_memory()")
    return mb


def test_release_cache_evicts_scanned_tables_and_keeps_the_limit(tmp_path):
    # a scan leaves a file's table blocks in DuckDB's buffer pool; release drops them and puts
    # the default memory limit back; a limit someone set is left alone
    path = tmp_path / "c.duckdb"
    con = connect(path)
    con.execute("CREATE TABLE big AS SELECT range AS a, hash(range) AS h FROM range(3000000)")
    assert _cached_mb(con) > 20  # written, not yet checkpointed: to the file, not spilled
    assert release_cache(con) is True
    assert _cached_mb(con) < 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.duckdb"]
    con.close()
    con = connect(path)
    default = one(con, "SELECT current_setting('memory_limit')")
    assert one(con, "SELECT sum(h % 7) FROM big")[0] > 0
    assert _cached_mb(con) > 20  # 48 MB of columns, compressed as DuckDB stores them
    assert release_cache(con) is True
    assert _cached_mb(con) < 2
    assert one(con, "SELECT current_setting('memory_limit')") == default
    assert one(con, "SELECT count(*) FROM big") == (3000000,)  # read back from the file
    con.execute("SET memory_limit = '3GB'")  # shown rounded: it could not be put back exactly
    one(con, "SELECT sum(h % 7) FROM big")
    assert release_cache(con) is False
    assert one(con, "SELECT current_setting('memory_limit')") == ("2.7 GiB",)
    assert _cached_mb(con) > 20
    con.close()
    assert release_cache(duckdb.connect(":memory:")) is False  # its tables live in the pool
