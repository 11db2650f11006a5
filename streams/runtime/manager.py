"""`streams dev up | down | status`: start, stop and report the local services."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from streams.errors import ConfigError, RuntimeServiceError
from streams.netcheck import port_open
from streams.runtime.process import ManagedProcess
from streams.runtime.services import SERVICES, Service
from streams.settings import Settings

Report = Callable[[str], None]


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    state: str  # "running", "starting" (up but not healthy) or "stopped"
    pid: int | None
    address: str
    log: str


def select(settings: Settings, names: Iterable[str] | None = None) -> list[Service]:
    chosen = list(names) if names else list(SERVICES)
    unknown = [n for n in chosen if n not in SERVICES]
    if unknown:
        raise ConfigError(f"unknown service {unknown[0]!r}; choose from {', '.join(SERVICES)}")
    return [SERVICES[name](name, settings) for name in chosen]


def worker_processes(settings: Settings) -> list[ManagedProcess]:
    """Background workers started by `streams demo` (stopped by `dev down`)."""
    run = settings.runtime.home / "run"
    return [
        ManagedProcess(p.stem, p, settings.runtime.home / "worker" / f"{p.stem}.log")
        for p in sorted(run.glob("worker*.pid"))
    ]


def up(settings: Settings, names: Iterable[str] | None = None, report: Report = print) -> None:
    """Start what is not running, then wait until every service passes its health check."""
    services = select(settings, names)
    started: list[Service] = []
    for service in services:
        if service.process.pid() is not None:
            report(f"{service.name}: already running (pid {service.process.pid()})")
            continue
        for label, port in service.ports().items():
            if port_open("127.0.0.1", port):
                raise RuntimeServiceError(
                    f"port {port} ({label}) is already in use by a process this runtime did not start; "
                    "free it or choose another port (see README, Ports)"
                )
        argv = service.prepare()
        pid = service.process.start(argv, cwd=service.home)
        report(f"{service.name}: starting (pid {pid}, log {service.process.log_file})")
        started.append(service)
    deadline = time.monotonic() + settings.runtime.start_timeout_s
    for service in services:
        _wait_healthy(service, deadline)
        report(f"{service.name}: ready at {service.address()}")


def _wait_healthy(service: Service, deadline: float) -> None:
    while True:
        if service.process.pid() is None:
            raise RuntimeServiceError(
                f"{service.name} exited during start-up: {service.process.last_log_line()[:200]} "
                f"(log: {service.process.log_file})"
            )
        if service.healthy():
            return
        if time.monotonic() > deadline:
            raise RuntimeServiceError(
                f"{service.name} did not become healthy in time (log: {service.process.log_file})"
            )
        time.sleep(1.0)


def status(settings: Settings, names: Iterable[str] | None = None) -> list[ServiceStatus]:
    result = []
    for service in select(settings, names):
        pid = service.process.pid()
        state = "stopped" if pid is None else ("running" if service.healthy() else "starting")
        result.append(
            ServiceStatus(service.name, state, pid, service.address(), str(service.process.log_file))
        )
    for worker in worker_processes(settings):
        pid = worker.pid()
        state = "stopped" if pid is None else "running"
        result.append(ServiceStatus(worker.name, state, pid, "", str(worker.log_file)))
    return result


def down(
    settings: Settings,
    names: Iterable[str] | None = None,
    *,
    wipe: bool = False,
    report: Report = print,
) -> None:
    """Stop exactly the processes this runtime started (by pid file); optionally wipe their data."""
    for worker in worker_processes(settings) if not names else []:
        if worker.stop():
            report(f"{worker.name}: stopped")
    for service in reversed(select(settings, names)):
        stopped = service.process.stop(timeout_s=60)
        report(f"{service.name}: {'stopped' if stopped else 'was not running'}")
        if wipe:
            for directory in service.data_dirs():
                shutil.rmtree(directory, ignore_errors=True)
            report(f"{service.name}: data wiped")
