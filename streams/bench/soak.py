"""The memory scenarios (our worker only), each run as two phases, CTR then fraud, every phase a
worker process with that one pipeline (``STREAMS_WORKER__PIPELINES``) so that growth is attributable:

- ``soak``: traffic at a steady ``--rate`` for a warm-up plus ``--seconds``, with event time
  following the wall clock, or ``--time-scale`` times faster (windows close and state is evicted as
  in production, in event time), the worker's RSS sampled every 2 s. Each phase first catches up on
  history as long as its longest non-window horizon at the same rate, so its state is at its steady
  size when the warm-up begins: for CTR the dedupe horizon + grace (11 min by default), for fraud
  the 24 h of amounts per customer and the dedupe horizon of its decisions (24 h), which a soak
  reaches only with event time scaled (``--time-scale 60``: 1.44M transactions at 1,000/s); a
  history beyond ``HISTORY_CAP`` events is skipped (said in the report), and then the slope shows
  the state filling up. Decisions past the dedupe horizon leave memory (the label join reads them
  from Cassandra), so nothing is kept for the 90-day label horizon.
- ``state``: a backlog with one event per key (``--keys`` customers, a tenth as many ads), RSS at
  every progress of the worker, so at 10 %, 50 % and 100 % of the keys seen.

Correctness, lightly: the worker's progress counter must reach exactly what was produced, and its
consumer lag gauge must read 0 at the end.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

from streams.bench.check import Check
from streams.bench.contenders import OurWorker, RunContext
from streams.bench.ctr import ad_events_env
from streams.bench.fraud import customer_sweep, fraud_topics, live_transactions
from streams.bench.measure import (
    JobProcess,
    check_alive,
    done_events,
    peak_rss_mib,
    rss_mib,
    scrape,
    stop_jobs,
    wait_serving,
    watch_backlog,
)
from streams.bench.memory import KEY_NAMES, TARGET_KEYS, RssSample, SoakFigures, StateFigures
from streams.bench.runner import (
    Report,
    RunResult,
    bench_keyspace,
    cleanup_topics,
    describe,
    new_run_id,
    preload,
    quarters,
    retrying,
)
from streams.bench.workload import Oracle, ad_event_stream, ad_sweep
from streams.ctr.windows import parse_duration_ms
from streams.errors import RuntimeServiceError
from streams.io.kafka import ensure_topics
from streams.io.snapshot_store import CassandraSnapshotStore
from streams.produce import ProduceReport, produce
from streams.scrape import total
from streams.settings import KafkaSettings, Settings
from streams.topics import raw_topic

PIPELINES = ("ctr", "fraud")
SAMPLE_S = 2.0
WARMUP_S = 30.0  # live traffic before the steady phase: first batches, prepared statements, arenas
ASSIGN_S = 3.0  # a worker without a backlog: until its partitions are assigned
DRAIN_TIMEOUT_S = 180.0
SETTLE_S = 5.0
CTR_SWEEP_SPAN_MS = 50_000  # the whole sweep within a minute of event time: no window closes during it
FRAUD_SWEEP_RATE = 1000  # transactions per second of event time
HISTORY_CAP = 5_000_000  # events: a longer history would take the soak's time catching up
LAG = "streams_consumer_lag_records"
Body = Callable[[RunContext, OurWorker, Callable[[], JobProcess], RunResult], None]


def now_ms() -> int:
    return int(time.time() * 1000)


def phase_name(pipeline: str) -> str:
    return f"ours ({pipeline})"


def phase_topics(pipeline: str, run_id: str) -> tuple[str, dict[str, str]]:
    """The source topic of the phase and the worker's STREAMS_TOPICS__* (all of them the run's own)."""
    if pipeline == "ctr":
        topic = f"bench-ad-events-{run_id}"
        return topic, ad_events_env(topic)
    names = fraud_topics(run_id)
    return names["STREAMS_TOPICS__TRANSACTIONS"], names


def history_seconds(settings: Settings, pipeline: str) -> float:
    """Event time the phase's state needs to reach its steady size (its longest non-window horizon)."""
    if pipeline == "fraud":
        return max(86_400.0, settings.fraud.dedupe_horizon_hours * 3600.0)
    return (parse_duration_ms(settings.ctr.dedupe_horizon) + parse_duration_ms(settings.ctr.grace)) / 1000


class KeyCounter:
    """Counts the distinct keys (customers, ads) of the messages that go through it."""

    def __init__(self) -> None:
        self.keys: set[bytes] = set()

    def __call__(self, messages: Iterable[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
        for key, value in messages:
            self.keys.add(key)
            yield key, value


def live_traffic(
    settings: Settings, pipeline: str, count: int, *, start_ms: int, rate: float, seed: int = 42
) -> Iterator[tuple[bytes, bytes]]:
    """``count`` messages at ``rate`` per second of event time from ``start_ms`` (lazily); ``seed``
    is the clickstream's (event ids carry it, so history and live traffic must differ)."""
    if pipeline == "ctr":
        return islice(ad_event_stream(count, start_ms=start_ms, rate=rate, seed=seed), count)
    return live_transactions(settings, count, start_ms=start_ms, rate=rate)


def key_sweep(settings: Settings, pipeline: str, keys: int) -> Iterator[tuple[bytes, bytes]]:
    if pipeline == "ctr":
        return ad_sweep(keys, start_ms=now_ms() - CTR_SWEEP_SPAN_MS, span_ms=CTR_SWEEP_SPAN_MS)
    span_ms = keys * 1000 // FRAUD_SWEEP_RATE
    return customer_sweep(settings, keys, start_ms=now_ms() - span_ms, span_ms=span_ms)


def run_phase(
    settings: Settings, keyspace: str, session: Any, pipeline: str, repeat: int, out_dir: Path,
    report: Report, body: Body,
) -> RunResult:  # fmt: skip
    """One worker process of ``pipeline`` on topics and a version of its own; ``body`` starts it
    (with the function it is given) and fills the result; everything is stopped and deleted after."""
    run_id = new_run_id()
    topic, env = phase_topics(pipeline, run_id)
    run = RunContext(settings, keyspace, topic, run_id, out_dir, topic_env=env)
    worker = OurWorker(phase_name(pipeline), pipeline=pipeline)
    result = RunResult(worker.name, repeat)
    jobs: list[JobProcess] = []

    def start() -> JobProcess:
        jobs.extend(worker.start(run))
        return jobs[0]

    try:
        ensure_topics(settings.kafka, [raw_topic(name, settings) for name in env.values()])
        body(run, worker, start, result)
    except Exception as exc:  # reported with the other phase's figures
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        stop_jobs(jobs)
        try:
            retrying("cleaning up", lambda: worker.cleanup(run, session, Oracle()))
        except Exception as exc:
            report(f"  warning: could not clean up after {worker.name} ({run_id}): {exc}")
        cleanup_topics(settings, list(env.values()))
    report(f"  {describe(result)}")
    return result


def caught_up(done: int, produced: int, text: str, topic: str) -> Check:
    """Exactly what was produced is done, and the worker's own lag gauge reads 0."""
    lag = total(text, LAG, topic=topic)
    correct = done == produced and lag == 0
    verdict = "ok" if correct else "WRONG"
    return Check(
        correct, f"{verdict}: {done:,} of {produced:,} produced events done, lag {lag:,.0f} at the end"
    )


def feed_and_sample(
    kafka: KafkaSettings, job: JobProcess, name: str, topic: str,
    messages: Iterable[tuple[bytes, bytes]], rate: float, done_before: int,
) -> tuple[list[RssSample], ProduceReport, str]:  # fmt: skip
    """Produce ``messages`` at ``rate`` from a thread, sampling the worker every ``SAMPLE_S`` until
    it has done all of them; returns the samples, the producer's report and the last scrape."""
    handed, stop = [0], threading.Event()
    outcome: list[ProduceReport | Exception] = []

    def counted() -> Iterator[tuple[bytes, bytes]]:
        for message in messages:
            if stop.is_set():
                return
            handed[0] += 1
            yield message

    def feed() -> None:
        try:
            outcome.append(produce(kafka, topic, counted(), rate=rate))
        except Exception as exc:  # re-raised by the sampling loop
            outcome.append(exc)

    producer = threading.Thread(target=feed, name="soak-producer", daemon=True)
    samples: list[RssSample] = []
    started = time.monotonic()
    producer.start()
    try:
        while True:
            check_alive([job], name)
            text = scrape([job])[0]
            done, now = int(max(done_events([text], topic), 0)), time.monotonic()
            samples.append(
                RssSample(now - started, rss_mib(job.proc.pid), done, done_before + handed[0] - done)
            )
            if outcome and isinstance(outcome[0], Exception):
                raise outcome[0]
            if outcome and isinstance(outcome[0], ProduceReport):
                if outcome[0].failed:
                    raise RuntimeServiceError(f"could not produce to {topic}: {outcome[0].first_error}")
                expected = done_before + outcome[0].sent
                if done >= expected:
                    return samples, outcome[0], text
                if now - started - outcome[0].seconds > DRAIN_TIMEOUT_S:
                    raise RuntimeServiceError(
                        f"{name} did not catch up within {DRAIN_TIMEOUT_S:.0f}s of the last event: "
                        f"{done:,} of {expected:,} done (log: {job.log})"
                    )
            time.sleep(max(started + len(samples) * SAMPLE_S - time.monotonic(), 0))
    finally:
        stop.set()
        producer.join(timeout=30)


def state_bytes(settings: Settings, session: Any, run: RunContext, worker: OurWorker, pipeline: str) -> int:
    """The size of the worker's state: its newest snapshot of each partition, in Cassandra."""
    store = CassandraSnapshotStore(session, run.keyspace, worker.version(run))

    async def newest() -> int:
        sizes = []
        for partition in range(settings.kafka.partitions):
            found = await store.candidates(pipeline, partition)
            sizes.append(max(found, key=lambda info: info.snapshot_id).size if found else 0)
        return sum(sizes)

    return asyncio.run(newest())


def soak_body(
    settings: Settings, pipeline: str, rate: float, seconds: float, report: Report, time_scale: float = 1.0,
    session: Any = None,
) -> Body:  # fmt: skip
    event_rate = rate / time_scale  # events per second of event time

    def body(run: RunContext, worker: OurWorker, start: Callable[[], JobProcess], result: RunResult) -> None:
        history_s, history, catch_up_s, keys = history_seconds(settings, pipeline), 0, None, KeyCounter()
        count = int(rate * history_s / time_scale)
        if count > HISTORY_CAP:
            report(f"  no history: {history_s:.0f} s of event time would be {count:,} events (scale event "
                   "time with --time-scale): the state fills up during the soak")  # fmt: skip
            history_s = 0.0
        if history_s:
            report(f"  pre-loading {history_s:.0f} s of event time at {rate:,.0f}/s ({count:,} events)")
            begin = now_ms() - int(history_s * 1000)
            traffic = live_traffic(settings, pipeline, count, start_ms=begin, rate=event_rate, seed=7)
            history = preload(settings, run.topic, keys(traffic))
        job = start()
        wait_serving([job], worker.name)
        idle_mib = rss_mib(job.proc.pid)
        if history:
            backlog, _ = watch_backlog([job], worker.name, run.topic, history)
            catch_up_s = backlog.startup_s + backlog.seconds
            report(f"  caught up on the history in {catch_up_s:.0f} s")
        else:
            time.sleep(ASSIGN_S)
        count = int(rate * (WARMUP_S + seconds))
        report(f"  live: {count:,} events at {rate:,.0f}/s ({WARMUP_S:.0f} s warm-up, then {seconds:.0f} s), "
               f"event time x{time_scale:g}")  # fmt: skip
        messages = keys(live_traffic(settings, pipeline, count, start_ms=now_ms(), rate=event_rate))
        samples, offered, text = feed_and_sample(
            settings.kafka, job, worker.name, run.topic, messages, rate, history
        )
        result.memory = SoakFigures(
            pipeline, offered.rate, WARMUP_S, seconds, history_s, history, catch_up_s, SAMPLE_S,
            tuple(samples), peak_rss_mib(job.proc.pid), time_scale, len(keys.keys), idle_mib,
            state_bytes(settings, session, run, worker, pipeline) if session is not None else 0,
        )  # fmt: skip
        result.check = caught_up(samples[-1].done, history + offered.sent, text, run.topic)

    return body


def state_body(settings: Settings, pipeline: str, keys: int, report: Report) -> Body:
    def body(run: RunContext, worker: OurWorker, start: Callable[[], JobProcess], result: RunResult) -> None:
        report(f"  pre-loading one event per key: {keys:,} {KEY_NAMES[pipeline]}")
        sent = preload(settings, run.topic, key_sweep(settings, pipeline, keys))
        job = start()
        wait_serving([job], worker.name)
        samples: list[RssSample] = []
        started, quarter = time.monotonic(), quarters(worker.name, sent, report)

        def progress(done: float) -> None:
            now = time.monotonic() - started
            samples.append(RssSample(now, rss_mib(job.proc.pid), int(done), sent - int(done)))
            quarter(done)

        result.measurement, _ = watch_backlog([job], worker.name, run.topic, sent, on_progress=progress)
        time.sleep(SETTLE_S)
        text = scrape([job])[0]
        result.memory = StateFigures(
            pipeline, KEY_NAMES[pipeline], sent, TARGET_KEYS[pipeline], tuple(samples),
            rss_mib(job.proc.pid), peak_rss_mib(job.proc.pid),
        )  # fmt: skip
        result.check = caught_up(int(done_events([text], run.topic)), sent, text, run.topic)

    return body


def bench_soak(
    settings: Settings, rate: float, seconds: float, repeats: int, out_dir: Path, report: Report,
    pipelines: Sequence[str] = PIPELINES, time_scale: float = 1.0,
) -> list[RunResult]:  # fmt: skip
    runs = []
    with bench_keyspace(settings) as (keyspace, session):
        for repeat in range(1, repeats + 1):
            for pipeline in pipelines:
                report(f"repeat {repeat}/{repeats}: {phase_name(pipeline)} soak at {rate:,.0f} events/s")
                body = soak_body(settings, pipeline, rate, seconds, report, time_scale, session)
                runs.append(run_phase(settings, keyspace, session, pipeline, repeat, out_dir, report, body))
    return runs


def bench_state(
    settings: Settings,
    keys: int,
    repeats: int,
    out_dir: Path,
    report: Report,
    pipelines: Sequence[str] = PIPELINES,
) -> list[RunResult]:
    """``keys`` customers in the fraud phase, a tenth as many ads in the CTR phase (as in the issue)."""
    runs = []
    with bench_keyspace(settings) as (keyspace, session):
        for repeat in range(1, repeats + 1):
            for pipeline in pipelines:
                count = keys // 10 if pipeline == "ctr" else keys
                report(
                    f"repeat {repeat}/{repeats}: {phase_name(pipeline)} over {count:,} {KEY_NAMES[pipeline]}"
                )
                body = state_body(settings, pipeline, count, report)
                runs.append(run_phase(settings, keyspace, session, pipeline, repeat, out_dir, report, body))
    return runs
