"""Number formatting shared by every renderer (terminal tables and the HTML page).

Each function renders ``None`` as ``missing``: ``NA`` ("n/a") in the terminal, ``DASH`` ("–")
in the HTML tables.
"""

from __future__ import annotations

NA = "n/a"
DASH = "–"


def pct(value: float | None, missing: str = NA) -> str:
    """A rate in [0, 1] as a percentage with one decimal: ``0.4567`` -> ``45.7%``."""
    return missing if value is None else f"{100 * value:.1f}%"


def num(value: float | int | None, missing: str = NA) -> str:
    """A count or quantity with thousands separators; whole values without decimals, others
    with two: ``1234`` -> ``1,234``, ``0.25`` -> ``0.25``."""
    if value is None:
        return missing
    if isinstance(value, int) or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def money(value: float | None, missing: str = NA) -> str:
    """Dollars with cents: ``1234.5`` -> ``$1,234.50``."""
    return missing if value is None else f"${value:,.2f}"


def seconds(value: float | None, missing: str = NA) -> str:
    """A duration in seconds with milliseconds: ``0.1234`` -> ``0.123 s``."""
    return missing if value is None else f"{value:.3f} s"


def warmup_note(warmup: dict | None) -> str | None:
    """One plain-text line on a result's measurement window (its ``warmup`` object; None: every
    request counted, no line). Holds the spec as given: escape it before markup."""
    if warmup is None:
        return None
    start = warmup["first_counted_ts"]
    since = "" if start is None else f", from t = {start:,.0f} s"
    return (
        f"warm-up {warmup['spec']}: the first {warmup['requests_warmup']:,} requests went "
        f"through the cache but are not counted; figures count the other "
        f"{warmup['requests_counted']:,}{since}"
    )
