"""Test helpers shared by the integration tests: settings for one test, a worker subprocess and
its /metrics."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from streams.scrape import fetch_metrics, total
from streams.settings import Settings, TopicSettings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def isolated_settings(base: Settings) -> Settings:
    """The shared services, with topics, keyspace, consumer group and metrics port of its own."""
    suffix = uuid.uuid4().hex[:10]
    return Settings(
        kafka=base.kafka,
        cassandra=base.cassandra.model_copy(update={"keyspace": f"t_{suffix}"}),
        topics=TopicSettings(**{name: f"{default}-{suffix}" for name, default in TopicSettings()}),
        worker=base.worker.model_copy(update={"app_id": f"test-{suffix}", "metrics_port": free_port()}),
        ctr=base.ctr,
        fraud=base.fraud,
        runtime=base.runtime,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that reproduces ``settings`` in a child process."""
    env: dict[str, str] = {}
    for group_name in type(settings).model_fields:
        group = getattr(settings, group_name)
        assert isinstance(group, BaseModel)
        for field, value in group:
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, tuple | list):
                value = json.dumps(list(value))
            env[f"STREAMS_{group_name.upper()}__{field.upper()}"] = str(value)
    return env


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


@contextmanager
def running_worker(settings: Settings, log_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`streams worker` as a real subprocess; stopped with SIGTERM (clean shutdown) at the end."""
    log_path = log_dir / f"worker-{uuid.uuid4().hex[:6]}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker"],
            env={**os.environ, **settings_env(settings)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    if proc.returncode not in (0, -signal.SIGTERM):
        tail = log_path.read_text(errors="replace")[-3000:]
        raise AssertionError(f"worker exited with {proc.returncode}; log tail:\n{tail}")


def scrape(settings: Settings) -> str:
    """The worker's /metrics text ("" while it is still starting)."""
    return fetch_metrics(settings.worker.metrics_host, settings.worker.metrics_port)


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return total(text, name, **labels)
