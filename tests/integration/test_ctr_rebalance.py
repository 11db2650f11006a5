"""Two workers in one group; the second joins mid-stream (rebalance), then the first is killed
(rebalance again): whoever owns a partition rebuilds its state from the log, and the CTR rows
equal the oracle."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from streams.settings import Settings
from tests.integration.faults import produce_clickstream, start_worker, wait_caught_up, wait_consumed
from tests.integration.test_ctr_pipeline import (
    assert_rows_match_oracle,
    ctr_settings,
    oracle,
    read_partitions,
)
from tests.support import free_port, running_worker

pytestmark = pytest.mark.integration
__all__ = ["ctr_settings"]


def test_two_workers_one_killed_mid_stream(ctr_settings: Settings, tmp_path: Path) -> None:
    first_settings = ctr_settings
    second_settings = ctr_settings.model_copy(
        update={"worker": ctr_settings.worker.model_copy(update={"metrics_port": free_port()})}
    )
    topic = first_settings.topics.ad_events
    ends = {topic: produce_clickstream(first_settings, seed=37, impressions=30_000)}
    first = start_worker(first_settings, tmp_path / "first-worker.log")
    try:
        wait_consumed(first_settings, topic, 3000, "the first worker to get going")
        with running_worker(second_settings, tmp_path):
            wait_consumed(second_settings, topic, 1, "the second worker to receive partitions")
            first.send_signal(signal.SIGKILL)
            first.wait()
            wait_caught_up(first_settings, ends)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()

    assert_rows_match_oracle(first_settings, oracle(read_partitions(first_settings, topic)))
