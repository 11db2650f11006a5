"""The Sink protocol results are written through, and an in-memory sink for unit tests.

A sink's `write` returns only once the rows are durable; offsets are committed after that.
Writes are upserts under each table's natural key, so re-delivery overwrites.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class Sink(Protocol):
    async def setup(self) -> None: ...

    async def write(
        self, table: str, rows: Sequence[Mapping[str, Any]], stamps: Sequence[int] | None = None
    ) -> None:
        """Upsert ``rows``; ``stamps``: each row's write timestamp (last write wins per cell)."""
        ...

    async def flush(self) -> None: ...

    async def close(self) -> None: ...


class MemorySink:
    """Upserts into dicts keyed by each table's primary-key columns; with write timestamps, the
    newest write of each cell wins, as in Cassandra."""

    def __init__(self, keys: Mapping[str, tuple[str, ...]]) -> None:
        self._keys = dict(keys)
        self.tables: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {t: {} for t in keys}
        self.cell_stamps: dict[tuple[str, tuple[Any, ...], str], int] = {}
        self.writes = 0

    async def setup(self) -> None:
        return None

    async def write(
        self, table: str, rows: Sequence[Mapping[str, Any]], stamps: Sequence[int] | None = None
    ) -> None:
        key_columns, stored = self._keys[table], self.tables[table]
        for i, row in enumerate(rows):
            key = tuple(row[c] for c in key_columns)
            kept = stored.setdefault(key, {})
            for column, value in row.items():
                if stamps is not None:
                    at = (table, key, column)
                    if stamps[i] < self.cell_stamps.get(at, stamps[i]):
                        continue  # an older write: Cassandra keeps the newer cell
                    self.cell_stamps[at] = stamps[i]
                kept[column] = value
        self.writes += len(rows)

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None
