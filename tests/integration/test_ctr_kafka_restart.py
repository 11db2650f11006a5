"""Kafka (the only broker) stopped mid-stream and started again: the worker reconnects and
resumes where it committed, and the CTR rows equal the oracle."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streams.ctr.generator import ClickstreamGenerator
from streams.io.kafka import committed_offsets
from streams.produce import produce
from streams.runtime import manager
from streams.settings import Settings
from tests.integration.test_ctr_crash import high_watermarks
from tests.integration.test_ctr_pipeline import (
    PROFILE,
    START,
    assert_rows_match_oracle,
    ctr_settings,
    oracle,
    read_partitions,
)
from tests.integration.test_smoke_pipeline import metric, scrape
from tests.support import running_worker, wait_until

pytestmark = pytest.mark.integration
__all__ = ["ctr_settings"]
OUTAGE_S = 15


def test_kafka_restart_mid_stream(ctr_settings: Settings, tmp_path: Path) -> None:
    settings = ctr_settings
    topic = settings.topics.ad_events
    messages = list(ClickstreamGenerator(PROFILE, seed=29, start_ms=START, rate=100).messages(24_000))
    assert produce(settings.kafka, topic, messages).failed == 0
    group = f"{settings.worker.app_id}-{settings.worker.pipeline_version}"
    ends = high_watermarks(settings, topic)

    with running_worker(settings, tmp_path) as worker:
        wait_until(
            lambda: metric(scrape(settings), "streams_events_consumed_total", topic=topic) >= 4000,
            180,
            "the worker to get going",
            interval_s=0.2,
        )
        manager.down(settings, ["kafka"], report=lambda line: None)
        try:
            time.sleep(OUTAGE_S)
            assert worker.poll() is None, "the worker must ride out the broker restart"
        finally:
            manager.up(settings, ["kafka"], report=lambda line: None)
        wait_until(
            lambda: committed_offsets(settings.kafka, group, topic, ends) == ends,
            240,
            "the worker to catch up after the outage",
            interval_s=1,
        )

    assert_rows_match_oracle(settings, oracle(read_partitions(settings, topic)))
