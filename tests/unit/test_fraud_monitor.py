"""Which cohort days the fraud monitor recomputes: at its first refresh the last `metrics_days`
days, then every day that got a decision or a label since, however old (within the label
horizon), until its rows are known durable and once more; a day whose refresh failed is tried
again. No Cassandra: the day's rows are faked."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry

from streams.compose import compose
from streams.fraud.evaluation import ThresholdCounts
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
        self.stored: dict[int, ThresholdCounts] = {}  # counts of the days in Cassandra

    def _stored_counts(self, first: int, last: int) -> dict[int, ThresholdCounts]:
        return {d: c for d, c in self.stored.items() if first <= d <= last}

    def _cohort_rows(self, days: Any) -> list[dict[str, Any]]:
        if self.broken:
            raise ConnectionError("Cassandra is down")
        self.read.append(list(days))
        return [
            {"pipeline_version": "v1", "cohort_day": d, "precision": 1.0, "recall": 1.0,
             "precision_at_k": 0.5, "recall_at_k": 0.5, "pr_auc": None,
             "holdout_flagged": 6, "holdout_flagged_fraud": 3, "missed_fraud": 1.0}
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


def test_the_rolling_7_day_cohort_pools_the_counts_of_its_days() -> None:
    m, pipeline, sink, metrics = monitor()
    asyncio.run(m.refresh())
    m.stored = {TODAY - d: ThresholdCounts(1, 1, 0.0) for d in range(10)}  # as stored: 1 row each
    pipeline.durable_days = {TODAY - 3}  # recomputed: 6 rows, 3 fraud, 1 missed (`_cohort_rows`)
    asyncio.run(m.refresh())
    rows = sink.tables["fraud_cohort_metrics"]
    # Day D pools D-6..D: the recomputed day-3 counts replace the stored ones.
    pooled = rows[("v1", TODAY)]
    assert pooled["pooled_holdout_flagged"] == 6 + 6 * 1  # days -6..0, day -3 recomputed
    # Days whose window holds day-3: day-3 .. day+3 (up to the newest day, today)
    changed = sorted(
        d for (_, d), row in rows.items() if row["computed_at"] == rows[("v1", TODAY - 3)]["computed_at"]
    )
    assert changed == list(range(TODAY - 3, TODAY + 1))
    day3 = rows[("v1", TODAY - 3)]
    assert day3["pooled_holdout_flagged"] == 6 + 6 * 1  # day-3 fresh, days -9..-4 stored
    h = m.params.policy.holdout_share
    assert day3["pooled_precision"] == pytest.approx((3 + 6) / 12)
    assert day3["pooled_recall"] == pytest.approx((9 / h) / (9 / h + 1.0))
    assert "pooled_precision" in {s.labels["metric"] for x in metrics.cohort.collect() for s in x.samples}


# ---- the live feature histograms behind the drift inspector

HOUR = 3_600_000


def test_live_histograms_cover_the_last_window_of_event_time() -> None:
    from streams.fraud.features import FEATURES
    from streams.fraud.model import LiveHistograms

    params = compose(Settings()).fraud
    live = LiveHistograms(params.model, window_hours=24)
    column = FEATURES.index("log_amount")
    start = (TODAY * 24) * HOUR  # a Friday, 00:00: the second day is a Saturday (buckets 4-7)
    for hour in range(48):  # one transaction an hour for two days, log_amount 10 (the top bin)
        x = np.zeros((1, len(FEATURES)))
        x[0, column] = 10.0
        live.add(x, [start + hour * HOUR])
    counts = live.counts()
    # Only the newest 24 hours: the second day, 6 hours in each of its four day parts.
    assert sum(counts[("log_amount", b)][-1] for b in range(4, 8)) == 24
    assert all(sum(counts[("log_amount", b)]) == 6 for b in range(4, 8))
    assert sorted(live.hours) == list(range(TODAY * 24 + 24, TODAY * 24 + 48))
    everything = LiveHistograms(params.model)
    everything.add(np.full((3, len(FEATURES)), 10.0), [start, start + 30 * HOUR, start + 47 * HOUR])
    assert sum(sum(v) for (name, _), v in everything.counts().items() if name == "log_amount") == 3


def test_a_rebuild_does_not_feed_the_live_histograms() -> None:
    from streams.fraud.generator import TransactionGenerator, TransactionProfile

    params = compose(Settings()).fraud
    processor = FraudProcessor(params.model, params.policy, params.ip_prefixes, "v1", drift_window_hours=24)
    generator = TransactionGenerator(
        TransactionProfile(malformed_share=0.0),
        seed=3,
        start_ms=TODAY * DAY_MS,
        ip_prefixes=params.ip_prefixes,
    )
    txs = [(orjson.loads(v), 0) for _, v in generator.scenario(300).transactions]
    processor.process(txs[:200], [], list(range(200)), live=False)  # a rebuild: history
    assert processor.live_counts == {}
    processor.process(txs[200:], [], list(range(200, 300)))
    assert sum(sum(v) for (name, _), v in processor.live_counts.items() if name == "log_amount") == 100


def drift_of(transform: Any = None) -> dict[str, float]:
    """PSI per feature of two weeks of demo-shaped traffic (a seed the model never saw), as the
    worker's inspector computes it, against the shipped model's training reference."""
    from streams.fraud.evaluation import feature_psi
    from streams.fraud.generator import TransactionGenerator, TransactionProfile
    from streams.fraud.synthetic import DEMO_GAP_MS

    params = compose(Settings()).fraud
    processor = FraudProcessor(
        params.model, params.policy, params.ip_prefixes, "v1", drift_window_hours=params.drift_window_hours
    )
    generator = TransactionGenerator(
        TransactionProfile(mean_gap_ms=DEMO_GAP_MS, malformed_share=0.0), seed=77,
        start_ms=1_780_000_000_000, ip_prefixes=params.ip_prefixes,
    )  # fmt: skip
    txs = [orjson.loads(v) for _, v in generator.scenario(20_000).transactions]
    if transform is not None:
        txs = [transform(i, tx) for i, tx in enumerate(txs)]
    for i in range(0, len(txs), 1000):
        batch = txs[i : i + 1000]
        processor.process([(tx, 0) for tx in batch], [], list(range(i, i + len(batch))))
    return feature_psi(params.model.reference, processor.live_counts)


def test_the_drift_alert_is_quiet_on_demo_traffic_and_fires_on_a_shift() -> None:
    alert = compose(Settings()).fraud.drift_alert_psi
    quiet = drift_of()
    assert len(quiet) == 27 and max(quiet.values()) < alert, max(quiet.items(), key=lambda kv: kv[1])

    def foreign_ip(i: int, tx: dict[str, Any]) -> dict[str, Any]:
        # Half the transactions from an IP of another country than the billing one.
        if i % 2 == 0 and tx.get("ip"):
            octet = next(
                o for o, c in compose(Settings()).fraud.ip_prefixes.items() if c != tx["billing_country"]
            )
            tx = {**tx, "ip": f"{octet}.{tx['ip'].split('.', 1)[1]}"}
        return tx

    shifted = drift_of(foreign_ip)
    assert shifted["billing_ip_mismatch"] > alert  # a binary feature: seen bin by bin
    assert max(v for k, v in shifted.items() if k != "billing_ip_mismatch") < alert
