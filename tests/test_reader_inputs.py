"""Reading inputs (issue 13, "Inputs"): CSV, zstd, directories and globs, JSON documents.

Every input is a real file written by a real library, from the shared conversation set
(``conversations.calls()`` as OpenAI chat gateway records), so each one must ingest field by
field and analyze to the reference's hit rates:
- CSV by Python's ``csv`` module (RFC 4180, CRLF line ends, ``""`` inside quotes), nested
  values as JSON text in their cells, as LiteLLM's, Helicone's and Langfuse's CSV exports do;
- zstd by pyarrow's zstd codec (the standard frame format, RFC 8878); the bomb is a frame of
  RLE blocks built by hand after RFC 8878 (section 3.1.1);
- JSON documents in the shapes the tools write: Langfuse's UI export (``transformStreamToJson``
  in langfuse/langfuse: one compact array, no newline), Helicone's export tool
  (``examples/export/typescript`` in Helicone/helicone: ``[``, each record indented and
  followed by ``,``, then ``]``, so a trailing comma), and API list responses (Langfuse
  ``{"data": [...], "meta": {...}}``, Helicone ``{"data": [...], "error": null}``).
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import tracemalloc
import zlib
from itertools import accumulate
from pathlib import Path

import orjson
import pyarrow as pa
import pytest
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
from typer.testing import CliRunner

from kvtool.cli import app
from kvtool.errors import InputError
from kvtool.ingest import ingest_files, ingest_paths
from kvtool.ingest.decode import ZSTD_TAIL_READ
from kvtool.ingest.paths import expand_paths
from kvtool.ingest.reader import open_input
from kvtool.store import one

CALLS = calls()
RECORDS = [openai_chat_record(c) for c in CALLS]
COLUMNS = ("request_id", "created", "metadata", "request", "response")


def csv_bytes(records: list[dict], extra_rows: tuple[bytes, ...] = ()) -> bytes:
    """Gateway records as a CSV export: nested values as JSON text, CRLF line ends."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    for r in records:
        nested = [orjson.dumps(r[k]).decode() for k in COLUMNS[2:]]
        w.writerow([r["request_id"], r["created"], *nested])
    return buf.getvalue().encode() + b"".join(extra_rows)


def zstd(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as out:
        out.write(data)
    return sink.getvalue().to_pybytes()


def zstd_rle_frame(byte: bytes, size: int) -> bytes:
    """A zstd frame of ``size`` copies of ``byte``: no content size, no checksum, a 128 KiB
    window, and RLE blocks of 128 KiB that take 4 bytes each (a ratio of 32768)."""
    out = bytearray(b"\x28\xb5\x2f\xfd\x00\x38")
    left = size
    while left:
        n = min(1 << 17, left)
        left -= n
        out += ((n << 3) | 0b010 | (left == 0)).to_bytes(3, "little") + byte
    return bytes(out)


@pytest.fixture(scope="module")
def reference_rates(tmp_path_factory) -> tuple[float, float | None]:
    """The hit rates of the reference records (OpenAI chat JSON Lines)."""
    tmp = tmp_path_factory.mktemp("reference")
    return hit_rates(reference_file(tmp, CALLS), tmp)


def assert_reference(
    tmp_path: Path, path: Path, *, lines: list[int], rates: tuple | None = None
) -> None:
    """``path`` holds the reference calls: field by field, at ``lines``; and, given the
    reference's ``rates``, it analyzes to the same hit rates."""
    con, report = ingest_one(tmp_path, path)
    assert (report.format, report.requests, report.rejected) == ("openai-chat", len(CALLS), 0)
    assert_accounted(con)
    assert_matches_calls(stored_requests(con), CALLS, cache_write=False)
    by_id = dict(con.execute("SELECT request_id, line FROM requests").fetchall())
    assert [by_id[r["request_id"]] for r in RECORDS] == lines
    con.close()
    if rates is not None:
        assert hit_rates(path, tmp_path) == rates


def read_lines(path: Path, **kw) -> list:
    with open_input(path, **kw) as stream:
        return list(stream.lines())


# ---------------------------------------------------------------------------------------------
# CSV


def test_csv_export_reads_as_its_records(tmp_path, reference_rates):
    path = tmp_path / "export.csv"
    path.write_bytes(csv_bytes(RECORDS))
    # the header is record 1: the rows are lines 2..13
    lines = list(range(2, 2 + len(RECORDS)))
    assert_reference(tmp_path, path, lines=lines, rates=reference_rates)


def test_csv_identity_ignores_compression_crlf_and_final_newline(con, tmp_path):
    body = csv_bytes(RECORDS)
    lf = body.replace(b"\r\n", b"\n")
    variants = {
        "crlf.csv": body,
        "lf.csv": lf,
        "lf.csv.gz": gzip.compress(lf),
        "lf.csv.zst": zstd(lf),
        "nofinal.csv": lf.rstrip(b"\n"),
        "extra.csv": lf + b"\n",
    }
    for name, data in variants.items():
        (tmp_path / name).write_bytes(data)
    first, *rest = ingest_files(con, [tmp_path / name for name in variants])
    assert (first.requests, first.lines) == (len(RECORDS), len(RECORDS))
    assert all(r.skipped for r in rest)
    assert one(con, "SELECT count(*) FROM files") == (1,)
    # a reordered row is other content
    rows = body.split(b"\r\n")
    (tmp_path / "swapped.csv").write_bytes(b"\r\n".join([rows[0], rows[2], rows[1], *rows[3:]]))
    (swapped,) = ingest_files(con, [tmp_path / "swapped.csv"])
    assert not swapped.skipped and swapped.rejected == len(RECORDS)  # the same request ids


def test_csv_cells_are_json_values_or_text(tmp_path):
    path = tmp_path / "cells.csv"
    path.write_bytes(
        b"id,tokens,ratio,flag,body,note,empty\n"
        b'0042,12,1.5,True,"{""a"": [1, 2]}",1.50,\n'
        b"7,,1e5,false,{oops,null,\n"
        b'x,3,-0,TRUE,"[1, ""two""]","multi\nline, quoted",""\n'
        b"y,4,2.0,no,plain,text,\n"
    )
    got = [(line.number, line.parsed) for line in read_lines(path)]
    # numbers are record numbers (header = 1): the quoted newline makes record 5 line 6
    assert got == [
        (
            2,
            {
                "id": "0042",
                "tokens": 12,
                "ratio": 1.5,
                "flag": True,
                "body": {"a": [1, 2]},
                "note": "1.50",
            },
        ),
        (3, {"id": 7, "ratio": "1e5", "flag": False, "body": "{oops"}),  # blank and null: no key
        (
            4,
            {
                "id": "x",
                "tokens": 3,
                "ratio": "-0",
                "flag": True,
                "body": [1, "two"],
                "note": "multi\nline, quoted",
            },
        ),
        (5, {"id": "y", "tokens": 4, "ratio": 2.0, "flag": "no", "body": "plain", "note": "text"}),
    ]


def test_csv_bad_rows_are_rejects_and_the_rest_loads(con, tmp_path):
    good = RECORDS[:4]
    extra = csv_bytes(good[:1]).split(b"\r\n")[1].replace(b"req-1-0-0", b"req-x") + b",extra\r\n"
    utf8 = csv_bytes(good[:1]).split(b"\r\n")[1].replace(b"req-1-0-0", b"req-\xff") + b"\r\n"
    padded = dict(good[0], request_id="req-long", metadata={"pad": "p" * 20_000})
    long_row = csv_bytes([padded]).split(b"\r\n")[1] + b"\r\n"
    path = tmp_path / "bad.csv"
    path.write_bytes(csv_bytes(good, (extra, utf8, long_row)))

    (report,) = ingest_files(con, [path], max_line_bytes=10_000)

    assert (report.lines, report.requests, report.rejected) == (7, 4, 3)
    rejects = con.execute("SELECT line, reason, raw FROM rejects ORDER BY line").fetchall()
    assert [(line, reason) for line, reason, _ in rejects] == [
        (6, "CSV row has 6 cells, expected 5"),
        (7, "CSV row: invalid UTF-8"),
        (8, "row longer than 10000 bytes"),
    ]
    assert rejects[0][2].endswith(",extra") and "req-\\xff" in rejects[1][2]
    assert len(rejects[2][2]) <= 1024
    assert [r for (r,) in con.execute("SELECT line FROM requests ORDER BY 1").fetchall()] == [
        2,
        3,
        4,
        5,
    ]


def test_csv_segments_never_split_a_quoted_cell(tmp_path):
    """Several MiB of rows whose cells hold newlines, quotes and commas: every segment boundary
    falls between rows, and record numbers run on across segments."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "note", "pad"])
    notes = [f'line {i}\nsaid "hi", then\r\nleft' * (1 + i % 7) for i in range(4000)]
    for i, note in enumerate(notes):
        w.writerow([f"r{i}", note, "x" * (i % 1500)])
        if i == 2500:
            buf.write("bad,row,with,too,many\r\n")
    path = tmp_path / "many.csv"
    path.write_bytes(buf.getvalue().encode())
    assert path.stat().st_size > 3 << 20  # over three segments

    lines = read_lines(path)

    bad = [line for line in lines if line.error is not None]
    assert [(x.number, x.error) for x in bad] == [(2503, "CSV row has 5 cells, expected 3")]
    good = [line for line in lines if line.error is None]
    assert [x.parsed["id"] for x in good] == [f"r{i}" for i in range(4000)]
    assert [x.parsed["note"] for x in good] == notes
    assert [x.number for x in good] == [*range(2, 2503), *range(2504, 4003)]


def test_csv_row_longer_than_the_limit_streams_with_bounded_memory(con, tmp_path):
    padded = dict(RECORDS[1], metadata={"pad": "p" * (4 << 20)})
    path = tmp_path / "long.csv.gz"
    path.write_bytes(gzip.compress(csv_bytes([RECORDS[0], padded, RECORDS[2]])))
    assert path.stat().st_size < 100_000
    tracemalloc.start()
    try:
        (report,) = ingest_files(con, [path], max_line_bytes=8192)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 << 20
    assert (report.lines, report.requests, report.rejected) == (3, 2, 1)
    assert one(con, "SELECT line, reason FROM rejects") == (3, "row longer than 8192 bytes")
    assert one(con, "SELECT line FROM requests WHERE request_id = 'req-1-1-0'") == (4,)


def test_csv_in_a_cut_off_gzip_rejects_the_partial_row(con, tmp_path):
    many = [dict(r, request_id=f"{r['request_id']}-{i}") for i in range(40) for r in RECORDS]
    data = gzip.compress(csv_bytes(many))
    cut = data[: len(data) // 2]
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(cut)
    # what an independent decoder recovers: whole rows (no cell holds a newline) after the header
    readable = zlib.decompressobj(wbits=31).decompress(cut).count(b"\n") - 1
    assert 0 < readable < len(many)

    (report,) = ingest_files(con, [path])

    assert (report.requests, report.rejected, report.lines) == (readable, 1, readable + 1)
    line, reason = one(con, "SELECT line, reason FROM rejects")
    assert line == readable + 2 and reason.startswith("compressed stream is cut off")


def test_csv_on_stdin_is_recognized_by_its_first_line(tmp_path):
    db = str(tmp_path / "x.duckdb")
    result = CliRunner().invoke(
        app, ["ingest", "-", "--db", db, "--json"], input=csv_bytes(RECORDS)
    )
    assert result.exit_code == 0, result.output
    (file,) = orjson.loads(result.stdout)["files"]
    assert (file["path"], file["format"], file["requests"]) == ("<stdin>", "openai-chat", 12)


def test_csv_header_problems_are_one_line(con, tmp_path):
    path = tmp_path / "dup.csv"
    path.write_bytes(b"model,messages,model\nm,[],m\n")
    with pytest.raises(InputError, match=r"dup\.csv: CSV header repeats column 'model'"):
        ingest_files(con, [path])
    path = tmp_path / "wide.csv"
    path.write_bytes(b"a" * 5000 + b",b\n1,2\n")
    with pytest.raises(InputError, match=r"wide\.csv: CSV header longer than 1000 bytes"):
        ingest_files(con, [path], max_line_bytes=1000)
    assert one(con, "SELECT count(*) FROM files") == (0,)


# ---------------------------------------------------------------------------------------------
# zstd


def test_zstd_reads_like_the_plain_file(con, tmp_path, reference_rates):
    plain = write_jsonl(tmp_path / "log.jsonl", RECORDS)
    body = plain.read_bytes()
    (tmp_path / "log.jsonl.zst").write_bytes(zstd(body))
    (tmp_path / "frames.jsonl.zst").write_bytes(zstd(body[:5000]) + zstd(body[5000:]))
    (tmp_path / "misnamed.jsonl").write_bytes(zstd(body))  # by magic bytes, whatever the name
    zst = tmp_path / "log.jsonl.zst"
    assert_reference(tmp_path, zst, lines=list(range(1, 13)), rates=reference_rates)
    first, *rest = ingest_files(
        con,
        [plain] + [tmp_path / n for n in ("log.jsonl.zst", "frames.jsonl.zst", "misnamed.jsonl")],
    )
    assert first.requests == 12 and all(r.skipped for r in rest)


def test_zstd_cut_off_keeps_the_lines_before_it(con, tmp_path):
    lines = [orjson.dumps(r) + b"\n" for r in RECORDS]
    frames = [zstd(line) for line in lines]  # one frame (one block) per line
    data = b"".join(frames[:7]) + frames[7][: len(frames[7]) // 2]
    path = tmp_path / "cut.jsonl.zst"
    path.write_bytes(data)
    # frames 0-6 decode; the read that reaches the cut returns nothing (pyarrow), and reads
    # near the end take ZSTD_TAIL_READ bytes: the lines that end before the last such read
    decodable = len(b"".join(lines[:7]))
    delivered = decodable - decodable % ZSTD_TAIL_READ
    kept = sum(1 for end in accumulate(map(len, lines[:7])) if end <= delivered)
    assert kept >= 6

    (report,) = ingest_files(con, [path])

    assert (report.requests, report.rejected, report.lines) == (kept, 1, kept + 1)
    line, reason = one(con, "SELECT line, reason FROM rejects")
    assert line == kept + 1 and reason.startswith("compressed stream is cut off")
    ids = [r for (r,) in con.execute("SELECT request_id FROM requests ORDER BY line").fetchall()]
    assert ids == [r["request_id"] for r in RECORDS[:kept]]


@pytest.mark.parametrize(
    "data", [b"\x28\xb5\x2f\xfd" + b"\xff" * 64, b"\x28\xb5\x2f\xfd\x00"], ids=["corrupt", "cut"]
)
def test_unreadable_zstd_is_one_line(con, tmp_path, data):
    path = tmp_path / "bad.jsonl.zst"
    path.write_bytes(data)
    with pytest.raises(InputError, match=r"bad\.jsonl\.zst: not a readable zstd file \(.+\)"):
        ingest_files(con, [path])
    assert one(con, "SELECT count(*) FROM files") == (0,)


def test_zstd_bomb_is_inflated_in_bounded_chunks(con, tmp_path):
    bomb = zstd_rle_frame(b"x", 64 << 20)  # one 64 MiB line from 2 KiB
    line = orjson.dumps(RECORDS[0]) + b"\n"
    path = tmp_path / "bomb.jsonl.zst"
    path.write_bytes(zstd(line) + bomb + zstd(b"\n" + orjson.dumps(RECORDS[1]) + b"\n"))
    assert path.stat().st_size < 4_000
    pool = pa.default_memory_pool()
    before = pool.max_memory() or 0
    tracemalloc.start()
    try:
        (report,) = ingest_files(con, [path], max_line_bytes=1024 * 16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20  # Python side
    assert (pool.max_memory() or 0) < before + (16 << 20)  # Arrow side
    assert (report.lines, report.requests, report.rejected) == (3, 2, 1)
    assert one(con, "SELECT line, reason FROM rejects") == (2, "line longer than 16384 bytes")


def test_compressed_parquet_is_one_line(con, tmp_path):
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"model": "m", "messages": "[]"}]), tmp_path / "t.parquet")
    path = tmp_path / "t.parquet.gz"
    path.write_bytes(gzip.compress((tmp_path / "t.parquet").read_bytes()))
    with pytest.raises(InputError, match=r"Parquet inside gzip cannot be read; decompress it"):
        ingest_files(con, [path])


# ---------------------------------------------------------------------------------------------
# directories and globs


def _log_tree(root: Path) -> list[Path]:
    """The reference records spread over a tree with junk; returns the log files, sorted."""
    sub = root / "sub"
    sub.mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "a.csv").write_bytes(csv_bytes(RECORDS[0:3]))
    write_jsonl(root / "b.jsonl", RECORDS[3:6])
    (root / "e.jsonl.zst").write_bytes(
        zstd(b"".join(orjson.dumps(r) + b"\n" for r in RECORDS[11:]))
    )
    (sub / "c.jsonl.gz").write_bytes(
        gzip.compress(b"".join(orjson.dumps(r) + b"\n" for r in RECORDS[6:9]))
    )
    (sub / "d.json").write_bytes(orjson.dumps(RECORDS[9:11], option=orjson.OPT_INDENT_2))
    # junk: never read (each would fail or duplicate ids if it were)
    write_jsonl(root / ".hidden.jsonl", RECORDS)
    write_jsonl(root / ".git" / "x.jsonl", RECORDS)
    (root / "README.md").write_text("# logs\n")
    (root / "notes.txt").write_text("a, b\n")
    (root / "SHA256SUMS").write_text("0" * 64 + "  b.jsonl\n")
    (sub / "core").write_bytes(os.urandom(256))
    return [
        root / "a.csv",
        root / "b.jsonl",
        root / "e.jsonl.zst",
        sub / "c.jsonl.gz",
        sub / "d.json",
    ]


def test_directory_reads_its_log_files_sorted_and_skips_the_rest(tmp_path, reference_rates):
    root = tmp_path / "logs"
    files = _log_tree(root)
    assert (
        expand_paths([root])
        == sorted(files)
        == [
            root / "a.csv",
            root / "b.jsonl",
            root / "e.jsonl.zst",
            root / "sub" / "c.jsonl.gz",
            root / "sub" / "d.json",
        ]
    )
    db = str(tmp_path / "dir.duckdb")
    result = CliRunner().invoke(app, ["ingest", str(root), "--db", db, "--json"])
    assert result.exit_code == 0, result.output
    got = [(f["path"], f["requests"], f["rejected"]) for f in orjson.loads(result.stdout)["files"]]
    assert got == [(str(p), n, 0) for p, n in zip(sorted(files), (3, 3, 1, 3, 2), strict=True)]
    # the directory is the reference traffic, split over five files
    assert hit_rates(root, tmp_path) == reference_rates


def test_globs_expand_and_empty_ones_are_one_line(con, tmp_path):
    root = tmp_path / "logs"
    _log_tree(root)
    pattern = str(root / "**" / "*.jsonl*")
    assert expand_paths([pattern]) == [
        root / "b.jsonl",
        root / "e.jsonl.zst",
        root / "sub" / "c.jsonl.gz",
    ]
    assert expand_paths([str(tmp_path / "lo?s")]) == expand_paths([root])  # a matched directory
    reports = ingest_files(con, [pattern])
    assert [r.requests for r in reports] == [3, 1, 3]

    with pytest.raises(InputError, match=r"\*\.nothing: no files match$"):
        ingest_files(con, [str(root / "*.nothing")])
    empty = tmp_path / "empty"
    (empty / ".cache").mkdir(parents=True)
    (empty / "README.md").write_text("nothing here\n")
    write_jsonl(empty / ".cache" / "x.jsonl", RECORDS)
    with pytest.raises(InputError, match=r"empty: no log files in the directory \(looked for"):
        ingest_files(con, [empty])
    result = CliRunner().invoke(
        app, ["analyze", str(root / "*.nothing"), "--db", str(tmp_path / "g.duckdb")]
    )
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "no files match" in result.stderr


def test_a_literal_path_with_glob_characters_is_taken_as_is(tmp_path):
    path = write_jsonl(tmp_path / "day[1].jsonl", RECORDS[:2])
    assert expand_paths([path, "-"]) == [path, Path("-")]
    assert expand_paths([tmp_path / "gone.jsonl"]) == [tmp_path / "gone.jsonl"]  # "no such file"


class _Recorder:
    def __init__(self) -> None:
        self.stages: list[tuple[str, float | None]] = []
        self.advanced = 0.0

    def stage(self, name: str, total: float | None) -> None:
        self.stages.append((name, total))

    def advance(self, amount: float) -> None:
        self.advanced += amount

    def update(self, completed: float, total: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass


def test_progress_is_sized_by_the_files_a_directory_stands_for(con, tmp_path):
    root = tmp_path / "logs"
    files = _log_tree(root)
    progress = _Recorder()
    ingest_paths(con, [root], progress=progress)
    size = sum(p.stat().st_size for p in files)
    assert progress.stages == [("ingest", size)] and progress.advanced == size


# ---------------------------------------------------------------------------------------------
# JSON documents


def test_compact_array_export_reads_as_its_records(tmp_path, reference_rates):
    path = tmp_path / "langfuse-export.json"
    path.write_bytes(orjson.dumps(RECORDS))  # one line, no final newline
    # numbered by element
    assert_reference(tmp_path, path, lines=list(range(1, 13)), rates=reference_rates)


def test_indented_array_with_a_trailing_comma_reads_as_its_records(tmp_path):
    body = b"".join(orjson.dumps(r, option=orjson.OPT_INDENT_2) + b",\n" for r in RECORDS)
    path = tmp_path / "output.json"
    path.write_bytes(b"[\n" + body + b"]\n")
    assert_reference(tmp_path, path, lines=list(range(1, 13)))


@pytest.mark.parametrize(
    "envelope",
    [{"data": RECORDS, "meta": {"page": 1, "totalItems": 12}}, {"data": RECORDS, "error": None}],
    ids=["langfuse", "helicone"],
)
@pytest.mark.parametrize("indent", [True, False], ids=["indented", "compact"])
def test_list_envelope_reads_as_its_data(tmp_path, envelope, indent):
    path = tmp_path / "page.json"
    path.write_bytes(orjson.dumps(envelope, option=orjson.OPT_INDENT_2 if indent else 0))
    assert_reference(tmp_path, path, lines=list(range(1, 13)))


def test_indented_object_is_one_record_and_not_unwrapped(tmp_path):
    path = tmp_path / "one.log"
    path.write_bytes(orjson.dumps(RECORDS[0], option=orjson.OPT_INDENT_2) + b"\n")
    (line,) = read_lines(path)
    assert (line.number, line.parsed) == (1, RECORDS[0])
    # an object that is not a list envelope keeps its lists (an OTLP batch splits itself)
    batch = {"resourceSpans": [{"scopeSpans": []}], "data": [1]}
    path.write_bytes(orjson.dumps(batch, option=orjson.OPT_INDENT_2))
    assert [x.parsed for x in read_lines(path)] == [batch]


def test_json_lines_are_never_read_as_a_document(con, tmp_path):
    # a broken first line that starts like a document: the other lines are records
    path = tmp_path / "log.txt"
    path.write_bytes(b"\n".join([orjson.dumps(RECORDS[0])[:40], *map(orjson.dumps, RECORDS[1:])]))
    (report,) = ingest_files(con, [path])
    assert (report.lines, report.requests, report.rejected) == (12, 11, 1)
    assert one(con, "SELECT line FROM rejects") == (1,)
    # a .jsonl name is JSON Lines whatever it holds
    pretty = tmp_path / "pretty.jsonl"
    pretty.write_bytes(orjson.dumps(RECORDS[:2], option=orjson.OPT_INDENT_2))
    with pytest.raises(InputError, match=r"pretty\.jsonl: no known request format"):
        ingest_files(con, [pretty])
    # a one-line JSON Lines file is its one record; an array line among records is rejected
    single = write_jsonl(tmp_path / "single.json", RECORDS[:1])
    assert [x.parsed for x in read_lines(single)] == RECORDS[:1]
    mixed = write_jsonl(tmp_path / "mixed.json", [RECORDS[:1], *RECORDS[1:3]])
    assert [x.error is None and isinstance(x.parsed, dict) for x in read_lines(mixed)] == [
        False,
        True,
        True,
    ]


def test_document_larger_than_the_limit_is_one_line(con, tmp_path):
    pretty = tmp_path / "big.json"
    pretty.write_bytes(orjson.dumps(RECORDS, option=orjson.OPT_INDENT_2))
    compact = tmp_path / "big-compact.json"
    compact.write_bytes(orjson.dumps(RECORDS))
    for path in (pretty, compact):
        with pytest.raises(InputError, match=r"larger than max_line_bytes \(4096 bytes\)"):
            ingest_files(con, [path], max_line_bytes=4096)
    db = str(tmp_path / "cli.duckdb")
    result = CliRunner().invoke(
        app, ["ingest", str(pretty), "--db", db, "--max-line-bytes", "4096"]
    )
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "jq -c" in result.stderr
    assert one(con, "SELECT count(*) FROM files") == (0,)


def test_invalid_document_is_one_line_naming_where(con, tmp_path):
    path = tmp_path / "cut.json"
    text = orjson.dumps(RECORDS[:3], option=orjson.OPT_INDENT_2)
    path.write_bytes(text[: len(text) // 2])
    with pytest.raises(InputError, match=r"cut\.json: not a valid JSON document \(.*line \d+"):
        ingest_files(con, [path])
    assert one(con, "SELECT count(*) FROM files") == (0,)


# ---------------------------------------------------------------------------------------------
# odd shapes: one clear line or accounted rejects, never another exception

ODD = {
    "header-only.csv": b"model,messages\n",
    "blank.csv": b"\n\r\n\n",
    "unterminated.csv": b'model,messages\nm,"[{""role"": ""user""\n',
    "nul.csv": b"model,messages\n\x00\x00,\x00\n",
    "empty-name.csv": b',model,messages\n1,m,"[{""role"": ""user"", ""content"": ""hi""}]"\n',
    "one-column.csv": b"model\nm\n\nm2\n",
    "random.csv": bytes(range(256)) * 4,
    "quote-soup.csv": b'a,b\n"x""y,"\n"""",1\n"a"b,c\n',
    "scalars.json": b'[\n  1,\n  "a",\n  null\n]\n',
    "empty-array.json": b"[\n]\n",
    "empty-object.json": b"{\n}\n",
    "bom.json": b"\xef\xbb\xbf" + orjson.dumps(RECORDS[:2], option=orjson.OPT_INDENT_2),
    "nested-data.json": orjson.dumps({"data": {"data": RECORDS[:1]}}, option=orjson.OPT_INDENT_2),
    "empty.jsonl.zst": b"",
    "doc.json.gz": gzip.compress(orjson.dumps(RECORDS[:2], option=orjson.OPT_INDENT_2)),
    "rows.csv.zst": zstd(csv_bytes(RECORDS[:2])),
    "utf16.csv": csv_bytes(RECORDS[:1]).decode().encode("utf-16"),
}


@pytest.mark.parametrize("name", sorted(ODD))
def test_odd_inputs_are_one_line_or_accounted(con, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(ODD[name])
    try:
        (report,) = ingest_files(con, [path])
    except InputError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
        assert one(con, "SELECT count(*) FROM files") == (0,)
        return
    assert report.lines == report.requests + report.rejected + report.out_of_scope
    assert_accounted(con)
    expected = {"bom.json": 2, "doc.json.gz": 2, "rows.csv.zst": 2, "empty-name.csv": 1}
    assert report.requests == expected.get(name, 0)
