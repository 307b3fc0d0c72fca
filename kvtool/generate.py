"""Synthetic OpenAI-format gateway logs with exactly known properties.

``generate(kind, sessions, seed, out)`` writes one JSONL record per request (gzip when ``out`` ends
with ``.gz``) and ``<out>.truth.json`` with the ground truth the analyzers must recover. Everything
comes from one ``random.Random`` seeded with the kind and ``seed`` (no global or numpy randomness):
the same arguments give byte-identical files (gzip included), whatever PYTHONHASHSEED.

Kinds:

- ``agent``: one system prompt and one tool catalog shared by every request; each session is a user
  task followed by ``steps`` requests, request k holding k assistant tool calls and k tool
  observations, so each request extends the previous one by exactly two messages.
- ``chat``: one system prompt; sessions of 1-8 turns, turn k resending the k-1 earlier exchanges.
- ``rag``: one system prompt; each request is [system, user] where the user message starts with 1-3
  retrieved documents from a Zipf-popular corpus (most popular first) and ends with a question.
  Requests of a session do not extend each other.

Breakers (agent only, ``breakers=N``): N sessions per cause in ``BREAK_CAUSES`` get one injected
prefix break each (a model switch, tool churn, a schema edit, re-serialized JSON, a volatile date or
id in the system prompt, a system prompt edit, a history edit, a whitespace-only re-render). The
truth lists every request that does not extend its predecessor (the previous request of its
session), with the cause and the path of the first difference (``GenerationTruth.breaks``), by
construction. Session 0 and the sessions not chosen stay exactly as without breakers.

Records are written in non-decreasing timestamp order (sessions interleave). Each session builds its
message list incrementally (messages are shared dicts, never copied) and each record is serialized
once with orjson, so hundreds of MB take seconds.
"""

from __future__ import annotations

import bisect
import gzip
import heapq
import random
import re
import string
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from io import BufferedIOBase
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson

KINDS = ("agent", "chat", "rag")

DEFAULT_START = datetime(2026, 11, 1, 9, 0, 0, tzinfo=UTC)
DEFAULT_STEPS = {"agent": (4, 24), "chat": (1, 8), "rag": (1, 4)}
TEMPERATURE = {"agent": 0.2, "chat": 0.7, "rag": 0.1}
ARRIVAL_WINDOW_S = 3600.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class GenerationTruth:
    """What a generated file contains, by construction.

    Invariants: ``sessions == len(requests_per_session)``; ``requests`` is the number of records
    and equals ``sum(requests_per_session.values())``; ``output_tokens`` is the exact sum of
    ``response.usage.completion_tokens``. ``continuation`` is True when every non-first request of
    a session starts with all messages of that session's previous request, unchanged (agent, chat).
    ``shared_prefix_messages`` is the number of leading messages identical in every request
    (measured on the written records; 1 = the system prompt). ``tools`` is the agent tool catalog,
    else None. ``breaks`` has one row per request that breaks its predecessor's prefix (injected
    breakers, file order): ``{"request_id", "predecessor_id", "session_id", "cause", "path",
    "variant"}``; ``path`` names the first difference, in the order model, ``messages[0]``,
    ``tools[0..]``, ``messages[1..]`` (e.g. ``tools[3].function.description``,
    ``messages[5].content``).
    """

    kind: str
    seed: int
    sessions: int
    requests: int
    output_tokens: int
    requests_per_session: dict[str, int]
    continuation: bool
    shared_prefix_messages: int
    system_prompt: str
    tools: list[dict] | None
    model: str
    breaks: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        """A JSON-ready dict with the fields in declaration order."""
        return asdict(self)


# --------------------------------------------------------------------------------------- words


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _plural(noun: str) -> str:
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


_NOUNS = _words(
    """account agent alert answer approach archive argument array batch benchmark branch buffer
    budget build bundle cache call channel chart check client cluster column command comment commit
    component config connection constraint container context contract counter customer dashboard
    dataset deadline default deployment detail device diagram document domain draft driver endpoint
    engine entry error estimate event example experiment export feature field file filter flag
    folder form format function gateway graph handler header history host image index input
    instance interface invoice item job key label latency layer layout library limit line link list
    loader log lookup manager map market meeting memory message method metric migration model module
    monitor network node note object offer option order output owner package page panel parameter
    parser partner path pattern payload payment permission pipeline plan platform plugin policy pool
    port prefix price problem process product profile project prompt property proposal provider
    query queue quota rate reader record region registry release report repository request resource
    response result review role route rule runner sample schedule schema scope screen script section
    segment sensor server service session setting shard signal snapshot source spec stage state step
    storage stream string summary supplier table tag target task team template tenant test thread
    threshold ticket timeout token tool topic trace transaction update upload user value vendor
    version view volume warning window worker workflow"""
)
_PLURALS = tuple(_plural(n) for n in _NOUNS)
_VERBS = _words(
    """accept add adjust allocate analyze apply archive assign avoid build cache calculate change
    check clean collect compare compile configure confirm connect contain convert copy create debug
    define delete deliver deploy describe detect disable document download drop enable encode
    ensure estimate evaluate expand export extend extract fetch filter fix flush format generate
    handle ignore import improve include index inspect install load lock log manage measure merge
    migrate monitor move normalize notify open optimize parse patch plan prepare process publish
    read rebuild record reduce refresh register reject release remove rename render repair replace
    report request reset resolve restart restore retry return review rewrite route run sample save
    scan schedule search send serialize skip sort split start store submit summarize support sync
    test track transform trigger update upgrade upload validate verify watch write"""
)
_VERBS3 = tuple(_plural(v) for v in _VERBS)  # third person singular follows the plural rule
_ADJS = _words(
    """active available basic broken careful clean clear common complete consistent critical
    current custom daily detailed different direct duplicate early empty entire existing expensive
    external fast final flexible frequent full general global heavy helpful hidden high important
    incorrect initial internal large late legacy limited local long low main manual minor missing
    modern monthly native new normal obvious old optional original partial previous primary private
    public quick rare recent regional related reliable remote required safe secondary separate
    serious shared short simple single slow small specific stable stale standard strict strong
    temporary typical unexpected unique unused upstream urgent useful valid weekly"""
)
_ADVS = _words(
    """again also always carefully currently directly eventually first frequently immediately
    instead later manually now often only quickly rarely recently regularly still usually"""
)
_DETS = ("the", "the", "the", "the", "this", "each", "our", "every", "that", "any", "your")
_PDETS = ("the", "the", "these", "our", "your", "all", "those", "many", "some")
_PREPS = _words(
    "in on for from with into after before during across within without under over about between "
    "through behind"
)
_MODALS = ("should", "can", "must", "will", "may", "might", "could", "would")
_CONJS = ("and", "but", "so", "because", "while", "although", "when")
_LEADS = (
    "Usually", "Currently", "Eventually", "Recently", "Often", "Later", "Now", "Sometimes",
    "In practice", "By default",
)  # fmt: skip
_NUMS = tuple(str(n) for n in range(2, 1000))
_TYPES = ("str", "int", "float", "bool", "dict[str, Any]", "list[str]", "Path", "bytes")
_DEFAULTS = ("None", "0", "False", "True", '""', "1024", "30", "0.5", "()")
_EXCS = ("ValueError", "KeyError", "RuntimeError", "TypeError", "TimeoutError", "OSError")
_MODULES = (
    "os", "re", "json", "time", "logging", "hashlib", "asyncio", "itertools", "functools",
    "pathlib", "typing", "dataclasses", "collections", "contextlib", "subprocess", "datetime",
)  # fmt: skip
_CLASSES = tuple(n.capitalize() for n in _NOUNS)

_SLOTS: dict[str, tuple[str, ...]] = {
    # prose
    "D": _DETS, "Q": _PDETS, "A": _ADJS, "N": _NOUNS, "P": _PLURALS, "V": _VERBS, "S": _VERBS3,
    "R": _PREPS, "B": _ADVS, "L": _LEADS, "M": _MODALS, "C": _CONJS, "#": _NUMS,
    # code
    "n": _NOUNS, "v": _VERBS, "K": _CLASSES, "T": _TYPES, "F": _DEFAULTS, "E": _EXCS,
    "m": _MODULES,
}  # fmt: skip

_Template = tuple[str, tuple[tuple[tuple[str, ...], str], ...], int]


def _compile(template: str) -> _Template:
    """'%D %N %S.' -> (leading literal, ((slot table, literal after), ...), word count)."""
    head, *rest = template.split("%")
    return head, tuple((_SLOTS[p[0]], p[1:]) for p in rest), len(template.split())


_SENTENCES = tuple(
    _compile(t)
    for t in (
        "%D %A %N %S %D %N %R %D %N.",
        "%D %N %S %D %A %N.",
        "We %M %V %D %N %R %D %A %N.",
        "If %D %N %S %D %N, %D %N %M %V %D %A %N.",
        "%D %N %R %D %N is %A, %C %D %N is %B %A.",
        "You %M %V %D %A %N before %D %N %S %D %N.",
        "This %S %D %N %B, which %S %D %A %N %R %D %N.",
        "Most %P %V %D %A %N %R %D %N.",
        "There are %# %A %P %R %D %N.",
        "Please %V %D %N and %V %D %A %N.",
        "%D %N is %A because %Q %P are %A.",
        "%L, %D %N %S %D %N %R %D %A %N.",
        "Every %N %S at most %# %P per %N.",
        "%D %A %N %M %V %D %N %C %Q %P %V %B.",
        "Our %P %V %D %A %N %B %R %D %N.",
        "It %S %D %N only when %D %N is %A.",
    )
)
_QUESTIONS = tuple(
    _compile(t)
    for t in (
        "How %M I %V %D %A %N %R %D %N?",
        "What is the best way to %V %D %N %R %D %A %N?",
        "Why does %D %N %V %D %N when %D %N %S %Q %P?",
        "Can you explain how %D %N %S %Q %P?",
        "Is it %A to %V %D %N %R %D %N?",
        "Which %N %M we %V first if %D %N is %A?",
        "How many %P %M %D %A %N %V %R %D %N?",
        "What happens to %Q %P when %D %N %S %D %A %N?",
        "Should I %V %D %N or %V %D %A %N instead?",
    )
)
# Code: blocks of statements (nested lines carry their relative indent), indented by the caller.
_CODE_BLOCKS = tuple(
    tuple(_compile(line) for line in block)
    for block in (
        ('%n = self.%n.get("%n", %F)',),
        ("if %n is None:", '    raise %E(f"%N %S %D %N: {%n}")'),
        ("for %n in self.%n:", "    %n.append(%v_%n(%n, %n=%F))"),
        ("# %D %N %S %D %A %N",),
        ('logger.debug("%v %n", extra={"%n": %n})',),
        ("%n: %T = %v_%n(%n)",),
        ("with self._%n_lock:", "    self._%n[%n] = %n"),
        ("%n = [%n for %n in %n if %n.%n]",),
        ('assert %n >= %F, "%A %N"',),
        ("try:", "    %n = %m.%v(%n)", "except %E as exc:", '    raise %E("%v %n") from exc'),
        ("if not %n:", "    return %F"),
        ("%n += len(%n)",),
        ("self.%n = %n",),
    )
)
_CODE_LINES = tuple(line for block in _CODE_BLOCKS for line in block)
_FUNC_DEFS = tuple(
    _compile(t)
    for t in (
        "def %v_%n(%n: %T, %n: %T = %F) -> %T:",
        "async def %v_%n(%n: %T, *, %n: %T = %F) -> %T:",
    )
)
_METHOD_DEFS = tuple(
    _compile(t)
    for t in (
        "def %v_%n(self, %n: %T) -> %T:",
        "async def %v(self, %n: %T, *, timeout: float = %F) -> %T:",
        "def _%v(self) -> None:",
        "def __init__(self, %n: %T, %n: %T = %F) -> None:",
    )
)
_CLASS_DEFS = tuple(_compile(t) for t in ("class %K%K:", "class %K%K(%K%K):"))
_CODE_HEAD = tuple(
    _compile(t)
    for t in (
        "import %m",
        "from %m import %K",
        "from .%n import %K%K, %v_%n",
        "from ..%n import %n",
    )
)
_NOTES = tuple(
    _compile(t)
    for t in (
        "Let me %V %D %N first.",
        "I will check %D %N next.",
        "The %N looks %A; next I will %V %D %N.",
        "Now I'll %V %D %A %N.",
        "That explains the %A %N. Let me %V %D %N.",
        "Running the %P again to confirm.",
    )
)

# Short non-English lines and emoji sprinkled into observations (written for this generator).
_FOREIGN = (
    "注意：缓存配置已更新，请重新启动服务。",
    "错误：无法连接到数据库，正在重试（第 3 次）",
    "说明：该字段已弃用，请改用新的参数。",
    "テストはすべて成功しました ✅",
    "設定ファイルが見つかりません。パスを確認してください。",
    "キャッシュの有効期限は五分です。",
    "Résumé : la requête a échoué après trois tentatives.",
    "Größe der Datei überschreitet das Limit für Übertragungen.",
    "¿Está seguro de que desea continuar con la migración?",
    "Atenção: o serviço será reiniciado às 18h, não há ação necessária.",
    "캐시가 비어 있습니다. 다시 시도하세요.",
    "Zażółć gęślą jaźń — test kodowania znaków zakończony.",
    "🚀 deploy finished in 42s",
    "⚠️ deprecated option, será eliminada en la próxima versión",
    "✨ all checks green 🎉",
    "🔥 hot path detected → consider caching 💡",
)
_PEOPLE = (
    "José Álvarez", "Zoë Lindqvist", "Łukasz Nowak", "François Dubois", "Søren Holm",
    "Chen Wei", "Sato Yuki", "Priya Raman", "Amara Okafor", "Mateo Rossi", "Hana Kim",
    "Ingrid Bäcklund",
)  # fmt: skip
_COMPANIES = (
    "Northwind Labs", "Bluefin Analytics", "Cobalt Freight", "Larkspur Health", "Tidewater Energy",
    "Quillon Systems", "Marigold Retail", "Granite Ledger",
)  # fmt: skip
_AGENT_NAMES = ("Atlas", "Forge", "Pilot", "Kestrel", "Orbit", "Tern", "Juniper", "Sable")
_EXTS = ("py", "py", "py", "ts", "go", "rs", "yaml", "md", "toml", "json")
_TOPS = ("src", "src", "lib", "app", "tests", "pkg", "services", "tools")


class _Text:
    """Seeded text builders; all randomness comes from the one ``rng`` given."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.choice = rng.choice
        self.randint = rng.randint
        self.random = rng.random

    def fill(self, template: _Template) -> str:
        head, parts, _ = template
        choice = self.choice
        return head + "".join([choice(table) + lit for table, lit in parts])

    def sentence(self, pool: tuple[_Template, ...] = _SENTENCES) -> str:
        s = self.fill(self.choice(pool))
        return s[0].upper() + s[1:]

    def question(self) -> str:
        return self.sentence(_QUESTIONS)

    def sentences(self, words: int, pool: tuple[_Template, ...] = _SENTENCES) -> list[str]:
        """Sentences until at least ``words`` words."""
        out: list[str] = []
        n = 0
        choice, fill = self.choice, self.fill
        while n < words:
            t = choice(pool)
            s = fill(t)
            out.append(s[0].upper() + s[1:])
            n += t[2]
        return out

    def paragraph(self, words: int) -> str:
        return " ".join(self.sentences(words))

    def paragraphs(self, words: int) -> str:
        """Prose of at least ``words`` words in paragraphs of 40-120 words."""
        out: list[str] = []
        while words > 0:
            n = min(words, self.randint(40, 120))
            out.append(self.paragraph(n))
            words -= n
        return "\n\n".join(out)

    def ident(self) -> str:
        return f"{self.choice(_VERBS)}_{self.choice(_NOUNS)}"

    def title(self) -> str:
        c = self.choice
        return f"{c(_ADJS).capitalize()} {c(_NOUNS).capitalize()} {c(_PLURALS).capitalize()}"

    def path(self) -> str:
        c = self.choice
        return f"{c(_TOPS)}/{c(_NOUNS)}/{c(_NOUNS)}_{c(_NOUNS)}.{c(_EXTS)}"

    def hexid(self, bits: int = 96) -> str:
        return f"{self.rng.getrandbits(bits):0{bits // 4}x}"

    def foreign(self) -> str:
        return self.choice(_FOREIGN)

    def code_lines(self, words: int) -> list[str]:
        """Python-looking source of about ``words`` words (6 characters each): imports, then
        functions and classes with methods."""
        c, fill, randint, random_ = self.choice, self.fill, self.randint, self.random
        lines = [fill(c(_CODE_HEAD)) for _ in range(randint(1, 4))]
        limit = 6 * words

        def body(indent: str) -> None:
            for _ in range(randint(1, 4)):
                lines.extend([indent + fill(t) for t in c(_CODE_BLOCKS)])
            lines.append(f"{indent}return {c(_NOUNS)}")

        while sum(map(len, lines)) + len(lines) < limit:
            lines.append("")
            if random_() < 0.35:
                lines.append(fill(c(_CLASS_DEFS)))
                if random_() < 0.5:
                    lines.append(f'    """{self.sentence()}"""')
                for k in range(randint(1, 2)):
                    if k:
                        lines.append("")
                    lines.append("    " + fill(c(_METHOD_DEFS)))
                    body("        ")
            else:
                lines.append(fill(c(_FUNC_DEFS)))
                body("    ")
        return lines


# --------------------------------------------------------------------------------------- agent

# name, description, parameters: (name, JSON type, value kind, description, required)
_ToolSpec = tuple[str, str, tuple[tuple[str, str, str, str, bool], ...]]
_TOOL_POOL: tuple[_ToolSpec, ...] = (
    ("read_file", "Read a text file from the workspace and return it with line numbers.", (
        ("path", "string", "path", "Path relative to the repository root.", True),
        ("start_line", "integer", "line", "First line to return (1-based).", False),
        ("end_line", "integer", "line", "Last line to return, inclusive.", False),
    )),
    ("write_file", "Create or overwrite a file with the given content.", (
        ("path", "string", "path", "Path relative to the repository root.", True),
        ("content", "string", "code", "The complete new file content.", True),
    )),
    ("edit_file", "Replace one exact occurrence of a string in a file.", (
        ("path", "string", "path", "File to edit.", True),
        ("old_string", "string", "code", "Text to replace; must match exactly once.", True),
        ("new_string", "string", "code", "Replacement text.", True),
    )),
    ("list_directory", "List files and folders under a directory.", (
        ("path", "string", "dir", "Directory relative to the repository root.", True),
        ("recursive", "boolean", "bool", "Descend into subdirectories.", False),
        ("max_depth", "integer", "small", "Maximum depth when recursive.", False),
    )),
    ("search_code", "Search the repository with a regular expression (ripgrep syntax).", (
        ("pattern", "string", "pattern", "Regular expression to search for.", True),
        ("path", "string", "dir", "Restrict the search to this directory.", False),
        ("file_glob", "string", "glob", "Only search files matching this glob.", False),
        ("case_sensitive", "boolean", "bool", "Match case exactly.", False),
    )),
    ("run_command", "Run a shell command in the workspace and return stdout and stderr.", (
        ("command", "string", "command", "The command line to execute.", True),
        ("timeout_seconds", "integer", "timeout", "Kill the command after this many seconds.",
         False),
        ("cwd", "string", "dir", "Working directory for the command.", False),
    )),
    ("run_tests", "Run the test suite or a subset of it and report failures.", (
        ("target", "string", "path", "Test file, directory or node id.", False),
        ("verbose", "boolean", "bool", "Print every test name.", False),
        ("markers", "string", "enum:unit,integration,slow,not slow", "Marker expression.", False),
    )),
    ("git_diff", "Show uncommitted changes, or changes against a ref.", (
        ("ref", "string", "ref", "Commit, branch or tag to compare with.", False),
        ("paths", "array", "paths", "Limit the diff to these paths.", False),
    )),
    ("git_log", "Show recent commits.", (
        ("max_count", "integer", "small", "Number of commits to show.", False),
        ("path", "string", "path", "Only commits touching this path.", False),
    )),
    ("web_search", "Search the web and return titles, links and snippets.", (
        ("query", "string", "query", "Search query.", True),
        ("num_results", "integer", "small", "Number of results (1-10).", False),
    )),
    ("fetch_url", "Fetch a web page and return its readable text.", (
        ("url", "string", "url", "Absolute http(s) URL.", True),
        ("max_chars", "integer", "chars", "Truncate the text to this many characters.", False),
    )),
    ("python_eval", "Evaluate a short Python snippet in a sandbox and return its output.", (
        ("code", "string", "code", "Python source to run.", True),
    )),
    ("query_database", "Run a read-only SQL query against an internal database.", (
        ("sql", "string", "sql", "A single SELECT statement.", True),
        ("database", "string", "enum:analytics,billing,inventory", "Database to query.", True),
    )),
    ("create_ticket", "Open a ticket in the issue tracker.", (
        ("title", "string", "title", "One-line summary.", True),
        ("body", "string", "prose", "Markdown description.", True),
        ("priority", "string", "enum:low,medium,high,urgent", "Ticket priority.", False),
    )),
    ("send_message", "Post a message to a team chat channel.", (
        ("channel", "string", "channel", "Channel name without '#'.", True),
        ("text", "string", "prose", "Message text (Markdown).", True),
    )),
    ("get_metrics", "Fetch time series for a service metric.", (
        ("service", "string", "service", "Service name.", True),
        ("metric", "string", "enum:latency_p99,error_rate,requests,cpu,memory", "Metric name.",
         True),
        ("window_minutes", "integer", "window", "Look-back window in minutes.", False),
    )),
)  # fmt: skip
_TOOL_STYLE = {
    "read_file": "code", "write_file": "diff", "edit_file": "diff", "list_directory": "listing",
    "search_code": "search", "run_command": "log", "run_tests": "tests", "git_diff": "diff",
    "git_log": "commits", "web_search": "results", "fetch_url": "prose", "python_eval": "log",
    "query_database": "table", "create_ticket": "json", "send_message": "json",
    "get_metrics": "json",
}  # fmt: skip
_TOOL_WEIGHT = {"read_file": 6, "search_code": 4, "run_command": 4, "edit_file": 3, "run_tests": 3}


def _tool_schema(spec: _ToolSpec) -> dict:
    name, description, params = spec
    props: dict[str, dict] = {}
    for pname, ptype, kind, pdesc, _ in params:
        prop: dict[str, Any] = {"type": ptype, "description": pdesc}
        if kind.startswith("enum:"):
            prop["enum"] = kind[5:].split(",")
        if ptype == "array":
            prop["items"] = {"type": "string"}
        props[pname] = prop
    required = [p[0] for p in params if p[4]]
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": props, "required": required},
        },
    }


def _arg_value(t: _Text, kind: str) -> Any:
    c, randint = t.choice, t.randint
    if kind.startswith("enum:"):
        return c(kind[5:].split(","))
    match kind:
        case "path":
            return t.path()
        case "dir":
            return f"{c(_TOPS)}/{c(_NOUNS)}"
        case "paths":
            return [t.path() for _ in range(randint(1, 3))]
        case "line":
            return randint(1, 400)
        case "small":
            return randint(1, 10)
        case "timeout":
            return c((30, 60, 120, 300))
        case "window":
            return c((15, 60, 240, 1440))
        case "chars":
            return c((4000, 8000, 20000))
        case "bool":
            return t.random() < 0.5
        case "code":
            return "\n".join(t.code_lines(randint(8, 30)))
        case "pattern":
            return c((r"def {}\(", r"class {}\b", r"{}\s*=", r"import {}")).format(t.ident())
        case "glob":
            return f"*.{c(_EXTS)}"
        case "command":
            return c((
                "pytest -x -q {}", "python -m {} --help", "git grep -n {}", "make {}",
                "ls -la {}", "npm run {}", "cargo test {}", "go test ./{}/...",
            )).format(c(_NOUNS))  # fmt: skip
        case "ref":
            return c(("HEAD~1", "main", "origin/main", f"release-{randint(1, 9)}.{randint(0, 20)}"))
        case "query" | "title":
            return t.fill(c(_QUESTIONS))[:-1]
        case "url":
            return f"https://docs.{c(_NOUNS)}.example.com/{c(_NOUNS)}/{t.ident().replace('_', '-')}"
        case "sql":
            return (
                f"SELECT {c(_NOUNS)}_id, count(*) AS n FROM {c(_PLURALS)} "
                f"WHERE {c(_NOUNS)} > {randint(1, 999)} GROUP BY 1 ORDER BY n DESC LIMIT 20"
            )
        case "channel":
            return f"{c(_NOUNS)}-{c(('ops', 'dev', 'alerts', 'eng'))}"
        case "service":
            return f"{c(_NOUNS)}-{c(('api', 'worker', 'gateway', 'sync'))}"
        case _:  # prose
            return t.paragraph(randint(15, 50))


def _observation(t: _Text, tool: str, args: dict, words: int) -> str:
    """A tool result of about ``words`` words (6 characters each) in the style of ``tool``."""
    c, randint = t.choice, t.randint
    style = _TOOL_STYLE[tool]
    lines: list[str] = []
    limit = 6 * words
    n = 0

    def add(line: str) -> None:
        nonlocal n
        lines.append(line)
        n += len(line) + 1

    if style == "code":
        first = args.get("start_line") or 1
        for i, line in enumerate(t.code_lines(words * 4 // 5), first):
            lines.append(f"{i:>6}\t{line}")
    elif style == "diff":
        path = args.get("path") or t.path()
        add(f"diff --git a/{path} b/{path}")
        add(f"--- a/{path}")
        add(f"+++ b/{path}")
        while n < limit:
            a = randint(1, 600)
            add(f"@@ -{a},{randint(3, 12)} +{a + randint(-3, 6)},{randint(3, 14)} @@")
            for line in t.code_lines(randint(5, 20))[1:]:
                r = t.random()
                add(("-" if r < 0.2 else "+" if r < 0.45 else " ") + line)
    elif style == "listing":
        root = args.get("path") or "."
        add(f"{root}/")
        while n < limit:
            name = f"{c(_NOUNS)}_{c(_NOUNS)}.{c(_EXTS)}"
            branch = c(("├── ", "│   ├── ", "│   └── ", "└── "))
            add(f"{branch}{name}  ({randint(1, 900)} lines, {randint(1, 64)}.{randint(0, 9)} KB)")
    elif style == "search":
        while n < limit:
            add(f"{t.path()}:{randint(1, 900)}:{t.fill(c(_CODE_LINES))}")
    elif style == "tests":
        passed = failed = 0
        add(f"======== test session starts ======== platform linux, python 3.12.{randint(0, 9)}")
        while n < limit:
            ok = t.random() < 0.85
            passed, failed = passed + ok, failed + (not ok)
            add(f"tests/test_{c(_NOUNS)}.py::test_{t.ident()} {'PASSED' if ok else 'FAILED'}")
            if not ok:
                add(f"E       {c(_EXCS)}: {t.sentence()}")
        add(f"===== {failed} failed, {passed} passed in {randint(1, 90)}.{randint(10, 99)}s =====")
    elif style == "log":
        add(f"$ {args.get('command') or 'python -c ...'}")
        while n < limit:
            r = t.random()
            stamp = f"{randint(9, 11):02d}:{randint(0, 59):02d}:{randint(0, 59):02d}"
            if r < 0.6:
                add(f"[{stamp}] {c(('INFO', 'INFO', 'DEBUG', 'WARN'))} {t.ident()}: {t.sentence()}")
            elif r < 0.75:
                add(f"  {c(_PLURALS)}: {randint(1, 9999)} ok, {randint(0, 40)} skipped")
            elif r < 0.9:
                add("Traceback (most recent call last):")
                add(f'  File "{t.path()}", line {randint(1, 900)}, in {t.ident()}')
                add(t.fill(c(_CODE_LINES)))
                add(f"{c(_EXCS)}: {t.sentence()}")
            else:
                add(f"[{stamp}] {c(('✔', '✖', '⚠', '→'))} {t.sentence()}")
        add(f"exit code {c((0, 0, 0, 1, 2))}")
    elif style == "commits":
        while n < limit:
            add(f"commit {t.hexid(160)}")
            add(f"Author: {c(_PEOPLE)} <{c(_NOUNS)}@{c(_NOUNS)}.dev>")
            add(f"Date:   2026-10-{randint(1, 31):02d} {randint(8, 19):02d}:{randint(0, 59):02d}")
            add("")
            add(f"    {t.sentence()}")
            add("")
    elif style == "results":
        for i in range(1, 11):
            if n >= limit:
                break
            add(f"{i}. {t.title()} — {c(_NOUNS)}.example.org")
            add(f"   {t.paragraph(randint(20, 45))}")
    elif style == "prose":
        add(f"# {t.title()}")
        add("")
        add(t.paragraphs(max(words - 4, 20)))
    elif style == "table":
        cols = [f"{c(_NOUNS)}_id", c(_NOUNS), c(_NOUNS), "n"]
        add("| " + " | ".join(cols) + " |")
        add("|" + "---|" * len(cols))
        while n < limit:
            add(f"| {randint(1, 99999)} | {c(_ADJS)} | {c(_NOUNS)} | {randint(1, 5000)} |")
        add(f"({len(lines) - 2} rows)")
    else:  # json
        lines.append(orjson.dumps(_json_body(t, limit), option=orjson.OPT_INDENT_2).decode())
    if t.random() < 0.25:
        lines.insert(t.randint(0, len(lines)), t.foreign())
    return "\n".join(lines)


def _json_body(t: _Text, limit: int) -> dict:
    """An API-style JSON result of about ``limit`` characters once indented."""
    c = t.choice
    items = []
    n = 0
    while n < limit:
        item = {"id": t.hexid(32), "status": c(("ok", "open", "pending", "resolved"))}
        item[c(_NOUNS)] = t.sentence()
        item["value"] = t.randint(0, 10000)
        items.append(item)
        n += len(orjson.dumps(item)) * 3 // 2  # indented
    return {"ok": True, "request_id": t.hexid(64), "items": items}


def _agent_shared(t: _Text, today: str) -> tuple[str, list[dict], str]:
    """(system prompt of 300-500 words, tool catalog of 10-14 tools, workspace id) for one seed.

    The environment section states ``today`` (YYYY-MM-DD) and the workspace id (``ws-`` and 8 hex
    digits), both stable for the whole file."""
    name, company = t.choice(_AGENT_NAMES), t.choice(_COMPANIES)
    repo = f"{t.choice(_NOUNS)}-{t.choice(_NOUNS)}"
    workspace = f"ws-{t.hexid(32)}"
    head = (
        f"You are {name}, an autonomous software engineering agent working in the {repo} "
        f"repository for {company}. You act only through the tools described below, you never "
        "guess the contents of a file you have not read, and you stop to ask when a request is "
        "ambiguous or would destroy data."
    )
    tail = (
        "## Environment\n"
        f"- Working directory: /workspace/{repo}\n"
        "- Default branch: main; never push, never force.\n"
        "- Python 3.12 and Node 20 are installed; network access is limited to package mirrors.\n"
        f"- Current date: {today}\n"
        f"- Workspace: {workspace}\n\n"
        "## Output\nWhen the task is done, reply with a short summary of what changed, the files "
        "touched and the commands that verify it."
    )
    target = t.randint(300, 480) - len(head.split()) - len(tail.split())
    rules = t.sentences(target // 2)
    style = t.sentences(target - sum(len(r.split()) for r in rules))
    prompt = "\n\n".join(
        [
            head,
            "## Operating principles\n" + "\n".join(f"{i}. {r}" for i, r in enumerate(rules, 1)),
            "## Style\n" + " ".join(style),
            tail,
        ]
    )
    specs = t.rng.sample(_TOOL_POOL, t.randint(10, 14))
    return prompt, [_tool_schema(s) for s in specs], workspace


_TASK_OPENERS = (
    "The {noun} tests in {path} started failing after the last merge.",
    "We need to add a {adj} {noun} option to the {noun2} module in {path}.",
    "Users report that the {noun} endpoint is {adj} when the {noun2} is large.",
    "Refactor {path} so the {noun} handling no longer duplicates the {noun2} logic.",
    "The nightly job that builds the {noun} report crashes on {adj} input.",
)


def _agent_session(
    t: _Text,
    system: dict,
    tools: list[dict],
    steps: int,
    t0: int,
    brk: _Breaker | None = None,
) -> Iterator[tuple[int, list[dict], int]]:
    """(timestamp ms, messages, completion tokens) for each step of one agent session.

    ``brk`` (an injected breaker) changes the messages from its step on; without it the session
    draws exactly the same random numbers as it always did."""
    c, randint = t.choice, t.randint
    opener = c(_TASK_OPENERS).format(noun=c(_NOUNS), noun2=c(_NOUNS), adj=c(_ADJS), path=t.path())
    closer = c(("Please fix it and run the tests.", "Keep the change small.", "Explain the cause."))
    task = f"{opener} {t.paragraph(randint(40, 150) - 20)} {closer}"
    history: list[dict] = [system, {"role": "user", "content": task}]
    names = [tool["function"]["name"] for tool in tools]
    if brk is not None and brk.ban is not None:
        names.remove(brk.ban)  # the removed tool is never called
    weights = [_TOOL_WEIGHT.get(n, 1) for n in names]
    specs = {s[0]: s for s in _TOOL_POOL}
    stripped: dict[int, str | None] = {}  # assistant message index -> content without reasoning
    ts = t0
    for step in range(steps):
        if brk is not None and brk.edit == "args" and step == brk.s:
            # a call with every parameter (at least two), re-serialized at step k
            multi = [n for n in names if len(specs[n][2]) >= 2]
            name = t.rng.choices(multi, [_TOOL_WEIGHT.get(n, 1) for n in multi])[0]
            args = {pname: _arg_value(t, kind) for pname, _, kind, _, _ in specs[name][2]}
        else:
            name = t.rng.choices(names, weights)[0]
            args = {}
            for pname, _, kind, _, required in specs[name][2]:
                if required or t.random() < 0.4:
                    args[pname] = _arg_value(t, kind)
        arguments = orjson.dumps(args).decode()
        content = None if t.random() < 0.7 else t.sentence(_NOTES)
        if brk is not None and brk.edit == "think":
            stripped[len(history)] = content
            reasoning = f"<think>{brk.text.paragraph(brk.text.randint(15, 60))}</think>"
            content = f"{reasoning}\n{content}" if content else reasoning
        call_id = f"call_{t.hexid()}"
        if step == steps - 1:  # the final answer: a summary, not shown in any later request
            completion = randint(80, 400)
        else:
            extra = len(content.split()) * 4 // 3 if content else 0
            completion = min(400, max(20, len(arguments) // 4 + extra + randint(5, 120)))
        if brk is not None and step >= brk.k:
            brk.apply(history, step, ts, stripped)
        yield ts, history.copy(), completion
        history.append(
            {
                "role": "assistant",
                "content": content,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    }
                ],
            }
        )
        words = 60 + int(340 * t.random() ** 3)  # 60-400, mean 145: a heavy tail
        if brk is not None and brk.edit == "json" and step == brk.s:
            # a pretty-printed JSON object, re-serialized with its keys reversed at step k
            observation = orjson.dumps(_json_body(t, 6 * words), option=orjson.OPT_INDENT_2)
            observation = observation.decode()
        else:
            observation = _observation(t, name, args, words)
        history.append({"role": "tool", "tool_call_id": call_id, "content": observation})
        ts += randint(2000, 20000)


# ------------------------------------------------------------------------------------ breakers

# cause -> variants; session v (0-based) of a cause gets variant v % len(variants)
BREAK_CAUSES: dict[str, tuple[str, ...]] = {
    "model_changed": ("other_model",),
    "tool_added": ("middle", "end"),
    "tool_removed": ("middle", "last"),
    "tools_reordered": ("adjacent", "distant"),
    "tool_schema_edited": ("description", "param_description"),
    "json_key_order": ("tool_properties", "tool_call_arguments", "tool_result"),
    "volatile_timestamp": ("iso_z", "epoch", "rfc2822", "iso_ms_offset", "space"),
    "volatile_id": ("uuid4", "counter", "base62", "hex32", "hex8"),
    "system_edited": ("word",),
    "history_edited": ("truncated", "compacted", "reasoning_stripped"),
    "template_changed": ("single_newline", "trailing_spaces"),
}
# variants that edit an earlier message (its step s <= k - 2 must exist): k >= 3
_HISTORY_VARIANTS = frozenset(
    ("tool_call_arguments", "tool_result", "truncated", "compacted", "reasoning_stripped")
)
_OTHER_MODELS = (
    "deepseek-ai/DeepSeek-R1", "Qwen/Qwen2.5-72B-Instruct", "meta-llama/Llama-3.1-70B-Instruct",
)  # fmt: skip
_TOOL_NOTES = (
    "Prefer this tool over shell commands when both would work.",
    "Large results are truncated; narrow the request instead of repeating it.",
    "Every call is logged for auditing.",
)
_NOUN_SET = frozenset(_NOUNS)
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_BASE62 = string.digits + string.ascii_letters


def _stamp(variant: str, ms: int) -> str:
    """The time ``ms`` (UTC) in one of the volatile_timestamp formats."""
    d = _EPOCH + ms * _MS
    match variant:
        case "iso_z":
            return f"{d:%Y-%m-%dT%H:%M:%S}Z"
        case "iso_ms_offset":
            return f"{d:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}+00:00"
        case "space":
            return f"{d:%Y-%m-%d %H:%M:%S}"
        case "rfc2822":  # names spelled out: strftime's %a/%b follow the locale
            day, month = _WEEKDAYS[d.weekday()], _MONTHS[d.month - 1]
            return f"{day}, {d.day:02d} {month} {d.year} {d:%H:%M:%S} +0000"
        case _:  # epoch
            return str(ms // 1000)


@dataclass
class _Breaker:
    """One injected break: what changes from step ``k`` of one session on, and its truth path.

    The write loop applies ``model`` and ``tools`` (from step k on) and records the truth rows (step
    k, or every step from k on when ``every``); the session applies ``apply`` (system prompt and
    history edits). ``s`` is the earlier step whose call (message 2+2s) or observation (3+2s) a
    history edit changes; ``s <= k - 2`` so the message is in step k-1's request."""

    cause: str
    variant: str
    k: int
    path: str
    text: _Text  # randomness for injected values (not the session's own)
    every: bool = False
    model: str | None = None
    tools: list[dict] | None = None
    ban: str | None = None
    system: str | None = None  # the system prompt from step k on
    prompt: str = ""  # the clean system prompt (volatile edits)
    old: str = ""  # the clean line a volatile edit rewrites ("- Current date: ...\n")
    value: str = ""  # the volatile value of the previous step
    edit: str | None = None  # args, json, truncate, compact, think
    s: int = 0

    def volatile(self, step: int, ts: int) -> str:
        """The value of the volatile line at ``step`` (>= k), different from the previous one."""
        if self.cause == "volatile_timestamp":
            return f"- Current date: {_stamp(self.variant, ts)}\n"
        r = self.text.rng
        stable = self.old[len("- Workspace: ") : -1]
        while True:
            match self.variant:
                case "uuid4":
                    v = str(uuid.UUID(int=r.getrandbits(128), version=4))
                case "counter":
                    v = f"{stable}-{step}"
                case "base62":
                    chars = [r.choice(_BASE62) for _ in range(20)]
                    if not any(ch.isdigit() for ch in chars):
                        chars[r.randrange(20)] = r.choice(string.digits)
                    v = "req_" + "".join(chars)
                case "hex32":
                    v = f"{r.getrandbits(128):032x}"
                case _:  # hex8
                    v = f"ws-{r.getrandbits(32):08x}"
            if v != self.value:
                self.value = v
                return f"- Workspace: {v}\n"

    def apply(self, history: list[dict], step: int, ts: int, stripped: dict) -> None:
        """Edit ``history`` before step ``step`` (replacing message dicts, never mutating them)."""
        if self.every:
            content = self.prompt.replace(self.old, self.volatile(step, ts))
            history[0] = {"role": "system", "content": content}
        if step != self.k:
            return
        if self.system is not None:
            history[0] = {"role": "system", "content": self.system}
        i = 2 + 2 * self.s  # the assistant message of step s; its observation is i + 1
        match self.edit:
            case "args":
                msg = history[i]
                call = msg["tool_calls"][0]
                fn = call["function"]
                args = orjson.loads(fn["arguments"])
                fn = {**fn, "arguments": orjson.dumps(dict(reversed(args.items()))).decode()}
                history[i] = {**msg, "tool_calls": [{**call, "function": fn}]}
            case "json":
                obj = orjson.loads(history[i + 1]["content"])
                again = orjson.dumps(dict(reversed(obj.items())), option=orjson.OPT_INDENT_2)
                history[i + 1] = {**history[i + 1], "content": again.decode()}
            case "truncate":
                text = history[i + 1]["content"]
                history[i + 1] = {
                    **history[i + 1],
                    "content": text[: len(text) // 2] + "\n[... truncated]",
                }
            case "compact":  # every pair but the last (step k-1's) becomes one user message
                calls = [
                    m["tool_calls"][0]["function"]["name"]
                    for m in history[2 : 2 * step]
                    if m["role"] == "assistant"
                ]
                done = "; ".join(f"{n}. called {name}" for n, name in enumerate(calls, 1))
                summary = f"Summary of earlier steps: {done}. {self.text.sentence()}"
                history[2 : 2 * step] = [{"role": "user", "content": summary}]
            case "think":
                history[i] = {**history[i], "content": stripped[i]}


def _reword_word(prompt: str, t: _Text) -> str:
    """``prompt`` with one noun of its "Operating principles" section replaced by another noun."""
    head = "## Operating principles\n"
    lo = prompt.index(head) + len(head)
    hi = prompt.index("\n\n", lo)
    spots = [m for m in re.finditer(r"\b[a-z]+\b", prompt[lo:hi]) if m.group() in _NOUN_SET]
    m = t.choice(spots)
    other = t.choice([n for n in _NOUNS if n != m.group()])
    return prompt[: lo + m.start()] + other + prompt[lo + m.end() :]


def _plan_breaker(
    cause: str,
    v: int,
    k: int,
    t: _Text,
    *,
    prompt: str,
    tools: list[dict],
    model: str,
    today: str,
    workspace: str,
) -> _Breaker:
    """The ``v``-th breaker of ``cause`` (variant ``v % len(variants)``), from step ``k`` on."""
    variants = BREAK_CAUSES[cause]
    variant = variants[v % len(variants)]
    b = _Breaker(
        cause, variant, k, "messages[0].content", _Text(random.Random(t.rng.getrandbits(64)))
    )
    n = len(tools)
    props = [tool["function"]["parameters"]["properties"] for tool in tools]
    match cause:
        case "model_changed":
            others = [m for m in _OTHER_MODELS if m != model]
            b.model, b.path = others[v % len(others)], "model"
        case "tool_added":
            present = {tool["function"]["name"] for tool in tools}
            spec = t.choice([s for s in _TOOL_POOL if s[0] not in present])
            j = n // 2 if variant == "middle" else n
            b.tools, b.path = [*tools[:j], _tool_schema(spec), *tools[j:]], f"tools[{j}]"
        case "tool_removed":
            j = n // 2 if variant == "middle" else n - 1
            b.ban = tools[j]["function"]["name"]
            b.tools, b.path = [*tools[:j], *tools[j + 1 :]], f"tools[{j}]"
        case "tools_reordered":
            if variant == "adjacent":
                j = t.randint(0, n - 2)
                j2 = j + 1
            else:
                j, j2 = t.randint(0, 2), n - 1 - t.randint(0, 2)
            b.tools = list(tools)
            b.tools[j], b.tools[j2] = tools[j2], tools[j]
            b.path = f"tools[{j}]"
        case "tool_schema_edited":
            j = t.randint(0, n - 1)
            fn = tools[j]["function"]
            if variant == "description":
                fn = {**fn, "description": f"{fn['description']} {t.choice(_TOOL_NOTES)}"}
                b.path = f"tools[{j}].function.description"
            else:
                params = fn["parameters"]
                pname = t.choice(list(params["properties"]))
                prop = params["properties"][pname]
                lead = "Required" if pname in params["required"] else "Optional"
                desc = f"{lead}: {prop['description'][0].lower()}{prop['description'][1:]}"
                properties = {**params["properties"], pname: {**prop, "description": desc}}
                fn = {**fn, "parameters": {**params, "properties": properties}}
                b.path = f"tools[{j}].function.parameters.properties.{pname}.description"
            b.tools = [*tools[:j], {**tools[j], "function": fn}, *tools[j + 1 :]]
        case "json_key_order":
            if variant == "tool_properties":
                j = t.choice([j for j in range(n) if len(props[j]) >= 2])
                fn = tools[j]["function"]
                reordered = dict(reversed(props[j].items()))
                fn = {**fn, "parameters": {**fn["parameters"], "properties": reordered}}
                b.tools = [*tools[:j], {**tools[j], "function": fn}, *tools[j + 1 :]]
                b.path = f"tools[{j}].function.parameters.properties"
            elif variant == "tool_call_arguments":
                b.edit, b.s = "args", t.randint(0, k - 2)
                b.path = f"messages[{2 + 2 * b.s}].tool_calls[0].function.arguments"
            else:
                b.edit, b.s = "json", t.randint(0, k - 2)
                b.path = f"messages[{3 + 2 * b.s}].content"
        case "volatile_timestamp" | "volatile_id":
            b.every, b.prompt = True, prompt
            if cause == "volatile_timestamp":
                b.old = f"- Current date: {today}\n"
            else:
                b.old, b.value = f"- Workspace: {workspace}\n", workspace
            assert prompt.count(b.old) == 1
        case "system_edited":
            b.system = _reword_word(prompt, t)
        case "history_edited":
            b.s = t.randint(0, k - 2)
            if variant == "truncated":
                b.edit, b.path = "truncate", f"messages[{3 + 2 * b.s}].content"
            elif variant == "compacted":
                b.edit, b.path = "compact", "messages[2]"
            else:
                b.edit, b.path = "think", f"messages[{2 + 2 * b.s}].content"
        case "template_changed":
            if variant == "single_newline":
                b.system = prompt.replace("\n\n", "\n")
            else:
                b.system = "\n".join(f"{line}  " for line in prompt.split("\n"))
    return b


# ---------------------------------------------------------------------------------------- chat


def _chat_shared(t: _Text) -> str:
    company = t.choice(_COMPANIES)
    head = (
        f"You are the assistant of {company}. Be accurate, concise and friendly; answer in the "
        "language of the user; say so when you do not know."
    )
    return head + " " + t.paragraph(t.randint(80, 200) - len(head.split()))


def _reply(t: _Text, words: int) -> str:
    """An assistant answer of about ``words`` words: prose, sometimes a list or a code block."""
    r = t.random()
    if r < 0.2 and words > 60:
        code = "\n".join(t.code_lines(words // 3))
        return f"{t.paragraph(words // 3)}\n\n```python\n{code}\n```\n\n{t.sentence()}"
    if r < 0.45 and words > 50:
        items = "\n".join(f"- {s}" for s in t.sentences(words // 2))
        return f"{t.paragraph(words // 3)}\n\n{items}"
    return t.paragraphs(words)


def _chat_session(
    t: _Text, system: dict, turns: int, t0: int
) -> Iterator[tuple[int, list[dict], int]]:
    c, randint = t.choice, t.randint
    history: list[dict] = [system]
    ts = t0
    for turn in range(turns):
        if turn == 0:
            text = f"{t.paragraph(randint(8, 50))} {t.question()}"
        else:
            lead = c(("Thanks.", "That did not work:", "Follow-up:", "Ok, and", "Hmm,", ""))
            text = f"{lead} {t.question()}".strip()
            if t.random() < 0.15:
                text += " " + t.foreign()
        history.append({"role": "user", "content": text})
        words = randint(30, 200)
        reply = _reply(t, words)
        completion = max(20, len(reply.split()) * 4 // 3)
        yield ts, history.copy(), completion
        history.append({"role": "assistant", "content": reply})
        ts += randint(15000, 180000)


# ----------------------------------------------------------------------------------------- rag


def _rag_shared(t: _Text, sessions: int) -> tuple[str, list[str], list[float]]:
    """(system prompt, documents as '[doc-N] Title\\nbody', Zipf cumulative weights)."""
    company = t.choice(_COMPANIES)
    system = (
        f"You are the documentation assistant of {company}. Answer the question using only the "
        "context documents; cite them as [doc-N]. If the context does not contain the answer, "
        "say that you could not find it. " + t.paragraph(t.randint(30, 80))
    )
    docs = []
    for i in range(max(20, sessions // 2)):
        docs.append(f"[doc-{i + 1}] {t.title()}\n{t.paragraphs(t.randint(200, 700))}")
    weights = [1.0 / (r + 1) ** 1.1 for r in range(len(docs))]
    cum, total = [], 0.0
    for w in weights:
        total += w
        cum.append(total)
    return system, docs, cum


def _rag_session(
    t: _Text, system: dict, docs: list[str], cum: list[float], questions: int, t0: int
) -> Iterator[tuple[int, list[dict], int]]:
    ts = t0
    total = cum[-1]
    for _ in range(questions):
        k = min(t.randint(1, 3), len(docs))
        picked: set[int] = set()
        while len(picked) < k:
            picked.add(min(bisect.bisect_right(cum, t.random() * total), len(docs) - 1))
        context = "\n\n".join(docs[i] for i in sorted(picked))  # most popular (rank 0) first
        user = {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {t.question()}"}
        yield ts, [system, user], t.randint(40, 400)
        ts += t.randint(20000, 300000)


# ------------------------------------------------------------------------------------ generate


def _iso(ms: int) -> str:
    return f"{_EPOCH + ms * _MS:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


@contextmanager
def _open(out: Path) -> Iterator[BufferedIOBase]:
    """The output file for writing; gzip (level 6) when its name ends with .gz."""
    with open(out, "wb") as raw:
        if not out.name.endswith(".gz"):
            yield raw
            return
        # mtime=0 and no file name in the header: the same records give the same bytes
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as gz:
            yield gz


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
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if sessions <= 0:
        raise ValueError(f"sessions must be positive, got {sessions}")
    lo, hi = steps if steps is not None else DEFAULT_STEPS[kind]
    if not 1 <= lo <= hi:
        raise ValueError(f"steps must be (lo, hi) with 1 <= lo <= hi, got {(lo, hi)}")
    if breakers < 0:
        raise ValueError(f"breakers must be >= 0, got {breakers}")
    if breakers and kind != "agent":
        raise ValueError(f"breakers are only generated for kind 'agent', not {kind!r}")
    if breakers and sessions < len(BREAK_CAUSES) * breakers + 1:
        need = len(BREAK_CAUSES) * breakers + 1
        raise ValueError(
            f"breakers={breakers} injects {need - 1} sessions besides the clean session 0: "
            f"sessions must be >= {need}, got {sessions}"
        )
    start = start or DEFAULT_START
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    out = Path(out)
    base_ms = (start - _EPOCH) // _MS

    rng = random.Random(f"kvtool-{kind}-{seed}")  # str seeds are stable across runs
    shared = _Text(rng)
    tools: list[dict] | None = None
    today = f"{_EPOCH + base_ms * _MS:%Y-%m-%d}"
    if kind == "agent":
        system_prompt, tools, workspace = _agent_shared(shared, today)
    elif kind == "chat":
        system_prompt = _chat_shared(shared)
    else:
        system_prompt, docs, cum = _rag_shared(shared, sessions)
    system = {"role": "system", "content": system_prompt}

    rate = sessions / ARRIVAL_WINDOW_S
    width = max(3, len(str(sessions)))
    n_users = sessions if kind == "rag" else max(1, (sessions + 2) // 3)
    streams: list[Iterator[tuple[int, int, list[dict], int]]] = []
    users: list[str] = []
    arrival = 0.0
    # breakers: their own random stream, so that the clean sessions are the same bytes as without
    plans: dict[int, _Breaker] = {}
    jobs: dict[int, tuple[str, int]] = {}
    if breakers:
        bt = _Text(random.Random(f"kvtool-{kind}-{seed}-breakers"))
        picked = bt.rng.sample(range(1, sessions), len(BREAK_CAUSES) * breakers)
        jobs = dict(
            zip(picked, [(c, v) for c in BREAK_CAUSES for v in range(breakers)], strict=True)
        )
    for i in range(sessions):
        arrival += rng.expovariate(rate)
        t0 = base_ms + round(arrival * 1000)
        users.append(f"user-{i if kind == 'rag' else rng.randrange(n_users):0{width}d}")
        st = _Text(random.Random(rng.getrandbits(64)))
        n = st.randint(lo, hi)
        if kind == "agent":
            assert tools is not None
            brk = None
            if i in jobs:
                cause, v = jobs[i]
                variant = BREAK_CAUSES[cause][v % len(BREAK_CAUSES[cause])]
                kmin = 3 if variant in _HISTORY_VARIANTS else 1
                k = bt.randint(kmin, max(kmin, n - 2))
                n = max(n, k + 2)
                brk = plans[i] = _plan_breaker(
                    cause,
                    v,
                    k,
                    bt,
                    prompt=system_prompt,
                    tools=tools,
                    model=model,
                    today=today,
                    workspace=workspace,
                )
            gen = _agent_session(st, system, tools, n, t0, brk)
        elif kind == "chat":
            gen = _chat_session(st, system, n, t0)
        else:
            gen = _rag_session(st, system, docs, cum, n, t0)
        streams.append(_tag(i, gen))

    temperature = TEMPERATURE[kind]
    breaks: list[dict] = []
    counts = [0] * sessions
    output_tokens = 0
    first: list[dict] | None = None
    shared_n = 0
    dumps = orjson.dumps
    opt = orjson.OPT_APPEND_NEWLINE
    buf: list[bytes] = []
    size = 0
    with _open(out) as f:
        for ts, i, messages, completion in heapq.merge(*streams, key=itemgetter(0)):
            step = counts[i]
            counts[i] = step + 1
            output_tokens += completion
            if first is None:
                first, shared_n = messages, len(messages)
            else:
                shared_n = _common(first, messages, shared_n)
            rid = f"req-{kind}-{i:05d}-{step:03d}"
            req_model, req_tools = model, tools
            if plans and i in plans and step >= plans[i].k:
                b = plans[i]
                req_model, req_tools = b.model or model, b.tools or tools
                if step == b.k or b.every:
                    breaks.append(
                        {
                            "request_id": rid,
                            "predecessor_id": f"req-{kind}-{i:05d}-{step - 1:03d}",
                            "session_id": f"{kind}-s{i:05d}",
                            "cause": b.cause,
                            "path": b.path,
                            "variant": b.variant,
                        }
                    )
            request = {"model": req_model, "messages": messages}
            if req_tools is not None:
                request["tools"] = req_tools
            request["temperature"] = temperature
            record: dict[str, Any] = {"id": rid, "timestamp": _iso(ts)}
            if session_ids:
                record["session_id"] = f"{kind}-s{i:05d}"
            record["user"] = users[i]
            record["request"] = request
            record["response"] = {
                "id": f"resp-{kind}-{i:05d}-{step:03d}",
                "created": ts // 1000,
                "model": req_model,
                "usage": {"completion_tokens": completion},
            }
            line = dumps(record, option=opt)
            buf.append(line)
            size += len(line)
            if size >= 1 << 22:
                f.write(b"".join(buf))
                buf.clear()
                size = 0
        f.write(b"".join(buf))

    truth = GenerationTruth(
        kind=kind,
        seed=seed,
        sessions=sessions,
        requests=sum(counts),
        output_tokens=output_tokens,
        requests_per_session={f"{kind}-s{i:05d}": n for i, n in enumerate(counts)},
        continuation=kind in ("agent", "chat") and not breaks,
        shared_prefix_messages=shared_n,
        system_prompt=system_prompt,
        tools=tools,
        model=model,
        breaks=breaks,
    )
    Path(f"{out}.truth.json").write_bytes(
        orjson.dumps(truth.to_json(), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    )
    return truth


def _tag(
    i: int, gen: Iterator[tuple[int, list[dict], int]]
) -> Iterator[tuple[int, int, list[dict], int]]:
    for ts, messages, completion in gen:
        yield ts, i, messages, completion


def _common(a: list[dict], b: list[dict], limit: int) -> int:
    """Length of the common leading run of ``a`` and ``b``, at most ``limit``."""
    n = min(limit, len(b))
    for j in range(n):
        if a[j] is not b[j] and a[j] != b[j]:
            return j
    return n
