"""Shared steps of the fault tests: a worker process to kill, progress and catch-up waits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streams.ctr.generator import ClickstreamGenerator
from streams.io.kafka import committed_offsets
from streams.io.kafka import high_watermarks as kafka_high_watermarks
from streams.produce import produce
from streams.settings import Settings
from tests.integration.test_ctr_pipeline import PROFILE, START
from tests.integration.test_smoke_pipeline import metric, scrape
from tests.support import settings_env, wait_until


def group_of(settings: Settings) -> str:
    return f"{settings.worker.app_id}-{settings.worker.pipeline_version}"


def high_watermarks(settings: Settings, topic: str) -> dict[int, int]:
    return kafka_high_watermarks(settings.kafka, topic)


def produce_clickstream(
    settings: Settings, seed: int, impressions: int, start_ms: int = START
) -> dict[int, int]:
    """The seeded scenario (100 impressions per second of event time) on the settings' ad-events
    topic; returns the partitions' end offsets."""
    generator = ClickstreamGenerator(PROFILE, seed=seed, start_ms=start_ms, rate=100)
    messages = list(generator.messages(impressions))
    assert produce(settings.kafka, settings.topics.ad_events, messages).failed == 0
    return high_watermarks(settings, settings.topics.ad_events)


def start_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """`streams worker` as a process the test may SIGKILL (`running_worker` stops it cleanly)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streams", "worker"],
            env={**os.environ, **settings_env(settings)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_consumed(settings: Settings, topic: str, at_least: float, what: str) -> None:
    wait_until(
        lambda: metric(scrape(settings), "streams_events_consumed_total", topic=topic) >= at_least,
        180,
        what,
        interval_s=0.2,
    )


def caught_up(settings: Settings, ends: dict[str, dict[int, int]]) -> bool:
    group = group_of(settings)
    return all(committed_offsets(settings.kafka, group, topic, e) == e for topic, e in ends.items())


def wait_caught_up(settings: Settings, ends: dict[str, dict[int, int]], timeout_s: float = 300) -> None:
    wait_until(lambda: caught_up(settings, ends), timeout_s, "every offset committed", interval_s=1)


def kill_when(worker: subprocess.Popen[bytes], condition: Callable[[], Any], what: str) -> None:
    """SIGKILL the worker as soon as ``condition`` holds (and in any case before returning)."""
    try:
        wait_until(condition, 180, what, interval_s=0.2)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
