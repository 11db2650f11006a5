"""The fraud monitor: cohort quality of recent decision days (read back from Cassandra, so every
worker's partitions count) and feature drift of live traffic, refreshed on a timer."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from streams.compose import FraudParams
from streams.fraud.cohorts import metrics_row
from streams.fraud.evaluation import feature_psi
from streams.fraud.processor import DAY_MS, FraudProcessor
from streams.metrics import FraudMetrics
from streams.sink import Sink

METRICS_TABLE = "fraud_cohort_metrics"


class FraudMonitor:
    def __init__(
        self,
        processor: FraudProcessor,
        params: FraudParams,
        session: Any,
        keyspace: str,
        version: str,
        partitions: int,
        sink: Sink,
        metrics: FraudMetrics,
    ) -> None:
        self.processor, self.params, self.session = processor, params, session
        self.keyspace, self.version, self.partitions = keyspace, version, partitions
        self.sink, self.metrics = sink, metrics

    async def refresh(self) -> None:
        watermarks = [s.watermark for s in self.processor.states.values() if s.watermark is not None]
        if not watermarks:
            return
        newest = max(watermarks) // DAY_MS
        days = range(newest - self.params.metrics_days + 1, newest + 1)
        rows = await asyncio.to_thread(self._cohort_rows, days)
        await self.sink.write(METRICS_TABLE, rows)
        m = self.metrics
        m.cohort.clear()
        for row in rows:
            cohort = datetime.fromtimestamp(row["cohort_day"] * 86_400, tz=UTC).date().isoformat()
            for name in ("precision", "recall", "precision_at_k", "pr_auc"):
                if row[name] is not None:
                    m.cohort.labels(cohort, name).set(row[name])
        drift = feature_psi(self.processor.model.reference, self.processor.live_counts)
        for feature, value in drift.items():
            m.psi.labels(feature).set(value)
        m.drift.set(1.0 if any(v > self.params.drift_alert_psi for v in drift.values()) else 0.0)

    def _cohort_rows(self, days: range) -> list[dict[str, Any]]:
        from streams.io.fraud_store import read_cohort

        rows = []
        for day in days:
            outcomes = read_cohort(self.session, self.keyspace, self.version, day, self.partitions)
            if outcomes:
                rows.append(
                    metrics_row(self.version, day, outcomes, self.params.policy, self.params.review_budget)
                )
        return rows
