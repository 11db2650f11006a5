"""Measuring a contender from the outside: its processes, its progress counter, its CPU and memory.

Every contender (our worker and the comparison jobs) serves the same Prometheus counter,
``streams_events_consumed_total{topic}``, incremented only once the events it covers are done:
their results durably written (or, for the raw ceiling, polled and decoded). The harness scrapes
it and reads ``/proc/<pid>`` of the contender's processes at the same moments, so events, seconds
and CPU seconds always cover the same interval:

    events/s = (N - n0) / (t_end - t0)        CPU s per 1M events = (cpu_end - cpu0) / (N - n0) * 1e6

where t0 is the first scrape that shows progress (n0 events done, n0 > 0), t_end the first one that
shows all N. Start-up (imports, connections, group join, the first batch) is reported apart. Scrapes
are 0.1 s apart, so a rate is only given when the interval lasts at least 2 s and covers at least a
quarter of the events (else "n/a": the backlog was too small for that contender).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from streams.errors import RuntimeServiceError
from streams.scrape import fetch_metrics, total

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CONSUMED = "streams_events_consumed_total"
POLL_S = 0.1
MIN_RATED_S = 2.0
MIN_RATED_SHARE = 0.25


@dataclass(frozen=True)
class Measurement:
    """One contender over one backlog (or one offered-rate run)."""

    events: int  # N - n0: events done between the two scrapes
    seconds: float
    cpu_seconds: float
    peak_rss_mib: float
    startup_s: float  # process start to the first progress
    expected: int = 0  # N

    @property
    def rated(self) -> bool:
        """Whether the interval is long and full enough for a rate (see the module's docstring)."""
        return self.seconds >= MIN_RATED_S and self.events >= MIN_RATED_SHARE * self.expected

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_s_per_million(self) -> float:
        return self.cpu_seconds / self.events * 1e6 if self.events else 0.0


@dataclass
class JobProcess:
    """One process of a contender, with the port of its /metrics."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _status_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    return 0.0


def peak_rss_mib(pid: int) -> float:
    """The process's resident set high-water mark (VmHWM)."""
    return _status_mib(pid, "VmHWM")


def rss_mib(pid: int) -> float:
    """The process's resident set now (VmRSS)."""
    return _status_mib(pid, "VmRSS")


def start_job(command: Sequence[str], env: dict[str, str], port: int, log: Path) -> JobProcess:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(command), env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )
    return JobProcess(proc, port, log)


def stop_jobs(jobs: Sequence[JobProcess], timeout_s: float = 60) -> None:
    """SIGTERM (a clean shutdown: the jobs leave their consumer group), then SIGKILL if needed."""
    for job in jobs:
        if job.proc.poll() is None:
            job.proc.send_signal(signal.SIGTERM)
    for job in jobs:
        try:
            job.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            job.proc.kill()
            job.proc.wait(timeout=10)


def scrape(jobs: Sequence[JobProcess]) -> list[str]:
    return [fetch_metrics("127.0.0.1", job.port) for job in jobs]


def done_events(texts: Sequence[str], topic: str) -> float:
    """Events done over all processes; -1 while one of them is not serving /metrics yet."""
    if not all(texts):
        return -1.0
    return sum(total(text, CONSUMED, topic=topic) for text in texts)


def check_alive(jobs: Sequence[JobProcess], name: str) -> None:
    for job in jobs:
        if job.proc.poll() is not None:
            raise RuntimeServiceError(f"{name} exited with code {job.proc.returncode} (log: {job.log})")


def watch_backlog(
    jobs: Sequence[JobProcess],
    name: str,
    topic: str,
    expected: int,
    *,
    stall_timeout_s: float = 180,
    finished: Callable[[], bool] = lambda: True,
    on_progress: Callable[[float], None] = lambda done: None,
) -> tuple[Measurement, list[str]]:
    """Wait until the contender has done ``expected`` events (and ``finished()`` agrees); returns the
    figures and its last scrape.

    Fails if a process dies or nothing moves for ``stall_timeout_s`` (e.g. a service is down for
    longer than the other tests' outages last)."""
    started = time.monotonic()
    last_change, last_done = started, -1.0
    pids = [job.proc.pid for job in jobs]
    t0 = cpu0 = None
    n0 = 0.0
    while True:
        check_alive(jobs, name)
        texts = scrape(jobs)
        now = time.monotonic()
        done = done_events(texts, topic)
        if done != last_done:
            last_change, last_done = now, done
            on_progress(max(done, 0))
        elif now - last_change > stall_timeout_s:
            raise RuntimeServiceError(
                f"{name} made no progress for {stall_timeout_s:.0f}s at {max(done, 0):.0f}/{expected} "
                f"events (log: {jobs[0].log})"
            )
        if t0 is None and done > 0:
            t0, n0, cpu0 = now, done, sum(cpu_seconds(pid) for pid in pids)
        if done >= expected and t0 is not None and cpu0 is not None and finished():
            cpu = sum(cpu_seconds(pid) for pid in pids) - cpu0
            figures = Measurement(
                events=max(int(expected - n0), 0),
                seconds=now - t0,
                cpu_seconds=cpu,
                peak_rss_mib=max(peak_rss_mib(pid) for pid in pids),
                startup_s=t0 - started,
                expected=expected,
            )
            return figures, texts
        time.sleep(POLL_S)


def wait_serving(jobs: Sequence[JobProcess], name: str, timeout_s: float = 180) -> None:
    """Until every process of the contender serves /metrics."""
    deadline = time.monotonic() + timeout_s
    while not all(scrape(jobs)):
        check_alive(jobs, name)
        if time.monotonic() > deadline:
            raise RuntimeServiceError(f"{name} did not serve /metrics within {timeout_s:.0f}s")
        time.sleep(POLL_S)
