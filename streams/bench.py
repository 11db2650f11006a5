"""`streams bench`: measure the real worker on this machine, over a pre-loaded backlog.

For now one contender (this project's worker, CTR path): it produces N clickstream messages
to a topic of their own, starts a fresh worker on it, and reports catch-up throughput,
CPU seconds per million events and peak RSS, as medians over repeated runs.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from streams.ctr.generator import ClickstreamGenerator, ClickstreamProfile
from streams.errors import RuntimeServiceError
from streams.io.kafka import delete_topics, ensure_topics, high_watermarks, partition_history
from streams.produce import produce
from streams.scrape import fetch_metrics, total
from streams.settings import Settings
from streams.topics import raw_topic
from streams.versions import result_topic

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class RunFigures:
    events: int
    seconds: float
    cpu_seconds: float
    peak_rss_mib: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds

    @property
    def cpu_s_per_million(self) -> float:
        return self.cpu_seconds / self.events * 1e6


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _consumed(port: int, topic: str) -> float:
    """The bench worker's consumed counter (-1 while it is not serving /metrics yet)."""
    text = fetch_metrics("127.0.0.1", port)
    return total(text, "streams_events_consumed_total", topic=topic) if text else -1.0


def run_worker_over_backlog(
    settings: Settings, topic: str, total: int, port: int, log: Path, topic_env: dict[str, str]
) -> RunFigures:
    """One fresh worker (own consumer group and version) consuming the whole backlog."""
    run = uuid.uuid4().hex[:8]
    env = {**os.environ, **topic_env, **bench_worker_env(settings, run, port)}
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streams", "worker"], env=env, stdout=out, stderr=out)
    try:
        while _consumed(port, topic) <= 0:
            if proc.poll() is not None:
                raise RuntimeServiceError(f"the bench worker exited (log: {log})")
            time.sleep(0.05)
        started, cpu_start = time.monotonic(), _cpu_seconds(proc.pid)
        while _consumed(port, topic) < total:
            if proc.poll() is not None:
                raise RuntimeServiceError(f"the bench worker exited (log: {log})")
            time.sleep(0.2)
        return RunFigures(
            total, time.monotonic() - started, _cpu_seconds(proc.pid) - cpu_start, _peak_rss_mib(proc.pid)
        )
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        delete_version_topics(settings, f"bench-{run}")


def bench_worker_env(settings: Settings, run: str, port: int) -> dict[str, str]:
    """A bench worker is a version of its own, in a keyspace of its own (the registry of the
    real versions stays clean)."""
    return {
        "STREAMS_CASSANDRA__KEYSPACE": f"{settings.cassandra.keyspace}_bench",
        "STREAMS_WORKER__APP_ID": f"bench-{run}",
        "STREAMS_WORKER__PIPELINE_VERSION": f"bench-{run}",
        "STREAMS_WORKER__METRICS_PORT": str(port),
    }


def delete_version_topics(settings: Settings, version: str) -> None:
    t = settings.topics
    delete_topics(
        settings.kafka, [result_topic(t.ctr_results, version), result_topic(t.fraud_scores, version)]
    )


def bench_ctr(settings: Settings, events: int, repeats: int, port: int, out_dir: Path) -> list[RunFigures]:
    topic = f"bench-ad-events-{uuid.uuid4().hex[:8]}"
    ensure_topics(settings.kafka, [raw_topic(topic, settings)])
    try:
        generator = ClickstreamGenerator(ClickstreamProfile(), seed=42, start_ms=1_767_225_600_000, rate=1000)
        messages = list(generator.messages(events))
        report = produce(settings.kafka, topic, messages)
        if report.failed:
            raise RuntimeServiceError(f"could not pre-load the backlog: {report.first_error}")
        out_dir.mkdir(parents=True, exist_ok=True)
        env = {"STREAMS_TOPICS__AD_EVENTS": topic, "STREAMS_WORKER__PIPELINES": '["ctr"]'}
        return [
            run_worker_over_backlog(settings, topic, report.sent, port, out_dir / "bench-worker.log", env)
            for _ in range(repeats)
        ]
    finally:
        delete_topics(settings.kafka, [topic])


def _isolated_fraud_topics(settings: Settings) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    names = {
        "STREAMS_TOPICS__TRANSACTIONS": f"bench-transactions-{suffix}",
        "STREAMS_TOPICS__LABELS": f"bench-labels-{suffix}",
        "STREAMS_TOPICS__FRAUD_SCORES": f"bench-fraud-scores-{suffix}",
    }
    ensure_topics(settings.kafka, [raw_topic(name, settings) for name in names.values()])
    names["STREAMS_WORKER__PIPELINES"] = '["fraud"]'
    return names


def _transactions(settings: Settings, count: int) -> list[tuple[bytes, bytes]]:
    from streams.fraud.generator import TransactionGenerator, TransactionProfile
    from streams.fraud.synthetic import load_ip_prefixes

    generator = TransactionGenerator(
        TransactionProfile(mean_gap_ms=14 * 86_400_000 / count), seed=42, start_ms=1_767_225_600_000,
        ip_prefixes=load_ip_prefixes(settings.fraud.ip_countries_file),
    )  # fmt: skip
    return generator.scenario(count).transactions


def bench_fraud(settings: Settings, events: int, repeats: int, port: int, out_dir: Path) -> list[RunFigures]:
    """Scoring throughput: a fresh worker over a backlog of transactions (no labels)."""
    names = _isolated_fraud_topics(settings)
    topic = names["STREAMS_TOPICS__TRANSACTIONS"]
    try:
        report = produce(settings.kafka, topic, _transactions(settings, events))
        if report.failed:
            raise RuntimeServiceError(f"could not pre-load the backlog: {report.first_error}")
        out_dir.mkdir(parents=True, exist_ok=True)
        return [
            run_worker_over_backlog(settings, topic, report.sent, port, out_dir / "bench-worker.log", names)
            for _ in range(repeats)
        ]
    finally:
        delete_topics(settings.kafka, [v for k, v in names.items() if k.startswith("STREAMS_TOPICS")])


def _timestamps(settings: Settings, topic: str) -> dict[str, int]:
    """transaction_id -> Kafka CreateTime (ms) of every record on ``topic``."""
    import orjson

    stamps: dict[str, int] = {}
    for partition, end in high_watermarks(settings.kafka, topic).items():
        for value, _, timestamp, _ in partition_history(settings.kafka, topic, partition, end):
            try:
                stamps[orjson.loads(value or b"")["transaction_id"]] = timestamp or 0
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
    return stamps


def bench_fraud_latency(
    settings: Settings, rate: float, seconds: float, port: int, out_dir: Path
) -> dict[str, float]:
    """Produce-to-score latency at a fixed offered rate: CreateTime of the transaction record to
    CreateTime of its score record (written to Cassandra first, then published)."""
    names = _isolated_fraud_topics(settings)
    run = uuid.uuid4().hex[:8]
    env = {**os.environ, **names, **bench_worker_env(settings, run, port)}
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "bench-worker.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streams", "worker"], env=env, stdout=out, stderr=out)
    try:
        while _consumed(port, names["STREAMS_TOPICS__TRANSACTIONS"]) < 0:
            time.sleep(0.1)
        time.sleep(3)  # partitions assigned
        messages = _transactions(settings, int(rate * seconds))
        report = produce(settings.kafka, names["STREAMS_TOPICS__TRANSACTIONS"], messages, rate=rate)
        while _consumed(port, names["STREAMS_TOPICS__TRANSACTIONS"]) < report.sent:
            time.sleep(0.2)
        time.sleep(1)
        sent = _timestamps(settings, names["STREAMS_TOPICS__TRANSACTIONS"])
        scored = _timestamps(settings, result_topic(names["STREAMS_TOPICS__FRAUD_SCORES"], f"bench-{run}"))
        latencies = sorted((scored[t] - sent[t]) / 1000 for t in scored if t in sent)
        if not latencies:
            raise RuntimeServiceError(f"no scores were published (log: {log})")

        def quantile(q: float) -> float:
            return latencies[min(int(q * len(latencies)), len(latencies) - 1)]

        return {"offered_rate": rate, "achieved_rate": report.rate, "scored": len(latencies),
                "p50_s": quantile(0.5), "p99_s": quantile(0.99), "p999_s": quantile(0.999)}  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        delete_topics(settings.kafka, [v for k, v in names.items() if k.startswith("STREAMS_TOPICS")])
        delete_version_topics(settings, f"bench-{run}")
        delete_topics(settings.kafka, [result_topic(names["STREAMS_TOPICS__FRAUD_SCORES"], f"bench-{run}")])


def median(runs: list[RunFigures], attribute: str) -> float:
    return statistics.median(getattr(run, attribute) for run in runs)
