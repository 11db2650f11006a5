"""The ``recovery`` scenario: how long our worker takes from its start to caught-up after a
restart, with state snapshots and without, after a history of N and of 5N events, and after
``kill -9`` with static and with dynamic group membership.

The histories are the bench workload at the same event rate (the same ads and windows: the same
keys and state size), so a longer history only means more log. Each one is produced to a topic of
its own, caught up by one worker and stopped with SIGTERM (its revoke snapshots every partition).
A partition's state is recovered lazily, when its first new message arrives: so a small tail with
later event times is produced before each measured start. The kill -9 restarts run after the
shortest history only. Every restart is checked against the oracle of everything produced so far.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from streams.bench.contenders import OurWorker, RunContext
from streams.bench.ctr import EVENT_RATE, ad_events_env
from streams.bench.measure import JobProcess, stop_jobs, watch_backlog
from streams.bench.recovery_report import TAIL_EVENTS, RecoveryFigures, events_label, ratio_line, verdict
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
from streams.bench.workload import Oracle, ad_event_stream
from streams.ctr.pipeline import CtrPipeline
from streams.io.cassandra import check_identifier
from streams.io.kafka import ensure_topics, high_watermarks
from streams.scrape import samples, total
from streams.settings import Settings
from streams.tables import STATE_SNAPSHOTS
from streams.topics import raw_topic

HISTORIES = (1, 5)  # multiples of --events
HISTORY_SEED, TAIL_SEED = 42, 1000  # event ids carry the seed: every tail has its own
STALL_S = 900.0  # a whole-log recovery of a long history shows no progress until it is done
INSTANCE_ID = "bench-slot-0"
RETRY_PAUSE_S = 30.0
SNAPSHOTS_OFF = {"STREAMS_WORKER__SNAPSHOTS": "false"}
PIPELINE = CtrPipeline.name


class RestartedWorker(OurWorker):
    """Our worker on one version again and again, each start with its own extra settings."""

    def __init__(self) -> None:
        super().__init__("ours")
        self.extra: dict[str, str] = {}

    def env(self, run: RunContext) -> dict[str, str]:
        return {**super().env(run), **self.extra}


@dataclass
class History:
    """One history's topic, everything produced to it so far and the oracle of all of it."""

    settings: Settings
    session: Any
    run: RunContext
    events: int  # impressions of the history proper (the row's label)
    report: Report
    worker: RestartedWorker = field(default_factory=RestartedWorker)
    oracle: Oracle = field(default_factory=Oracle)
    jobs: list[JobProcess] = field(default_factory=list)
    messages: int = 0
    next_ms: int = 0  # event time after the last impression produced
    tails: int = 0

    def produce(self, events: int, seed: int) -> set[int]:
        """``events`` impressions (and their clicks) from ``next_ms``; the partitions they reached."""
        before = self.ends()
        stream = ad_event_stream(events, start_ms=self.next_ms, rate=EVENT_RATE, seed=seed)
        self.messages += preload(self.settings, self.run.topic, self.oracle.counting(stream))
        self.next_ms += int(events / EVENT_RATE * 1000)
        after = self.ends()
        return {p for p, end in after.items() if end > before.get(p, 0)}

    def ends(self) -> dict[int, int]:
        """partition -> end offset (a new topic's leaders take a moment to be known)."""
        action = partial(high_watermarks, self.settings.kafka, self.run.topic)
        found: dict[int, int] = retrying("reading end offsets", action, attempts=30, pause_s=1)
        return found

    def tail(self) -> set[int]:
        self.tails += 1
        return self.produce(TAIL_EVENTS, TAIL_SEED + self.tails)

    def start(self, extra: dict[str, str]) -> float:
        """Start a worker with ``extra`` settings; returns the monotonic time just before."""
        self.worker.extra = dict(extra)
        started = time.monotonic()
        self.jobs = self.worker.start(self.run)
        return started

    def caught_up(self, expected: int, progress: bool = False) -> list[str]:
        """Until the worker did ``expected`` events and its committed offsets are at the end."""
        on_progress = quarters(self.worker.name, expected, self.report) if progress else lambda done: None
        _, texts = watch_backlog(
            self.jobs, self.worker.name, self.run.topic, expected, stall_timeout_s=STALL_S,
            finished=partial(self.worker.finished, self.run), on_progress=on_progress,
        )  # fmt: skip
        return texts

    def stop(self) -> None:
        stop_jobs(self.jobs)

    def kill(self) -> None:
        for job in self.jobs:
            job.proc.kill()
            job.proc.wait(timeout=30)

    def snapshot_bytes(self) -> int:
        """The newest snapshot of every partition of the version, summed (0 where there is none)."""
        table = f"{check_identifier(self.run.keyspace)}.{STATE_SNAPSHOTS.name}"
        cql = (
            f"SELECT size FROM {table} WHERE pipeline_version = ? AND pipeline = ? AND source_partition = ? "
            "AND chunk = 0 LIMIT 1 ALLOW FILTERING"  # clustered newest first
        )
        statement, version = self.session.prepare(cql), self.worker.version(self.run)
        sizes = 0
        for partition in range(self.settings.kafka.partitions):
            rows = list(self.session.execute(statement, [version, PIPELINE, partition]))
            sizes += rows[0].size if rows else 0
        return sizes


def recoveries(text: str) -> dict[str, int]:
    """source -> partitions recovered, from a worker's /metrics."""
    found: dict[str, int] = {}
    for labels, value in samples(text, "streams_recoveries_total"):
        if labels.get("pipeline") == PIPELINE:
            found[labels["source"]] = found.get(labels["source"], 0) + int(value)
    return found


def measured_restart(h: History, mode: str, extra: dict[str, str], repeat: int) -> RunResult:
    """A tail, then a worker started with ``extra``: its time to caught-up, checked, then stopped."""
    history_messages, size = h.messages, retrying("reading snapshots", h.snapshot_bytes)
    reached = h.tail()
    started = h.start(extra)
    texts = h.caught_up(h.messages - history_messages)
    seconds = time.monotonic() - started
    text = texts[0]
    h.stop()
    figures = RecoveryFigures(
        mode, h.events, history_messages, seconds, int(total(text, "streams_recovery_messages_total")),
        recoveries(text), len(reached), size,
    )  # fmt: skip
    result = RunResult(figures.label, repeat, recovery=figures)
    results = retrying("reading results", lambda: h.worker.check(h.run, h.session, h.oracle, texts))
    result.check = verdict(results, figures)
    return result


def kill_restart(h: History, mode: str, extra: dict[str, str], repeat: int) -> RunResult:
    """A worker caught up on a tail is SIGKILLed; then the measured restart with the same settings."""
    before = h.messages
    h.tail()
    h.start(extra)
    h.caught_up(h.messages - before)
    h.kill()
    return measured_restart(h, mode, extra, repeat)


def guarded(h: History, label: str, repeat: int, phase: Any, attempts: int = 2) -> RunResult:
    """One restart, tried again (after another tail) if it failed or was wrong: other tests take the
    shared services down for a while (a snapshot not saved during an outage sends the restart to
    the log). The row says which try it shows and what went wrong before; a last failure is its
    row's error, not the end of the scenario."""
    failures: list[str] = []
    for attempt in range(1, attempts + 1):
        try:
            result: RunResult = phase()
        except Exception as exc:  # the other rows' figures still count
            result = RunResult(label, repeat, error=f"{type(exc).__name__}: {exc}")
        finally:
            h.stop()
        if result.ok or attempt == attempts:
            break
        failures.append(describe(result))
        h.report(f"  try {attempt} failed: {failures[-1]}; once more in {RETRY_PAUSE_S:.0f} s")
        time.sleep(RETRY_PAUSE_S)
    if failures and result.recovery is not None and result.check is not None:
        result.recovery = replace(result.recovery, attempt=attempt)
        result.check = replace(
            result.check, summary=f"{result.check.summary}; try {attempt}, before: {failures}"
        )
    h.report(f"  {describe(result)}")
    return result


def restarts(h: History, repeat: int, kills: bool) -> list[RunResult]:
    n = events_label(h.events)
    phases = [
        (f"{n}, snapshot", lambda: measured_restart(h, "snapshot", {}, repeat)),
        (f"{n}, whole log", lambda: measured_restart(h, "log", SNAPSHOTS_OFF, repeat)),
    ]
    if kills:  # static first: its member does not leave on SIGTERM, the dynamic one's start waits it out
        static = {"STREAMS_WORKER__INSTANCE_ID": INSTANCE_ID}
        phases += [
            ("kill -9, static id", lambda: kill_restart(h, "static", static, repeat)),
            ("kill -9, dynamic", lambda: kill_restart(h, "dynamic", {}, repeat)),
        ]
    runs = []
    for label, phase in phases:
        h.report(f"  restart: {label}")
        runs.append(guarded(h, label, repeat, phase))
    return runs


def history_runs(
    settings: Settings, keyspace: str, session: Any, events: int, repeat: int, kills: bool,
    out_dir: Path, report: Report,
) -> list[RunResult]:  # fmt: skip
    """Pre-load ``events`` impressions of history, catch up, stop; then the restarts."""
    run_id = new_run_id()
    topic = f"bench-ad-events-{run_id}"
    run = RunContext(settings, keyspace, topic, run_id, out_dir, topic_env=ad_events_env(topic))
    h = History(settings, session, run, events, report)
    h.next_ms = int(time.time() * 1000) - int(events / EVENT_RATE * 1000) - 300_000
    try:
        ensure_topics(settings.kafka, [raw_topic(topic, settings)])
        report(f"repeat {repeat}: pre-loading {events:,} impressions of history to {topic}")
        h.produce(events, HISTORY_SEED)
        started = h.start({})
        h.caught_up(h.messages, progress=True)
        report(f"  caught up on {h.messages:,} messages in {time.monotonic() - started:,.0f} s")
        h.stop()
        return restarts(h, repeat, kills)
    except Exception as exc:  # the history itself failed: one row says so
        result = RunResult(f"{events_label(events)}, history", repeat, error=f"{type(exc).__name__}: {exc}")
        report(f"  {describe(result)}")
        return [result]
    finally:
        h.stop()
        try:
            retrying("cleaning up", lambda: h.worker.cleanup(run, session, h.oracle))
        except Exception as exc:
            report(f"  warning: could not clean up after {run.run_id}: {exc}")
        cleanup_topics(settings, [topic])


def bench_recovery(
    settings: Settings, events: int, repeats: int, out_dir: Path, report: Report
) -> list[RunResult]:
    runs: list[RunResult] = []
    with bench_keyspace(settings) as (keyspace, session):
        for repeat in range(1, repeats + 1):
            for multiple in HISTORIES:
                kills = multiple == HISTORIES[0]
                runs += history_runs(
                    settings, keyspace, session, events * multiple, repeat, kills, out_dir, report
                )
    report(ratio_line(runs))
    return runs
