"""The one observer of the engine's events that turns them into Prometheus metrics.

Pipelines stay free of metric calls: they return tallies (``"duplicate:ad-events"``) and
observations (``"fraud_score"``), and this module knows what each name means.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence

from streams.engine.checkpoint import Pending, TopicPartition
from streams.events import DeadLetter
from streams.metrics import FraudMetrics, PipelineMetrics


class MetricsObserver:
    def __init__(
        self,
        metrics: PipelineMetrics,
        fraud: FraudMetrics | None = None,
        latency_topics: Sequence[str] = (),
        source_topics: Sequence[str] = (),
    ) -> None:
        self.m, self.fraud = metrics, fraud
        self.latency_topics = tuple(latency_topics)  # their Kafka time to durable: fraud latency
        for topic in source_topics:  # dashboards, alerts and rate() see 0, not "no data"
            for counter in (metrics.consumed, metrics.processed, metrics.dead_letter_fallbacks,
                            metrics.dead_letter_failures):  # fmt: skip
                counter.labels(topic)
        self._reported: set[TopicPartition] = set()

    # The job

    def batch_consumed(self, count: int) -> None:
        self.m.batch_events.observe(count)

    def positions(self, lag: Mapping[TopicPartition, int], watermarks: Mapping[TopicPartition, int]) -> None:
        for (topic, partition), behind in lag.items():
            self.m.consumer_lag.labels(topic, str(partition)).set(behind)
            self._reported.add((topic, partition))
        for (topic, partition), mark in watermarks.items():
            self.m.watermark.labels(topic, str(partition)).set(mark / 1000)

    def partitions_gone(self, tps: Sequence[TopicPartition]) -> None:
        for topic, partition in tps:
            for gauge in (self.m.consumer_lag, self.m.watermark):
                with contextlib.suppress(KeyError):  # never reported
                    gauge.remove(topic, str(partition))
            self._reported.discard((topic, partition))

    # The checkpoint

    def rows_written(self, table: str, count: int, seconds: float) -> None:
        self.m.sink_write_seconds.labels(table).observe(seconds)
        self.m.rows_written.labels(table).inc(count)

    def record_refused(self, topic: str, reason: str) -> None:
        self.m.records_refused.labels(topic).inc()

    def letter_fallback(self, letter: DeadLetter, reason: str) -> None:
        self.m.dead_letter_fallbacks.labels(letter.coordinates.topic).inc()

    def letter_failure(self, letter: DeadLetter, reason: str) -> None:
        self.m.dead_letter_failures.labels(letter.coordinates.topic).inc()

    def checkpointed(self, pending: Pending) -> None:
        """Counters count what is durable: they move only once a checkpoint is done."""
        m = self.m
        for topic, count in pending.consumed.items():
            m.consumed.labels(topic).inc(count)
        for letter in pending.folded.letters:
            m.dead_lettered.labels(letter.coordinates.topic, letter.rejection.kind).inc()
        for tallies in (pending.folded.tallies, pending.drained.tallies):
            for name, count in tallies.items():  # a zero too: the series exists from the start
                self._tally(name, count)
        if self.fraud is not None:
            for score in pending.folded.observations.get("fraud_score", ()):
                self.fraud.score.observe(score)
            now_ms = time.time() * 1000
            for topic in self.latency_topics:
                for ms in pending.timestamps.get(topic, ()):
                    self.fraud.latency.observe(max(now_ms - ms, 0.0) / 1000)

    # Snapshots and recovery

    def snapshot_saved(self, pipeline: str, size: int, seconds: float) -> None:
        self.m.snapshots_saved.labels(pipeline).inc()
        self.m.snapshot_bytes.labels(pipeline).set(size)
        self.m.snapshot_seconds.labels(pipeline).observe(seconds)

    def snapshot_failed(self, pipeline: str) -> None:
        self.m.snapshot_failures.labels(pipeline).inc()

    def snapshot_rejected(self, pipeline: str, reason: str) -> None:
        self.m.snapshots_rejected.labels(pipeline, reason).inc()

    def recovered(self, pipeline: str, source: str, messages: int, seconds: float) -> None:
        self.m.recoveries.labels(pipeline, source).inc()
        self.m.recovery_messages.labels(pipeline).inc(messages)
        self.m.recovery_seconds.labels(pipeline).observe(seconds)

    def _tally(self, name: str, count: int) -> None:
        kind, _, label = name.partition(":")
        m, fraud = self.m, self.fraud
        simple = {"processed": m.processed, "duplicate": m.duplicates, "late": m.late,
                  "ctr_event": m.ctr_events, "windows_final": m.windows_final}  # fmt: skip
        if kind in simple:
            simple[kind].labels(label).inc(count)
        elif fraud is not None:
            if kind == "fraud_decision":
                fraud.decisions.labels(label).inc(count)
            elif kind == "fraud_holdout":
                fraud.holdout.inc(count)
            elif kind == "labels_joined":
                fraud.labels_joined.inc(count)
            elif kind == "labels_orphaned":
                fraud.labels_orphaned.inc(count)
            elif kind == "entity_sighting":
                fraud.entity_sightings.labels(label).inc(count)
