"""The topics this project owns, with their retention."""

from __future__ import annotations

import json

from streams.fraud.entities import ENTITY_FEATURES
from streams.io.kafka import TopicSpec
from streams.settings import Settings
from streams.versions import result_topic


def raw_topic(name: str, settings: Settings) -> TopicSpec:
    """A raw (source-of-truth) topic: kept as long as configured, -1 = forever, for replay."""
    return TopicSpec(name, settings.kafka.partitions, {"retention.ms": str(settings.kafka.raw_retention_ms)})


def uses_entities(settings: Settings) -> bool:
    """Whether the configured fraud model reads entity features (an unreadable file: no; the
    composition root says what is wrong with it)."""
    try:
        features = json.loads(settings.fraud.model_file.read_bytes()).get("features", [])
    except (OSError, ValueError, AttributeError):
        return False
    return bool(set(features) & set(ENTITY_FEATURES))


def project_topics(settings: Settings) -> list[TopicSpec]:
    t = settings.topics
    # Results are upserts under their natural key: compaction keeps the latest record per key.
    version = settings.worker.pipeline_version
    results = TopicSpec(
        result_topic(t.ctr_results, version), settings.kafka.partitions, {"cleanup.policy": "compact"}
    )
    # Scores are what a checkout service consumes: a stream, kept a week.
    scores = TopicSpec(
        result_topic(t.fraud_scores, version),
        settings.kafka.partitions,
        {"retention.ms": str(7 * 86_400_000)},
    )
    # The decision log's head per partition (`fraud.audit`): the latest per partition is kept.
    heads = TopicSpec(
        result_topic(t.fraud_chain_heads, version), settings.kafka.partitions, {"cleanup.policy": "compact"}
    )
    # Between the fraud pipeline and its entity stage (a model with entity features): state the
    # version rebuilds from, kept as long as the raw topics (a stage without a snapshot re-reads
    # them from the start).
    entity_names = (t.fraud_entity_sightings, t.fraud_entity_features) if uses_entities(settings) else ()
    entity = [raw_topic(result_topic(name, version), settings) for name in entity_names]
    return [
        raw_topic(t.smoke, settings),
        raw_topic(t.ad_events, settings),
        results,
        # Transactions and labels are co-partitioned: same key (customer_id), same partition count.
        raw_topic(t.transactions, settings),
        raw_topic(t.labels, settings),
        scores,
        heads,
        *entity,
        raw_topic(t.dead_letters, settings),
    ]
