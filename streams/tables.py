"""The catalogue of result tables (`deploy/cassandra/schema/*.cql`): one place that the pipelines,
the sink (TTL), the in-memory sink (keys), `verify` and the queries read.

Every result key starts with ``pipeline_version``; ``bucket`` (where a table has one) is derived
from ``window_start`` (UTC day or hour) to bound partition sizes, so it is not part of a row's
natural key.
"""

from __future__ import annotations

from dataclasses import dataclass

DAY_MS = 86_400_000
HOUR_MS = 3_600_000

# Write timestamps (fencing). A pipeline's rows are written `USING TIMESTAMP FENCE_BASE + position`,
# the position being the sum of the source partition's next offsets (over the pipeline's topics)
# when the row was drained: a row's content is a function of that prefix of the log, so a later
# position always holds a newer state, and a revoked worker's late ("zombie") write of an older
# state loses to the new owner's write in Cassandra's last-write-wins, whatever order they land
# in. The base lies above any wall-clock timestamp in microseconds (until the year 2255), so rows
# written before fencing are overwritten; `retire` deletes at RETIRE_TIMESTAMP, above every fence.
FENCE_BASE = 2**53
RETIRE_TIMESTAMP = 2**62


def fence(position: int) -> int:
    return FENCE_BASE + position


@dataclass(frozen=True)
class Table:
    name: str
    pipeline: str
    partition_key: tuple[str, ...]
    clustering: tuple[str, ...]
    values: tuple[str, ...] = ()  # what two versions' rows must agree on (`streams verify`)
    time_column: str | None = None  # what `verify --from/--to` filters on
    bucket_ms: int | None = None  # the bucket column's width, if any
    ttl: bool = False  # rows carry STREAMS_CTR__TTL_S

    @property
    def primary_key(self) -> tuple[str, ...]:
        return self.partition_key + self.clustering

    @property
    def key(self) -> tuple[str, ...]:
        """The natural key within a version: the primary key without the version and the bucket."""
        return tuple(c for c in self.primary_key if c not in ("pipeline_version", "bucket"))

    @property
    def verified(self) -> bool:
        return bool(self.values) and self.time_column is not None


CTR_AD = Table(
    "ctr_ad_windows", "ctr", ("pipeline_version", "ad_id", "window", "bucket"), ("window_start",),
    ("campaign_id", "window_end", "impressions", "clicks", "smoothed_ctr", "ci_low", "ci_high",
     "prior_level", "final"),
    "window_start", DAY_MS, ttl=True,
)  # fmt: skip
CTR_CAMPAIGN = Table(
    "ctr_campaign_windows", "ctr", ("pipeline_version", "campaign_id", "window", "bucket"),
    ("window_start", "source_partition"), ("window_end", "impressions", "clicks", "final"),
    "window_start", DAY_MS, ttl=True,
)  # fmt: skip
CTR_CELL = Table(
    "ctr_segment_cells", "ctr", ("pipeline_version", "segment", "window", "bucket"),
    ("window_start", "ad_id"),
    ("campaign_id", "impressions", "clicks", "smoothed_ctr", "ci_low", "ci_high", "prior_level", "final"),
    "window_start", HOUR_MS, ttl=True,
)  # fmt: skip
FRAUD_SCORES = Table(
    "fraud_scores", "fraud", ("pipeline_version", "customer_id"), ("ts", "transaction_id"),
    ("amount", "score", "decision", "holdout", "reasons", "model_version"), "ts",
)  # fmt: skip
FRAUD_TRANSACTIONS = Table(
    "fraud_transactions", "fraud", ("pipeline_version", "transaction_id"), (),
    ("customer_id", "score", "decision", "features", "is_fraud", "label_source", "label_ts"), "ts",
)  # fmt: skip
FRAUD_COHORT = Table(
    "fraud_cohort", "fraud", ("pipeline_version", "cohort_day", "source_partition"), ("transaction_id",)
)
FRAUD_DECISION_LOG = Table(
    "fraud_decision_log", "fraud", ("pipeline_version", "source_partition", "bucket"), ("seq",),
    ("transaction_id", "ts", "score", "decision", "holdout", "reasons", "model_version", "features_digest",
     "source_offset", "prev_hash", "hash"),
    "ts",
)  # fmt: skip
FRAUD_COHORT_METRICS = Table("fraud_cohort_metrics", "fraud", ("pipeline_version",), ("cohort_day",))
SMOKE = Table(
    "smoke_events", "smoke", ("pipeline_version", "run_id"), ("event_id",),
    ("ts", "payload", "source_offset"), "ts",
)  # fmt: skip
DEAD_LETTERS = Table("dead_letters", "engine", ("pipeline_version", "topic", "partition"), ("offset",))
STATE_SNAPSHOTS = Table(
    "state_snapshots", "engine", ("pipeline_version", "pipeline", "source_partition"),
    ("snapshot_id", "chunk"),
)  # fmt: skip
CATALOGUE = (
    CTR_AD, CTR_CAMPAIGN, CTR_CELL, FRAUD_SCORES, FRAUD_TRANSACTIONS, FRAUD_COHORT, FRAUD_DECISION_LOG,
    FRAUD_COHORT_METRICS, SMOKE, DEAD_LETTERS, STATE_SNAPSHOTS,
)  # fmt: skip


def of_pipeline(pipeline: str) -> dict[str, tuple[str, ...]]:
    """A pipeline's tables and their primary keys."""
    return {t.name: t.primary_key for t in CATALOGUE if t.pipeline == pipeline}


def ttl_tables() -> tuple[str, ...]:
    return tuple(t.name for t in CATALOGUE if t.ttl)
