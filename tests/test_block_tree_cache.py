"""The hash trace's block tree, built once per file set and stored (``kvtool.store.trees``): the
stored tree gives the same workload as a rebuilt one, its key changes with the file set, a
database without the table still loads, and ``kvtool simulate`` starts without pandas or
kvtool.analyze. Real DuckDB files, real Mooncake-style traces."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pytest

from kvtool import ingest
from kvtool.progress import NullProgress
from kvtool.store import connect
from kvtool.store.arrow import numbers, valid
from kvtool.store.files import file_rows
from kvtool.store.requests import hash_request_table, processing_order
from kvtool.store.trees import load_tree, tree_key
from kvtool.traffic import load_traffic
from kvtool.traffic.hash_tree import HASH_TREE_RECIPE
from kvtool.traffic.workload import Workload, load_workload

B = 16


def _trace(path: Path, seed: int, n: int) -> Path:
    """``n`` requests sharing prefixes (ids drawn from a few chains), some with a partial last
    block, one without any full block, equal timestamps to exercise the tie order."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        root = int(rng.integers(0, 4))
        depth = int(rng.integers(0, 7))
        ids = [root * 100 + k for k in range(depth)] + [1000 + i]
        tokens = B * len(ids) - int(rng.integers(0, B))
        rec = {"timestamp": i // 3, "input_length": tokens, "output_length": 3, "hash_ids": ids}
        lines.append(orjson.dumps(rec))
    lines.append(
        orjson.dumps({"timestamp": 2, "input_length": 5, "output_length": 1, "hash_ids": [7]})
    )
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _equal(a: Workload, b: Workload) -> None:
    for f in fields(Workload):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype, f.name
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), f.name
        else:
            assert x == y, f.name


@pytest.fixture
def db(tmp_path: Path) -> tuple[str, list[int]]:
    path = str(tmp_path / "trees.duckdb")
    reports = ingest(
        [_trace(tmp_path / "a.jsonl", 1, 60), _trace(tmp_path / "b.jsonl", 2, 40)],
        db=path,
        hash_block_size=B,
    )
    return path, sorted(r.file_id for r in reports)


def _trees(con) -> int:
    return con.execute("SELECT count(*) FROM hash_tree_index").fetchall()[0][0]


def test_stored_tree_gives_the_rebuilt_workload(db):
    path, ids = db
    con = connect(path)
    built = load_workload(con, ids, None)  # built from the hash ids, then stored
    assert _trees(con) == 1
    key = tree_key(file_rows(con, ids), B, HASH_TREE_RECIPE)
    stored = load_tree(con, key)
    assert stored is not None
    assert np.array_equal(stored.req_ids, built.req_ids)
    assert np.array_equal(stored.end, built.end)
    assert np.array_equal(stored.parent, built.parent)
    assert np.array_equal(stored.depth, built.depth)
    loaded = load_workload(con, ids, None)  # from the stored tree
    _equal(built, loaded)
    assert _trees(con) == 1
    # 102 requests, those under B tokens without a full block; shared prefixes: fewer nodes
    # than blocks
    assert loaded.n == 102 and (loaded.end == -1).sum() == (loaded.n_tokens < B).sum() > 1
    assert len(loaded.parent) < int((loaded.depth[loaded.end[loaded.end >= 0]] + 1).sum())
    # stored ids in another order than the requests': the tree is rebuilt, never misapplied
    con.execute("UPDATE hash_tree_ends SET req_id = -1 - req_id")
    _equal(built, load_workload(con, ids, None))
    con.close()


def test_the_key_follows_the_file_set(db):
    path, ids = db
    con = connect(path)
    files = file_rows(con, ids)
    both = tree_key(files, B, HASH_TREE_RECIPE)
    assert tree_key(list(reversed(files)), B, HASH_TREE_RECIPE) == both
    assert tree_key(files[:1], B, HASH_TREE_RECIPE) != both
    assert tree_key(files, 2 * B, HASH_TREE_RECIPE) != both
    assert tree_key(files, B, HASH_TREE_RECIPE + "+") != both
    other = [files[0], type(files[1])(**{**vars(files[1]), "digest": "0" * 32})]
    assert tree_key(other, B, HASH_TREE_RECIPE) != both
    whole = load_workload(con, ids, None)
    first = load_workload(con, ids[:1], None)
    assert _trees(con) == 2  # one tree per file set
    assert first.n == 61 and whole.n == 102
    _equal(first, load_workload(con, ids[:1], None))
    con.close()


def test_a_database_without_the_table_still_loads(db):
    path, ids = db
    con = connect(path)
    built = load_workload(con, ids, None)
    for table in ("hash_tree_index", "hash_tree_ends", "hash_tree_nodes", "hash_tree_runs"):
        con.execute(f"DROP TABLE {table}")  # as a database of an older release
    # the layout before runs, with a row: dropped at the next writable open
    con.execute("CREATE TABLE hash_tree_keys (key VARCHAR, requests BIGINT, nodes BIGINT)")
    con.execute("INSERT INTO hash_tree_keys VALUES ('k', 1, 1)")
    con.close()
    con = connect(path, read_only=True)  # nothing is created or stored
    _equal(built, load_workload(con, ids, None))
    con.close()
    con = connect(path)  # opened writable: the table is created, the tree stored again
    assert _trees(con) == 0
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert "hash_tree_keys" not in tables and "hash_tree_runs" in tables
    _equal(built, load_workload(con, ids, None))
    assert _trees(con) == 1
    con.close()


def test_arrow_columns_to_numpy_without_pandas():
    chunked = pa.chunked_array([pa.array([1, None, 3], pa.int64()), pa.array([4, 5], pa.int64())])
    assert numbers(chunked, np.int64).tolist() == [1, 0, 3, 4, 5]
    assert np.array_equal(
        numbers(chunked, np.float64, np.nan), [1, np.nan, 3, 4, 5], equal_nan=True
    )
    assert valid(chunked).tolist() == [True, False, True, True, True]
    sliced = pa.array([9.5, None, 2.5, 7.0]).slice(1, 3)
    assert np.array_equal(numbers(sliced, np.float64, np.nan), [np.nan, 2.5, 7.0], equal_nan=True)
    flags = pa.array([True, False, None, True, True, False, False, True, True, False]).slice(3)
    assert numbers(flags, bool).tolist() == [True, True, False, False, True, True, False]
    assert numbers(pa.chunked_array([], pa.int32()), np.int64).tolist() == []


def test_simulate_imports_neither_pandas_nor_analyze(db):
    path, _ = db
    code = (
        "import sys\n"
        "from kvtool.cli import main\n"
        f"sys.argv = ['kvtool', 'simulate', '--db', {path!r}, '--blocks', '8', '--policy',"
        " 'fifo', '--concurrency', '1', '--json']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "loaded = [m for m in ('pandas', 'kvtool.analyze', 'kvtool.check') if m in sys.modules]\n"
        "print('LOADED', loaded, file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert '"token_hit_rate"' in out.stdout
    assert "LOADED []" in out.stderr, out.stderr


def test_traffic_holds_its_whole_tree_unless_read_by_partitions(db):
    """``load_traffic`` reads the whole tree before it returns (a script may close the
    connection, as bench/sample_accuracy.py does); with ``parts`` it reads it only when asked,
    so that analyze never holds it."""
    path, ids = db
    con = connect(path)
    traffic = load_traffic(
        con, paths=None, tokenizer=None, fmt=None, hash_block_size=B, progress=NullProgress()
    )
    parted = load_traffic(
        con,
        paths=None,
        tokenizer=None,
        fmt=None,
        hash_block_size=B,
        progress=NullProgress(),
        parts=True,
    )
    assert "wl" not in vars(parted) and len(parted.tree.head.parent) == 0
    whole = parted.wl  # read now, on the open connection
    con.close()
    _equal(traffic.wl, whole)
    assert traffic.wl.n == 102 and len(traffic.wl.parent) > 0


def test_requests_are_read_in_the_sql_processing_order(tmp_path):
    """The workload sorts its requests in NumPy (``processing_order``), not with DuckDB's
    ``ORDER BY``: the same order, ties in timestamp broken by file, then line. (A hash trace
    always has timestamps; the NaN-last rule is checked on its own below.)"""
    path = str(tmp_path / "order.duckdb")
    files = [_trace(tmp_path / "b.jsonl", 2, 30), _trace(tmp_path / "a.jsonl", 1, 30)]
    reports = ingest(files, db=path, hash_block_size=B)
    ids = sorted(r.file_id for r in reports)
    con = connect(path)
    sql = numbers(hash_request_table(con, ids).column("req_id"), np.int64)
    assert np.array_equal(load_workload(con, ids, None).req_ids, sql)
    assert not np.array_equal(sql, np.sort(sql))  # ties interleave the two files
    con.close()
    ts = np.array([2.0, np.nan, 1.0, 2.0, np.nan, 1.0])
    file_id = np.array([1, 0, 1, 0, 0, 0])
    line = np.array([1, 2, 2, 5, 1, 9])
    assert processing_order(ts, file_id, line).tolist() == [5, 2, 3, 0, 4, 1]
