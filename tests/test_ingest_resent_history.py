"""Resent history is not serialized again at ingest (``serializes_alike``), and every stored
message key is still the key of the message's own serialization."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from kvtool.ingest import ingest_file
from kvtool.ingest.writer import content_key, serializes_alike
from kvtool.store import open_db


@pytest.mark.parametrize(
    ("a", "b", "alike"),
    [
        ({"role": "tool", "content": "x", "tool_call_id": "c1"}, None, True),
        ({"role": "user", "content": None}, {"role": "user", "content": None}, True),
        ({"role": "user", "content": "x"}, {"content": "x", "role": "user"}, False),  # order
        ({"role": "user", "content": "x"}, {"role": "user", "content": "y"}, False),
        ({"role": "user", "n": 1}, {"role": "user", "n": True}, False),  # 1 == True
        ({"role": "user", "n": 1}, {"role": "user", "n": 1}, False),  # numbers: serialized
        ({"role": "user", "content": [{"type": "text"}]}, None, False),  # nested
        ({"role": "user", "content": None}, {"role": "user", "content": ""}, False),
        ({"role": "user"}, {"role": "user", "content": None}, False),
    ],
)
def test_serializes_alike_only_when_the_bytes_would_match(a: dict, b: dict | None, alike: bool):
    b = dict(a) if b is None else b
    assert serializes_alike(a, b) is alike
    if alike:
        assert orjson.dumps(a) == orjson.dumps(b)


def test_resent_history_gets_the_keys_of_its_own_serialization(tmp_path: Path) -> None:
    system = {"role": "system", "content": "You are terse."}
    task = {"role": "user", "content": "fix the build"}
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "ls"}}],
    }
    out = {"role": "tool", "tool_call_id": "c1", "content": "a.py\nb.py"}
    reordered = {"tool_call_id": "c1", "role": "tool", "content": "a.py\nb.py"}
    edited = {"role": "tool", "tool_call_id": "c1", "content": "a.py\nc.py"}
    requests = [
        [system, task],
        [system, task, call, out],
        [system, task, call, out, {"role": "user", "content": "and now?"}],
        [system, task, call, reordered],  # same text, keys in another order: another key
        [system, task, call, edited],
        [system, {"role": "user", "content": "another task"}, call, out],
    ]
    log = tmp_path / "chat.jsonl"
    log.write_bytes(
        b"".join(
            orjson.dumps({"request_id": f"r{i}", "request": {"model": "m", "messages": msgs}})
            + b"\n"
            for i, msgs in enumerate(requests)
        )
    )
    with open_db(tmp_path / "k.duckdb") as con:
        report = ingest_file(con, log)
        stored = con.execute("SELECT message_keys FROM requests ORDER BY line").fetchall()
        bodies = dict(con.execute("SELECT key, body FROM contents").fetchall())
    assert report.requests == len(requests)
    for msgs, (keys,) in zip(requests, stored, strict=True):
        assert keys == [content_key(orjson.dumps(m)) for m in msgs]
        assert [orjson.loads(bodies[k]) for k in keys] == msgs
    assert stored[3][0][3] != stored[1][0][3]  # the reordered message is its own content
