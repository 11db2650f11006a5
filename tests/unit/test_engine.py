"""The engine in process: a fake consumer over an in-memory log, an in-memory sink and outputs.

A small counting pipeline (the count of each key so far, per partition) is the oracle's mirror:
whatever the engine does (checkpoints, rebalances, crashes between steps, a fold that raises),
the rows must equal the counts computed directly from the log.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterable
from typing import Any, ClassVar

import orjson
import pytest

from streams.engine.checkpoint import Checkpoint, Pending
from streams.engine.pipeline import Batch, Drained, Folded, coordinates_of
from streams.engine.testing import Harness, MemoryLog, Refused
from streams.events import DeadLetter, Rejected
from streams.sink import MemorySink
from streams.tables import DEAD_LETTERS

TOPIC = "events"


class Counting:
    """Counts of each key per partition; `{"boom": ...}` makes the fold raise (a bug)."""

    name = "counting"
    topics = (TOPIC,)
    stateful = True
    tables: ClassVar[dict[str, tuple[str, ...]]] = {"counts": ("partition", "key")}

    def __init__(self) -> None:
        self.states: dict[int, Counter[str]] = {}
        self.changed: set[tuple[int, str]] = set()

    def fold(self, partition: int, batch: Batch, *, replay: bool = False) -> Folded:
        folded = Folded()
        state = self.states.setdefault(partition, Counter())
        for message in batch.get(TOPIC, ()):
            try:
                event = orjson.loads(message.value() or b"")
            except orjson.JSONDecodeError:
                reject = Rejected("malformed_json", "not JSON")
                folded.letters.append(DeadLetter(message.value() or b"", coordinates_of(message), reject))
                continue
            state[event["key"]] += 1  # a half-done fold: the key is counted before the crash below
            if "boom" in event:
                raise RuntimeError("a bug in the pipeline")
            if not replay:
                self.changed.add((partition, event["key"]))
                folded.tallies[f"processed:{TOPIC}"] += 1
        return folded

    def drain(self) -> Drained:
        rows = [{"partition": p, "key": k, "count": self.states[p][k]} for p, k in sorted(self.changed)
                if p in self.states]  # fmt: skip
        self.changed = set()
        return Drained(rows={"counts": rows}, records={"results": [(b"k", r) for r in rows]})

    def forget(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.states.pop(p, None)
            self.changed = {(q, k) for q, k in self.changed if q != p}

    def watermark(self, partition: int) -> int | None:
        return None


def event(key: str, **extra: Any) -> bytes:
    return orjson.dumps({"key": key, **extra})


def fill(log: MemoryLog, n: int, partitions: int = 2, *, bad_every: int = 0, boom_at: int = -1) -> None:
    for i in range(n):
        p = i % partitions
        if bad_every and i % bad_every == bad_every - 1:
            log.append(TOPIC, p, b"{not json")
        elif i == boom_at:
            log.append(TOPIC, p, event(f"k{i % 7}", boom=True))
        else:
            log.append(TOPIC, p, event(f"k{i % 7}"))


def oracle(log: MemoryLog, skip: set[tuple[int, int]] = frozenset()) -> dict[tuple[int, str], int]:  # type: ignore[assignment]
    counts: Counter[tuple[int, str]] = Counter()
    for (_, p), messages in log.partitions.items():
        for m in messages:
            if (p, m.offset()) in skip:
                continue
            with contextlib.suppress(orjson.JSONDecodeError):
                counts[(p, orjson.loads(m.value() or b"")["key"])] += 1
    return dict(counts)


def counts(h: Harness) -> dict[tuple[int, str], int]:
    assert h.sink is not None
    return {key: row["count"] for key, row in h.sink.tables["counts"].items()}


def letters(h: Harness) -> list[dict[str, Any]]:
    return [value for _, value in h.outputs.topics.get("dead-letters", [])]


OWNED = [(TOPIC, 0), (TOPIC, 1)]


def test_rows_equal_the_oracle_and_every_bad_message_is_a_dead_letter_with_coordinates() -> None:
    h = Harness([Counting()])
    fill(h.log, 1000, bad_every=97)
    asyncio.run(h.run_until_idle(OWNED))
    assert counts(h) == oracle(h.log)
    bad = sorted((m.partition(), m.offset()) for ms in h.log.partitions.values() for m in ms
                 if m.value() == b"{not json")  # fmt: skip
    assert sorted((x["partition"], x["offset"]) for x in letters(h)) == bad
    assert {x["reason_kind"] for x in letters(h)} == {"malformed_json"}
    assert h.group == {(TOPIC, 0): 500, (TOPIC, 1): 500}


class Steps:
    """A sink and outputs that log the order of the checkpoint's steps."""

    def __init__(self) -> None:
        self.steps: list[str] = []

    async def write(self, table: str, rows: Any, stamps: Any = None) -> None:
        self.steps.append(f"rows:{table}")

    def output(self, topic: str) -> Any:
        steps = self.steps

        class Out:
            async def publish(self, records: Any) -> dict[int, Any]:
                steps.append(f"publish:{topic}")
                return {}

        return Out()


def test_the_checkpoint_writes_rows_then_records_then_dead_letters_then_commits() -> None:
    steps = Steps()
    observer = Harness([Counting()]).observer
    checkpoint = Checkpoint(steps, steps.output, "dl", "v1", observer,  # type: ignore[arg-type]
                            dead_letter_max_bytes=10_000, is_transient=lambda e: False)  # fmt: skip
    pending = Pending()
    pending.drained = Drained(rows={"counts": [{"key": "a"}]}, records={"results": [(b"k", {"a": 1})]})
    at = coordinates_of(h_message())
    pending.folded.letters.append(DeadLetter(b"x", at, Rejected("malformed_json", "bad")))
    pending.offsets[(TOPIC, 0)] = 8

    async def commit(offsets: dict[tuple[str, int], int]) -> None:
        steps.steps.append(f"commit:{offsets}")

    asyncio.run(checkpoint.commit(pending, commit))
    assert steps.steps == ["rows:counts", "publish:results", "publish:dl", "commit:{('events', 0): 8}"]


def h_message() -> Any:
    log = MemoryLog()
    log.append(TOPIC, 0, b"x")
    return log.partitions[(TOPIC, 0)][0]


class Crash(Exception):
    pass


@pytest.mark.parametrize("step", ["rows", "records", "letters", "commit"])
def test_a_crash_between_checkpoint_steps_loses_nothing_and_counts_nothing_twice(step: str) -> None:
    h = Harness([Counting()])
    fill(h.log, 600, bad_every=50)
    job = h.job()
    stage = {"rows": job.checkpoint.write_rows, "records": job.checkpoint.publish_records,
             "letters": job.checkpoint.send_letters}  # fmt: skip
    calls = {"n": 0}

    def crashing(original: Any) -> Any:
        async def run(*args: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == 3:  # the third checkpoint dies at this step
                raise Crash(step)
            return await original(*args)

        return run

    if step == "commit":
        original_commit = job.checkpoint.commit

        async def commit_then_crash(pending: Pending, commit: Any) -> None:
            async def crash_commit(offsets: Any) -> None:
                calls["n"] += 1
                if calls["n"] == 3:
                    raise Crash(step)
                await commit(offsets)

            await original_commit(pending, crash_commit)

        job.checkpoint.commit = commit_then_crash  # type: ignore[method-assign]
    else:
        setattr(job.checkpoint, {"rows": "write_rows", "records": "publish_records",
                                 "letters": "send_letters"}[step], crashing(stage[step]))  # fmt: skip
    with pytest.raises(Crash):
        asyncio.run(h.run_until_idle(OWNED, job))
    assert h.group != {(TOPIC, 0): 300, (TOPIC, 1): 300}  # it died before the end
    h.pipelines = [Counting()]  # a new process: state rebuilt from the log
    asyncio.run(h.run_until_idle(OWNED))
    assert counts(h) == oracle(h.log)
    coordinates = [(x["partition"], x["offset"]) for x in letters(h)]
    assert set(coordinates) == {(m.partition(), m.offset()) for ms in h.log.partitions.values() for m in ms
                                if m.value() == b"{not json"}  # fmt: skip


def test_a_revoked_partition_is_checkpointed_before_it_goes_and_its_next_owner_continues_exactly() -> None:
    h = Harness([Counting()])
    fill(h.log, 400)

    async def scenario() -> None:
        job, consumer, task = h.start(OWNED)
        while consumer.positions.get((TOPIC, 1), 0) == 0:  # something of partition 1 was consumed
            await asyncio.sleep(0.001)
        consumer.rebalance("revoke", [(TOPIC, 1)])
        while (TOPIC, 1) in consumer.assigned:
            await asyncio.sleep(0.001)
        revoked_at = h.group[(TOPIC, 1)]
        assert revoked_at == consumer.positions[(TOPIC, 1)]  # everything folded was committed
        while h.group.get((TOPIC, 0), 0) < 200:
            await asyncio.sleep(0.001)
        await job.stop()
        await task
        # the next owner: a new process that rebuilds partition 1 from the log
        await h.successor([Counting()]).run_until_idle([(TOPIC, 1)])

    asyncio.run(scenario())
    assert counts(h) == oracle(h.log)


def test_a_lost_partition_is_forgotten_uncommitted_and_reread_by_its_next_owner() -> None:
    h = Harness([Counting()])
    fill(h.log, 400)

    async def scenario() -> None:
        job, consumer, task = h.start(OWNED)
        await asyncio.sleep(0)
        consumer.rebalance("lost", [(TOPIC, 0)])
        while (TOPIC, 0) in consumer.assigned or h.group.get((TOPIC, 1), 0) < 200:
            await asyncio.sleep(0.001)
        await job.stop()
        await task
        assert 0 not in job.pipelines[0].states  # type: ignore[attr-defined]
        await h.successor([Counting()]).run_until_idle([(TOPIC, 0)])

    asyncio.run(scenario())
    assert counts(h) == oracle(h.log)


def test_a_fold_that_raises_dead_letters_the_message_and_the_stream_goes_on() -> None:
    h = Harness([Counting()])
    fill(h.log, 500, boom_at=251)  # partition 1, offset 125
    asyncio.run(h.run_until_idle(OWNED))
    assert counts(h) == oracle(h.log, skip={(1, 125)})
    (letter,) = letters(h)
    assert (letter["partition"], letter["offset"], letter["reason_kind"]) == (1, 125, "processing_error")
    assert "RuntimeError" in letter["reason"] and "a bug in the pipeline" in letter["reason"]
    # A restart rebuilds past the same message the same way.
    h2 = Harness([Counting()], h.log, {}, sink=None)
    asyncio.run(h2.run_until_idle(OWNED))
    assert counts(h2) == counts(h)


def test_a_dead_letter_refused_for_good_is_kept_in_the_table_and_a_transient_refusal_is_retried() -> None:
    tries: Counter[bytes] = Counter()

    def refuse(topic: str, record: Any) -> Refused | None:
        key = record[0]
        if topic != "dead-letters":
            return None
        tries[key] += 1
        if key == b"events[0]@4":
            return Refused("MSG_SIZE_TOO_LARGE")
        if key == b"events[1]@4" and tries[key] < 3:
            return Refused("NOT_ENOUGH_REPLICAS", transient=True)
        return None

    h = Harness([Counting()])
    h.outputs.refuse = refuse
    fill(h.log, 20, bad_every=10)  # bad at 9 (partition 1 @4) and 19 (partition 1 @9)
    h.log.append(TOPIC, 0, b"{not json")  # partition 0 @10
    h.log.partitions[(TOPIC, 0)][4] = type(h.log.partitions[(TOPIC, 0)][4])(TOPIC, 0, 4, b"{not json")
    asyncio.run(h.run_until_idle(OWNED))
    assert h.sink is not None
    kept = h.sink.tables["dead_letters"]
    assert list(kept) == [("v1", TOPIC, 0, 4)]
    assert ("fallback", "events[0]@4") in h.observer.events
    sent = sorted(key for key, _ in h.outputs.topics["dead-letters"])
    assert sent == [b"events[0]@10", b"events[1]@4", b"events[1]@9"]
    assert tries[b"events[1]@4"] == 3


def test_an_assignment_that_splits_a_pipelines_topics_is_reported() -> None:
    from streams.engine.job import copartitioning_problems

    class TwoTopics(Counting):
        name = "two"
        topics = ("a", "b")

    assert copartitioning_problems([TwoTopics()], [("a", 0), ("b", 0), ("a", 2), ("b", 2)]) == []
    (problem,) = copartitioning_problems([TwoTopics()], [("a", 0), ("b", 1)])
    assert problem.startswith("two: its topics are not co-partitioned")


class SlowSink(MemorySink):
    """A sink whose writes wait until released, and that records when each starts and ends."""

    def __init__(self, keys: Any) -> None:
        super().__init__(keys)
        self.release = asyncio.Event()
        self.log: list[str] = []

    async def write(self, table: str, rows: Any, stamps: Any = None) -> None:
        if table == "counts":
            self.log.append("start")
            await self.release.wait()
            self.log.append("end")
        await super().write(table, rows, stamps)


def test_a_checkpoint_completes_behind_the_folding_and_the_next_one_waits_for_it() -> None:
    pipeline = Counting()
    sink = SlowSink({**pipeline.tables, DEAD_LETTERS.name: DEAD_LETTERS.primary_key})
    h = Harness([pipeline], sink=sink)
    fill(h.log, 600)

    async def scenario() -> None:
        job, _, task = h.start(OWNED)
        while not sink.log:  # the first checkpoint's rows are on their way
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)
        # Meanwhile the job folded on: more than the first checkpoint took, nothing committed yet,
        # and no second checkpoint has started.
        assert sum(pipeline.states[p].total() for p in pipeline.states) > 100
        assert h.group == {} and sink.log == ["start"]
        sink.release.set()
        ends = {tp: len(h.log.partitions[tp]) for tp in OWNED}
        while any(h.group.get(tp, 0) < end for tp, end in ends.items()):
            await asyncio.sleep(0.01)
        await job.stop()
        await task
        # One checkpoint at a time, in order; committed offsets never go back.
        assert "start,start" not in ",".join(sink.log)
        commits = [offsets for kind, offsets in h.observer.events if kind == "checkpoint"]
        for tp in OWNED:
            seen = [c[tp] for c in commits if tp in c]
            assert seen == sorted(seen)

    asyncio.run(scenario())
    assert counts(h) == oracle(h.log)


def test_after_a_failed_checkpoint_nothing_later_is_committed() -> None:
    h = Harness([Counting()])
    fill(h.log, 600)
    job = h.job()
    original = job.checkpoint.write_rows
    calls = {"n": 0}

    async def failing(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            await asyncio.sleep(0.02)  # folding goes on meanwhile
            raise Crash("rows")
        return await original(*args)

    job.checkpoint.write_rows = failing  # type: ignore[method-assign]
    with pytest.raises(Crash):
        asyncio.run(h.run_until_idle(OWNED, job))
    commits = [offsets for kind, offsets in h.observer.events if kind == "checkpoint"]
    assert len(commits) == 1  # the first; the failed one and anything folded after it are not
    assert h.group == {tp: at for tp, at in commits[0].items()}
    h.pipelines = [Counting()]  # the next process re-reads from the last commit
    asyncio.run(h.run_until_idle(OWNED))
    assert counts(h) == oracle(h.log)


class Closing(Counting):
    """Records which drains were announced as the last before partitions leave."""

    def __init__(self) -> None:
        super().__init__()
        self.drains: list[bool] = []
        self._closing = False

    def closing(self) -> None:
        self._closing = True

    def drain(self) -> Drained:
        self.drains.append(self._closing)
        self._closing = False
        return super().drain()


def test_the_last_drain_before_a_revoke_is_announced() -> None:
    pipeline = Closing()
    h = Harness([pipeline])
    fill(h.log, 400)

    async def scenario() -> None:
        job, consumer, task = h.start(OWNED)
        while consumer.positions.get((TOPIC, 1), 0) == 0:
            await asyncio.sleep(0.001)
        before = len(pipeline.drains)
        consumer.rebalance("revoke", [(TOPIC, 1)])
        while (TOPIC, 1) in consumer.assigned:
            await asyncio.sleep(0.001)
        assert True in pipeline.drains[before:]  # the revoke's flush said so
        await job.stop()
        await task

    asyncio.run(scenario())
    assert pipeline.drains.count(True) >= 2 and pipeline.drains[-1] is True  # the revoke, then the stop
    assert False in pipeline.drains  # the periodic flushes did not
