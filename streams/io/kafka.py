"""Kafka admin and producer helpers (confluent-kafka). The only module that imports it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.errors import RuntimeServiceError, SinkError
from streams.netcheck import port_open
from streams.settings import KafkaSettings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


ClientConfig = dict[str, str | int | float | bool]


def client_config(kafka: KafkaSettings) -> ClientConfig:
    # log_level 3: librdkafka's own notices (e.g. on client close) stay out of the CLI output.
    return {"bootstrap.servers": kafka.bootstrap, "log_level": 3}


def broker_ready(kafka: KafkaSettings, timeout_s: float = 2.0) -> bool:
    """True when the cluster answers a metadata request with at least one broker."""
    host, _, port = kafka.bootstrap.split(",")[0].rpartition(":")
    if not port_open(host or "127.0.0.1", int(port)):
        return False
    admin = AdminClient({**client_config(kafka), "socket.timeout.ms": int(timeout_s * 1000)})
    try:
        return bool(admin.list_topics(timeout=timeout_s).brokers)
    except KafkaException:
        return False


def ensure_topics(kafka: KafkaSettings, topics: Iterable[TopicSpec]) -> list[str]:
    """Create missing topics (idempotent); returns the names created."""
    admin = AdminClient(client_config(kafka))
    wanted = list(topics)
    existing = set(admin.list_topics(timeout=10).topics)
    new = [
        NewTopic(t.name, t.partitions, kafka.replication_factor, config=t.config)
        for t in wanted
        if t.name not in existing
    ]
    if not new:
        return []
    created = []
    for name, future in admin.create_topics(new, operation_timeout=30).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise RuntimeServiceError(f"cannot create topic {name}: {exc.args[0].str()}") from exc
    return created


def delete_topics(kafka: KafkaSettings, names: Iterable[str]) -> None:
    admin = AdminClient(client_config(kafka))
    futures = admin.delete_topics(list(names), operation_timeout=30)
    for future in futures.values():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise


def make_producer(kafka: KafkaSettings, **overrides: str | int | float | bool) -> Producer:
    """An idempotent producer: retries never duplicate or reorder within a partition."""
    config: ClientConfig = {
        **client_config(kafka),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        # The Java clients' partitioner, so that topics keyed alike are co-partitioned with
        # what Java services produce (kcat: -X topic.partitioner=murmur2_random).
        "partitioner": "murmur2_random",
        **overrides,
    }
    return Producer(config)


class RecordOutput:
    """JSON records to a topic through one shared idempotent producer; `send` returns once Kafka
    has acknowledged every record (librdkafka batches them; flushing runs off the event loop)."""

    def __init__(self, producer: Producer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    async def send(self, records: Sequence[tuple[bytes, Mapping[str, Any]]]) -> None:
        if not records:
            return
        failures: list[KafkaError] = []

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                failures.append(error)

        for key, value in records:
            while True:
                try:
                    self.producer.produce(self.topic, orjson.dumps(value), key, on_delivery=delivered)
                    break
                except BufferError:  # local queue full: let it drain
                    await asyncio.to_thread(self.producer.poll, 0.1)
        remaining = await asyncio.to_thread(self.producer.flush, 60)
        if failures or remaining:
            reason = failures[0].str() if failures else f"{remaining} records not acknowledged in time"
            raise SinkError(f"cannot publish to {self.topic}: {reason}")


def partition_history(
    kafka: KafkaSettings, topic: str, partition: int, end_offset: int
) -> list[tuple[bytes | None, int, int | None, bytes | None]]:
    """Every message of ``topic[partition]`` before ``end_offset``, in order:
    (value, offset, timestamp ms, key). Used to rebuild state from the log."""
    consumer = Consumer(
        {**client_config(kafka), "group.id": "streams-state-rebuild", "enable.auto.commit": False,
         "enable.partition.eof": True, "fetch.max.bytes": 16 * 1024 * 1024}
    )  # fmt: skip
    try:
        low, _ = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        if end_offset <= low:
            return []
        consumer.assign([TopicPartition(topic, partition, low)])
        messages: list[tuple[bytes | None, int, int | None, bytes | None]] = []
        while not messages or messages[-1][1] < end_offset - 1:
            for message in consumer.consume(5000, timeout=5):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        return messages
                    raise RuntimeServiceError(f"cannot read {topic}[{partition}]: {error.str()}")
                offset = message.offset() or 0
                if offset >= end_offset:
                    return messages
                timestamp = message.timestamp()[1] if message.timestamp()[0] else None
                messages.append((message.value(), offset, timestamp, message.key()))
        return messages
    finally:
        consumer.close()


def committed_offsets(
    kafka: KafkaSettings, group_id: str, topic: str, partitions: Iterable[int]
) -> dict[int, int]:
    """The group's committed offsets (partitions without one are left out)."""
    consumer = Consumer({**client_config(kafka), "group.id": group_id, "enable.auto.commit": False})
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: tp.offset for tp in found if tp.offset >= 0}
    finally:
        consumer.close()


def high_watermarks(kafka: KafkaSettings, topic: str) -> dict[int, int]:
    """partition -> the offset after its last message."""
    consumer = Consumer({**client_config(kafka), "group.id": "streams-watermarks"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions
        }
    finally:
        consumer.close()
