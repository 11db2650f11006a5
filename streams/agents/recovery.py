"""Rebuilding an agent's per-partition state from the log when it takes a partition over.

State (windows, dedupe, features, decisions) is a pure function of each partition's log, so a
worker that starts, or receives a partition in a rebalance, folds the partition's history up to
where processing resumes before it handles the first new event. Outputs of the rebuild are
discarded: they were written before. This is what makes a restart or a rebalance exact.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from streams.events import Coordinates
from streams.io.kafka import committed_offsets, partition_history
from streams.settings import KafkaSettings

log = logging.getLogger(__name__)

History = Mapping[str, Sequence[tuple[bytes | None, Coordinates]]]  # topic -> messages in order


class StateRebuilder:
    """Per agent: which partitions have state, and how to rebuild one (``fold(history, partition)``)."""

    def __init__(
        self, kafka: KafkaSettings, group_id: str, topics: Sequence[str], fold: Callable[[History, int], None]
    ) -> None:
        self.kafka = kafka
        self.group_id = group_id
        self.topics = list(topics)
        self.fold = fold
        self.ready: set[int] = set()

    def forget(self, partitions: Iterable[int]) -> None:
        self.ready.difference_update(partitions)

    async def ensure(self, first_offsets: Mapping[tuple[str, int], int]) -> None:
        """Rebuild every partition of this batch that has no state yet. ``first_offsets`` maps
        (topic, partition) to the first offset of the batch, where processing resumes."""
        partitions = {p for _, p in first_offsets} - self.ready
        for partition in sorted(partitions):
            await asyncio.to_thread(self._rebuild, partition, first_offsets)
            self.ready.add(partition)

    def _rebuild(self, partition: int, first_offsets: Mapping[tuple[str, int], int]) -> None:
        started = time.monotonic()
        history: dict[str, list[tuple[bytes | None, Coordinates]]] = {}
        for topic in self.topics:
            end = first_offsets.get((topic, partition))
            if end is None:
                end = committed_offsets(self.kafka, self.group_id, topic, [partition]).get(partition, 0)
            history[topic] = [
                (value, Coordinates(topic, partition, offset, timestamp, key))
                for value, offset, timestamp, key in partition_history(self.kafka, topic, partition, end)
            ]
        self.fold(history, partition)
        count = sum(len(m) for m in history.values())
        if count:
            log.info("rebuilt state of partition %d from %d messages in %.1fs", partition, count,
                     time.monotonic() - started)  # fmt: skip


def first_offsets(events: Iterable[object]) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the smallest offset among a batch's Faust events."""
    firsts: dict[tuple[str, int], int] = {}
    for event in events:
        message = event.message  # type: ignore[attr-defined]
        key = (message.topic, message.partition)
        if key not in firsts or message.offset < firsts[key]:
            firsts[key] = message.offset
    return firsts
