"""Bounded recovery on the real services: snapshots in Cassandra, restored on restart.

A worker catches up and stops (its revoke saves a snapshot per partition); one stored snapshot is
then corrupted in Cassandra, and another is cut short as a kill -9 in the middle of its write
would leave it. More traffic arrives and a new worker starts: it refuses both (counted by reason),
restores the older snapshot of those partitions and the newest of the others, folds only the log
after them, and every row equals the oracle over the whole topic.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.io.cassandra import connect
from streams.settings import Settings
from tests.integration.ctr_oracle import START, assert_rows_match_oracle, oracle
from tests.integration.faults import produce_clickstream, wait_caught_up
from tests.integration.kafka_records import read_partitions
from tests.support import metric, running_worker, scrape, wait_until

pytestmark = pytest.mark.integration


def snapshots(settings: Settings) -> dict[int, list[tuple[int, int]]]:
    """partition -> (snapshot id, chunks) of the stored CTR snapshots, newest first."""
    cluster, session = connect(settings.cassandra, keyspace=settings.cassandra.keyspace)
    try:
        rows = session.execute(
            "SELECT source_partition, snapshot_id, chunks FROM state_snapshots "
            "WHERE chunk = 0 ALLOW FILTERING"
        )
        found: dict[int, list[tuple[int, int]]] = {}
        for r in rows:
            found.setdefault(r.source_partition, []).append((r.snapshot_id, r.chunks))
        return {p: sorted(ids, reverse=True) for p, ids in found.items()}
    finally:
        cluster.shutdown()


def damage(settings: Settings, partition: int, snapshot_id: int, cql: str) -> None:
    cluster, session = connect(settings.cassandra, keyspace=settings.cassandra.keyspace)
    try:
        version = settings.worker.pipeline_version
        session.execute(cql, (version, "ctr", partition, snapshot_id))
    finally:
        cluster.shutdown()


def test_a_restart_uses_snapshots_and_refuses_the_corrupt_and_the_cut_ones(
    ctr_settings: Settings, tmp_path: Path
) -> None:
    worker = ctr_settings.worker.model_copy(
        update={"pipelines": ("ctr",), "snapshot_every_messages": 1, "catchup_flush_interval_s": 0.2}
    )  # a snapshot of every partition at every checkpoint that changed it
    settings = ctr_settings.model_copy(update={"worker": worker})
    topic = settings.topics.ad_events
    with running_worker(settings, tmp_path):  # two rounds: two snapshots of each partition at least
        wait_caught_up(settings, {topic: produce_clickstream(settings, seed=41, impressions=6_000)})
        later = START + 60_000  # after the first round (6,000 impressions at 100/s)
        ends = {topic: produce_clickstream(settings, seed=40, impressions=6_000, start_ms=later)}
        wait_caught_up(settings, ends)
    stored = snapshots(settings)
    assert len(stored) == settings.kafka.partitions and all(len(s) == 2 for s in stored.values()), stored
    corrupt, cut, *_ = sorted(stored)
    damage(settings, corrupt, stored[corrupt][0][0],
           "UPDATE state_snapshots SET data = 0xdeadbeef WHERE pipeline_version = %s AND pipeline = %s "
           "AND source_partition = %s AND snapshot_id = %s AND chunk = 0")  # fmt: skip
    # A kill -9 between the chunks of a write: chunk 0 (with the metadata) landed, a later one did
    # not (the snapshot must span two chunks: cut the data of its chunk 0 short instead if not).
    newest_id, chunks = stored[cut][0]
    if chunks > 1:
        cql = ("DELETE FROM state_snapshots WHERE pipeline_version = %s AND pipeline = %s "
               f"AND source_partition = %s AND snapshot_id = %s AND chunk = {chunks - 1}")  # fmt: skip
    else:
        cql = ("UPDATE state_snapshots SET data = 0x00 WHERE pipeline_version = %s AND pipeline = %s "
               "AND source_partition = %s AND snapshot_id = %s AND chunk = 0")  # fmt: skip
    damage(settings, cut, newest_id, cql)

    later = START + 120_000  # after the first two rounds
    ends = {topic: produce_clickstream(settings, seed=42, impressions=6_000, start_ms=later)}
    with running_worker(settings, tmp_path):
        wait_caught_up(settings, ends)
        text = wait_until(
            lambda: (t := scrape(settings)) and metric(t, "streams_recoveries_total") >= len(stored) and t,
            60,
            "every partition recovered",
        )
    assert metric(text, "streams_recoveries_total", pipeline="ctr", source="snapshot") == len(stored)
    assert metric(text, "streams_recoveries_total", pipeline="ctr", source="log") == 0
    assert metric(text, "streams_snapshots_rejected_total", reason="corrupt") == 1 + (chunks == 1)
    assert metric(text, "streams_snapshots_rejected_total", reason="incomplete") == (chunks > 1)
    refolded = metric(text, "streams_recovery_messages_total", pipeline="ctr")
    assert 0 < refolded < 6_000, refolded  # the tail after the older snapshots, not the history
    assert_rows_match_oracle(settings, oracle(read_partitions(settings, topic)))


def test_the_cassandra_store_keeps_chunks_prunes_and_notices_a_missing_chunk(
    isolated: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store itself: a state split over chunks comes back whole; with a chunk gone (a write cut
    short by kill -9) it is `incomplete` and the older snapshot is restored; pruning keeps the
    newest."""
    import asyncio

    from streams.engine.snapshots import Snapshot, SnapshotInfo, Snapshots, checksum
    from streams.engine.testing import Recorder
    from streams.io import snapshot_store
    from streams.io.snapshot_store import CassandraSnapshotStore

    monkeypatch.setattr(snapshot_store, "CHUNK_BYTES", 1000)

    class Restored:  # the part of a pipeline `Snapshots.restore` uses
        name, topics, snapshot_format = "ctr", ("ad-events",), "ctr/x"
        state: bytes | None = None

        def restore(self, partition: int, data: bytes) -> None:
            self.state = data

        def forget(self, partitions: object) -> None:
            self.state = None

    def snapshot(offset: int, data: bytes) -> Snapshot:
        info = SnapshotInfo("ctr", 0, {"ad-events": offset}, "ctr/x", "pins", checksum(data), len(data), 1)
        return Snapshot(info, data)

    older, newer = bytes(range(256)) * 18, bytes(reversed(range(256))) * 20  # 5 and 6 chunks
    cluster, session = connect(isolated.cassandra, keyspace=isolated.cassandra.keyspace)
    try:
        store = CassandraSnapshotStore(session, isolated.cassandra.keyspace, "v1")
        recorder = Recorder()

        async def scenario() -> None:
            await store.save(snapshot(100, older))
            await store.save(snapshot(200, newer))
            found = await store.candidates("ctr", 0)
            assert [(i.snapshot_id, i.chunks) for i in found] == [(200, 6), (100, 5)]
            assert await store.data(found[0]) == newer and await store.data(found[1]) == older
            session.execute(
                "DELETE FROM state_snapshots WHERE pipeline_version = 'v1' AND pipeline = 'ctr' "
                "AND source_partition = 0 AND snapshot_id = 200 AND chunk = 3"
            )
            assert await store.data(found[0]) is None
            pipeline = Restored()
            snapshots = Snapshots(store, "pins", recorder)
            assert await snapshots.restore(pipeline, 0, {"ad-events": 250}) == {"ad-events": 100}  # type: ignore[arg-type]
            assert pipeline.state == older
            assert recorder.seen("snapshot_rejected") == ["incomplete"]
            await store.prune("ctr", 0, 200)
            assert [i.snapshot_id for i in await store.candidates("ctr", 0)] == [200]

        asyncio.run(scenario())
    finally:
        cluster.shutdown()
