"""`kvtool report` and `--html`: the page carries the numbers analyze and simulate computed, every
chart has labelled axes, and the page renders in a real headless Chromium without a network."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import orjson
import pytest
from markupsafe import escape
from pages import charts
from typer.testing import CliRunner

from kvtool.analyze import analyze
from kvtool.cli import app
from kvtool.generate import generate
from kvtool.overview import Overview, gather, write_report
from kvtool.report import format as fmt
from kvtool.simulate import SimConfig, simulate
from kvtool.store import connect
from kvtool.store.runs import (
    ReplayMeasurement,
    add_replay_measurement,
    finish_replay_run,
    start_replay_run,
)
from kvtool.traffic import load_workload


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    """A generated agent log with one breaker per cause, analyzed, two simulate runs, a report."""
    tmp = tmp_path_factory.mktemp("report")
    log = tmp / "agent.jsonl"
    generate("agent", 16, 7, log, breakers=1)
    db = tmp / "kv.duckdb"
    summary = analyze([log], db=db)
    sweep = simulate(None, db=db, tier_gb="hbm=0.05,0.2,1", model="Llama-3.1-8B").to_json()
    point = simulate(None, db=db, blocks=[500], config=SimConfig(policy="s3fifo")).to_json()
    written = write_report(tmp / "report.html", db=db)
    return {
        "tmp": tmp,
        "log": log,
        "db": db,
        "summary": summary,
        "sweep": sweep,
        "point": point,
        "written": written,
        "page": (tmp / "report.html").read_text(),
    }


def test_report_holds_every_section_and_chart(demo):
    w = demo["written"]
    assert w["sections"] == ["traffic", "reuse", "breaks", "simulation"]
    assert (w["sim_runs"], w["replay_runs"]) == (2, 0)
    got = charts(demo["page"])
    assert set(got) == {
        "timeline", "prompt_lengths", "block_sizes", "reuse_split", "prefix_tree",
        "reuse_gaps", "breaks", "sim_curves_gb", "sim_costs_gb", "sim_curves_blocks",
        "sim_costs_blocks",
    }  # fmt: skip
    assert w["charts"] == len(got)
    assert w["bytes"] == len(demo["page"].encode())
    # self-contained: plotly.js is inlined, nothing is loaded from elsewhere
    assert "<script src" not in demo["page"] and "Plotly.newPlot" in demo["page"]
    assert len(demo["page"]) > 3_000_000


def test_every_cartesian_chart_labels_its_axes(demo):
    for name, spec in charts(demo["page"]).items():
        if name == "prefix_tree":
            assert spec["data"][0]["type"] == "sunburst"
            continue
        layout = spec["layout"]
        assert layout["title"]["text"], name
        assert layout["xaxis"]["title"]["text"], name
        if name != "reuse_split":  # one horizontal bar: the y axis is its own label
            assert layout["yaxis"]["title"]["text"], name


def test_charts_carry_the_analyzed_numbers(demo):
    s, got = demo["summary"], charts(demo["page"])
    bars = got["timeline"]["data"][0]
    assert sum(bars["y"]) == s["requests"]
    breaks = got["breaks"]["data"][0]
    per_cause = dict(zip(breaks["y"], breaks["x"], strict=True))
    assert per_cause == {c: v["tokens_lost"] for c, v in s["breaks"].items() if v["count"]}
    assert len(per_cause) == 11  # one breaker per cause
    split = {t["name"]: t["x"][0] for t in got["reuse_split"]["data"]}
    assert split["reused within a session"] == s["within_session_tokens"]
    assert split["reused across sessions"] == s["cross_session_tokens"]
    assert sum(split.values()) == s["prompt_tokens"]
    sizes = got["block_sizes"]["data"][0]["y"]
    assert sizes == [100 * v for v in s["ideal_hit_rate_by_block_size"].values()]
    tree = got["prefix_tree"]["data"][0]
    requests = {i: c[2] for i, c in zip(tree["ids"], tree["customdata"], strict=True)}
    for i, parent in zip(tree["ids"], tree["parents"], strict=True):
        assert parent == "" or requests[parent] >= requests[i] >= 2
    roots = [requests[i] for i, p in zip(tree["ids"], tree["parents"], strict=True) if p == ""]
    # the widest family: the requests that share the most common first block
    with connect(demo["db"], read_only=True) as con:
        ids = [f for (f,) in con.execute("SELECT file_id FROM files").fetchall()]
        wl = load_workload(con, ids, s["tokenizer"])
    first = []
    for node in wl.end:
        while wl.parent[node] >= 0:
            node = wl.parent[node]
        first.append(int(node))
    assert max(roots) == Counter(first).most_common(1)[0][1] > s["requests"] * 0.9
    # the page's diff examples are the analysis's, escaped
    examples = [ex for v in s["breaks"].values() for ex in v["examples"]]
    assert demo["page"].count('<div class="example">') == len(examples)
    for ex in examples:
        assert str(escape(ex["diff"]["added"])) in demo["page"]


def test_simulation_curves_are_the_stored_runs(demo):
    got = charts(demo["page"])
    sweep = demo["sweep"]
    line = got["sim_curves_gb"]["data"][0]
    assert line["x"] == [p["tiers"][0]["gb"] for p in sweep["points"]]
    assert line["y"] == [100 * p["token_hit_rate"] for p in sweep["points"]]
    assert f"run {sweep['run_id']}: lru, hbm sweep, B=16" == line["name"]
    knee = got["sim_curves_gb"]["data"][1]
    assert knee["x"] == [sweep["sweep"]["knee"]]
    point = got["sim_curves_blocks"]["data"][0]
    assert point["x"] == [500] and point["y"] == [100 * demo["point"]["token_hit_rate"]]
    net = [t for t in got["sim_costs_gb"]["data"] if t["name"].startswith("net")][0]
    assert net["y"] == [p["cost"]["net_per_month"] for p in sweep["points"]]


def test_report_renders_in_headless_chromium(demo, chromium, tmp_path):
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: m.type in ("error", "warning") and problems.append(m.text))
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    url = (demo["tmp"] / "report.html").as_uri()
    page.goto(url)
    page.wait_for_selector("body[data-charts-rendered], body[data-charts-failed]", timeout=60_000)
    assert page.get_attribute("body", "data-charts-failed") is None
    n = demo["written"]["charts"]
    assert page.get_attribute("body", "data-charts-rendered") == str(n)
    assert page.locator("div.chart").count() == n
    for div in page.locator("div.chart").all():  # each chart drew its own SVG
        assert div.locator("svg.main-svg").count() >= 1
    assert page.locator("div.chart[data-chart=prefix_tree] g.slice").count() >= 4
    assert page.locator("div.chart[data-chart=breaks] g.point").count() == 11
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    page.close()
    assert problems == []
    assert requests == [url]  # opened offline: the page asks for nothing else
    assert shot.stat().st_size > 50_000


def test_cli_report_json_and_missing_db(demo, tmp_path):
    out = tmp_path / "r.html"
    r = CliRunner().invoke(app, ["report", "--db", str(demo["db"]), "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    written = orjson.loads(r.stdout)
    assert written["path"] == str(out) and out.stat().st_size == written["bytes"]
    assert written["sim_runs"] == 2
    bad = CliRunner().invoke(app, ["report", "--db", str(tmp_path / "none.duckdb"), "-o", "x.html"])
    assert bad.exit_code == 2
    assert "no database" in bad.output and len(bad.output.strip().splitlines()) == 1
    assert not Path("x.html").exists()
    connect(tmp_path / "empty.duckdb").close()  # a database with no ingested files
    empty = CliRunner().invoke(
        app, ["report", "--db", str(tmp_path / "empty.duckdb"), "-o", str(tmp_path / "e.html")]
    )
    assert empty.exit_code == 2 and "no ingested files" in empty.output
    assert not (tmp_path / "e.html").exists()


def test_analyze_and_simulate_write_their_part(demo, tmp_path):
    a, s = tmp_path / "a.html", tmp_path / "s.html"
    r = CliRunner().invoke(app, ["analyze", "--db", str(demo["db"]), "--html", str(a), "--json"])
    assert r.exit_code == 0, r.output
    summary = orjson.loads(r.stdout)
    assert summary["charts"]["timeline"]["unit"] == "s"  # --html puts the distributions in --json
    assert sum(summary["charts"]["timeline"]["requests"]) == summary["requests"]
    page = a.read_text()
    assert re.findall(r'<section id="(\w+)"', page) == ["traffic", "reuse", "breaks"]
    r = CliRunner().invoke(
        app, ["simulate", "--db", str(demo["db"]), "--blocks", "50,400", "--html", str(s)]
    )
    assert r.exit_code == 0, r.output
    page = s.read_text()
    assert re.findall(r'<section id="(\w+)"', page) == ["simulation"]
    assert set(charts(page)) == {"sim_curves_blocks", "sim_costs_blocks"}


def test_report_of_a_hash_trace_without_text(write_jsonl, tmp_path):
    lines = [
        {"timestamp": 1000 * i, "input_length": 1024 + 512 * (i % 3), "output_length": 8,
         "hash_ids": [1, 2, *range(100 + 3 * i, 100 + 3 * i + (i % 3))]}
        for i in range(30)
    ]  # fmt: skip
    trace = write_jsonl("trace.jsonl", lines)
    db = tmp_path / "kv.duckdb"
    analyze([trace], db=db)
    written = write_report(tmp_path / "r.html", db=db)
    assert written["sections"] == ["traffic", "reuse"]  # no text: no break analysis
    got = charts((tmp_path / "r.html").read_text())
    tree = got["prefix_tree"]["data"][0]
    assert tree["labels"] == ["tokens 0–1024"]  # the two shared hash blocks, no text to show
    assert tree["customdata"][0][2] == 30
    assert got["timeline"]["layout"]["xaxis"]["title"]["text"] == "time since the first request (s)"


def test_report_of_logs_without_timestamps(write_jsonl, tmp_path):
    system = {"role": "system", "content": "You are a careful assistant. " * 40}
    lines = [
        {"model": "m", "messages": [system, {"role": "user", "content": f"question {i} " * 20}]}
        for i in range(12)
    ]
    log = write_jsonl("chat.jsonl", lines)
    db = tmp_path / "kv.duckdb"
    analyze([log], db=db)
    write_report(tmp_path / "r.html", db=db)
    page = (tmp_path / "r.html").read_text()
    got = charts(page)
    assert "reuse_gaps" not in got and "no timestamps" in page
    assert got["timeline"]["layout"]["xaxis"]["title"]["text"].startswith("request")
    assert sum(got["timeline"]["data"][0]["y"]) == 12


def test_report_uses_the_tokenizer_the_database_was_analyzed_with(tmp_path):
    import shutil

    from kvtool.tokenize import default_tokenizer_path

    tokdir = tmp_path / "tok"
    tokdir.mkdir()
    shutil.copy(default_tokenizer_path(), tokdir / "tokenizer.json")
    template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    config = orjson.dumps({"chat_template": template}).decode()
    (tokdir / "tokenizer_config.json").write_text(config)
    log = tmp_path / "agent.jsonl"
    generate("agent", 3, 2, log, steps=(3, 4))
    db = tmp_path / "kv.duckdb"
    first = analyze([log], db=db, tokenizer=str(tokdir))
    write_report(tmp_path / "r.html", db=db)
    again = analyze(None, db=db)  # no paths, no --tokenizer: the database's own
    default = analyze([log], db=tmp_path / "d.duckdb")["tokenizer"]
    assert again["tokenizer"] == first["tokenizer"] != default
    with connect(db, read_only=True) as con:
        signatures = con.execute("SELECT DISTINCT tokenizer FROM chains").fetchall()
    assert signatures == [(first["tokenizer"],)]  # nothing was tokenized a second time
    assert first["tokenizer"] in (tmp_path / "r.html").read_text()


def test_overview_gathers_what_the_page_shows(demo):
    with connect(demo["db"]) as con:  # an open connection is used as it is and left open
        ov = gather(con)
        assert isinstance(ov, Overview)
        newest = gather(con, max_sim_runs=1)
        stored = [i for (i,) in con.execute("SELECT run_id FROM sim_runs ORDER BY 1").fetchall()]
    assert ov.summary["requests"] == demo["summary"]["requests"]
    assert ov.summary["ideal_hit_rate"] == demo["summary"]["ideal_hit_rate"]
    assert ov.summary["charts"]["timeline"]["requests"]  # gathered for charts
    # other tests may add runs to the shared database: the newest 8, oldest first
    assert [r["run_id"] for r in ov.sim_runs] == stored[-8:]
    assert stored[:2] == [demo["sweep"]["run_id"], demo["point"]["run_id"]]
    assert ov.sim_runs[0]["points"] == demo["sweep"]["points"]  # as simulate returned it
    assert [r["run_id"] for r in newest.sim_runs] == stored[-1:]
    assert ov.validations == []


def test_a_replay_run_that_cannot_be_validated_keeps_its_error(tmp_path):
    log = tmp_path / "agent.jsonl"
    generate("agent", 3, 2, log, steps=(3, 4))
    db = tmp_path / "kv.duckdb"
    analyze([log], db=db)
    measured = [ReplayMeasurement(0, "r0", True, prompt_tokens=100, cached_tokens=32)]
    with connect(db) as con:
        for config in ({}, {"block_size": 32, "num_blocks": 10}):  # the second lacks file_ids
            run_id = start_replay_run(con, endpoint="http://x", model="m", config=config)
            for m in measured:
                add_replay_measurement(con, run_id, m)
            finish_replay_run(con, run_id, {})
    ov = gather(db)
    ok, bad = ov.validations
    assert ok["run_id"] == 0 and ok["predicted_hit_rate"] is None and "error" not in ok
    assert ok["observed_hit_rate_usage"] == 0.32
    assert bad == {
        "run_id": 1, "model": "m", "requests_ok": None, "requests_failed": None,
        "error": "not validated: 'file_ids'",
    }  # fmt: skip
    written = write_report(tmp_path / "r.html", db=db)
    assert written["sections"][-1] == "replay" and written["replay_runs"] == 2
    assert "replay" not in charts((tmp_path / "r.html").read_text())  # nothing was predicted
    assert "not validated: &#39;file_ids&#39;" in (tmp_path / "r.html").read_text()


def test_the_page_names_the_installed_version(demo):
    from importlib.metadata import version

    assert f'<meta name="generator" content="kvtool {version("kvtool")}">' in demo["page"]


def test_number_formatting_is_shared():
    assert (fmt.pct(0.4567), fmt.pct(None), fmt.pct(None, fmt.DASH)) == ("45.7%", "n/a", "–")
    assert (fmt.num(1234), fmt.num(2.0), fmt.num(0.256), fmt.num(None, "–")) == (
        "1,234",
        "2",
        "0.26",
        "–",
    )
    assert (fmt.money(1234.5), fmt.seconds(0.1234), fmt.seconds(None)) == (
        "$1,234.50",
        "0.123 s",
        "n/a",
    )


def test_reports_count_requests_left_out_for_want_of_their_prompt(tmp_path):
    """A log with a prompt the logger truncated (LiteLLM SpendLogs): the terminal and HTML
    reports say how many requests were left out of prefix analysis, and why."""
    from pathlib import Path

    from typer.testing import CliRunner

    from kvtool.cli import app

    log = Path(__file__).parent / "fixtures" / "litellm" / "spendlogs.jsonl.gz"
    html = tmp_path / "r.html"
    db = str(tmp_path / "kv.duckdb")
    result = CliRunner().invoke(app, ["analyze", str(log), "--db", db, "--html", str(html)])
    assert result.exit_code == 0, result.output
    assert "1 requests left out" in " ".join(result.stdout.split())
    assert "1 truncated by the logger" in " ".join(result.stdout.split())
    page = html.read_text()
    assert "left out: prompt not in the log (truncated / incomplete)" in page
    assert ">1 / 0<" in page.replace("\n", "").replace(" <", "<")
