"""Reading the fraud tables (cassandra-driver)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

from cassandra.cluster import Session
from cassandra.query import PreparedStatement

from streams.fraud.evaluation import ScoredOutcome, ThresholdCounts
from streams.fraud.processor import COHORT_TABLE, SCORES_TABLE, TRANSACTIONS_TABLE, Archived
from streams.io.cassandra import READ_TRANSIENT, check_identifier, execute_retrying, prepare_retrying

METRICS_TABLE = "fraud_cohort_metrics"


def _rows(result: Any) -> list[dict[str, Any]]:
    return [dict(row._asdict()) for row in result]


def read_transaction(
    session: Session, keyspace: str, version: str, transaction_id: str
) -> list[dict[str, Any]]:
    return _rows(
        session.execute(
            f"SELECT * FROM {check_identifier(keyspace)}.{TRANSACTIONS_TABLE} "
            "WHERE pipeline_version = %s AND transaction_id = %s",
            (version, transaction_id),
        )
    )


def read_customer(
    session: Session, keyspace: str, version: str, customer_id: str, start_ms: int, end_ms: int, limit: int
) -> list[dict[str, Any]]:
    return _rows(
        session.execute(
            f"SELECT * FROM {check_identifier(keyspace)}.{SCORES_TABLE} WHERE pipeline_version = %s "
            "AND customer_id = %s AND ts >= %s AND ts < %s LIMIT %s",
            (version, customer_id, start_ms, end_ms, limit),
        )
    )


def read_cohort(
    session: Session, keyspace: str, version: str, cohort_day: int, partitions: int
) -> list[ScoredOutcome]:
    """Every decision of one day (all Kafka partitions) with its label, if known."""
    statement = session.prepare(
        "SELECT transaction_id, score, decision, holdout, is_fraud "
        f"FROM {check_identifier(keyspace)}.{COHORT_TABLE} "
        "WHERE pipeline_version = ? AND cohort_day = ? AND source_partition = ?"
    )
    outcomes = []
    for partition in range(partitions):
        for row in session.execute(statement, (version, cohort_day, partition)):
            if row.score is not None:  # a label can land before its score row is flushed
                outcomes.append(
                    ScoredOutcome(
                        row.transaction_id, row.score, row.decision, bool(row.holdout), row.is_fraud
                    )
                )
    return outcomes


def read_threshold_counts(
    session: Session, keyspace: str, version: str, first_day: int, last_day: int
) -> dict[int, ThresholdCounts]:
    """The stored counts behind precision and recall of the cohort days in ``[first_day, last_day]``."""
    rows = session.execute(
        "SELECT cohort_day, holdout_flagged, holdout_flagged_fraud, missed_fraud "
        f"FROM {check_identifier(keyspace)}.{METRICS_TABLE} "
        "WHERE pipeline_version = %s AND cohort_day >= %s AND cohort_day <= %s",
        (version, first_day, last_day),
    )
    return {
        r.cohort_day: ThresholdCounts(r.holdout_flagged, r.holdout_flagged_fraud or 0, r.missed_fraud or 0.0)
        for r in rows
        if r.holdout_flagged is not None  # (a row from before the counts were stored)
    }


def read_metrics(session: Session, keyspace: str, version: str, limit: int) -> list[dict[str, Any]]:
    return _rows(
        session.execute(
            f"SELECT * FROM {check_identifier(keyspace)}.{METRICS_TABLE} "
            "WHERE pipeline_version = %s LIMIT %s",
            (version, limit),
        )
    )


def scan_table(
    session: Session, keyspace: str, table: str, version: str, columns: Sequence[str]
) -> Iterator[dict[str, Any]]:
    """``version``'s rows of a table with a partition per transaction or customer (``columns`` and
    ``pipeline_version``): one paged scan of the whole table in token order, not a read per
    partition (offline jobs: training, the audit)."""
    names = ", ".join(check_identifier(c) for c in ("pipeline_version", *columns))
    for row in session.execute(f"SELECT {names} FROM {check_identifier(keyspace)}.{check_identifier(table)}"):
        if row.pipeline_version == version:
            yield row._asdict()


def scan_training_rows(session: Session, keyspace: str, version: str) -> list[dict[str, Any]]:
    """Scored transactions of ``version`` with their features and labels: a full scan (offline job)."""
    columns = ("transaction_id", "ts", "features", "is_fraud", "decision", "holdout")
    return [r for r in scan_table(session, keyspace, TRANSACTIONS_TABLE, version, columns) if r["features"]]


class DecisionArchive:
    """The fraud pipeline's `Lookup`: the archived decisions (``fraud_transactions`` rows with a
    score) of some transaction ids, read concurrently. Transient errors are retried for ever, as
    the sink does: while Cassandra is down the batch waits, it is never folded without them."""

    def __init__(self, session: Session, keyspace: str, *, concurrency: int = 32) -> None:
        self.session = session
        self.cql = (
            f"SELECT transaction_id, ts, score, source_partition, source_offset "
            f"FROM {check_identifier(keyspace)}.{TRANSACTIONS_TABLE} "
            "WHERE pipeline_version = ? AND transaction_id = ?"
        )
        self._prepared: PreparedStatement | None = None
        self._slots = asyncio.Semaphore(concurrency)

    async def find(self, version: str, transaction_ids: Sequence[str]) -> dict[str, Archived]:
        rows = await asyncio.gather(*(self._one(version, tx_id) for tx_id in transaction_ids))
        return {tx_id: row for tx_id, row in zip(transaction_ids, rows, strict=True) if row is not None}

    async def _one(self, version: str, tx_id: str) -> Archived | None:
        if self._prepared is None:
            self._prepared = prepare_retrying(self.session, self.cql)
        async with self._slots:
            rows = await execute_retrying(
                self.session, self._prepared, "reading archived decisions failing", (version, tx_id),
                transient=READ_TRANSIENT,
            )  # fmt: skip
        found = list(rows)
        if not found or found[0].score is None:  # no row, or only a label's cells
            return None
        row = found[0]
        return Archived(row.ts, row.source_partition, row.source_offset)
