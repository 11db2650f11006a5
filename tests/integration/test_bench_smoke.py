"""`streams bench` end to end, small: every contender must compute the oracle's counts.

Runs the real CLI as a subprocess (3,000 impressions, 1 repeat, the ctr scenario, all four
contenders) on the local Kafka and Cassandra, and checks correctness and the files it writes. No
timing is asserted: figures of such a short run on a shared 2-core machine mean nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from streams.settings import Settings

pytestmark = pytest.mark.integration

CONTENDERS = ("ours", "naive-faust", "quix", "raw")


@pytest.mark.timeout(300)
def test_every_contender_counts_every_event_once(runtime: Settings, tmp_path: Path) -> None:
    out, page = tmp_path / "bench", tmp_path / "benchmarks.md"
    options = [
        "--scenario",
        "ctr",
        "--events",
        "3000",
        "--repeats",
        "1",
        "--contenders",
        ",".join(CONTENDERS),
    ]
    command = [sys.executable, "-m", "streams", "bench", *options, "--out", str(out), "--docs", str(page)]
    done = subprocess.run(command, env=dict(os.environ), capture_output=True, text=True, timeout=280)

    result_file = out / "ctr.json"
    assert result_file.exists(), f"no results; exit {done.returncode}:\n{done.stderr[-3000:]}"
    result = orjson.loads(result_file.read_bytes())
    runs = {run["contender"]: run for run in result["runs"]}
    assert result["skipped"] == {}, result["skipped"]
    assert set(runs) == set(CONTENDERS)
    for name, run in runs.items():
        assert run["error"] is None, f"{name}: {run['error']}"
        assert run["check"]["correct"], f"{name}: {run['check']['summary']}"
    assert done.returncode == 0, done.stderr[-3000:]
    assert result["input"]["topic_messages"] >= 3000
    for suffix in ("md", "png"):
        assert (out / f"ctr.{suffix}").stat().st_size > 0
    assert "<!-- streams bench: ctr -->" in page.read_text()
