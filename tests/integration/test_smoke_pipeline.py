"""Kafka -> Faust worker -> Cassandra, end to end on the real services, checked against the input."""

from __future__ import annotations

import base64
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer

from streams.io.cassandra import connect, read_smoke_events
from streams.settings import Settings
from streams.smoke import logic as smoke
from tests.integration.kafka_records import produce_located
from tests.support import metric, running_worker, scrape, wait_until

pytestmark = pytest.mark.integration

N_EVENTS = 3000
BAD_EVERY = 500  # 6 malformed or schema-violating messages


def read_all(
    settings: Settings, topic: str, expected: int, timeout_s: float = 30
) -> list[tuple[bytes, bytes]]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    records: list[tuple[bytes, bytes]] = []
    try:
        wait_until(
            lambda: (
                records.extend(
                    (m.key(), m.value()) for m in consumer.consume(500, timeout=1) if m.error() is None
                )
                or len(records) >= expected
            ),
            timeout_s,
            f"{expected} records on {topic}",
            interval_s=0,
        )
    finally:
        consumer.close()
    return records


def prometheus_value(settings: Settings, name: str, topic: str) -> float | None:
    """The local Prometheus' current value of ``name{topic=...}`` (None before the first scrape)."""
    query = urllib.parse.quote(f'sum({name}{{topic="{topic}"}})')
    url = f"http://127.0.0.1:{settings.runtime.prometheus_port}/api/v1/query?query={query}"
    with urllib.request.urlopen(url, timeout=5) as response:
        result = orjson.loads(response.read())["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_exactly_the_produced_events_arrive_and_bad_ones_are_dead_lettered(
    isolated: Settings, tmp_path: Path
) -> None:
    run_id = f"it-{uuid.uuid4().hex[:8]}"
    messages = list(smoke.smoke_events(run_id, N_EVENTS, start_ms=1_700_000_000_000, bad_every=BAD_EVERY))
    valid_ids = {orjson.loads(v)["event_id"] for k, v in messages if k != b"bad"}
    bad_values = [v for k, v in messages if k == b"bad"]
    assert len(valid_ids) == N_EVENTS and len(bad_values) == N_EVENTS // BAD_EVERY

    where = produce_located(isolated.kafka, isolated.topics.smoke, messages)
    bad_at = {where[i]: value for i, (key, value) in enumerate(messages) if key == b"bad"}
    assert len(bad_at) == len(bad_values)

    cluster, session = connect(isolated.cassandra)
    try:
        with running_worker(isolated, tmp_path):
            rows = wait_until(
                lambda: (
                    (
                        r := read_smoke_events(
                            session, isolated.cassandra.keyspace, isolated.worker.pipeline_version, run_id
                        )
                    )
                    and len(r) >= N_EVENTS
                    and r
                ),
                120,
                f"{N_EVENTS} rows in Cassandra",
            )
            letters = read_all(isolated, isolated.topics.dead_letters, len(bad_values))
            metrics = wait_until(
                lambda: (
                    (t := scrape(isolated))
                    and metric(t, "streams_events_consumed_total") == len(messages)
                    and t
                ),
                30,
                "the consumed counter to reach the produced count",
            )
            prometheus_saw = wait_until(
                lambda: (
                    (v := prometheus_value(isolated, "streams_events_processed_total", isolated.topics.smoke))
                    == N_EVENTS
                    and [v]
                ),
                60,
                "Prometheus to scrape the worker",
                interval_s=1,
            )
        final_rows = read_smoke_events(
            session, isolated.cassandra.keyspace, isolated.worker.pipeline_version, run_id
        )
    finally:
        cluster.shutdown()

    # Exactly the produced ids: none missing, none extra, none twice.
    ids = [row["event_id"] for row in final_rows]
    assert len(ids) == len(set(ids)) == N_EVENTS
    assert set(ids) == valid_ids
    assert {row["pipeline_version"] for row in rows} == {isolated.worker.pipeline_version}

    # Every bad message is in the dead-letter topic with its exact bytes, reason and coordinates.
    records = [orjson.loads(value) for _, value in letters]
    assert len(records) == len(bad_at)
    assert {(r["partition"], r["offset"]): base64.b64decode(r["raw_base64"]) for r in records} == bad_at
    assert {r["topic"] for r in records} == {isolated.topics.smoke}
    assert {r["reason_kind"] for r in records} == {"malformed_json", "schema_violation"}
    assert any("event_id" in r["reason"] for r in records)

    # The worker's metrics agree with the oracle, follow Prometheus conventions, and the real
    # Prometheus scraped them (the worker registered itself by file-based discovery).
    topic = isolated.topics.smoke
    assert metric(metrics, "streams_events_processed_total", topic=topic) == N_EVENTS
    assert metric(metrics, "streams_events_dead_lettered_total", topic=topic) == len(bad_values)
    promtool = subprocess.run(
        ["promtool", "check", "metrics"], input=metrics.encode(), capture_output=True, check=False
    )
    assert promtool.returncode == 0 and not promtool.stdout.strip(), promtool.stdout + promtool.stderr
    assert prometheus_saw[0] == N_EVENTS
