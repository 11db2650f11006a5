"""A worker killed with SIGKILL mid-stream and restarted: the CTR rows still equal the oracle.

The restarted worker resumes from the last committed offset with no state in memory; it
rebuilds each partition's state from the log first, then re-delivered events overwrite the
same rows with the same counts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from streams.ctr.generator import ClickstreamGenerator
from streams.io.kafka import committed_offsets
from streams.produce import produce
from streams.settings import Settings
from tests.integration.test_ctr_pipeline import (
    PROFILE,
    START,
    assert_rows_match_oracle,
    ctr_settings,
    oracle,
    read_partitions,
)
from tests.integration.test_smoke_pipeline import metric, scrape
from tests.support import running_worker, settings_env, wait_until

pytestmark = pytest.mark.integration
__all__ = ["ctr_settings"]  # the fixture, re-used


def high_watermarks(settings: Settings, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": "watermarks"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions
        }
    finally:
        consumer.close()


def test_kill_9_mid_stream_then_restart_gives_the_oracle(ctr_settings: Settings, tmp_path: Path) -> None:
    settings = ctr_settings
    topic = settings.topics.ad_events
    messages = list(ClickstreamGenerator(PROFILE, seed=23, start_ms=START, rate=100).messages(24_000))
    assert produce(settings.kafka, topic, messages).failed == 0

    log = (tmp_path / "first-worker.log").open("wb")
    first = subprocess.Popen(
        [sys.executable, "-m", "streams", "worker"],
        env={**os.environ, **settings_env(settings)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(
            lambda: (
                metric(scrape(settings), "streams_events_consumed_total", topic=topic) >= len(messages) // 3
            ),
            180,
            "the first worker to be a third through",
            interval_s=0.2,
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
        log.close()
    group = f"{settings.worker.app_id}-{settings.worker.pipeline_version}"
    ends = high_watermarks(settings, topic)
    assert committed_offsets(settings.kafka, group, topic, ends) != ends, "killed too late to matter"

    with running_worker(settings, tmp_path):
        wait_until(
            lambda: committed_offsets(settings.kafka, group, topic, ends) == ends,
            240,
            "the restarted worker to commit every offset",
            interval_s=1,
        )

    expected = oracle(read_partitions(settings, topic))
    assert_rows_match_oracle(settings, expected)
