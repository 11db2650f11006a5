"""A bulk consumer for a hot path (confluent-kafka / librdkafka), owned by one asyncio task.

Faust hands an agent one event at a time through several layers of asyncio machinery; measured
on the bench machine, an agent that does nothing tops out near 13,000 events/s. librdkafka
hands over thousands of messages per call. Every call into the consumer runs on one dedicated
thread, so the event loop never blocks; rebalance callbacks run on that thread, inside `consume`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streams.errors import RuntimeServiceError
from streams.events import Coordinates
from streams.io.kafka import client_config
from streams.settings import KafkaSettings

log = logging.getLogger(__name__)

R = TypeVar("R")
Partitions = Callable[[list[int]], None]


class BatchConsumer:
    """One topic, one consumer group, manual commits.

    ``on_revoke(partitions)`` runs before partitions are taken away (still owned: the place to make
    results durable and `commit_now`); ``on_assign(partitions)`` after new ones arrive;
    ``on_lost(partitions)`` when the group moved on without us (nothing may be committed then).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        group_id: str,
        topic: str,
        *,
        on_assign: Partitions,
        on_revoke: Partitions,
        on_lost: Partitions,
        prefetch_kbytes: int = 8192,
    ) -> None:
        self.topic = topic
        self.group_id = group_id
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"consumer-{topic}")
        self._consumer = Consumer(
            {
                **client_config(kafka),
                "group.id": group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                # What librdkafka fetches ahead is bounded (bytes and messages), so a stalled sink
                # stalls consumption without buffering the topic in memory.
                "queued.max.messages.kbytes": prefetch_kbytes,
                "fetch.max.bytes": prefetch_kbytes * 1024,
                "on_commit": self._committed,
            }
        )
        self._callbacks = (on_assign, on_revoke, on_lost)
        self.assigned: set[int] = set()

    async def _call(self, fn: Callable[..., R], *args: Any) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def start(self) -> None:
        on_assign, on_revoke, on_lost = self._callbacks

        def assigned(_: Consumer, tps: list[TopicPartition]) -> None:
            self.assigned |= {tp.partition for tp in tps}
            on_assign(sorted(tp.partition for tp in tps))

        def revoked(_: Consumer, tps: list[TopicPartition]) -> None:
            on_revoke(sorted(tp.partition for tp in tps))
            self.assigned -= {tp.partition for tp in tps}

        def lost(_: Consumer, tps: list[TopicPartition]) -> None:
            self.assigned -= {tp.partition for tp in tps}
            on_lost(sorted(tp.partition for tp in tps))

        await self._call(
            lambda: self._consumer.subscribe(
                [self.topic], on_assign=assigned, on_revoke=revoked, on_lost=lost
            )
        )

    async def consume(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Up to ``max_messages`` messages of owned partitions (fewer once the fetched ones run out)."""
        messages = await self._call(self._consumer.consume, max_messages, timeout_s)
        good = []
        for message in messages:
            error = message.error()
            if error is None:
                if message.partition() in self.assigned:
                    good.append(message)
            elif error.fatal():
                raise RuntimeServiceError(f"Kafka consumer of {self.topic} failed: {error.str()}")
            else:  # transient (a broker restarting, ...): librdkafka retries by itself
                log.warning("Kafka consumer of %s: %s", self.topic, error.str())
        return messages if len(good) == len(messages) else good

    def commit_now(self, offsets: Mapping[int, int]) -> bool:
        """Commit ``partition -> next offset`` synchronously, on the consumer's thread (that is, from
        a rebalance callback). False if Kafka refused (e.g. the group rebalanced meanwhile)."""
        if not offsets:
            return True
        tps = [TopicPartition(self.topic, p, o) for p, o in offsets.items()]
        try:
            self._consumer.commit(offsets=tps, asynchronous=False)
            return True
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            log.warning("commit of %s refused: %s (the next owner re-reads from the last commit)",
                        self.topic, error.str())  # fmt: skip
            return False

    async def commit(self, offsets: Mapping[int, int]) -> None:
        """Commit without waiting for Kafka's answer (reported by `_committed`). A synchronous commit
        here could wait for a rebalance that needs this very consumer to poll: a deadlock until
        ``max.poll.interval.ms``. Commits go out in order; a lost one only means re-reading."""
        if not offsets:
            return
        tps = [TopicPartition(self.topic, p, o) for p, o in offsets.items()]

        def commit() -> None:
            try:
                self._consumer.commit(offsets=tps, asynchronous=True)
            except KafkaException as exc:
                log.warning("commit of %s refused: %s", self.topic, exc.args[0].str())

        await self._call(commit)

    def _committed(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is not None:
            log.warning("commit of %s refused: %s (the next owner re-reads from the last commit)",
                        self.topic, error.str())  # fmt: skip

    async def committed(self, partitions: Sequence[int]) -> dict[int, int]:
        tps = [TopicPartition(self.topic, p) for p in partitions]
        found = await self._call(self._consumer.committed, tps, 10)
        return {tp.partition: tp.offset for tp in found if tp.offset >= 0}

    def lag(self, positions: Mapping[int, int]) -> dict[int, int]:
        """Records behind the head per partition, from the high watermarks of the last fetches."""
        behind = {}
        for partition, position in positions.items():
            try:
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), cached=True
                )
            except KafkaException:
                continue
            if high >= 0:
                behind[partition] = max(high - position, 0)
        return behind

    async def close(self) -> None:
        """Leave the group (``on_revoke`` runs first), then release the thread."""
        try:
            await self._call(self._consumer.close)
        finally:
            self._thread.shutdown(wait=False)


def coordinates_of(message: Message) -> Coordinates:
    kind, timestamp = message.timestamp()
    return Coordinates(
        topic=message.topic() or "",
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        timestamp_ms=timestamp if kind else None,
        key=message.key(),
    )
