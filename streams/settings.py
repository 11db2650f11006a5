"""One typed, frozen settings object, read from the environment (prefix ``STREAMS_``).

Nested groups use ``__``: ``STREAMS_KAFKA__BOOTSTRAP=host:9092``,
``STREAMS_CASSANDRA__KEYSPACE=streams``, ``STREAMS_RUNTIME__KAFKA_HEAP=512m``.
Secrets are ``SecretStr`` and never print.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent


def project_dir() -> Path:
    """The checkout that holds ``deploy/`` and ``schemas/`` (the package's parent when installed editable)."""
    candidate = PACKAGE_DIR.parent
    return candidate if (candidate / "deploy").is_dir() else Path.cwd()


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Group):
    bootstrap: str = "127.0.0.1:9092"
    partitions: int = Field(4, ge=1, description="partitions of topics this project creates")
    replication_factor: int = Field(1, ge=1)
    # -1 keeps raw events forever: the raw log is the source of truth for replay.
    raw_retention_ms: int = -1


class CassandraSettings(_Group):
    hosts: tuple[str, ...] = ("127.0.0.1",)
    port: int = 9042
    keyspace: str = "streams"
    replication_factor: int = Field(1, ge=1)
    username: str | None = None
    password: SecretStr | None = None
    write_concurrency: int = Field(64, ge=1)
    connect_timeout_s: float = 10.0


class TopicSettings(_Group):
    smoke: str = "smoke-events"
    dead_letters: str = "dead-letters"


class WorkerSettings(_Group):
    app_id: str = "streams"
    pipeline_version: str = "v1"
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9400
    batch_size: int = Field(2000, ge=1)
    batch_timeout_s: float = Field(0.5, gt=0)


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
    start_timeout_s: float = 180.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="STREAMS_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    kafka: KafkaSettings = KafkaSettings()
    cassandra: CassandraSettings = CassandraSettings()
    topics: TopicSettings = TopicSettings()
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
        raise ConfigError(f"invalid setting {where}: {first['msg']}") from None
