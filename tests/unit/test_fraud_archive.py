"""The fraud state stays bounded without changing a result: decisions leave memory once durable and
past the dedupe horizon, and the label join reads them back from the archived rows. Run on the
engine (in-process harness, in-memory sink as the archive) against the same log run with every
decision kept in memory, with a restart from a snapshot in between."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from streams.compose import compose
from streams.engine.snapshots import MemorySnapshotStore
from streams.engine.testing import Harness, MemoryLog
from streams.fraud.generator import TransactionGenerator, TransactionProfile
from streams.fraud.pipeline import FraudPipeline
from streams.fraud.processor import Archived
from streams.settings import Settings
from streams.worker import build_pipelines
from tests.unit.test_snapshots import FRAUD_OWNED, START, all_rows, fraud_log

HOUR = 3_600_000
SETTINGS = {"worker": {"pipelines": ("fraud",)}, "fraud": {"dedupe_horizon_hours": 1}}


class SinkArchive:
    """The `Lookup` of the harness: the fraud_transactions rows of its in-memory sink."""

    def __init__(self) -> None:
        self.harness: Harness | None = None
        self.asked = 0

    async def find(self, version: str, ids: Sequence[str]) -> dict[str, Archived]:
        assert self.harness is not None and self.harness.sink is not None
        self.asked += len(ids)
        rows = self.harness.sink.tables["fraud_transactions"]
        found = {}
        for tx_id in ids:
            row = rows.get((version, tx_id))
            if row is not None and row.get("score") is not None:
                found[tx_id] = Archived(row["ts"], row["source_partition"], row.get("source_offset"))
        return found


def pipelines(archive: SinkArchive | None) -> list[Any]:
    composition = compose(Settings(**SETTINGS))  # type: ignore[arg-type]
    return build_pipelines(composition, None if archive is None else archive.find)


def scenario(count: int) -> dict[str, list[tuple[bytes, bytes]]]:
    """A day of transactions a minute apart, labels a few hours after theirs (past the horizon)."""
    prefixes = compose(Settings()).fraud.ip_prefixes
    profile = TransactionProfile(
        customers=150, mean_gap_ms=60_000.0, label_delay_days=0.15, legit_labelled=0.5
    )
    generator = TransactionGenerator(profile, seed=11, start_ms=START, ip_prefixes=dict(prefixes))
    made = generator.scenario(count)
    return {"transactions": made.transactions, "labels": made.labels}


def decisions_in_memory(h: Harness) -> int:
    (fraud,) = h.pipelines
    assert isinstance(fraud, FraudPipeline)
    return sum(len(state.decisions) for state in fraud.processor.states.values())


def test_labels_of_forgotten_decisions_join_their_archived_rows_exactly() -> None:
    messages = scenario(1500)
    archive = SinkArchive()
    h = Harness(pipelines(archive), snapshots=MemorySnapshotStore())
    archive.harness = h
    fraud_log(h.log, messages, first_half=True)
    asyncio.run(h.run_until_idle(FRAUD_OWNED))
    fraud_log(h.log, messages, first_half=False)
    restarted = SinkArchive()
    successor = h.successor(pipelines(restarted))  # from the snapshots, with the archive
    restarted.harness = successor
    asyncio.run(successor.run_until_idle(FRAUD_OWNED))

    kept_all = Harness(pipelines(None), MemoryLog())  # every decision in memory, no archive
    kept_all.log.partitions = successor.log.partitions
    asyncio.run(kept_all.run_until_idle(FRAUD_OWNED))

    got, expected = all_rows(successor), all_rows(kept_all)
    labelled = [r for r in got["fraud_transactions"].values() if r.get("is_fraud") is not None]
    assert len(got["fraud_transactions"]) > 1400 and len(labelled) > 300
    assert archive.asked + restarted.asked > 300  # most labels came after their decision left memory
    assert got == expected
    both = h.observer.tallies + successor.observer.tallies
    for counter in ("labels_joined", "labels_orphaned", "duplicate:transactions", "fraud_holdout"):
        assert both[counter] == kept_all.observer.tallies[counter], counter
    # Memory holds about the last hour of decisions (a minute apart), the other run all of them.
    assert decisions_in_memory(successor) < 150 < 1400 < decisions_in_memory(kept_all)
