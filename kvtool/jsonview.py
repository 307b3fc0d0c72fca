"""``JsonView``: a result that reads like the JSON its command prints.

A result dataclass defines ``to_json()`` (the ``--json`` object, docs/json.md) and inherits
``JsonView``: ``result["key"]`` is ``to_json()["key"]``, ``dict(result)`` is the JSON, and two
results are equal when their JSON is. The view is read-only; the typed attributes stay the API.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


class JsonView(Mapping):
    """Read-only mapping access to ``self.to_json()`` (which subclasses define)."""

    def to_json(self) -> dict:
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())

    def __len__(self) -> int:
        return len(self.to_json())
