"""Shared fixtures. Integration tests use one set of local services for the whole session;
if they cannot start, every integration test fails with the reason (never a silent skip)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from streams.errors import StreamsError
from streams.settings import Settings, load_settings
from tests.support import isolated_settings


@pytest.fixture(scope="session")
def runtime() -> Settings:
    """The local runtime, started if needed (`make test` has usually started it already)."""
    from streams.runtime import manager

    settings = load_settings()
    try:
        manager.up(settings, report=lambda line: None)
    except StreamsError as exc:
        pytest.fail(f"the local runtime (Kafka, Cassandra, Prometheus) could not start: {exc}", pytrace=False)
    return settings


@pytest.fixture
def isolated(runtime: Settings) -> Iterator[Settings]:
    """Per-test topics, keyspace and consumer group on the shared services; removed afterwards."""
    from streams.io.cassandra import connect, drop_keyspace
    from streams.io.kafka import delete_topics
    from streams.lifecycle import bootstrap
    from streams.topics import project_topics

    settings = isolated_settings(runtime)
    cluster, session = connect(settings.cassandra)
    c = settings.cassandra
    bootstrap(settings, session)
    try:
        yield settings
    finally:
        drop_keyspace(session, c.keyspace)
        cluster.shutdown()
        delete_topics(settings.kafka, [t.name for t in project_topics(settings)])
