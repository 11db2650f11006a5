"""Kappa reprocessing end to end: a live version serves while the same version is replayed from
the beginning (``verify`` shows no difference), a changed version is replayed, caught up, checked
against the oracle and promoted, and the old versions are retired without a trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from streams.fraud.generator import TransactionGenerator, TransactionProfile
from streams.fraud.synthetic import load_ip_prefixes
from streams.io.cassandra import connect
from streams.io.kafka import existing_topics, high_watermarks
from streams.io.version_store import read_version, scan_version_rows, serving_version, versioned_tables
from streams.produce import produce
from streams.settings import Settings
from streams.versions import names_of
from tests.integration.ctr_oracle import SEC, START, assert_rows_match_oracle, oracle
from tests.integration.faults import produce_clickstream
from tests.integration.fraud_oracle import DAY, Scored, fraud_oracle, oracle_valid_transaction
from tests.integration.kafka_records import read_partitions, read_since
from tests.support import running_worker, settings_env, wait_until

pytestmark = pytest.mark.integration
PIPELINES = ("ctr", "fraud")


def with_version(settings: Settings, version: str, **ctr: str) -> Settings:
    worker = settings.worker.model_copy(update={"pipeline_version": version})
    return settings.model_copy(update={"worker": worker, "ctr": settings.ctr.model_copy(update=ctr)})


def streams_cli(settings: Settings, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env={**os.environ, **settings_env(settings)},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def committed_everything(settings: Settings, version: str, topics: tuple[str, ...]) -> bool:
    from streams.io.kafka import committed_offsets

    names = names_of(settings, version, PIPELINES)
    return all(
        committed_offsets(settings.kafka, names.group_of(topic), topic, ends) == ends
        for topic in topics
        if (ends := high_watermarks(settings.kafka, topic))
    )


def transactions(settings: Settings, count: int, seed: int) -> list[tuple[bytes, bytes]]:
    generator = TransactionGenerator(
        TransactionProfile(customers=200, mean_gap_ms=5 * DAY / count), seed=seed, start_ms=START,
        ip_prefixes=load_ip_prefixes(settings.fraud.ip_countries_file),
    )  # fmt: skip
    return generator.scenario(count).transactions


def streams_background(settings: Settings, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "streams", *args],
        env={**os.environ, **settings_env(settings)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def replay_committed(settings: Settings, version: str, topics: tuple[str, ...]) -> bool:
    """Whether the version's groups have committed progress on ``topics`` (an offset past 0: a
    replay from the beginning sets its groups at 0 before it starts)."""
    from streams.io.kafka import committed_offsets

    names = names_of(settings, version, PIPELINES)
    return any(
        committed_offsets(
            settings.kafka, names.group_of(topic), topic, high_watermarks(settings.kafka, topic)
        )
        for topic in topics
    )


def fraud_rows(settings: Settings, version: str) -> dict[str, dict[str, Any]]:
    """transaction id -> the version's `fraud_transactions` row (without the version)."""
    cluster, session = connect(settings.cassandra)
    try:
        rows = scan_version_rows(session, settings.cassandra.keyspace, "fraud_transactions", version)
        return {r["transaction_id"]: {k: v for k, v in r.items() if k != "pipeline_version"} for r in rows}
    finally:
        cluster.shutdown()


def assert_fraud_as_oracle(rows: dict[str, dict[str, Any]], expected: dict[str, Scored]) -> None:
    assert rows.keys() == expected.keys()
    for tx_id, want in expected.items():
        got = rows[tx_id]
        assert got["score"] == pytest.approx(want.score, abs=1e-9), tx_id
        assert (got["decision"], got["holdout"], got["is_fraud"]) == (
            want.decision,
            want.holdout,
            want.is_fraud,
        )
        assert list(got["features"]) == pytest.approx(want.features, abs=1e-9), tx_id


def version_rows(settings: Settings, version: str) -> dict[str, int]:
    cluster, session = connect(settings.cassandra)
    try:
        keyspace = settings.cassandra.keyspace
        return {
            table: sum(1 for _ in scan_version_rows(session, keyspace, table, version))
            for table in versioned_tables(session, keyspace)
        }
    finally:
        cluster.shutdown()


def is_json(raw: bytes) -> bool:
    try:
        return isinstance(orjson.loads(raw), dict) and "transaction_id" in orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False


def query_json(settings: Settings, *args: str) -> Any:
    span = ("--from", str(START), "--to", str(START + 3_600_000))
    result = streams_cli(settings, "query", *args, *span, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_replay_verify_promote_retire(ctr_settings: Settings, tmp_path: Path) -> None:
    base = ctr_settings.model_copy(
        update={"worker": ctr_settings.worker.model_copy(update={"pipelines": PIPELINES})}
    )
    v1, v1b, v2 = (
        with_version(base, "v1"),
        with_version(base, "v1b"),
        with_version(base, "v2", tumbling="20s"),
    )
    t = base.topics
    sources = (t.ad_events, t.transactions)
    txs = transactions(base, 3000, seed=5)
    started = time.monotonic()

    try:
        with running_worker(v1, tmp_path):
            # First half of the traffic, processed live by v1 (which becomes the serving version).
            produce_clickstream(base, seed=41, impressions=6000)
            assert produce(base.kafka, t.transactions, txs[:1500]).failed == 0
            wait_until(lambda: committed_everything(base, "v1", sources), 180, "v1 to catch up")
            time.sleep(0.05)
            second_half_ms = int(time.time() * 1000)  # Kafka record time of the live traffic below

            # Second half arrives live while v1b (same code and pins) replays from the beginning:
            # paced so that it lasts well past the replay's start (about 35 s: a worker starting on a
            # busy machine takes 10-20 s).
            def live_traffic() -> None:
                produce_clickstream(base, seed=42, impressions=6000, start_ms=START + 60 * SEC, rate=400)
                assert produce(base.kafka, t.transactions, txs[1500:], rate=100).failed == 0

            with ThreadPoolExecutor(1) as pool:
                live = pool.submit(live_traffic)
                replay = streams_background(
                    v1b, "replay", "--version", "v1b", "--from-beginning", "--caught-up-lag", "0"
                )
                # Overlap: the replay had committed offsets (so it ran) while the live traffic went on.
                wait_until(
                    lambda: replay_committed(base, "v1b", sources) or live.done(), 180, "the replay to start"
                )
                assert not live.done(), "the live traffic was over before the replay committed anything"
                live.result()  # a failure in the producer's thread fails the test here
                try:
                    stdout, stderr = replay.communicate(timeout=300)
                finally:
                    if replay.poll() is None:
                        replay.kill()
                        replay.wait()
            assert replay.returncode == 0, stderr
            assert "has caught up" in stdout
            for version in ("v1", "v1b"):
                wait_until(
                    lambda v=version: committed_everything(base, v, sources), 180, f"{version} caught up"
                )
            replayed_s = time.monotonic() - started

            # Replay determinism: v1b's results equal v1's, row by row, in every result table.
            same = streams_cli(base, "verify", "v1", "v1b")
            assert same.returncode == 0, same.stdout + same.stderr
            assert "no differences" in same.stdout
            partitions = read_partitions(base, t.ad_events)
            for settings in (v1, v1b):
                assert_rows_match_oracle(settings, oracle(partitions))
            # Fraud: v1b's rows equal v1's, column by column, and both equal the independent oracle.
            expected = fraud_oracle(
                base, read_partitions(base, t.transactions), read_partitions(base, t.labels)
            )
            live_rows = fraud_rows(base, "v1")
            assert fraud_rows(base, "v1b") == live_rows
            assert_fraud_as_oracle(live_rows, expected)

            # A changed version (20 s tumbling windows) replays while v1 keeps serving.
            ad = next(iter(oracle(partitions)["partition_of_ad"]))
            assert {r["window"] for r in query_json(base, "ctr", "--ad", ad, "--window", "10s")} == {"10s"}
            changed = streams_cli(v2, "replay", "--version", "v2", "--workers", "2", "--caught-up-lag", "0")
            assert changed.returncode == 0, changed.stderr
            wait_until(lambda: committed_everything(base, "v2", sources), 180, "v2 caught up")
            assert_rows_match_oracle(
                v2, oracle(read_partitions(base, t.ad_events), tumbling=("20s", 20 * SEC))
            )
            differs = streams_cli(base, "verify", "v1", "v2", "--tables", "ctr_ad_windows")
            assert differs.returncode == 1 and "rows differ" in differs.stdout, (
                differs.stdout + differs.stderr
            )

            # --from T: a version that starts at the first record written at or after T.
            v3 = with_version(base, "v3").model_copy(
                update={
                    "worker": base.worker.model_copy(
                        update={"pipeline_version": "v3", "pipelines": ("fraud",)}
                    )
                }
            )
            late = streams_cli(
                v3, "replay", "--version", "v3", "--from", str(second_half_ms), "--caught-up-lag", "0"
            )
            assert late.returncode == 0, late.stderr
            # v3 writes rows for the transactions from T on; its state was rebuilt from the log
            # before T (never written), so each row equals the whole log's oracle.
            late_ids = {orjson.loads(raw)["transaction_id"] for _, raw in txs[1500:] if is_json(raw)}
            from_t = {
                tx["transaction_id"]
                for records in read_since(base, t.transactions, second_half_ms).values()
                for _, raw in records
                if (tx := oracle_valid_transaction(raw))
            }
            assert from_t == expected.keys() & late_ids and from_t
            assert_fraud_as_oracle(fraud_rows(base, "v3"), {k: expected[k] for k in from_t})
            # The decision logs: v1b's chains equal v1's (`verify` above); v3's start at T and are
            # checked from their first entry on. Every chain verifies against its published head.
            for version in ("v1", "v1b", "v3"):
                audited = streams_cli(base, "audit", "verify", "--version", version, "--json")
                assert audited.returncode == 0, audited.stdout + audited.stderr
                report = json.loads(audited.stdout)
                assert report["findings"] == [] and report["published_heads"] == report["partitions"]

            # A version pinned to other settings cannot be restarted with the new ones.
            clash = streams_cli(with_version(v2, "v1"), "replay", "--version", "v1", "--no-wait")
            assert clash.returncode == 1 and "pinned to other settings" in clash.stderr, clash.stderr

            # Promote switches every reader at once; the serving version cannot be retired.
            assert streams_cli(base, "promote", "v2").returncode == 0
            cluster, session = connect(base.cassandra)
            try:
                assert serving_version(session, base.cassandra.keyspace) == "v2"
            finally:
                cluster.shutdown()
            windows = query_json(base, "ctr", "--ad", ad, "--window", "20s")
            assert windows and {r["pipeline_version"] for r in windows} == {"v2"}
            assert streams_cli(base, "query", "ctr", "--ad", ad, "--window", "10s").returncode == 1
            refused = streams_cli(base, "retire", "v2", "--yes")
            assert refused.returncode == 1 and "is serving" in refused.stderr
            listing = json.loads(streams_cli(base, "versions", "--json").stdout)
            assert {(r["version"], r["serving"]) for r in listing} == {
                ("v1", False),
                ("v1b", False),
                ("v2", True),
                ("v3", False),
            }

        # Retire v1 (its worker has stopped) and v1b (retire stops its background workers).
        for version in ("v1", "v1b"):
            before = version_rows(base, version)
            assert before["ctr_ad_windows"] > 0
            retired = streams_cli(base, "retire", version, "--yes")
            assert retired.returncode == 0, retired.stdout + retired.stderr
            assert_no_trace(base, version)
        again = streams_cli(v1, "replay", "--version", "v1", "--no-wait")
        assert again.returncode == 1 and "retired" in again.stderr
        print(
            f"\nreplay: {sum(len(m) for m in partitions.values())} ad events + {len(txs)} transactions; "
            f"live v1 and replayed v1b caught up after {replayed_s:.0f}s; "
            f"whole test {time.monotonic() - started:.0f}s"
        )
    finally:
        for version in ("v1b", "v2", "v3"):
            from streams.lifecycle import local_workers

            for worker in local_workers(with_version(base, version), version):
                worker.stop()
        from streams.io.kafka import delete_topics

        for version in ("v2", "v3"):
            names = names_of(base, version, PIPELINES)
            delete_topics(base.kafka, [n for n in names.result_topics if n in existing_topics(base.kafka)])


def assert_no_trace(settings: Settings, version: str) -> None:
    """No result rows, topics, consumer group or running worker is left; the registry says retired."""
    assert set(version_rows(settings, version).values()) == {0}
    names = names_of(settings, version, PIPELINES)
    topics = existing_topics(settings.kafka)
    assert not [t for t in topics if t in names.result_topics or t.startswith(f"{names.group_id}-")]
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    groups = admin.list_consumer_groups().result(timeout=10).valid
    assert not set(names.groups) & {g.group_id for g in groups}
    cluster, session = connect(settings.cassandra)
    try:
        record = read_version(session, settings.cassandra.keyspace, version)
        assert record is not None and record.state == "retired" and record.retired_at is not None
    finally:
        cluster.shutdown()
