"""One typed, frozen settings object, read from the environment (prefix ``STREAMS_``).

Nested groups use ``__``: ``STREAMS_KAFKA__BOOTSTRAP=host:9092``,
``STREAMS_CASSANDRA__KEYSPACE=streams``, ``STREAMS_RUNTIME__KAFKA_HEAP=512m``.
Secrets are ``SecretStr`` and never print.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.ctr.windows import parse_duration_ms
from streams.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent


def project_dir() -> Path:
    """The checkout that holds ``deploy/`` and ``schemas/`` (the package's parent when installed editable)."""
    candidate = PACKAGE_DIR.parent
    return candidate if (candidate / "deploy").is_dir() else Path.cwd()


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def secret_from_file(value: SecretStr | None, path: Path | None, what: str) -> SecretStr | None:
    """A secret given directly (environment) or as a file (a mounted Kubernetes/Docker secret)."""
    if value is not None or path is None:
        return value
    try:
        return SecretStr(path.read_text().strip())
    except OSError as exc:
        raise ValueError(f"cannot read the {what} file {path}: {exc.strerror}") from None


class KafkaSettings(_Group):
    bootstrap: str = "127.0.0.1:9092"
    partitions: int = Field(4, ge=1, description="partitions of topics this project creates")
    replication_factor: int = Field(1, ge=1)
    # -1 keeps raw events forever: the raw log is the source of truth for replay.
    raw_retention_ms: int = -1
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    ssl_ca_file: Path | None = Field(
        None, description="CA certificate (PEM) that signed the brokers' certificates"
    )

    @model_validator(mode="after")
    def _secrets(self) -> KafkaSettings:
        password = secret_from_file(self.sasl_password, self.sasl_password_file, "Kafka SASL password")
        object.__setattr__(self, "sasl_password", password)
        if self.security_protocol.startswith("SASL") and not (self.sasl_username and password):
            raise ValueError(f"{self.security_protocol} needs sasl_username and sasl_password (or _file)")
        return self


class CassandraSettings(_Group):
    hosts: tuple[str, ...] = ("127.0.0.1",)
    port: int = 9042
    keyspace: str = "streams"
    replication_factor: int = Field(1, ge=1)
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    ssl_ca_file: Path | None = Field(None, description="CA certificate (PEM): connect with TLS when set")
    write_concurrency: int = Field(64, ge=1)
    connect_timeout_s: float = 10.0

    @model_validator(mode="after")
    def _secrets(self) -> CassandraSettings:
        object.__setattr__(
            self, "password", secret_from_file(self.password, self.password_file, "Cassandra password")
        )
        return self


class TopicSettings(_Group):
    smoke: str = "smoke-events"
    ad_events: str = "ad-events"
    ctr_results: str = "ctr-results"
    transactions: str = "transactions"
    labels: str = "labels"
    fraud_scores: str = "fraud-scores"
    fraud_chain_heads: str = "fraud-chain-heads"
    # Between the fraud pipeline and its entity stage (a version whose model uses entity features).
    fraud_entity_sightings: str = "fraud-entity-sightings"
    fraud_entity_features: str = "fraud-entity-features"
    dead_letters: str = "dead-letters"


def _duration(value: str) -> str:
    parse_duration_ms(value)
    return value


Duration = Annotated[str, AfterValidator(_duration)]


class CtrSettings(_Group):
    """Rolling CTR: windows in event time, lateness, dedupe, smoothing and archiving."""

    tumbling: Duration = "1m"
    hopping: Duration = "1h"
    hop_every: Duration = "5m"
    grace: Duration = "1m"
    dedupe_horizon: Duration = "10m"
    ci_level: float = Field(0.95, gt=0, lt=1)
    # The pinned priors (versioned with the code); `streams ctr fit-prior` writes new ones.
    prior_file: Path = Field(default_factory=lambda: project_dir() / "deploy" / "priors" / "ctr-default.json")
    min_cell_impressions: int = Field(1000, ge=0)
    min_ad_impressions: int = Field(1000, ge=0)
    backoff_strength: float = Field(500.0, gt=0)
    # A click counts in its impression's windows (`impression`), or at its own time (`click`).
    click_attribution: Literal["impression", "click"] = "impression"
    # Priors learned from the stream in event time (`streams/ctr/learning.py`): every refit
    # interval, from the final hopping windows on the hour of the trailing history.
    prior_learning: bool = True
    prior_refit_every: Duration = "1h"
    prior_history: Duration = "24h"
    prior_min_impressions: int = Field(50, ge=1, description="an ad enters the spread fit with this many")
    prior_min_ads: int = Field(1, ge=1, description="ads a campaign needs for a learned prior of its own")
    ttl_s: int = Field(0, ge=0, description="TTL of result rows in seconds; 0 keeps them")


class FraudSettings(_Group):
    """Fraud scoring: the pinned model and lookups, decision thresholds, holdout, evaluation."""

    model_file: Path = Field(default_factory=lambda: project_dir() / "deploy" / "models" / "fraud-lr-v2.json")
    ip_countries_file: Path = Field(
        default_factory=lambda: project_dir() / "deploy" / "fraud" / "ip-countries-v1.json"
    )
    disable_invoice_at: float = Field(0.3, ge=0, le=1)
    review_at: float = Field(0.7, ge=0, le=1)
    holdout_share: float = Field(0.05, gt=0, le=1)
    review_budget: int = Field(50, ge=1, description="manual reviews per day: k of precision@k")
    min_holdout_rows: int = Field(
        10, ge=1, description="flagged holdout rows a cohort needs for precision and recall"
    )
    label_horizon_days: int = Field(90, ge=1, description="a label joins a decision at most this old")
    # Transaction ids seen again within it are duplicates (payment idempotency keys live 24 h);
    # decisions stay in memory this long, older ones are looked up in the archive by the label join.
    dedupe_horizon_hours: int = Field(24, ge=1)
    # A customer idle this long is new again; a device or card not used this long is new again.
    history_horizon_days: int = Field(30, ge=1)
    batch_timeout_s: float = Field(0.01, gt=0, description="scoring waits at most this long to fill a batch")
    # Each transaction's rows are written once whatever the interval: a short one while working
    # through a backlog bounds the rows held in memory without costing throughput.
    catchup_flush_interval_s: float = Field(1.0, gt=0, description="fraud checkpoints in a backlog")
    metrics_interval_s: float = Field(
        30.0, gt=0, description="how often cohort metrics and drift are refreshed"
    )
    metrics_days: int = Field(14, ge=1, description="recent cohort days: gauges, recomputed at start")
    drift_alert_psi: float = Field(0.25, gt=0)
    # The live feature histograms the inspector compares with the training reference cover this much
    # event time, up to the newest transaction folded (a rebuild at start or rebalance adds nothing).
    drift_window_hours: int = Field(168, ge=1, description="event time the live feature histograms cover")
    # Entity features (a model that uses them): a transaction this far below its partition's largest
    # transaction time is late (asks, is not counted); a partition without a new transaction for
    # `entity_idle_s` of wall-clock time is left out of the stage's watermark until it sends again.
    entity_grace_ms: int = Field(1000, ge=0, description="lateness allowed before a sighting is not counted")
    entity_late_limit_hours: int = Field(24, ge=0, description="a transaction later than this asks no entity")
    entity_idle_s: float = Field(3.0, gt=0, description="a quiet partition tells the entity stage after this")


class WorkerSettings(_Group):
    app_id: str = "streams"
    # Which agents this worker runs (each pipeline can be scaled on its own).
    pipelines: tuple[Literal["smoke", "ctr", "fraud"], ...] = ("smoke", "ctr", "fraud")
    # Names consumer groups, topics and rows: letters, digits, '.', '_' and '-'.
    pipeline_version: str = Field("v1", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$")
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9400
    # A batch is consumed, folded and durably flushed before its offsets are acked: bigger
    # batches mean fewer upserts per event (each dirty window is written once per batch).
    batch_size: int = Field(10_000, ge=1)
    # What librdkafka fetches ahead of the fold, at most (librdkafka's default): with 8 MB the
    # fold waited on fetches 60 % of the time and a backlog went at two thirds of the speed.
    prefetch_kbytes: int = Field(65_536, ge=1024)
    batch_timeout_s: float = Field(1.0, gt=0)
    # The CTR job upserts each window that changed once per flush interval (then commits): a short
    # one while caught up (results visible soon), a long one while working through a backlog.
    flush_interval_s: float = Field(0.5, gt=0)
    catchup_flush_interval_s: float = Field(5.0, gt=0)
    # A dead letter (JSON, raw bytes in base64) is cut to fit this, below the dead-letter topic's
    # max.message.bytes (Kafka's default 1 MB): the raw topic keeps the full original.
    dead_letter_max_bytes: int = Field(900_000, ge=4096)
    # State snapshots (bounded recovery): a partition's state is saved once it folded this many
    # messages, or some and this interval passed, or some and it is revoked; the newest are kept.
    snapshots: bool = True
    snapshot_interval_s: float = Field(60.0, gt=0)
    snapshot_every_messages: int = Field(1_000_000, ge=1)
    snapshots_kept: int = Field(2, ge=1)
    # A stable name per worker slot (e.g. the pod's ordinal) makes the membership static: a
    # restarted worker takes its partitions back at once instead of after the session timeout.
    instance_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class RuntimeSettings(_Group):
    """The local, Docker-free runtime started by ``streams dev up``."""

    home: Path = Field(default_factory=lambda: project_dir() / ".streams")
    kafka_version: str = "4.1.1"
    cassandra_version: str = "5.0.6"
    kafka_controller_port: int = 9093
    cassandra_storage_port: int = 7000
    prometheus_port: int = 9090
    kafka_heap: str = "512m"
    cassandra_heap: str = "1g"
    # Security of the local services (off by default on a laptop; the auth tests turn them on).
    kafka_sasl_port: int | None = Field(None, description="also open a SASL_SSL (SCRAM) listener here")
    cassandra_auth: bool = Field(False, description="PasswordAuthenticator and CassandraAuthorizer")
    start_timeout_s: float = 180.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="STREAMS_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    kafka: KafkaSettings = KafkaSettings()
    cassandra: CassandraSettings = CassandraSettings()
    topics: TopicSettings = TopicSettings()
    ctr: CtrSettings = CtrSettings()
    fraud: FraudSettings = FraudSettings()
    worker: WorkerSettings = WorkerSettings()
    runtime: RuntimeSettings = RuntimeSettings()

    @property
    def deploy_dir(self) -> Path:
        return project_dir() / "deploy"

    @property
    def schemas_dir(self) -> Path:
        return project_dir() / "schemas"


def load_settings(**overrides: object) -> Settings:
    """Build the settings once (in ``main()``); a bad value becomes one `ConfigError` line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"invalid setting {where}: {message}") from None
