"""Hostile database paths: a --db that is not a kvtool DuckDB file is refused untouched, outputs
never overwrite the database or land on a directory, database faults are one line and exit 2,
and no connection can reach the network (issue 12, items 4, 5, 17, 22)."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from kvtool.cli import app
from kvtool.errors import InputError, SchemaError
from kvtool.store import atomic, connect, one

LOG = orjson.dumps({"id": "a", "model": "m", "messages": [{"role": "user", "content": "hi"}]})


def one_line_exit_2(result) -> str:
    """The CLI's error line, after checking it is one line, exit 2 and no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kvtool: error:"), result.stderr
    return lines[0]


def tables(path: Path) -> list[str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return sorted(
            r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        )
    finally:
        con.close()


# ---------------------------------------------------------------------------------------------
# item 4: only a DuckDB file is a database; a foreign DuckDB database is never modified


def _jsonl(path: Path) -> None:
    path.write_bytes(LOG + b"\n")


def _parquet(path: Path) -> None:
    pq.write_table(pa.table({"id": ["a"], "body": [LOG.decode()]}), path)


def _sqlite(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (i INTEGER)")
    con.commit()
    con.close()


@pytest.mark.parametrize("write", [_jsonl, _parquet, _sqlite], ids=["jsonl", "parquet", "sqlite"])
def test_db_that_is_not_a_duckdb_file_is_refused_untouched(tmp_path, write):
    path = tmp_path / "log.data"
    write(path)
    before = path.read_bytes()
    with pytest.raises(InputError, match="not a DuckDB database") as info:
        connect(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == before


def test_cli_ingest_into_a_jsonl_db_fails_instead_of_reporting_success(tmp_path):
    log = tmp_path / "log.jsonl"
    _jsonl(log)
    result = CliRunner().invoke(app, ["ingest", str(log), "--db", str(log)])
    line = one_line_exit_2(result)
    assert str(log) in line and "not a DuckDB database" in line
    assert log.read_bytes() == LOG + b"\n"


def test_empty_file_is_a_new_database(tmp_path):
    path = tmp_path / "made-by-mktemp.duckdb"
    path.touch()
    with connect(path) as con:
        assert one(con, "SELECT value FROM meta WHERE key = 'schema_version'") is not None


def test_foreign_duckdb_database_is_refused_untouched(tmp_path):
    path = tmp_path / "theirs.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE orders (id INTEGER)")
    con.execute("INSERT INTO orders VALUES (1), (2)")
    con.close()
    with pytest.raises(SchemaError, match="did not create") as info:
        connect(path)
    assert str(path) in str(info.value)
    assert tables(path) == ["orders"]  # no kvtool table, no schema_version stamped
    result = CliRunner().invoke(app, ["analyze", "--db", str(path)])
    assert "did not create" in one_line_exit_2(result)
    assert tables(path) == ["orders"]


# ---------------------------------------------------------------------------------------------
# item 5 (and 21's part): an output never overwrites the database, nor lands on a directory


def _db_with_a_log(tmp_path: Path) -> tuple[Path, Path]:
    log, db = tmp_path / "log.jsonl", tmp_path / "kv.duckdb"
    _jsonl(log)
    assert CliRunner().invoke(app, ["ingest", str(log), "--db", str(db)]).exit_code == 0
    return log, db


@pytest.mark.parametrize("command", ["report", "export"])
def test_output_that_is_the_database_is_refused(tmp_path, command):
    _, db = _db_with_a_log(tmp_path)
    before = db.read_bytes()
    same = tmp_path / "." / db.name  # another spelling of the same file
    result = CliRunner().invoke(app, [command, "-o", str(same), "--db", str(db)])
    line = one_line_exit_2(result)
    assert line.startswith("kvtool: error: --out ") and "is the database file" in line
    assert db.read_bytes() == before
    assert tables(db)  # still a database


@pytest.mark.parametrize("command", ["report", "export", "generate", "check"])
def test_output_that_is_a_directory_is_refused(tmp_path, command):
    log, db = _db_with_a_log(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    args = {
        "report": ["report", "-o", str(out), "--db", str(db)],
        "export": ["export", "-o", str(out), "--db", str(db)],
        "generate": ["generate", "-o", str(out), "--sessions", "1"],
        "check": ["check", str(log), "--baseline", str(log), "-o", str(out)],
    }[command]
    line = one_line_exit_2(CliRunner().invoke(app, args))
    flag = "--output" if command == "check" else "--out"
    assert line.startswith(f"kvtool: error: {flag} {out} is a directory"), line
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("command", ["analyze", "simulate"])
def test_html_page_is_checked_before_the_work(tmp_path, command):
    _, db = _db_with_a_log(tmp_path)
    before = db.read_bytes()
    line = one_line_exit_2(CliRunner().invoke(app, [command, "--db", str(db), "--html", str(db)]))
    assert line.startswith(f"kvtool: error: --html {db} is the database file"), line
    assert db.read_bytes() == before
    line = one_line_exit_2(
        CliRunner().invoke(app, [command, "--db", str(db), "--html", str(tmp_path)])
    )
    assert line.startswith(f"kvtool: error: --html {tmp_path} is a directory"), line


# ---------------------------------------------------------------------------------------------
# item 17: database faults are one line and exit 2; a lock is waited for, for a bounded time

HOLD = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])
print("held", flush=True)
sys.stdin.read()  # until the test closes our stdin
con.close()
"""


def _holder(db: Path) -> subprocess.Popen:
    """Another process holding ``db``'s lock until its stdin is closed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"held\n"
    return proc


def _release(proc: subprocess.Popen) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=10)


def test_locked_database_is_waited_for_then_refused_in_one_line(tmp_path, monkeypatch):
    db = tmp_path / "kv.duckdb"
    connect(db).close()
    proc = _holder(db)
    try:
        start = time.monotonic()
        with pytest.raises(InputError, match="locked by another process; waited 0.3 s"):
            connect(db, lock_wait=0.3)
        assert 0.3 <= time.monotonic() - start < 2
        monkeypatch.setenv("KVTOOL_DB_LOCK_WAIT", "0.2")
        line = one_line_exit_2(CliRunner().invoke(app, ["analyze", "--db", str(db)]))
        assert str(db) in line and "KVTOOL_DB_LOCK_WAIT" in line
    finally:
        _release(proc)


def test_a_second_writer_waits_for_the_lock_and_then_works(tmp_path):
    db = tmp_path / "kv.duckdb"
    connect(db).close()
    proc = _holder(db)
    timer = threading.Timer(0.3, _release, [proc])
    timer.start()
    try:
        with connect(db, lock_wait=10) as con:  # the holder lets go after 0.3 s
            assert one(con, "SELECT count(*) FROM files") == (0,)
    finally:
        timer.join()


def test_bad_lock_wait_setting_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("KVTOOL_DB_LOCK_WAIT", "soon")
    line = one_line_exit_2(CliRunner().invoke(app, ["analyze", "--db", str(tmp_path / "a.db")]))
    assert "KVTOOL_DB_LOCK_WAIT='soon' is not a number of seconds" in line


def _good_db(path: Path) -> bytes:
    with connect(path) as con:
        con.execute("INSERT INTO meta SELECT 'pad' || i, repeat('x', 100) FROM range(3000) t(i)")
    return path.read_bytes()


def _truncated(path: Path) -> None:
    data = _good_db(path)
    path.write_bytes(data[: len(data) // 2])


def _random_bytes(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 16)


def _directory(path: Path) -> None:
    path.mkdir()


def _corrupt_wal(path: Path) -> None:
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE t (i INTEGER)")
    con.execute("CHECKPOINT")
    con.execute("SET checkpoint_threshold = '1GB'")
    con.execute("INSERT INTO t SELECT range FROM range(1000)")
    # copy the file and its WAL while they are open: a crash, as the next process finds it
    copy = path.with_name("crashed.duckdb")
    copy.write_bytes(path.read_bytes())
    wal = bytearray(Path(f"{path}.wal").read_bytes())
    con.close()
    for k in range(200, len(wal), 7):  # past the header: the entries fail their checksums
        wal[k] ^= 0xFF
    path.unlink()
    copy.rename(path)
    Path(f"{path}.wal").write_bytes(bytes(wal))


def _bad_version(path: Path) -> None:
    _good_db(path)
    con = duckdb.connect(str(path))
    con.execute("UPDATE meta SET value = 'two\\x1b[31m' WHERE key = 'schema_version'")
    con.close()


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (_truncated, InputError, "cannot (open|read) the database"),
        (_random_bytes, InputError, "not a DuckDB database"),
        (_directory, InputError, "a directory, not a DuckDB database file"),
        (_corrupt_wal, InputError, "cannot open the database"),
        (_bad_version, SchemaError, "schema_version is not an integer"),
    ],
    ids=["truncated", "random-bytes", "directory", "corrupt-wal", "bad-schema-version"],
)
def test_broken_database_is_one_line_exit_2(tmp_path, make, error, words):
    db = tmp_path / "kv.duckdb"
    make(db)
    with pytest.raises(error, match=words) as info:
        connect(db)
    assert str(db) in str(info.value) and "\x1b" not in str(info.value)
    line = one_line_exit_2(CliRunner().invoke(app, ["analyze", "--db", str(db)]))
    assert re.search(words, line) and str(db) in line


def test_read_only_database_file_is_one_line_exit_2(tmp_path):
    db = tmp_path / "kv.duckdb"
    _good_db(db)
    db.chmod(0o444)
    immutable = False
    if os.access(db, os.W_OK):  # root ignores file modes; an immutable file stops root too
        immutable = subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode == 0
        if not immutable:
            pytest.skip("cannot make a file read-only for this user")
    try:
        with pytest.raises(InputError, match="cannot open the database") as info:
            connect(db)
        assert str(db) in str(info.value)
        line = one_line_exit_2(CliRunner().invoke(app, ["analyze", "--db", str(db)]))
        assert str(db) in line
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(db)], check=True)


def test_failed_rollback_does_not_mask_the_error(tmp_path):
    # the block ends the transaction itself, so atomic's rollback fails as on a full disk
    with connect(tmp_path / "kv.duckdb") as con:
        with pytest.raises(RuntimeError, match="the real error"), atomic(con):
            con.execute("INSERT INTO meta VALUES ('half', 'done')")
            con.execute("ROLLBACK")
            raise RuntimeError("the real error")
        assert one(con, "SELECT count(*) FROM meta WHERE key = 'half'") == (0,)


# ---------------------------------------------------------------------------------------------
# item 22: no kvtool connection can fetch an extension (a SQLite --db is refused by item 4)


def test_kvtool_connections_never_install_or_load_extensions(tmp_path):
    db = tmp_path / "kv.duckdb"
    sql = (
        "SELECT name, value FROM duckdb_settings() WHERE name IN "
        "('autoinstall_known_extensions', 'autoload_known_extensions') ORDER BY name"
    )
    off = [("autoinstall_known_extensions", "false"), ("autoload_known_extensions", "false")]
    with connect(db) as con:
        assert con.execute(sql).fetchall() == off
    with connect(db, read_only=True) as con:
        assert con.execute(sql).fetchall() == off
    with connect(":memory:") as con:
        assert con.execute(sql).fetchall() == off


def test_kvtool_connections_draw_no_duckdb_progress_bar(tmp_path):
    """DuckDB draws its progress bar on stdout for a query over 2 s: on a 10M-request trace
    that landed inside ``--json`` output. Every kvtool connection turns it off."""
    db = tmp_path / "kv.duckdb"
    sql = "SELECT current_setting('enable_progress_bar')"
    with connect(db) as con:
        assert con.execute(sql).fetchall() == [(False,)]
    with connect(db, read_only=True) as con:
        assert con.execute(sql).fetchall() == [(False,)]
    with connect(":memory:") as con:
        assert con.execute(sql).fetchall() == [(False,)]
