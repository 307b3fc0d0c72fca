"""Terminal markup of text that came from input: always escaped, so a log can never inject rich
markup (``[/]``, ``[link=...]``) into what kvtool prints. Print with ``emoji=False`` so that
``:name:`` in the text stays literal."""

from __future__ import annotations

from rich.markup import escape


def diff_markup(diff: dict) -> str:
    """A break's diff text as rich markup, marked the way wdiff marks it: ``[-removed-]`` red,
    ``{+added+}`` green, newlines shown as ⏎. The diff's text is escaped; print it with
    ``emoji=False`` so that ``:name:`` in it stays literal."""

    def show(text: str) -> str:
        return escape(text.replace("\n", "⏎"))

    return (
        f"…{show(diff.get('before', ''))}[bold red]\\[-{show(diff.get('removed', ''))}-][/]"
        f"[bold green]{{+{show(diff.get('added', ''))}+}}[/]{show(diff.get('after', ''))}…"
    )
