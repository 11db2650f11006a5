"""The fraud scenarios (our worker only): scoring a backlog of transactions, and produce-to-score latency;
and the transaction streams of the memory scenarios (`streams.bench.soak`).

Correct means every valid transaction of the input (one that passes ``schemas/transaction``) got a
score record on the version's ``fraud-scores`` topic, and nothing else did.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from streams.bench.check import Check, compare_ids
from streams.bench.contenders import OurWorker, RunContext
from streams.bench.ctr import LEAD_IN_S
from streams.bench.latency import Latencies, id_latencies, percentiles, records
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
    run_backlog_repeats,
)
from streams.bench.workload import Oracle, mean_size
from streams.events import Rejected, decode, load_validator
from streams.fraud.generator import TransactionGenerator, TransactionProfile
from streams.fraud.synthetic import load_ip_prefixes
from streams.io.kafka import ensure_topics, high_watermarks
from streams.settings import Settings, project_dir
from streams.topics import raw_topic
from streams.versions import result_topic


def transaction_generator(settings: Settings, profile: TransactionProfile) -> TransactionGenerator:
    return TransactionGenerator(
        profile, seed=42, start_ms=1_767_225_600_000,
        ip_prefixes=load_ip_prefixes(settings.fraud.ip_countries_file),
    )  # fmt: skip


def transactions(settings: Settings, count: int) -> list[tuple[bytes, bytes]]:
    profile = TransactionProfile(mean_gap_ms=14 * 86_400_000 / count)
    return transaction_generator(settings, profile).scenario(count).transactions


def transaction_events(settings: Settings, chunk: int = 1000) -> Iterator[dict[str, Any]]:
    """Generated transactions without malformed ones, decoded, endlessly (chunk by chunk, lazily)."""
    generator = transaction_generator(settings, TransactionProfile(malformed_share=0.0))
    while True:
        for _, value in generator.scenario(chunk).transactions:
            yield orjson.loads(value)


def live_transactions(
    settings: Settings, count: int, *, start_ms: int, rate: float
) -> Iterator[tuple[bytes, bytes]]:
    """``count`` transactions re-stamped at ``rate`` per second of event time from ``start_ms``
    (the generator's own times follow a weekly rhythm, not the wall clock)."""
    for i, event in enumerate(islice(transaction_events(settings), count)):
        event["ts"] = start_ms + int(i * 1000 / rate)
        yield event["customer_id"].encode(), orjson.dumps(event)


def customer_sweep(
    settings: Settings, customers: int, *, start_ms: int, span_ms: int
) -> Iterator[tuple[bytes, bytes]]:
    """One transaction for each of ``customers`` customers in turn, each with its own device and
    card, in event-time order within ``span_ms``: the generator's transactions with their customer
    (and its device and card) replaced by the next one. The generator itself draws from a weighted
    population, which would take far more than a million transactions to touch a million customers."""
    for i, event in enumerate(islice(transaction_events(settings), customers)):
        event["customer_id"] = f"cust-{i:07d}"
        event["ts"] = start_ms + i * span_ms // customers
        for field, prefix in (("device_id", "dev"), ("card_id", "card")):
            if event.get(field):
                event[field] = f"{prefix}-{i:07d}-0"
        yield event["customer_id"].encode(), orjson.dumps(event)


def valid_ids(settings: Settings, messages: Sequence[tuple[bytes, bytes]]) -> set[str]:
    validator = load_validator(settings.schemas_dir / "transaction.schema.json")
    decoded = (decode(value, validator) for _, value in messages)
    return {event["transaction_id"] for event in decoded if not isinstance(event, Rejected)}


def fraud_topics(suffix: str) -> dict[str, str]:
    return {
        "STREAMS_TOPICS__TRANSACTIONS": f"bench-transactions-{suffix}",
        "STREAMS_TOPICS__LABELS": f"bench-labels-{suffix}",
        "STREAMS_TOPICS__FRAUD_SCORES": f"bench-fraud-scores-{suffix}",
        "STREAMS_TOPICS__FRAUD_CHAIN_HEADS": f"bench-fraud-chain-heads-{suffix}",
        "STREAMS_TOPICS__FRAUD_ENTITY_SIGHTINGS": f"bench-fraud-entity-sightings-{suffix}",
        "STREAMS_TOPICS__FRAUD_ENTITY_FEATURES": f"bench-fraud-entity-features-{suffix}",
    }


ENTITY_MODEL = project_dir() / "deploy" / "models" / "fraud-lr-v3.json"


class OurFraudWorker(OurWorker):
    """Our worker running only the fraud pipeline; checked against the valid transaction ids.
    With ``model``: that model file (one with entity features runs the entity stage too)."""

    def __init__(self, expected: set[str], name: str = "ours", model: Path | None = None) -> None:
        super().__init__(name, pipeline="fraud")
        self.expected = expected
        self.model = model
        if model is not None:
            self.description += f", model {model.name}"

    def env(self, run: RunContext) -> dict[str, str]:
        if self.model is None:
            return super().env(run)
        # A backlog ends quiet: its partitions tell the entity stage within half a second.
        return {**super().env(run), "STREAMS_FRAUD__MODEL_FILE": str(self.model),
                "STREAMS_FRAUD__ENTITY_IDLE_S": "0.5"}  # fmt: skip

    def finished(self, run: RunContext) -> bool:
        """Consumed is not enough with entity features (transactions wait for their answers past
        their commit): done once every valid transaction has a score record too."""
        if not super().finished(run):
            return False
        scored = sum(high_watermarks(run.settings.kafka, self.scores_topic(run)).values())
        return scored >= len(self.expected)

    def scores_topic(self, run: RunContext) -> str:
        return result_topic(run.topic_env["STREAMS_TOPICS__FRAUD_SCORES"], self.version(run))

    def check(self, run: RunContext, session: Any, oracle: Oracle, texts: Sequence[str]) -> Check:
        scored = {
            record.get("transaction_id") for record, _ in records(run.settings.kafka, self.scores_topic(run))
        }
        return compare_ids(self.expected, {str(t) for t in scored if t}, "transactions scored")

    def latencies(self, run: RunContext) -> Latencies:
        return id_latencies(run.settings.kafka, run.topic, self.scores_topic(run), "transaction_id")


def bench_fraud(
    settings: Settings, events: int, repeats: int, out_dir: Path, report: Report
) -> tuple[Input, list[RunResult]]:
    """Scoring throughput: fresh workers over a backlog of transactions (no labels), with the
    shipped model and with the entity-feature model (the entity stage on), side by side."""
    names = fraud_topics(new_run_id())
    topic = names["STREAMS_TOPICS__TRANSACTIONS"]
    messages = transactions(settings, events)
    try:
        report(f"pre-loading {len(messages):,} transactions (~{mean_size(messages):.0f} bytes) to {topic}")
        ensure_topics(settings.kafka, [raw_topic(name, settings) for name in names.values()])
        bench = Input(topic, preload(settings, topic, messages), mean_size(messages), Oracle())
        expected = valid_ids(settings, messages)
        contenders = [OurFraudWorker(expected), OurFraudWorker(expected, "ours-entities", ENTITY_MODEL)]
        runs = run_backlog_repeats(settings, contenders, bench, repeats, out_dir, report, lambda _: names)
    finally:
        cleanup_topics(settings, list(names.values()))
    return bench, runs


def fraud_latency_run(
    settings: Settings,
    repeat: int,
    keyspace: str,
    session: Any,
    rate: float,
    seconds: float,
    out_dir: Path,
    model: Path | None = None,
) -> RunResult:
    """Transactions at ``rate``/s: CreateTime of each to the CreateTime of its score record (written
    to Cassandra first, then published). ``model``: another model file (`OurFraudWorker`)."""
    run_id = new_run_id()
    names = fraud_topics(run_id)
    topic = names["STREAMS_TOPICS__TRANSACTIONS"]
    messages = transactions(settings, int(rate * (LEAD_IN_S + seconds)))
    name = "ours (fraud)" if model is None else "ours (fraud, entity features)"
    contender = OurFraudWorker(valid_ids(settings, messages), name, model)
    run = RunContext(settings, keyspace, topic, run_id, out_dir, topic_env=names)
    result = RunResult(name, repeat)
    jobs: list[JobProcess] = []
    try:
        ensure_topics(settings.kafka, [raw_topic(name, settings) for name in names.values()])
        jobs = contender.start(run)
        wait_serving(jobs, contender.name)
        time.sleep(3)  # partitions assigned
        started = time.time()
        measured_from_ms = (started + LEAD_IN_S) * 1000  # leaves out the producer's own bootstrap
        sent = preload(settings, topic, messages, rate=rate)
        offered = sent / (time.time() - started)
        result.measurement, texts = watch_backlog(jobs, contender.name, topic, sent)
        deadline = time.monotonic() + 60  # consumed; with entity features, scored a little later
        while not contender.finished(run) and time.monotonic() < deadline:
            time.sleep(0.5)
        stop_jobs(jobs)
        result.latency_ms = {
            **percentiles(contender.latencies(run), measured_from_ms),
            "offered_per_s": offered,
        }
        result.check = contender.check(run, session, Oracle(), texts)
    except Exception as exc:  # reported with the other runs' figures
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        stop_jobs(jobs)
        contender.cleanup(run, session, Oracle())
        cleanup_topics(settings, list(names.values()))
    return result


def bench_fraud_latency(
    settings: Settings, rate: float, seconds: float, repeats: int, out_dir: Path, report: Report
) -> list[RunResult]:
    runs = []
    with bench_keyspace(settings) as (keyspace, session):
        for repeat in range(1, repeats + 1):
            for model in (None, ENTITY_MODEL):  # side by side: without and with entity features
                what = "" if model is None else ", entity features"
                report(f"repeat {repeat}/{repeats}: ours (fraud{what}) at {rate:,.0f} transactions/s "
                       f"for {seconds:.0f}s")  # fmt: skip
                run = fraud_latency_run(settings, repeat, keyspace, session, rate, seconds, out_dir, model)
                runs.append(run)
                report(f"  {describe(runs[-1])}")
    return runs
