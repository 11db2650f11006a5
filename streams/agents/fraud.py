"""The fraud agent: features, scores and decisions per batch; delayed labels; cohort metrics and drift."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import faust

from streams.agents.common import AgentContext, ConsumerLag, coordinates, write_rows
from streams.agents.recovery import History, StateRebuilder, first_offsets
from streams.errors import ConfigError
from streams.events import load_validator
from streams.fraud.cohorts import metrics_row
from streams.fraud.decision import DecisionPolicy
from streams.fraud.evaluation import feature_psi
from streams.fraud.model import FraudModel
from streams.fraud.processor import (
    COHORT_TABLE,
    DAY_MS,
    SCORES_TABLE,
    TRANSACTIONS_TABLE,
    FraudProcessor,
)
from streams.fraud.synthetic import load_ip_prefixes
from streams.metrics import FraudMetrics
from streams.pipelines.batch import decode_batch
from streams.settings import FraudSettings, Settings
from streams.versions import result_topic

log = logging.getLogger(__name__)
METRICS_TABLE = "fraud_cohort_metrics"


def policy_of(fraud: FraudSettings) -> DecisionPolicy:
    if fraud.review_at < fraud.disable_invoice_at:
        raise ConfigError("fraud.review_at must not be below fraud.disable_invoice_at")
    return DecisionPolicy(fraud.disable_invoice_at, fraud.review_at, fraud.holdout_share)


def make_processor(settings: Settings) -> FraudProcessor:
    fraud = settings.fraud
    for path in (fraud.model_file, fraud.ip_countries_file):
        if not path.exists():
            raise ConfigError(f"fraud file not found: {path}")
    try:
        model = FraudModel.load(fraud.model_file)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"cannot load the fraud model {fraud.model_file}: {exc}") from exc
    return FraudProcessor(
        model,
        policy_of(fraud),
        load_ip_prefixes(fraud.ip_countries_file),
        settings.worker.pipeline_version,
        label_horizon_ms=fraud.label_horizon_days * DAY_MS,
    )


def register_fraud(app: faust.App, ctx: AgentContext, fraud_metrics: FraudMetrics) -> None:
    settings, worker, metrics = ctx.settings, ctx.settings.worker, ctx.metrics
    t = settings.topics
    source = app.topic(t.transactions, t.labels, key_serializer="raw", value_serializer="raw")
    results = ctx.outputs(result_topic(t.fraud_scores, ctx.settings.worker.pipeline_version))
    validators = {
        t.transactions: load_validator(settings.schemas_dir / "transaction.schema.json"),
        t.labels: load_validator(settings.schemas_dir / "label.schema.json"),
    }
    processor = make_processor(settings)
    policy = processor.policy
    lag = ConsumerLag(app, metrics)

    def fold(history: History, partition: int) -> None:
        """Replay a partition's earlier transactions and labels into the state (outputs discarded)."""
        txs = decode_batch(history[t.transactions], validators[t.transactions])
        labels = decode_batch(history[t.labels], validators[t.labels])
        processor.process(
            [(tx, partition) for tx, _, _ in txs.events], [(lb, partition) for lb, _, _ in labels.events]
        )

    rebuilder = StateRebuilder.for_faust(
        app, settings.kafka, [t.transactions, t.labels], processor.states, fold
    )

    @app.agent(source, name="fraud")
    async def fraud_agent(stream: Any) -> None:  # a faust.Stream; StreamT lacks take_events
        async for events in stream.take_events(worker.batch_size, within=settings.fraud.batch_timeout_s):
            await rebuilder.ensure(first_offsets(events))
            by_topic: dict[str, list[Any]] = {t.transactions: [], t.labels: []}
            for event in events:
                by_topic[event.message.topic].append(event)
            txs = decode_batch(
                ((e.message.value, coordinates(e.message)) for e in by_topic[t.transactions]),
                validators[t.transactions],
            )
            labels = decode_batch(
                ((e.message.value, coordinates(e.message)) for e in by_topic[t.labels]), validators[t.labels]
            )
            out = processor.process(
                [(tx, at.partition) for tx, at, _ in txs.events],
                [(lb, at.partition) for lb, at, _ in labels.events],
            )
            # Durable first (Cassandra, results, dead letters), then the batch's offsets are acked.
            # Label columns and score columns are separate cells of the same rows: order-free upserts.
            await asyncio.gather(
                write_rows(ctx, SCORES_TABLE, out.scores),
                write_rows(ctx, TRANSACTIONS_TABLE, out.transactions),
                write_rows(ctx, COHORT_TABLE, out.cohort),
                write_rows(ctx, TRANSACTIONS_TABLE, out.label_transactions),
                write_rows(ctx, COHORT_TABLE, out.label_cohort),
            )
            await results.send(out.results)
            await ctx.dead_letters.send(txs.dead_letters + labels.dead_letters)
            now = time.time()
            for event in by_topic[t.transactions]:
                if event.message.timestamp:
                    fraud_metrics.latency.observe(max(now - event.message.timestamp, 0.0))
            for row in out.scores:
                fraud_metrics.decisions.labels(row["decision"]).inc()
                fraud_metrics.score.observe(row["score"])
                if row["holdout"]:
                    fraud_metrics.holdout.inc()
            fraud_metrics.labels_joined.inc(len(out.label_cohort))
            fraud_metrics.labels_orphaned.inc(out.orphans)
            for topic, batch in ((t.transactions, txs), (t.labels, labels)):
                metrics.consumed.labels(topic).inc(len(by_topic[topic]))
                metrics.processed.labels(topic).inc(len(batch.events))
            metrics.duplicates.labels(t.transactions).inc(out.duplicates)
            metrics.batch_events.observe(len(events))
            lag.observe(events)

    @app.timer(interval=settings.fraud.metrics_interval_s)
    async def refresh_cohorts() -> None:
        """Cohort metrics of recent decision days (from Cassandra: every worker's partitions) and drift."""
        watermarks = [s.watermark for s in processor.states.values() if s.watermark is not None]
        if not watermarks:
            return
        newest = max(watermarks) // DAY_MS
        days = range(newest - settings.fraud.metrics_days + 1, newest + 1)
        rows = await asyncio.to_thread(_cohort_rows, ctx, settings, days, policy)
        await write_rows(ctx, METRICS_TABLE, rows)
        fraud_metrics.cohort.clear()
        for row in rows:
            cohort = datetime.fromtimestamp(row["cohort_day"] * 86_400, tz=UTC).date().isoformat()
            for name in ("precision", "recall", "precision_at_k", "pr_auc"):
                if row[name] is not None:
                    fraud_metrics.cohort.labels(cohort, name).set(row[name])
        drift = feature_psi(processor.model.reference, processor.live_counts)
        for feature, value in drift.items():
            fraud_metrics.psi.labels(feature).set(value)
        fraud_metrics.drift.set(
            1.0 if any(v > settings.fraud.drift_alert_psi for v in drift.values()) else 0.0
        )


def _cohort_rows(
    ctx: AgentContext, settings: Settings, days: range, policy: DecisionPolicy
) -> list[dict[str, Any]]:
    from streams.io.fraud_store import read_cohort

    session = ctx.session
    rows = []
    for day in days:
        outcomes = read_cohort(
            session,
            settings.cassandra.keyspace,
            settings.worker.pipeline_version,
            day,
            settings.kafka.partitions,
        )
        if outcomes:
            rows.append(
                metrics_row(
                    settings.worker.pipeline_version, day, outcomes, policy, settings.fraud.review_budget
                )
            )
    return rows
