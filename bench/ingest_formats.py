"""Ingest throughput of every input format on the same traffic, next to the openai-chat JSONL
baseline measured in the same run; and what ``--redact`` costs on the baseline.

Traffic: the conversation set of ``tests/conversations.py`` (3 sessions, 12 requests) repeated
with fresh session ids, fresh request ids and a per-copy tag on every user message, to
``--requests`` (rounded up to whole copies; timestamps repeat per copy). Every format carries the
same calls. Bedrock, Helicone, Langfuse and the hand-made OTel spans are written by the fixture
writers of ``tests/fixtures/<tool>/make_fixtures.py`` (they need no extra library); the fixtures
made with libraries that the project environment lacks (Anthropic and OpenAI SDKs, LiteLLM,
the OTel GenAI instrumentation) are repeated from their committed records with the same
substitutions (``Template``), so they keep the libraries' exact shape.

Every ingest runs in a child process on a fresh database, with format detection (no
``--format``); wall time is measured inside the child around ``kvtool.ingest`` (no interpreter
start or imports) and peak RSS is the child's own. MB/s is over the content as written (for
.gz/.zst: the uncompressed JSONL, so it compares with the baseline; for Parquet: the file).
The repeated copies compress far better than real logs do, so compressed sizes say nothing.

    python bench/ingest_formats.py [--requests 20000] [--repeat 1] [--json] [--keep]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gzip
import importlib.util
import io
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
OUT = Path(__file__).resolve().parent / "out" / "ingest_formats"
sys.path.insert(0, str(ROOT / "tests"))  # conversations.py, as the fixture writers import it

from conversations import Call, calls, openai_chat_record  # noqa: E402

BASELINE = "openai-chat .jsonl"
SPANS_PER_LINE = 8  # OTLP spans per ExportTraceServiceRequest line (hand-made spans)

# One child per measurement: ingest (and for redact, analyze) into a fresh database.
CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import kvtool
def peak_mb():
    # VmHWM: this process's own peak (ru_maxrss keeps the parent's peak across fork + exec)
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
task = json.loads(sys.argv[1])
db = Path(task["db"])
db.unlink(missing_ok=True)
rss0 = peak_mb()
t0 = time.perf_counter()
reports = kvtool.ingest([task["path"]], db=db, redact=task["redact"])
t1 = time.perf_counter()
out = {"ingest_s": t1 - t0, "rss_start_mb": rss0, "files": [r.to_json() for r in reports]}
if task["analyze"]:
    res = kvtool.analyze(db=db).to_json()
    out["analyze_s"] = time.perf_counter() - t1
    out["db_mb"] = db.stat().st_size / 1e6
    keep = ("requests", "prompt_tokens", "ideal_hit_rate", "observed_hit_rate", "break_summary")
    out["result"] = {k: res.get(k) for k in keep}
    out["result"]["breaks"] = {k: v["count"] for k, v in (res.get("breaks") or {}).items()}
out["peak_rss_mb"] = peak_mb()
print(json.dumps(out))
"""


# ---------------------------------------------------------------------------------------------
# the traffic


def _load(tool: str) -> ModuleType:
    """``tests/fixtures/<tool>/make_fixtures.py`` as a module (its own name per tool)."""
    spec = importlib.util.spec_from_file_location(
        f"make_fixtures_{tool}", FIXTURES / tool / "make_fixtures.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def copy_map(base: list[Call], k: int) -> dict[str, str]:
    """What copy ``k`` of the conversation set changes: each base session id, request-id prefix
    and user question -> its copy-``k`` value (copy 0 keeps ids and only tags questions)."""
    out: dict[str, str] = {}
    for call in base:
        s = int(call.session_id.rsplit("-", 1)[1])
        out[call.session_id] = f"sess-{3 * k + s}"
        out[f"req-{s}-"] = f"req-{3 * k + s}-"
        for m in call.messages:
            if m.role == "user" and m.text is not None:
                out[m.text] = f"{m.text} [case {k}]"
    return out


def scaled_calls(base: list[Call], copies: int) -> list[Call]:
    """``copies`` copies of ``base``, copy-major, each changed as ``copy_map`` says."""
    out: list[Call] = []
    for k in range(copies):
        m = copy_map(base, k)
        for c in base:
            msgs = tuple(
                dataclasses.replace(x, text=m[x.text]) if x.role == "user" else x
                for x in c.messages
            )
            s = c.session_id.rsplit("-", 1)[1]
            rid = m[f"req-{s}-"] + c.request_id.removeprefix(f"req-{s}-")
            out.append(
                dataclasses.replace(c, request_id=rid, session_id=m[c.session_id], messages=msgs)
            )
    return out


class Template:
    """A committed fixture text whose ``copy_map`` keys are slots: ``fill`` writes one copy.
    Invariant: one pass over the text, so a filled value is never substituted again."""

    def __init__(self, text: str, keys: list[str]) -> None:
        alternation = "|".join(re.escape(k) for k in sorted(keys, key=len, reverse=True))
        parts = re.split(f"({alternation})", text)
        self.literals, self.slots = parts[0::2], parts[1::2]

    def fill(self, mapping: dict[str, str]) -> str:
        out = [self.literals[0]]
        for slot, literal in zip(self.slots, self.literals[1:], strict=True):
            out += (mapping[slot], literal)
        return "".join(out)


def _fixture_text(path: Path) -> str:
    data = path.read_bytes()
    return (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode()


def _in_set(text: str, base: list[Call]) -> bool:
    """Whether a fixture line/row belongs to the conversation set (not an extra record, such
    as LiteLLM's truncated-prompt row)."""
    sessions = {c.session_id.rsplit("-", 1)[1] for c in base}
    return all(rid.split("-")[1] in sessions for rid in re.findall(r"req-\d+-\d+-\d+", text))


def repeat_jsonl(path: Path, base: list[Call], copies: int) -> bytes:
    lines = [ln for ln in _fixture_text(path).splitlines(keepends=True) if _in_set(ln, base)]
    maps = [copy_map(base, k) for k in range(copies)]
    tpl = Template("".join(lines), list(maps[0]))
    return "".join(tpl.fill(m) for m in maps).encode()


def repeat_csv(path: Path, base: list[Call], copies: int) -> bytes:
    csv.field_size_limit(1 << 30)
    rows = list(csv.reader(io.StringIO(_fixture_text(path), newline="")))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(r for r in rows[1:] if _in_set(r[0], base))
    maps = [copy_map(base, k) for k in range(copies)]
    tpl = Template(buf.getvalue(), list(maps[0]))
    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow(rows[0])
    return (header.getvalue() + "".join(tpl.fill(m) for m in maps)).encode()


def repeat_parquet(path: Path, base: list[Call], copies: int, dest: Path) -> None:
    table = pq.read_table(path)
    rows = [r for r in table.to_pylist() if _in_set(str(r["request_id"]), base)]
    maps = [copy_map(base, k) for k in range(copies)]
    keys = list(maps[0])
    cells = [
        {c: Template(v, keys) if isinstance(v, str) else v for c, v in r.items()} for r in rows
    ]
    out = [
        {c: v.fill(m) if isinstance(v, Template) else v for c, v in r.items()}
        for m in maps
        for r in cells
    ]
    pq.write_table(pa.Table.from_pylist(out, schema=table.schema), dest)


def jsonl(records: list[dict]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def otel_spans(otel: ModuleType, cs: list[Call]) -> bytes:
    """The hand-made GenAI spans (``spec_span``) with the non-chat spans of their traces,
    ``SPANS_PER_LINE`` per OTLP/JSON line, as the spec-forms fixture packs them."""
    spans: list[dict] = []
    for c in cs:
        others = otel.other_spans(c)
        spans += [otel.spec_span(c, "chat"), *(others[:1] if c.response.tool_calls else others[1:])]
    resource = {"attributes": otel._kv({"service.name": "acme-support-agent"})}
    scope = {"name": "bench", "version": "1.40.0"}
    return jsonl(
        [
            {
                "resourceSpans": [
                    {
                        "resource": resource,
                        "scopeSpans": [{"scope": scope, "spans": spans[i : i + SPANS_PER_LINE]}],
                    }
                ]
            }
            for i in range(0, len(spans), SPANS_PER_LINE)
        ]
    )


@dataclass(frozen=True)
class Variant:
    """One row: ``label``, the format detection must pick, the file, and how it is written
    (``write(dest)``; None: the row is skipped, ``note`` says why)."""

    label: str
    fmt: str
    file: str
    source: str
    write: Callable[[Path], None] | None
    note: str = ""


def variants(cs: list[Call], base: list[Call], copies: int) -> list[Variant]:
    bedrock, helicone, langfuse, otel = (
        _load(t) for t in ("bedrock", "helicone", "langfuse", "otel")
    )
    baseline = jsonl([openai_chat_record(c) for c in cs])

    def put(data: bytes | Callable[[], bytes]) -> Callable[[Path], None]:
        return lambda dest: dest.write_bytes(data() if callable(data) else data)

    def rep(tool: str, name: str) -> Callable[[Path], None]:
        path = FIXTURES / tool / name
        if ".csv" in name:
            return put(lambda: repeat_csv(path, base, copies))
        if name.endswith(".parquet"):
            return lambda dest: repeat_parquet(path, base, copies, dest)
        return put(lambda: repeat_jsonl(path, base, copies))

    ops = ("Converse", "ConverseStream")
    inv = ("InvokeModel", "InvokeModelWithResponseStream")
    return [
        Variant(BASELINE, "openai-chat", "chat.jsonl", "openai_chat_record", put(baseline)),
        Variant(
            "openai-chat .jsonl.gz",
            "openai-chat",
            "chat.jsonl.gz",
            "gzip -6",
            put(lambda: gzip.compress(baseline, compresslevel=6, mtime=0)),
        ),
        Variant(
            "openai-chat .jsonl.zst",
            "openai-chat",
            "chat.jsonl.zst",
            "zstd (pyarrow)",
            put(lambda: pa.compress(baseline, codec="zstd", asbytes=True)),
        ),
        Variant(
            "anthropic messages",
            "anthropic",
            "anthropic.jsonl",
            "template anthropic/messages.jsonl",
            rep("anthropic", "messages.jsonl"),
        ),
        Variant(
            "openai-responses",
            "openai-responses",
            "responses.jsonl",
            "template openai/responses.jsonl",
            rep("openai", "responses.jsonl"),
        ),
        Variant(
            "bedrock converse",
            "bedrock",
            "bedrock-converse.jsonl",
            "writer bedrock.converse_record",
            put(lambda: jsonl([bedrock.converse_record(c, ops[i % 2]) for i, c in enumerate(cs)])),
        ),
        Variant(
            "bedrock invoke (anthropic)",
            "bedrock",
            "bedrock-invoke.jsonl",
            "writer bedrock.invoke_record",
            put(lambda: jsonl([bedrock.invoke_record(c, inv[i % 2]) for i, c in enumerate(cs)])),
        ),
        Variant(
            "helicone .jsonl",
            "helicone",
            "helicone.jsonl",
            "writer helicone (gateway bodies)",
            put(
                lambda: jsonl(
                    [
                        helicone._request(
                            c, helicone._openai_bodies(c), clickhouse=True, gateway=True
                        )
                        for c in cs
                    ]
                )
            ),
        ),
        Variant(
            "helicone export .csv",
            "helicone",
            "helicone.csv",
            "writer helicone.export_csv",
            put(
                lambda: helicone.export_csv(
                    [
                        helicone._request(
                            c, helicone._openai_bodies(c), clickhouse=False, gateway=True
                        )
                        for c in cs
                    ]
                )
            ),
        ),
        Variant(
            "langfuse observations v2",
            "langfuse",
            "langfuse-obs.jsonl",
            "writer langfuse.observations_v2",
            put(lambda: jsonl(langfuse.observations_v2(cs))),
        ),
        Variant(
            "langfuse traces",
            "langfuse",
            "langfuse-traces.jsonl",
            "writer langfuse.traces",
            put(lambda: jsonl(langfuse.traces(cs))),
        ),
        Variant(
            "langfuse batch .csv",
            "langfuse",
            "langfuse.csv",
            "writer langfuse.batch_export_csv",
            put(lambda: langfuse.batch_export_csv(cs)),
        ),
        Variant(
            "otel spans (spec form)",
            "otel-genai",
            "otel-spec.jsonl",
            "writer otel.spec_span",
            put(lambda: otel_spans(otel, cs)),
        ),
        Variant(
            "otel spans (genai-openai)",
            "otel-genai",
            "otel-genai-openai.jsonl",
            "template otel/genai-openai.jsonl",
            rep("otel", "genai-openai.jsonl"),
        ),
        Variant(
            "otel events (logs + traces)",
            "otel-genai",
            "",
            "",
            None,
            "skipped: a log file and its span file are read as a pair; not scaled here",
        ),
        Variant(
            "litellm payload",
            "litellm-payload",
            "litellm-payload.jsonl",
            "template litellm/payload.jsonl.gz",
            rep("litellm", "payload.jsonl.gz"),
        ),
        Variant(
            "litellm spendlogs .jsonl",
            "litellm-spendlogs",
            "spendlogs.jsonl",
            "template litellm/spendlogs.jsonl.gz",
            rep("litellm", "spendlogs.jsonl.gz"),
        ),
        Variant(
            "litellm spendlogs .csv",
            "litellm-spendlogs",
            "spendlogs.csv",
            "template litellm/spendlogs.csv.gz",
            rep("litellm", "spendlogs.csv.gz"),
        ),
        Variant(
            "litellm spendlogs .parquet",
            "litellm-spendlogs",
            "spendlogs.parquet",
            "template litellm/spendlogs.parquet",
            rep("litellm", "spendlogs.parquet"),
        ),
    ]


# ---------------------------------------------------------------------------------------------
# measuring


def run_child(path: Path, db: Path, *, redact: bool = False, analyze: bool = False) -> dict:
    task = {"path": str(path), "db": str(db), "redact": redact, "analyze": analyze}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(task)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def best(path: Path, db: Path, repeat: int, **kw: bool) -> dict:
    """The fastest of ``repeat`` runs (its own peak RSS)."""
    runs = [run_child(path, db, **kw) for _ in range(repeat)]
    ok = [r for r in runs if "error" not in r]
    return min(ok, key=lambda r: r["ingest_s"] + r.get("analyze_s", 0.0)) if ok else runs[0]


def measure(v: Variant, n: int, content: int, disk: int, repeat: int) -> dict:
    path = OUT / v.file
    row: dict = {"label": v.label, "format": v.fmt, "source": v.source, "disk_mb": disk / 1e6}
    row["content_mb"] = content / 1e6
    got = best(path, OUT / "bench.duckdb", repeat)
    if "error" in got:
        row["note"] = "error: " + got["error"]
        return row
    files = got["files"]
    requests = sum(f["requests"] for f in files)
    rejected = sum(f["rejected"] for f in files)
    detected = ",".join(sorted({f["format"] for f in files}))
    wall = got["ingest_s"]
    row.update(
        wall_s=wall,
        requests=requests,
        records=sum(f["records"] for f in files),
        rejected=rejected,
        detected=detected,
        req_per_s=requests / wall,
        mb_per_s=content / 1e6 / wall,
        peak_rss_mb=got["peak_rss_mb"],
        rss_start_mb=got["rss_start_mb"],
    )
    problems = []
    if detected != v.fmt:
        problems.append(f"detected {detected}")
    if requests != n:
        problems.append(f"{requests} of {n} requests")
    if rejected:
        problems.append(f"{rejected} rejected: {next(iter(files[0]['reject_reasons']), '')}")
    skipped = sum(f["skipped"] for f in files)
    if skipped:
        problems.append(f"+{skipped:,} out-of-scope records")
    row["note"] = "; ".join(problems)
    return row


def redact_cost(path: Path, repeat: int) -> list[dict]:
    out = []
    for redact in (False, True):
        got = best(path, OUT / "redact.duckdb", repeat, redact=redact, analyze=True)
        if "error" not in got:
            got["total_s"] = got["ingest_s"] + got["analyze_s"]
        out.append({"redact": redact, **got})
    return out


# ---------------------------------------------------------------------------------------------
# printing


HEAD = (
    f"{'format':<28} {'MB':>6} {'B/req':>6} {'wall s':>7} {'req/s':>8} {'MB/s':>6} "
    f"{'x base':>6} {'RSS MB':>6}  note"
)


def print_row(r: dict, base: dict) -> None:
    if "wall_s" not in r:
        print(f"{r['label']:<28} {'':>53}  {r.get('note', '')}", flush=True)
        return
    per_req = r["content_mb"] * 1e6 / max(r["requests"], 1)
    print(
        f"{r['label']:<28} {r['content_mb']:>6.1f} {per_req:>6,.0f} {r['wall_s']:>7.2f} "
        f"{r['req_per_s']:>8,.0f} {r['mb_per_s']:>6.1f} "
        f"{r['wall_s'] / base['wall_s']:>5.1f}x {r['peak_rss_mb']:>6,}  {r['note']}",
        flush=True,
    )


def print_redact(rows: list[dict]) -> None:
    plain, red = rows
    if "error" in plain or "error" in red:
        print(f"redact: error: {plain.get('error') or red.get('error')}")
        return
    for r in rows:
        res = r["result"]
        print(
            f"{'--redact' if r['redact'] else 'no redact':<10} ingest {r['ingest_s']:6.2f} s  "
            f"analyze {r['analyze_s']:6.2f} s  total {r['total_s']:6.2f} s  "
            f"db {r['db_mb']:5.1f} MB  peak RSS {r['peak_rss_mb']:,} MB  "
            f"ideal {res['ideal_hit_rate']:.4f} observed {res['observed_hit_rate']:.4f} "
            f"breaks {res['break_summary']['breaks']}"
        )
    same = plain["result"] == red["result"]
    print(
        f"--redact costs {red['total_s'] / plain['total_s']:.2f}x the time of ingest + analyze "
        f"(ingest alone {red['ingest_s'] / plain['ingest_s']:.1f}x: it tokenizes there); "
        f"same hit rates and breaks per cause: {same}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20_000, help="rounded up to whole copies")
    ap.add_argument("--repeat", type=int, default=1, help="runs per row; the fastest counts")
    ap.add_argument("--only", help="comma-separated substrings of row labels (baseline always)")
    ap.add_argument("--no-redact", action="store_true", help="skip the --redact measurement")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead")
    ap.add_argument("--keep", action="store_true", help=f"keep the written files in {OUT}")
    args = ap.parse_args()
    base = calls()
    copies = -(-args.requests // len(base))
    cs = scaled_calls(base, copies)
    n = len(cs)
    OUT.mkdir(parents=True, exist_ok=True)
    chosen = variants(cs, base, copies)
    if args.only:
        wanted = [w.strip() for w in args.only.split(",")]
        chosen = [v for v in chosen if v.label == BASELINE or any(w in v.label for w in wanted)]
    say = (lambda *a: None) if args.json else print
    say(
        f"traffic: {n:,} requests = {copies:,} copies of tests/conversations.py "
        f"({len(base)} requests, 3 sessions); each ingest in a fresh child process, "
        f"best of {args.repeat}"
    )
    rows: list[dict] = []
    baseline_bytes = 0
    t_start = time.perf_counter()
    say(HEAD + "\n" + "-" * len(HEAD))
    for v in chosen:
        if v.write is None:
            rows.append({"label": v.label, "format": v.fmt, "note": v.note})
            if not args.json:
                print_row(rows[-1], rows[0])
            continue
        path = OUT / v.file
        t0 = time.perf_counter()
        v.write(path)
        write_s = time.perf_counter() - t0
        disk = path.stat().st_size
        compressed = path.suffix in (".gz", ".zst")
        content = baseline_bytes if compressed else disk
        if v.label == BASELINE:
            baseline_bytes = disk
        row = measure(v, n, content, disk, args.repeat)
        row["write_s"] = write_s
        if compressed:
            row["note"] = (row["note"] + "; " if row["note"] else "") + (
                f"{disk / 1e6:.2f} MB on disk"
            )
        rows.append(row)
        if not args.json:
            print_row(row, rows[0])
        if not args.keep and v.label != BASELINE:
            path.unlink()
    say(
        "MB: content as written (.gz/.zst: the JSONL inside); x base: wall time over the "
        "baseline's; RSS: peak of the ingesting child;\nout-of-scope: valid records that are "
        "not requests (counted as skipped and stored in the rejects table)"
    )
    redact = [] if args.no_redact else redact_cost(OUT / "chat.jsonl", args.repeat)
    if redact and not args.json:
        print(f"\n--redact on the baseline file ({n:,} requests), ingest then analyze:")
        print_redact(redact)
    if not args.keep:
        shutil.rmtree(OUT, ignore_errors=True)
    say(f"\nbench wall time {time.perf_counter() - t_start:.0f} s")
    if args.json:
        doc = {"requests": n, "copies": copies, "repeat": args.repeat, "rows": rows}
        doc["redact"] = redact
        print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
