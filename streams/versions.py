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
)  # fmt: skip
FRAUD_PINS = ("disable_invoice_at", "review_at", "holdout_share", "review_budget", "label_horizon_days")


def file_pin(path: Path) -> dict[str, str]:
    """A lookup file pinned by name and content: editing it in place changes the version."""
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    return {"file": path.name, "sha256": digest}


def pinned_params(settings: Settings) -> dict[str, Any]:
    """The settings a version's results depend on (operational knobs such as batch sizes, ports or
    refresh intervals are left out: they change how fast, never what)."""
    ctr, fraud, topics = settings.ctr, settings.fraud, settings.topics
    return {
        "partitions": settings.kafka.partitions,
        "sources": {
            "ad_events": topics.ad_events,
            "transactions": topics.transactions,
            "labels": topics.labels,
        },
        "ctr": {**{name: getattr(ctr, name) for name in CTR_PINS}, "prior": file_pin(ctr.prior_file)},
        "fraud": {
            **{name: getattr(fraud, name) for name in FRAUD_PINS},
            "model": file_pin(fraud.model_file),
            "ip_countries": file_pin(fraud.ip_countries_file),
        },
    }


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
    """Where a version lives in Kafka."""

    group_id: str  # Faust's app id = the consumer group of the Faust agents (smoke, fraud)
    internal_prefix: str  # Faust's internal topics (leader election, changelogs) start with it
    result_topics: tuple[str, ...]
    source_topics: tuple[str, ...]
    # The CTR job reads in bulk with a consumer of its own (see `agents/ctr.py`), in its own group.
    ctr_group_id: str = ""
    ctr_topics: tuple[str, ...] = ()

    @property
    def groups(self) -> tuple[str, ...]:
        return (self.group_id, self.ctr_group_id) if self.ctr_group_id else (self.group_id,)

    def group_of(self, topic: str) -> str:
        """The consumer group whose committed offsets say how far the version has read ``topic``."""
        return self.ctr_group_id if topic in self.ctr_topics else self.group_id


def result_topic(base: str, version: str) -> str:
    """Each version publishes to topics of its own: ``ctr-results.v2``."""
    return f"{base}.{version}"


def source_topics(settings: Settings, pipelines: tuple[str, ...]) -> tuple[str, ...]:
    t = settings.topics
    per_pipeline = {"smoke": (t.smoke,), "ctr": (t.ad_events,), "fraud": (t.transactions, t.labels)}
    return tuple(topic for p in pipelines for topic in per_pipeline.get(p, ()))


def ctr_group(app_id: str, version: str) -> str:
    return f"{app_id}-{version}-ctr"


def names_of(settings: Settings, version: str, pipelines: tuple[str, ...]) -> VersionNames:
    group = f"{settings.worker.app_id}-{version}"
    t = settings.topics
    results = (result_topic(t.ctr_results, version), result_topic(t.fraud_scores, version))
    return VersionNames(
        group,
        f"{group}-",
        results,
        source_topics(settings, pipelines),
        ctr_group(settings.worker.app_id, version),
        source_topics(settings, ("ctr",)),
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
