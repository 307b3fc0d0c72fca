"""What a session builder yields and the record writer consumes: one ``Turn`` per request.

Times are integer milliseconds since the Unix epoch, UTC (``to_ms`` / ``utc`` convert). A
session's turns come in step order with non-decreasing ``ts``. ``messages`` is a fresh list per
turn whose message dicts are shared with the session's other turns and never mutated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MS = timedelta(milliseconds=1)


def to_ms(d: datetime) -> int:
    """``d`` (timezone-aware) as milliseconds since the epoch."""
    return (d - EPOCH) // MS


def utc(ms: int) -> datetime:
    """The UTC datetime of ``ms`` milliseconds since the epoch."""
    return EPOCH + ms * MS


@dataclass(frozen=True, slots=True)
class Break:
    """The truth about a request that does not extend its predecessor: the injected ``cause``, its
    ``variant`` and the ``path`` of the first difference (e.g. ``messages[0].content``)."""

    cause: str
    variant: str
    path: str


@dataclass(frozen=True, slots=True)
class Turn:
    """One request of a session: when it is sent (``ts``, ms), its messages, its completion tokens.

    ``model`` and ``tools`` replace the file's model and tool catalog for this request when not
    None (injected breakers); ``broken`` is set when this request breaks its predecessor's prefix.
    """

    ts: int
    messages: list[dict]
    completion: int
    model: str | None = None
    tools: list[dict] | None = None
    broken: Break | None = None
