"""The engine's bulk consumer (confluent-kafka / librdkafka), owned by one asyncio task.

Faust hands an agent one event at a time through several layers of asyncio machinery; measured
on the bench machine, an agent that does nothing tops out near 13,000 events/s. librdkafka
hands over thousands of messages per call. Every call into the consumer runs on one dedicated
thread, so the event loop never blocks; rebalance callbacks run on that thread, inside `consume`.

Co-partitioning: the group uses the range assignor, which gives each member the same partition
numbers of every topic with the same partition count and the same subscribers. So partition i
of ``transactions`` and of ``labels`` always land on the same worker (the label join needs it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streams.errors import RuntimeServiceError
from streams.io.kafka import client_config, committed_patiently
from streams.settings import KafkaSettings

log = logging.getLogger(__name__)

R = TypeVar("R")
TopicPartitions = list[tuple[str, int]]
Partitions = Callable[[TopicPartitions], None]


class BatchConsumer:
    """Several topics, one consumer group, manual commits; partitions are ``(topic, partition)``.

    ``on_revoke(tps)`` runs before partitions are taken away (still owned: the place to make
    results durable and `commit_now`); ``on_assign(tps)`` after new ones arrive; ``on_lost(tps)``
    when the group moved on without us (nothing may be committed then).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        group_id: str,
        topics: Sequence[str],
        *,
        on_assign: Partitions,
        on_revoke: Partitions,
        on_lost: Partitions,
        prefetch_kbytes: int = 65_536,
        instance_id: str | None = None,
    ) -> None:
        """``instance_id``: static membership (KIP-345): a restarted member with the same id gets
        its partitions back without a rebalance, instead of waiting for its session to expire."""
        self.topics = list(topics)
        self.group_id = group_id
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="consumer")
        self._consumer = Consumer(
            {
                **client_config(kafka),
                "group.id": group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "range",  # co-partitioning (module docstring)
                # What librdkafka fetches ahead is bounded (bytes and messages), so a stalled sink
                # stalls consumption without buffering the topic in memory.
                "queued.max.messages.kbytes": prefetch_kbytes,
                "fetch.max.bytes": prefetch_kbytes * 1024,
                "on_commit": self._committed,
                **({"group.instance.id": instance_id} if instance_id else {}),
            }
        )
        self._callbacks = (on_assign, on_revoke, on_lost)
        self.assigned: set[tuple[str, int]] = set()

    async def _call(self, fn: Callable[..., R], *args: Any) -> R:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def start(self) -> None:
        on_assign, on_revoke, on_lost = self._callbacks

        def pairs(tps: list[TopicPartition]) -> TopicPartitions:
            return sorted((tp.topic, tp.partition) for tp in tps)

        def assigned(_: Consumer, tps: list[TopicPartition]) -> None:
            self.assigned |= set(pairs(tps))
            on_assign(pairs(tps))

        def revoked(_: Consumer, tps: list[TopicPartition]) -> None:
            on_revoke(pairs(tps))
            self.assigned -= set(pairs(tps))

        def lost(_: Consumer, tps: list[TopicPartition]) -> None:
            self.assigned -= set(pairs(tps))
            on_lost(pairs(tps))

        await self._call(
            lambda: self._consumer.subscribe(self.topics, on_assign=assigned, on_revoke=revoked, on_lost=lost)
        )

    async def consume(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Up to ``max_messages`` messages of owned partitions (fewer once the fetched ones run out)."""
        messages = await self._call(self._consumer.consume, max_messages, timeout_s)
        good = []
        for message in messages:
            error = message.error()
            if error is None:
                if (message.topic(), message.partition()) in self.assigned:
                    good.append(message)
            elif error.fatal():
                raise RuntimeServiceError(f"Kafka consumer of {self.topics} failed: {error.str()}")
            else:  # transient (a broker restarting, ...): librdkafka retries by itself
                log.warning("Kafka consumer of %s: %s", self.topics, error.str())
        return messages if len(good) == len(messages) else good

    def commit_now(self, offsets: Mapping[tuple[str, int], int]) -> bool:
        """Commit ``(topic, partition) -> next offset`` synchronously, on the consumer's thread (that
        is, from a rebalance callback). False if Kafka refused (e.g. the group rebalanced meanwhile)."""
        if not offsets:
            return True
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            self._consumer.commit(offsets=tps, asynchronous=False)
            return True
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            log.warning("commit refused: %s (the next owner re-reads from the last commit)", error.str())
            return False

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Commit without waiting for Kafka's answer (reported by `_committed`). A synchronous commit
        here could wait for a rebalance that needs this very consumer to poll: a deadlock until
        ``max.poll.interval.ms``. Commits go out in order; a lost one only means re-reading.

        Called on the event loop, not the consumer's thread: an asynchronous commit only queues a
        request (librdkafka's handle is thread-safe), and on the thread it would wait for the
        `consume` in progress there (up to its timeout) before the checkpoint could end."""
        if not offsets:
            return
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            self._consumer.commit(offsets=tps, asynchronous=True)
        except KafkaException as exc:
            log.warning("commit refused: %s", exc.args[0].str())

    def _committed(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is not None:
            log.warning("commit refused: %s (the next owner re-reads from the last commit)", error.str())

    def committed_now(self, tps: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The group's committed offsets (on the consumer's thread or while it is idle)."""
        found = committed_patiently(self._consumer, [TopicPartition(t, p) for t, p in tps])
        return {(tp.topic, tp.partition): tp.offset for tp in found if tp.offset >= 0}

    async def committed(self, tps: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return await self._call(self.committed_now, tps)

    def lag(self, positions: Mapping[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        """Records behind the head per partition, from the high watermarks of the last fetches."""
        behind = {}
        for (topic, partition), position in positions.items():
            try:
                _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except KafkaException:
                continue
            if high >= 0:
                behind[(topic, partition)] = max(high - position, 0)
        return behind

    async def close(self) -> None:
        """Leave the group (``on_revoke`` runs first), then release the thread."""
        try:
            await self._call(self._consumer.close)
        finally:
            self._thread.shutdown(wait=False)
