"""Which cohort days the fraud monitor recomputes: at its first refresh the last `metrics_days`
days, then every day that got a decision or a label since, however old (within the label
horizon), until its rows are known durable and once more; a day whose refresh failed is tried
again. No Cassandra: the day's rows are faked."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from streams.compose import compose
from streams.fraud.pipeline import FraudPipeline
from streams.fraud.processor import DAY_MS, FraudProcessor
from streams.metrics import FraudMetrics
from streams.monitor import FraudMonitor
from streams.settings import Settings
from streams.sink import MemorySink

TODAY = 20_000  # a cohort day (days since the epoch)


class Monitor(FraudMonitor):
    """Reads each day's outcomes from ``days`` instead of Cassandra; fails while ``broken``."""

    def __init__(self, pipeline: FraudPipeline, sink: MemorySink, metrics: FraudMetrics) -> None:
        params = compose(Settings()).fraud
        super().__init__(pipeline, params, None, "ks", "v1", 4, sink, metrics)
        self.read: list[list[int]] = []
        self.broken = False

    def _cohort_rows(self, days: Any) -> list[dict[str, Any]]:
        if self.broken:
            raise ConnectionError("Cassandra is down")
        self.read.append(list(days))
        return [
            {"pipeline_version": "v1", "cohort_day": d, "precision": 1.0, "recall": 1.0,
             "precision_at_k": 0.5, "recall_at_k": 0.5, "pr_auc": None}
            for d in days
        ]  # fmt: skip


def monitor() -> tuple[Monitor, FraudPipeline, MemorySink, FraudMetrics]:
    params = compose(Settings()).fraud
    processor = FraudProcessor(params.model, params.policy, params.ip_prefixes, "v1")
    processor.state(0).watermark = TODAY * DAY_MS + 3_600_000
    pipeline = FraudPipeline(processor, (None, None), ("tx", "labels"), "scores")  # type: ignore[arg-type]
    sink = MemorySink({"fraud_cohort_metrics": ("pipeline_version", "cohort_day")})
    metrics = FraudMetrics(CollectorRegistry())
    return Monitor(pipeline, sink, metrics), pipeline, sink, metrics


def gauge_days(metrics: FraudMetrics) -> set[str]:
    return {s.labels["cohort"] for m in metrics.cohort.collect() for s in m.samples}


def test_first_the_recent_days_then_only_the_days_touched_since_however_old() -> None:
    m, pipeline, sink, metrics = monitor()
    pipeline.durable_days = {TODAY, TODAY - 40, TODAY - 200}  # 200 days: beyond the label horizon
    asyncio.run(m.refresh())
    recent = list(range(TODAY - m.params.metrics_days + 1, TODAY + 1))
    assert m.read == [sorted([TODAY - 40, *recent])]
    assert {row["cohort_day"] for row in sink.tables["fraud_cohort_metrics"].values()} == set(m.read[0])
    assert all(row["computed_at"] is not None for row in sink.tables["fraud_cohort_metrics"].values())
    assert len(gauge_days(metrics)) == m.params.metrics_days  # the old day has a row, not a gauge
    pipeline.durable_days = {TODAY - 40}  # a label for a decision 40 days old, durable
    asyncio.run(m.refresh())
    assert m.read[1] == [TODAY - 40]
    asyncio.run(m.refresh())
    assert m.read[2] == []  # nothing new: nothing read


def test_a_failed_refresh_keeps_its_days_for_the_next_one() -> None:
    m, pipeline, _, _ = monitor()
    asyncio.run(m.refresh())
    pipeline.durable_days = {TODAY - 3}
    m.broken = True
    with pytest.raises(ConnectionError):
        asyncio.run(m.refresh())
    m.broken = False
    asyncio.run(m.refresh())
    assert m.read[-1] == [TODAY - 3]


def test_days_that_leave_the_window_lose_their_gauges() -> None:
    m, pipeline, _, metrics = monitor()
    asyncio.run(m.refresh())
    assert max(gauge_days(metrics)) == "2024-10-04"  # day 20,000
    pipeline.processor.state(0).watermark = (TODAY + 2) * DAY_MS
    pipeline.durable_days = {TODAY + 2}
    asyncio.run(m.refresh())
    days = gauge_days(metrics)
    assert "2024-10-06" in days and len(days) == m.params.metrics_days - 2 + 1


def test_a_day_is_refreshed_until_its_rows_are_known_durable_then_once_more() -> None:
    m, pipeline, _, _ = monitor()
    asyncio.run(m.refresh())
    pipeline.touched_days = {TODAY - 5}  # folded: its rows are not written yet
    asyncio.run(m.refresh())
    pipeline.drain()  # drained: its checkpoint may still be on its way
    asyncio.run(m.refresh())
    asyncio.run(m.refresh())  # (idle: nothing drained since, still not known durable)
    pipeline.drain()  # the engine drains once the previous checkpoint has ended: durable
    asyncio.run(m.refresh())
    asyncio.run(m.refresh())
    assert m.read[1:] == [[TODAY - 5]] * 4 + [[]]
