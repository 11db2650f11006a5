"""Kafka as the integration tests' oracles see it: a topic read back whole (each partition in
offset order, as a worker sees it), and messages produced with where each one landed."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

from confluent_kafka import Consumer, TopicPartition

from streams.io.kafka import client_config
from streams.produce import produce_each
from streams.settings import KafkaSettings, Settings

# Room for the biggest messages of the hostile corpus (about 900 kB, and dead letters as big).
LARGE_FETCH = {
    "fetch.max.bytes": 64 * 1024 * 1024,
    "max.partition.fetch.bytes": 16 * 1024 * 1024,
    "receive.message.max.bytes": 100 * 1024 * 1024,
}

Located = tuple[int, int]  # (partition, offset)


def read_records(settings: Settings, topic: str) -> dict[int, list[tuple[int, bytes | None, bytes | None]]]:
    """Every message of ``topic`` per partition, in offset order: (offset, key, value)."""
    return {p: [(o, k, v) for o, k, v, _ in records] for p, records in read_timed(settings, topic).items()}


def read_timed(
    settings: Settings, topic: str
) -> dict[int, list[tuple[int, bytes | None, bytes | None, int]]]:
    """Every message of ``topic`` per partition, in offset order: (offset, key, value, Kafka time)."""
    consumer = Consumer(
        {**client_config(settings.kafka), "group.id": f"oracle-{uuid.uuid4().hex}", **LARGE_FETCH}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        result: dict[int, list[tuple[int, bytes | None, bytes | None, int]]] = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            consumer.assign([TopicPartition(topic, p, low)])
            messages: list[tuple[int, bytes | None, bytes | None, int]] = []
            while len(messages) < high - low:
                for m in consumer.consume(1000, timeout=2):
                    assert m.error() is None, m.error()
                    messages.append((m.offset() or 0, m.key(), m.value(), m.timestamp()[1]))
            result[p] = messages
        return result
    finally:
        consumer.close()


def read_partitions(settings: Settings, topic: str) -> dict[int, list[tuple[int, bytes | None]]]:
    """Every message of ``topic``, per partition, in offset order: (offset, value)."""
    return {
        p: [(offset, value) for offset, _, value in records]
        for p, records in read_records(settings, topic).items()
    }


def read_since(settings: Settings, topic: str, since_ms: int) -> dict[int, list[tuple[int, bytes | None]]]:
    """The messages of ``topic`` from the first one per partition whose Kafka time is at or after
    ``since_ms`` on, per partition, in offset order: (offset, value)."""
    result = {}
    for p, records in read_timed(settings, topic).items():
        start = next((i for i, (*_, time_ms) in enumerate(records) if time_ms >= since_ms), len(records))
        result[p] = [(offset, value) for offset, _, value, _ in records[start:]]
    return result


def produce_located(
    kafka: KafkaSettings,
    topic: str,
    messages: Sequence[tuple[bytes | None, bytes | None]],
    overrides: Mapping[str, str | int | float | bool] | None = None,
) -> list[Located]:
    """Send (key, value) pairs and return where each one landed; every one must be acknowledged."""
    outcomes = produce_each(kafka, topic, messages, overrides=overrides)
    refused = [(index, o.error) for index, o in enumerate(outcomes) if o.error is not None]
    assert not refused, f"Kafka refused {len(refused)} messages, first {refused[0]}"
    return [(o.partition or 0, o.offset or 0) for o in outcomes]
