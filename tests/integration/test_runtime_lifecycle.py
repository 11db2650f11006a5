"""`streams dev up | status | down` on a second, isolated runtime (own home and ports)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.runtime.process import _start_time
from streams.settings import Settings
from tests.support import free_port

pytestmark = pytest.mark.integration


def streams(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=400,
    )


def test_up_is_idempotent_status_reports_and_down_leaves_nothing(runtime: Settings, tmp_path: Path) -> None:
    env = {
        "STREAMS_RUNTIME__HOME": str(tmp_path / "home"),
        "STREAMS_KAFKA__BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "STREAMS_RUNTIME__KAFKA_CONTROLLER_PORT": str(free_port()),
        "STREAMS_CASSANDRA__PORT": str(free_port()),
        "STREAMS_RUNTIME__CASSANDRA_STORAGE_PORT": str(free_port()),
        "STREAMS_RUNTIME__PROMETHEUS_PORT": str(free_port()),
        "STREAMS_RUNTIME__CASSANDRA_HEAP": "512m",
        "STREAMS_RUNTIME__KAFKA_HEAP": "256m",
    }
    try:
        first = streams(env, "dev", "up")
        assert first.returncode == 0, first.stderr
        assert "kafka: ready at kafka://127.0.0.1:" in first.stdout
        again = streams(env, "dev", "up")
        assert again.returncode == 0, again.stderr
        assert again.stdout.count("already running") == 3

        running = json.loads(streams(env, "dev", "status", "--json").stdout)
        assert {s["name"]: s["state"] for s in running} == {
            "kafka": "running",
            "cassandra": "running",
            "prometheus": "running",
        }
        pids = [s["pid"] for s in running]
        assert all(_start_time(pid) is not None for pid in pids)
    finally:
        down = streams(env, "dev", "down", "--wipe")
    assert down.returncode == 0, down.stderr

    stopped = json.loads(streams(env, "dev", "status", "--json").stdout)
    assert {s["state"] for s in stopped} == {"stopped"}
    assert all(_start_time(pid) is None for pid in pids), "a process started by the runtime remains"
    assert not (tmp_path / "home" / "kafka" / "data").exists()


def test_a_port_taken_by_someone_else_is_one_clear_line(runtime: Settings, tmp_path: Path) -> None:
    # The shared runtime's Prometheus holds its port; a second runtime that wants it must refuse.
    env = {
        "STREAMS_RUNTIME__HOME": str(tmp_path / "home"),
        "STREAMS_RUNTIME__PROMETHEUS_PORT": str(runtime.runtime.prometheus_port),
    }
    result = streams(env, "dev", "up", "--only", "prometheus")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"port {runtime.runtime.prometheus_port} (prometheus) is already in use" in lines[0]
