"""`kvtool replay` against hostile servers: malformed streams, endless streams, huge lines, broken
``/metrics``, bad options and Ctrl-C. Every server here is a real HTTP server on 127.0.0.1 started
by the test; nothing leaves the machine. Nothing is lost, nothing is counted twice, no traceback.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from kvtool.cli import app
from kvtool.progress import NullProgress
from kvtool.replay import replay, validate
from kvtool.replay.client import Prepared
from kvtool.replay.client import replay as send
from kvtool.store import connect
from kvtool.traffic import load_traffic

Responder = Callable[[BaseHTTPRequestHandler, int], None]

OK_METRICS = b"# TYPE vllm:prefix_cache_hits counter\nvllm:prefix_cache_hits_total 0.0\n"


def sse(*events: object) -> bytes:
    """Server-sent events: each object as one ``data:`` line (bytes and str as given)."""
    out = b""
    for e in events:
        data = e if isinstance(e, bytes) else (e if isinstance(e, str) else json.dumps(e)).encode()
        out += b"data: " + data + b"\n\n"
    return out


def good(prompt: int = 40, cached: int = 0) -> bytes:
    return sse(
        {"choices": [{"delta": {"content": "x"}}]},
        {
            "choices": [],
            "usage": {"prompt_tokens": prompt, "prompt_tokens_details": {"cached_tokens": cached}},
        },
        "[DONE]",
    )


def stream(h: BaseHTTPRequestHandler, body: bytes) -> None:
    """A 200 event stream of ``body``, ended by closing the connection (HTTP/1.0)."""
    h.send_response(200)
    h.send_header("content-type", "text/event-stream")
    h.end_headers()
    h.wfile.write(body)


@contextmanager
def serve(
    respond: Responder, metrics: Callable[[BaseHTTPRequestHandler], None] | None = None
) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1: POST number n (from 0) is answered by ``respond(h, n)``,
    GET /metrics by ``metrics`` (default: one vLLM counter)."""
    count = {"n": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if metrics is not None:
                metrics(self)
                return
            self.send_response(200)
            self.send_header("content-length", str(len(OK_METRICS)))
            self.end_headers()
            self.wfile.write(OK_METRICS)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            with lock:
                n = count["n"]
                count["n"] += 1
            with contextlib.suppress(OSError):  # the client gave up (a timeout, a bound)
                respond(self, n)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A Mooncake hash trace of 20 requests (no tokenizer to load: fast) and a database that
    already holds it."""
    root = tmp_path_factory.mktemp("hostile")
    log = root / "trace.jsonl"
    records = [
        {"timestamp": 10 * i, "input_length": 1000, "output_length": 1, "hash_ids": [1, 100 + i]}
        for i in range(20)
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    db = root / "t.duckdb"
    con = connect(db)
    load_traffic(
        con, paths=[log], tokenizer=None, fmt=None, hash_block_size=512, progress=NullProgress()
    )
    con.close()
    return log, db


@pytest.fixture
def work(template: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """(the log, a fresh copy of the template database)."""
    log, db = template
    copy = tmp_path / "r.duckdb"
    shutil.copy(db, copy)
    return log, copy


def stored(db: Path) -> tuple[list[tuple], list[tuple]]:
    """(replay_runs rows, replay_requests rows ordered by req_id) of a database file."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        runs = con.execute("SELECT run_id, metrics FROM replay_runs ORDER BY run_id").fetchall()
        reqs = con.execute(
            "SELECT run_id, req_id, ok, error, prompt_tokens, cached_tokens FROM replay_requests "
            "ORDER BY req_id"
        ).fetchall()
    finally:
        con.close()
    return runs, reqs


def cli(*args: str) -> object:
    return CliRunner().invoke(app, ["replay", *args])


# --- item 6: measurements are stored as they complete; a bad chunk is a recorded failure ---------

MALFORMED = [
    sse("[1,2]", "[DONE]"),
    sse({"choices": [], "usage": "lots"}, "[DONE]"),
    sse({"choices": [], "usage": {"prompt_tokens": 2**64}}, "[DONE]"),
    sse({"choices": [], "usage": {"prompt_tokens": -5}}, "[DONE]"),
    sse(
        {
            "choices": [],
            "usage": {"prompt_tokens": 40, "prompt_tokens_details": {"cached_tokens": 2**63}},
        }
    ),
    sse({"choices": [], "usage": {"prompt_tokens": "40"}}),
    sse({"choices": "many", "usage": {"prompt_tokens": 40, "prompt_tokens_details": [3]}}),
    sse("[" * 5000),
]


def test_malformed_chunks_are_recorded_failures_and_keep_earlier_results(work):
    log, db = work
    n_bad = len(MALFORMED)

    def respond(h: BaseHTTPRequestHandler, n: int) -> None:
        stream(h, MALFORMED[n - 2] if 2 <= n < 2 + n_bad else good())

    with serve(respond) as url:
        out = replay([log], db=db, endpoint=url, model="m", max_errors=n_bad + 1)
    runs, reqs = stored(db)
    assert len(runs) == 1 and len(reqs) == out["requests_ok"] + out["requests_failed"]
    assert out["requests_failed"] == n_bad  # each malformed response once, never twice
    assert out["requests_ok"] == len(reqs) - n_bad >= 2  # the ones before and after are kept
    failed = [r for r in reqs if not r[2]]
    assert all(r[3] for r in failed) and all(r[4] is None and r[5] is None for r in failed)
    text = " | ".join(r[3] for r in failed)
    for what in ("not an object", "usage", "prompt_tokens", "cached_tokens"):
        assert what in text, text


def test_ctrl_c_keeps_completed_requests_and_reraises(work):
    """Ctrl-C (a KeyboardInterrupt raised from the progress callback after 4 requests: the fault
    a real keyboard cannot produce on demand) stops sending, stores the 4 and re-raises."""
    log, db = work
    sent = {"n": 0}

    def respond(h: BaseHTTPRequestHandler, n: int) -> None:
        sent["n"] = n + 1
        stream(h, good())

    class CtrlC(NullProgress):
        def update(self, completed: float, total: float | None = None) -> None:
            if completed >= 4:
                raise KeyboardInterrupt

    with serve(respond) as url, pytest.raises(KeyboardInterrupt):
        replay([log], db=db, endpoint=url, model="m", progress=CtrlC())
    assert sent["n"] == 4  # nothing sent after the interruption
    runs, reqs = stored(db)
    assert len(runs) == 1 and "interrupted" in json.loads(runs[0][1])["error"]
    assert len(reqs) == 4 and all(r[2] for r in reqs)
    out = validate(runs[0][0], db=db)
    assert out["requests_ok"] == 4 and out["requests_failed"] == 0


def test_ctrl_c_with_concurrent_requests_stores_each_completed_once(work):
    log, db = work

    def respond(h: BaseHTTPRequestHandler, n: int) -> None:
        time.sleep(0.02 * (n % 3))
        stream(h, good())

    class CtrlC(NullProgress):
        def update(self, completed: float, total: float | None = None) -> None:
            if completed >= 3:
                raise KeyboardInterrupt

    with serve(respond) as url, pytest.raises(KeyboardInterrupt):
        replay([log], db=db, endpoint=url, model="m", concurrency=4, progress=CtrlC())
    _, reqs = stored(db)
    assert len(reqs) == 3 and len({r[1] for r in reqs}) == 3


def test_validate_of_a_run_without_stored_requests_says_so(work):
    """A run interrupted before its first response: 0 requests, no figures, a note."""
    log, db = work

    class CtrlC(NullProgress):
        def stage(self, name: str, total: float | None = None) -> None:
            if name == "replay":
                raise KeyboardInterrupt

    with serve(lambda h, n: stream(h, good())) as url, pytest.raises(KeyboardInterrupt):
        replay(
            [log], db=db, endpoint=url, model="m", block_size=512, num_blocks=100, progress=CtrlC()
        )
    runs, reqs = stored(db)
    assert len(runs) == 1 and reqs == []
    out = validate(runs[0][0], db=db)
    assert out["requests_ok"] == 0 and out["requests_failed"] == 0
    assert out["predicted_hit_rate"] is None and out["observed_hit_rate"] is None
    assert "no request" in out["prediction_note"]


# --- item 15: --timeout is a deadline for the whole request; one SSE line is bounded ----------


def test_keep_alive_stream_fails_at_the_deadline():
    """A server that keeps the stream alive with a comment every 0.1 s, forever (5 s here):
    with a 1 s timeout the request is a recorded failure after 1 s, not after the stream."""

    def respond(h: BaseHTTPRequestHandler, n: int) -> None:
        h.send_response(200)
        h.end_headers()
        for _ in range(50):
            h.wfile.write(b": keep-alive\n\n")
            h.wfile.flush()
            time.sleep(0.1)

    one = Prepared(0, "r0", "/v1/completions", {"model": "m", "prompt": "hi"}, 0.0)
    with serve(respond) as url:
        began = time.perf_counter()
        (got,) = send([one], url, timeout_s=1.0, max_errors=1)
        took = time.perf_counter() - began
    assert took < 1.5
    assert not got.ok and got.error == "ReadTimeout: no complete response within 1 s"


def test_a_line_without_end_is_bounded(work):
    """A server that streams 64 MB without a newline: the client gives up after 1 MiB."""
    log, db = work
    sent = {"bytes": 0}

    def respond(h: BaseHTTPRequestHandler, n: int) -> None:
        h.send_response(200)
        h.end_headers()
        h.wfile.write(b"data: ")
        piece = b"x" * (1 << 16)
        for _ in range(1024):
            h.wfile.write(piece)
            sent["bytes"] += len(piece)

    with serve(respond) as url:
        out = replay([log], db=db, endpoint=url, model="m", max_errors=1)
    assert out["requests_failed"] == 1
    assert out["errors"] == ["a streamed line is longer than 1048576 bytes"]
    assert sent["bytes"] < 32 << 20  # the client stopped reading: memory stayed bounded


# --- item 19: the first /metrics scrape fails: one line, exit 2, nothing stored ------------------


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answer(status: int, body: bytes) -> Callable[[BaseHTTPRequestHandler], None]:
    def metrics(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("content-length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return metrics


def one_line_exit_2(r: object, *words: str) -> None:
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


@pytest.mark.parametrize(
    ("metrics", "words"),
    [
        (answer(404, b"not found"), ["HTTP 404"]),
        (answer(200, b"<html>\x1b[31mgarbage</html>\n"), ["not Prometheus text"]),
        (answer(200, b"vllm:prefix_cache_hits_total NaN\n"), ["not Prometheus text"]),
    ],
    ids=["404", "garbage", "nan"],
)
def test_unreadable_metrics_at_the_start_exit_2_and_store_nothing(work, metrics, words):
    log, db = work
    with serve(lambda h, n: stream(h, good()), metrics=metrics) as url:
        r = cli(str(log), "--db", str(db), "--endpoint", url, "--json")
    one_line_exit_2(r, "/metrics", *words)
    assert "\x1b" not in r.stderr
    assert stored(db) == ([], [])


def test_refused_metrics_exit_2_and_store_nothing(work):
    log, db = work
    r = cli(str(log), "--db", str(db), "--endpoint", f"http://127.0.0.1:{closed_port()}")
    one_line_exit_2(r, "ConnectError")
    assert stored(db) == ([], [])


@pytest.mark.parametrize("endpoint", ["not a url", "127.0.0.1:8000", "ftp://127.0.0.1", "http://"])
def test_endpoint_that_is_not_a_url_exits_2_naming_the_flag(work, endpoint):
    log, db = work
    r = cli(str(log), "--db", str(db), "--endpoint", endpoint)
    one_line_exit_2(r, "--endpoint")
    assert stored(db) == ([], [])


# --- item 21: options a replay cannot run with are refused before anything is sent --------------


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--max-errors", "0"),
        ("--concurrency", "0"),
        ("--speedup", "0"),
        ("--speedup", "-1"),
        ("--timeout", "0"),
        ("--timeout", "nan"),
    ],
)
def test_unusable_replay_options_exit_2_naming_the_flag(work, flag, value):
    log, db = work
    sent = {"n": 0}

    def respond(h: BaseHTTPRequestHandler, n: int) -> None:
        sent["n"] += 1
        stream(h, good())

    with serve(respond) as url:
        r = cli(str(log), "--db", str(db), "--endpoint", url, flag, value)
    one_line_exit_2(r, flag)
    assert sent["n"] == 0 and stored(db) == ([], [])
