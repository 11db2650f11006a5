"""Rolling CTR end to end on the real Kafka and Cassandra, checked against an independent oracle.

The oracle reads the raw topic back (each partition in offset order, as the worker sees it) and
recomputes everything with plain code of its own: validity, duplicates, lateness, window counts,
final flags. Every (ad, window) row in Cassandra must match it exactly.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from streams.ctr.generator import ClickstreamGenerator, ClickstreamProfile
from streams.io.cassandra import connect
from streams.produce import produce
from streams.settings import CtrSettings, Settings
from streams.versions import result_topic
from tests.integration.test_smoke_pipeline import metric, scrape
from tests.support import running_worker, wait_until

pytestmark = pytest.mark.integration

SEC = 1000
TUMBLING, HOPPING, HOP, GRACE, HORIZON = 10 * SEC, 60 * SEC, 10 * SEC, 5 * SEC, 60 * SEC
START = 1_700_000_000_000 - 1_700_000_000_000 % (60 * SEC)
PROFILE = ClickstreamProfile(
    campaigns=6,
    ads=60,
    mean_ctr=0.02,  # denser than real traffic so that every window kind sees clicks in a short run
    click_delay_ms=(200, 4000),
    out_of_order_share=0.03,
    max_disorder_ms=8 * SEC,  # beyond the 5 s grace: some out-of-order events are late, some not
    late_share=0.01,
    late_by_ms=30 * SEC,
    duplicate_share=0.01,
    malformed_share=0.005,
)
IMPRESSIONS = 24_000  # at 100/s of event time: 4 minutes, so most windows close


def read_partitions(settings: Settings, topic: str) -> dict[int, list[tuple[int, bytes | None]]]:
    """Every message of ``topic``, per partition, in offset order."""
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap, "group.id": f"oracle-{uuid.uuid4().hex}"}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        result: dict[int, list[tuple[int, bytes | None]]] = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            consumer.assign([TopicPartition(topic, p, low)])
            messages: list[tuple[int, bytes | None]] = []
            while len(messages) < high - low:
                for m in consumer.consume(1000, timeout=2):
                    assert m.error() is None, m.error()
                    messages.append((m.offset(), m.value()))
            result[p] = messages
        return result
    finally:
        consumer.close()


def oracle_valid(raw: bytes | None) -> dict[str, Any] | str:
    """Plain re-statement of the event contract: the event, or the kind of rejection."""
    try:
        event = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return "malformed_json"
    if not isinstance(event, dict):
        return "schema_violation"
    text = ("event_id", "ad_id", "campaign_id", "user_id", "segment")
    if any(not isinstance(event.get(f), str) or not event.get(f) for f in text):
        return "schema_violation"
    ts = event.get("ts")
    if isinstance(ts, float) and ts.is_integer():  # JSON Schema: 1.0 is an integer
        ts = event["ts"] = int(ts)
    if event.get("type") not in ("impression", "click") or type(ts) is not int:
        return "schema_violation"
    if not 946_684_800_000 <= ts <= 4_102_444_800_000:
        return "schema_violation"
    if event["type"] == "click" and not event.get("impression_id"):
        return "schema_violation"
    return event


def oracle(
    partitions: dict[int, list[tuple[int, bytes | None]]],
    tumbling: tuple[str, int] = ("10s", TUMBLING),
    grace: int = GRACE,
) -> dict[str, Any]:
    ads: Counter[tuple[str, str, int, str]] = Counter()  # (window, ad, start, kind)
    campaigns: Counter[tuple[str, str, int, str]] = Counter()
    cells: Counter[tuple[str, str, str, int, str]] = Counter()
    rejected: Counter[str] = Counter()
    duplicates = 0
    watermark_of: dict[int, int] = {}
    partition_of_ad: dict[str, int] = {}
    for partition, messages in partitions.items():
        seen: dict[str, int] = {}
        watermark: int | None = None
        for _, raw in messages:
            event = oracle_valid(raw)
            if isinstance(event, str):
                rejected[event] += 1
                continue
            ts, kind = event["ts"], event["type"]
            if event["event_id"] in seen and seen[event["event_id"]] >= (watermark or 0) - HORIZON:
                duplicates += 1
                continue
            if watermark is not None and ts < watermark - grace:
                rejected["late_event"] += 1
                continue
            seen[event["event_id"]] = ts
            watermark = ts if watermark is None else max(watermark, ts)
            partition_of_ad[event["ad_id"]] = partition
            for name, size, step in ((tumbling[0], tumbling[1], tumbling[1]), ("1m", HOPPING, HOP)):
                start = ts - ts % step
                while start > ts - size:
                    ads[(name, event["ad_id"], start, kind)] += 1
                    campaigns[(name, event["campaign_id"], start, kind)] += 1
                    if name == "1m":
                        cells[(name, event["segment"], event["ad_id"], start, kind)] += 1
                    start -= step
        if watermark is not None:
            watermark_of[partition] = watermark
    return {
        "ads": ads,
        "campaigns": campaigns,
        "cells": cells,
        "rejected": rejected,
        "duplicates": duplicates,
        "watermark_of": watermark_of,
        "partition_of_ad": partition_of_ad,
        "grace": grace,
    }


def as_counts(counter: Counter[Any]) -> dict[tuple[Any, ...], tuple[int, int]]:
    out: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0])
    for (*key, kind), n in counter.items():
        out[tuple(key)][0 if kind == "impression" else 1] += n
    return {k: (v[0], v[1]) for k, v in out.items()}


def assert_rows_match_oracle(settings: Settings, expected: dict[str, Any]) -> list[Any]:
    """Every ad, campaign (summed over partitions) and cell row equals the oracle; final flags too."""
    version = settings.worker.pipeline_version
    cluster, session = connect(settings.cassandra, keyspace=settings.cassandra.keyspace)
    try:
        ad_rows, campaign_rows, cell_rows = (
            [r for r in session.execute(f"SELECT * FROM {table}") if r.pipeline_version == version]
            for table in ("ctr_ad_windows", "ctr_campaign_windows", "ctr_segment_cells")
        )
    finally:
        cluster.shutdown()

    # Identical impressions and clicks for every (ad, window), campaign (summed over partitions) and cell.
    assert {(r.window, r.ad_id, r.window_start): (r.impressions, r.clicks) for r in ad_rows} == as_counts(
        expected["ads"]
    )
    campaign_sums: dict[tuple[str, str, int], list[int]] = defaultdict(lambda: [0, 0])
    for r in campaign_rows:
        campaign_sums[(r.window, r.campaign_id, r.window_start)][0] += r.impressions
        campaign_sums[(r.window, r.campaign_id, r.window_start)][1] += r.clicks
    assert {k: tuple(v) for k, v in campaign_sums.items()} == as_counts(expected["campaigns"])
    assert {
        (r.window, r.segment, r.ad_id, r.window_start): (r.impressions, r.clicks) for r in cell_rows
    } == as_counts(expected["cells"])

    # Final exactly when the partition's watermark passed end + grace; smoothing fields present.
    for r in ad_rows:
        watermark = expected["watermark_of"][expected["partition_of_ad"][r.ad_id]]
        assert r.final == (r.window_end + expected["grace"] <= watermark), (r.window, r.ad_id, r.window_start)
        assert r.ci_low <= r.smoothed_ctr <= r.ci_high
        assert r.pipeline_version == settings.worker.pipeline_version and r.prior_version
    return ad_rows


@pytest.fixture
def ctr_settings(isolated: Settings) -> Settings:
    """Short windows (10 s tumbling, 1 min hopping every 10 s, 5 s grace) so a short run closes many."""
    windows = CtrSettings(tumbling="10s", hopping="1m", hop_every="10s", grace="5s", dedupe_horizon="1m")
    return isolated.model_copy(update={"ctr": windows})


def test_every_window_row_matches_the_oracle(ctr_settings: Settings, tmp_path: Path) -> None:
    settings = ctr_settings
    generator = ClickstreamGenerator(PROFILE, seed=11, start_ms=START, rate=100)
    messages = list(generator.messages(IMPRESSIONS))
    report = produce(settings.kafka, settings.topics.ad_events, messages)
    assert report.failed == 0

    with running_worker(settings, tmp_path):
        wait_until(
            lambda: (
                metric(scrape(settings), "streams_events_consumed_total", topic=settings.topics.ad_events)
                == len(messages)
            ),
            240,
            "the worker to consume every message",
            interval_s=1,
        )
        final_metrics = scrape(settings)

    expected = oracle(read_partitions(settings, settings.topics.ad_events))
    assert expected["rejected"]["late_event"] > 0 and expected["duplicates"] > 0  # the scenario has dirt
    assert expected["rejected"]["malformed_json"] > 0 and expected["rejected"]["schema_violation"] > 0

    ad_rows = assert_rows_match_oracle(settings, expected)
    assert any(r.final for r in ad_rows) and any(not r.final for r in ad_rows)

    # Identical dead-letter, late and duplicate counts.
    topic = settings.topics.ad_events
    for kind in ("malformed_json", "schema_violation", "late_event"):
        assert (
            metric(final_metrics, "streams_events_dead_lettered_total", topic=topic, reason=kind)
            == (expected["rejected"][kind])
        ), kind
    assert (
        metric(final_metrics, "streams_events_late_total", topic=topic) == expected["rejected"]["late_event"]
    )
    assert metric(final_metrics, "streams_events_duplicate_total", topic=topic) == expected["duplicates"]
    letters = Counter(
        orjson.loads(raw)["reason_kind"]
        for messages_ in read_partitions(settings, settings.topics.dead_letters).values()
        for _, raw in messages_
    )
    assert letters == +expected["rejected"]

    # The result topic carries the same rows (latest record per natural key).
    latest: dict[tuple[str, str, int], tuple[int, int]] = {}
    for messages_ in read_partitions(
        settings, result_topic(settings.topics.ctr_results, settings.worker.pipeline_version)
    ).values():
        for _, raw in messages_:
            record = orjson.loads(raw)
            if record["kind"] == "ad":
                key = (record["window"], record["ad_id"], record["window_start"])
                latest[key] = (record["impressions"], record["clicks"])
    assert latest == as_counts(expected["ads"])
