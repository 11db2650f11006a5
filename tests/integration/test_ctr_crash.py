"""A worker killed with SIGKILL mid-stream and restarted: the CTR rows still equal the oracle.

The restarted worker resumes from the last committed offset with no state in memory; it
rebuilds each partition's state from the log first, then re-delivered events overwrite the
same rows with the same counts.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from streams.settings import Settings
from tests.integration.faults import (
    caught_up,
    produce_clickstream,
    start_worker,
    wait_caught_up,
    wait_consumed,
)
from tests.integration.test_ctr_pipeline import (
    assert_rows_match_oracle,
    ctr_settings,
    oracle,
    read_partitions,
)
from tests.support import running_worker

pytestmark = pytest.mark.integration
__all__ = ["ctr_settings"]  # the fixture, re-used


def test_kill_9_mid_stream_then_restart_gives_the_oracle(ctr_settings: Settings, tmp_path: Path) -> None:
    settings = ctr_settings
    topic = settings.topics.ad_events
    ends = {topic: produce_clickstream(settings, seed=23, impressions=24_000)}
    first = start_worker(settings, tmp_path / "first-worker.log")
    try:
        wait_consumed(
            settings, topic, sum(ends[topic].values()) // 3, "the first worker to be a third through"
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert not caught_up(settings, ends), "killed too late to matter"

    with running_worker(settings, tmp_path):
        wait_caught_up(settings, ends)

    assert_rows_match_oracle(settings, oracle(read_partitions(settings, topic)))
