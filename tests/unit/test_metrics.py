from __future__ import annotations

import shutil
import subprocess

from prometheus_client import CollectorRegistry, generate_latest

from streams.metrics import PipelineMetrics


def test_metrics_use_an_injected_registry_and_pass_promtool() -> None:
    registry = CollectorRegistry()
    metrics = PipelineMetrics(registry, "v1")
    metrics.consumed.labels("raw").inc(3)
    metrics.dead_lettered.labels("raw", "malformed_json").inc()
    metrics.sink_write_seconds.labels("t").observe(0.01)
    assert registry.get_sample_value("streams_events_consumed_total", {"topic": "raw"}) == 3
    assert PipelineMetrics(CollectorRegistry(), "v1")  # a second registry does not clash

    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by `make deps` (Debian's prometheus package)"
    result = subprocess.run(
        [promtool, "check", "metrics"], input=generate_latest(registry), capture_output=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == b"", result.stdout
