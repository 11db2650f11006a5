"""A fraud worker killed with SIGKILL mid-stream and restarted scores, decides and labels every
transaction exactly as one uninterrupted pass over each partition does."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streams.compose import compose
from streams.fraud.generator import TransactionGenerator, TransactionProfile
from streams.fraud.processor import FraudProcessor
from streams.fraud.synthetic import load_ip_prefixes
from streams.io.cassandra import connect
from streams.io.kafka import committed_offsets
from streams.produce import produce
from streams.settings import Settings
from tests.integration.faults import (
    caught_up,
    group_of,
    high_watermarks,
    kill_when,
    start_worker,
    wait_caught_up,
)
from tests.integration.fraud_oracle import DAY, START, oracle_valid_transaction
from tests.integration.kafka_records import read_partitions
from tests.support import running_worker

pytestmark = pytest.mark.integration


def uninterrupted(settings: Settings) -> dict[str, tuple[float, str, bool, list[float], bool | None]]:
    """Each partition folded in one pass: transactions in order, then its labels."""
    f = compose(settings).fraud
    processor = FraudProcessor(
        f.model,
        f.policy,
        f.ip_prefixes,
        settings.worker.pipeline_version,
        label_horizon_ms=f.label_horizon_ms,
    )
    transactions = read_partitions(settings, settings.topics.transactions)
    labels = read_partitions(settings, settings.topics.labels)
    result: dict[str, tuple[float, str, bool, list[float], bool | None]] = {}
    for partition in sorted(transactions):
        txs = [tx for _, raw in transactions[partition] if (tx := oracle_valid_transaction(raw)) is not None]
        lbs = [orjson.loads(raw or b"") for _, raw in labels.get(partition, [])]
        out = processor.process([(tx, partition) for tx in txs], [(lb, partition) for lb in lbs])
        joined = {row["transaction_id"]: row["is_fraud"] for row in out.label_transactions}
        for row in out.transactions:
            tx_id = row["transaction_id"]
            result[tx_id] = (
                row["score"],
                row["decision"],
                row["holdout"],
                row["features"],
                joined.get(tx_id),
            )
    return result


def test_kill_9_mid_stream_then_restart_equals_one_clean_pass(isolated: Settings, tmp_path: Path) -> None:
    settings = isolated
    generator = TransactionGenerator(
        TransactionProfile(customers=300, mean_gap_ms=10 * DAY / 20_000),
        seed=31,
        start_ms=START,
        ip_prefixes=load_ip_prefixes(settings.fraud.ip_countries_file),
    )
    scenario = generator.scenario(20_000)
    t = settings.topics
    assert produce(settings.kafka, t.transactions, scenario.transactions).failed == 0
    assert produce(settings.kafka, t.labels, scenario.labels).failed == 0

    group = group_of(settings, t.transactions)
    ends = {topic: high_watermarks(settings, topic) for topic in (t.transactions, t.labels)}
    # Kill once some offsets are committed (so the restart resumes mid-log) but not all.
    kill_when(
        start_worker(settings, tmp_path / "first-worker.log"),
        lambda: sum(committed_offsets(settings.kafka, group, t.transactions, range(4)).values()) > 0,
        "a first commit",
    )
    assert not caught_up(settings, ends), "killed too late to matter"

    with running_worker(settings, tmp_path):
        wait_caught_up(settings, ends)

    cluster, session = connect(settings.cassandra, keyspace=settings.cassandra.keyspace)
    try:
        rows = list(
            session.execute(
                "SELECT transaction_id, score, decision, holdout, features, is_fraud FROM fraud_transactions"
            )
        )
    finally:
        cluster.shutdown()
    stored = {r.transaction_id: (r.score, r.decision, r.holdout, list(r.features), r.is_fraud) for r in rows}
    expected = uninterrupted(settings)
    assert stored.keys() == expected.keys()
    for tx_id, (score, decision, holdout, features, is_fraud) in expected.items():
        got = stored[tx_id]
        assert got[0] == pytest.approx(score, abs=1e-12) and got[1:3] == (decision, holdout), tx_id
        assert got[3] == pytest.approx(features, abs=1e-12), tx_id
        assert got[4] == is_fraud, tx_id
