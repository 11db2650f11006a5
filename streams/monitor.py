"""The fraud monitor: cohort quality of recent decision days (read back from Cassandra, so every
worker's partitions count) and feature drift of live traffic, refreshed on a timer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from streams.compose import FraudParams
from streams.fraud.cohorts import metrics_row
from streams.fraud.evaluation import feature_psi
from streams.fraud.pipeline import FraudPipeline
from streams.fraud.processor import DAY_MS
from streams.metrics import FraudMetrics
from streams.sink import Sink

METRICS_TABLE = "fraud_cohort_metrics"
COHORT_GAUGES = ("precision", "recall", "precision_at_k", "recall_at_k", "pr_auc")


def _day(cohort_day: int) -> str:
    return datetime.fromtimestamp(cohort_day * 86_400, tz=UTC).date().isoformat()


class FraudMonitor:
    def __init__(
        self,
        pipeline: FraudPipeline,
        params: FraudParams,
        session: Any,
        keyspace: str,
        version: str,
        partitions: int,
        sink: Sink,
        metrics: FraudMetrics,
    ) -> None:
        self.pipeline, self.processor = pipeline, pipeline.processor
        self.params, self.session = params, session
        self.keyspace, self.version, self.partitions = keyspace, version, partitions
        self.sink, self.metrics = sink, metrics
        self.refreshed = False  # the first refresh recomputes every recent day
        self.shown: set[int] = set()  # cohort days with gauges

    async def refresh(self) -> None:
        """Recompute the metrics of every cohort day that got a decision or a label since the last
        refresh, however old (within the label horizon; `FraudPipeline.refreshable`: until its rows
        are known durable, then once more), and at the first refresh every one of the last
        `metrics_days` days too (what an earlier process folded may not have been refreshed).
        A day is recomputed whole, from every Kafka partition's rows: a day a label reached on any
        worker is recomputed by that worker. The gauges show the last `metrics_days` days."""
        watermarks = [s.watermark for s in self.processor.states.values() if s.watermark is not None]
        if not watermarks:
            return
        newest = max(watermarks) // DAY_MS
        recent = set(range(newest - self.params.metrics_days + 1, newest + 1))
        touched = self.pipeline.refreshable()
        oldest = newest - self.params.label_horizon_ms // DAY_MS
        days = sorted(d for d in touched | (set() if self.refreshed else recent) if d >= oldest)
        try:
            rows = await asyncio.to_thread(self._cohort_rows, days)
            computed_at = datetime.now(UTC)
            for row in rows:
                row["computed_at"] = computed_at
            await self.sink.write(METRICS_TABLE, rows)
        except BaseException:
            self.pipeline.durable_days |= touched  # (refreshed next time)
            raise
        self.refreshed = True
        self._show(rows, recent)
        drift = feature_psi(self.processor.model.reference, self.processor.live_counts)
        m = self.metrics
        for feature, value in drift.items():
            m.psi.labels(feature).set(value)
        m.drift.set(1.0 if any(v > self.params.drift_alert_psi for v in drift.values()) else 0.0)

    def _show(self, rows: list[dict[str, Any]], recent: set[int]) -> None:
        """Gauges of the recomputed days among ``recent``; days that left ``recent`` are removed."""
        gauge = self.metrics.cohort
        for day in sorted(self.shown - recent):
            for name in COHORT_GAUGES:
                gauge.remove(_day(day), name)  # (a label set that is not there is left alone)
            self.shown.discard(day)
        for row in rows:
            day = row["cohort_day"]
            if day not in recent:
                continue
            self.shown.add(day)
            for name in COHORT_GAUGES:
                if row[name] is None:
                    gauge.remove(_day(day), name)
                else:
                    gauge.labels(_day(day), name).set(row[name])

    def _cohort_rows(self, days: Sequence[int]) -> list[dict[str, Any]]:
        from streams.io.fraud_store import read_cohort

        rows = []
        for day in days:
            outcomes = read_cohort(self.session, self.keyspace, self.version, day, self.partitions)
            if outcomes:
                rows.append(
                    metrics_row(self.version, day, outcomes, self.params.policy, self.params.review_budget)
                )
        return rows
