"""The version registry and the serving pointer in Cassandra (tables of 040_versions.cql).

Every write here is a lightweight transaction (Paxos): rows that are compare-and-set must never be
written without one, or the two kinds of timestamps could reorder.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cassandra import ConsistencyLevel
from cassandra.cluster import Session
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.query import SimpleStatement

from streams.io.cassandra import check_identifier
from streams.tables import RETIRE_TIMESTAMP

REGISTRY_TABLE = "pipeline_versions"
SERVING_TABLE = "serving_version"
SCOPE = "default"


@dataclass(frozen=True)
class VersionRecord:
    version: str
    state: str  # replaying | live | retired
    pipelines: tuple[str, ...]
    params: dict[str, Any]
    params_digest: str
    replay_from: str
    created_at: datetime | None = None
    caught_up_at: datetime | None = None
    promoted_at: datetime | None = None
    retired_at: datetime | None = None


def now() -> datetime:
    return datetime.now(tz=UTC)


def _record(row: Any) -> VersionRecord:
    return VersionRecord(
        version=row.version,
        state=row.state,
        pipelines=tuple(row.pipelines or ()),
        params=json.loads(row.params or "{}"),
        params_digest=row.params_digest or "",
        replay_from=row.replay_from or "",
        created_at=row.created_at,
        caught_up_at=row.caught_up_at,
        promoted_at=row.promoted_at,
        retired_at=row.retired_at,
    )


def read_version(session: Session, keyspace: str, version: str) -> VersionRecord | None:
    row = session.execute(
        f"SELECT * FROM {check_identifier(keyspace)}.{REGISTRY_TABLE} WHERE version = %s", (version,)
    ).one()
    return None if row is None else _record(row)


def list_versions(session: Session, keyspace: str) -> list[VersionRecord]:
    rows = session.execute(f"SELECT * FROM {check_identifier(keyspace)}.{REGISTRY_TABLE}")
    return sorted((_record(r) for r in rows), key=lambda r: (r.created_at or now(), r.version))


def create_version(session: Session, keyspace: str, record: VersionRecord) -> bool:
    """Register a new version; False if the name is taken (the existing row is left alone)."""
    result = session.execute(
        f"INSERT INTO {check_identifier(keyspace)}.{REGISTRY_TABLE} "
        "(version, state, pipelines, params, params_digest, replay_from, created_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) IF NOT EXISTS",
        (
            record.version, record.state, list(record.pipelines), json.dumps(record.params, sort_keys=True),
            record.params_digest, record.replay_from, record.created_at or now(),
        ),
    )  # fmt: skip
    return bool(result.was_applied)


def update_version(
    session: Session, keyspace: str, version: str, *, expected_state: str | None = None, **columns: Any
) -> bool:
    """Set columns of a registered version (only if it is in ``expected_state``, when given)."""
    assignments = ", ".join(f"{check_identifier(name)} = %s" for name in columns)
    condition = "IF state = %s" if expected_state else "IF EXISTS"
    values = [*columns.values(), version] + ([expected_state] if expected_state else [])
    result = session.execute(
        f"UPDATE {check_identifier(keyspace)}.{REGISTRY_TABLE} SET {assignments} WHERE version = %s "
        + condition,
        values,
    )
    return bool(result.was_applied)


def serving_version(session: Session, keyspace: str) -> str | None:
    # SERIAL: read the outcome of the latest promote even if it is still being committed.
    statement = SimpleStatement(
        f"SELECT version FROM {check_identifier(keyspace)}.{SERVING_TABLE} WHERE scope = %s",
        consistency_level=ConsistencyLevel.SERIAL,
    )
    row = session.execute(statement, (SCOPE,)).one()
    return None if row is None else str(row.version)


def claim_serving(session: Session, keyspace: str, version: str) -> bool:
    """Make ``version`` the serving one if no version serves yet (the very first one)."""
    result = session.execute(
        f"INSERT INTO {check_identifier(keyspace)}.{SERVING_TABLE} (scope, version, promoted_at) "
        "VALUES (%s, %s, %s) IF NOT EXISTS",
        (SCOPE, version, now()),
    )
    return bool(result.was_applied)


def switch_serving(session: Session, keyspace: str, version: str, previous: str | None) -> bool:
    """Atomically point readers at ``version`` if ``previous`` still serves (compare-and-set)."""
    if previous is None:
        return claim_serving(session, keyspace, version)
    result = session.execute(
        f"UPDATE {check_identifier(keyspace)}.{SERVING_TABLE} SET version = %s, previous = %s, "
        "promoted_at = %s WHERE scope = %s IF version = %s",
        (version, previous, now(), SCOPE, previous),
    )
    return bool(result.was_applied)


def table_primary_key(session: Session, keyspace: str, table: str) -> tuple[list[str], list[str]]:
    """(partition key columns, clustering columns) of a table, from the driver's schema metadata."""
    cluster = session.cluster
    cluster.refresh_table_metadata(keyspace, table)
    meta = cluster.metadata.keyspaces[keyspace].tables[table]
    return [c.name for c in meta.partition_key], [c.name for c in meta.clustering_key]


def versioned_tables(session: Session, keyspace: str) -> list[str]:
    """Result tables whose partition key starts with pipeline_version."""
    cluster = session.cluster
    cluster.refresh_keyspace_metadata(keyspace)
    tables = cluster.metadata.keyspaces[keyspace].tables
    return sorted(
        name
        for name, meta in tables.items()
        if meta.partition_key and meta.partition_key[0].name == "pipeline_version"
    )


def scan_version_rows(
    session: Session, keyspace: str, table: str, version: str, columns: Iterable[str] | None = None
) -> Iterable[Mapping[str, Any]]:
    """Every row of ``version`` in ``table``: its partitions are found with a token-ordered scan of
    the distinct partition keys (the version is only the first part of a composite key), then read
    one by one. Paged, so memory stays flat; costs a scan of the table's partition index."""
    keyspace, table = check_identifier(keyspace), check_identifier(table)
    partition_key, _ = table_primary_key(session, keyspace, table)
    selected = ", ".join(check_identifier(c) for c in columns) if columns else "*"
    where = " AND ".join(f"{c} = ?" for c in partition_key)
    read = session.prepare(f"SELECT {selected} FROM {keyspace}.{table} WHERE {where}")
    for key in version_partitions(session, keyspace, table, version, partition_key):
        for row in session.execute(read, key):
            yield row._asdict()


def version_partitions(
    session: Session, keyspace: str, table: str, version: str, partition_key: list[str]
) -> Iterable[tuple[Any, ...]]:
    names = ", ".join(partition_key)
    rows = session.execute(f"SELECT DISTINCT {names} FROM {keyspace}.{table}")
    for row in rows:
        if row.pipeline_version == version:
            yield tuple(row)


def delete_version_rows(session: Session, keyspace: str, version: str) -> dict[str, int]:
    """Delete every partition of ``version`` in every versioned table; table -> partitions deleted."""
    deleted: dict[str, int] = {}
    for table in versioned_tables(session, keyspace):
        partition_key, _ = table_primary_key(session, keyspace, table)
        keys = list(version_partitions(session, keyspace, table, version, partition_key))
        where = " AND ".join(f"{c} = ?" for c in partition_key)
        # Above every fenced write timestamp (`tables.RETIRE_TIMESTAMP`): the rows go for good.
        delete = session.prepare(
            f"DELETE FROM {keyspace}.{table} USING TIMESTAMP {RETIRE_TIMESTAMP} WHERE {where}"
        )
        results = execute_concurrent_with_args(
            session, delete, keys, concurrency=32, raise_on_first_error=True
        )
        deleted[table] = len(list(results))
    return deleted
