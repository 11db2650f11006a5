"""Pipeline versions: what a version pins, its names in Kafka, and how far behind the log it is.

A version is a name plus the result-affecting settings (windows, priors, model, thresholds...)
pinned when it is created. Its consumer group, internal topics, result topics and Cassandra rows
all carry the name, so versions never share state and a version can be retired without a trace.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.errors import ConfigError
from streams.settings import Settings

CTR_PINS = (
    "tumbling", "hopping", "hop_every", "grace", "dedupe_horizon", "ci_level",
    "min_cell_impressions", "min_ad_impressions", "backoff_strength", "ttl_s",
    "click_attribution", "prior_learning", "prior_refit_every", "prior_history",
    "prior_min_impressions", "prior_min_ads",
)  # fmt: skip
FRAUD_PINS = (
    "disable_invoice_at", "review_at", "holdout_share", "review_budget", "label_horizon_days",
    "dedupe_horizon_hours", "history_horizon_days",
)  # fmt: skip


def content_pin(path: Path, data: bytes) -> dict[str, str]:
    """A lookup file pinned by name and content: editing it in place changes the version."""
    return {"file": path.name, "sha256": hashlib.sha256(data).hexdigest()}


def file_pin(path: Path) -> dict[str, str]:
    """`content_pin` of the file as it is on disk now."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    return content_pin(path, data)


def params_of(
    settings: Settings, *, prior: dict[str, str], model: dict[str, str], ip_countries: dict[str, str]
) -> dict[str, Any]:
    """The settings a version's results depend on, with its files' pins (operational knobs such as
    batch sizes, ports or refresh intervals are left out: they change how fast, never what)."""
    ctr, fraud, topics = settings.ctr, settings.fraud, settings.topics
    return {
        "partitions": settings.kafka.partitions,
        "sources": {
            "ad_events": topics.ad_events,
            "transactions": topics.transactions,
            "labels": topics.labels,
        },
        "ctr": {**{name: getattr(ctr, name) for name in CTR_PINS}, "prior": prior},
        "fraud": {
            **{name: getattr(fraud, name) for name in FRAUD_PINS},
            "model": model,
            "ip_countries": ip_countries,
        },
    }


def pinned_params(settings: Settings) -> dict[str, Any]:
    """The pins of the configured version (`params_of`), from the composition root: the settings
    are checked and the pinned files read once, so what is hashed is what the pipelines parse."""
    from streams.compose import compose  # compose builds on this module

    return compose(settings).pins


def params_digest(params: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def first_difference(pinned: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "") -> str | None:
    """The first setting (dotted path) whose value differs, with both values, or None."""
    for key in sorted(set(pinned) | set(current)):
        a, b = pinned.get(key), current.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            found = first_difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key}: pinned {a!r}, configured {b!r}"
    return None


@dataclass(frozen=True)
class VersionNames:
    """Where a version lives in Kafka: one consumer group (the engine's, every pipeline of the
    version), its result topics and the raw topics it reads."""

    group_id: str
    result_topics: tuple[str, ...]
    source_topics: tuple[str, ...]

    @property
    def groups(self) -> tuple[str, ...]:
        return (self.group_id,)

    def group_of(self, topic: str) -> str:
        """The consumer group whose committed offsets say how far the version has read ``topic``."""
        return self.group_id


def result_topic(base: str, version: str) -> str:
    """Each version publishes to topics of its own: ``ctr-results.v2``."""
    return f"{base}.{version}"


def source_topics(settings: Settings, pipelines: tuple[str, ...]) -> tuple[str, ...]:
    t = settings.topics
    per_pipeline = {"smoke": (t.smoke,), "ctr": (t.ad_events,), "fraud": (t.transactions, t.labels)}
    return tuple(topic for p in pipelines for topic in per_pipeline.get(p, ()))


def group_name(app_id: str, version: str) -> str:
    return f"{app_id}-{version}"


def names_of(settings: Settings, version: str, pipelines: tuple[str, ...]) -> VersionNames:
    t = settings.topics
    results = tuple(
        result_topic(base, version)
        for base in (t.ctr_results, t.fraud_scores, t.fraud_chain_heads, t.fraud_entity_sightings,
                     t.fraud_entity_features)
    )  # fmt: skip
    return VersionNames(
        group_name(settings.worker.app_id, version), results, source_topics(settings, pipelines)
    )


@dataclass(frozen=True)
class Lag:
    """How far a version's consumer group is behind the head of its source topics."""

    behind: dict[str, int]  # topic -> records not yet committed
    committed: dict[str, int]  # topic -> records committed so far (from the log start)

    @property
    def total(self) -> int:
        return sum(self.behind.values())


def measure_lag(settings: Settings, names: VersionNames) -> Lag:
    from streams.io.kafka import committed_offsets, watermarks

    behind: dict[str, int] = {}
    done: dict[str, int] = {}
    for topic in names.source_topics:
        marks = watermarks(settings.kafka, topic)
        committed = committed_offsets(settings.kafka, names.group_of(topic), topic, marks)
        # A partition without a committed offset starts at the beginning of what the log keeps.
        position = {p: committed.get(p, low) for p, (low, _) in marks.items()}
        behind[topic] = sum(high - position[p] for p, (_, high) in marks.items())
        done[topic] = sum(position[p] - low for p, (low, _) in marks.items())
    return Lag(behind, done)
