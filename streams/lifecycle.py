"""The life of a pipeline version: register, replay, catch up, promote, retire.

State machine (in the registry): ``replaying`` (created, behind the head of the log) ->
``live`` (caught up once; follows the head) -> ``retired`` (workers stopped; topics, consumer group,
local state and rows removed; the registry keeps the record so the name is never reused).
Serving is orthogonal: exactly one version serves readers, switched atomically by ``promote``.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streams.compose import Composition, compose
from streams.errors import ConfigError, RuntimeServiceError
from streams.io import kafka as kafka_io
from streams.io import version_store as store
from streams.netcheck import port_open
from streams.runtime.process import ManagedProcess
from streams.settings import Settings
from streams.versions import (
    Lag,
    VersionNames,
    first_difference,
    measure_lag,
    names_of,
    params_digest,
)

REPLAYING, LIVE, RETIRED = "replaying", "live", "retired"
Report = Callable[[str], None]


def bootstrap(settings: Settings, session: Any) -> list[str]:
    """The one bootstrap of a keyspace and its topics (idempotent): the project's topics and the
    Cassandra schema. Used by `streams dev up`, the worker, `streams replay` and the tests.
    Returns the topics created."""
    from streams.io.cassandra import apply_schema
    from streams.topics import project_topics

    created = kafka_io.ensure_topics(settings.kafka, project_topics(settings))
    c = settings.cassandra
    apply_schema(session, settings.deploy_dir / "cassandra" / "schema", c.keyspace, c.replication_factor)
    return created


def resolve_version(session: Any, settings: Settings, explicit: str | None) -> str:
    """What readers read: an explicit version, else the serving one, else the configured one."""
    if explicit:
        return explicit
    return store.serving_version(session, settings.cassandra.keyspace) or settings.worker.pipeline_version


def ensure_registered(
    session: Any,
    settings: Settings,
    replay_from: str = "beginning",
    *,
    composition: Composition | None = None,
) -> store.VersionRecord:
    """Register the configured version (pinning its settings) or check that the settings still match
    its pins; the very first version becomes the serving one. Settings that cannot work (`compose`)
    register nothing."""
    keyspace, version = settings.cassandra.keyspace, settings.worker.pipeline_version
    params = (composition or compose(settings)).pins
    pipelines = tuple(settings.worker.pipelines)
    record = store.read_version(session, keyspace, version)
    if record is None:
        fresh = store.VersionRecord(version, REPLAYING, pipelines, params, params_digest(params), replay_from)
        store.create_version(session, keyspace, fresh)
        record = store.read_version(session, keyspace, version)
        assert record is not None
    if record.state == RETIRED:
        raise ConfigError(f"version {version} was retired; replay the change under a new version name")
    if record.params_digest != params_digest(params):
        difference = first_difference(record.params, params)
        raise ConfigError(
            f"version {version} is pinned to other settings ({difference}); "
            "results of one version come from one configuration: replay the change as a new version"
        )
    if not set(pipelines) <= set(record.pipelines):
        union = sorted(set(record.pipelines) | set(pipelines))
        store.update_version(session, keyspace, version, pipelines=union)
        record = store.read_version(session, keyspace, version) or record
    store.claim_serving(session, keyspace, version)
    return record


def names(settings: Settings, record: store.VersionRecord) -> VersionNames:
    return names_of(settings, record.version, record.pipelines)


def local_workers(settings: Settings, version: str) -> list[ManagedProcess]:
    """Workers of ``version`` this machine started in the background (by `replay`)."""
    home = settings.runtime.home
    return [
        ManagedProcess(p.stem, p, home / "worker" / f"{p.stem}.log")
        for p in sorted((home / "run").glob(f"worker-{settings.worker.app_id}-{version}-*.pid"))
    ]


def _free_ports(settings: Settings, count: int) -> list[int]:
    host, port = settings.worker.metrics_host, settings.worker.metrics_port + 10
    ports: list[int] = []
    while len(ports) < count:
        if not port_open(host, port):
            ports.append(port)
        port += 1
    return ports


def start_workers(settings: Settings, version: str, count: int) -> list[ManagedProcess]:
    """Start ``count`` background workers of ``version`` (the ones already running are kept)."""
    home = settings.runtime.home
    processes = []
    ports = iter(_free_ports(settings, count))
    for i in range(count):
        name = f"worker-{settings.worker.app_id}-{version}-{i}"
        process = ManagedProcess(name, home / "run" / f"{name}.pid", home / "worker" / f"{name}.log")
        if process.pid() is None:
            env = {
                "STREAMS_WORKER__PIPELINE_VERSION": version,
                "STREAMS_WORKER__METRICS_PORT": str(next(ports)),
            }
            process.start([sys.executable, "-m", "streams", "worker"], env=env)
        processes.append(process)
    return processes


def begin_replay(
    session: Any, settings: Settings, from_ms: int | None, *, composition: Composition | None = None
) -> tuple[store.VersionRecord, bool]:
    """Register the configured version for a replay from the log's start or from ``from_ms``, and
    place its consumer group there. Returns (record, created); an existing version is resumed.
    Settings that cannot work (`compose`) register nothing."""
    composition = composition or compose(settings)
    keyspace, version = settings.cassandra.keyspace, settings.worker.pipeline_version
    existing = store.read_version(session, keyspace, version)
    if existing is not None:
        if existing.state == RETIRED:
            raise ConfigError(f"version {version} was retired; replay under a new version name")
        if from_ms is not None:
            raise ConfigError(f"version {version} exists already; --from applies to a new version only")
        return ensure_registered(session, settings, composition=composition), False
    replay_from = "beginning" if from_ms is None else str(from_ms)
    record = ensure_registered(session, settings, replay_from=replay_from, composition=composition)
    version_names = names(settings, record)
    if from_ms is not None:
        if any(kafka_io.group_members(settings.kafka, g) for g in version_names.groups):
            raise ConfigError(f"workers of {version} are already running; stop them before --from")
        offsets = {
            t: kafka_io.offsets_for_time(settings.kafka, t, from_ms) for t in version_names.source_topics
        }
        if offsets:
            kafka_io.commit_group_offsets(settings.kafka, version_names.group_id, offsets)
    return record, True


def caught_up(
    session: Any, settings: Settings, record: store.VersionRecord, lag: Lag, threshold: int
) -> bool:
    """Mark a replaying version live once its lag is at most ``threshold`` records."""
    if record.state == REPLAYING and lag.total <= threshold:
        return store.update_version(
            session, settings.cassandra.keyspace, record.version,
            expected_state=REPLAYING, state=LIVE, caught_up_at=store.now(),
        )  # fmt: skip
    return record.state == LIVE


def promote(session: Any, settings: Settings, version: str, *, max_lag: int, force: bool) -> str | None:
    """Point readers at ``version``; returns the version that served before (None if it already did)."""
    keyspace = settings.cassandra.keyspace
    record = require(session, settings, version)
    current = store.serving_version(session, keyspace)
    if current == version:
        return None
    lag = measure_lag(settings, names(settings, record))
    if lag.total > max_lag and not force:
        raise ConfigError(
            f"version {version} is {lag.total} records behind the log; wait until it has caught up "
            "(`streams versions`) or pass --force"
        )
    if not store.switch_serving(session, keyspace, version, current):
        now_serving = store.serving_version(session, keyspace)
        raise RuntimeServiceError(f"the serving version changed meanwhile (now {now_serving}); try again")
    caught_up(session, settings, record, lag, max_lag)
    store.update_version(session, keyspace, version, promoted_at=store.now())
    return current or ""


def require(session: Any, settings: Settings, version: str) -> store.VersionRecord:
    record = store.read_version(session, settings.cassandra.keyspace, version)
    if record is None:
        raise ConfigError(f"unknown version {version!r} (see `streams versions`)")
    if record.state == RETIRED:
        raise ConfigError(f"version {version} is retired")
    return record


@dataclass(frozen=True)
class Retirement:
    workers_stopped: int
    topics_deleted: list[str]
    rows_deleted: dict[str, int]


def retire(
    session: Any, settings: Settings, version: str, report: Report, leave_timeout_s: float = 60.0
) -> Retirement:
    """Stop ``version``'s local workers, then delete its topics, consumer group, state and rows."""
    keyspace = settings.cassandra.keyspace
    record = require(session, settings, version)
    if store.serving_version(session, keyspace) == version:
        raise ConfigError(f"version {version} is serving; promote another version before retiring it")
    stopped = sum(worker.stop() for worker in local_workers(settings, version))
    version_names = names(settings, record)
    deadline = time.monotonic() + leave_timeout_s
    groups = version_names.groups
    while (members := max(kafka_io.group_members(settings.kafka, g) for g in groups)) > 0:
        if time.monotonic() > deadline:
            raise RuntimeServiceError(
                f"{members} workers of {version} still run elsewhere (groups {', '.join(groups)}); "
                "stop them, then retire again"
            )
        time.sleep(1.0)
    report(f"workers stopped: {stopped}")
    topics = [t for t in version_names.result_topics if t in kafka_io.existing_topics(settings.kafka)]
    if topics:
        kafka_io.delete_topics(settings.kafka, topics)
    report(f"topics deleted: {', '.join(topics) or 'none'}")
    for group in groups:
        kafka_io.delete_group(settings.kafka, group)
    shutil.rmtree(settings.runtime.home / "faust" / version_names.group_id, ignore_errors=True)
    rows = store.delete_version_rows(session, keyspace, version)
    report("partitions deleted: " + ", ".join(f"{table} {n}" for table, n in rows.items()))
    store.update_version(session, keyspace, version, state=RETIRED, retired_at=store.now())
    return Retirement(stopped, topics, rows)
