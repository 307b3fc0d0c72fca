"""``generate()``: check the arguments, seed, schedule the sessions, write the file and its truth.

All randomness comes from ``random.Random("kvtool-<kind>-<seed>")`` (str seeds are stable across
runs and PYTHONHASHSEED): it draws the shared material (system prompt, catalog or corpus), then per
session in order its arrival gap, its user, and the 64-bit seed of the session's own stream, which
draws the session's length and content. Breakers draw from a separate stream (``breakers.py``), so
the sessions without one are the same bytes as with ``breakers=0``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from kvtool.errors import OptionError
from kvtool.generate.agent import DEFAULT_TOOL_OUTPUT, agent_session, agent_setting
from kvtool.generate.breakers import BREAK_CAUSES, BREAKER_MODES, BreakerSchedule
from kvtool.generate.chat import chat_session, chat_system_prompt
from kvtool.generate.output import (
    GenerationTruth,
    RecordFormat,
    session_id,
    write_records,
    write_truth,
)
from kvtool.generate.rag import rag_corpus, rag_session
from kvtool.generate.text import Text
from kvtool.generate.turns import Turn, to_ms, utc

KINDS = ("agent", "chat", "rag")

DEFAULT_START = datetime(2026, 11, 1, 9, 0, 0, tzinfo=UTC)
DEFAULT_STEPS = {"agent": (4, 24), "chat": (1, 8), "rag": (1, 4)}
TEMPERATURE = {"agent": 0.2, "chat": 0.7, "rag": 0.1}
ARRIVAL_WINDOW_S = 3600.0


def generate(
    kind: str,
    sessions: int,
    seed: int,
    out: Path | str,
    *,
    session_ids: bool = True,
    model: str = "deepseek-ai/DeepSeek-V3",
    start: datetime | None = None,
    steps: tuple[int, int] | None = None,
    breakers: int = 0,
    breaker_mode: str = "once",
    tool_output: tuple[int, int] | None = None,
) -> GenerationTruth:
    """Write one JSONL record per request to `out` (gzip when it ends with .gz), in timestamp order.

    Also writes the truth as JSON to `<out>.truth.json`. Same (kind, sessions, seed, args) ->
    byte-identical output. ``steps`` is the inclusive range of requests per session (agent steps,
    chat turns, rag questions; defaults (4, 24), (1, 8), (1, 4)), drawn per session. ``start``
    (naive = UTC, default 2026-11-01T09:00:00Z) is when the arrival window opens; session starts
    are Poisson arrivals spread over about an hour. ``session_ids=False`` omits ``session_id``.

    ``breakers`` (agent only): inject that many sessions per cause of ``BREAK_CAUSES`` (11 causes,
    so ``sessions >= 11 * breakers + 1``), each into its own session among sessions 1.. (session 0
    and the others stay exactly as with ``breakers=0``); an injected session is lengthened when
    needed so that it has clean steps before and after its break. The truth's ``breaks`` lists
    every request that does not extend its predecessor.

    ``breaker_mode`` (``BREAKER_MODES``): ``once`` (each breaker changes its session once, from
    its step k on; volatile values change on every call from k); ``recurring`` (from step k on
    the request alternates between the broken and the clean form, so every call breaks, and a
    return to the clean form breaks with the inverse cause for tool churn); ``stable`` (the same
    sessions with the breaking field held clean: no request breaks; the baseline to measure what
    the breaks of the other two modes cost). The three modes write the same sessions up to step
    k of each injected session, and the sessions without a breaker are the same bytes in all.

    ``tool_output`` (agent only): the inclusive range of words of a tool result, drawn with a
    heavy tail (mean ``lo + (hi - lo) / 4``); default (60, 400). Coding agents' file reads, test
    logs and diffs run to thousands of tokens: e.g. (200, 6000). The default writes the same
    bytes as before the option existed.
    """
    if kind not in KINDS:
        raise OptionError("kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    if sessions <= 0:
        raise OptionError("sessions", f"must be positive, got {sessions}")
    lo, hi = steps if steps is not None else DEFAULT_STEPS[kind]
    if not 1 <= lo <= hi:
        raise OptionError("steps", f"must be (lo, hi) with 1 <= lo <= hi, got {(lo, hi)}")
    if breakers < 0:
        raise OptionError("breakers", f"must be >= 0, got {breakers}")
    if breaker_mode not in BREAKER_MODES:
        raise OptionError(
            "breaker_mode", f"{breaker_mode!r} is not one of {', '.join(BREAKER_MODES)}"
        )
    if tool_output is not None:
        if kind != "agent":
            raise OptionError("tool_output", f"is only generated for kind 'agent', not {kind!r}")
        if not 1 <= tool_output[0] <= tool_output[1]:
            raise OptionError(
                "tool_output", f"must be (lo, hi) words with 1 <= lo <= hi, got {tool_output}"
            )
    if breakers and kind != "agent":
        raise OptionError("breakers", f"are only generated for kind 'agent', not {kind!r}")
    if breakers and sessions < len(BREAK_CAUSES) * breakers + 1:
        need = len(BREAK_CAUSES) * breakers + 1
        raise OptionError(
            "sessions",
            f"must be >= {need}, got {sessions}: breakers={breakers} injects {need - 1} "
            "sessions besides the clean session 0",
        )
    start = start or DEFAULT_START
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    out = Path(out)
    base_ms = to_ms(start)

    rng = random.Random(f"kvtool-{kind}-{seed}")  # str seeds are stable across runs
    shared = Text(rng)
    tools: list[dict] | None = None
    schedule: BreakerSchedule | None = None
    if kind == "agent":
        setting = agent_setting(shared, today=f"{utc(base_ms):%Y-%m-%d}")
        system_prompt, tools = setting.system_prompt, setting.tools
        if breakers:
            schedule = BreakerSchedule(
                kind,
                seed,
                sessions,
                breakers,
                prompt=system_prompt,
                tools=tools,
                model=model,
                today=setting.today,
                workspace=setting.workspace,
                mode=breaker_mode,
            )
    elif kind == "chat":
        system_prompt = chat_system_prompt(shared)
    else:
        corpus = rag_corpus(shared, sessions)
        system_prompt = corpus.system_prompt
    system = {"role": "system", "content": system_prompt}

    rate = sessions / ARRIVAL_WINDOW_S
    width = max(3, len(str(sessions)))
    n_users = sessions if kind == "rag" else max(1, (sessions + 2) // 3)
    streams: list[Iterator[Turn]] = []
    users: list[str] = []
    arrival = 0.0
    for i in range(sessions):
        arrival += rng.expovariate(rate)
        t0 = base_ms + round(arrival * 1000)
        users.append(f"user-{i if kind == 'rag' else rng.randrange(n_users):0{width}d}")
        st = Text(random.Random(rng.getrandbits(64)))
        n = st.randint(lo, hi)
        if kind == "agent":
            assert tools is not None
            brk = schedule.plan(i, n) if schedule is not None else None
            if brk is not None:
                n = max(n, brk.k + 2)  # clean steps before and after the break
            streams.append(
                agent_session(st, system, tools, n, t0, brk, tool_output or DEFAULT_TOOL_OUTPUT)
            )
        elif kind == "chat":
            streams.append(chat_session(st, system, n, t0))
        else:
            streams.append(rag_session(st, system, corpus, n, t0))

    fmt = RecordFormat(kind, model, tools, TEMPERATURE[kind], session_ids, users)
    written = write_records(out, fmt, streams)
    truth = GenerationTruth(
        kind=kind,
        seed=seed,
        sessions=sessions,
        requests=sum(written.counts),
        output_tokens=written.output_tokens,
        requests_per_session={session_id(kind, i): n for i, n in enumerate(written.counts)},
        continuation=kind in ("agent", "chat") and not written.breaks,
        shared_prefix_messages=written.shared_prefix_messages,
        system_prompt=system_prompt,
        tools=tools,
        model=model,
        breaks=written.breaks,
    )
    write_truth(truth, out)
    return truth
