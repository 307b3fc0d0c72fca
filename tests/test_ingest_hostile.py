"""Hostile inputs and faults during ingest (issue 12): each input is read once as a stream, its
identity is what was read, failed runs leave nothing behind, lines and row groups are bounded."""

from __future__ import annotations

import gzip
import os
import threading
import tracemalloc
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from kvtool.cli import app
from kvtool.errors import InputError
from kvtool.ingest import ingest_file, ingest_files
from kvtool.store import connect, one


def chat(i: int) -> bytes:
    """An id-less chat record: its request id is synthetic (digest and line)."""
    return orjson.dumps({"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]})


def hash_line(i: int) -> bytes:
    return orjson.dumps({"timestamp": i, "input_length": 512, "output_length": 1, "hash_ids": [i]})


def counts(con) -> tuple[int, int, int]:
    return tuple(one(con, f"SELECT count(*) FROM {t}")[0] for t in ("files", "requests", "rejects"))


# ---------------------------------------------------------------------------------------------
# item 1: the identity is computed from the bytes read


def test_file_growing_during_ingest_is_stored_as_read(con, tmp_path):
    path = tmp_path / "grow.jsonl"
    path.write_bytes(b"".join(hash_line(i) + b"\n" for i in range(2100)))
    extra = b"".join(hash_line(i) + b"\n" for i in range(2100, 2200))
    grown = []

    def grow(_: int) -> None:
        if not grown:
            grown.append(True)
            with path.open("ab") as f:
                f.write(extra)

    (first,) = ingest_files(con, [path], progress=grow)
    assert first.lines == first.requests == 2200
    assert one(con, "SELECT bytes FROM files") == (path.stat().st_size,)
    (again,) = ingest_files(con, [path])
    assert again.skipped
    assert counts(con) == (1, 2200, 0)


def test_file_truncated_during_ingest_does_not_block_the_original(con, tmp_path):
    path = tmp_path / "cut.jsonl"
    original = b"".join(hash_line(i) + b"\n" for i in range(2100))
    path.write_bytes(original)
    cut = []

    def truncate(_: int) -> None:
        if not cut:
            cut.append(True)
            os.truncate(path, 1000)

    (first,) = ingest_files(con, [path], progress=truncate)
    assert 0 < first.lines < 2100
    path.write_bytes(original)
    (again,) = ingest_files(con, [path])
    assert not again.skipped and again.requests == 2100


# ---------------------------------------------------------------------------------------------
# item 2: identity independent of compression and line endings


def test_same_content_gz_crlf_extra_newline_is_ingested_once(con, tmp_path):
    body = b"".join(chat(i) + b"\n" for i in range(5))
    plain = tmp_path / "log.jsonl"
    plain.write_bytes(body)
    variants = {
        "log.jsonl.gz": gzip.compress(body),
        "crlf.jsonl": body.replace(b"\n", b"\r\n"),
        "extra.jsonl": body + b"\n",
        "nofinal.jsonl": body.rstrip(b"\n"),
    }
    (first,) = ingest_files(con, [plain])
    ids = con.execute("SELECT request_id FROM requests ORDER BY line").fetchall()
    for name, data in variants.items():
        (tmp_path / name).write_bytes(data)
    reports = ingest_files(con, [tmp_path / name for name in variants])
    assert all(r.skipped for r in reports)
    assert counts(con) == (1, 5, 0)
    # synthetic ids keep the scheme <digest[:12]>:<line>
    (digest,) = one(con, "SELECT digest FROM files")
    assert [r for (r,) in ids] == [f"{digest[:12]}:{i}" for i in range(1, 6)]


# ---------------------------------------------------------------------------------------------
# item 3: a run that rejects every line records nothing


def test_wrong_format_records_nothing_and_the_corrected_run_loads(con, tmp_path):
    path = tmp_path / "trace.jsonl"
    path.write_bytes(b"".join(hash_line(i) + b"\n" for i in range(4)))
    with pytest.raises(InputError, match=r"trace\.jsonl: looks like mooncake, not openai-chat"):
        ingest_files(con, [path], fmt="openai-chat")
    assert counts(con) == (0, 0, 0)
    (report,) = ingest_files(con, [path])
    assert (report.requests, report.skipped) == (4, False)


def test_wrong_hash_block_size_on_the_cli_is_one_line_exit_2(tmp_path):
    path = tmp_path / "trace.jsonl"
    rec = {"timestamp": 0, "input_length": 1100, "output_length": 1, "hash_ids": [1, 2, 3]}
    path.write_bytes(orjson.dumps(rec) + b"\n")
    db = str(tmp_path / "x.duckdb")
    result = CliRunner().invoke(app, ["ingest", str(path), "--db", db, "--hash-block-size", "256"])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "needs 5" in result.stderr
    result = CliRunner().invoke(app, ["ingest", str(path), "--db", db, "--json"])
    assert result.exit_code == 0 and orjson.loads(result.stdout)["files"][0]["requests"] == 1


# ---------------------------------------------------------------------------------------------
# item 4: FIFOs, pipes and stdin are read once as streams


def _writer(target: str | int, data: bytes) -> threading.Thread:
    """Write ``data`` to a path or a pipe's write end from a thread, then close it."""

    def write() -> None:
        with open(target, "wb") as f:  # an int is a file descriptor: closed when done
            f.write(data)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def test_fifo_is_read_once(con, tmp_path):
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    thread = _writer(str(fifo), b"".join(chat(i) + b"\n" for i in range(3)))
    (report,) = ingest_files(con, [fifo])
    thread.join(5)
    assert (report.requests, report.format) == (3, "openai-chat")


def test_process_substitution_pipe_is_read(con):
    r, w = os.pipe()
    thread = _writer(w, gzip.compress(chat(1) + b"\n"))
    try:
        (report,) = ingest_files(con, [Path(f"/dev/fd/{r}")])
    finally:
        os.close(r)
    thread.join(5)
    assert report.requests == 1


def test_stdin_dash_on_the_cli(tmp_path):
    db = str(tmp_path / "x.duckdb")
    data = b"".join(chat(i) + b"\n" for i in range(2))
    result = CliRunner().invoke(app, ["ingest", "-", "--db", db, "--json"], input=data)
    assert result.exit_code == 0, result.output
    (file,) = orjson.loads(result.stdout)["files"]
    assert (file["path"], file["requests"]) == ("<stdin>", 2)


def test_parquet_from_a_pipe_is_one_clear_error(con, tmp_path):
    pq.write_table(pa.Table.from_pylist([orjson.loads(hash_line(1))]), tmp_path / "t.parquet")
    r, w = os.pipe()
    thread = _writer(w, (tmp_path / "t.parquet").read_bytes())
    try:
        with pytest.raises(InputError, match="Parquet needs random access"):
            ingest_files(con, [Path(f"/dev/fd/{r}")])
    finally:
        os.close(r)
    thread.join(5)
    assert counts(con) == (0, 0, 0)


def test_dev_zero_is_refused_by_the_line_limit(con):
    with pytest.raises(InputError, match=r"/dev/zero:1: not JSON Lines .*longer than 1024 bytes"):
        ingest_files(con, [Path("/dev/zero")], max_line_bytes=1024)


# ---------------------------------------------------------------------------------------------
# item 5: a per-line limit with bounded memory


def test_over_long_line_in_gz_is_rejected_with_bounded_memory(con, tmp_path):
    long_line = b'{"model": "m", "messages": "' + b"x" * (4 << 20) + b'"}'
    path = tmp_path / "long.jsonl.gz"
    path.write_bytes(gzip.compress(chat(1) + b"\n" + long_line + b"\n" + chat(3) + b"\n"))
    assert path.stat().st_size < 100_000
    tracemalloc.start()
    try:
        (report,) = ingest_files(con, [path], max_line_bytes=1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20
    assert (report.lines, report.requests, report.rejected) == (3, 2, 1)
    (line, reason, raw) = one(con, "SELECT line, reason, raw FROM rejects")
    assert (line, reason) == (2, "line longer than 1024 bytes")
    assert len(raw) <= 1024


def test_max_line_bytes_on_the_cli(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(chat(1) + b"\n" + chat(2) + b"x" * 200 + b"\n")
    db = str(tmp_path / "x.duckdb")
    result = CliRunner().invoke(
        app, ["ingest", str(path), "--db", db, "--max-line-bytes", "100", "--json"]
    )
    assert result.exit_code == 0, result.output
    (file,) = orjson.loads(result.stdout)["files"]
    assert (file["requests"], file["reject_reasons"]) == (1, {"line longer than 100 bytes": 1})
    result = CliRunner().invoke(app, ["ingest", str(path), "--db", db, "--max-line-bytes", "0"])
    assert result.exit_code == 2 and "--max-line-bytes must be positive" in result.stderr


# ---------------------------------------------------------------------------------------------
# item 6: Parquet row groups


def _parquet(path: Path, n: int = 30, group: int = 10) -> None:
    table = pa.Table.from_pylist([orjson.loads(hash_line(i)) for i in range(n)])
    pq.write_table(table, path, row_group_size=group, compression="snappy")


def test_corrupt_parquet_row_group_is_rejected_and_the_others_load(con, tmp_path):
    path = tmp_path / "t.parquet"
    _parquet(path)
    data = bytearray(path.read_bytes())
    col = pq.ParquetFile(path).metadata.row_group(1).column(3)  # hash_ids of rows 11-20
    start = (col.dictionary_page_offset or col.data_page_offset) + col.total_compressed_size
    for i in range(col.data_page_offset + 8, start):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))

    (report,) = ingest_files(con, [path])

    assert (report.lines, report.requests, report.rejected) == (30, 20, 10)
    rejects = con.execute("SELECT line, reason FROM rejects ORDER BY line").fetchall()
    assert [line for line, _ in rejects] == list(range(11, 21))
    assert all(reason.startswith("row group 1 cannot be decoded") for _, reason in rejects)
    assert [r for (r,) in con.execute("SELECT line FROM requests ORDER BY 1").fetchall()] == [
        *range(1, 11),
        *range(21, 31),
    ]


def test_parquet_deleted_during_ingest_keeps_what_was_read(con, tmp_path):
    path = tmp_path / "t.parquet"
    _parquet(path)

    def delete(_: int) -> None:
        path.unlink(missing_ok=True)

    report = ingest_file(con, path, progress=delete)
    assert not path.exists()
    assert (report.lines, report.requests) == (30, 30)
    assert counts(con) == (1, 30, 0)


def test_analyze_takes_the_line_limit_too(tmp_path):
    log = tmp_path / "long.jsonl"
    long = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "a" * 3000}]})
    log.write_bytes(long + b"\n" + chat(1) + b"\n")
    db = str(tmp_path / "a.duckdb")
    r = CliRunner().invoke(app, ["analyze", str(log), "--db", db, "--max-line-bytes", "1000"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["analyze", "--db", db, "--json"])
    summary = orjson.loads(r.stdout)
    assert (summary["requests"], summary["rejected_lines"]) == (1, 1)
    with connect(db) as con:
        assert one(con, "SELECT reason FROM rejects") == ("line longer than 1000 bytes",)
    r = CliRunner().invoke(app, ["analyze", str(log), "--db", db, "--max-line-bytes", "0"])
    assert r.exit_code == 2 and "--max-line-bytes must be positive" in r.stderr


def test_file_name_that_is_not_utf8_is_stored_and_printed(tmp_path):
    folder = os.fsencode(tmp_path) + b"/caf\xff"
    os.mkdir(folder)
    log = Path(os.fsdecode(folder + b"/x.jsonl"))
    log.write_bytes(chat(0) + b"\n{bad\n")
    db = str(tmp_path / "n.duckdb")
    r = CliRunner().invoke(app, ["ingest", str(log), "--db", db, "--json"])
    assert r.exit_code == 0, r.output
    (report,) = orjson.loads(r.stdout)["files"]
    assert report["path"].endswith("caf\\xff/x.jsonl") and report["rejected"] == 1
    with connect(db) as con:
        assert one(con, "SELECT path FROM rejects")[0].endswith("caf\\xff/x.jsonl")
    r = CliRunner().invoke(app, ["ingest", os.fsdecode(folder + b"/nope.jsonl"), "--db", db])
    assert r.exit_code == 2 and "caf\\xff/nope.jsonl: no such file" in r.stderr
