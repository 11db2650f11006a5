"""A worker killed with SIGKILL mid-stream and restarted: the CTR rows still equal the oracle.

The restarted worker resumes from the last committed offset with no state in memory; it
rebuilds each partition's state from the log first, then re-delivered events overwrite the
same rows with the same counts.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from streams.io.kafka import ensure_topics
from streams.settings import Settings
from streams.topics import raw_topic
from tests.integration.ctr_oracle import assert_rows_match_oracle, oracle
from tests.integration.faults import (
    high_watermarks,
    kill_when,
    produce_clickstream,
    start_worker,
    uncommitted,
    wait_caught_up,
)
from tests.integration.kafka_records import read_partitions
from tests.support import metric, running_worker, scrape

pytestmark = pytest.mark.integration


def test_kill_9_mid_stream_then_restart_gives_the_oracle(ctr_settings: Settings, tmp_path: Path) -> None:
    # Small batches and short flush intervals: many commits, so the kill lands between two of them
    # with work pending. The input arrives live (3,000 messages/s) while the worker runs: a backlog
    # of this size is folded and committed faster than the condition is polled (0.2 s).
    worker = ctr_settings.worker.model_copy(update={"batch_size": 1000, "catchup_flush_interval_s": 0.1})
    settings = ctr_settings.model_copy(update={"worker": worker})
    topic = settings.topics.ad_events
    ensure_topics(settings.kafka, [raw_topic(topic, settings)])
    produced: dict[int, int] = {}
    producer = threading.Thread(
        target=lambda: produced.update(produce_clickstream(settings, seed=23, impressions=24_000, rate=3000))
    )
    third = 8_000

    def mid_stream() -> bool:
        consumed = metric(scrape(settings), "streams_events_consumed_total", topic=topic)
        return consumed >= third and bool(uncommitted(settings, topic, high_watermarks(settings, topic)))

    first = start_worker(settings, tmp_path / "first-worker.log")
    producer.start()
    try:
        kill_when(first, mid_stream, "the first worker to be a third through, with offsets left to commit")
    finally:
        producer.join()
    ends = {topic: produced}
    pending = uncommitted(settings, topic, ends[topic])
    assert pending, "killed too late to matter"
    print(f"\nctr crash: killed with (committed, end) {pending}")

    with running_worker(settings, tmp_path):
        wait_caught_up(settings, ends)

    assert_rows_match_oracle(settings, oracle(read_partitions(settings, topic)))
