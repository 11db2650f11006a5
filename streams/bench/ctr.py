"""The CTR scenarios: backlog catch-up (``ctr``, ``replay``) and produce-to-result latency (``latency``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streams.bench.contenders import Contender, OurWorker, RunContext
from streams.bench.latency import percentiles
from streams.bench.measure import JobProcess, stop_jobs, wait_serving, watch_backlog
from streams.bench.runner import (
    Input,
    Report,
    RunResult,
    bench_keyspace,
    cleanup_topics,
    describe,
    new_run_id,
    preload,
    retrying,
    run_backlog_repeats,
)
from streams.bench.workload import Oracle, bench_messages, mean_size
from streams.io.kafka import ensure_topics
from streams.produce import produce
from streams.settings import Settings
from streams.topics import raw_topic

EVENT_RATE = 1000.0  # impressions per second of event time in a backlog: 1M events span ~17 windows
WARMUP_S = 3.0  # latency runs: traffic the contender must have done first (joins, recoveries, batches)
LEAD_IN_S = 1.0  # and the first second of the measured produce (the producer's own bootstrap) is left out


def ad_events_env(topic: str) -> dict[str, str]:
    return {"STREAMS_TOPICS__AD_EVENTS": topic}


def backlog_input(settings: Settings, events: int, report: Report) -> Input:
    """The backlog, stamped with recent event times (see `jobs/naive_faust.py` on Faust's expiry)."""
    span_ms = int(events / EVENT_RATE * 1000)
    start_ms = int(time.time() * 1000) - span_ms - 120_000
    messages = bench_messages(events, start_ms=start_ms, rate=EVENT_RATE)
    topic = f"bench-ad-events-{new_run_id()}"
    report(f"pre-loading {len(messages):,} messages (~{mean_size(messages):.0f} bytes) to {topic}")
    sent = preload(settings, topic, messages)
    extra = {
        "event_rate_per_s": EVENT_RATE,
        "event_time_span_s": span_ms / 1000,
        "partitions": settings.kafka.partitions,
    }
    return Input(topic, sent, mean_size(messages), Oracle.of(messages), extra)


def bench_backlog(
    settings: Settings,
    contenders: Sequence[Contender],
    events: int,
    repeats: int,
    out_dir: Path,
    report: Report,
) -> tuple[Input, list[RunResult]]:
    bench = backlog_input(settings, events, report)
    try:
        runs = run_backlog_repeats(settings, contenders, bench, repeats, out_dir, report, ad_events_env)
    finally:
        cleanup_topics(settings, [bench.topic])
    return bench, runs


def replay_contenders(workers: Sequence[int]) -> list[Contender]:
    """Our worker re-reading the whole log as a fresh version (what `streams replay` starts)."""
    return [OurWorker(f"ours x{n}", workers=n) for n in workers]


def latency_run(
    contender: Contender, repeat: int, settings: Settings, keyspace: str, session: Any,
    rate: float, seconds: float, out_dir: Path, report: Report,
) -> RunResult:  # fmt: skip
    """A live contender fed at ``rate`` events/s: warm-up first, then the measured period."""
    run_id = new_run_id()
    topic = f"bench-ad-events-{run_id}"
    warm = int(rate * WARMUP_S)
    count = warm + int(rate * (LEAD_IN_S + seconds))
    messages = bench_messages(count, start_ms=int(time.time() * 1000), rate=rate)
    bench = Input(topic, len(messages), mean_size(messages), Oracle.of(messages))
    latency_file = out_dir / f"latency-{contender.name}-{run_id}.json"
    run = RunContext(settings, keyspace, topic, run_id, out_dir, latency_file, ad_events_env(topic))
    result = RunResult(contender.name, repeat)
    jobs: list[JobProcess] = []
    try:
        ensure_topics(settings.kafka, [raw_topic(topic, settings)])
        jobs = contender.start(run)
        wait_serving(jobs, contender.name)
        produce(settings.kafka, topic, messages[:warm], rate=rate)
        watch_backlog(jobs, contender.name, topic, warm)
        measured_from_ms = (time.time() + LEAD_IN_S) * 1000
        offered = produce(settings.kafka, topic, messages[warm:], rate=rate)
        result.measurement, texts = watch_backlog(jobs, contender.name, topic, len(messages))
        stop_jobs(jobs)
        result.latency_ms = {
            **percentiles(contender.latencies(run), measured_from_ms),
            "offered_per_s": offered.rate,
        }
        result.check = retrying("reading results", lambda: contender.check(run, session, bench.oracle, texts))
    except Exception as exc:  # one contender failing must not hide the others' figures
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        stop_jobs(jobs)
        try:
            retrying("cleaning up", lambda: contender.cleanup(run, session, bench.oracle))
        finally:
            cleanup_topics(settings, [topic])
    report(f"  {describe(result)}")
    return result


def bench_latency(
    settings: Settings, contenders: Sequence[Contender], rate: float, seconds: float, repeats: int,
    out_dir: Path, report: Report,
) -> list[RunResult]:  # fmt: skip
    runs = []
    with bench_keyspace(settings) as (keyspace, session):
        for repeat in range(1, repeats + 1):
            for contender in contenders:
                report(
                    f"repeat {repeat}/{repeats}: {contender.name} at {rate:,.0f} events/s for {seconds:.0f}s"
                )
                runs.append(
                    latency_run(
                        contender, repeat, settings, keyspace, session, rate, seconds, out_dir, report
                    )
                )
    return runs
