"""What every agent shares: message coordinates, the dead-letter output and its wiring."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import faust

from streams.events import Coordinates, DeadLetter
from streams.metrics import PipelineMetrics
from streams.settings import Settings
from streams.sink import Sink

log = logging.getLogger(__name__)


def coordinates(message: Any) -> Coordinates:
    timestamp = message.timestamp
    return Coordinates(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=int(timestamp * 1000) if timestamp else None,
        key=message.key,
    )


class KafkaOutput(Protocol):
    """Where an agent publishes records: `send` returns once Kafka has acknowledged them all."""

    async def send(self, records: Sequence[tuple[bytes, Mapping[str, Any]]]) -> None: ...


class DeadLetterOutput:
    """Dead letters go to their topic with reason and coordinates, and are counted."""

    def __init__(self, output: KafkaOutput, pipeline_version: str, metrics: PipelineMetrics) -> None:
        self._output = output
        self._version = pipeline_version
        self._metrics = metrics

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        for letter in letters:
            log.info("dead letter %s: %s", letter.coordinates, letter.rejection.reason)
            self._metrics.dead_lettered.labels(letter.coordinates.topic, letter.rejection.kind).inc()
        await self._output.send(
            [(str(letter.coordinates).encode(), letter.to_record(self._version)) for letter in letters]
        )


class ConsumerLag:
    """Records behind the head per source partition, set after each batch: the high watermark the
    consumer last fetched minus the offset after the batch's newest message there. A revoked
    partition's series is removed (its new owner reports it)."""

    def __init__(self, app: faust.App, metrics: PipelineMetrics) -> None:
        self._app = app
        self._gauge = metrics.consumer_lag
        self._reported: set[tuple[str, int]] = set()
        app.on_partitions_revoked.connect(cast(Any, self._on_revoked))  # mode's handler type is stricter

    async def _on_revoked(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        revoked: set[Any] = args[0] if args else kwargs.get("revoked", set())
        for tp in revoked:
            if (tp.topic, tp.partition) in self._reported:
                self._reported.discard((tp.topic, tp.partition))
                self._gauge.remove(tp.topic, str(tp.partition))

    def observe(self, events: Iterable[Any]) -> None:
        newest: dict[Any, int] = {}
        for event in events:
            message = event.message
            newest[message.tp] = max(newest.get(message.tp, -1), message.offset)
        for tp, offset in newest.items():
            try:
                highwater = self._app.consumer.highwater(tp)
            except AssertionError:  # aiokafka asserts the assignment: revoked since the fetch
                continue
            if highwater is not None:  # None until a fetch response for the partition arrived
                self._gauge.labels(tp.topic, str(tp.partition)).set(max(highwater - offset - 1, 0))
                self._reported.add((tp.topic, tp.partition))


@dataclass(frozen=True)
class AgentContext:
    settings: Settings
    sink: Sink
    metrics: PipelineMetrics
    dead_letters: DeadLetterOutput
    outputs: Callable[[str], KafkaOutput]  # topic name -> output
    session: Any = None  # a Cassandra session, for agents that read back (cohort metrics)


async def write_rows(ctx: AgentContext, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Upsert rows through the sink, timed and counted per table."""
    started = time.perf_counter()
    await ctx.sink.write(table, rows)
    ctx.metrics.sink_write_seconds.labels(table).observe(time.perf_counter() - started)
    ctx.metrics.rows_written.labels(table).inc(len(rows))
