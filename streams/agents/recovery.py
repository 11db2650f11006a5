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
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any, cast

import faust

from streams.errors import RuntimeServiceError
from streams.events import Coordinates
from streams.io.kafka import committed_offsets, partition_history
from streams.settings import KafkaSettings

log = logging.getLogger(__name__)

History = Mapping[str, Sequence[tuple[bytes | None, Coordinates]]]  # topic -> messages in order


class StateRebuilder:
    """Per agent: which partitions have state, and how to rebuild one (``fold(history, partition)``).

    ``states`` is the agent's per-partition state; a revoked partition's entry is dropped, so that
    whoever gets it next (maybe this worker again, later) rebuilds it from the log.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        group_id: str,
        topics: Sequence[str],
        states: MutableMapping[int, Any],
        fold: Callable[[History, int], None],
    ) -> None:
        self.kafka = kafka
        self.group_id = group_id  # whose committed offsets say where processing resumes
        self.topics = list(topics)
        self.states = states
        self.fold = fold
        self.ready: set[int] = set()

    @classmethod
    def for_faust(
        cls,
        app: faust.App,
        kafka: KafkaSettings,
        topics: Sequence[str],
        states: MutableMapping[int, Any],
        fold: Callable[[History, int], None],
    ) -> StateRebuilder:
        """For a Faust agent: Faust's consumer group, and revoked partitions are forgotten."""
        rebuilder = cls(kafka, app.conf.id, topics, states, fold)

        async def on_revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
            revoked: set[Any] = args[0] if args else kwargs.get("revoked", set())
            rebuilder.forget({tp.partition for tp in revoked if tp.topic in rebuilder.topics})

        app.on_partitions_revoked.connect(cast(Any, on_revoked))  # mode's handler type is stricter
        return rebuilder

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the state of partitions this worker no longer owns."""
        for partition in partitions:
            self.states.pop(partition, None)
            self.ready.discard(partition)

    async def ensure(self, first_offsets: Mapping[tuple[str, int], int]) -> None:
        """Rebuild every partition of this batch that has no state yet. ``first_offsets`` maps
        (topic, partition) to the first offset of the batch, where processing resumes."""
        partitions = {p for _, p in first_offsets} - self.ready
        for partition in sorted(partitions):
            await self._rebuild_patiently(partition, first_offsets)
            self.ready.add(partition)

    async def _rebuild_patiently(
        self, partition: int, first_offsets: Mapping[tuple[str, int], int], give_up_s: float = 300.0
    ) -> None:
        """Kafka may be coming back from an outage (that is often why partitions moved): retry."""
        deadline = time.monotonic() + give_up_s
        attempt = 0
        while True:
            attempt += 1
            try:
                await asyncio.to_thread(self._rebuild, partition, first_offsets)
                return
            except RuntimeServiceError as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("rebuilding partition %d failed (attempt %d): %s", partition, attempt, exc)
                await asyncio.sleep(min(0.5 * attempt, 5.0))

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
