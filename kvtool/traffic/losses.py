"""What prompt breaks cost, per request: the named type analyze hands to a later stage (the
shortfall waterfall of ``simulate --provider``), so that no stage imports another."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kvtool.progress import Progress
from kvtool.store import Connection
from kvtool.traffic.load import Traffic


@dataclass(frozen=True)
class BreakLosses:
    """The cached tokens prompt breaks lost at the workload's block size: per cause, an int
    array over the workload's requests (processing order), and the number of breaks of that
    cause. Only causes with a break appear."""

    tokens: dict[str, np.ndarray]
    counts: dict[str, int]


BreakFinder = Callable[[Connection, Traffic, Progress], BreakLosses | None]
"""Finds the breaks of a traffic (``kvtool.analyze.break_losses``); None when it cannot (a hash
trace has no prompt text to diff)."""
