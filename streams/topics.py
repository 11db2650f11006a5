"""The topics this project owns, with their retention."""

from __future__ import annotations

from streams.io.kafka import TopicSpec
from streams.settings import Settings


def raw_topic(name: str, settings: Settings) -> TopicSpec:
    """A raw (source-of-truth) topic: kept as long as configured, -1 = forever, for replay."""
    return TopicSpec(name, settings.kafka.partitions, {"retention.ms": str(settings.kafka.raw_retention_ms)})


def project_topics(settings: Settings) -> list[TopicSpec]:
    return [
        raw_topic(settings.topics.smoke, settings),
        raw_topic(settings.topics.dead_letters, settings),
    ]
