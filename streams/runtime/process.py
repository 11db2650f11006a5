"""Processes the runtime starts itself, tracked by pid files so that only they are ever stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


def _start_time(pid: int) -> str | None:
    """The kernel's start time of pid (guards against pid reuse), or None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; fields after it are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    state, start_time = fields[0], fields[19]
    return None if state in ("Z", "X") else start_time


@dataclass(frozen=True)
class ManagedProcess:
    """A background process with a pid file (pid and start time) and a log file."""

    name: str
    pid_file: Path
    log_file: Path

    def pid(self) -> int | None:
        """The pid if our process is alive; a stale pid file (dead or reused pid) is removed."""
        try:
            pid_text, started = self.pid_file.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        if _start_time(pid) != started:
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def start(
        self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> int:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # survives the CLI and gets no terminal signals
            )
        started = _start_time(proc.pid) or "0"
        self.pid_file.write_text(f"{proc.pid} {started}\n")
        return proc.pid

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM, then SIGKILL after timeout_s. Returns True if a process was stopped."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _start_time(pid) is not None:
            time.sleep(0.2)
        if _start_time(pid) is not None:
            os.kill(pid, signal.SIGKILL)
            while _start_time(pid) is not None:
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    def last_log_line(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1].strip() if lines else ""

    def last_error(self) -> str:
        """Why the process ended, as its log tells it: the exception of the last traceback, else
        the last ERROR or CRITICAL line, else the last line."""
        try:
            lines = self.log_file.read_text(errors="replace").rstrip().splitlines()
        except OSError:
            return ""
        tracebacks = [i for i, line in enumerate(lines) if line.startswith("Traceback ")]
        if tracebacks:
            after = [line for line in lines[tracebacks[-1] + 1 :] if line and not line[0].isspace()]
            if after:
                return after[0].strip()
        errors = [line for line in lines if "[ERROR]" in line or "[CRITICAL]" in line]
        if errors:
            return errors[-1].strip()
        return lines[-1].strip() if lines else ""
