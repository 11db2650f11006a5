"""Oracles and Kafka/Cassandra readers shared by integration tests that must not import each other.

The CTR oracle is plain code of its own (the same rules as the README states them, not the
pipeline's): per Kafka partition in offset order, an event older than the partition's watermark
minus the grace is late, an id seen again within the dedupe horizon is a duplicate, every other
event counts in its tumbling and hopping windows (per ad, per campaign, per segment x ad cell).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from streams.io.cassandra import connect
from streams.io.kafka import client_config, make_producer
from streams.scrape import fetch_metrics
from streams.settings import CtrSettings, KafkaSettings, Settings

SEC = 1000
# Short windows so that a short run closes many: 10 s tumbling, 1 min hopping every 10 s, 5 s grace.
CTR_WINDOWS = CtrSettings(tumbling="10s", hopping="1m", hop_every="10s", grace="5s", dedupe_horizon="1m")
TUMBLING, HOPPING, HOP, GRACE, HORIZON = 10 * SEC, 60 * SEC, 10 * SEC, 5 * SEC, 60 * SEC
# Room for the biggest messages of the hostile corpus (about 900 kB, and dead letters as big).
LARGE_FETCH = {
    "fetch.max.bytes": 64 * 1024 * 1024,
    "max.partition.fetch.bytes": 16 * 1024 * 1024,
    "receive.message.max.bytes": 100 * 1024 * 1024,
}

Located = tuple[int, int]  # (partition, offset)
Window = tuple[str, str, int]  # (window name, ad or campaign, window start)
Cell = tuple[str, str, str, int]  # (window name, segment, ad, window start)


def read_partitions(
    settings: Settings, topic: str
) -> dict[int, list[tuple[int, bytes | None, bytes | None]]]:
    """Every message of ``topic`` per partition, in offset order: (offset, key, value)."""
    consumer = Consumer(
        {**client_config(settings.kafka), "group.id": f"oracle-{uuid.uuid4().hex}", **LARGE_FETCH}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        result: dict[int, list[tuple[int, bytes | None, bytes | None]]] = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            consumer.assign([TopicPartition(topic, p, low)])
            messages: list[tuple[int, bytes | None, bytes | None]] = []
            while len(messages) < high - low:
                for m in consumer.consume(1000, timeout=2):
                    assert m.error() is None, m.error()
                    messages.append((m.offset() or 0, m.key(), m.value()))
            result[p] = messages
        return result
    finally:
        consumer.close()


def produce_located(
    kafka: KafkaSettings,
    topic: str,
    messages: Sequence[tuple[bytes | None, bytes | None]],
    overrides: Mapping[str, str | int | float | bool] | None = None,
) -> list[Located]:
    """Send (key, value) pairs and return where each one landed; every one must be acknowledged."""
    producer = make_producer(kafka, **(overrides or {}))
    where: list[Located | str] = ["not acknowledged"] * len(messages)

    def delivered_to(index: int) -> Any:
        def delivered(error: KafkaError | None, message: Message) -> None:
            where[index] = error.str() if error else (message.partition() or 0, message.offset() or 0)

        return delivered

    for index, (key, value) in enumerate(messages):
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=delivered_to(index))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(120)
    refused = [(index, outcome) for index, outcome in enumerate(where) if isinstance(outcome, str)]
    assert not refused, f"Kafka refused {len(refused)} messages, first {refused[0]}"
    return [w for w in where if not isinstance(w, str)]


@dataclass
class CtrExpected:
    """What the CTR rows must hold: impressions and clicks per window, and the late events."""

    ads: dict[Window, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    campaigns: dict[Window, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    cells: dict[Cell, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    late: set[Located] = field(default_factory=set)
    duplicates: set[Located] = field(default_factory=set)

    def count(self, event: Mapping[str, Any], ts: int) -> None:
        kind = 0 if event["type"] == "impression" else 1
        for name, size, step in (("10s", TUMBLING, TUMBLING), ("1m", HOPPING, HOP)):
            start = ts - ts % step
            while start > ts - size:
                self.ads[(name, event["ad_id"], start)][kind] += 1
                self.campaigns[(name, event["campaign_id"], start)][kind] += 1
                if name == "1m":
                    self.cells[(name, event["segment"], event["ad_id"], start)][kind] += 1
                start -= step


def ctr_oracle(partitions: Mapping[int, Sequence[tuple[int, Mapping[str, Any] | None]]]) -> CtrExpected:
    """``partitions``: per partition in offset order, (offset, the valid event or None)."""
    expected = CtrExpected()
    for partition, events in partitions.items():
        seen: dict[str, int] = {}
        watermark: int | None = None
        for offset, event in events:
            if event is None:
                continue
            ts = int(event["ts"])
            event_id = event["event_id"]
            if event_id in seen and seen[event_id] >= (watermark or 0) - HORIZON:
                expected.duplicates.add((partition, offset))
                continue
            if watermark is not None and ts < watermark - GRACE:
                expected.late.add((partition, offset))
                continue
            seen[event_id] = ts
            watermark = ts if watermark is None else max(watermark, ts)
            expected.count(event, ts)
    return expected


def ctr_rows(settings: Settings) -> dict[str, dict[tuple[Any, ...], tuple[int, int]]]:
    """(impressions, clicks) of every ad, campaign (summed over partitions) and cell row."""
    version = settings.worker.pipeline_version
    cluster, session = connect(settings.cassandra, keyspace=settings.cassandra.keyspace)
    try:
        ads, campaigns, cells = (
            [r for r in session.execute(f"SELECT * FROM {table}") if r.pipeline_version == version]
            for table in ("ctr_ad_windows", "ctr_campaign_windows", "ctr_segment_cells")
        )
    finally:
        cluster.shutdown()
    campaign_sums: dict[Window, list[int]] = defaultdict(lambda: [0, 0])
    for r in campaigns:
        campaign_sums[(r.window, r.campaign_id, r.window_start)][0] += r.impressions
        campaign_sums[(r.window, r.campaign_id, r.window_start)][1] += r.clicks
    return {
        "ads": {(r.window, r.ad_id, r.window_start): (r.impressions, r.clicks) for r in ads},
        "campaigns": {key: (n[0], n[1]) for key, n in campaign_sums.items()},
        "cells": {(r.window, r.segment, r.ad_id, r.window_start): (r.impressions, r.clicks) for r in cells},
    }


def assert_ctr_rows_match(settings: Settings, expected: CtrExpected) -> None:
    rows = ctr_rows(settings)
    for name in ("ads", "campaigns", "cells"):
        want = {key: (n[0], n[1]) for key, n in getattr(expected, name).items()}
        got = rows[name]
        assert got == want, (
            f"{name}: {len(got.keys() - want.keys())} unexpected rows, {len(want.keys() - got.keys())} "
            f"missing, {sum(got[k] != want[k] for k in got.keys() & want.keys())} with other counts"
        )


def scrape(settings: Settings) -> str:
    """The worker's /metrics text ("" while it is still starting)."""
    return fetch_metrics(settings.worker.metrics_host, settings.worker.metrics_port)
