"""The Faust worker: thin agents that decode a batch, call the pipeline logic and write to the sink.

Offsets: ``take_events`` acks a batch only after the agent body has finished with it, i.e. after
the sink has durably written its rows and the dead letters are acknowledged by Kafka.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faust
import orjson
from prometheus_client import CollectorRegistry, start_http_server

from streams.errors import ConfigError
from streams.events import Coordinates, DeadLetter, load_validator
from streams.io.cassandra import CassandraSink, apply_schema, connect
from streams.io.kafka import ensure_topics
from streams.metrics import PipelineMetrics
from streams.pipelines import smoke
from streams.pipelines.batch import decode_batch
from streams.settings import Settings
from streams.sink import Sink
from streams.topics import project_topics

log = logging.getLogger(__name__)


def faust_broker(bootstrap: str) -> str:
    return ";".join(f"kafka://{address.strip()}" for address in bootstrap.split(","))


def coordinates(message: Any) -> Coordinates:
    timestamp = message.timestamp
    return Coordinates(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=int(timestamp * 1000) if timestamp else None,
        key=message.key,
    )


class DeadLetterOutput:
    """Sends dead letters to their topic and waits until Kafka has acknowledged them."""

    def __init__(self, topic: faust.TopicT, pipeline_version: str, metrics: PipelineMetrics) -> None:
        self._topic = topic
        self._version = pipeline_version
        self._metrics = metrics

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        pending = []
        for letter in letters:
            log.warning("dead letter %s: %s", letter.coordinates, letter.rejection.reason)
            record = orjson.dumps(letter.to_record(self._version))
            pending.append(await self._topic.send(key=str(letter.coordinates).encode(), value=record))
            self._metrics.dead_lettered.labels(letter.coordinates.topic, letter.rejection.kind).inc()
        await asyncio.gather(*pending)


def create_app(settings: Settings, *, sink: Sink, metrics: PipelineMetrics) -> faust.App:
    worker = settings.worker
    app = faust.App(
        f"{worker.app_id}-smoke-{worker.pipeline_version}",
        broker=faust_broker(settings.kafka.bootstrap),
        store="memory://",
        web_enabled=False,
        datadir=str(settings.runtime.home / "faust"),
        topic_partitions=settings.kafka.partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
    )
    source = app.topic(settings.topics.smoke, key_serializer="raw", value_serializer="raw")
    dead_letters = DeadLetterOutput(
        app.topic(settings.topics.dead_letters, key_serializer="raw", value_serializer="raw"),
        worker.pipeline_version,
        metrics,
    )
    validator = load_validator(settings.schemas_dir / smoke.SCHEMA_FILE)

    @app.agent(source, name="smoke")
    async def smoke_agent(stream: Any) -> None:  # a faust.Stream; StreamT lacks take_events
        async for events in stream.take_events(worker.batch_size, within=worker.batch_timeout_s):
            batch = decode_batch(((e.message.value, coordinates(e.message)) for e in events), validator)
            rows = [smoke.smoke_row(ev, at, worker.pipeline_version) for ev, at in batch.events]
            started = time.perf_counter()
            await sink.write(smoke.TABLE, rows)
            metrics.sink_write_seconds.labels(smoke.TABLE).observe(time.perf_counter() - started)
            await dead_letters.send(batch.dead_letters)
            metrics.batch_events.observe(len(events))
            metrics.consumed.labels(source.get_topic_name()).inc(len(events))
            metrics.processed.labels(source.get_topic_name()).inc(len(batch.events))
            metrics.rows_written.labels(smoke.TABLE).inc(len(rows))

    return app


def announce_to_prometheus(settings: Settings) -> Path | None:
    """Register this worker's /metrics with the local Prometheus (file-based discovery), if any."""
    targets = settings.runtime.home / "prometheus" / "targets"
    if not targets.is_dir():
        return None
    worker = settings.worker
    target = targets / f"worker-{worker.metrics_port}.json"
    labels = {"pipeline_version": worker.pipeline_version}
    target.write_text(
        json.dumps([{"targets": [f"{worker.metrics_host}:{worker.metrics_port}"], "labels": labels}])
    )
    return target


def run_worker(settings: Settings) -> None:
    """Prepare topics and tables, serve /metrics, then run the Faust worker until stopped."""
    ensure_topics(settings.kafka, project_topics(settings))
    cluster, session = connect(settings.cassandra)
    keyspace = settings.cassandra.keyspace
    apply_schema(
        session,
        settings.deploy_dir / "cassandra" / "schema",
        keyspace,
        settings.cassandra.replication_factor,
    )
    registry = CollectorRegistry()
    metrics = PipelineMetrics(registry, settings.worker.pipeline_version)
    try:
        start_http_server(settings.worker.metrics_port, settings.worker.metrics_host, registry=registry)
    except OSError as exc:
        cluster.shutdown()
        raise ConfigError(
            f"cannot serve /metrics on {settings.worker.metrics_host}:{settings.worker.metrics_port}: "
            f"{exc.strerror} (set STREAMS_WORKER__METRICS_PORT)"
        ) from exc
    target = announce_to_prometheus(settings)
    sink = CassandraSink(session, keyspace, concurrency=settings.cassandra.write_concurrency)
    app = create_app(settings, sink=sink, metrics=metrics)
    log.info(
        "worker %s: metrics at http://%s:%d/metrics",
        app.conf.id,
        settings.worker.metrics_host,
        settings.worker.metrics_port,
    )
    try:
        faust.Worker(app, loglevel="info").execute_from_commandline()
    finally:
        if target is not None:
            target.unlink(missing_ok=True)
        cluster.shutdown()
