"""Kafka admin, producer and reading helpers (confluent-kafka: only here and in `kafka_consumer.py`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from streams.engine.pipeline import route_of
from streams.errors import ConfigError, RuntimeServiceError
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
    config: ClientConfig = {"bootstrap.servers": kafka.bootstrap, "log_level": 3}
    if kafka.security_protocol != "PLAINTEXT":
        config["security.protocol"] = kafka.security_protocol
    if kafka.security_protocol.startswith("SASL"):
        assert kafka.sasl_username and kafka.sasl_password  # checked by the settings
        config |= {
            "sasl.mechanism": kafka.sasl_mechanism,
            "sasl.username": kafka.sasl_username,
            "sasl.password": kafka.sasl_password.get_secret_value(),
        }
    if kafka.ssl_ca_file is not None:
        config["ssl.ca.location"] = str(kafka.ssl_ca_file)
    return config


def check_access(kafka: KafkaSettings, timeout_s: float = 15.0) -> None:
    """Fail with one clear line if the brokers cannot be reached or refuse our credentials."""
    problems: list[KafkaError] = []
    # log_level 0: the outcome is reported below in one line, not by librdkafka's own log.
    config: dict[str, Any] = {**client_config(kafka), "error_cb": problems.append, "log_level": 0}
    admin = AdminClient(config)
    try:
        admin.list_topics(timeout=timeout_s)
        return
    except KafkaException as exc:
        admin.poll(1.0)  # serve the error callbacks that say why
        problems.append(exc.args[0])
    refused = [
        p for p in problems if p.code() == KafkaError._AUTHENTICATION or "authentication" in p.str().lower()
    ]
    if refused:
        raise ConfigError(
            f"Kafka at {kafka.bootstrap} refused the credentials of user {kafka.sasl_username!r} "
            f"({kafka.sasl_mechanism}); check STREAMS_KAFKA__SASL_USERNAME / SASL_PASSWORD"
        )
    tls = [p for p in problems if p.code() == KafkaError._SSL]
    if tls:
        raise ConfigError(f"TLS handshake with Kafka at {kafka.bootstrap} failed: {tls[0].str()}")
    reason = problems[-1].str() if problems else "no answer"
    raise RuntimeServiceError(f"Kafka at {kafka.bootstrap} is not reachable: {reason}")


def upsert_scram_user(kafka: KafkaSettings, username: str, password: str, mechanism: str) -> None:
    """Create or change a SCRAM user (through a listener we may administer)."""
    from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

    scram = ScramMechanism[mechanism.replace("-", "_")]
    upsertion = UserScramCredentialUpsertion(
        username, ScramCredentialInfo(scram, 8192), password.encode(), None
    )
    admin = AdminClient(client_config(kafka))
    for future in admin.alter_user_scram_credentials([upsertion]).values():
        future.result(timeout=30)


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
    """Delete topics (missing ones are fine)."""
    names = list(names)
    if not names:
        return
    admin = AdminClient(client_config(kafka))
    futures = admin.delete_topics(names, operation_timeout=30)
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


# Delivery errors worth retrying: the broker or the network will come back. Anything else (a
# record too large, an authorisation failure, an invalid record) fails the same way every time.
_TRANSIENT_CODES = frozenset(
    {
        KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN, KafkaError._QUEUE_FULL, KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NOT_ENOUGH_REPLICAS, KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.NETWORK_EXCEPTION, KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
)  # fmt: skip


def is_transient(error: KafkaError) -> bool:
    return error.code() in _TRANSIENT_CODES or (error.retriable() and not error.fatal())


class RecordOutput:
    """JSON records to a topic through one shared idempotent producer; `publish` returns once Kafka
    has answered for every record (librdkafka batches them; flushing runs off the event loop)."""

    def __init__(self, producer: Producer, topic: str, *, routed: bool = False) -> None:
        """``routed``: each record's key names its partition (`engine.pipeline.routed_key`)."""
        self.producer = producer
        self.topic = topic
        self.routed = routed

    async def publish(self, records: Sequence[tuple[bytes, Mapping[str, Any]]]) -> dict[int, KafkaError]:
        """Send every record; returns the ones Kafka refused (index -> error), transient or not.
        A record refused before it leaves (e.g. larger than ``message.max.bytes``) is among them."""
        failures: dict[int, KafkaError] = {}
        for index, (key, value) in enumerate(records):

            def delivered(error: KafkaError | None, _message: Message, index: int = index) -> None:
                if error is not None:
                    failures[index] = error

            while True:
                try:
                    if self.routed:
                        self.producer.produce(
                            self.topic, orjson.dumps(value), key, route_of(key), on_delivery=delivered
                        )
                    else:
                        self.producer.produce(self.topic, orjson.dumps(value), key, on_delivery=delivered)
                    break
                except BufferError:  # local queue full: let it drain
                    await asyncio.to_thread(self.producer.poll, 0.1)
                except KafkaException as exc:
                    failures[index] = exc.args[0]
                    break
        while await asyncio.to_thread(self.producer.flush, 5.0):
            pass  # every record is answered within message.timeout.ms
        return failures


def read_partition(
    kafka: KafkaSettings, topic: str, partition: int, start: int | None, end: int
) -> list[Message]:
    """The messages of ``topic[partition]`` from ``start`` (None: the first kept) up to ``end``
    (excluded), in order: what a state rebuild folds, and what the bench reads back."""
    consumer = Consumer(
        {**client_config(kafka), "group.id": "streams-state-rebuild", "enable.auto.commit": False,
         "enable.partition.eof": True, "fetch.max.bytes": 16 * 1024 * 1024}
    )  # fmt: skip
    try:
        try:
            low, _ = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        except KafkaException as exc:
            raise RuntimeServiceError(f"cannot read {topic}[{partition}]: {exc.args[0].str()}") from exc
        first = low if start is None else max(start, low)
        if end <= first:
            return []
        consumer.assign([TopicPartition(topic, partition, first)])
        messages: list[Message] = []
        while not messages or (messages[-1].offset() or 0) < end - 1:
            next_offset = (messages[-1].offset() or 0) + 1 if messages else first
            # No more than are left: a consume asking for more waits out its whole timeout.
            for message in consumer.consume(max(1, min(5000, end - next_offset)), timeout=5):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        return messages
                    raise RuntimeServiceError(f"cannot read {topic}[{partition}]: {error.str()}")
                if (message.offset() or 0) >= end:
                    return messages
                messages.append(message)
        return messages
    finally:
        consumer.close()


def committed_offsets(
    kafka: KafkaSettings, group_id: str, topic: str, partitions: Iterable[int]
) -> dict[int, int]:
    """The group's committed offsets (partitions without one are left out)."""
    consumer = Consumer({**client_config(kafka), "group.id": group_id, "enable.auto.commit": False})
    try:
        found = committed_patiently(consumer, [TopicPartition(topic, p) for p in partitions])
        return {tp.partition: tp.offset for tp in found if tp.offset >= 0}
    finally:
        consumer.close()


def committed_patiently(
    consumer: Consumer, tps: list[TopicPartition], give_up_s: float = 60.0
) -> list[TopicPartition]:
    """``consumer.committed``, retried while the group coordinator moves or loads (a broker that
    just restarted answers NOT_COORDINATOR or COORDINATOR_LOAD_IN_PROGRESS for a while)."""
    deadline = time.monotonic() + give_up_s
    while True:
        try:
            return list(consumer.committed(tps, timeout=10))
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if not is_transient(error) or time.monotonic() > deadline:
                raise RuntimeServiceError(f"cannot read committed offsets: {error.str()}") from exc
            time.sleep(0.5)


def watermarks(kafka: KafkaSettings, topic: str) -> dict[int, tuple[int, int]]:
    """partition -> (first offset still in the log, offset after its last message)."""
    consumer = Consumer({**client_config(kafka), "group.id": "streams-watermarks"})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        if metadata.error is not None:
            raise RuntimeServiceError(f"cannot read topic {topic}: {metadata.error.str()}")
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in metadata.partitions
        }
    finally:
        consumer.close()


def high_watermarks(kafka: KafkaSettings, topic: str) -> dict[int, int]:
    """partition -> the offset after its last message."""
    return {p: high for p, (_, high) in watermarks(kafka, topic).items()}


def tail(kafka: KafkaSettings, topic: str) -> Iterator[list[bytes]]:
    """The values of ``topic`` from the beginning on, a list per poll (empty when a second went by
    without any), for as long as the caller iterates. A topic that does not exist yet is waited for."""
    consumer = Consumer(
        {**client_config(kafka), "group.id": "streams-tail", "enable.auto.commit": False,
         "auto.offset.reset": "earliest"}
    )  # fmt: skip
    try:
        while True:
            metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if metadata is not None and metadata.error is None and metadata.partitions:
                break
            yield []
            time.sleep(1.0)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(metadata.partitions)])
        while True:
            values = []
            for message in consumer.consume(1000, timeout=1.0):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise RuntimeServiceError(f"cannot read {topic}: {error.str()}")
                value = message.value()
                if value is not None:
                    values.append(value)
            yield values
    finally:
        consumer.close()


def offsets_for_time(kafka: KafkaSettings, topic: str, timestamp_ms: int) -> dict[int, int]:
    """partition -> the first offset whose timestamp is >= timestamp_ms (the head if none is)."""
    consumer = Consumer({**client_config(kafka), "group.id": "streams-offsets-for-times"})
    try:
        heads = {p: high for p, (_, high) in watermarks(kafka, topic).items()}
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, timestamp_ms) for p in heads], timeout=10
        )
        return {tp.partition: tp.offset if tp.offset >= 0 else heads[tp.partition] for tp in found}
    finally:
        consumer.close()


def commit_group_offsets(
    kafka: KafkaSettings, group_id: str, offsets: Mapping[str, Mapping[int, int]]
) -> None:
    """Set where a consumer group (with no live members) starts reading: topic -> partition -> offset."""
    consumer = Consumer({**client_config(kafka), "group.id": group_id, "enable.auto.commit": False})
    try:
        positions = [TopicPartition(t, p, o) for t, parts in offsets.items() for p, o in parts.items()]
        if positions:
            consumer.commit(offsets=positions, asynchronous=False)
    except KafkaException as exc:
        raise RuntimeServiceError(f"cannot set the offsets of group {group_id}: {exc.args[0].str()}") from exc
    finally:
        consumer.close()


def group_members(kafka: KafkaSettings, group_id: str) -> int:
    """Live members of a consumer group (0 if it does not exist or is empty)."""
    admin = AdminClient(client_config(kafka))
    try:
        description = admin.describe_consumer_groups([group_id])[group_id].result(timeout=10)
    except KafkaException:
        return 0
    return len(description.members)


def delete_group(kafka: KafkaSettings, group_id: str) -> None:
    admin = AdminClient(client_config(kafka))
    try:
        admin.delete_consumer_groups([group_id], request_timeout=15)[group_id].result(timeout=20)
    except KafkaException as exc:
        if exc.args[0].code() not in (KafkaError.GROUP_ID_NOT_FOUND,):
            raise RuntimeServiceError(
                f"cannot delete consumer group {group_id}: {exc.args[0].str()}"
            ) from exc


def existing_topics(kafka: KafkaSettings) -> set[str]:
    admin = AdminClient(client_config(kafka))
    return set(admin.list_topics(timeout=10).topics)
