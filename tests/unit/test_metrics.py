from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Callable, Coroutine
from types import SimpleNamespace
from typing import Any

from faust.types import TP
from prometheus_client import CollectorRegistry, generate_latest

from streams.agents.common import ConsumerLag
from streams.fraud.decision import ALLOW, DISABLE_INVOICE, REVIEW
from streams.io.cassandra import _TRANSIENT
from streams.metrics import (
    AD_EVENT_TYPES,
    FRAUD_DECISIONS,
    SINK_RETRY_ERRORS,
    FraudMetrics,
    PipelineMetrics,
)
from streams.settings import project_dir


def promtool_check(registry: CollectorRegistry) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by `make deps` (Debian's prometheus package)"
    result = subprocess.run(
        [promtool, "check", "metrics"], input=generate_latest(registry), capture_output=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == b"", result.stdout


def test_metrics_use_an_injected_registry_and_pass_promtool() -> None:
    registry = CollectorRegistry()
    metrics = PipelineMetrics(registry, "v1")
    metrics.consumed.labels("raw").inc(3)
    metrics.dead_lettered.labels("raw", "malformed_json").inc()
    metrics.sink_write_seconds.labels("t").observe(0.01)
    assert registry.get_sample_value("streams_events_consumed_total", {"topic": "raw"}) == 3
    assert PipelineMetrics(CollectorRegistry(), "v1")  # a second registry does not clash
    promtool_check(registry)


def test_every_metric_family_populated_passes_promtool() -> None:
    registry = CollectorRegistry()
    metrics, fraud = PipelineMetrics(registry, "v1"), FraudMetrics(registry)
    metrics.consumer_lag.labels("ad-events", "0").set(12)
    metrics.watermark.labels("ad-events", "0").set(1.7e9)
    metrics.ctr_events.labels("click").inc()
    metrics.windows_final.labels("ctr_ad_windows").inc()
    fraud.cohort.labels("2026-01-01", "precision").set(0.5)
    fraud.psi.labels("log_amount").set(0.1)
    fraud.score.observe(0.2)
    promtool_check(registry)


def test_known_label_values_are_exported_at_zero_and_match_the_code() -> None:
    registry = CollectorRegistry()
    PipelineMetrics(registry, "v1")
    FraudMetrics(registry)
    assert set(SINK_RETRY_ERRORS) == {error.__name__ for error in _TRANSIENT}
    assert set(FRAUD_DECISIONS) == {ALLOW, DISABLE_INVOICE, REVIEW}
    schema = json.loads((project_dir() / "schemas" / "ad_event.schema.json").read_text())
    assert set(AD_EVENT_TYPES) == set(schema["properties"]["type"]["enum"])
    for name, label, values in (
        ("streams_sink_write_retries_total", "error", SINK_RETRY_ERRORS),
        ("streams_fraud_decisions_total", "decision", FRAUD_DECISIONS),
        ("streams_ctr_events_counted_total", "type", AD_EVENT_TYPES),
    ):
        assert all(registry.get_sample_value(name, {label: value}) == 0 for value in values), name


class Signal:
    """Stands in for Faust's `on_partitions_revoked` signal."""

    handler: Callable[..., Coroutine[Any, Any, None]]

    def connect(self, handler: Callable[..., Coroutine[Any, Any, None]]) -> None:
        self.handler = handler


def event(topic: str, partition: int, offset: int) -> SimpleNamespace:
    return SimpleNamespace(message=SimpleNamespace(tp=TP(topic, partition), offset=offset))


def test_consumer_lag_is_the_high_watermark_past_each_partitions_newest_offset() -> None:
    registry = CollectorRegistry()
    highwaters: dict[TP, int | None] = {TP("t", 0): 120, TP("t", 1): None, TP("t", 3): 8}

    def highwater(tp: TP) -> int | None:
        assert tp in highwaters, "Partition is not assigned"  # as aiokafka does
        return highwaters[tp]

    app = SimpleNamespace(consumer=SimpleNamespace(highwater=highwater), on_partitions_revoked=Signal())
    lag = ConsumerLag(app, PipelineMetrics(registry, "v1"))  # type: ignore[arg-type]

    def lag_of(partition: int) -> float | None:
        return registry.get_sample_value(
            "streams_consumer_lag_records", {"topic": "t", "partition": str(partition)}
        )

    lag.observe([event("t", 0, 97), event("t", 0, 99), event("t", 1, 5), event("t", 2, 7), event("t", 3, 7)])
    assert lag_of(0) == 120 - 99 - 1
    assert lag_of(1) is None  # no fetch response yet
    assert lag_of(2) is None  # revoked since the batch was fetched
    assert lag_of(3) == 0  # caught up
    asyncio.run(app.on_partitions_revoked.handler(app, {TP("t", 0), TP("t", 2)}))
    assert lag_of(0) is None and lag_of(3) == 0  # the new owner reports a revoked partition
