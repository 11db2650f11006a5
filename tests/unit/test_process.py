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
