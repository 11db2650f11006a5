"""The engine's state snapshots in Cassandra (`deploy/cassandra/schema/060_state_snapshots.cql`).

Why a table rather than a compacted changelog topic: a snapshot is read once per assignment and
written every minute or so, as a whole; the table keeps the newest two per partition with their
metadata queryable (`cqlsh`), is deleted with the version's other rows by `retire`, and needs no
topic per version whose compaction, segment and message-size settings would have to fit states of
any size. A state is split into chunks of ``CHUNK_BYTES``, each its own row, written with the
sink's retry discipline; the metadata is on chunk 0.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from cassandra.cluster import Session
from cassandra.query import PreparedStatement

from streams.engine.snapshots import Snapshot, SnapshotInfo
from streams.io.cassandra import as_asyncio, check_identifier, prepare_retrying
from streams.tables import STATE_SNAPSHOTS

CHUNK_BYTES = 512 * 1024
_KEY = "pipeline_version = ? AND pipeline = ? AND source_partition = ?"


class CassandraSnapshotStore:
    def __init__(self, session: Session, keyspace: str, version: str, *, concurrency: int = 4) -> None:
        self.session, self.version = session, version
        self.table = f"{check_identifier(keyspace)}.{STATE_SNAPSHOTS.name}"
        self._slots = asyncio.Semaphore(concurrency)
        self._prepared: dict[str, PreparedStatement] = {}

    def _statement(self, cql: str) -> PreparedStatement:
        if cql not in self._prepared:
            self._prepared[cql] = prepare_retrying(self.session, cql)
        return self._prepared[cql]

    async def _run(self, cql: str, values: list[Any]) -> list[Any]:
        async with self._slots:
            rows = await as_asyncio(self.session.execute_async(self._statement(cql), values))
            return list(rows or ())  # a write answers None

    async def save(self, snapshot: Snapshot) -> None:
        info, data = snapshot.info, snapshot.data
        chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
        key = [self.version, info.pipeline, info.partition, info.snapshot_id]
        head = (
            f"INSERT INTO {self.table} (pipeline_version, pipeline, source_partition, snapshot_id, chunk, "
            "positions, format, pins, checksum, size, chunks, taken_at, data) "
            "VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        rest = (
            f"INSERT INTO {self.table} (pipeline_version, pipeline, source_partition, snapshot_id, chunk, "
            "data) VALUES (?, ?, ?, ?, ?, ?)"
        )
        taken_at = int(time.time() * 1000)
        meta = [info.positions, info.format, info.pins, info.checksum, info.size, len(chunks), taken_at]
        await asyncio.gather(
            self._run(head, [*key, *meta, chunks[0]]),
            *(self._run(rest, [*key, n, chunk]) for n, chunk in enumerate(chunks[1:], start=1)),
        )

    async def candidates(self, pipeline: str, partition: int) -> list[SnapshotInfo]:
        cql = (
            f"SELECT snapshot_id, positions, format, pins, checksum, size, chunks FROM {self.table} "
            f"WHERE {_KEY} AND chunk = 0 ALLOW FILTERING"  # within one partition: a few rows
        )
        rows = await self._run(cql, [self.version, pipeline, partition])
        return [
            SnapshotInfo(pipeline, partition, dict(r.positions or {}), r.format or "", r.pins or "",
                         r.checksum or "", r.size or 0, r.chunks or 1)
            for r in rows
        ]  # fmt: skip

    async def data(self, info: SnapshotInfo) -> bytes | None:
        """Chunk by chunk: each response stays small, whatever the size of the state."""
        cql = f"SELECT data FROM {self.table} WHERE {_KEY} AND snapshot_id = ? AND chunk = ?"
        key = [self.version, info.pipeline, info.partition, info.snapshot_id]
        found = await asyncio.gather(*(self._run(cql, [*key, n]) for n in range(info.chunks)))
        if not all(found):
            return None
        return b"".join(rows[0].data or b"" for rows in found)

    async def prune(self, pipeline: str, partition: int, below: int) -> None:
        cql = f"DELETE FROM {self.table} WHERE {_KEY} AND snapshot_id < ?"
        await self._run(cql, [self.version, pipeline, partition, below])
