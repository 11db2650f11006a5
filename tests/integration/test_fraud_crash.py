"""A fraud worker killed with SIGKILL mid-stream (offsets committed, but not all) and restarted
scores, decides and labels every transaction as the independent oracle (`fraud_oracle`) does: the
restarted worker rebuilt each customer's history from the log, or the features would differ."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.fraud.generator import TransactionGenerator, TransactionProfile
from streams.fraud.synthetic import load_ip_prefixes
from streams.io.cassandra import connect
from streams.io.kafka import committed_offsets
from streams.produce import produce
from streams.settings import Settings
from tests.integration.faults import (
    group_of,
    high_watermarks,
    kill_when,
    start_worker,
    wait_caught_up,
)
from tests.integration.fraud_oracle import DAY, START, fraud_oracle
from tests.integration.kafka_records import read_partitions
from tests.support import running_worker, settings_env

pytestmark = pytest.mark.integration


def test_kill_9_mid_stream_then_restart_gives_the_oracle(isolated: Settings, tmp_path: Path) -> None:
    # Small batches and frequent checkpoints: partitions are committed a little at a time.
    worker = isolated.worker.model_copy(update={"batch_size": 500})
    fraud = isolated.fraud.model_copy(update={"catchup_flush_interval_s": 0.1})
    settings = isolated.model_copy(update={"worker": worker, "fraud": fraud})
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

    # Kill once a partition is committed part of the way (the restart resumes it mid-log, from
    # customers' histories it must rebuild), checked immediately before the kill.
    def resumes_mid_log() -> bool:
        committed = committed_offsets(settings.kafka, group, t.transactions, ends[t.transactions])
        return any(0 < committed.get(p, 0) < end for p, end in ends[t.transactions].items())

    kill_when(start_worker(settings, tmp_path / "first-worker.log"), resumes_mid_log, "a partition half done")
    at_kill = committed_offsets(settings.kafka, group, t.transactions, ends[t.transactions])
    assert any(0 < at_kill.get(p, 0) < end for p, end in ends[t.transactions].items()), at_kill
    print(f"\nfraud crash: killed with {at_kill} committed of {ends[t.transactions]}")

    with running_worker(settings, tmp_path):
        wait_caught_up(settings, ends)
    # The decision log continued across the kill: every chain verifies against its published head.
    audit = subprocess.run(
        [sys.executable, "-m", "streams", "audit", "verify", "--json"],
        env={**os.environ, **settings_env(settings)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert audit.returncode == 0, audit.stdout + audit.stderr
    report = json.loads(audit.stdout)
    assert report["findings"] == [] and report["partitions"] == settings.kafka.partitions

    cluster, session = connect(settings.cassandra, keyspace=settings.cassandra.keyspace)
    try:
        rows = list(
            session.execute(
                "SELECT transaction_id, score, decision, holdout, features, is_fraud FROM fraud_transactions"
            )
        )
    finally:
        cluster.shutdown()
    stored = {r.transaction_id: r for r in rows}
    expected = fraud_oracle(
        settings, read_partitions(settings, t.transactions), read_partitions(settings, t.labels)
    )
    assert stored.keys() == expected.keys()
    assert report["entries"] == len(expected)  # one decision each, no entry twice
    for tx_id, want in expected.items():
        got = stored[tx_id]
        assert got.score == pytest.approx(want.score, abs=1e-9), tx_id
        assert (got.decision, got.holdout) == (want.decision, want.holdout), tx_id
        assert got.is_fraud == want.is_fraud, tx_id
        assert list(got.features) == pytest.approx(want.features, abs=1e-9), tx_id
    # The scenario exercises every branch the rows can take.
    assert {w.decision for w in expected.values()} == {"allow", "disable_invoice", "review"}
    assert {w.holdout for w in expected.values()} == {True, False}
    assert {w.is_fraud for w in expected.values()} == {True, False, None}
