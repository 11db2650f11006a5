"""A service stopped mid-stream, while the worker has uncommitted work and live traffic keeps
arriving, and started again: the worker waits it out (Cassandra: holding its batch and retrying
with backoff, never dropping and never committing past what is durable; Kafka: the clients
reconnect, and the traffic produced during the outage is delivered once it is back), resumes, and
the CTR rows equal the oracle. The worker's memory stays bounded meanwhile: a fetcher that kept
buffering behind the held batch would show in its RSS.

Prints the figures (events, outage, RSS, recovery time); they are not asserted on.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from streams.io.kafka import committed_offsets
from streams.runtime import manager
from streams.settings import Settings
from tests.integration.ctr_oracle import SEC, START, assert_rows_match_oracle, oracle
from tests.integration.faults import (
    RssSampler,
    caught_up,
    group_of,
    high_watermarks,
    produce_clickstream,
    service_listening,
    uncommitted,
    wait_caught_up,
    wait_consumed,
)
from tests.integration.kafka_records import read_partitions
from tests.support import metric, running_worker, scrape, wait_until

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
BEFORE = 24_000  # impressions produced before the worker starts: 240 s of event time
DURING = 150_000  # impressions (about 155k messages) arriving live from just before the outage on
DURING_RATE = 7000.0  # messages per second: they keep arriving for 22 s, most of the outage
# RSS growth allowed over the outage. The CTR job holds its flush and stops consuming; librdkafka
# fetches ahead at most STREAMS_WORKER__PREFETCH_KBYTES (`queued.max.messages.kbytes`; 8 MB here,
# below the live traffic's 39 MB), so the RSS stays within that. Buffering the backlog instead
# costs about 0.6 KiB a message: 155k messages would take some 90 MiB (the bound failed that way
# when the job still was a Faust agent with an unbounded STREAM_BUFFER_MAXSIZE).
PREFETCH_KBYTES = 8192
RSS_BOUND = 48 * MiB
DURING_START = START + BEFORE * 10 + 30 * SEC  # after the first part's event time: not late


def committed(settings: Settings, topic: str, partitions: Iterable[int]) -> dict[int, int]:
    return committed_offsets(settings.kafka, group_of(settings, topic), topic, partitions)


def mib(n: float) -> str:
    return f"{n / MiB:.1f} MiB"


@pytest.mark.parametrize(("service", "outage_s"), [("cassandra", 30), ("kafka", 15)])
def test_a_service_outage_is_waited_out(
    ctr_settings: Settings, tmp_path: Path, service: str, outage_s: float
) -> None:
    worker = ctr_settings.worker.model_copy(update={"prefetch_kbytes": PREFETCH_KBYTES})
    settings = ctr_settings.model_copy(update={"worker": worker})
    topic = settings.topics.ad_events
    ends = {topic: produce_clickstream(settings, seed=29, impressions=BEFORE)}
    events_before = sum(ends[topic].values())

    def consumed() -> float:
        return metric(scrape(settings), "streams_events_consumed_total", topic=topic)

    def retries() -> float:
        return metric(scrape(settings), "streams_sink_write_retries_total")

    with running_worker(settings, tmp_path) as worker, ThreadPoolExecutor(1) as producer:
        wait_consumed(settings, topic, 4000, "the worker to get going")
        consumed_at_start = consumed()
        # Live traffic from now on, through the outage: while Kafka is down the producer queues it
        # (librdkafka delivers it once the broker is back).
        handed: list[int] = []
        arriving = producer.submit(
            produce_clickstream, settings, 31, DURING, DURING_START, DURING_RATE, handed.append
        )
        wait_until(lambda: consumed() > events_before, 60, "the worker to process live traffic")
        with RssSampler(worker.pid) as outage_rss:
            # The outage lands on work in flight: offsets the worker has not committed yet.
            pending = uncommitted(settings, topic, ends[topic])
            assert pending, "the worker had nothing pending when the outage began"
            stopping = time.monotonic()
            manager.down(settings, [service], report=lambda line: None)
            down = time.monotonic()
            handed_at_down = sum(handed)
            try:
                if service == "cassandra":
                    # The worker tries to write and fails: a write is retried, not dropped.
                    wait_until(lambda: retries() > 0, 60, "a Cassandra write to be retried")
                    retries_held = retries()
                    held = committed(settings, topic, ends[topic])
                time.sleep(outage_s)
                assert worker.poll() is None, f"the worker must ride out the {service} outage"
                assert not service_listening(settings, service), f"{service} restarted by someone else"
                handed_during = sum(handed) - handed_at_down
                assert handed_during > 0, "no traffic was produced during the outage"
                if service == "cassandra":
                    # Nothing is committed past what is durable: not one offset moved while the
                    # writes failed (the arriving traffic waits), and the worker kept retrying.
                    assert committed(settings, topic, ends[topic]) == held, (
                        "committed while Cassandra was down"
                    )
                    assert not caught_up(settings, {topic: high_watermarks(settings, topic)})
                    assert retries() > retries_held, "the worker stopped retrying"
            finally:
                restarting = time.monotonic()
                manager.up(settings, [service], report=lambda line: None)
        ready = time.monotonic()
        ends = {topic: arriving.result()}
        with RssSampler(worker.pid) as recovery_rss:
            wait_caught_up(settings, ends)
        recovered = time.monotonic()

    events = sum(ends[topic].values())
    assert events - events_before >= DURING, "the live traffic is missing"
    print(
        f"\n{service} outage: down {restarting - down:.1f} s (stopping {down - stopping:.1f} s, "
        f"restart {ready - restarting:.1f} s); events {events} ({events_before} before, "
        f"{events - events_before} live, {handed_during} produced during the outage); "
        f"consumed {consumed_at_start:.0f} when the live traffic began; "
        f"{sum(e - c for c, e in pending.values())} offsets uncommitted as the outage began"
    )
    print(
        f"worker RSS: {mib(outage_rss.start)} at the outage's start, peak {mib(outage_rss.peak)}, "
        f"{mib(outage_rss.end)} at its end ({len(outage_rss.samples)} samples); "
        f"peak {mib(recovery_rss.peak)} while catching up, {mib(recovery_rss.end)} when caught up"
    )
    print(f"recovery: caught up {recovered - ready:.1f} s after {service} was ready again")
    assert outage_rss.peak - outage_rss.start <= RSS_BOUND, "worker memory grew during the outage"

    assert_rows_match_oracle(settings, oracle(read_partitions(settings, topic)))
