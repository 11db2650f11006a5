"""Producing generated events to Kafka at a steady rate, with progress and an honest report."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from confluent_kafka import KafkaError, KafkaException, Message

from streams.io.kafka import make_producer
from streams.settings import KafkaSettings


@dataclass(frozen=True)
class ProduceReport:
    sent: int
    failed: int
    seconds: float
    requested_rate: float | None
    first_error: str | None = None

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else float(self.sent)

    @property
    def kept_up(self) -> bool:
        """Whether the requested rate was sustained (within 5 %)."""
        return self.requested_rate is None or self.rate >= 0.95 * self.requested_rate


def produce(
    kafka: KafkaSettings,
    topic: str,
    messages: Iterable[tuple[bytes, bytes]],
    *,
    rate: float | None = None,
    on_progress: Callable[[int], None] = lambda n: None,
) -> ProduceReport:
    """Send (key, value) pairs, paced to ``rate`` messages/s (None = as fast as possible).

    Returns once every message is acknowledged by the brokers (or has definitely failed).
    """
    producer = make_producer(kafka)
    failures: list[KafkaError] = []

    def delivered(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failures.append(error)

    started = time.monotonic()
    sent = 0
    for key, value in messages:
        if rate:
            # Pace against the schedule, not per message, so that short stalls are caught up.
            ahead = started + sent / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:  # local queue full: let the brokers drain it
                producer.poll(0.05)
        sent += 1
        if sent % 1000 == 0:
            producer.poll(0)
            on_progress(1000)
    on_progress(sent % 1000)
    producer.flush()
    seconds = time.monotonic() - started
    first_error = failures[0].str() if failures else None
    return ProduceReport(sent - len(failures), len(failures), seconds, rate, first_error)


class Delivery(NamedTuple):
    """One produced message: ``error`` None once acknowledged, at ``partition`` and ``offset``."""

    error: str | None
    partition: int | None = None
    offset: int | None = None


def produce_each(
    kafka: KafkaSettings,
    topic: str,
    messages: Sequence[tuple[bytes | None, bytes | None]],
    *,
    overrides: Mapping[str, str | int | float | bool] | None = None,
    timeout_s: float = 120,
) -> list[Delivery]:
    """Send (key, value) pairs, either of which may be None, and return each one's delivery in
    order: where it landed once acknowledged, else Kafka's error (a message too large for the
    producer or the broker is an outcome here, not an exception). ``overrides`` go to the producer."""
    producer = make_producer(kafka, **(overrides or {}))
    outcomes = [Delivery(f"not acknowledged within {timeout_s:.0f}s")] * len(messages)

    def delivered_to(index: int) -> Callable[[KafkaError | None, Message], None]:
        def delivered(error: KafkaError | None, message: Message) -> None:
            outcomes[index] = (
                Delivery(error.str())
                if error is not None
                else Delivery(None, message.partition(), message.offset())
            )

        return delivered

    for index, (key, value) in enumerate(messages):
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=delivered_to(index))
                break
            except BufferError:  # local queue full: let the brokers drain it
                producer.poll(0.05)
            except KafkaException as exc:  # refused before sending, e.g. over message.max.bytes
                outcomes[index] = Delivery(exc.args[0].str())
                break
        producer.poll(0)
    producer.flush(timeout_s)
    return outcomes
