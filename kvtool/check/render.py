"""Renderings of a ``kvtool check`` result: terminal text (rich), GitHub Actions annotations and
JUnit XML. Rendering only: every function reads a ``CheckResult`` and changes nothing; the JSON
rendering is ``CheckResult.to_json``."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from rich.console import Console
from rich.markup import escape

from kvtool.check.gate import CheckResult, Finding
from kvtool.markup import diff_markup


def render_check(console: Console, result: CheckResult) -> None:
    """The human report: one line per finding (with its diff), then PASS or FAIL. Every string
    from the input (paths, ids, messages, diffs) is escaped and emoji codes are off, so it prints
    literally whatever it holds."""
    against = f" against {escape(result.baseline)}" if result.baseline else ""
    console.print(
        f"kvtool check {escape(result.candidate)}{against}: {result.fixtures} fixtures, "
        f"{result.compared} compared"
        + (f" (paired by {result.paired_by})" if result.paired_by else ""),
        emoji=False,
    )
    summary = result.provider_json()
    if summary is not None:
        money = f"${summary['usd_per_call']:.6f} per call"
        if summary["usd_per_month"] is not None:
            money += f", ${summary['usd_per_month']:,.2f} per month"
        guess = " (prices partly guessed: see the findings)" if summary["price_guess"] else ""
        console.print(
            f"counted by {escape(summary['name'])}'s caching rules (data of "
            f"{escape(summary['as_of'])}): {summary['pairs']} pair(s), "
            f"{summary['tokens_lost']:,} tokens lost, {money}{guess}",
            highlight=False,
            emoji=False,
        )
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", emoji=False)
    if result.unmatched_baseline:
        console.print(
            f"[yellow]note:[/] {len(result.unmatched_baseline)} baseline fixture(s) have no "
            f"candidate: {escape(', '.join(result.unmatched_baseline[:5]))}",
            emoji=False,
        )
    for f in result.findings:
        console.print(
            f"[bold red]✗[/] {escape(f.file)}:{f.line} [bold]{escape(f.request_id)}[/] "
            f"\\[{escape(f.check)}] {escape(f.message)}",
            highlight=False,
            emoji=False,
        )
        if f.diff:
            console.print(f"    {diff_markup(f.diff)}", highlight=False, emoji=False)
    if result.passed:
        console.print("[bold green]PASS[/]: no prompt change breaks the cached prefix")
    else:
        console.print(f"[bold red]FAIL[/]: {len(result.findings)} finding(s)")


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotations(result: CheckResult) -> str:
    """One ``::error`` workflow command per finding (GitHub Actions shows them on the PR diff),
    then a ``::notice`` summary line."""
    out = []
    for f in result.findings:
        body = f.message
        d = f.diff
        if d:
            body += f"\n-{d.get('removed', '')!r}\n+{d.get('added', '')!r}"
        out.append(
            f"::error file={_escape_property(f.file)},line={f.line},"
            f"title={_escape_property('kvtool check: ' + f.cause)}::{_escape_data(body)}"
        )
    verdict = "passed" if result.passed else f"failed with {len(result.findings)} finding(s)"
    out.append(f"::notice title=kvtool check::{_escape_data(f'{result.candidate}: {verdict}')}")
    return "\n".join(out) + "\n"


# What XML 1.0 forbids: C0 controls but tab, LF and CR; lone surrogates (a str holds no pairs);
# U+FFFE and U+FFFF.
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(text: str) -> str:
    """``text`` with every character XML 1.0 forbids written as a Python escape (``\\x1b``,
    ``\\ud800``): the result is valid XML 1.0 character data and encodes as UTF-8."""

    def esc(m: re.Match[str]) -> str:
        c = ord(m.group())
        return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"

    return _NOT_XML.sub(esc, text)


def junit_xml(result: CheckResult) -> str:
    """JUnit XML: one test case per candidate fixture, failed by its findings. Every text and
    attribute goes through ``xml_text``, so the document parses whatever the fixtures hold."""
    by_line: dict[int, list[Finding]] = {}
    for f in result.findings:
        by_line.setdefault(f.line, []).append(f)
    refs = result.fixture_refs
    suite = ET.Element(
        "testsuite",
        name="kvtool check",
        tests=str(len(refs)),
        failures=str(sum(1 for ref in refs if ref.line in by_line)),
        errors="0",
    )
    for ref in refs:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=xml_text(result.candidate),
            name=xml_text(f"{ref.request_id} (line {ref.line})"),
        )
        for f in by_line.get(ref.line, []):
            failure = ET.SubElement(
                case, "failure", type=xml_text(f.cause), message=xml_text(f.message)
            )
            d = f.diff
            failure.text = xml_text(
                f"{f.check}: {f.path}\n-{d.get('removed', '')!r}\n+{d.get('added', '')!r}"
                if d
                else f"{f.check}: {f.path}"
            )
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, "unicode") + "\n"
