"""What the ``kvtool report`` page shows, gathered from one database: the analysis of every
stored request (recomputed; tokenization is cached), the newest simulate runs as they were
stored, and every stored replay run validated again against the simulator. ``write_report``
gathers and hands the result to the HTML renderer (``kvtool.report.html``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kvtool.analyze import analyze
from kvtool.errors import KvtoolError
from kvtool.progress import Progress
from kvtool.replay import validate
from kvtool.report import html
from kvtool.store import DEFAULT_DB, Connection, DbArg, check_output, open_db
from kvtool.store.runs import replay_run_ids, sim_runs
from kvtool.traffic import PRICE_INPUT

MAX_SIM_RUNS = 8


@dataclass
class Overview:
    """One report page's data: ``summary`` is ``analyze``'s JSON made with ``charts=True``,
    ``sim_runs`` the stored simulate results (oldest first, each as ``simulate`` returned it),
    ``validations`` one ``validate`` result per stored replay run (a run that could not be
    validated: ``run_id``, ``model``, ``requests_ok``/``requests_failed`` None and ``error``)."""

    summary: dict
    sim_runs: list[dict]
    validations: list[dict]


def validations(con: Connection) -> list[dict]:
    """``validate`` of every stored replay run, oldest first; a run that cannot be validated
    keeps its error instead."""
    out = []
    for run_id, model in replay_run_ids(con):
        try:
            out.append(validate(run_id, db=con).to_json())
        # KeyError, ValueError: a stored configuration that lacks a key or does not parse
        except (KvtoolError, KeyError, ValueError) as e:
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


def gather(
    db: DbArg = DEFAULT_DB,
    *,
    tokenizer: str | None = None,
    block_size: int | None = None,
    model: str | None = None,
    price_input: float = PRICE_INPUT,
    max_sim_runs: int = MAX_SIM_RUNS,
    progress: Progress | None = None,
) -> Overview:
    """Everything ``db`` holds, for one page (``max_sim_runs``: the newest simulate runs kept).
    Raises ``WorkloadError`` when the database holds no ingested files, and what ``analyze``
    raises for options it cannot use."""
    with open_db(db) as con:
        summary = analyze(
            None,
            db=con,
            tokenizer=tokenizer,
            block_size=block_size,
            model=model,
            price_input=price_input,
            charts=True,
            progress=progress,
        ).to_json()
        return Overview(summary, sim_runs(con, max_sim_runs), validations(con))


def write_report(
    output: str | Path,
    *,
    db: DbArg = DEFAULT_DB,
    tokenizer: str | None = None,
    block_size: int | None = None,
    model: str | None = None,
    price_input: float = PRICE_INPUT,
    progress: Progress | None = None,
) -> dict:
    """Gather ``db`` and write its page to ``output``. Returns ``path``, ``bytes``, ``sections``
    (ids in page order), ``charts``, ``sim_runs`` and ``replay_runs`` (how many are shown);
    nothing is written when gathering raises. An ``output`` that is a directory or the database
    itself raises ``OptionError`` before anything is read."""
    check_output(output, param="output", db=db)
    ov = gather(
        db,
        tokenizer=tokenizer,
        block_size=block_size,
        model=model,
        price_input=price_input,
        progress=progress,
    )
    return html.write_overview(output, ov.summary, ov.sim_runs, ov.validations)
