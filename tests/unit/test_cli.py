"""User mistakes on the command line are one clear line on stderr and a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def streams(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("dev", "up", "--only", "zookeeper"), {}, "unknown service 'zookeeper'"),
        (("produce", "smoke", "--count", "0"), {}, "--count"),
        (("nonsense",), {}, "No such command"),
        (("dev", "status"), {"STREAMS_KAFKA__PARTITIONS": "-1"}, "invalid setting kafka.partitions"),
        (("produce", "hostile", "--topic", "clicks"), {}, "'clicks' is not one of 'ad-events'"),
        (("produce", "hostile", "--topic", "labels", "--run-id", "a b"), {}, "a run id is"),
        (("ctr", "prior-study", "--hours", "4", "--warmup-hours", "3"), {}, "leaves no final hourly window"),
        (("worker",), {"STREAMS_CTR__PRIOR_HISTORY": "30m"}, "invalid setting ctr.prior_history"),
    ],
)
def test_mistakes_are_one_line(args: tuple[str, ...], env: dict[str, str], message: str) -> None:
    result = streams(*args, **env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("streams: error:")
    assert message in lines[0]


def test_help_lists_the_verbs() -> None:
    result = streams("--help")
    assert result.returncode == 0
    for verb in ("dev", "worker", "produce", "query", "demo"):
        assert verb in result.stdout
