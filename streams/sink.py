"""The Sink protocol results are written through, and an in-memory sink for unit tests.

A sink's `write` returns only once the rows are durable; offsets are committed after that.
Writes are upserts under each table's natural key, so re-delivery overwrites.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class Sink(Protocol):
    async def setup(self) -> None: ...

    async def write(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None: ...

    async def flush(self) -> None: ...

    async def close(self) -> None: ...


class MemorySink:
    """Upserts into dicts keyed by each table's primary-key columns."""

    def __init__(self, keys: Mapping[str, tuple[str, ...]]) -> None:
        self._keys = dict(keys)
        self.tables: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {t: {} for t in keys}
        self.writes = 0

    async def setup(self) -> None:
        return None

    async def write(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        key_columns = self._keys[table]
        for row in rows:
            key = tuple(row[c] for c in key_columns)
            self.tables[table][key] = {**self.tables[table].get(key, {}), **row}
        self.writes += len(rows)

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None
