"""An in-process harness: a fake Kafka consumer over an in-memory log, in-memory outputs, and a
runner, so any pipeline runs through the real engine (job, checkpoint, recovery) in a unit test."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.engine.checkpoint import Checkpoint, Pending, Record, TopicPartition
from streams.engine.job import Job, Pacing
from streams.engine.pipeline import Message, Pipeline
from streams.engine.recovery import Recovery
from streams.engine.snapshots import MemorySnapshotStore, SnapshotPolicy, Snapshots
from streams.events import DeadLetter
from streams.sink import MemorySink
from streams.tables import DEAD_LETTERS


@dataclass(frozen=True)
class LogMessage:
    """A message of the in-memory log, with `confluent_kafka.Message`'s accessors."""

    _topic: str
    _partition: int
    _offset: int
    _value: bytes | None
    _key: bytes | None = None
    _timestamp: int = 0

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp)


class MemoryLog:
    """Topics of partitions of messages; what Kafka keeps."""

    def __init__(self) -> None:
        self.partitions: dict[TopicPartition, list[LogMessage]] = {}

    def append(self, topic: str, partition: int, value: bytes | None, key: bytes | None = None) -> None:
        messages = self.partitions.setdefault((topic, partition), [])
        messages.append(LogMessage(topic, partition, len(messages), value, key, len(messages)))

    async def read(self, topic: str, partition: int, start: int | None, end: int) -> list[Message]:
        return list(self.partitions.get((topic, partition), [])[start or 0 : end])


class FakeConsumer:
    """One member of a consumer group over a `MemoryLog`. Rebalances run the job's callbacks on
    another thread, inside `consume`, as librdkafka does."""

    def __init__(
        self, log: MemoryLog, group: dict[TopicPartition, int], job: Job, owned: Sequence[TopicPartition]
    ):
        self.log, self.group, self.job = log, group, job
        self.owned = list(owned)
        self.assigned: set[TopicPartition] = set()
        self.positions: dict[TopicPartition, int] = {}
        self.scheduled: list[tuple[str, list[TopicPartition]]] = []  # ("assign"|"revoke"|"lost", tps)
        self.lock = threading.Lock()

    async def start(self) -> None:
        self.scheduled.append(("assign", self.owned))

    def rebalance(self, kind: str, tps: Sequence[TopicPartition]) -> None:
        with self.lock:
            self.scheduled.append((kind, list(tps)))

    def _callbacks(self) -> None:
        with self.lock:
            scheduled, self.scheduled = self.scheduled, []
        for kind, tps in scheduled:
            if kind == "assign":
                self.assigned |= set(tps)
                for tp in tps:
                    self.positions[tp] = self.group.get(tp, 0)
                self.job.on_assign(tps)
            elif kind == "revoke":
                self.job.on_revoke(tps)
                self.assigned -= set(tps)
            else:
                self.assigned -= set(tps)
                self.job.on_lost(tps)

    def _consume(self, max_messages: int) -> list[Message]:
        self._callbacks()
        out: list[Message] = []
        for tp in sorted(self.assigned):
            messages = self.log.partitions.get(tp, [])
            start = self.positions[tp]
            taken = messages[start : start + max_messages - len(out)]
            self.positions[tp] = start + len(taken)
            out += taken
        return out

    async def consume(self, max_messages: int, timeout_s: float) -> list[Any]:
        messages = await asyncio.to_thread(self._consume, max_messages)
        if not messages:
            await asyncio.sleep(min(timeout_s, 0.01))
        return messages

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.commit_now(offsets)

    def commit_now(self, offsets: Mapping[TopicPartition, int]) -> bool:
        self.group.update(offsets)
        return True

    async def committed(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.group[tp] for tp in tps if tp in self.group}

    def lag(self, positions: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        return {tp: len(self.log.partitions.get(tp, [])) - p for tp, p in positions.items()}

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        self._callbacks()
        if self.assigned:
            self.job.on_revoke(sorted(self.assigned))
            self.assigned.clear()


class Refused:
    def __init__(self, reason: str, transient: bool = False) -> None:
        self.reason, self.transient = reason, transient

    def str(self) -> str:
        return self.reason


@dataclass
class MemoryOutput:
    """Records per topic; ``refuse(key)`` may refuse a record (return a `Refused`)."""

    topics: dict[str, list[Record]] = field(default_factory=dict)
    refuse: Callable[[str, Record], Refused | None] = lambda topic, record: None

    def output(self, topic: str) -> Any:
        parent = self

        class Topic:
            async def publish(self, records: Sequence[Record]) -> dict[int, Refused]:
                refused = {}
                for i, record in enumerate(records):
                    why = parent.refuse(topic, record)
                    if why is None:
                        parent.topics.setdefault(topic, []).append(record)
                    else:
                        refused[i] = why
                return refused

        return Topic()


class Recorder:
    """An observer that keeps what it saw (the metrics observer's interface)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.tallies: Counter[str] = Counter()  # of what was checkpointed

    def batch_consumed(self, count: int) -> None:
        self.events.append(("batch", count))

    def positions(self, lag: Any, watermarks: Any) -> None:
        pass

    def partitions_gone(self, tps: Sequence[TopicPartition]) -> None:
        self.events.append(("gone", list(tps)))

    def rows_written(self, table: str, count: int, seconds: float) -> None:
        self.events.append(("rows", (table, count)))

    def record_refused(self, topic: str, reason: str) -> None:
        self.events.append(("refused", topic))

    def letter_fallback(self, letter: DeadLetter, reason: str) -> None:
        self.events.append(("fallback", str(letter.coordinates)))

    def letter_failure(self, letter: DeadLetter, reason: str) -> None:
        self.events.append(("failure", str(letter.coordinates)))

    def checkpointed(self, pending: Pending) -> None:
        self.events.append(("checkpoint", dict(pending.offsets)))
        self.tallies.update(pending.folded.tallies)

    def snapshot_saved(self, pipeline: str, size: int, seconds: float) -> None:
        self.events.append(("snapshot", pipeline))

    def snapshot_failed(self, pipeline: str) -> None:
        self.events.append(("snapshot_failed", pipeline))

    def snapshot_rejected(self, pipeline: str, reason: str) -> None:
        self.events.append(("snapshot_rejected", reason))

    def recovered(self, pipeline: str, source: str, messages: int, seconds: float) -> None:
        self.events.append(("recovered", (source, messages)))

    def seen(self, kind: str) -> list[Any]:
        return [what for k, what in self.events if k == kind]


@dataclass
class Harness:
    """A job over ``pipelines`` on a `MemoryLog`, with an in-memory sink and outputs."""

    pipelines: Sequence[Pipeline]
    log: MemoryLog = field(default_factory=MemoryLog)
    group: dict[TopicPartition, int] = field(default_factory=dict)  # committed offsets
    outputs: MemoryOutput = field(default_factory=MemoryOutput)
    sink: MemorySink | None = None
    observer: Recorder = field(default_factory=Recorder)
    dead_letter_topic: str = "dead-letters"
    pacing: Pacing = field(default_factory=lambda: Pacing(100, 0.0, 0.0))
    snapshots: MemorySnapshotStore | None = None  # None: every state is rebuilt from the log
    policy: SnapshotPolicy = field(default_factory=lambda: SnapshotPolicy(interval_s=0.0))
    pins: str = "pins"

    def __post_init__(self) -> None:
        if self.sink is None:
            keys = {t: k for p in self.pipelines for t, k in p.tables.items()}
            self.sink = MemorySink({**keys, DEAD_LETTERS.name: DEAD_LETTERS.primary_key})

    def job(self) -> Job:
        assert self.sink is not None
        checkpoint = Checkpoint(
            self.sink, self.outputs.output, self.dead_letter_topic, "v1", self.observer,
            dead_letter_max_bytes=100_000, is_transient=lambda e: bool(getattr(e, "transient", False)),
        )  # fmt: skip
        snapshots = None
        if self.snapshots is not None:
            snapshots = Snapshots(self.snapshots, self.pins, self.observer, self.policy)
        recovery = Recovery(self.log.read, snapshots, self.observer)
        return Job(self.pipelines, checkpoint, recovery, self.observer, self.pacing, snapshots=snapshots)

    def start(
        self, owned: Sequence[TopicPartition], job: Job | None = None
    ) -> tuple[Job, FakeConsumer, asyncio.Task[None]]:
        """A job (new unless given) that owns ``owned``, running as a task of the current loop."""
        job = job or self.job()
        consumer = FakeConsumer(self.log, self.group, job, owned)
        return job, consumer, asyncio.create_task(job.run(consumer))

    def successor(self, pipelines: Sequence[Pipeline]) -> Harness:
        """Another process of the same group: same log, committed offsets, outputs and sink."""
        return Harness(pipelines, self.log, self.group, self.outputs, self.sink,
                       snapshots=self.snapshots, policy=self.policy, pins=self.pins)  # fmt: skip

    async def run_until_idle(self, owned: Sequence[TopicPartition], job: Job | None = None) -> Job:
        """Run a job that owns ``owned`` until every message is committed, then stop it."""
        job, _, task = self.start(owned, job)
        ends = {tp: len(self.log.partitions.get(tp, [])) for tp in owned}
        while any(self.group.get(tp, 0) < end for tp, end in ends.items()) and not task.done():
            await asyncio.sleep(0.01)
        await job.stop()
        await task
        return job
