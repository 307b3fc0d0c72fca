"""The breakpoint advisor (kvtool/simulate/advisor.py, docs/providers.md "Breakpoint advisor"):
its predicted saving equals the saving of the change applied to the log itself, ingested and
simulated again with ``kvtool simulate --provider anthropic``.

The traces are Anthropic Messages gateway records written here: three conversations of four
turns, one request every 30 s, model ``claude-sonnet-4-5`` (minimum 1,024 tokens; $3 input,
$3.75 5-minute write, $0.30 read per million, kvtool/providers/data/anthropic.json), a system
prompt of about 1,900 tokens so that it is cacheable, short turns (well inside the 20-block
lookback), and a ``cache_control`` marker on the system prompt only.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from kvtool.cli import app
from kvtool.errors import InputError
from kvtool.progress import NullProgress
from kvtool.providers import load_provider
from kvtool.simulate.advisor import advise_breakpoints
from kvtool.simulate.field_move import move_layout, shift_offset
from kvtool.simulate.prompt_layout import PromptLayout
from kvtool.simulate.providers import ProviderSpec
from kvtool.store import connect, open_db
from kvtool.tokenize import load_tokenizer
from kvtool.tokenize.breakpoints import Breakpoints
from kvtool.tokenize.loader import default_tokenizer_path
from kvtool.traffic import load_traffic

MODEL = "claude-sonnet-4-5"
WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
]
SESSIONS, TURNS, GAP_S = 3, 4, 30
START = datetime(2026, 12, 1, 10, tzinfo=UTC)
MARK = {"type": "ephemeral"}
BOS = "<｜begin▁of▁sentence｜>"  # the default tokenizer's: its template's head starts with it
TEMPLATE = (  # a tokenizer's own chat template (tokenize mode ``segments``)
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}"
    "{% elif m['role'] == 'user' %}<｜User｜>{{ m['content'] }}"
    "{% else %}<｜Assistant｜>{{ m['content'] }}<｜end▁of▁sentence｜>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<｜Assistant｜>{% endif %}"
)
MOVE_TOLERANCE = 0.005  # docs/providers.md: a moved field is re-tokenized at its edges


def _text(sentences: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(
        " ".join(rng.choice(WORDS) for _ in range(12)).capitalize() + "." for _ in range(sentences)
    )


SYSTEM = _text(90, 1)


def _clock(t: int) -> str:
    """The time ``t`` seconds after 2026-12-01 10:00 UTC, as ISO 8601."""
    return (START + timedelta(seconds=t)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _records(
    *,
    stamp: str,
    key: bool = False,
    mark_last: bool = False,
    mark_prev: bool = False,
    timed: bool = True,
    mark_system: bool = True,
) -> list[dict]:
    """The trace. ``stamp``: 'none' (a stable system prompt), 'system' (the request time in
    the system prompt) or 'after' (the time removed from the system prompt and sent after the
    last message, as its own user message that later turns do not repeat). ``key``: a
    per-request session key after the time, in the same place. ``mark_last``: a marker on
    the last message too (the last one before the moved values with 'after'); ``mark_prev``:
    one on the previous turn's user message; ``mark_system`` False: no marker on the system
    prompt."""
    out = []
    t = 0
    for s in range(SESSIONS):
        history: list[dict] = []
        for k in range(TURNS):
            clock = _clock(t)
            values = [clock, f"sk_{s}{k:02d}7f3a9c2e4b1d8f6a"] if key else [clock]
            history.append({"role": "user", "content": f"Question {s}.{k}: {_text(3, 10 * s + k)}"})
            messages = [dict(m) for m in history]
            for at, wanted in ((-1, mark_last), (-3, mark_prev and k > 0)):
                if wanted:
                    text = messages[at]["content"]
                    messages[at]["content"] = [
                        {"type": "text", "text": text, "cache_control": MARK}
                    ]
            labels = ["Current time", "Session key"][: len(values)]
            system = SYSTEM
            if stamp == "system":
                system = (
                    "".join(f"{x}: {v}. " for x, v in zip(labels, values, strict=True)) + SYSTEM
                )
            elif stamp == "after":
                system = "".join(f"{x}: . " for x in labels) + SYSTEM
                # moved one after the other: each lands right after the last message
                messages.extend({"role": "user", "content": v} for v in reversed(values))
            record = {
                "request_id": f"r{s}-{k}",
                "metadata": {"session_id": f"s{s}"},
                "request": {
                    "model": MODEL,
                    "max_tokens": 100,
                    "system": [
                        {"type": "text", "text": system, "cache_control": MARK}
                        if mark_system
                        else {"type": "text", "text": system}
                    ],
                    "messages": messages,
                },
            }
            if timed:
                record["timestamp"] = clock
            out.append(record)
            history.append(
                {"role": "assistant", "content": f"Answer: {_text(2, 500 + 10 * s + k)}"}
            )
            t += GAP_S
    return out


def _write(tmp: Path, name: str, records: list[dict]) -> Path:
    path = tmp / f"{name}.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def _simulate(log: Path, tmp: Path, tokenizer: Path | None = None) -> dict:
    """``kvtool simulate LOG --provider anthropic --json`` in a fresh database."""
    db = tmp / f"{log.stem}.duckdb"
    more = [] if tokenizer is None else ["--tokenizer", str(tokenizer)]
    r = CliRunner().invoke(
        app, ["simulate", "--blocks", "300", str(log), "--db", str(db), "--provider", "anthropic",
              "--json", *more],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return orjson.loads(r.stdout)["provider"]


def _advice(log: Path, tmp: Path, tokenizer: Path | None = None) -> list[dict]:
    """``provider.advice`` of ``kvtool simulate LOG --provider anthropic --json``."""
    return _simulate(log, tmp, tokenizer)["advice"]


@pytest.fixture(scope="module")
def tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("advisor")


def test_placement_saving_equals_the_re_simulated_log(tmp):
    """A stable system prompt marked alone: every turn pays its history at the input price.
    The advice is a breakpoint on the last message as well; marking the last message in the
    log and simulating again saves exactly the predicted dollars."""
    logged = _write(tmp, "stable", _records(stamp="none"))
    (advice,) = _advice(logged, tmp)
    assert advice["kind"] == "placement"
    assert advice["description"] == "put the breakpoints at: head + last message"
    assert [b["where"] for b in advice["breakpoints"]] == [
        "end of the head (system prompt and tools)",
        "end of the last message",
    ]
    assert advice["example_request"] == f"r{SESSIONS - 1}-{TURNS - 1}"  # the last one
    before = _simulate(logged, tmp)
    after = _simulate(_write(tmp, "stable-marked", _records(stamp="none", mark_last=True)), tmp)
    assert advice["bill_before"] == pytest.approx(before["bill"]["predicted"], rel=1e-12)
    assert advice["bill_after"] == pytest.approx(after["bill"]["predicted"], rel=1e-12)
    saving = before["bill"]["predicted"] - after["bill"]["predicted"]
    assert saving > 0
    assert advice["saving_per_trace"] == pytest.approx(saving, rel=1e-9)
    assert advice["hit_rate_before"] == pytest.approx(before["predicted_hit_rate"], rel=1e-12)
    assert advice["hit_rate_after"] == pytest.approx(after["predicted_hit_rate"], rel=1e-12)
    # 12 requests 30 s apart: 330 s = 330/86,400 days; a month is 30 days
    assert advice["saving_per_month"] == pytest.approx(saving / (330 / 86_400) * 30, rel=1e-12)
    # by hand: a request ending its last message at E_k (its prompt minus the one-token
    # generation prompt) after a head of H tokens. As logged it pays [H, E_k) at $3/M. With a
    # breakpoint on the last message it reads the previous turn's prefix [H, E_{k-1}) at
    # $0.30/M and writes [E_{k-1}, E_k) at $3.75/M (E_{-1} = H: the first turn only writes):
    # saving_k = 2.7 (E_{k-1} - H) - 0.75 (E_k - E_{k-1}) millionths of a dollar
    head = len(load_tokenizer(None).encoder.encode_many([BOS + SYSTEM])[0])
    with connect(tmp / "stable.duckdb") as con:
        n = dict(
            con.execute(
                "SELECT r.request_id, c.n_tokens FROM requests r JOIN chains c USING (req_id)"
            ).fetchall()
        )
    by_hand = 0.0
    for s in range(SESSIONS):
        prev = head
        for k in range(TURNS):
            end = n[f"r{s}-{k}"] - 1
            by_hand += (2.7 * (prev - head) - 0.75 * (end - prev)) / 1e6
            prev = end
    assert advice["saving_per_trace"] == pytest.approx(by_hand, rel=1e-9)
    last = f"r{SESSIONS - 1}-{TURNS - 1}"
    assert [b["tokens"] for b in advice["breakpoints"]] == [head, n[last] - 1]
    policies = {p["policy"]: p["saving_per_trace"] for p in advice["policies"]}
    # with turns inside the lookback, the previous turn adds nothing; the fewest breakpoints win
    assert policies["head + previous turn + last message"] == pytest.approx(
        policies["head + last message"], rel=1e-12
    )
    # without the head breakpoint a new conversation finds no entry at all
    assert policies["last message"] < policies["head + last message"]


def test_moving_the_timestamp_equals_the_re_simulated_log(tmp):
    """The request time in the system prompt: no request ever reads the cache. The advice
    moves it after the last message, then marks the last message; each saving equals the
    saving of that change applied to the log, within the documented tolerance."""
    logged = _write(tmp, "stamped", _records(stamp="system"))
    move, place = _advice(logged, tmp)
    assert move["kind"] == "move_field"
    assert move["fields"] == [{
        "kind": "timestamp", "path": "system", "example": _clock(0),
        "requests": SESSIONS * TURNS, "changes": SESSIONS * TURNS - 1,
    }]  # fmt: skip
    assert move["hit_rate_before"] == 0.0
    assert place["kind"] == "placement"
    assert place["description"] == "put the breakpoints at: head + last message"

    before = _simulate(logged, tmp)
    moved = _simulate(_write(tmp, "stamped-moved", _records(stamp="after")), tmp)
    placed = _simulate(_write(tmp, "stamped-placed", _records(stamp="after", mark_last=True)), tmp)
    assert move["bill_before"] == pytest.approx(before["bill"]["predicted"], rel=1e-12)
    saving_move = before["bill"]["predicted"] - moved["bill"]["predicted"]
    saving_place = moved["bill"]["predicted"] - placed["bill"]["predicted"]
    assert move["saving_per_trace"] == pytest.approx(saving_move, rel=MOVE_TOLERANCE)
    assert place["saving_per_trace"] == pytest.approx(saving_place, rel=MOVE_TOLERANCE)
    assert place["bill_before"] == pytest.approx(move["bill_after"], rel=1e-12)


def test_without_markers_placement_comes_before_the_move(tmp):
    """No cache_control at all and the request time first in the system prompt: neither moving
    the time nor placing breakpoints saves alone; the advice places the breakpoints, then
    moves the time, each saving equal to that change applied to the log."""
    logged = _write(tmp, "unmarked", _records(stamp="system", mark_system=False))
    place, move = _advice(logged, tmp)
    assert (place["kind"], move["kind"]) == ("placement", "move_field")
    assert place["hit_rate_before"] == 0.0
    assert place["description"] == "put the breakpoints at: head + last message"
    assert move["fields"][0]["kind"] == "timestamp"
    assert move["bill_before"] == pytest.approx(place["bill_after"], rel=1e-12)

    before = _simulate(logged, tmp)
    placed = _simulate(
        _write(tmp, "unmarked-placed", _records(stamp="system", mark_last=True)), tmp
    )
    moved = _simulate(_write(tmp, "unmarked-moved", _records(stamp="after", mark_last=True)), tmp)
    assert before["predicted_cached_tokens"] == 0
    assert place["saving_per_trace"] == pytest.approx(
        before["bill"]["predicted"] - placed["bill"]["predicted"], rel=1e-12
    )
    assert move["saving_per_trace"] == pytest.approx(
        placed["bill"]["predicted"] - moved["bill"]["predicted"], rel=MOVE_TOLERANCE
    )
    # alone, the breakpoints write every request's new prefix at 1.25x and read nothing
    assert place["hit_rate_after"] == 0.0 and place["saving_per_trace"] < 0
    assert place["note"].startswith("needed by the field moves below")
    assert move["hit_rate_after"] > 0 and place["saving_per_trace"] + move["saving_per_trace"] > 0


def test_optimal_placement_gets_no_advice(tmp):
    """System and last message already marked, nothing volatile: nothing to advise."""
    assert _advice(_write(tmp, "optimal", _records(stamp="none", mark_last=True)), tmp) == []


def test_no_timestamps_no_monthly_figure(tmp):
    (advice,) = _advice(_write(tmp, "untimed", _records(stamp="none", timed=False)), tmp)
    assert advice["saving_per_trace"] > 0
    assert advice["saving_per_month"] is None
    assert "no duration" in advice["note"]


@pytest.mark.parametrize(
    ("name", "records", "redact", "refusal"),
    [
        ("hash", [{"timestamp": 0, "input_length": 1024, "output_length": 1, "hash_ids": [1, 2]}],
         False, "needs prompt text: a hash trace has none"),
        ("redacted", _records(stamp="none")[:1], True,
         "needs prompt text: a redacted database has none"),
    ],
)  # fmt: skip
def test_no_prompt_text_is_refused(tmp, name, records, redact, refusal):
    with open_db(tmp / f"{name}.duckdb") as con:
        traffic = load_traffic(
            con, paths=[_write(tmp, name, records)], tokenizer=None, fmt=None,
            hash_block_size=512, progress=NullProgress(), redact=redact,
        )  # fmt: skip
        spec = ProviderSpec(load_provider("anthropic"))
        with pytest.raises(InputError, match=refusal):
            advise_breakpoints(con, traffic, spec, Breakpoints.build([None]))


def test_move_layout_by_hand():
    """Tokens [2, 4) of a 5-token head moved after the last message (end 8, generation
    prompt [8, 9)): ids[:2] + ids[4:8] + ids[2:4] + ids[8:]; boundaries after 2 up to the end
    shift by -2, so the last message now ends at 6 and the field follows it."""
    lay = PromptLayout(
        req_id=7, request_id="r7", model=MODEL, tenant=None, ids=np.arange(10, 19, dtype=np.uint32),
        bounds=(5, 8), blocks=(1, 2), head_end=5, prev_turn_end=None, prev_turn_blocks=None,
        end=8, head_text="",
        systems=(),
    )  # fmt: skip
    moved = move_layout(lay, 2, 4)
    assert moved.ids.tolist() == [10, 11, 14, 15, 16, 17, 12, 13, 18]
    assert (moved.bounds, moved.blocks, moved.head_end, moved.end) == ((3, 6), (1, 2), 3, 6)
    # an offset inside the field lands at its start; one past the end does not move
    assert [shift_offset(m, 2, 4, 8) for m in (1, 2, 3, 4, 8, 9)] == [1, 2, 2, 2, 6, 9]


def test_two_volatile_fields_move_together(tmp):
    """The time and a per-request session key in the system prompt: moving either alone
    leaves the head broken and saves nothing, so the advice moves both, and saves what the
    log with both moved saves."""
    logged = _write(tmp, "two", _records(stamp="system", key=True))
    move, place = _advice(logged, tmp)
    assert move["kind"] == "move_field" and place["kind"] == "placement"
    assert [(f["kind"], f["example"]) for f in move["fields"]] == [
        ("timestamp", _clock(0)),
        ("id", "sk_0007f3a9c2e4b1d8f6a"),
    ]
    before = _simulate(logged, tmp)
    moved = _simulate(_write(tmp, "two-moved", _records(stamp="after", key=True)), tmp)
    saving = before["bill"]["predicted"] - moved["bill"]["predicted"]
    assert move["saving_per_trace"] == pytest.approx(saving, rel=MOVE_TOLERANCE)


def test_own_chat_template_needs_the_previous_turn_marked(tmp):
    """With a tokenizer's own chat template only marked messages are boundaries (tokenize
    mode ``segments``), so the lookback from the last message cannot reach the previous
    turn's entry: the advice marks the previous turn too, and marking it in the log saves
    exactly that."""
    tok = tmp / "tok"
    tok.mkdir()
    (tok / "tokenizer.json").symlink_to(default_tokenizer_path())
    (tok / "tokenizer_config.json").write_text(
        orjson.dumps({"chat_template": TEMPLATE, "bos_token": BOS}).decode(), encoding="utf-8"
    )
    logged = _write(tmp, "own", _records(stamp="none"))
    (advice,) = _advice(logged, tmp, tok)
    assert advice["description"] == "put the breakpoints at: head + previous turn + last message"
    policies = {p["policy"]: p["saving_per_trace"] for p in advice["policies"]}
    assert policies["head + last message"] < 0  # every turn writes its whole history again
    before = _simulate(logged, tmp, tok)["bill"]["predicted"]
    marked = _write(tmp, "own-marked", _records(stamp="none", mark_last=True, mark_prev=True))
    after = _simulate(marked, tmp, tok)["bill"]["predicted"]
    assert advice["bill_before"] == pytest.approx(before, rel=1e-12)
    assert advice["saving_per_trace"] == pytest.approx(before - after, rel=1e-9)
    only_last = _write(tmp, "own-last", _records(stamp="none", mark_last=True))
    assert policies["head + last message"] == pytest.approx(
        before - _simulate(only_last, tmp, tok)["bill"]["predicted"], rel=1e-9
    )


def test_terminal_table_and_other_providers(tmp):
    """The terminal prints the advice as a table, logged text literally (request ids here hold
    rich markup); a provider without explicit breakpoints has no advice (null)."""
    records = _records(stamp="system")
    for r in records:
        r["request_id"] = f"[red]{r['request_id']}[/red]"
    log = _write(tmp, "terminal", records)
    db = tmp / "terminal.duckdb"
    r = CliRunner().invoke(
        app, ["simulate", "--blocks", "300", str(log), "--db", str(db), "--provider", "anthropic"],
        env={"COLUMNS": "250"},
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    out = " ".join(r.stdout.split())
    assert "breakpoint advice (re-simulated)" in out
    assert f"move the timestamp in system (e.g. '{_clock(0)}')" in out
    assert "put the breakpoints at: head + last message" in out
    assert f"(token offsets in request [red]r{SESSIONS - 1}-{TURNS - 1}[/red])" in out
    r = CliRunner().invoke(
        app, ["simulate", "--blocks", "300", "--db", str(db), "--provider", "openai", "--json"]
    )
    assert r.exit_code == 0, r.output
    assert orjson.loads(r.stdout)["provider"]["advice"] is None
