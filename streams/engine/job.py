"""The engine's job: one bulk consumer for every pipeline of the worker, folded as it comes, and a
checkpoint every flush interval (short while caught up, long in a backlog).

A checkpoint runs behind the folding: once a flush has drained the pipelines (rows, records,
letters, offsets and snapshots taken at that instant), its writes go out while the next batches
are consumed and folded, so the worker and Cassandra work at the same time. One checkpoint is in
flight at most; the next flush, a rebalance, a rebuild and an idle snapshot wait for it first.
If it fails, nothing later is checkpointed (its offsets would skip its rows): the job stops and
the next owner re-reads from the last commit.

A partition about to be revoked is checkpointed and committed first; one lost without notice is
forgotten, and its next owner re-reads what was not committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from streams.engine.checkpoint import Checkpoint, Pending, TopicPartition
from streams.engine.pipeline import Message, Pipeline, fold_prepared
from streams.engine.recovery import Recovery, fold_isolating
from streams.engine.snapshots import Snapshots
from streams.tables import fence

log = logging.getLogger(__name__)


class Consumer(Protocol):
    """What the job needs of `consumer.BatchConsumer` (and of the harness's fake)."""

    async def start(self) -> None: ...
    async def consume(self, max_messages: int, timeout_s: float) -> list[Any]: ...
    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None: ...
    def commit_now(self, offsets: Mapping[TopicPartition, int]) -> bool: ...
    async def committed(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]: ...
    def lag(self, positions: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]: ...
    async def close(self) -> None: ...


class JobObserver(Protocol):
    def batch_consumed(self, count: int) -> None: ...
    def positions(
        self, lag: Mapping[TopicPartition, int], watermarks: Mapping[TopicPartition, int]
    ) -> None: ...
    def partitions_gone(self, tps: Sequence[TopicPartition]) -> None: ...


@dataclass(frozen=True)
class Pacing:
    """How often a pipeline is checkpointed: every ``flush_interval_s`` while the worker is caught
    up (latency), every ``catchup_flush_interval_s`` while it works through a backlog (each changed
    row is written once per interval, not once per batch)."""

    batch_size: int = 10_000
    flush_interval_s: float = 0.5
    catchup_flush_interval_s: float = 5.0

    def interval(self, caught_up: bool) -> float:
        return self.flush_interval_s if caught_up else self.catchup_flush_interval_s


class Job:
    """Drives ``pipelines`` over ``consumer`` (built by the caller with `on_assign`, `on_revoke`
    and `on_lost` of this job as its rebalance callbacks)."""

    def __init__(
        self,
        pipelines: Sequence[Pipeline],
        checkpoint: Checkpoint,
        recovery: Recovery,
        observer: JobObserver,
        pacing: Pacing,
        timed_topics: Sequence[str] = (),
        paced: Mapping[str, Pacing] | None = None,
        snapshots: Snapshots | None = None,
    ) -> None:
        """``paced``: a pipeline's own pacing (by name), e.g. fraud scores within milliseconds
        while CTR windows are written twice a second."""
        self.pipelines = list(pipelines)
        self.pipeline_of = {topic: p for p in self.pipelines for topic in p.topics}
        self.checkpoint, self.recovery, self.observer, self.pacing = checkpoint, recovery, observer, pacing
        self.paced = {p.name: (paced or {}).get(p.name, pacing) for p in self.pipelines}
        self.timed_topics = set(timed_topics)  # whose Kafka timestamps the observer times
        self.snapshots = snapshots  # taken at checkpoints, restored by `recovery`
        self.consumer: Consumer | None = None
        self.pending = {p.name: Pending() for p in self.pipelines}  # not durable yet, per pipeline
        self.durable: dict[TopicPartition, int] = {}  # committed, or where folding resumed
        self.suspended: set[TopicPartition] = set()  # revoked, checkpointed: kept if given back
        self.stopping = False
        self.stopped = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.inflight: asyncio.Task[None] | None = None  # the checkpoint whose writes are out
        self.failed: BaseException | None = None  # a checkpoint that failed: none may follow it
        self.assigned: set[TopicPartition] = set()

    @property
    def topics(self) -> list[str]:
        return list(self.pipeline_of)

    async def run(self, consumer: Consumer) -> None:
        self.consumer, self._loop = consumer, asyncio.get_running_loop()
        batch_size = self.pacing.batch_size
        await consumer.start()
        last_flush, caught_up = dict.fromkeys(self.paced, 0.0), True
        try:
            while not self.stopping:
                due = {name: last_flush[name] + p.interval(caught_up) for name, p in self.paced.items()}
                wait_s = min(max(min(due.values()) - time.monotonic(), 0.005), 0.5)
                messages = await consumer.consume(batch_size, wait_s)
                caught_up = len(messages) < batch_size
                if messages:
                    await self.take(messages)
                now = time.monotonic()
                ready = [name for name, pending in self.pending.items() if pending.offsets and
                         (now >= due[name] or len(pending.folded.letters) >= batch_size)]  # fmt: skip
                if ready:
                    await self.flush_behind(consumer.commit, ready)
                    last_flush |= dict.fromkeys(ready, time.monotonic())
                elif not messages:
                    await self.snapshot_idle()
                    await self.idle(consumer.commit)
        finally:
            try:
                if self.failed is None:  # (a failure raised already is on its way out)
                    await self.settle()
            finally:
                await consumer.close()  # checkpoints and commits through `on_revoke`
                self.stopped.set()

    async def stop(self, timeout_s: float = 60.0) -> None:
        self.stopping = True
        if self._loop is not None:
            await asyncio.wait_for(self.stopped.wait(), timeout_s)

    async def take(self, messages: Sequence[Message]) -> None:
        """Fold a consumed batch, partition by partition, each pipeline's topics together."""
        by_tp: dict[TopicPartition, list[Message]] = {}
        for message in messages:  # the only per-message work of the engine
            tp = (message.topic() or "", message.partition() or 0)
            found = by_tp.get(tp)
            if found is None:
                by_tp[tp] = [message]
            else:
                found.append(message)
        groups: dict[tuple[Pipeline, int], dict[str, list[Message]]] = {}
        for (topic, partition), in_order in by_tp.items():
            pipeline = self.pipeline_of[topic]
            pending = self.pending[pipeline.name]
            pending.offsets[(topic, partition)] = (in_order[-1].offset() or 0) + 1
            pending.consumed[topic] += len(in_order)
            if topic in self.timed_topics:
                times = pending.timestamps.setdefault(topic, [])
                times += [ms for kind, ms in (m.timestamp() for m in in_order) if kind]
            groups.setdefault((pipeline, partition), {})[topic] = in_order
        for (pipeline, partition), by_topic in groups.items():
            firsts = {t: by_topic[t][0].offset() or 0 for t in by_topic}
            await self._ensure(pipeline, partition, firsts)
            batch = {t: by_topic[t] for t in pipeline.topics if t in by_topic}

            async def reset(
                pipeline: Pipeline = pipeline, partition: int = partition, firsts: dict[str, int] = firsts
            ) -> None:
                await self._reset(pipeline, partition, firsts)

            folded = await fold_isolating(pipeline, partition, batch, replay=False, reset=reset)
            self.pending[pipeline.name].folded.add(folded)
            if self.snapshots is not None:
                self.snapshots.folded(pipeline.name, partition, sum(len(m) for m in batch.values()))
        self.observer.batch_consumed(len(messages))
        self._report_positions(set(by_tp))

    async def _ensure(self, pipeline: Pipeline, partition: int, firsts: Mapping[str, int]) -> None:
        if (pipeline.name, partition) in self.recovery.ready:
            return
        await self.settle()
        ends = dict(firsts)
        missing = [(t, partition) for t in pipeline.topics if t not in ends]
        if missing:
            assert self.consumer is not None
            committed = await self.consumer.committed(missing)
            ends |= {t: committed.get((t, partition), 0) for t, _ in missing}
        for topic, end in ends.items():
            self.durable.setdefault((topic, partition), end)
        await self.recovery.ensure(pipeline, partition, ends)

    async def _reset(self, pipeline: Pipeline, partition: int, firsts: Mapping[str, int]) -> None:
        """The partition's state just before this batch, rebuilt: what is committed is recovered
        (its rows are durable), the rest is folded again (its rows are pending)."""
        await self.settle()  # what was in flight is durable now, not folded again
        durable, spans_pending = {}, {}
        for topic in pipeline.topics:
            durable[topic] = self.durable.get((topic, partition), 0)
            pending_offsets = self.pending[pipeline.name].offsets
            first = firsts.get(topic, pending_offsets.get((topic, partition), durable[topic]))
            spans_pending[topic] = (durable[topic], first)
        await self.recovery.rebuild_to(pipeline, partition, durable)
        tail = await self.recovery.read(pipeline.topics, partition, spans_pending)
        # Folded before on this same state, so it folds again; its letters and tallies are pending.
        await fold_prepared(pipeline, partition, tail, replay=False)

    async def flush(self, commit: Any, names: Sequence[str] | None = None, *, final: bool = False) -> None:
        """Drain the pipelines named (all by default) and checkpoint what they folded, in one round;
        then save the snapshots that are due (all changed ones if ``final``: partitions leave).
        Returns once it is durable."""
        await self.settle()
        done, taken = self._drain(names, final=final)
        await self._complete(done, taken, commit)

    async def flush_behind(self, commit: Any, names: Sequence[str]) -> None:
        """`flush`, returning once the pipelines are drained: the checkpoint completes behind the
        folding of the next batches (`settle` waits for it)."""
        await self.settle()
        done, taken = self._drain(names, final=False)
        self.inflight = asyncio.create_task(self._complete(done, taken, commit))

    async def settle(self) -> None:
        """Wait for the checkpoint in flight, if any; its failure is raised here, and to every
        later flush."""
        task = self.inflight
        if task is not None:
            try:
                await task
            except BaseException as exc:
                self.failed = self.failed or exc
                raise
            finally:
                if self.inflight is task:
                    self.inflight = None
        if self.failed is not None:
            failed = repr(self.failed)
            raise RuntimeError(f"an earlier checkpoint failed ({failed}): nothing later is checkpointed")

    def _drain(self, names: Sequence[str] | None, *, final: bool) -> tuple[Pending, list[Any]]:
        """What the pipelines named folded since their last drain, with their write stamps, and the
        snapshots due now (taken at this very instant, so they cover exactly these offsets)."""
        done, taken = Pending(), []
        for pipeline in self.pipelines:
            if names is None or pipeline.name in names:
                pending, self.pending[pipeline.name] = self.pending[pipeline.name], Pending()
                closing = getattr(
                    pipeline, "closing", None
                )  # optional: the last drain before partitions leave
                if final and closing is not None:
                    closing()
                pending.drained = drained = pipeline.drain()
                positions = self._positions(pipeline, self.durable | pending.offsets)
                stamp = {p: fence(sum(at.values())) for p, at in positions.items()}
                # A partition lost since it was folded has no position: its leftovers get the lowest
                # fence, so whatever its next owner writes wins (and its offsets are not committed).
                lowest, sources = fence(0), drained.sources
                drained.stamps = {t: [stamp.get(p, lowest) for p in parts] for t, parts in sources.items()}
                done.add(pending)
                if self.snapshots is not None and pipeline.stateful:
                    taken += self.snapshots.capture(pipeline, positions, final=final)
        return done, taken

    async def _complete(self, done: Pending, taken: list[Any], commit: Any) -> None:
        await self.checkpoint.commit(done, commit)
        self.durable |= done.offsets
        if taken:
            assert self.snapshots is not None
            await self.snapshots.save(taken)

    async def snapshot_idle(self) -> None:
        """Snapshots that fell due while nothing new came in (a burst, then quiet): everything
        folded is durable, so each state covers exactly the durable offsets."""
        if self.snapshots is None:
            return
        await self.settle()
        taken = []
        for pipeline in self.pipelines:
            if pipeline.stateful and not self.pending[pipeline.name].offsets:
                taken += self.snapshots.capture(pipeline, self._positions(pipeline, self.durable))
        if taken:
            await self.snapshots.save(taken)

    async def idle(self, commit: Any) -> None:
        """Nothing came in: each pipeline with an ``idle(partitions, now)`` hook hears which of its
        partitions this worker owns (e.g. to announce that they went quiet); one whose hook put
        records out is checkpointed now."""
        now, names = time.monotonic(), []
        for pipeline in self.pipelines:
            hook = getattr(pipeline, "idle", None)
            if hook is not None and hook({p for t, p in self.assigned if t == pipeline.topics[0]}, now):
                names.append(pipeline.name)
        if names:
            await self.flush_behind(commit, names)

    def _positions(
        self, pipeline: Pipeline, offsets: Mapping[TopicPartition, int]
    ) -> dict[int, dict[str, int]]:
        """Partition -> the positions its state covers, for each ready partition of ``pipeline``."""
        ready = [p for name, p in self.recovery.ready if name == pipeline.name]
        return {p: {t: offsets[(t, p)] for t in pipeline.topics} for p in ready
                if all((t, p) in offsets for t in pipeline.topics)}  # fmt: skip

    def _report_positions(self, tps: set[TopicPartition]) -> None:
        assert self.consumer is not None
        positions = {tp: self.pending[self.pipeline_of[tp[0]].name].offsets[tp] for tp in tps}
        watermarks = {}
        for topic, partition in tps:
            mark = self.pipeline_of[topic].watermark(partition)
            if mark is not None:
                watermarks[(topic, partition)] = mark
        self.observer.positions(self.consumer.lag(positions), watermarks)

    # Rebalance callbacks: on the consumer's thread, inside `consume` (the event loop is free).

    def on_revoke(self, tps: list[TopicPartition]) -> None:
        if self._loop is None or self.consumer is None:
            return
        committed: dict[TopicPartition, int] = {}

        async def keep(offsets: dict[TopicPartition, int]) -> None:
            committed.update(offsets)

        try:
            asyncio.run_coroutine_threadsafe(self.flush(keep, final=True), self._loop).result(timeout=120)
        except Exception as exc:  # the sink is down: the next owner re-reads what is not committed
            log.warning("could not checkpoint before partitions %s were revoked: %s", tps, exc)
            self.on_lost(tps)
            return
        # The whole durable position, not only this flush's: an earlier asynchronous commit may
        # have been lost, and a partition given back would then re-read (and count) folded events.
        durable = {tp: self.durable[tp] for tp in tps if tp in self.durable}
        self.assigned -= set(tps)
        if self.consumer.commit_now(committed | durable):
            self.suspended |= set(tps)
        else:  # kept state would be ahead of the group's offsets: rebuild it if it comes back
            self._forget(tps)
        self.observer.partitions_gone(tps)

    def on_assign(self, tps: list[TopicPartition]) -> None:
        self.assigned |= set(tps)
        self._forget(self.suspended - set(tps))
        self.suspended.clear()
        for problem in copartitioning_problems(self.pipelines, tps):
            log.error("%s", problem)

    def on_lost(self, tps: list[TopicPartition]) -> None:
        self.assigned -= set(tps)
        self._forget(tps)
        for pending in self.pending.values():
            for tp in tps:
                pending.offsets.pop(tp, None)
        self.observer.partitions_gone(list(tps))

    def _forget(self, tps: set[TopicPartition] | list[TopicPartition]) -> None:
        for topic, partition in tps:
            pipeline = self.pipeline_of.get(topic)
            if pipeline is not None:
                self.recovery.forget(pipeline, [partition])
            self.durable.pop((topic, partition), None)


def copartitioning_problems(pipelines: Sequence[Pipeline], tps: Sequence[TopicPartition]) -> list[str]:
    """A pipeline whose topics did not get the same partition numbers cannot join them exactly
    (the range assignor guarantees it when the topics have equal partition counts)."""
    problems = []
    for pipeline in pipelines:
        numbers = {t: sorted(p for topic, p in tps if topic == t) for t in pipeline.topics}
        if len({tuple(n) for n in numbers.values()}) > 1:
            problems.append(f"{pipeline.name}: its topics are not co-partitioned in this assignment "
                            f"({numbers}): give them the same partition count")  # fmt: skip
    return problems
