"""Rebuilding a partition's state from the log, and folding that survives a bug in a pipeline.

State (windows, dedupe, features, decisions) is a pure function of each partition's log, so a
worker that takes a partition over rebuilds it up to where it resumes before it handles the first
new message (outputs discarded: they were written before): from the newest usable snapshot and
the log after it (`snapshots`), or by folding the partition's whole history.

A pipeline whose ``fold`` raises on a message must not stop the stream: the batch is folded again
one message at a time on a state rebuilt from the log, the message that raises becomes a dead
letter (``processing_error``, with the traceback summary) and is skipped. Code is deterministic,
so the same message raises on every replay and the skip is the same every time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from streams.engine.pipeline import Batch, Folded, Message, Pipeline, coordinates_of, fold_prepared
from streams.engine.snapshots import SnapshotObserver, Snapshots
from streams.errors import RuntimeServiceError
from streams.events import DeadLetter, processing_error

log = logging.getLogger(__name__)

# (topic, partition, start or None for the first kept, end excluded) -> messages in order
LogReader = Callable[[str, int, int | None, int], Awaitable[list[Message]]]


async def fold_isolating(
    pipeline: Pipeline, partition: int, batch: Batch, *, replay: bool, reset: Callable[[], Awaitable[None]]
) -> Folded:
    """``pipeline.fold`` of a batch; if it raises, ``reset()`` the partition to its state before the
    batch and fold the messages one by one, dead-lettering each one that raises."""
    try:
        return await fold_prepared(pipeline, partition, batch, replay=replay)
    except RuntimeServiceError:
        raise  # a service the preparation reads is down: not the message's fault
    except Exception as exc:
        log.warning("%s: folding a batch of partition %d failed (%r): isolating the message",
                    pipeline.name, partition, exc)  # fmt: skip
    folded = Folded()
    kept: list[tuple[str, Message]] = []
    await reset()
    for topic, messages in batch.items():
        for message in messages:
            try:
                folded.add(await fold_prepared(pipeline, partition, {topic: [message]}, replay=replay))
                kept.append((topic, message))
            except RuntimeServiceError:
                raise
            except Exception as exc:
                at = coordinates_of(message)
                log.error("%s: processing %s failed: %r (dead-lettered, skipped)", pipeline.name, at, exc)
                folded.letters.append(DeadLetter(message.value() or b"", at, processing_error(exc)))
                await reset()  # the failed fold may have changed the state half-way
                for kept_topic, kept_message in kept:  # the same again: tallies already counted
                    await fold_prepared(pipeline, partition, {kept_topic: [kept_message]}, replay=replay)
    return folded


class Recovery:
    """Which (pipeline, partition) states are ready, and rebuilding one: from the newest usable
    snapshot and the log after it, or from the whole log."""

    def __init__(
        self,
        read_log: LogReader,
        snapshots: Snapshots | None = None,
        observer: SnapshotObserver | None = None,
    ) -> None:
        self.read_log = read_log
        self.snapshots, self.observer = snapshots, observer
        self.ready: set[tuple[str, int]] = set()

    def forget(self, pipeline: Pipeline, partitions: Sequence[int]) -> None:
        pipeline.forget(partitions)
        self.ready -= {(pipeline.name, p) for p in partitions}
        if self.snapshots is not None:
            self.snapshots.forget(pipeline.name, partitions)

    async def ensure(self, pipeline: Pipeline, partition: int, ends: Mapping[str, int]) -> None:
        """Rebuild the partition's state up to ``ends`` (topic -> first offset not folded) unless
        it is ready."""
        if (pipeline.name, partition) not in self.ready:
            if pipeline.stateful:
                await self.rebuild(pipeline, partition, ends)
                if self.snapshots is not None:
                    self.snapshots.started(pipeline.name, partition)
            self.ready.add((pipeline.name, partition))

    async def rebuild(
        self, pipeline: Pipeline, partition: int, ends: Mapping[str, int], give_up_s: float = 300.0
    ) -> None:
        """Kafka may be coming back from an outage (that is often why partitions moved): retry."""
        deadline, attempt = time.monotonic() + give_up_s, 0
        while True:
            attempt += 1
            try:
                await self.rebuild_to(pipeline, partition, ends)
                return
            except RuntimeServiceError as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("rebuilding %s partition %d failed (attempt %d): %s",
                            pipeline.name, partition, attempt, exc)  # fmt: skip
                await asyncio.sleep(min(0.5 * attempt, 5.0))

    async def rebuild_to(self, pipeline: Pipeline, partition: int, ends: Mapping[str, int]) -> None:
        """A fresh state for the partition up to ``ends`` (outputs discarded: written before)."""
        started = time.monotonic()

        async def base() -> Mapping[str, int | None]:
            pipeline.forget([partition])
            found = None
            if self.snapshots is not None:
                found = await self.snapshots.restore(pipeline, partition, ends)
            return found or dict.fromkeys(pipeline.topics)

        starts = await base()
        spans = {t: (starts[t], ends[t]) for t in pipeline.topics}
        history = await self.read(pipeline.topics, partition, spans)

        async def reset() -> None:
            await base()

        await fold_isolating(pipeline, partition, history, replay=True, reset=reset)
        count, seconds = sum(len(m) for m in history.values()), time.monotonic() - started
        source = "log" if all(s is None for s in starts.values()) else "snapshot"
        if self.observer is not None:
            self.observer.recovered(pipeline.name, source, count, seconds)
        if count or source == "snapshot":
            log.info("%s: rebuilt partition %d from the %s and %d messages in %.1fs",
                     pipeline.name, partition, source, count, seconds)  # fmt: skip

    async def read(
        self, topics: Sequence[str], partition: int, spans: Mapping[str, tuple[int | None, int]]
    ) -> Batch:
        """The log of ``partition`` in every topic, each from ``spans[topic][0]`` to ``[1]``."""
        return {t: await self.read_log(t, partition, *spans[t]) for t in topics}
