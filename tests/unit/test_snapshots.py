"""State snapshots through the real engine (in process): a restart restores the newest usable
snapshot and folds only the log after it, and no bad snapshot ever changes a result.

Every scenario ends with the CTR rows equal to the independent oracle (`ctr_oracle`) and to a run
of the same log without snapshots; the fraud scenario with every row equal to a run without them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import zlib
from collections.abc import Callable
from typing import Any

from streams.compose import compose
from streams.ctr.generator import ClickstreamGenerator
from streams.ctr.pipeline import SCHEMA_FILE, CtrPipeline
from streams.ctr.processor import CtrProcessor
from streams.engine.job import Pacing
from streams.engine.snapshots import MemorySnapshotStore, Snapshot, SnapshotPolicy
from streams.engine.testing import Harness, MemoryLog
from streams.events import load_validator
from streams.fraud.generator import TransactionGenerator, TransactionProfile
from streams.settings import Settings
from streams.sink import MemorySink
from streams.worker import build_pipelines
from tests.integration.ctr_oracle import CTR_WINDOWS, PROFILE, START, oracle

TOPIC = "ad-events"
OWNED = [(TOPIC, 0), (TOPIC, 1)]
SETTINGS = Settings(ctr=CTR_WINDOWS)


def ctr_pipeline() -> CtrPipeline:
    c = compose(SETTINGS).ctr
    processor = CtrProcessor(c.config, c.priors, "v1", ci_level=c.ci_level, cell_policy=c.cell_policy)
    return CtrPipeline(processor, load_validator(SETTINGS.schemas_dir / SCHEMA_FILE), TOPIC, "ctr-results")


def clickstream(log: MemoryLog, impressions: int, seed: int = 7) -> None:
    generator = ClickstreamGenerator(PROFILE, seed=seed, start_ms=START, rate=200)
    for key, value in generator.messages(impressions):
        log.append(TOPIC, zlib.crc32(key) % 2, value, key)


def ad_counts(h: Harness) -> dict[tuple[str, str, int], tuple[int, int]]:
    assert h.sink is not None
    rows = h.sink.tables["ctr_ad_windows"].values()
    return {(r["window"], r["ad_id"], r["window_start"]): (r["impressions"], r["clicks"]) for r in rows}


def expected_counts(log: MemoryLog) -> dict[tuple[str, str, int], tuple[int, int]]:
    partitions = {p: [(m.offset(), m.value()) for m in ms] for (_, p), ms in log.partitions.items()}
    return {key: (i, c) for key, (i, c) in oracle(partitions)["ads"].items()}


def all_rows(h: Harness) -> dict[str, dict[Any, dict[str, Any]]]:
    assert h.sink is not None
    return {table: dict(rows) for table, rows in h.sink.tables.items()}


def reference(log: MemoryLog, pipelines: Callable[[], list[Any]], owned: list[tuple[str, int]]) -> Harness:
    """The same log through the engine without snapshots, in one go."""
    h = Harness(pipelines())
    h.log = log
    asyncio.run(h.run_until_idle(owned))
    return h


def two_runs(
    damage: Callable[[Harness], None] = lambda h: None,
    *,
    pins: str = "pins",
    first: int = 1500,
    second: int = 1500,
) -> Harness:
    """A run over the first part of the log that snapshots at every checkpoint, ``damage`` to the
    snapshots or the group, more log, then a new process that recovers and finishes."""
    h = Harness([ctr_pipeline()], snapshots=MemorySnapshotStore())
    clickstream(h.log, first)
    asyncio.run(h.run_until_idle(OWNED))
    damage(h)
    clickstream(h.log, second, seed=8)
    h.pins = pins
    successor = h.successor([ctr_pipeline()])
    asyncio.run(successor.run_until_idle(OWNED))
    return successor


def newest(h: Harness, partition: int) -> Snapshot:
    assert h.snapshots is not None
    kept = h.snapshots.kept[("ctr", partition)]
    return kept[max(kept)]


def older(h: Harness, partition: int) -> Snapshot:
    assert h.snapshots is not None
    kept = h.snapshots.kept[("ctr", partition)]
    return kept[min(kept)]


def assert_exact(h: Harness) -> None:
    assert ad_counts(h) == expected_counts(h.log)
    assert (
        all_rows(h)["ctr_ad_windows"]
        == all_rows(reference(h.log, lambda: [ctr_pipeline()], OWNED))["ctr_ad_windows"]
    )


def test_a_restart_restores_the_snapshot_and_folds_nothing_again() -> None:
    h = two_runs()
    assert h.observer.seen("recovered") == [("snapshot", 0), ("snapshot", 0)]
    assert h.observer.seen("snapshot_rejected") == []
    assert_exact(h)


def test_older_snapshots_are_pruned_to_the_kept_count() -> None:
    h = two_runs()
    assert h.snapshots is not None
    assert all(len(kept) == 2 for kept in h.snapshots.kept.values())


def test_a_snapshot_cut_short_by_a_kill_falls_back_to_the_older_one_and_its_tail() -> None:
    def cut(h: Harness) -> None:  # the process died while writing it: part of its bytes is stored
        s = newest(h, 0)
        newest_id = s.info.snapshot_id
        assert h.snapshots is not None
        h.snapshots.kept[("ctr", 0)][newest_id] = Snapshot(s.info, s.data[: len(s.data) // 2])

    h = two_runs(cut)
    assert h.observer.seen("snapshot_rejected") == ["corrupt"]
    recovered = dict(zip((0, 1), h.observer.seen("recovered"), strict=True))
    assert recovered[0][0] == "snapshot" and recovered[0][1] > 0  # the older one, then its tail
    assert recovered[1] == ("snapshot", 0)
    assert_exact(h)


def test_a_corrupted_snapshot_is_refused_by_its_checksum() -> None:
    def flip(h: Harness) -> None:
        for partition in (0, 1):
            s = newest(h, partition)
            data = bytearray(s.data)
            data[len(data) // 3] ^= 0x01
            assert h.snapshots is not None
            h.snapshots.kept[("ctr", partition)][s.info.snapshot_id] = Snapshot(s.info, bytes(data))

    h = two_runs(flip)
    assert h.observer.seen("snapshot_rejected") == ["corrupt", "corrupt"]
    assert all(source == "snapshot" and tail > 0 for source, tail in h.observer.seen("recovered"))
    assert_exact(h)


def test_snapshots_of_another_format_or_other_pins_are_never_restored() -> None:
    def reformat(h: Harness) -> None:
        assert h.snapshots is not None
        for kept in h.snapshots.kept.values():
            for i, s in kept.items():
                kept[i] = Snapshot(dataclasses.replace(s.info, format="ctr/0ld"), s.data)

    h = two_runs(reformat)
    assert h.observer.seen("snapshot_rejected") == ["format"] * 4
    assert h.observer.seen("recovered")[0][0] == "log"
    assert_exact(h)
    h = two_runs(pins="other pins")
    assert h.observer.seen("snapshot_rejected") == ["pins"] * 4
    assert_exact(h)


def test_a_snapshot_ahead_of_the_committed_offsets_is_skipped() -> None:
    def lose_commit(h: Harness) -> None:  # the last commit never landed
        for partition in (0, 1):
            h.group[(TOPIC, partition)] = older(h, partition).info.positions[TOPIC]

    h = two_runs(lose_commit)
    assert h.observer.seen("snapshot_rejected") == []
    assert [source for source, _ in h.observer.seen("recovered")] == ["snapshot", "snapshot"]
    assert_exact(h)


def test_a_rebalance_during_recovery_leaves_the_next_owner_exact() -> None:
    h = Harness([ctr_pipeline()], snapshots=MemorySnapshotStore())
    clickstream(h.log, 1500)
    asyncio.run(h.run_until_idle(OWNED))
    clickstream(h.log, 1500, seed=8)
    successor = h.successor([ctr_pipeline()])

    async def scenario() -> None:
        job, consumer, task = successor.start(OWNED)
        read = successor.log.read

        async def read_then_revoke(topic: str, partition: int, start: int | None, end: int) -> list[Any]:
            if partition == 1:  # partition 1 is taken away while it is being recovered
                consumer.rebalance("revoke", [(TOPIC, 1)])
            return await read(topic, partition, start, end)

        job.recovery.read_log = read_then_revoke
        while (TOPIC, 1) not in consumer.assigned or consumer.scheduled:
            await asyncio.sleep(0.001)
        while (TOPIC, 1) in consumer.assigned:
            await asyncio.sleep(0.001)
        while successor.group.get((TOPIC, 0), 0) < len(successor.log.partitions[(TOPIC, 0)]):
            await asyncio.sleep(0.001)
        await job.stop()
        await task
        await successor.successor([ctr_pipeline()]).run_until_idle([(TOPIC, 1)])

    asyncio.run(scenario())
    assert_exact(successor)


def fraud_scenario(count: int, seed: int) -> dict[str, list[tuple[bytes, bytes]]]:
    prefixes = compose(Settings()).fraud.ip_prefixes
    profile = TransactionProfile(customers=200, mean_gap_ms=60_000.0, label_delay_days=0.02)
    generator = TransactionGenerator(profile, seed=seed, start_ms=START, ip_prefixes=dict(prefixes))
    scenario = generator.scenario(count)
    return {"transactions": scenario.transactions, "labels": scenario.labels}


def fraud_log(log: MemoryLog, messages: dict[str, list[tuple[bytes, bytes]]], first_half: bool) -> None:
    """A half of each topic (labels in time order): some labels of the first half's transactions
    arrive in the second."""
    for topic, pairs in messages.items():
        half = len(pairs) // 2
        for key, value in pairs[:half] if first_half else pairs[half:]:
            log.append(topic, zlib.crc32(key) % 2, value, key)


def fraud_pipelines() -> list[Any]:
    composition = compose(Settings(worker={"pipelines": ("fraud",)}))  # type: ignore[arg-type]
    return build_pipelines(composition)


FRAUD_OWNED = [("transactions", 0), ("transactions", 1), ("labels", 0), ("labels", 1)]


def test_fraud_state_restored_from_a_snapshot_gives_every_row_of_a_run_without_one() -> None:
    h = Harness(fraud_pipelines(), snapshots=MemorySnapshotStore())
    messages = fraud_scenario(1200, seed=3)
    fraud_log(h.log, messages, first_half=True)
    asyncio.run(h.run_until_idle(FRAUD_OWNED))
    assert h.snapshots is not None
    for kept in h.snapshots.kept.values():  # the newest never landed: the older one and its tail
        del kept[max(kept)]
    fraud_log(h.log, messages, first_half=False)
    successor = h.successor(fraud_pipelines())
    asyncio.run(successor.run_until_idle(FRAUD_OWNED))
    assert all(source == "snapshot" and tail > 0 for source, tail in successor.observer.seen("recovered"))
    expected = reference(successor.log, fraud_pipelines, FRAUD_OWNED)
    got = all_rows(successor)
    labelled = [r for r in got["fraud_transactions"].values() if r.get("is_fraud") is not None]
    assert len(got["fraud_transactions"]) > 1000 and len(labelled) > 100
    assert got == all_rows(expected)


async def until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.001)


def test_counters_and_dead_letters_stay_exact_when_a_commit_is_lost_before_a_rebalance() -> None:
    """An asynchronous commit that never lands, then the partition is revoked and given back to
    the same worker: the revoke commits the whole durable position, so nothing is re-read."""
    h = Harness([ctr_pipeline()])
    clickstream(h.log, 3000)
    end = {tp: len(h.log.partitions[tp]) for tp in OWNED}

    async def scenario() -> None:
        job, consumer, task = h.start(OWNED)

        async def lost(offsets: Any) -> None:  # Kafka never answers the asynchronous commits
            return None

        consumer.commit = lost  # type: ignore[method-assign]
        await until(lambda: job.durable.get((TOPIC, 0)) == end[(TOPIC, 0)])
        assert h.group.get((TOPIC, 0), 0) < end[(TOPIC, 0)]  # folded, durable, not committed
        consumer.rebalance("revoke", [(TOPIC, 0)])
        consumer.rebalance("assign", [(TOPIC, 0)])
        await until(lambda: not consumer.scheduled and consumer.positions[(TOPIC, 0)] == end[(TOPIC, 0)])
        await until(lambda: all(job.durable.get(tp) == n for tp, n in end.items()))
        await job.stop()
        await task

    asyncio.run(scenario())
    partitions = {p: [(m.offset(), m.value()) for m in ms] for (_, p), ms in h.log.partitions.items()}
    expected = oracle(partitions)
    assert h.observer.tallies[f"duplicate:{TOPIC}"] == expected["duplicates"] > 0
    letters = [value for _, value in h.outputs.topics.get("dead-letters", [])]
    assert len(letters) == sum(expected["rejected"].values()) > 0
    assert len({(x["partition"], x["offset"]) for x in letters}) == len(letters)  # none twice
    assert ad_counts(h) == expected_counts(h.log)


def test_the_state_format_is_the_same_in_every_process() -> None:
    """A format that changed with the process (e.g. an address in it) would refuse every snapshot."""
    import subprocess
    import sys

    code = "from tests.unit.test_snapshots import ctr_pipeline; print(ctr_pipeline().snapshot_format)"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == ctr_pipeline().snapshot_format


class HeldSink(MemorySink):
    """The shared sink's tables, reached through a gate: a write waits until it opens (a
    revoked worker's batch in flight while the group moved on)."""

    def __init__(self, shared: MemorySink) -> None:
        self.__dict__.update(shared.__dict__)  # the same tables and cell stamps
        self.gate = asyncio.Event()
        self.held = 0
        self.landed = 0

    async def write(self, table: str, rows: Any, stamps: Any = None) -> None:
        self.held += 1
        await self.gate.wait()
        await super().write(table, rows, stamps)
        self.landed += 1


def test_a_zombie_batch_landing_after_the_new_owners_writes_does_not_win() -> None:
    """Worker A's first checkpoint is stuck in its Cassandra write; the group gives A's partitions
    to B, which recovers and writes everything; then A's stale batch lands. Its rows carry A's
    (lower) source positions as write timestamps, so B's newer cells stay."""
    h = Harness([ctr_pipeline()])
    clickstream(h.log, 3000)
    assert h.sink is not None
    held = HeldSink(h.sink)
    zombie = Harness([ctr_pipeline()], h.log, h.group, h.outputs, held)

    async def scenario() -> None:
        job, consumer, task = zombie.start(OWNED)
        await until(lambda: held.held > 0)  # A's first checkpoint is in flight, nothing committed
        consumer.commit_now = lambda offsets: False  # type: ignore[method-assign]  # fenced by Kafka

        async def refused(offsets: Any) -> None:
            return None

        consumer.commit = refused  # type: ignore[method-assign]
        await h.successor([ctr_pipeline()]).run_until_idle(OWNED)  # B: everything, committed
        assert ad_counts(h) == expected_counts(h.log)
        job.stopping = True
        held.gate.set()  # A's stale batch lands last
        await until(lambda: held.landed == held.held)
        await task

    asyncio.run(scenario())
    assert held.landed > 0
    assert ad_counts(h) == expected_counts(h.log)


def test_rows_folded_for_a_partition_lost_before_the_checkpoint_lose_to_its_next_owner() -> None:
    h = Harness(fraud_pipelines(), pacing=Pacing(100, 60.0, 60.0))  # no checkpoint until the stop
    fraud_log(h.log, fraud_scenario(400, seed=5), first_half=True)

    async def scenario() -> None:
        job, consumer, task = h.start(FRAUD_OWNED)
        await until(lambda: bool(job.pending["fraud"].offsets))
        job.stopping = True  # folded, not checkpointed: then partition 0 is lost
        consumer.rebalance("lost", [("transactions", 0), ("labels", 0)])
        await task

    asyncio.run(scenario())
    asyncio.run(h.successor(fraud_pipelines()).run_until_idle([("transactions", 0), ("labels", 0)]))
    expected = reference(h.log, fraud_pipelines, FRAUD_OWNED)
    assert all_rows(h) == all_rows(expected)


def test_a_worker_gone_quiet_after_a_burst_snapshots_without_new_messages() -> None:
    """The interval falls due after the last message: the idle job saves the snapshot then, so a
    kill -9 in a quiet period restores it (not only a clean stop)."""
    store = MemorySnapshotStore()
    h = Harness([ctr_pipeline()], snapshots=store,
                policy=SnapshotPolicy(interval_s=0.3, every_messages=10**9))  # fmt: skip
    clickstream(h.log, 1500)
    end = {tp: len(h.log.partitions[tp]) for tp in OWNED}

    async def scenario() -> None:
        job, _, task = h.start(OWNED)
        await until(lambda: all(job.durable.get(tp) == n for tp, n in end.items()))
        await until(lambda: len(store.kept) == 2, timeout_s=5)  # while it runs, before any stop
        covered = {p: max(kept) for (_, p), kept in store.kept.items()}
        assert covered == {p: end[(TOPIC, p)] for p in (0, 1)}
        await job.stop()
        await task

    asyncio.run(scenario())
