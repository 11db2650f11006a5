"""The worker process: the composition root of the engine. Topics and tables, /metrics, then one
engine job over every pipeline of the version, hosted by faust-streaming until stopped.

Offsets are committed only at a checkpoint, after the rows are durable in Cassandra and the result
and dead-letter records acknowledged by Kafka. Re-delivery after a crash re-writes the same rows.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from streams.compose import Composition, compose
from streams.ctr.pipeline import SCHEMA_FILE as AD_SCHEMA
from streams.ctr.pipeline import CtrPipeline
from streams.ctr.processor import CtrProcessor
from streams.engine.checkpoint import Checkpoint
from streams.engine.consumer import BatchConsumer
from streams.engine.job import Job, Pacing
from streams.engine.observer import MetricsObserver
from streams.engine.pipeline import Message, Pipeline
from streams.engine.recovery import Recovery
from streams.engine.snapshots import SnapshotPolicy, Snapshots
from streams.errors import ConfigError
from streams.events import load_validator
from streams.fraud.entity_link import EntityLink
from streams.fraud.entity_pipeline import EntityPipeline
from streams.fraud.entity_stage import EntityStage
from streams.fraud.messages import label_decoder, transaction_decoder
from streams.fraud.pipeline import LABEL_SCHEMA, TRANSACTION_SCHEMA, FraudPipeline, Lookup
from streams.fraud.processor import FraudProcessor
from streams.host import Timer, run_host
from streams.io.cassandra import connect
from streams.io.cassandra_sink import CassandraSink
from streams.io.fraud_store import DecisionArchive
from streams.io.kafka import RecordOutput, check_access, is_transient, make_producer, read_partition
from streams.io.snapshot_store import CassandraSnapshotStore
from streams.lifecycle import bootstrap, ensure_registered
from streams.metrics import FraudMetrics, PipelineMetrics
from streams.monitor import FraudMonitor
from streams.settings import Settings
from streams.sink import Sink
from streams.smoke.pipeline import SmokePipeline
from streams.tables import ttl_tables
from streams.versions import group_name, params_digest, result_topic

log = logging.getLogger(__name__)
GC_THRESHOLD = 50_000  # allocations (net of frees) between two young-generation collections


def build_pipelines(composition: Composition, fraud_lookup: Lookup | None = None) -> list[Pipeline]:
    """Every pipeline this worker runs, from the checked parameters (pure: no I/O but schemas);
    ``fraud_lookup``: the archive the label join reads (without one, decisions stay in memory for
    the whole label horizon)."""
    settings, version = composition.settings, composition.version
    t, schemas = settings.topics, settings.schemas_dir
    pipelines: list[Pipeline] = []
    if "smoke" in settings.worker.pipelines:
        pipelines.append(SmokePipeline(load_validator(schemas / "smoke_event.schema.json"), t.smoke, version))
    if "ctr" in settings.worker.pipelines:
        c = composition.ctr
        processor = CtrProcessor(c.config, c.priors, version, ci_level=c.ci_level, cell_policy=c.cell_policy)
        results = result_topic(t.ctr_results, version)
        pipelines.append(CtrPipeline(processor, load_validator(schemas / AD_SCHEMA), t.ad_events, results))
    if "fraud" in settings.worker.pipelines:
        pipelines += fraud_pipelines(composition, fraud_lookup)
    return pipelines


def fraud_pipelines(composition: Composition, fraud_lookup: Lookup | None) -> list[Pipeline]:
    """The fraud pipeline, and its entity stage when the model uses entity features."""
    settings, version, f = composition.settings, composition.version, composition.fraud
    t, schemas, e = settings.topics, settings.schemas_dir, f.entities
    link = None
    if e is not None:
        link = EntityLink(settings.kafka.partitions, grace_ms=e.grace_ms, late_limit_ms=e.late_limit_ms)
    fraud = FraudProcessor(
        f.model, f.policy, f.ip_prefixes, version, label_horizon_ms=f.label_horizon_ms,
        dedupe_horizon_ms=f.dedupe_horizon_ms, history_horizon_ms=f.history_horizon_ms,
        archive=fraud_lookup is not None, drift_window_hours=f.drift_window_hours, entities=link,
    )  # fmt: skip
    decoders = (
        transaction_decoder(load_validator(schemas / TRANSACTION_SCHEMA)),
        label_decoder(load_validator(schemas / LABEL_SCHEMA)),
    )
    topics = (t.transactions, t.labels)
    scores = result_topic(t.fraud_scores, version)
    heads = result_topic(t.fraud_chain_heads, version)
    if e is None:
        return [FraudPipeline(fraud, decoders, topics, scores, fraud_lookup, heads)]
    stage = entity_topics(settings, version)
    return [
        FraudPipeline(
            fraud, decoders, topics, scores, fraud_lookup, heads, entity_topics=stage, idle_after_s=e.idle_s
        ),
        EntityPipeline(EntityStage(settings.kafka.partitions, late_limit_ms=e.late_limit_ms), *stage),
    ]


def entity_topics(settings: Settings, version: str) -> tuple[str, str]:
    """(sightings, answers): the routed topics between the fraud pipeline and its entity stage."""
    t = settings.topics
    return result_topic(t.fraud_entity_sightings, version), result_topic(t.fraud_entity_features, version)


def announce_to_prometheus(settings: Settings) -> Path | None:
    """Register this worker's /metrics with the local Prometheus (file-based discovery), if any."""
    targets = settings.runtime.home / "prometheus" / "targets"
    if not targets.is_dir():
        return None
    worker = settings.worker
    target = targets / f"worker-{worker.metrics_port}.json"
    labels = {"pipeline_version": worker.pipeline_version}
    address = f"{worker.metrics_host}:{worker.metrics_port}"
    target.write_text(json.dumps([{"targets": [address], "labels": labels}]))
    return target


def serve_metrics(settings: Settings, registry: CollectorRegistry) -> None:
    w = settings.worker
    try:
        start_http_server(w.metrics_port, w.metrics_host, registry=registry)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve /metrics on {w.metrics_host}:{w.metrics_port}: {exc.strerror} "
            "(set STREAMS_WORKER__METRICS_PORT)"
        ) from exc


def build_job(
    composition: Composition,
    sink: Sink,
    metrics: PipelineMetrics,
    fraud_metrics: FraudMetrics,
    session: Any = None,
) -> tuple[Job, list[Pipeline]]:
    """The engine's job; with a Cassandra ``session``, state snapshots are kept in it."""
    settings = composition.settings
    w, t = settings.worker, settings.topics
    lookup = None if session is None else DecisionArchive(session, settings.cassandra.keyspace).find
    pipelines = build_pipelines(composition, lookup)
    timed = (t.transactions,) if any(p.name == "fraud" for p in pipelines) else ()
    sources = [topic for p in pipelines for topic in p.topics]
    observer = MetricsObserver(metrics, fraud_metrics, latency_topics=timed, source_topics=sources)
    producer = make_producer(settings.kafka, **{"message.max.bytes": w.dead_letter_max_bytes + 65_536})
    outputs: dict[str, RecordOutput] = {}

    routed = set(entity_topics(settings, composition.version))

    def output(topic: str) -> RecordOutput:
        return outputs.setdefault(topic, RecordOutput(producer, topic, routed=topic in routed))

    checkpoint = Checkpoint(
        sink, output, t.dead_letters, composition.version, observer,
        dead_letter_max_bytes=w.dead_letter_max_bytes, is_transient=is_transient, required=routed,
    )  # fmt: skip

    async def read(topic: str, partition: int, start: int | None, end: int) -> list[Message]:
        return await asyncio.to_thread(read_partition, settings.kafka, topic, partition, start, end)

    pacing = Pacing(w.batch_size, w.flush_interval_s, w.catchup_flush_interval_s)
    # Scores are awaited by a checkout: fraud is checkpointed within milliseconds while caught up.
    f = composition.fraud
    fraud = Pacing(w.batch_size, f.batch_timeout_s, f.catchup_flush_interval_s)
    snapshots = None
    if w.snapshots and session is not None:
        store = CassandraSnapshotStore(session, settings.cassandra.keyspace, composition.version)
        policy = SnapshotPolicy(w.snapshot_interval_s, w.snapshot_every_messages, w.snapshots_kept)
        snapshots = Snapshots(store, params_digest(composition.pins), observer, policy)
    recovery = Recovery(read, snapshots, observer)
    paced = {"fraud": fraud, "entities": fraud}
    job = Job(pipelines, checkpoint, recovery, observer, pacing, timed, paced=paced, snapshots=snapshots)
    return job, pipelines


def run_worker(settings: Settings, composition: Composition | None = None) -> None:
    """Prepare topics and tables, serve /metrics, then run the engine until stopped."""
    composition = composition or compose(settings)
    check_access(settings.kafka)
    cluster, session = connect(settings.cassandra)
    logging.getLogger("cassandra").setLevel(logging.NOTSET)  # connected: the log shows the driver's retries
    c, w = settings.cassandra, settings.worker
    target = None
    try:
        bootstrap(session=session, settings=settings)
        ensure_registered(session, settings, composition=composition)
        registry = CollectorRegistry()
        metrics, fraud_metrics = PipelineMetrics(registry, w.pipeline_version), FraudMetrics(registry)
        serve_metrics(settings, registry)
        target = announce_to_prometheus(settings)
        ttl = dict.fromkeys(ttl_tables(), composition.ctr.ttl_s)
        sink = CassandraSink(
            session, c.keyspace, concurrency=c.write_concurrency, ttl_s=ttl,
            on_retry=lambda exc: metrics.sink_retries.labels(type(exc).__name__).inc(),
        )  # fmt: skip
        job, pipelines = build_job(composition, sink, metrics, fraud_metrics, session)
        group = group_name(w.app_id, w.pipeline_version)
        consumer = BatchConsumer(
            settings.kafka, group, job.topics,
            on_assign=job.on_assign, on_revoke=job.on_revoke, on_lost=job.on_lost,
            instance_id=w.instance_id, prefetch_kbytes=w.prefetch_kbytes,
        )  # fmt: skip
        timers: list[Timer] = []
        for pipeline in pipelines:
            if isinstance(pipeline, FraudPipeline):
                monitor = FraudMonitor(
                    pipeline, composition.fraud, session, c.keyspace,
                    w.pipeline_version, settings.kafka.partitions, sink, fraud_metrics,
                )  # fmt: skip
                timers.append((composition.fraud.metrics_interval_s, monitor.refresh))
        log.info("worker %s: metrics at http://%s:%d/metrics", group, w.metrics_host, w.metrics_port)
        datadir = settings.runtime.home / "faust" / group
        # What start-up allocated lives as long as the process: out of the collector's full passes.
        gc.freeze()
        # A batch allocates and frees hundreds of thousands of objects, few of them in cycles: at the
        # default threshold (700) the collector ran every few transactions and took ~15 % of the
        # fraud worker's CPU; at 50,000 its work is negligible and the garbage of a cycle waits a
        # little longer.
        gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
        run_host(group, datadir, job, consumer, timers)
    finally:
        if target is not None:
            target.unlink(missing_ok=True)
        cluster.shutdown()
