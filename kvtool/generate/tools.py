"""The agent tool catalog: tool specs, their OpenAI JSON schemas, and seeded argument values.

``TOOL_POOL`` is the fixed pool an agent file draws its catalog from (by index, so its order is
part of the output). Each parameter has a value ``kind`` that ``arg_value`` knows how to draw
(``enum:a,b,c`` lists the allowed values); ``tool_schema`` turns a spec into the
``{"type": "function", "function": {...}}`` dict sent in ``request.tools``, with ``properties`` in
spec order and ``required`` listing the required parameters in that order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvtool.generate.text import Text
from kvtool.generate.vocabulary import EXTS, NOUNS, PLURALS, QUESTIONS, TOPS


@dataclass(frozen=True, slots=True)
class Param:
    """One tool parameter: ``type`` is its JSON type, ``kind`` what ``arg_value`` draws for it."""

    name: str
    type: str
    kind: str
    description: str
    required: bool


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One tool of the pool: its name, description and parameters (in schema order)."""

    name: str
    description: str
    params: tuple[Param, ...]


TOOL_POOL: tuple[ToolSpec, ...] = (
    ToolSpec("read_file", "Read a text file from the workspace and return it with line numbers.", (
        Param("path", "string", "path", "Path relative to the repository root.", True),
        Param("start_line", "integer", "line", "First line to return (1-based).", False),
        Param("end_line", "integer", "line", "Last line to return, inclusive.", False),
    )),
    ToolSpec("write_file", "Create or overwrite a file with the given content.", (
        Param("path", "string", "path", "Path relative to the repository root.", True),
        Param("content", "string", "code", "The complete new file content.", True),
    )),
    ToolSpec("edit_file", "Replace one exact occurrence of a string in a file.", (
        Param("path", "string", "path", "File to edit.", True),
        Param("old_string", "string", "code", "Text to replace; must match exactly once.", True),
        Param("new_string", "string", "code", "Replacement text.", True),
    )),
    ToolSpec("list_directory", "List files and folders under a directory.", (
        Param("path", "string", "dir", "Directory relative to the repository root.", True),
        Param("recursive", "boolean", "bool", "Descend into subdirectories.", False),
        Param("max_depth", "integer", "small", "Maximum depth when recursive.", False),
    )),
    ToolSpec("search_code", "Search the repository with a regular expression (ripgrep syntax).", (
        Param("pattern", "string", "pattern", "Regular expression to search for.", True),
        Param("path", "string", "dir", "Restrict the search to this directory.", False),
        Param("file_glob", "string", "glob", "Only search files matching this glob.", False),
        Param("case_sensitive", "boolean", "bool", "Match case exactly.", False),
    )),
    ToolSpec("run_command", "Run a shell command in the workspace and return stdout and stderr.", (
        Param("command", "string", "command", "The command line to execute.", True),
        Param("timeout_seconds", "integer", "timeout", "Kill the command after this many seconds.",
              False),
        Param("cwd", "string", "dir", "Working directory for the command.", False),
    )),
    ToolSpec("run_tests", "Run the test suite or a subset of it and report failures.", (
        Param("target", "string", "path", "Test file, directory or node id.", False),
        Param("verbose", "boolean", "bool", "Print every test name.", False),
        Param("markers", "string", "enum:unit,integration,slow,not slow", "Marker expression.",
              False),
    )),
    ToolSpec("git_diff", "Show uncommitted changes, or changes against a ref.", (
        Param("ref", "string", "ref", "Commit, branch or tag to compare with.", False),
        Param("paths", "array", "paths", "Limit the diff to these paths.", False),
    )),
    ToolSpec("git_log", "Show recent commits.", (
        Param("max_count", "integer", "small", "Number of commits to show.", False),
        Param("path", "string", "path", "Only commits touching this path.", False),
    )),
    ToolSpec("web_search", "Search the web and return titles, links and snippets.", (
        Param("query", "string", "query", "Search query.", True),
        Param("num_results", "integer", "small", "Number of results (1-10).", False),
    )),
    ToolSpec("fetch_url", "Fetch a web page and return its readable text.", (
        Param("url", "string", "url", "Absolute http(s) URL.", True),
        Param("max_chars", "integer", "chars", "Truncate the text to this many characters.", False),
    )),
    ToolSpec("python_eval", "Evaluate a short Python snippet in a sandbox and return its output.", (
        Param("code", "string", "code", "Python source to run.", True),
    )),
    ToolSpec("query_database", "Run a read-only SQL query against an internal database.", (
        Param("sql", "string", "sql", "A single SELECT statement.", True),
        Param("database", "string", "enum:analytics,billing,inventory", "Database to query.", True),
    )),
    ToolSpec("create_ticket", "Open a ticket in the issue tracker.", (
        Param("title", "string", "title", "One-line summary.", True),
        Param("body", "string", "prose", "Markdown description.", True),
        Param("priority", "string", "enum:low,medium,high,urgent", "Ticket priority.", False),
    )),
    ToolSpec("send_message", "Post a message to a team chat channel.", (
        Param("channel", "string", "channel", "Channel name without '#'.", True),
        Param("text", "string", "prose", "Message text (Markdown).", True),
    )),
    ToolSpec("get_metrics", "Fetch time series for a service metric.", (
        Param("service", "string", "service", "Service name.", True),
        Param("metric", "string", "enum:latency_p99,error_rate,requests,cpu,memory", "Metric name.",
              True),
        Param("window_minutes", "integer", "window", "Look-back window in minutes.", False),
    )),
)  # fmt: skip
# tool name -> the style of its observation (see observations.py)
TOOL_STYLE = {
    "read_file": "code", "write_file": "diff", "edit_file": "diff", "list_directory": "listing",
    "search_code": "search", "run_command": "log", "run_tests": "tests", "git_diff": "diff",
    "git_log": "commits", "web_search": "results", "fetch_url": "prose", "python_eval": "log",
    "query_database": "table", "create_ticket": "json", "send_message": "json",
    "get_metrics": "json",
}  # fmt: skip
# relative call frequency of a tool (1 when absent)
TOOL_WEIGHT = {"read_file": 6, "search_code": 4, "run_command": 4, "edit_file": 3, "run_tests": 3}
TOOL_SPECS = {spec.name: spec for spec in TOOL_POOL}


def tool_schema(spec: ToolSpec) -> dict:
    """The OpenAI ``tools`` entry of ``spec`` (a fresh dict)."""
    props: dict[str, dict] = {}
    for p in spec.params:
        prop: dict[str, Any] = {"type": p.type, "description": p.description}
        if p.kind.startswith("enum:"):
            prop["enum"] = p.kind[5:].split(",")
        if p.type == "array":
            prop["items"] = {"type": "string"}
        props[p.name] = prop
    required = [p.name for p in spec.params if p.required]
    return {
        "type": "function",
        "function": {
            "name": spec.name,
            "description": spec.description,
            "parameters": {"type": "object", "properties": props, "required": required},
        },
    }


def arg_value(t: Text, kind: str) -> Any:
    """A value for a parameter of value kind ``kind`` (JSON-ready), drawn from ``t``."""
    c, randint = t.choice, t.randint
    if kind.startswith("enum:"):
        return c(kind[5:].split(","))
    match kind:
        case "path":
            return t.path()
        case "dir":
            return f"{c(TOPS)}/{c(NOUNS)}"
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
            return f"*.{c(EXTS)}"
        case "command":
            return c((
                "pytest -x -q {}", "python -m {} --help", "git grep -n {}", "make {}",
                "ls -la {}", "npm run {}", "cargo test {}", "go test ./{}/...",
            )).format(c(NOUNS))  # fmt: skip
        case "ref":
            return c(("HEAD~1", "main", "origin/main", f"release-{randint(1, 9)}.{randint(0, 20)}"))
        case "query" | "title":
            return t.fill(c(QUESTIONS))[:-1]
        case "url":
            return f"https://docs.{c(NOUNS)}.example.com/{c(NOUNS)}/{t.ident().replace('_', '-')}"
        case "sql":
            return (
                f"SELECT {c(NOUNS)}_id, count(*) AS n FROM {c(PLURALS)} "
                f"WHERE {c(NOUNS)} > {randint(1, 999)} GROUP BY 1 ORDER BY n DESC LIMIT 20"
            )
        case "channel":
            return f"{c(NOUNS)}-{c(('ops', 'dev', 'alerts', 'eng'))}"
        case "service":
            return f"{c(NOUNS)}-{c(('api', 'worker', 'gateway', 'sync'))}"
        case _:  # prose
            return t.paragraph(randint(15, 50))
