"""Shared steps of the fault tests: a worker process to kill, progress and catch-up waits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from streams.ctr.generator import ClickstreamGenerator
from streams.io.kafka import committed_offsets
from streams.io.kafka import high_watermarks as kafka_high_watermarks
from streams.netcheck import port_open
from streams.produce import produce
from streams.scrape import samples
from streams.settings import Settings
from streams.versions import names_of
from tests.integration.ctr_oracle import PROFILE, START
from tests.support import metric, scrape, settings_env, wait_until


def group_of(settings: Settings, topic: str) -> str:
    """The consumer group that reads ``topic``: the CTR job's own, or Faust's."""
    w = settings.worker
    return names_of(settings, w.pipeline_version, w.pipelines).group_of(topic)


def high_watermarks(settings: Settings, topic: str) -> dict[int, int]:
    return kafka_high_watermarks(settings.kafka, topic)


def produce_clickstream(
    settings: Settings,
    seed: int,
    impressions: int,
    start_ms: int = START,
    rate: float | None = None,
    on_progress: Callable[[int], None] = lambda n: None,
) -> dict[int, int]:
    """The seeded scenario (100 impressions per second of event time) on the settings' ad-events
    topic, paced to ``rate`` messages/s if given (``on_progress``: messages handed to the client);
    returns the partitions' end offsets once every message is acknowledged."""
    generator = ClickstreamGenerator(PROFILE, seed=seed, start_ms=start_ms, rate=100)
    messages = list(generator.messages(impressions))
    report = produce(settings.kafka, settings.topics.ad_events, messages, rate=rate, on_progress=on_progress)
    assert report.failed == 0, report.first_error
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
    kafka = settings.kafka
    return all(committed_offsets(kafka, group_of(settings, t), t, e) == e for t, e in ends.items())


def uncommitted(settings: Settings, topic: str, partitions: Iterable[int]) -> dict[int, tuple[int, int]]:
    """The partitions among ``partitions`` whose group has work pending: partition -> (committed
    offset, end offset) where the committed offset is behind the partition's end."""
    ends = high_watermarks(settings, topic)
    wanted = [p for p in partitions if ends.get(p)]
    committed = committed_offsets(settings.kafka, group_of(settings, topic), topic, wanted)
    return {p: (committed.get(p, 0), ends[p]) for p in wanted if committed.get(p, 0) < ends[p]}


def group_assignment(settings: Settings, topic: str) -> dict[str, frozenset[int]]:
    """member id -> the partitions of ``topic`` the broker has assigned it, in the group that
    reads ``topic`` (members without a partition of it are left out)."""
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    group_id = group_of(settings, topic)
    group = admin.describe_consumer_groups([group_id])[group_id].result(timeout=10)
    owned = {
        m.member_id: frozenset(tp.partition for tp in m.assignment.topic_partitions if tp.topic == topic)
        for m in group.members
    }
    return {member: partitions for member, partitions in owned.items() if partitions}


def reported_partitions(settings: Settings, topic: str) -> set[int]:
    """The partitions of ``topic`` a worker reports a consumer lag for (those it owns and has
    processed a batch of; a revoked partition's series is removed)."""
    lags = samples(scrape(settings), "streams_consumer_lag_records")
    return {int(labels["partition"]) for labels, _ in lags if labels["topic"] == topic}


def wait_caught_up(settings: Settings, ends: dict[str, dict[int, int]], timeout_s: float = 300) -> None:
    wait_until(lambda: caught_up(settings, ends), timeout_s, "every offset committed", interval_s=1)


def kill_when(worker: subprocess.Popen[bytes], condition: Callable[[], Any], what: str) -> None:
    """SIGKILL the worker as soon as ``condition`` holds (and in any case before returning)."""
    try:
        wait_until(condition, 180, what, interval_s=0.2)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()


def service_listening(settings: Settings, service: str) -> bool:
    """Whether the Kafka or Cassandra of ``settings`` accepts connections (its port is open)."""
    if service == "kafka":
        host, port = settings.kafka.bootstrap.split(",")[0].rsplit(":", 1)
        return port_open(host, int(port))
    return port_open(settings.cassandra.hosts[0], settings.cassandra.port)


def rss_bytes(pid: int) -> int:
    """A process's resident set size (Linux: VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024  # reported in kB
    raise AssertionError(f"process {pid} reports no VmRSS")


class RssSampler:
    """Samples a process's RSS every ``interval_s`` in a background thread while in the ``with``
    block (one sample on entry, one on exit)."""

    def __init__(self, pid: int, interval_s: float = 1.0) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> bool:
        try:
            self.samples.append(rss_bytes(self.pid))
            return True
        except FileNotFoundError:  # the process is gone: the test reports why, not the sampler
            return False

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s) and self._sample():
            pass

    def __enter__(self) -> RssSampler:
        self.samples.append(rss_bytes(self.pid))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def start(self) -> int:
        return self.samples[0]

    @property
    def peak(self) -> int:
        return max(self.samples)

    @property
    def end(self) -> int:
        return self.samples[-1]
