"""A service stopped mid-stream and started again: the worker waits it out (Cassandra: holding its
batch and retrying with backoff, never dropping; Kafka: the clients reconnect), resumes, and the
CTR rows equal the oracle."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streams.runtime import manager
from streams.settings import Settings
from tests.integration.faults import caught_up, produce_clickstream, wait_caught_up, wait_consumed
from tests.integration.test_ctr_pipeline import (
    assert_rows_match_oracle,
    ctr_settings,
    oracle,
    read_partitions,
)
from tests.integration.test_smoke_pipeline import metric, scrape
from tests.support import running_worker

pytestmark = pytest.mark.integration
__all__ = ["ctr_settings"]


@pytest.mark.parametrize(("service", "outage_s"), [("cassandra", 20), ("kafka", 15)])
def test_a_service_outage_is_waited_out(
    ctr_settings: Settings, tmp_path: Path, service: str, outage_s: float
) -> None:
    settings = ctr_settings
    topic = settings.topics.ad_events
    ends = {topic: produce_clickstream(settings, seed=29, impressions=24_000)}

    with running_worker(settings, tmp_path) as worker:
        wait_consumed(settings, topic, 4000, "the worker to get going")
        manager.down(settings, [service], report=lambda line: None)
        try:
            time.sleep(outage_s)
            assert worker.poll() is None, f"the worker must ride out the {service} outage"
            if service == "cassandra":
                assert metric(scrape(settings), "streams_sink_write_retries_total") > 0
                assert not caught_up(settings, ends)
        finally:
            manager.up(settings, [service], report=lambda line: None)
        wait_caught_up(settings, ends)

    assert_rows_match_oracle(settings, oracle(read_partitions(settings, topic)))
