"""Two workers in one group; the second joins mid-stream (rebalance), then the first is killed
(rebalance again): whoever owns a partition rebuilds its state from the log, and the CTR rows
equal the oracle."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from streams.settings import Settings
from tests.integration.ctr_oracle import START, assert_rows_match_oracle, oracle
from tests.integration.faults import (
    group_of,
    produce_clickstream,
    start_worker,
    wait_caught_up,
    wait_consumed,
)
from tests.integration.kafka_records import read_partitions
from tests.support import free_port, running_worker, wait_until

pytestmark = pytest.mark.integration


def members_with_partitions(settings: Settings, topic: str) -> int:
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    group_id = group_of(settings, topic)
    group = admin.describe_consumer_groups([group_id])[group_id].result(timeout=10)
    return sum(1 for m in group.members if any(tp.topic == topic for tp in m.assignment.topic_partitions))


def test_two_workers_one_killed_mid_stream(ctr_settings: Settings, tmp_path: Path) -> None:
    first_settings = ctr_settings
    second_settings = ctr_settings.model_copy(
        update={"worker": ctr_settings.worker.model_copy(update={"metrics_port": free_port()})}
    )
    topic = first_settings.topics.ad_events
    produce_clickstream(first_settings, seed=37, impressions=12_000)
    first = start_worker(first_settings, tmp_path / "first-worker.log")
    try:
        wait_consumed(first_settings, topic, 3000, "the first worker to get going")
        with running_worker(second_settings, tmp_path):
            wait_until(
                lambda: members_with_partitions(first_settings, topic) == 2,
                180,
                "both workers to own partitions",
                interval_s=0.5,
            )
            # More traffic once both own partitions; then one of them dies mid-stream.
            later = START + 12_000 * 10  # event time goes on where the first part ended
            ends = {topic: produce_clickstream(first_settings, seed=38, impressions=24_000, start_ms=later)}
            wait_consumed(second_settings, topic, 1, "the second worker to process its partitions")
            first.send_signal(signal.SIGKILL)
            first.wait()
            wait_caught_up(first_settings, ends)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()

    assert_rows_match_oracle(first_settings, oracle(read_partitions(first_settings, topic)))
