from __future__ import annotations

from pathlib import Path

from streams.runtime.process import ManagedProcess, _start_time


def test_start_status_and_stop_by_pid_file(tmp_path: Path) -> None:
    process = ManagedProcess("sleeper", tmp_path / "run" / "sleeper.pid", tmp_path / "sleeper.log")
    assert process.pid() is None
    pid = process.start(["sleep", "60"])
    assert process.pid() == pid
    assert process.stop(timeout_s=5)
    assert _start_time(pid) is None
    assert process.pid() is None
    assert not process.stop()


def test_a_stale_pid_file_is_not_trusted(tmp_path: Path) -> None:
    pid_file = tmp_path / "x.pid"
    pid_file.write_text("1 12345\n")  # pid 1 exists, but with another start time: not ours
    process = ManagedProcess("x", pid_file, tmp_path / "x.log")
    assert process.pid() is None
    assert not pid_file.exists()


def test_last_error_is_the_exception_of_the_last_traceback(tmp_path: Path) -> None:
    process = ManagedProcess("x", tmp_path / "x.pid", tmp_path / "x.log")
    assert process.last_error() == ""
    process.log_file.write_text(
        "[2026-11-30 05:56:29,249] [1] [INFO] [^Worker]: Starting...\n"
        "[2026-11-30 05:56:30,001] [1] [ERROR] the engine failed\n"
        "Traceback (most recent call last):\n"
        '  File "streams/engine/job.py", line 1, in run\n'
        "    await self._flush()\n"
        "cassandra.OperationTimedOut: errors={}, last_host=None\n"
        "[2026-11-30 05:56:31,000] [1] [INFO] [^Worker]: Closing event loop\n"
    )
    assert process.last_error() == "cassandra.OperationTimedOut: errors={}, last_host=None"
    process.log_file.write_text("[1] [INFO] a\n[1] [ERROR] cannot serve /metrics\n[1] [INFO] stopping\n")
    assert process.last_error() == "[1] [ERROR] cannot serve /metrics"
    process.log_file.write_text("[1] [INFO] a\n[1] [INFO] stopping\n")
    assert process.last_error() == "[1] [INFO] stopping"
