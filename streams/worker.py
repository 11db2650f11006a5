"""The Faust worker process: topics, tables, /metrics, then the agents until stopped.

Offsets: ``take_events`` acks a batch only after the agent body has finished with it, i.e. after
the sink has durably written its rows and Kafka has acknowledged the result and dead-letter
records. Re-delivery after a crash re-writes the same rows under the same keys.
"""

from __future__ import annotations

import json
import logging
import ssl
from pathlib import Path
from typing import Any

import faust
from prometheus_client import CollectorRegistry, start_http_server

from streams.agents.common import AgentContext, DeadLetterOutput
from streams.agents.ctr import register_ctr
from streams.agents.fraud import register_fraud
from streams.agents.smoke import register_smoke
from streams.ctr.processor import AD_TABLE, CAMPAIGN_TABLE, CELL_TABLE
from streams.errors import ConfigError
from streams.io.cassandra import CassandraSink, apply_schema, connect
from streams.io.kafka import RecordOutput, check_access, ensure_topics, make_producer
from streams.lifecycle import ensure_registered
from streams.metrics import FraudMetrics, PipelineMetrics
from streams.settings import KafkaSettings, Settings
from streams.sink import Sink
from streams.topics import project_topics

log = logging.getLogger(__name__)


def faust_broker(bootstrap: str) -> str:
    return ";".join(f"kafka://{address.strip()}" for address in bootstrap.split(","))


def faust_credentials(kafka: KafkaSettings) -> faust.types.auth.CredentialsT | None:
    """The same security for Faust's aiokafka clients as for our confluent-kafka ones."""
    context = ssl.create_default_context(cafile=kafka.ssl_ca_file) if kafka.ssl_ca_file else None
    if kafka.security_protocol.startswith("SASL"):
        assert kafka.sasl_password is not None  # checked by the settings
        if kafka.security_protocol == "SASL_SSL" and context is None:
            context = ssl.create_default_context()
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value(),
            mechanism=kafka.sasl_mechanism,
            ssl_context=context,
        )
    if kafka.security_protocol == "SSL":
        return faust.SSLCredentials(context or ssl.create_default_context())
    return None


def create_app(
    settings: Settings,
    *,
    sink: Sink,
    metrics: PipelineMetrics,
    fraud_metrics: FraudMetrics,
    session: Any = None,
) -> faust.App:
    worker = settings.worker
    datadir = settings.runtime.home / "faust" / f"{worker.app_id}-{worker.pipeline_version}"
    datadir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    app = faust.App(
        f"{worker.app_id}-{worker.pipeline_version}",
        broker=faust_broker(settings.kafka.bootstrap),
        store="memory://",
        web_enabled=False,
        datadir=str(datadir),
        topic_partitions=settings.kafka.partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_credentials=faust_credentials(settings.kafka),
    )
    producer = make_producer(settings.kafka)
    outputs: dict[str, RecordOutput] = {}

    def output(topic: str) -> RecordOutput:
        return outputs.setdefault(topic, RecordOutput(producer, topic))

    dead_letters = DeadLetterOutput(output(settings.topics.dead_letters), worker.pipeline_version, metrics)
    ctx = AgentContext(settings, sink, metrics, dead_letters, output, session)
    if "smoke" in worker.pipelines:
        register_smoke(app, ctx)
    if "ctr" in worker.pipelines:
        register_ctr(app, ctx)
    if "fraud" in worker.pipelines:
        register_fraud(app, ctx, fraud_metrics)
    return app


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


def run_worker(settings: Settings) -> None:
    """Prepare topics and tables, serve /metrics, then run the Faust worker until stopped."""
    check_access(settings.kafka)
    ensure_topics(settings.kafka, project_topics(settings))
    cluster, session = connect(settings.cassandra)
    logging.getLogger("cassandra").setLevel(logging.NOTSET)  # connected: the log shows the driver's retries
    c = settings.cassandra
    apply_schema(session, settings.deploy_dir / "cassandra" / "schema", c.keyspace, c.replication_factor)
    try:
        ensure_registered(session, settings)
    except Exception:
        cluster.shutdown()
        raise
    registry = CollectorRegistry()
    metrics = PipelineMetrics(registry, settings.worker.pipeline_version)
    fraud_metrics = FraudMetrics(registry)
    w = settings.worker
    try:
        start_http_server(w.metrics_port, w.metrics_host, registry=registry)
    except OSError as exc:
        cluster.shutdown()
        raise ConfigError(
            f"cannot serve /metrics on {w.metrics_host}:{w.metrics_port}: {exc.strerror} "
            "(set STREAMS_WORKER__METRICS_PORT)"
        ) from exc
    target = announce_to_prometheus(settings)
    ttl = {table: settings.ctr.ttl_s for table in (AD_TABLE, CAMPAIGN_TABLE, CELL_TABLE)}
    sink = CassandraSink(
        session,
        c.keyspace,
        concurrency=c.write_concurrency,
        ttl_s=ttl,
        on_retry=lambda exc: metrics.sink_retries.labels(type(exc).__name__).inc(),
    )
    app = create_app(settings, sink=sink, metrics=metrics, fraud_metrics=fraud_metrics, session=session)
    log.info("worker %s: metrics at http://%s:%d/metrics", app.conf.id, w.metrics_host, w.metrics_port)
    try:
        faust.Worker(app, loglevel="info").execute_from_commandline()
    finally:
        if target is not None:
            target.unlink(missing_ok=True)
        cluster.shutdown()
