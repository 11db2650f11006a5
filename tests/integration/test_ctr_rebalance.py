"""Two workers in one group; the second joins mid-stream (rebalance), then the first is killed
(rebalance again): whoever owns a partition rebuilds its state from the log, and the CTR rows
equal the oracle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from streams.ctr.generator import ClickstreamGenerator
from streams.io.kafka import committed_offsets
from streams.produce import produce
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
from tests.support import free_port, running_worker, settings_env, wait_until

pytestmark = pytest.mark.integration
__all__ = ["ctr_settings"]


def test_two_workers_one_killed_mid_stream(ctr_settings: Settings, tmp_path: Path) -> None:
    first_settings = ctr_settings
    second_settings = ctr_settings.model_copy(
        update={"worker": ctr_settings.worker.model_copy(update={"metrics_port": free_port()})}
    )
    topic = first_settings.topics.ad_events
    messages = list(ClickstreamGenerator(PROFILE, seed=37, start_ms=START, rate=100).messages(30_000))
    assert produce(first_settings.kafka, topic, messages).failed == 0
    group = f"{first_settings.worker.app_id}-{first_settings.worker.pipeline_version}"
    ends = high_watermarks(first_settings, topic)

    log = (tmp_path / "first-worker.log").open("wb")
    first = subprocess.Popen(
        [sys.executable, "-m", "streams", "worker"],
        env={**os.environ, **settings_env(first_settings)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(
            lambda: metric(scrape(first_settings), "streams_events_consumed_total", topic=topic) >= 3000,
            180,
            "the first worker to get going",
            interval_s=0.2,
        )
        with running_worker(second_settings, tmp_path):
            wait_until(
                lambda: metric(scrape(second_settings), "streams_events_consumed_total", topic=topic) > 0,
                120,
                "the second worker to receive partitions",
                interval_s=0.2,
            )
            first.send_signal(signal.SIGKILL)
            first.wait()
            wait_until(
                lambda: committed_offsets(first_settings.kafka, group, topic, ends) == ends,
                300,
                "the surviving worker to commit every offset",
                interval_s=1,
            )
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        log.close()

    assert_rows_match_oracle(first_settings, oracle(read_partitions(first_settings, topic)))
