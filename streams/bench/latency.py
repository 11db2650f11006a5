"""Produce-to-result latency: from the Kafka CreateTime of an event to the moment its result is durable.

Our worker publishes every row it upserts to its result topic *after* Cassandra acknowledged it, so
the CreateTime of that record bounds the write from above. For a CTR event that is the first record
of its (ad, 1 min window) row whose count includes it: the k-th impression of a window is in the
first row record with at least k impressions (an ad's events and rows each stay in one partition,
in order). The comparison jobs time themselves: wall clock after the awaited write (or the sink's
flush) minus the event's CreateTime, on the same machine's clock.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import orjson

from streams.bench.workload import WINDOW_MS
from streams.io.kafka import high_watermarks, read_partition
from streams.settings import KafkaSettings

Latencies = list[tuple[float, float]]  # (CreateTime of the event in ms, its latency in ms)


def records(kafka: KafkaSettings, topic: str) -> Iterator[tuple[dict[str, Any], int]]:
    """Every decodable JSON record of ``topic`` with its CreateTime (ms), each partition in order."""
    for partition, end in high_watermarks(kafka, topic).items():
        for message in read_partition(kafka, topic, partition, None, end):
            kind, timestamp = message.timestamp()
            try:
                record = orjson.loads(message.value() or b"")
            except orjson.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record, timestamp if kind else 0


def percentiles(latencies: Sequence[tuple[float, float]], since_ms: float) -> dict[str, float]:
    """p50 / p99 / p99.9 (nearest rank) of the events created at or after ``since_ms``."""
    values = sorted(latency for created, latency in latencies if created >= since_ms)
    if not values:
        return {"events": 0, "p50": float("nan"), "p99": float("nan"), "p999": float("nan")}

    def rank(q: float) -> float:
        return values[min(int(q * len(values)), len(values) - 1)]

    return {"events": len(values), "p50": rank(0.5), "p99": rank(0.99), "p999": rank(0.999)}


def ctr_latencies(kafka: KafkaSettings, source: str, results: str, window: str = "1m") -> Latencies:
    """Each source event's CreateTime to the CreateTime of the first result row that counts it."""
    return match_ctr_latencies(records(kafka, source), records(kafka, results), window)


def match_ctr_latencies(
    events: Iterable[tuple[dict[str, Any], int]],
    rows: Iterable[tuple[dict[str, Any], int]],
    window: str = "1m",
) -> Latencies:
    """The pure part of `ctr_latencies`: both sides as (record, CreateTime ms), each key in log order."""
    series: dict[tuple[str, int], tuple[list[int], list[int], list[int]]] = {}
    for row, created in rows:
        if row.get("kind") == "ad" and row.get("window") == window:
            impressions, clicks, times = series.setdefault((row["ad_id"], row["window_start"]), ([], [], []))
            impressions.append(row["impressions"])
            clicks.append(row["clicks"])
            times.append(created)
    ordinals: Counter[tuple[str, int, bool]] = Counter()
    latencies: Latencies = []
    for event, created in events:
        ts: int = event["ts"]
        key, is_click = (event["ad_id"], ts - ts % WINDOW_MS), event["type"] == "click"
        ordinals[(*key, is_click)] += 1
        if key not in series:
            continue
        impressions, clicks, times = series[key]
        first = bisect_left(clicks if is_click else impressions, ordinals[(*key, is_click)])
        if first < len(times):
            latencies.append((created, times[first] - created))
    return latencies


def id_latencies(kafka: KafkaSettings, source: str, results: str, id_field: str) -> Latencies:
    """CreateTime of each source record to the CreateTime of the first result with the same id."""
    produced: dict[object, int] = {}
    for record, created in records(kafka, results):
        produced.setdefault(record.get(id_field), created)
    return [
        (created, produced[record[id_field]] - created)
        for record, created in records(kafka, source)
        if record.get(id_field) in produced
    ]
