"""`streams audit verify`: a version's decision log (Cassandra), its published chain heads (Kafka)
and its serving tables' decision rows, checked with `fraud.audit`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from cassandra.cluster import Session

from streams.fraud import audit
from streams.fraud.audit import Finding, Head
from streams.fraud.processor import SCORES_TABLE, TRANSACTIONS_TABLE
from streams.io.cassandra import check_identifier
from streams.io.fraud_store import scan_table
from streams.io.kafka import existing_topics, read_partition, watermarks
from streams.io.version_store import version_partitions
from streams.settings import KafkaSettings

ENTRY_COLUMNS = ("source_partition", "seq", *audit.HASHED[1:], "prev_hash", "hash")


@dataclass
class AuditReport:
    version: str
    partitions: int = 0
    entries: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # serving table -> decision rows checked
    heads: int = 0  # chains with a published head (the others are checked by their links alone)
    findings: list[Finding] = field(default_factory=list)


def log_entries(
    session: Session, keyspace: str, version: str
) -> Iterator[tuple[int, Iterator[dict[str, Any]]]]:
    """Per Kafka partition (ascending), its log entries in ``seq`` order, read bucket by bucket."""
    table = f"{check_identifier(keyspace)}.{audit.LOG_TABLE}"
    keys = sorted(
        version_partitions(session, keyspace, audit.LOG_TABLE, version,
                           ["pipeline_version", "source_partition", "bucket"])
    )  # fmt: skip
    read = session.prepare(
        f"SELECT {', '.join(ENTRY_COLUMNS)} FROM {table} "
        "WHERE pipeline_version = ? AND source_partition = ? AND bucket = ?"
    )
    partitions: dict[int, list[int]] = {}
    for _, partition, bucket in keys:
        partitions.setdefault(partition, []).append(bucket)

    def entries(partition: int) -> Iterator[dict[str, Any]]:
        for bucket in partitions[partition]:
            for row in session.execute(read, (version, partition, bucket)):
                yield row._asdict()

    for partition in sorted(partitions):
        yield partition, entries(partition)


def published_heads(kafka: KafkaSettings, topic: str) -> dict[int, Head]:
    """The latest head each partition published (compacted topic: the last record per key)."""
    heads: dict[int, Head] = {}
    if topic not in existing_topics(kafka):  # a version without fraud, or deleted: nothing published
        return heads
    for partition, (low, high) in watermarks(kafka, topic).items():
        for message in read_partition(kafka, topic, partition, low, high):
            value = message.value()
            if value is not None:
                head = orjson.loads(value)
                heads[int(head["source_partition"])] = Head(int(head["seq"]), str(head["hash"]))
    return heads


def audit_version(
    session: Session, keyspace: str, version: str, heads: Mapping[int, Head], *, anchored: bool,
    from_ms: int | None = None, to_ms: int | None = None,
) -> AuditReport:  # fmt: skip
    """Recompute every chain of ``version`` and compare the serving tables with it. Findings about
    decisions whose event time is outside [from_ms, to_ms) are left out (a deleted log entry has no
    time: it is always reported)."""
    report = AuditReport(version)
    latest: dict[str, dict[str, Any]] = {}
    found: list[Finding] = []
    seen: set[int] = set()
    for partition, entries in log_entries(session, keyspace, version):
        seen.add(partition)
        chain = list(entries)
        findings, _ = audit.verify_chain(partition, chain, anchored=anchored, published=heads.get(partition))
        found += findings
        report.entries += len(chain)
        # Each intact entry is the latest of its transaction so far (a tampered entry is reported
        # by the chain, not again through every row it disagrees with).
        altered = {f.seq for f in findings if f.kind == "altered"}
        for entry in chain:
            tx_id = entry["transaction_id"]
            if entry["seq"] not in altered and (tx_id not in latest or latest[tx_id]["seq"] <= entry["seq"]):
                latest[tx_id] = entry
    for partition in sorted(set(heads) - seen):  # a chain deleted as a whole
        found += audit.verify_chain(partition, [], published=heads[partition])[0]
    report.partitions, report.heads = len(seen | set(heads)), len(heads)
    columns = ("transaction_id", "source_partition", "source_offset", *audit.COMPARED)
    for table, selected in (
        (TRANSACTIONS_TABLE, columns),
        (SCORES_TABLE, ("transaction_id", *audit.COMPARED)),
    ):
        rows = list(scan_table(session, keyspace, table, version, selected))
        report.rows[table] = sum(1 for r in rows if r.get("score") is not None)
        found += audit.compare_decisions(latest, rows, table)
    ts_of = {tx_id: entry["ts"] for tx_id, entry in latest.items()}
    report.findings = [f for f in found if _within(f, ts_of, from_ms, to_ms)]
    return report


def _within(finding: Finding, ts_of: Mapping[str, int], from_ms: int | None, to_ms: int | None) -> bool:
    ts = ts_of.get(finding.transaction_id or "")
    if ts is None:
        return True
    return (from_ms is None or ts >= from_ms) and (to_ms is None or ts < to_ms)
