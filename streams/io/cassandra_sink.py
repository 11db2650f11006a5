"""The Cassandra sink: rows upserted in unlogged batches grouped by replica, bound by our own
`Binder` (cassandra-driver), every write retried with the discipline of `execute_retrying`."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any

from cassandra.cluster import Session
from cassandra.cqltypes import BooleanType, DoubleType, Int32Type, ListType, LongType, UTF8Type
from cassandra.query import BatchStatement, BatchType, BoundStatement, PreparedStatement, Statement

from streams.errors import SinkError
from streams.io.cassandra import _TRANSIENT, check_identifier, execute_retrying, prepare_retrying


class Binder:
    """Binds rows of values to a prepared statement, as `PreparedStatement.bind` does for a sequence
    of plain values, at a third of its cost: each column's serializer is looked up once, not per
    value (the driver builds a column descriptor per value for its column-encryption policy, which
    the sink does not use). A ``list<double>`` is packed by one `struct` call. ``None`` is a null;
    the sink never binds unset values."""

    def __init__(self, statement: PreparedStatement) -> None:
        self.statement = statement
        version = statement.protocol_version
        self.serializers = [_serializer(column.type, version) for column in statement.column_metadata]

    def bind(self, values: Sequence[Any]) -> BoundStatement:
        """The bound statement (its ``values`` serialized)."""
        if len(values) != len(self.serializers):
            raise ValueError(f"{len(values)} values for {len(self.serializers)} columns")
        bound = BoundStatement(self.statement)
        bound.raw_values = values
        pairs = zip(self.serializers, values, strict=True)
        try:
            bound.values = [None if v is None else serialize(v) for serialize, v in pairs]
        except (TypeError, struct.error) as exc:
            query = self.statement.query_string
            raise TypeError(f"a value does not fit its column in {query}: {exc}") from exc
        return bound


def _serializer(cql_type: Any, protocol_version: int) -> Callable[[Any], bytes]:
    """The common types by one C call (as the driver's `serialize` writes them); the others by
    the driver's."""
    if issubclass(cql_type, ListType) and len(cql_type.subtypes) == 1:
        element = cql_type.subtypes[0]
        if element is DoubleType:
            return _pack_doubles
        if issubclass(element, UTF8Type):  # text (the server says varchar)
            return _pack_texts
    if issubclass(cql_type, UTF8Type):  # text (the server says varchar)
        return str.encode
    packer = _PACKERS.get(cql_type)
    if packer is not None:
        return packer
    serialize = cql_type.serialize
    return lambda value: serialize(value, protocol_version)


_INT = struct.Struct(">i").pack
_PACKERS: dict[Any, Callable[[Any], bytes]] = {
    DoubleType: struct.Struct(">d").pack,
    LongType: struct.Struct(">q").pack,
    Int32Type: _INT,
    BooleanType: struct.Struct(">?").pack,
}
_DOUBLES: dict[int, tuple[struct.Struct, list[int]]] = {}


def _pack_doubles(values: Sequence[float]) -> bytes:
    """A ``list<double>`` in the native protocol: the element count, then each element's length
    (8) and big-endian value, as `ListType.serialize` writes it."""
    n = len(values)
    found = _DOUBLES.get(n)
    if found is None:
        found = _DOUBLES[n] = (struct.Struct(">i" + "id" * n), [8] * (2 * n))
    packer, template = found
    fields: list[float] = template.copy()  # type: ignore[assignment]  # (ints, then the values)
    fields[1::2] = values
    return packer.pack(n, *fields)


def _pack_texts(values: Sequence[str]) -> bytes:
    """A ``list<text>``: the element count, then each element's length and UTF-8 bytes."""
    parts = [_INT(len(values))]
    for value in values:
        encoded = value.encode()
        parts += (_INT(len(encoded)), encoded)
    return b"".join(parts)


class CassandraSink:
    """Idempotent upserts (INSERT is an upsert in Cassandra) with prepared statements,
    bounded concurrency and retries with backoff for transient errors.

    Rows go in UNLOGGED batches of rows whose partitions share their first replica (token-aware
    grouping): one request carries up to ``BATCH_ROWS`` rows, and the coordinator that receives it
    owns every partition in it, so it applies the mutations locally. A request costs the Python
    driver far more than a row does, and one row per transaction and table (fraud) otherwise
    means one request per row. No atomicity is needed: every row is an idempotent upsert. Rows of
    one partition stay next to each other, so a partition is written by one mutation.
    """

    BATCH_ROWS = 100
    # Under Cassandra's batch_size_fail_threshold (50 KiB of mutation data): a cell costs its value
    # plus ~16 bytes (timestamp, TTL, deletion time), a collection element 16 more (its path), so a
    # value's serialized size times 4, plus 16, bounds what it costs in the mutation.
    BATCH_BYTES = 40_000

    def __init__(
        self,
        session: Session,
        keyspace: str,
        *,
        concurrency: int = 64,
        max_attempts: int = 0,
        ttl_s: Mapping[str, int] | None = None,
        on_retry: Callable[[BaseException], None] = lambda exc: None,
    ) -> None:
        """``max_attempts`` 0 retries transient errors for ever (backoff capped at 5 s): while
        Cassandra is down the agent holds its batch, so consumption stops instead of dropping."""
        self._session = session
        self._keyspace = check_identifier(keyspace)
        self._slots = asyncio.Semaphore(concurrency)
        self._max_attempts = max_attempts
        self._on_retry = on_retry
        self._ttl_s = dict(ttl_s or {})
        self._prepared: dict[tuple[str, tuple[str, ...], bool], Binder] = {}
        self._partition_keys: dict[str, tuple[str, ...]] = {}
        self._collections_of: dict[tuple[str, tuple[str, ...]], list[int]] = {}

    async def setup(self) -> None:
        """Nothing to do: the schema is applied by `apply_schema` before workers start."""

    def _statement(self, table: str, columns: tuple[str, ...], stamped: bool) -> Binder:
        key = (table, columns, stamped)
        if key not in self._prepared:
            names = ", ".join(columns)
            marks = ", ".join("?" for _ in columns)
            ttl = self._ttl_s.get(table, 0)
            options = ([f"TTL {int(ttl)}"] if ttl > 0 else []) + (["TIMESTAMP ?"] if stamped else [])
            using = f" USING {' AND '.join(options)}" if options else ""
            into = f"{self._keyspace}.{check_identifier(table)}"
            self._prepared[key] = Binder(
                prepare_retrying(self._session, f"INSERT INTO {into} ({names}) VALUES ({marks}){using}")
            )
        return self._prepared[key]

    def _partition_key(self, table: str) -> tuple[str, ...]:
        if table not in self._partition_keys:
            meta = self._session.cluster.metadata.keyspaces[self._keyspace].tables[table]
            self._partition_keys[table] = tuple(column.name for column in meta.partition_key)
        return self._partition_keys[table]

    async def write(
        self, table: str, rows: Sequence[Mapping[str, Any]], stamps: Sequence[int] | None = None
    ) -> None:
        """Upsert rows (``stamps``: each one's write timestamp, `tables.FENCE_BASE`); returns once
        every row is durably acknowledged by Cassandra. Rows with different columns (e.g. score
        cells and label cells of one table) are separate statements."""
        if not rows:
            return
        by_columns: dict[tuple[str, ...], list[list[Any]]] = {}
        for i, row in enumerate(rows):
            values = list(row.values())
            if stamps is not None:
                values.append(stamps[i])
            by_columns.setdefault(tuple(row), []).append(values)
        requests: list[Statement] = []
        for columns, same in by_columns.items():
            requests += self._requests(table, columns, same, stamped=stamps is not None)
        await asyncio.gather(*(self._execute(request) for request in requests))

    def _requests(
        self, table: str, columns: tuple[str, ...], rows: Sequence[list[Any]], *, stamped: bool
    ) -> list[Statement]:
        """``rows``: each row's values in ``columns`` order (then its write timestamp if stamped)."""
        binder = self._statement(table, columns, stamped)
        where = [columns.index(c) for c in self._partition_key(table)]
        key_of = itemgetter(*where)
        partitions: dict[Any, list[list[Any]]] = {}
        for values in rows:
            found = partitions.get(key := key_of(values))
            if found is None:
                partitions[key] = [values]
            else:
                found.append(values)
        bind = binder.bind
        by_replica: dict[Any, list[BoundStatement]] = {}
        for same in partitions.values():
            bound = [bind(values) for values in same]
            by_replica.setdefault(self._replica(bound[0]), []).extend(bound)
        requests: list[Statement] = []
        collections = self._collections(table, columns)
        for statements in by_replica.values():
            requests += self._batches(statements, collections)
        return requests

    def _replica(self, bound: BoundStatement) -> Any:
        replicas = self._session.cluster.metadata.get_replicas(self._keyspace, bound.routing_key)
        return replicas[0].endpoint if replicas else None

    def _collections(self, table: str, columns: tuple[str, ...]) -> list[int]:
        """The positions of ``columns`` that are collections not frozen: each element is a cell,
        with its own path and timestamp (`BATCH_BYTES` counts their bytes 4 times)."""
        key = (table, columns)
        if key not in self._collections_of:
            meta = self._session.cluster.metadata.keyspaces[self._keyspace].tables[table].columns
            self._collections_of[key] = [
                i for i, c in enumerate(columns) if meta[c].cql_type.startswith(("list<", "set<", "map<"))
            ]
        return self._collections_of[key]

    def _batches(self, statements: Sequence[BoundStatement], collections: Sequence[int]) -> list[Statement]:
        """Consecutive statements cut into batches of at most `BATCH_ROWS` rows and about
        `BATCH_BYTES` of mutation (a cell costs its value plus ~16 bytes of timestamp, TTL and
        deletion time)."""
        requests: list[Statement] = []
        chunk: list[BoundStatement] = []
        size = 0
        for bound in statements:
            values = bound.values
            bytes_ = sum(map(len, filter(None, values))) + 16 * len(values)
            for i in collections:
                bytes_ += 3 * len(values[i] or b"")
            if chunk and (len(chunk) >= self.BATCH_ROWS or size + bytes_ > self.BATCH_BYTES):
                requests.append(_batch(chunk))
                chunk, size = [], 0
            chunk.append(bound)
            size += bytes_
        if chunk:
            requests.append(_batch(chunk))
        return requests

    async def _execute(self, statement: Statement) -> None:
        async with self._slots:
            try:
                await execute_retrying(
                    self._session, statement, "Cassandra write failing, holding the batch",
                    max_attempts=self._max_attempts, on_retry=self._on_retry,
                )  # fmt: skip
            except _TRANSIENT as exc:
                raise SinkError(f"Cassandra write failed after {self._max_attempts} attempts: {exc}") from exc

    async def flush(self) -> None:
        """Writes are acknowledged in `write`; nothing is buffered here."""

    async def close(self) -> None:
        self._prepared.clear()


def _batch(statements: Sequence[BoundStatement]) -> Statement:
    """One statement alone, or an UNLOGGED batch of several (a lone row needs no envelope)."""
    if len(statements) == 1:
        return statements[0]
    batch = BatchStatement(batch_type=BatchType.UNLOGGED)
    for bound in statements:
        batch.add(bound)
    return batch
