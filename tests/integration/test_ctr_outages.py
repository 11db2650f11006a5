"""A service stopped mid-stream and started again: the worker waits it out (Cassandra: holding its
batch and retrying with backoff, never dropping, while more traffic keeps arriving; Kafka: the
clients reconnect), resumes, and the CTR rows equal the oracle. The worker's memory stays bounded
meanwhile: a fetcher that kept buffering behind the held batch would show in its RSS.

Prints the figures (events, outage, RSS, recovery time); they are not asserted on.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from streams.runtime import manager
from streams.settings import Settings
from tests.integration.ctr_oracle import SEC, START, assert_rows_match_oracle, oracle
from tests.integration.faults import (
    RssSampler,
    caught_up,
    high_watermarks,
    produce_clickstream,
    service_listening,
    wait_caught_up,
    wait_consumed,
)
from tests.integration.kafka_records import read_partitions
from tests.support import metric, running_worker, scrape, wait_until

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
BEFORE = 24_000  # impressions produced before the worker starts: 240 s of event time
DURING = 150_000  # impressions (about 155k messages) arriving while Cassandra is down
DURING_RATE = 7000.0  # messages per second: they keep arriving for 22 s of the 30 s outage
# RSS growth allowed over the outage. The CTR job holds its flush and stops consuming; librdkafka
# fetches ahead at most 8 MB (`queued.max.messages.kbytes`), so the RSS stays within that. Buffering
# the backlog instead costs about 0.6 KiB a message: 155k messages would take some 90 MiB (the bound
# failed that way when the job still was a Faust agent with an unbounded STREAM_BUFFER_MAXSIZE).
RSS_BOUND = 48 * MiB
DURING_START = START + BEFORE * 10 + 30 * SEC  # after the first part's event time: not late


def mib(n: float) -> str:
    return f"{n / MiB:.1f} MiB"


@pytest.mark.parametrize(("service", "outage_s"), [("cassandra", 30), ("kafka", 15)])
def test_a_service_outage_is_waited_out(
    ctr_settings: Settings, tmp_path: Path, service: str, outage_s: float
) -> None:
    settings = ctr_settings
    topic = settings.topics.ad_events
    ends = {topic: produce_clickstream(settings, seed=29, impressions=BEFORE)}
    events_before = sum(ends[topic].values())

    def consumed() -> float:
        return metric(scrape(settings), "streams_events_consumed_total", topic=topic)

    with running_worker(settings, tmp_path) as worker, ThreadPoolExecutor(1) as producer:
        wait_consumed(settings, topic, 4000, "the worker to get going")
        consumed_at_start = consumed()
        with RssSampler(worker.pid) as outage_rss:
            stopping = time.monotonic()
            manager.down(settings, [service], report=lambda line: None)
            down = time.monotonic()
            try:
                if service == "cassandra":
                    # More traffic keeps arriving (a producer could not deliver while Kafka is down).
                    arriving = producer.submit(
                        produce_clickstream, settings, 31, DURING, DURING_START, DURING_RATE
                    )
                    # Once a write is retried the job holds that flush: it counts nothing more.
                    wait_until(
                        lambda: metric(scrape(settings), "streams_sink_write_retries_total") > 0,
                        60,
                        "a Cassandra write to be retried",
                    )
                    consumed_held = consumed()
                time.sleep(outage_s)
                assert worker.poll() is None, f"the worker must ride out the {service} outage"
                assert not service_listening(settings, service), f"{service} restarted by someone else"
                if service == "cassandra":
                    assert consumed() == consumed_held, "the worker held back (or Cassandra came back?)"
                    # Nothing is committed past what is durable: the arriving traffic waits.
                    assert not caught_up(settings, {topic: high_watermarks(settings, topic)})
            finally:
                restarting = time.monotonic()
                manager.up(settings, [service], report=lambda line: None)
        ready = time.monotonic()
        if service == "cassandra":
            ends = {topic: arriving.result()}
        with RssSampler(worker.pid) as recovery_rss:
            wait_caught_up(settings, ends)
        recovered = time.monotonic()

    events = sum(ends[topic].values())
    print(
        f"\n{service} outage: down {restarting - down:.1f} s (stopping {down - stopping:.1f} s, "
        f"restart {ready - restarting:.1f} s); events {events} ({events_before} before, "
        f"{events - events_before} during); consumed {consumed_at_start:.0f} when it began"
        + (f", {consumed_held:.0f} held through it" if service == "cassandra" else "")
    )
    print(
        f"worker RSS: {mib(outage_rss.start)} at the outage's start, peak {mib(outage_rss.peak)}, "
        f"{mib(outage_rss.end)} at its end ({len(outage_rss.samples)} samples); "
        f"peak {mib(recovery_rss.peak)} while catching up, {mib(recovery_rss.end)} when caught up"
    )
    print(f"recovery: caught up {recovered - ready:.1f} s after {service} was ready again")
    assert outage_rss.peak - outage_rss.start <= RSS_BOUND, "worker memory grew during the outage"

    assert_rows_match_oracle(settings, oracle(read_partitions(settings, topic)))
