"""Prometheus metrics, built against an injected registry (tests pass a fresh one).

Labels are low-cardinality only: topic, reason kind, table, pipeline version; never an id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from streams import __version__

BATCH_BUCKETS = (1, 10, 50, 100, 500, 1000, 2000, 5000, 10000)
# The transient Cassandra errors the sink retries (streams.io.cassandra): their series exist from
# the start at 0, so dashboards and alerts see "no retries" rather than "no data".
SINK_RETRY_ERRORS = ("OperationTimedOut", "WriteTimeout", "Unavailable", "NoHostAvailable")
AD_EVENT_TYPES = ("impression", "click")
FRAUD_DECISIONS = ("allow", "disable_invoice", "review")


class PipelineMetrics:
    def __init__(self, registry: CollectorRegistry, pipeline_version: str) -> None:
        self.registry = registry
        self._events(registry)
        self._ctr(registry)
        self._outputs(registry)
        self._state(registry)
        self.build = Info("streams_build", "Build and pipeline version.", registry=registry)
        self.build.info({"version": __version__, "pipeline_version": pipeline_version})

    def _events(self, registry: CollectorRegistry) -> None:
        """Consumption: what came in, what was used, what was not, and where the engine is."""
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
        self.consumer_lag = Gauge(
            "streams_consumer_lag_records",
            "Records behind the head of a source partition after the last batch from it "
            "(high watermark last fetched by the consumer minus the next offset to process).",
            ["topic", "partition"],
            registry=registry,
        )
        self.watermark = Gauge(
            "streams_event_time_watermark_seconds",
            "Largest event time seen, per source partition.",
            ["topic", "partition"],
            registry=registry,
        )
        self.batch_events = Histogram(
            "streams_batch_events",
            "Events per consumed batch.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )

    def _ctr(self, registry: CollectorRegistry) -> None:
        self.windows_final = Counter(
            "streams_ctr_windows_final_total",
            "CTR windows closed past the grace period and written as final.",
            ["table"],
            registry=registry,
        )
        self.ctr_events = Counter(
            "streams_ctr_events_counted_total",
            "Ad events folded into the CTR windows (neither late nor duplicate), by type.",
            ["type"],
            registry=registry,
        )
        for event_type in AD_EVENT_TYPES:
            self.ctr_events.labels(event_type)

    def _outputs(self, registry: CollectorRegistry) -> None:
        """The checkpoint's outputs: rows, result records, dead letters that needed a fallback."""
        self.rows_written = Counter(
            "streams_sink_rows_written_total",
            "Rows upserted to the sink.",
            ["table"],
            registry=registry,
        )
        self.sink_retries = Counter(
            "streams_sink_write_retries_total",
            "Cassandra writes retried after a transient error (the batch is held meanwhile).",
            ["error"],
            registry=registry,
        )
        for error in SINK_RETRY_ERRORS:
            self.sink_retries.labels(error)
        self.sink_write_seconds = Histogram(
            "streams_sink_write_seconds",
            "Time to durably write one batch of rows.",
            ["table"],
            registry=registry,
        )
        self.records_refused = Counter(
            "streams_records_refused_total",
            "Result records Kafka refused for good (their rows are in Cassandra).",
            ["topic"],
            registry=registry,
        )
        self.dead_letter_fallbacks = Counter(
            "streams_dead_letter_fallbacks_total",
            "Dead letters the dead-letter topic refused for good, kept in the dead_letters table instead.",
            ["topic"],
            registry=registry,
        )
        self.dead_letter_failures = Counter(
            "streams_dead_letter_failures_total",
            "Dead letters neither the topic nor the table took (a letter with coordinates only was sent).",
            ["topic"],
            registry=registry,
        )

    def _state(self, registry: CollectorRegistry) -> None:
        """State snapshots and recovery (bounded restarts)."""
        self.snapshots_saved = Counter(
            "streams_snapshots_saved_total", "State snapshots saved.", ["pipeline"], registry=registry
        )
        self.snapshot_bytes = Gauge(
            "streams_snapshot_bytes", "Size of the last snapshot saved.", ["pipeline"], registry=registry
        )
        self.snapshot_seconds = Histogram(
            "streams_snapshot_write_seconds", "Time to save one snapshot.", ["pipeline"], registry=registry
        )
        self.snapshot_failures = Counter(
            "streams_snapshot_failures_total",
            "State snapshots that could not be saved (recovery then starts from an older one or the log).",
            ["pipeline"],
            registry=registry,
        )
        self.snapshots_rejected = Counter(
            "streams_snapshots_rejected_total",
            "Stored snapshots not used at recovery, by reason (missing, corrupt, format, pins, "
            "incomplete, undecodable, unreadable): the engine fell back to an older one or the log.",
            ["pipeline", "reason"],
            registry=registry,
        )
        self.recoveries = Counter(
            "streams_recoveries_total",
            "Partition states rebuilt, by source (snapshot: one and the log after it; log: the whole log).",
            ["pipeline", "source"],
            registry=registry,
        )
        self.recovery_messages = Counter(
            "streams_recovery_messages_total",
            "Messages folded again to rebuild state.",
            ["pipeline"],
            registry=registry,
        )
        self.recovery_seconds = Histogram(
            "streams_recovery_seconds",
            "Time to rebuild one partition's state.",
            ["pipeline"],
            buckets=(0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800),
            registry=registry,
        )


class FraudMetrics:
    """Fraud scoring, delayed labels, cohort quality and drift."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "streams_fraud_decisions_total",
            "Scored transactions by decision.",
            ["decision"],
            registry=registry,
        )
        for decision in FRAUD_DECISIONS:
            self.decisions.labels(decision)
        self.holdout = Counter(
            "streams_fraud_holdout_total",
            "Risky transactions allowed anyway (evaluation holdout).",
            registry=registry,
        )
        self.score = Histogram(
            "streams_fraud_score",
            "Distribution of calibrated fraud probabilities.",
            buckets=(0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.99),
            registry=registry,
        )
        self.latency = Histogram(
            "streams_fraud_score_latency_seconds",
            "From the Kafka timestamp of a transaction to its score being written and published.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.labels_joined = Counter(
            "streams_fraud_labels_joined_total", "Labels joined to their decision.", registry=registry
        )
        self.labels_orphaned = Counter(
            "streams_fraud_labels_orphaned_total",
            "Labels whose transaction never appeared before the watermark passed them.",
            registry=registry,
        )
        self.cohort = Gauge(
            "streams_fraud_cohort_metric",
            "Cohort (day of decision) quality from delayed labels: "
            "precision, recall, precision@k, recall@k, PR-AUC.",
            ["cohort", "metric"],
            registry=registry,
        )
        self.psi = Gauge(
            "streams_fraud_feature_psi",
            "Population stability index of a live feature vs the training reference (same season bucket).",
            ["feature"],
            registry=registry,
        )
        self.chain_length, self.chain_head = _chain_gauges(registry)
        self.entity_sightings = Counter(
            "streams_fraud_entity_sightings_total",
            "Sightings of entities the entity stage took in: counted, late (asked, not counted), repeat "
            "(sent again), behind (counted after the stage's watermark passed it: live and replayed "
            "features may differ).",
            ["outcome"],
            registry=registry,
        )
        self.drift = Gauge(
            "streams_fraud_drift_alert",
            "1 when any feature's PSI is above the alert threshold.",
            registry=registry,
        )


def _chain_gauges(registry: CollectorRegistry) -> tuple[Gauge, Gauge]:
    """The decision log's head per partition (`fraud.audit`)."""
    length = Gauge(
        "streams_fraud_decision_chain_length",
        "Decisions in the partition's tamper-evident decision log (its head's sequence number + 1).",
        ["partition"],
        registry=registry,
    )
    head = Gauge(
        "streams_fraud_decision_chain_head",
        "The first 48 bits of the hash of the partition's decision log head, as a number: its "
        "history shows a log rewritten later.",
        ["partition"],
        registry=registry,
    )
    return length, head
