"""Security end to end: a local Kafka with a SASL_SSL (SCRAM-SHA-512, TLS) listener and a local
Cassandra with authentication on. The worker works with the right credentials and stops with one
clear error line with wrong ones; no secret appears in its log or on /metrics."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from pydantic import SecretStr

from streams.errors import StreamsError
from streams.io.cassandra import apply_schema, connect, read_smoke_events
from streams.io.kafka import ensure_topics, upsert_scram_user
from streams.produce import produce
from streams.runtime import manager
from streams.settings import Settings
from streams.smoke import logic as smoke
from streams.topics import project_topics
from tests.support import free_port, isolated_settings, running_worker, scrape, settings_env, wait_until

pytestmark = pytest.mark.integration

SUPERUSER = "cassandra"  # Cassandra's bootstrap superuser of a fresh node (its documented default)


@pytest.fixture(scope="module")
def secured(runtime: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A second local Kafka (plus a SASL_SSL listener) and Cassandra (auth on), beside the shared ones."""
    home = tmp_path_factory.mktemp("secured-runtime")
    (home / "lib").symlink_to(runtime.runtime.home / "lib")  # the same fetched jars
    kafka_port, sasl_port, cql_port = free_port(), free_port(), free_port()
    settings = runtime.model_copy(
        update={
            "kafka": runtime.kafka.model_copy(update={"bootstrap": f"127.0.0.1:{kafka_port}"}),
            "cassandra": runtime.cassandra.model_copy(
                update={"port": cql_port, "username": SUPERUSER, "password": SecretStr(SUPERUSER)}
            ),
            "runtime": runtime.runtime.model_copy(
                update={
                    "home": home, "kafka_controller_port": free_port(), "cassandra_storage_port": free_port(),
                    "kafka_sasl_port": sasl_port, "cassandra_auth": True, "kafka_heap": "256m",
                    "cassandra_heap": "512m",
                }
            ),
        }
    )  # fmt: skip
    try:
        manager.up(settings, ["kafka", "cassandra"], report=print)
    except StreamsError as exc:
        manager.down(settings, ["kafka", "cassandra"], report=print)
        pytest.fail(f"the secured Kafka/Cassandra could not start: {exc}", pytrace=False)
    try:
        yield settings
    finally:
        manager.down(settings, ["kafka", "cassandra"], report=print)


def client_settings(secured: Settings, kafka_password: str, cassandra_password: str) -> Settings:
    """What an application gets: the SASL_SSL listener with the CA file, and a role of its own."""
    base = isolated_settings(secured)
    return base.model_copy(
        update={
            "kafka": base.kafka.model_copy(
                update={
                    "bootstrap": f"127.0.0.1:{secured.runtime.kafka_sasl_port}",
                    "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                    "sasl_username": "streams-app", "sasl_password": SecretStr(kafka_password),
                    "ssl_ca_file": secured.runtime.home / "kafka" / "tls" / "ca.pem",
                }
            ),
            "cassandra": base.cassandra.model_copy(
                update={"username": "streams_app", "password": SecretStr(cassandra_password)}
            ),
            "worker": base.worker.model_copy(update={"pipelines": ("smoke",)}),
        }
    )  # fmt: skip


def worker_error(settings: Settings) -> str:
    """Run `streams worker`, expecting it to stop at once; returns its stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "streams", "worker"],
        env={**os.environ, **settings_env(settings)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    return result.stderr


def test_the_worker_works_with_the_right_credentials_only(secured: Settings, tmp_path: Path) -> None:
    kafka_password, cassandra_password = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    upsert_scram_user(secured.kafka, "streams-app", kafka_password, "SCRAM-SHA-512")
    cluster, session = wait_until(lambda: _try_connect(secured), 120, "Cassandra's superuser to exist", 2)
    try:
        session.execute(
            "CREATE ROLE IF NOT EXISTS streams_app WITH LOGIN = true AND PASSWORD = %s", (cassandra_password,)
        )
        app = client_settings(secured, kafka_password, cassandra_password)
        c = app.cassandra
        apply_schema(session, app.deploy_dir / "cassandra" / "schema", c.keyspace, c.replication_factor)
        session.execute(f"GRANT ALL PERMISSIONS ON KEYSPACE {c.keyspace} TO streams_app")
    finally:
        cluster.shutdown()

    # Everything the application does goes through the SASL_SSL listener and its own Cassandra role.
    ensure_topics(app.kafka, project_topics(app))
    run_id = f"auth-{uuid.uuid4().hex[:6]}"
    messages = list(smoke.smoke_events(run_id, 200, start_ms=1_700_000_000_000))
    assert produce(app.kafka, app.topics.smoke, messages).failed == 0
    expected = {orjson.loads(value)["event_id"] for _, value in messages}
    cluster, session = connect(app.cassandra)
    try:
        with running_worker(app, tmp_path):
            rows = wait_until(
                lambda: (
                    r
                    if len(r := read_smoke_events(session, c.keyspace, app.worker.pipeline_version, run_id))
                    >= len(expected)
                    else None
                ),
                120,
                "the smoke rows",
            )
            metrics = scrape(app)
    finally:
        cluster.shutdown()
    assert {r["event_id"] for r in rows} == expected
    log = "".join(p.read_text(errors="replace") for p in tmp_path.glob("worker-*.log"))
    for secret in (kafka_password, cassandra_password):
        assert secret not in log and secret not in metrics

    # Wrong credentials: one clear line on stderr, no traceback, and no secret echoed.
    wrong_kafka = app.model_copy(
        update={"kafka": app.kafka.model_copy(update={"sasl_password": SecretStr("nope")})}
    )
    stderr = worker_error(wrong_kafka)
    assert stderr.strip().splitlines()[-1].startswith("streams: error: Kafka at ")
    assert "refused the credentials of user 'streams-app'" in stderr and "Traceback" not in stderr
    wrong_cassandra = app.model_copy(
        update={"cassandra": app.cassandra.model_copy(update={"password": SecretStr("nope")})}
    )
    stderr = worker_error(wrong_cassandra)
    assert "refused the credentials of user 'streams_app'" in stderr.strip().splitlines()[-1]
    assert "Traceback" not in stderr and "nope" not in stderr


def _try_connect(settings: Settings) -> tuple[object, object] | None:
    try:
        return connect(settings.cassandra)
    except StreamsError:
        return None
