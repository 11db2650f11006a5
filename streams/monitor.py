"""The fraud monitor: cohort quality of recent decision days (read back from Cassandra, so every
worker's partitions count) and feature drift of live traffic, refreshed on a timer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from streams.compose import FraudParams
from streams.fraud.audit import hash_prefix
from streams.fraud.cohorts import metrics_row
from streams.fraud.evaluation import ThresholdCounts, feature_psi, threshold_metrics
from streams.fraud.pipeline import FraudPipeline
from streams.fraud.processor import DAY_MS
from streams.metrics import FraudMetrics
from streams.sink import Sink

METRICS_TABLE = "fraud_cohort_metrics"
POOLED_DAYS = 7  # the rolling cohort beside each day: it and the 6 days before it
COHORT_GAUGES = (
    "precision", "precision_low", "precision_high", "recall", "recall_low", "recall_high",
    "precision_at_k", "recall_at_k", "pr_auc", "holdout_flagged",
    "pooled_precision", "pooled_precision_low", "pooled_precision_high",
    "pooled_recall", "pooled_recall_low", "pooled_recall_high", "pooled_holdout_flagged",
)  # fmt: skip


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
        self._show_chains()
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
            pooled = await asyncio.to_thread(self._pooled_rows, rows, newest)
            computed_at = datetime.now(UTC)
            for row in rows + pooled:
                row["computed_at"] = computed_at
            await self.sink.write(METRICS_TABLE, rows)
            await self.sink.write(METRICS_TABLE, pooled)
        except BaseException:
            self.pipeline.durable_days |= touched  # (refreshed next time)
            raise
        self.refreshed = True
        self._show(rows + pooled, recent)
        drift = feature_psi(self.processor.model.reference, self.processor.live_counts)
        m = self.metrics
        for feature, value in drift.items():
            m.psi.labels(feature).set(value)
        m.drift.set(1.0 if any(v > self.params.drift_alert_psi for v in drift.values()) else 0.0)

    def _show_chains(self) -> None:
        m = self.metrics
        for partition, state in self.processor.states.items():
            if state.chain_head:
                m.chain_length.labels(str(partition)).set(state.chain_length)
                m.chain_head.labels(str(partition)).set(hash_prefix(state.chain_head))

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
                if name not in row:
                    continue  # (a daily row or a pooled one: each holds its own)
                if row[name] is None:
                    gauge.remove(_day(day), name)
                else:
                    gauge.labels(_day(day), name).set(row[name])

    def _pooled_rows(self, rows: list[dict[str, Any]], newest: int) -> list[dict[str, Any]]:
        """The 7-day pooled precision and recall of every day whose window holds a recomputed day:
        the counts of its 7 days summed (the recomputed ones from ``rows``, the others as stored)."""
        if not rows:
            return []
        changed = sorted({row["cohort_day"] for row in rows})
        first, last = changed[0] - POOLED_DAYS + 1, min(changed[-1] + POOLED_DAYS - 1, newest)
        counts = self._stored_counts(first, last)
        counts |= {
            row["cohort_day"]: ThresholdCounts(
                row["holdout_flagged"], row["holdout_flagged_fraud"], row["missed_fraud"]
            )
            for row in rows
        }
        affected = sorted({d for c in changed for d in range(c, c + POOLED_DAYS) if d in counts})
        pooled = []
        for day in affected:
            window = [counts[d] for d in range(day - POOLED_DAYS + 1, day + 1) if d in counts]
            total = sum(window[1:], window[0])
            m = threshold_metrics(total, self.params.policy.holdout_share, self.params.min_holdout_rows)
            pooled.append(
                {"pipeline_version": self.version, "cohort_day": day,
                 "pooled_holdout_flagged": total.flagged_holdout,
                 **{f"pooled_{name}": value for name, value in m.items()}}
            )  # fmt: skip
        return pooled

    def _stored_counts(self, first: int, last: int) -> dict[int, ThresholdCounts]:
        from streams.io.fraud_store import read_threshold_counts

        return read_threshold_counts(self.session, self.keyspace, self.version, first, last)

    def _cohort_rows(self, days: Sequence[int]) -> list[dict[str, Any]]:
        from streams.io.fraud_store import read_cohort

        rows = []
        p = self.params
        for day in days:
            outcomes = read_cohort(self.session, self.keyspace, self.version, day, self.partitions)
            if outcomes:
                row = metrics_row(self.version, day, outcomes, p.policy, p.review_budget, p.min_holdout_rows)
                rows.append(row)
        return rows
