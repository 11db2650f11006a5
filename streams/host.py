"""The worker process host: faust-streaming's app, services, timers and worker lifecycle around
the engine. The only module of the engine's side that imports Faust.

Faust's own Kafka clients are switched off (the engine consumes and produces with librdkafka in
bulk): no Faust consumer group, no internal topics; Faust runs the job as a service, the timers,
signal handling and a clean shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import faust
import mode
from faust.app.base import BootStrategy

from streams.engine.consumer import BatchConsumer
from streams.engine.job import Job

log = logging.getLogger(__name__)

Timer = tuple[float, Callable[[], Awaitable[None]]]  # interval in seconds, what to run


class EngineOnly(BootStrategy):
    """Sensors and services only: no Faust producer, consumer, conductor, agents or tables."""

    enable_kafka = False
    enable_web = False


class HostApp(faust.App):
    BootStrategy = EngineOnly


def run_host(app_id: str, datadir: Path, job: Job, consumer: BatchConsumer, timers: Sequence[Timer]) -> None:
    """Run ``job`` over ``consumer`` and the timers until the process is told to stop."""
    datadir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    app = HostApp(app_id, broker="kafka://unused:9092", web_enabled=False, datadir=str(datadir))

    class EngineService(mode.Service):
        async def on_start(self) -> None:
            self.add_future(self._run())

        async def _run(self) -> None:
            try:
                await job.run(consumer)
            except Exception as exc:  # the worker must not live on without its engine
                log.exception("the engine failed")
                await self.crash(exc)

        async def on_stop(self) -> None:
            await job.stop()

    app.service(EngineService)
    for interval, action in timers:
        app.timer(interval=interval)(_named(action))
    faust.Worker(app, loglevel="info").execute_from_commandline()


def _named(action: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    async def tick() -> None:
        try:
            await action()
        except Exception:  # a failed refresh is logged; the next tick tries again
            log.exception("timer %s failed", getattr(action, "__qualname__", action))

    tick.__name__ = tick.__qualname__ = getattr(action, "__qualname__", "timer")
    return tick
