"""The tamper-evident decision log. Pure.

Every decision is appended to a hash chain per (pipeline version, Kafka partition): entry ``seq``
(the partition's decision number, in log order) carries the hash of the entry before it and its
own hash, over a canonical encoding of the decision (transaction id, event time, score, decision,
holdout, reasons, model version, a digest of the feature vector, the transaction's offset). The
chain depends only on the log, so a replay of the same log yields the same chain.

The workers store the entries in ``fraud_decision_log`` beside the scores and publish each
partition's head (sequence number and hash) to the compacted topic ``fraud-chain-heads.<version>``
and as metrics. `verify_chain` recomputes a partition's chain and names each entry altered,
deleted or inserted; `compare_decisions` checks the serving tables' decision rows against the
log; a head that differs from the published one shows a chain rewritten as a whole.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

LOG_TABLE = "fraud_decision_log"
BUCKET_ENTRIES = 65_536  # entries per Cassandra partition of the log
# The fields of an entry that its hash covers, in the canonical encoding's order.
HASHED = (
    "seq", "transaction_id", "ts", "score", "decision", "holdout", "reasons", "model_version",
    "features_digest", "source_offset",
)  # fmt: skip
# What a decision row of the serving tables must agree with the log on.
COMPARED = ("ts", "score", "decision", "holdout", "reasons", "model_version")


def genesis(partition: int) -> str:
    """The "previous hash" of a chain's first entry. It names the Kafka partition, not the version:
    every version that replays the same log from its beginning has the same chains."""
    return hashlib.sha256(f"streams-decision-log:{partition}".encode()).hexdigest()


def features_digest(features: Sequence[float]) -> str:
    """Of the exact doubles the decision was scored on."""
    return hashlib.sha256(struct.pack(f">{len(features)}d", *features)).hexdigest()[:32]


def entry_hash(prev_hash: str, entry: Mapping[str, Any]) -> str:
    """sha256 over the previous hash and the canonical encoding of ``entry``'s hashed fields (a
    JSON array: floats in their shortest exact form, reasons as a list)."""
    values = [entry[name] for name in HASHED]
    values[HASHED.index("reasons")] = list(entry["reasons"] or ())
    return hashlib.sha256(prev_hash.encode() + orjson.dumps(values)).hexdigest()


def bucket_of(seq: int) -> int:
    return seq // BUCKET_ENTRIES


def hash_prefix(hash_hex: str) -> int:
    """The first 48 bits of a hash: a number a metric holds exactly (Prometheus keeps floats)."""
    return int(hash_hex[:12], 16)


@dataclass(frozen=True)
class Finding:
    """Something the log or a serving table says that the chain does not: ``kind`` is altered,
    deleted, inserted or rewritten; ``where`` the table it was found in."""

    kind: str
    where: str
    partition: int
    seq: int | None
    transaction_id: str | None
    source_offset: int | None
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "table": self.where, "source_partition": self.partition, "seq": self.seq,
            "transaction_id": self.transaction_id, "source_offset": self.source_offset,
            "detail": self.detail,
        }  # fmt: skip


@dataclass(frozen=True)
class Head:
    seq: int
    hash: str


def verify_chain(
    partition: int,
    entries: Iterable[Mapping[str, Any]],
    *,
    anchored: bool = False,
    published: Head | None = None,
) -> tuple[list[Finding], Head | None]:
    """Recompute one partition's chain from ``entries`` (its log rows in ``seq`` order). Returns
    the findings and the head reached. ``anchored``: the chain starts at its first entry present
    (a version started from a point in the log, not from its beginning); else at seq 0 and the
    genesis hash. ``published``: the head the workers published; a chain that stops before it
    lost its last entries, one whose hash there differs was rewritten as a whole.

    An entry whose hash is not that of its content is altered; a missing sequence number is a
    deleted entry; an entry whose content hashes right but whose link does not continue the chain
    (a forged entry, or one rewritten with its hash recomputed) is inserted."""
    findings: list[Finding] = []
    prev_hash, expected = genesis(partition), 0
    last: Head | None = None
    at_published: str | None = None
    for entry in entries:
        seq = entry["seq"]
        if last is None and anchored:
            prev_hash, expected = entry["prev_hash"], seq
        where = (LOG_TABLE, partition, seq, entry["transaction_id"], entry["source_offset"])
        for missing in range(expected, seq):
            findings.append(Finding("deleted", LOG_TABLE, partition, missing, None, None, "entry missing"))
        if entry_hash(entry["prev_hash"], entry) != entry["hash"]:
            findings.append(Finding("altered", *where, "its content does not hash to its hash"))
        elif entry["prev_hash"] != prev_hash and seq == expected:
            findings.append(Finding("inserted", *where, "does not continue the chain"))
        prev_hash, expected = entry["hash"], seq + 1
        last = Head(seq, entry["hash"])
        if published is not None and seq == published.seq:
            at_published = entry["hash"]
    if published is not None:
        reached = -1 if last is None else last.seq
        for missing in range(reached + 1, published.seq + 1):
            findings.append(
                Finding(
                    "deleted", LOG_TABLE, partition, missing, None, None, "missing before the published head"
                )
            )
        if not findings and at_published is not None and at_published != published.hash:
            findings.append(
                Finding("rewritten", LOG_TABLE, partition, published.seq, None, None,
                        "the chain's hash at the published head differs: the log was rewritten")
            )  # fmt: skip
    return findings, last


def compare_decisions(
    latest: Mapping[str, Mapping[str, Any]],
    rows: Iterable[Mapping[str, Any]],
    table: str,
) -> list[Finding]:
    """The decision rows of a serving table against the log's latest entry per transaction id
    (``latest``): a row that differs is altered, a row the log does not have is inserted, an entry
    without its row is deleted. ``rows`` carry ``transaction_id`` and the `COMPARED` columns (a
    row with a null score holds only a label's cells: no decision)."""
    findings: list[Finding] = []
    seen: set[str] = set()
    for row in rows:
        tx_id = row["transaction_id"]
        if row.get("score") is None:
            continue
        seen.add(tx_id)
        entry = latest.get(tx_id)
        if entry is None:
            findings.append(
                Finding("inserted", table, _partition(row), None, tx_id,
                        row.get("source_offset"), "a decision the log does not have")
            )  # fmt: skip
            continue
        differs = [name for name in COMPARED if _value(row.get(name)) != _value(entry[name])]
        if differs:
            findings.append(
                Finding("altered", table, entry["source_partition"], entry["seq"], tx_id,
                        entry["source_offset"], "differs from the log in " + ", ".join(differs))
            )  # fmt: skip
    for tx_id, entry in latest.items():
        if tx_id not in seen:
            findings.append(
                Finding("deleted", table, entry["source_partition"], entry["seq"], tx_id,
                        entry["source_offset"], "the log's decision has no row")
            )  # fmt: skip
    return findings


def _partition(row: Mapping[str, Any]) -> int:
    partition = row.get("source_partition")
    return -1 if partition is None else int(partition)


def _value(value: Any) -> Any:
    return list(value) if isinstance(value, list | tuple) else value
