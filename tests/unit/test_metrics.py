from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from streams import __version__
from streams.engine.checkpoint import Pending
from streams.engine.observer import MetricsObserver
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
    # A second set on its own registry does not clash and counts apart from the first.
    other_registry = CollectorRegistry()
    other = PipelineMetrics(other_registry, "v2")
    other.consumed.labels("raw").inc()
    assert other_registry.get_sample_value("streams_events_consumed_total", {"topic": "raw"}) == 1
    assert registry.get_sample_value("streams_events_consumed_total", {"topic": "raw"}) == 3
    build = {"pipeline_version": "v2", "version": __version__}
    assert other_registry.get_sample_value("streams_build_info", build) == 1
    with pytest.raises(ValueError, match="Duplicated timeseries"):  # the same registry twice does clash
        PipelineMetrics(registry, "v1")
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


def test_the_observer_sets_lag_and_watermarks_per_partition_and_drops_a_revoked_ones_series() -> None:
    registry = CollectorRegistry()
    observer = MetricsObserver(PipelineMetrics(registry, "v1"))

    def sample(name: str, partition: int) -> float | None:
        return registry.get_sample_value(name, {"topic": "t", "partition": str(partition)})

    observer.positions({("t", 0): 21, ("t", 3): 0}, {("t", 0): 1_700_000_000_500})
    assert sample("streams_consumer_lag_records", 0) == 21
    assert sample("streams_consumer_lag_records", 3) == 0
    assert sample("streams_consumer_lag_records", 1) is None  # never reported
    assert sample("streams_event_time_watermark_seconds", 0) == 1_700_000_000.5
    observer.partitions_gone([("t", 0), ("t", 2)])
    assert sample("streams_consumer_lag_records", 0) is None  # the new owner reports it
    assert sample("streams_event_time_watermark_seconds", 0) is None
    assert sample("streams_consumer_lag_records", 3) == 0


def test_the_observer_counts_a_checkpoint_only_once_it_is_done() -> None:
    registry = CollectorRegistry()
    observer = MetricsObserver(PipelineMetrics(registry, "v1"), FraudMetrics(registry), ["tx"])
    pending = Pending()
    pending.consumed.update({"tx": 5, "ad": 3})
    pending.folded.tallies.update({"processed:tx": 4, "duplicate:tx": 1, "fraud_decision:review": 2,
                                   "fraud_holdout": 1, "labels_joined": 3, "ctr_event:click": 2})  # fmt: skip
    pending.folded.observations["fraud_score"] = [0.1, 0.95]
    pending.drained.tallies["windows_final:ctr_ad_windows"] = 7
    observer.checkpointed(pending)
    value = registry.get_sample_value
    assert value("streams_events_consumed_total", {"topic": "tx"}) == 5
    assert value("streams_events_processed_total", {"topic": "tx"}) == 4
    assert value("streams_events_duplicate_total", {"topic": "tx"}) == 1
    assert value("streams_fraud_decisions_total", {"decision": "review"}) == 2
    assert value("streams_fraud_holdout_total") == 1
    assert value("streams_fraud_labels_joined_total") == 3
    assert value("streams_ctr_events_counted_total", {"type": "click"}) == 2
    assert value("streams_ctr_windows_final_total", {"table": "ctr_ad_windows"}) == 7
    assert value("streams_fraud_score_count") == 2 and value("streams_fraud_score_sum") == 1.05
