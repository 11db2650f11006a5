"""Running contenders over one input, repeat after repeat, and keeping every run's figures.

Contenders run one at a time, interleaved within each repeat (ours, naive-faust, quix, raw, then
again), so that a slow phase of the shared machine hits all of them alike; ratios are taken
between runs of the same repeat.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from streams.bench.check import Check, create_job_tables
from streams.bench.contenders import Contender, RunContext
from streams.bench.measure import JobProcess, Measurement, stop_jobs, watch_backlog
from streams.bench.memory import SoakFigures, StateFigures
from streams.bench.recovery_report import RecoveryFigures
from streams.bench.workload import Oracle
from streams.errors import RuntimeServiceError
from streams.io.cassandra import apply_schema, connect
from streams.io.kafka import delete_topics, ensure_topics
from streams.io.version_store import versioned_tables
from streams.produce import produce
from streams.settings import Settings
from streams.topics import raw_topic

log = logging.getLogger(__name__)
Report = Callable[[str], None]


@dataclass
class RunResult:
    """One contender, one repeat: figures, the oracle check, latencies, memory, or what went wrong."""

    contender: str
    repeat: int
    measurement: Measurement | None = None
    check: Check | None = None
    latency_ms: dict[str, float] | None = None  # p50, p99, p999, events
    memory: SoakFigures | StateFigures | None = None
    recovery: RecoveryFigures | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.check is not None and self.check.correct

    def to_json(self) -> dict[str, Any]:
        m = self.measurement
        figures = {} if m is None else {
            "events": m.events, "seconds": m.seconds, "rated": m.rated, "events_per_s": m.events_per_s,
            "cpu_seconds": m.cpu_seconds, "cpu_s_per_million": m.cpu_s_per_million,
            "peak_rss_mib": m.peak_rss_mib, "startup_s": m.startup_s,
        }  # fmt: skip
        check = None if self.check is None else {"correct": self.check.correct, "summary": self.check.summary}
        memory = None if self.memory is None else self.memory.to_json()
        recovery = None if self.recovery is None else self.recovery.to_json()
        return {"contender": self.contender, "repeat": self.repeat, "ok": self.ok, **figures,
                "latency_ms": self.latency_ms, "memory": memory, "recovery": recovery, "check": check,
                "error": self.error}  # fmt: skip


@dataclass
class Input:
    """The pre-loaded (or offered) input of a scenario."""

    topic: str
    messages: int
    mean_bytes: float
    oracle: Oracle
    extra: dict[str, Any] = field(default_factory=dict)


def new_run_id() -> str:
    return uuid.uuid4().hex[:8]


@contextmanager
def bench_keyspace(settings: Settings) -> Iterator[tuple[str, Any]]:
    """The bench keyspace (the project's schema plus the jobs' tables) and a session on it. It is the
    bench's own: at the end, its result tables are truncated (a row-by-row delete of millions of
    rows leaves as many tombstones, which later scans of the keyspace refuse to read)."""
    keyspace = f"{settings.cassandra.keyspace}_bench"
    cluster, session = retrying("connecting to Cassandra", lambda: connect(settings.cassandra))
    try:
        schema = settings.deploy_dir / "cassandra" / "schema"
        apply_schema(session, schema, keyspace, settings.cassandra.replication_factor)
        create_job_tables(session, keyspace)
        yield keyspace, session
    finally:
        try:
            for table in versioned_tables(session, keyspace):
                retrying(
                    f"truncating {table}", partial(session.execute, f"TRUNCATE {keyspace}.{table}"), 3, 5
                )
        finally:
            cluster.shutdown()


def preload(
    settings: Settings, topic: str, messages: Iterable[tuple[bytes, bytes]], rate: float | None = None
) -> int:
    """Create ``topic`` and produce ``messages`` to it (paced to ``rate`` if given); returns how many."""
    ensure_topics(settings.kafka, [raw_topic(topic, settings)])
    report = produce(settings.kafka, topic, messages, rate=rate)
    if report.failed:
        raise RuntimeServiceError(f"could not produce the bench input to {topic}: {report.first_error}")
    return report.sent


def retrying(what: str, action: Callable[[], Any], attempts: int = 6, pause_s: float = 10) -> Any:
    """Reads and clean-ups ride out the short outages other tests cause on the shared services."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as exc:  # the driver's and the clients' own errors, not only ours
            if attempt == attempts:
                raise
            log.warning("%s failed (attempt %d, retrying in %.0fs): %s", what, attempt, pause_s, exc)
            time.sleep(pause_s)


def quarters(name: str, total: int, report: Report) -> Callable[[float], None]:
    """Reports a long run's progress at 25 %, 50 % and 75 %."""
    reported = [0]

    def progress(done: float) -> None:
        quarter = int(4 * done / total) if total else 0
        if 0 < quarter < 4 and quarter > reported[0]:
            reported[0] = quarter
            report(f"    {name}: {25 * quarter} % of {total:,} messages done")

    return progress


def backlog_run(
    contender: Contender, repeat: int, bench: Input, run: RunContext, session: Any, report: Report
) -> RunResult:
    """One contender over the whole pre-loaded backlog, then its results against the oracle."""
    result = RunResult(contender.name, repeat)
    jobs: list[JobProcess] = []
    try:
        jobs = contender.start(run)
        finished = partial(contender.finished, run)
        result.measurement, texts = watch_backlog(
            jobs, contender.name, bench.topic, bench.messages, finished=finished,
            on_progress=quarters(contender.name, bench.messages, report),
        )  # fmt: skip
        stop_jobs(jobs)
        result.check = retrying("reading results", lambda: contender.check(run, session, bench.oracle, texts))
    except Exception as exc:  # one contender failing must not hide the others' figures
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        stop_jobs(jobs)
        try:
            retrying("cleaning up", lambda: contender.cleanup(run, session, bench.oracle))
        except Exception as exc:
            report(f"  warning: could not clean up after {contender.name} ({run.run_id}): {exc}")
    report(f"  {describe(result)}")
    return result


def run_backlog_repeats(
    settings: Settings,
    contenders: Sequence[Contender],
    bench: Input,
    repeats: int,
    out_dir: Path,
    report: Report,
    topic_env: Callable[[str], dict[str, str]] = lambda topic: {},
) -> list[RunResult]:
    runs: list[RunResult] = []
    with bench_keyspace(settings) as (keyspace, session):
        for repeat in range(1, repeats + 1):
            for contender in contenders:
                report(f"repeat {repeat}/{repeats}: {contender.name} over {bench.messages:,} messages")
                run = RunContext(settings, keyspace, bench.topic, new_run_id(), out_dir,
                                 topic_env=topic_env(bench.topic))  # fmt: skip
                runs.append(backlog_run(contender, repeat, bench, run, session, report))
    return runs


def describe(result: RunResult) -> str:
    if result.error:
        return f"{result.contender}: FAILED: {result.error}"
    parts = [result.contender + ":"]
    m = result.measurement
    if m is not None and m.rated:
        parts.append(
            f"{m.events_per_s:,.0f} events/s, {m.cpu_s_per_million:,.0f} CPU s/1M, {m.peak_rss_mib:.0f} MiB"
        )
    if result.memory is not None:
        parts.append(result.memory.summary() + ";")
    if result.latency_ms:
        lat = result.latency_ms
        parts.append(f"p50 {lat['p50']:,.0f} ms, p99 {lat['p99']:,.0f} ms, p99.9 {lat['p999']:,.0f} ms")
    if result.check is not None:
        parts.append(result.check.summary)
    return " ".join(parts)


def cleanup_topics(settings: Settings, topics: Sequence[str]) -> None:
    retrying("deleting topics", lambda: delete_topics(settings.kafka, topics))
