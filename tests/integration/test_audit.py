"""`streams audit verify` against the real services: untouched decisions verify (exit 0); one
decision altered, one deleted and one forged with CQL are named by their coordinates, and
nothing else (exit 1); so are a deleted and an altered entry of the log itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streams.fraud.generator import TransactionGenerator, TransactionProfile
from streams.fraud.synthetic import load_ip_prefixes
from streams.io.cassandra import connect
from streams.produce import produce
from streams.settings import Settings
from tests.integration.faults import high_watermarks, wait_caught_up
from tests.integration.fraud_oracle import DAY, START
from tests.support import running_worker, settings_env

pytestmark = pytest.mark.integration
LATER = 2**60  # a write timestamp above the workers' fencing timestamps (`tables.FENCE_BASE`)


def audit(settings: Settings) -> tuple[int, dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-m", "streams", "audit", "verify", "--json"],
        env={**os.environ, **settings_env(settings)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_audit_names_each_tampered_decision(isolated: Settings, tmp_path: Path) -> None:
    settings = isolated
    generator = TransactionGenerator(
        TransactionProfile(customers=200, mean_gap_ms=3 * DAY / 1500, fraud_share=0.02),
        seed=17, start_ms=START, ip_prefixes=load_ip_prefixes(settings.fraud.ip_countries_file),
    )  # fmt: skip
    scenario = generator.scenario(1500)
    t = settings.topics
    assert produce(settings.kafka, t.transactions, scenario.transactions).failed == 0
    with running_worker(settings, tmp_path):
        wait_caught_up(settings, {t.transactions: high_watermarks(settings, t.transactions)})
    # (stopped cleanly: its last checkpoint published every partition's head)

    code, clean = audit(settings)
    assert code == 0 and clean["findings"] == [], clean
    # the stop's last checkpoint published every partition's head
    assert clean["published_heads"] == clean["partitions"] == settings.kafka.partitions
    assert clean["entries"] == len(scenario.truth) == clean["rows"]["fraud_transactions"]

    version, keyspace = settings.worker.pipeline_version, settings.cassandra.keyspace
    cluster, session = connect(settings.cassandra, keyspace=keyspace)
    try:
        log = {
            r.transaction_id: r
            for r in session.execute(
                "SELECT transaction_id, source_partition, seq, source_offset, decision "
                "FROM fraud_decision_log"
            )
        }
        risky = sorted(tx for tx, r in log.items() if r.decision == "review")
        plain = sorted(tx for tx, r in log.items() if r.decision == "allow")
        altered, deleted = risky[0], plain[0]
        # (USING TIMESTAMP: the workers' rows carry fencing timestamps above the wall clock, so a
        # plain UPDATE or DELETE would not even take effect)
        session.execute(
            f"UPDATE fraud_transactions USING TIMESTAMP {LATER} SET decision = 'allow' "
            "WHERE pipeline_version = %s AND transaction_id = %s",
            (version, altered),
        )
        session.execute(
            f"DELETE FROM fraud_transactions USING TIMESTAMP {LATER} "
            "WHERE pipeline_version = %s AND transaction_id = %s",
            (version, deleted),
        )
        session.execute(
            "INSERT INTO fraud_transactions (pipeline_version, transaction_id, customer_id, ts, "
            "source_partition, source_offset, score, decision, holdout, reasons, model_version) "
            "VALUES (%s, 'forged-1', 'cust-000001', %s, 1, 999999, 0.01, 'allow', false, [], 'fraud-lr-v2') "
            f"USING TIMESTAMP {LATER}",
            (version, START + DAY),
        )
    finally:
        cluster.shutdown()

    code, found = audit(settings)
    assert code == 1
    named = {(f["kind"], f["table"], f["transaction_id"]) for f in found["findings"]}
    assert named == {
        ("altered", "fraud_transactions", altered),
        ("deleted", "fraud_transactions", deleted),
        ("inserted", "fraud_transactions", "forged-1"),
    }
    by_id = {f["transaction_id"]: f for f in found["findings"]}
    for tx_id in (altered, deleted):  # coordinates: where the log has the decision
        entry = log[tx_id]
        got = by_id[tx_id]
        assert (got["source_partition"], got["seq"], got["source_offset"]) == (
            entry.source_partition, entry.seq, entry.source_offset,
        )  # fmt: skip
    assert by_id[altered]["detail"] == "differs from the log in decision"
    assert (by_id["forged-1"]["source_partition"], by_id["forged-1"]["source_offset"]) == (1, 999999)

    # The log itself: one entry deleted, one altered (not the last: a partition's head stays).
    cluster, session = connect(settings.cassandra, keyspace=keyspace)
    try:
        entries = sorted(log.values(), key=lambda r: (r.source_partition, r.seq))
        gone, changed = entries[3], entries[4]
        assert gone.source_partition == changed.source_partition == 0
        session.execute(
            f"DELETE FROM fraud_decision_log USING TIMESTAMP {LATER} WHERE pipeline_version = %s "
            "AND source_partition = 0 AND bucket = 0 AND seq = %s",
            (version, gone.seq),
        )
        session.execute(
            f"UPDATE fraud_decision_log USING TIMESTAMP {LATER} SET score = 0.5 WHERE pipeline_version = %s "
            "AND source_partition = 0 AND bucket = 0 AND seq = %s",
            (version, changed.seq),
        )
    finally:
        cluster.shutdown()
    code, found = audit(settings)
    assert code == 1
    in_log = {(f["kind"], f["seq"]) for f in found["findings"] if f["table"] == "fraud_decision_log"}
    assert in_log == {("deleted", gone.seq), ("altered", changed.seq)}
    # their decision rows no longer have an intact log entry: named too, as inserted
    rows = {(f["kind"], f["transaction_id"]) for f in found["findings"] if f["table"] != "fraud_decision_log"}
    assert ("inserted", gone.transaction_id) in rows and ("inserted", changed.transaction_id) in rows
