"""Tool results ("observations") of an agent session, in the output style of each tool.

``observation`` renders about ``words`` words (6 characters each) as file contents with line
numbers, diffs, directory trees, search hits, test runs, command logs, commit logs, search results,
a document, a SQL result table or an indented JSON body, depending on ``TOOL_STYLE``; a quarter of
the results also get one non-English line or emoji line at a random position.
"""

from __future__ import annotations

import orjson

from kvtool.generate.text import Text
from kvtool.generate.tools import TOOL_STYLE
from kvtool.generate.vocabulary import ADJS, CODE_LINES, EXCS, EXTS, NOUNS, PEOPLE, PLURALS


def observation(t: Text, tool: str, args: dict, words: int) -> str:
    """A tool result of about ``words`` words (6 characters each) in the style of ``tool``."""
    c, randint = t.choice, t.randint
    style = TOOL_STYLE[tool]
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
            name = f"{c(NOUNS)}_{c(NOUNS)}.{c(EXTS)}"
            branch = c(("├── ", "│   ├── ", "│   └── ", "└── "))
            add(f"{branch}{name}  ({randint(1, 900)} lines, {randint(1, 64)}.{randint(0, 9)} KB)")
    elif style == "search":
        while n < limit:
            add(f"{t.path()}:{randint(1, 900)}:{t.fill(c(CODE_LINES))}")
    elif style == "tests":
        passed = failed = 0
        add(f"======== test session starts ======== platform linux, python 3.12.{randint(0, 9)}")
        while n < limit:
            ok = t.random() < 0.85
            passed, failed = passed + ok, failed + (not ok)
            add(f"tests/test_{c(NOUNS)}.py::test_{t.ident()} {'PASSED' if ok else 'FAILED'}")
            if not ok:
                add(f"E       {c(EXCS)}: {t.sentence()}")
        add(f"===== {failed} failed, {passed} passed in {randint(1, 90)}.{randint(10, 99)}s =====")
    elif style == "log":
        add(f"$ {args.get('command') or 'python -c ...'}")
        while n < limit:
            r = t.random()
            stamp = f"{randint(9, 11):02d}:{randint(0, 59):02d}:{randint(0, 59):02d}"
            if r < 0.6:
                add(f"[{stamp}] {c(('INFO', 'INFO', 'DEBUG', 'WARN'))} {t.ident()}: {t.sentence()}")
            elif r < 0.75:
                add(f"  {c(PLURALS)}: {randint(1, 9999)} ok, {randint(0, 40)} skipped")
            elif r < 0.9:
                add("Traceback (most recent call last):")
                add(f'  File "{t.path()}", line {randint(1, 900)}, in {t.ident()}')
                add(t.fill(c(CODE_LINES)))
                add(f"{c(EXCS)}: {t.sentence()}")
            else:
                add(f"[{stamp}] {c(('✔', '✖', '⚠', '→'))} {t.sentence()}")
        add(f"exit code {c((0, 0, 0, 1, 2))}")
    elif style == "commits":
        while n < limit:
            add(f"commit {t.hexid(160)}")
            add(f"Author: {c(PEOPLE)} <{c(NOUNS)}@{c(NOUNS)}.dev>")
            add(f"Date:   2026-10-{randint(1, 31):02d} {randint(8, 19):02d}:{randint(0, 59):02d}")
            add("")
            add(f"    {t.sentence()}")
            add("")
    elif style == "results":
        for i in range(1, 11):
            if n >= limit:
                break
            add(f"{i}. {t.title()} — {c(NOUNS)}.example.org")
            add(f"   {t.paragraph(randint(20, 45))}")
    elif style == "prose":
        add(f"# {t.title()}")
        add("")
        add(t.paragraphs(max(words - 4, 20)))
    elif style == "table":
        cols = [f"{c(NOUNS)}_id", c(NOUNS), c(NOUNS), "n"]
        add("| " + " | ".join(cols) + " |")
        add("|" + "---|" * len(cols))
        while n < limit:
            add(f"| {randint(1, 99999)} | {c(ADJS)} | {c(NOUNS)} | {randint(1, 5000)} |")
        add(f"({len(lines) - 2} rows)")
    else:  # json
        lines.append(orjson.dumps(json_body(t, limit), option=orjson.OPT_INDENT_2).decode())
    if t.random() < 0.25:
        lines.insert(t.randint(0, len(lines)), t.foreign())
    return "\n".join(lines)


def json_body(t: Text, limit: int) -> dict:
    """An API-style JSON result of about ``limit`` characters once indented."""
    c = t.choice
    items = []
    n = 0
    while n < limit:
        item = {"id": t.hexid(32), "status": c(("ok", "open", "pending", "resolved"))}
        item[c(NOUNS)] = t.sentence()
        item["value"] = t.randint(0, 10000)
        items.append(item)
        n += len(orjson.dumps(item)) * 3 // 2  # indented
    return {"ok": True, "request_id": t.hexid(64), "items": items}
