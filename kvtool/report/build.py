"""``kvtool report``: everything the database holds as one HTML page (docs/report.md).

The analysis is recomputed from the stored requests (nothing is re-ingested; tokenization is
cached), simulation runs come from ``sim_runs`` (the newest ``MAX_SIM_RUNS``) and every replay
run is validated again from ``replay_runs``/``replay_requests``.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import orjson

from kvtool.analyze import PRICE_INPUT, WorkloadError, analyze
from kvtool.replay import validate
from kvtool.report import html
from kvtool.report.progress import Progress
from kvtool.store import connect

MAX_SIM_RUNS = 8


def stored_sim_runs(con: duckdb.DuckDBPyConnection, limit: int = MAX_SIM_RUNS) -> list[dict]:
    """The newest ``limit`` simulate results, oldest first, each as ``simulate`` returned it."""
    rows = con.execute(
        "SELECT run_id, config, result FROM sim_runs ORDER BY run_id DESC LIMIT ?", [limit]
    ).fetchall()
    return [
        {**orjson.loads(result), "config": orjson.loads(config), "run_id": run_id}
        for run_id, config, result in reversed(rows)
    ]


def stored_validations(con: duckdb.DuckDBPyConnection) -> list[dict]:
    """``kvtool validate`` of every replay run; a run that cannot be validated keeps its error."""
    out = []
    for run_id, model in con.execute(
        "SELECT run_id, model FROM replay_runs ORDER BY run_id"
    ).fetchall():
        try:
            out.append(validate(run_id, db=con))
        except (WorkloadError, KeyError, ValueError) as e:
            out.append(
                {
                    "run_id": run_id,
                    "model": model,
                    "requests_ok": None,
                    "requests_failed": None,
                    "error": f"not validated: {e}",
                }
            )
    return out


def build_report(
    output: str | Path,
    *,
    db: str | Path | duckdb.DuckDBPyConnection = "kvtool.duckdb",
    tokenizer: str | None = None,
    block_size: int | None = None,
    model: str | None = None,
    price_input: float = PRICE_INPUT,
    progress: Progress | None = None,
) -> dict:
    """Write the report of everything in ``db`` to ``output``; returns ``html.write``'s dict plus
    ``sim_runs`` and ``replay_runs`` (how many were shown). Raises ``WorkloadError`` when the
    database holds no ingested files."""
    con = db if isinstance(db, duckdb.DuckDBPyConnection) else connect(db)
    try:
        summary = analyze(
            None,
            db=con,
            tokenizer=tokenizer,
            block_size=block_size,
            model=model,
            price_input=price_input,
            charts=True,
            progress=progress,
        )
        runs = stored_sim_runs(con)
        validations = stored_validations(con)
    finally:
        if con is not db:
            con.close()
    sections = html.analysis_sections(summary)
    sections += [s for s in (html.simulation_section(runs), html.replay_section(validations)) if s]
    out = html.write(output, sections, "kvtool report", html.files_label(summary))
    return {**out, "sim_runs": len(runs), "replay_runs": len(validations)}
