"""Compare two versions' results row by row: window by window (CTR) and score by score (fraud).

``compare`` is pure (rows in, differences out); ``read_results`` reads a version's rows of one
result table from Cassandra. Two versions with the same pins over the same log must show none.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.tables import CATALOGUE, Table

ResultTable = Table
RESULT_TABLES = tuple(t for t in CATALOGUE if t.verified)


@dataclass(frozen=True)
class Difference:
    table: str
    key: tuple[Any, ...]
    kind: str  # only_in_a | only_in_b | differs
    columns: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # column -> (a, b)


@dataclass
class TableComparison:
    table: str
    rows_a: int = 0
    rows_b: int = 0
    only_in_a: int = 0
    only_in_b: int = 0
    differing: int = 0
    examples: list[Difference] = field(default_factory=list)

    @property
    def differences(self) -> int:
        return self.only_in_a + self.only_in_b + self.differing


def _equal(a: Any, b: Any, rel_tol: float) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or math.isclose(a, b, rel_tol=rel_tol, abs_tol=0.0) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_equal(x, y, rel_tol) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def keyed(table: ResultTable, rows: Iterable[Mapping[str, Any]]) -> dict[tuple[Any, ...], Mapping[str, Any]]:
    return {tuple(row[c] for c in table.key): row for row in rows}


def compare(
    table: ResultTable,
    rows_a: Mapping[tuple[Any, ...], Mapping[str, Any]],
    rows_b: Mapping[tuple[Any, ...], Mapping[str, Any]],
    *,
    rel_tol: float = 0.0,
    max_examples: int = 20,
) -> TableComparison:
    """Every row of either side, matched by key: missing on one side, or differing in a value."""
    result = TableComparison(table.name, rows_a=len(rows_a), rows_b=len(rows_b))

    def note(difference: Difference) -> None:
        if len(result.examples) < max_examples:
            result.examples.append(difference)

    for key in sorted(set(rows_a) | set(rows_b), key=repr):
        a, b = rows_a.get(key), rows_b.get(key)
        if b is None:
            result.only_in_a += 1
            note(Difference(table.name, key, "only_in_a"))
        elif a is None:
            result.only_in_b += 1
            note(Difference(table.name, key, "only_in_b"))
        else:
            columns = {
                c: (a.get(c), b.get(c)) for c in table.values if not _equal(a.get(c), b.get(c), rel_tol)
            }
            if columns:
                result.differing += 1
                note(Difference(table.name, key, "differs", columns))
    return result


def read_results(
    session: Any, keyspace: str, table: ResultTable, version: str, from_ms: int | None, to_ms: int | None
) -> dict[tuple[Any, ...], Mapping[str, Any]]:
    """A version's rows of ``table`` whose time column falls in [from_ms, to_ms)."""
    from streams.io.version_store import scan_version_rows

    time = table.time_column
    assert time is not None  # RESULT_TABLES have one
    columns = sorted({*table.key, *table.values, time})
    rows = (
        row
        for row in scan_version_rows(session, keyspace, table.name, version, columns)
        if (from_ms is None or row[time] >= from_ms) and (to_ms is None or row[time] < to_ms)
    )
    return keyed(table, rows)
