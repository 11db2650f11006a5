"""Two workers in one group; the second joins mid-stream (rebalance), then the first is killed while
both have uncommitted work (rebalance again): the survivor takes over the dead worker's partitions,
rebuilds their state from the log, and the CTR rows equal the oracle."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.settings import Settings
from tests.integration.ctr_oracle import START, assert_rows_match_oracle, oracle
from tests.integration.faults import (
    group_assignment,
    high_watermarks,
    kill_when,
    produce_clickstream,
    reported_partitions,
    start_worker,
    uncommitted,
    wait_caught_up,
    wait_consumed,
)
from tests.integration.kafka_records import read_partitions
from tests.support import free_port, metric, running_worker, scrape, wait_until

pytestmark = pytest.mark.integration


def test_two_workers_one_killed_mid_stream(ctr_settings: Settings, tmp_path: Path) -> None:
    # Small batches and short flush intervals: many commits, so each worker has folded-but-
    # uncommitted events at any moment of the backlog (as in the crash test).
    worker = ctr_settings.worker.model_copy(update={"batch_size": 1000, "catchup_flush_interval_s": 0.1})
    first_settings = ctr_settings.model_copy(update={"worker": worker})
    second_settings = first_settings.model_copy(
        update={"worker": worker.model_copy(update={"metrics_port": free_port()})}
    )
    topic = first_settings.topics.ad_events
    produce_clickstream(first_settings, seed=37, impressions=12_000)
    first = start_worker(first_settings, tmp_path / "first-worker.log")
    try:
        wait_consumed(first_settings, topic, 3000, "the first worker to get going")
        with running_worker(second_settings, tmp_path):
            wait_until(
                lambda: len(group_assignment(first_settings, topic)) == 2,
                180,
                "both workers to own partitions",
            )
            # More traffic once both own partitions; then one of them dies mid-stream, while every
            # member still has offsets to commit (checked immediately before the kill).
            later = START + 12_000 * 10  # event time goes on where the first part ended
            ends = {topic: produce_clickstream(first_settings, seed=38, impressions=24_000, start_ms=later)}
            before: dict[str, frozenset[int]] = {}

            def both_have_pending_work() -> bool:
                if metric(scrape(second_settings), "streams_events_consumed_total", topic=topic) < 1:
                    return False
                before.clear()
                before.update(group_assignment(first_settings, topic))
                pending = uncommitted(first_settings, topic, ends[topic])
                return len(before) == 2 and all(owned & pending.keys() for owned in before.values())

            kill_when(first, both_have_pending_work, "both workers processing with work pending")
            pending_at_kill = uncommitted(first_settings, topic, ends[topic])

            # The survivor, a member before the kill, alone owns every partition, the dead one's too.
            every_partition = frozenset(ends[topic])
            after = wait_until(
                lambda: (
                    (a := group_assignment(first_settings, topic)) and every_partition in a.values() and a
                ),
                180,
                "one member to own every partition",
            )
            ((survivor, _),) = after.items()
            assert survivor in before, "the survivor is not a member from before the kill"
            (dead,) = before.keys() - {survivor}
            taken_over = before[dead] & pending_at_kill.keys()
            assert taken_over, f"the dead worker's partitions {sorted(before[dead])} had no work pending"
            wait_caught_up(first_settings, ends)
            # ... and it is the second worker's process that did their pending work.
            assert reported_partitions(second_settings, topic) >= taken_over
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()

    print(
        f"\nrebalance: {dict((m[-6:], sorted(p)) for m, p in before.items())} before the kill; "
        f"uncommitted at the kill (committed, end): {pending_at_kill}"
    )
    assert high_watermarks(first_settings, topic) == ends[topic]
    assert_rows_match_oracle(first_settings, oracle(read_partitions(first_settings, topic)))
