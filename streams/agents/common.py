"""What every agent shares: message coordinates, the dead-letter output and its wiring."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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


@dataclass(frozen=True)
class AgentContext:
    settings: Settings
    sink: Sink
    metrics: PipelineMetrics
    dead_letters: DeadLetterOutput
    outputs: Callable[[str], KafkaOutput]  # topic name -> output
    session: Any = None  # a Cassandra session, for agents that read back (cohort metrics)
