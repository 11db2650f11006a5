"""Prometheus metrics, built against an injected registry (tests pass a fresh one).

Labels are low-cardinality only: topic, reason kind, table, pipeline version; never an id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from streams import __version__

BATCH_BUCKETS = (1, 10, 50, 100, 500, 1000, 2000, 5000, 10000)


class PipelineMetrics:
    def __init__(self, registry: CollectorRegistry, pipeline_version: str) -> None:
        self.registry = registry
        self.consumed = Counter(
            "streams_events_consumed_total", "Raw messages consumed.", ["topic"], registry=registry
        )
        self.processed = Counter(
            "streams_events_processed_total",
            "Events decoded, validated and handed to the pipeline logic.",
            ["topic"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            "streams_events_dead_lettered_total",
            "Events sent to the dead-letter topic, by reason kind.",
            ["topic", "reason"],
            registry=registry,
        )
        self.duplicates = Counter(
            "streams_events_duplicate_total",
            "Events ignored because their id was already seen within the dedupe horizon.",
            ["topic"],
            registry=registry,
        )
        self.late = Counter(
            "streams_events_late_total",
            "Events older than the watermark minus the grace period (dead-lettered, not counted).",
            ["topic"],
            registry=registry,
        )
        self.watermark = Gauge(
            "streams_event_time_watermark_seconds",
            "Largest event time seen, per source partition.",
            ["topic", "partition"],
            registry=registry,
        )
        self.windows_final = Counter(
            "streams_ctr_windows_final_total",
            "CTR windows closed past the grace period and written as final.",
            ["table"],
            registry=registry,
        )
        self.rows_written = Counter(
            "streams_sink_rows_written_total",
            "Rows upserted to the sink.",
            ["table"],
            registry=registry,
        )
        self.sink_write_seconds = Histogram(
            "streams_sink_write_seconds",
            "Time to durably write one batch of rows.",
            ["table"],
            registry=registry,
        )
        self.batch_events = Histogram(
            "streams_batch_events",
            "Events per consumed batch.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.build = Info("streams_build", "Build and pipeline version.", registry=registry)
        self.build.info({"version": __version__, "pipeline_version": pipeline_version})
