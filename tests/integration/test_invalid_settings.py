"""Settings that cannot work stop `streams replay` and `streams worker` with one line, before any
version is registered: the name stays free for the corrected settings."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from streams.io.cassandra import connect
from streams.io.version_store import read_version
from streams.settings import Settings
from tests.support import settings_env

pytestmark = pytest.mark.integration

SHORT_HORIZON = {"STREAMS_CTR__DEDUPE_HORIZON": "10s"}  # shorter than the default grace of 1m


def streams(settings: Settings, version: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        **settings_env(settings),
        "STREAMS_WORKER__PIPELINE_VERSION": version,
        **SHORT_HORIZON,
    }
    return subprocess.run(
        [sys.executable, "-m", "streams", *args], env=env, capture_output=True, text=True, timeout=180
    )


def assert_one_line_naming_the_horizon(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode != 0, result.stdout[-2000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("streams: error: invalid setting ctr.dedupe_horizon: '10s' is shorter than")


def registered(settings: Settings, version: str) -> bool:
    cluster, session = connect(settings.cassandra)
    try:
        return read_version(session, settings.cassandra.keyspace, version) is not None
    finally:
        cluster.shutdown()


def test_replay_with_invalid_settings_registers_nothing(isolated: Settings) -> None:
    version = f"bad-{uuid.uuid4().hex[:8]}"
    result = streams(isolated, version, "replay", "--version", version, "--no-wait")
    assert_one_line_naming_the_horizon(result)
    assert "started" not in result.stdout
    assert not registered(isolated, version)


def test_worker_with_invalid_settings_stops_with_one_line(isolated: Settings) -> None:
    version = f"bad-{uuid.uuid4().hex[:8]}"
    assert_one_line_naming_the_horizon(streams(isolated, version, "worker"))
    assert not registered(isolated, version)
