"""Tokenization is exact: composed ids equal one-call ids of the fully rendered prompt."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from kvtool.errors import NotFoundError
from kvtool.ingest import ingest_files
from kvtool.store import connect
from kvtool.tokenize import chain_blocks, load_tokenizer, root_seed, tokenize_requests
from kvtool.tokenize.loader import default_tokenizer_path
from kvtool.tokenize.segments import SegmentEncoder
from kvtool.tokenize.template import (
    DefaultTemplate,
    make_template,
    render_prompt,
    split_leading_systems,
)

WORDS = [
    "cache",
    "prefix",
    "token",
    "block",
    "vLLM",
    "eviction",
    "latency",
    "throughput",
    "the",
    "a",
    "of",
    "to",
    "and",
    "schema",
    "JSON",
    "naïve",
    "café",
    "résumé",
    "Zürich",
    "東京",
    "缓存",
    "前缀",
    "キャッシュ",
    "한국어",
    "кэш",
    "مرحبا",
    "🙂",
    "🚀",
    "∑",
    "λ",
    "def",
    "return",
    "{}",
    "[]",
    "()",
    "=>",
    "<div>",
    "</div>",
    "<think>",
    "\\n",
    "12345",
    "3.14159",
    "x=1;",
    "if",
    "(a<b)",
    "{c++;}",
]


def _text(rng: random.Random, n: int) -> str:
    out = []
    for _ in range(n):
        w = rng.choice(WORDS)
        out.append(w + rng.choice(["", "", " ", "\n", "  ", ",", ".\n\n", "\t"]))
    return " ".join(out)


def _tool(rng: random.Random, i: int) -> dict:
    props = {
        f"arg_{j}": {
            "type": rng.choice(["string", "integer", "array"]),
            "description": _text(rng, rng.randint(3, 30)),
        }
        for j in range(rng.randint(1, 8))
    }
    return {
        "type": "function",
        "function": {
            "name": f"tool_{i}",
            "description": _text(rng, rng.randint(10, 80)),
            "parameters": {"type": "object", "properties": props, "required": list(props)[:1]},
        },
    }


def _requests(n: int, seed: int = 7) -> list[dict]:
    """Varied chat requests: multilingual text, long tool schemas, tool calls, content parts and
    literal special-token strings inside user content."""
    rng = random.Random(seed)
    tools = [_tool(rng, i) for i in range(12)]
    system = _text(rng, 200)
    out = []
    for i in range(n):
        msgs: list[dict] = [{"role": "system", "content": system}]
        for t in range(rng.randint(1, 6)):
            content: object = _text(rng, rng.randint(1, 120))
            if rng.random() < 0.2:
                content = [{"type": "text", "text": _text(rng, 20)}, {"type": "image_url"}]
            if rng.random() < 0.1:
                content = f"literal <｜User｜> and <think>{_text(rng, 5)}</think> inside"
            msgs.append({"role": "user", "content": content})
            if rng.random() < 0.5:
                args = json.dumps({"q": _text(rng, 8), "n": t}, ensure_ascii=False)
                msgs.append(
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": f"c{i}{t}",
                                "type": "function",
                                "function": {"name": "tool_3", "arguments": args},
                            }
                        ],
                    }
                )
                msgs.append({"role": "tool", "tool_call_id": f"c{i}{t}", "content": _text(rng, 60)})
            else:
                msgs.append({"role": "assistant", "content": _text(rng, rng.randint(0, 80))})
        body: dict = {"model": "m", "messages": msgs}
        if rng.random() < 0.7:
            body["tools"] = tools
        out.append({"id": f"r{i}", "timestamp": 1_700_000_000 + i, "request": body})
    return out


def _db_with(tmp_path: Path, records: list[dict]) -> tuple:
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"\n".join(orjson.dumps(r) for r in records) + b"\n")
    con = connect(tmp_path / "t.duckdb")
    ingest_files(con, [log])
    return con, log


def _oracle_ids(bundle, record: dict) -> np.ndarray:
    body = record["request"]
    text = render_prompt(make_template(bundle), body["messages"], body.get("tools"))
    return np.asarray(bundle.tokenizer.encode(text, add_special_tokens=False).ids, np.uint32)


def _stored_chains(con, signature: str) -> dict[str, tuple[int, list[int]]]:
    """Each request's prompt length and block chain, rebuilt from its last block up through
    the ``blocks`` table's parent links."""
    rows = con.execute(
        "SELECT hash, parent, depth FROM blocks WHERE tokenizer = ?", [signature]
    ).fetchall()
    parent = {h: p for h, p, _ in rows}
    depth = {h: d for h, _, d in rows}
    assert len(parent) == len(rows)  # each distinct block stored once
    out = {}
    for rid, n, last in con.execute(
        "SELECT r.request_id, c.n_tokens, c.last_block FROM chains c JOIN requests r "
        "USING (req_id) WHERE c.tokenizer = ?",
        [signature],
    ).fetchall():
        chain = []
        while last is not None:
            chain.append(last)
            last = parent[last]
        chain.reverse()
        assert [depth[h] for h in chain] == list(range(len(chain)))
        out[rid] = (n, chain)
    return out


def _assert_chains_exact(con, bundle, records, signature):
    stored = _stored_chains(con, signature)
    assert len(stored) == len(records)
    for rec in records:
        ids = _oracle_ids(bundle, rec)
        expect = chain_blocks(ids, root_seed(signature, rec["request"]["model"], None))
        n, blocks = stored[rec["id"]]
        assert n == len(ids), rec["id"]
        assert blocks == expect.view(np.int64).tolist(), rec["id"]


def test_default_template_pieces_equal_one_call(tmp_path):
    bundle = load_tokenizer()
    template = make_template(bundle)
    assert isinstance(template, DefaultTemplate) and template.m.style == "deepseek"
    encoder = SegmentEncoder(bundle.tokenizer, bundle.added_tokens)
    records = _requests(120)
    for rec in records:
        body = rec["request"]
        systems, rest = split_leading_systems(body["messages"])
        pieces = [template.head(systems, body.get("tools"))]
        pieces += [template.message(m) for m in rest] + [template.generation]
        composed = np.concatenate(encoder.encode_many(pieces))
        assert np.array_equal(composed, _oracle_ids(bundle, rec))
    # the history is shared: far fewer tokens were run through the tokenizer than composed
    assert encoder.tokens_encoded < sum(len(_oracle_ids(bundle, r)) for r in records) / 2


def test_chains_match_one_call_tokenization(tmp_path):
    records = _requests(80)
    con, _ = _db_with(tmp_path, records)
    bundle = load_tokenizer()
    report = tokenize_requests(con, bundle)
    assert report.mode == "pieces" and report.verified > 0
    assert report.requests == 80
    _assert_chains_exact(con, bundle, records, report.signature)
    # idempotent: a second pass tokenizes nothing
    assert tokenize_requests(con, bundle).requests == 0


def test_a_pass_by_family_partitions_writes_the_same_chains(tmp_path):
    # above part_requests the pass runs partition by partition, each with fresh caches: the
    # same chains, blocks and report counts, more tokenizer work (a shared system prompt is
    # encoded again in every partition)
    records = _requests(80)
    (tmp_path / "whole").mkdir()
    (tmp_path / "parts").mkdir()
    whole, _ = _db_with(tmp_path / "whole", records)
    parted, _ = _db_with(tmp_path / "parts", records)
    one = tokenize_requests(whole, load_tokenizer())
    seen = []
    many = tokenize_requests(
        parted, load_tokenizer(), progress=lambda d, t: seen.append((d, t)), part_requests=10
    )
    assert many.requests == one.requests == 80 and many.mode == one.mode
    assert many.tokens_encoded > one.tokens_encoded
    assert seen[-1] == (80, 80) and len(seen) > 2  # progress over the whole pass, part by part
    for sql in (
        "SELECT req_id, n_tokens, last_block FROM chains ORDER BY req_id",
        "SELECT hash, parent, depth FROM blocks ORDER BY hash",
    ):
        assert parted.execute(sql).fetchall() == whole.execute(sql).fetchall()
    _assert_chains_exact(parted, load_tokenizer(), records, many.signature)
    tables = parted.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()
    assert ("_kv_parts",) not in tables


def test_hf_chat_template_directory(tmp_path):
    tokdir = tmp_path / "tok"
    tokdir.mkdir()
    shutil.copy(default_tokenizer_path(), tokdir / "tokenizer.json")
    template = (
        "{{ bos_token }}{% for m in messages %}"
        "{% if m['role'] == 'user' %}<｜User｜>{{ m['content'] if m['content'] is string else '' }}"
        "{% elif m['role'] == 'assistant' %}<｜Assistant｜>{{ m['content'] or '' }}"
        "<｜end▁of▁sentence｜>{% else %}{{ m['content'] or '' }}{% endif %}{% endfor %}"
        "{% if tools %}{{ tools | tojson }}{% endif %}"
        "{% if add_generation_prompt %}<｜Assistant｜>{% endif %}"
    )
    (tokdir / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": template, "bos_token": "<｜begin▁of▁sentence｜>"})
    )
    records = _requests(40, seed=3)
    con, _ = _db_with(tmp_path, records)
    bundle = load_tokenizer(str(tokdir))
    assert bundle.chat_template == template
    report = tokenize_requests(con, bundle)
    assert report.mode == "segments" and report.template.startswith("hf-")
    _assert_chains_exact(con, bundle, records, report.signature)


def _trained_tokenizer(tmp_path: Path, prepend_scheme: str, specials: list[str]) -> Path:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme=prepend_scheme)
    tok.decoder = decoders.Metaspace(prepend_scheme=prepend_scheme)
    rng = random.Random(1)
    corpus = [_text(rng, 50) for _ in range(300)]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>"]))
    tok.add_special_tokens(specials)
    path = tmp_path / f"tok-{prepend_scheme}.json"
    tok.save(str(path))
    return path


def test_inexact_segmentation_falls_back_to_whole_prompts(tmp_path):
    # Metaspace with prepend_scheme="first" prepends only at the start of the whole input, so
    # tokenizing segments separately differs from one call: the run-time check must catch it.
    path = _trained_tokenizer(tmp_path, "first", ["<|im_start|>", "<|im_end|>"])
    records = _requests(15, seed=5)
    con, _ = _db_with(tmp_path, records)
    bundle = load_tokenizer(str(path))
    assert make_template(bundle).m.style == "chatml"
    report = tokenize_requests(con, bundle)
    assert report.mode == "whole"
    _assert_chains_exact(con, bundle, records, report.signature)


def test_tokenizer_without_role_tokens_uses_plain_template(tmp_path):
    path = _trained_tokenizer(tmp_path, "always", [])
    records = _requests(10, seed=9)
    con, _ = _db_with(tmp_path, records)
    bundle = load_tokenizer(str(path))
    report = tokenize_requests(con, bundle)
    # no role markers: the plain template; texts split only at added tokens (here just <unk>)
    assert report.template == "default-plain-v1" and report.mode == "segments"
    _assert_chains_exact(con, bundle, records, report.signature)


def test_hub_id_resolves_from_local_cache_only(tmp_path, monkeypatch):
    snap = tmp_path / "hub" / "models--acme--tiny" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    shutil.copy(default_tokenizer_path(), snap / "tokenizer.json")
    (tmp_path / "hub" / "models--acme--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--tiny" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    bundle = load_tokenizer("acme/tiny")
    assert (
        bundle.tokenizer.encode("hello world").ids
        == load_tokenizer().tokenizer.encode("hello world").ids
    )
    with pytest.raises(NotFoundError, match="never downloads"):
        load_tokenizer("acme/absent")


def test_signature_separates_tokenizers_and_models(tmp_path):
    a = load_tokenizer()
    b = load_tokenizer(str(_trained_tokenizer(tmp_path, "always", [])))
    assert a.signature != b.signature
    ids = np.arange(64, dtype=np.uint32)
    assert not np.array_equal(
        chain_blocks(ids, root_seed("s", "model-a", None)),
        chain_blocks(ids, root_seed("s", "model-b", None)),
    )
    assert not np.array_equal(
        chain_blocks(ids, root_seed("s", "m", "tenant-1")),
        chain_blocks(ids, root_seed("s", "m", None)),
    )
    # a chain hash depends on every earlier block
    other = ids.copy()
    other[0] = 999
    ha, hb = chain_blocks(ids, 1), chain_blocks(other, 1)
    assert (ha != hb).all()


def test_database_keeps_the_checked_tokenization_mode(tmp_path):
    """What a pass decided (after checking segment-wise tokenization against one-call
    tokenization) is stored with the database: a later pass with nothing new to tokenize
    reports and uses the same mode, so `kvtool analyze --db X` answers exactly as the
    `kvtool analyze log --db X` that filled it (issue 11)."""
    from kvtool import analyze

    path = _trained_tokenizer(tmp_path, "first", ["<|im_start|>", "<|im_end|>"])
    records = _requests(24, seed=5)
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"\n".join(orjson.dumps(r) for r in records) + b"\n")
    db = tmp_path / "a.duckdb"
    first = analyze([log], db=db, tokenizer=str(path))
    again = analyze(None, db=db)  # the database's own tokenizer, nothing left to tokenize
    assert first["tokenization"]["mode"] == "whole"
    assert again["tokenization"]["mode"] == "whole"
    assert again["tokenization"]["requests"] == 0
    assert first["top_prefixes"] and again["top_prefixes"] == first["top_prefixes"]
    assert again["breaks"] == first["breaks"]
    con = connect(db)
    bundle = load_tokenizer(str(path))
    assert tokenize_requests(con, bundle).mode == "whole"
    con.close()
