"""Stored results: simulate runs, replay runs with their per-request measurements, and breaks.

Run ids are dense integers from 0 per table. A run's configuration and result are stored as the
JSON its command printed, so a later ``kvtool report`` shows exactly what the run said. A replay
run is stored as it goes: its row when it starts (``start_replay_run``), each measurement as it
completes (``add_replay_measurement``), its ``/metrics`` difference at the end
(``finish_replay_run``); nothing is lost to a crash and no request is stored twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import pyarrow as pa

from kvtool.store.db import Connection, atomic, next_id, temp_table


def insert_sim_run(
    con: Connection,
    *,
    file_ids: list[int],
    policy: str,
    block_size: int,
    config: dict,
    result: dict,
) -> int:
    """Store one simulate run; returns its run id."""
    run_id = next_id(con, "sim_runs", "run_id")
    con.execute(
        "INSERT INTO sim_runs (run_id, file_ids, policy, block_size, config, result) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [
            run_id,
            file_ids,
            policy,
            block_size,
            orjson.dumps(config).decode(),
            orjson.dumps(result).decode(),
        ],
    )
    return run_id


def sim_runs(con: Connection, limit: int) -> list[dict]:
    """The newest ``limit`` simulate results, oldest first, each as ``simulate`` returned it."""
    rows = con.execute(
        "SELECT run_id, config, result FROM sim_runs ORDER BY run_id DESC LIMIT ?", [limit]
    ).fetchall()
    return [
        {**orjson.loads(result), "config": orjson.loads(config), "run_id": run_id}
        for run_id, config, result in reversed(rows)
    ]


@dataclass(frozen=True)
class ReplayRun:
    """One stored replay run: the endpoint, the served model name, how it ran (``config``) and
    the server's ``/metrics`` counter differences (``metrics``)."""

    run_id: int
    endpoint: str
    model: str
    config: dict
    metrics: dict


@dataclass
class ReplayMeasurement:
    """What one replayed request measured (``ok`` false: ``error`` says why); seconds from the
    start of the run (``started_s``) and of the request (``ttft_s``, ``e2e_s``)."""

    req_id: int
    request_id: str
    ok: bool
    error: str | None = None
    started_s: float | None = 0.0
    ttft_s: float | None = None
    e2e_s: float | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None


_MEASUREMENT_SCHEMA = pa.schema(
    [
        ("run_id", pa.int32()),
        ("req_id", pa.int64()),
        ("request_id", pa.string()),
        ("ok", pa.bool_()),
        ("error", pa.string()),
        ("started_s", pa.float64()),
        ("ttft_s", pa.float64()),
        ("e2e_s", pa.float64()),
        ("prompt_tokens", pa.int64()),
        ("cached_tokens", pa.int64()),
    ]
)


UNFINISHED = {"error": "the run did not finish: its process ended before /metrics was read again"}


def start_replay_run(con: Connection, *, endpoint: str, model: str, config: dict) -> int:
    """Store the row of a replay run that starts now; returns its run id. Its ``metrics`` say
    the run did not finish until ``finish_replay_run`` replaces them, so a run whose process
    dies is never mistaken for a complete one."""
    with atomic(con):
        run_id = next_id(con, "replay_runs", "run_id")
        con.execute(
            "INSERT INTO replay_runs (run_id, endpoint, model, config, metrics) "
            "VALUES (?, ?, ?, ?, ?)",
            [
                run_id,
                endpoint,
                model,
                orjson.dumps(config).decode(),
                orjson.dumps(UNFINISHED).decode(),
            ],
        )
    return run_id


def add_replay_measurement(con: Connection, run_id: int, m: ReplayMeasurement) -> None:
    """Store one request's measurement of run ``run_id`` (committed at once: a later crash or
    Ctrl-C keeps it). Each request is stored once, by the caller that measured it."""
    con.execute(
        f"INSERT INTO replay_requests ({', '.join(_MEASUREMENT_SCHEMA.names)}) "
        f"VALUES ({', '.join('?' * len(_MEASUREMENT_SCHEMA.names))})",
        [run_id, *(getattr(m, f) for f in _MEASUREMENT_SCHEMA.names[1:])],
    )


def finish_replay_run(con: Connection, run_id: int, metrics: dict) -> None:
    """Record the ``/metrics`` difference of a finished run (or ``{"error": ...}`` saying how it
    ended)."""
    con.execute(
        "UPDATE replay_runs SET metrics = ? WHERE run_id = ?",
        [orjson.dumps(metrics).decode(), run_id],
    )


def replay_run(con: Connection, run_id: int) -> ReplayRun | None:
    rows = con.execute(
        "SELECT run_id, endpoint, model, config, metrics FROM replay_runs WHERE run_id = ?",
        [run_id],
    ).fetchall()
    if not rows:
        return None
    r = rows[0]
    return ReplayRun(r[0], r[1], r[2], orjson.loads(r[3]), orjson.loads(r[4]))


def replay_run_ids(con: Connection) -> list[tuple[int, str]]:
    """(run id, model) of every stored replay run, oldest first."""
    return [
        (int(i), m)
        for i, m in con.execute("SELECT run_id, model FROM replay_runs ORDER BY run_id").fetchall()
    ]


def replay_measurements(con: Connection, run_id: int) -> list[ReplayMeasurement]:
    """The stored measurements of run ``run_id``, by request id."""
    rows = con.execute(
        f"SELECT {', '.join(_MEASUREMENT_SCHEMA.names[1:])} FROM replay_requests "
        "WHERE run_id = ? ORDER BY req_id",
        [run_id],
    ).fetchall()
    return [ReplayMeasurement(*r) for r in rows]


@dataclass(frozen=True)
class StoredBreak:
    """A break as the ``breaks`` table holds it (``diff``: the token-level diff object)."""

    req_id: int
    pred_req_id: int
    position: int
    tokens_lost: int
    cause: str
    path: str
    detail: str
    diff: dict


def replace_breaks(
    con: Connection,
    *,
    signature: str,
    block_size: int,
    req_ids: list[int],
    breaks: list[StoredBreak],
) -> None:
    """Replace the stored breaks of these requests (for this tokenizer and block size)."""
    sel = pa.table({"req_id": pa.array(req_ids, pa.int64())})
    with atomic(con), temp_table(con, "_kv_sel", sel):
        con.execute(
            "DELETE FROM breaks WHERE tokenizer = ? AND block_size = ? "
            "AND req_id IN (SELECT req_id FROM _kv_sel)",
            [signature, block_size],
        )
        if not breaks:
            return
        table = pa.table(
            {
                "tokenizer": [signature] * len(breaks),
                "block_size": pa.array([block_size] * len(breaks), pa.int32()),
                "req_id": pa.array([b.req_id for b in breaks], pa.int64()),
                "pred_req_id": pa.array([b.pred_req_id for b in breaks], pa.int64()),
                "position": pa.array([b.position for b in breaks], pa.int64()),
                "tokens_lost": pa.array([b.tokens_lost for b in breaks], pa.int64()),
                "cause": [b.cause for b in breaks],
                "path": [b.path for b in breaks],
                "detail": [b.detail for b in breaks],
                "diff": [orjson.dumps(b.diff).decode() for b in breaks],
            }
        )
        with temp_table(con, "_kv_breaks", table):
            con.execute("INSERT INTO breaks SELECT * FROM _kv_breaks")
