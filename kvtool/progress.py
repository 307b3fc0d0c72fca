"""Progress reporting: library functions take a ``Progress``; the CLI passes a rich-backed one."""

from __future__ import annotations

from typing import Protocol

from rich.console import Console
from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgressBar
from rich.text import Text


class Progress(Protocol):
    """A sink for stage progress: ``stage`` opens a bar, ``advance``/``update`` move it."""

    def stage(self, name: str, total: float | None) -> None: ...
    def advance(self, amount: float) -> None: ...
    def update(self, completed: float, total: float | None = None) -> None: ...
    def close(self) -> None: ...


class NullProgress:
    """Progress that shows nothing."""

    def stage(self, name: str, total: float | None) -> None:
        pass

    def advance(self, amount: float) -> None:
        pass

    def update(self, completed: float, total: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass


class _AmountColumn(ProgressColumn):
    """'done/total', as sizes for the byte-counted ingest stage."""

    def render(self, task: Task) -> Text:
        fmt = decimal if task.fields.get("bytes") else "{:,.0f}".format
        total = "?" if task.total is None else fmt(int(task.total))
        return Text(f"{fmt(int(task.completed))}/{total}", style="progress.download")


class RichProgress:
    """Transient rich bars on stderr, one per stage; invisible when stderr is not a terminal."""

    def __init__(self, console: Console | None = None):
        self.bar = RichProgressBar(
            TextColumn("[bold]{task.description:<10}"),
            BarColumn(),
            TaskProgressColumn(),
            _AmountColumn(),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            transient=True,
        )
        self.task: int | None = None
        self.bar.start()

    def stage(self, name: str, total: float | None) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.task = self.bar.add_task(name, total=total, bytes=name == "ingest")

    def advance(self, amount: float) -> None:
        if self.task is not None:
            self.bar.advance(self.task, amount)

    def update(self, completed: float, total: float | None = None) -> None:
        if self.task is not None:
            self.bar.update(self.task, completed=completed, total=total)

    def close(self) -> None:
        self.bar.stop()
