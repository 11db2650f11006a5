"""The checkpoint: the one durable order of a flush, as a named object tested step by step.

1. rows upserted in Cassandra (the sink returns once they are acknowledged);
2. result records acknowledged by Kafka;
3. dead letters acknowledged by Kafka (or, refused for good, kept in the ``dead_letters`` table);
4. offsets committed.

A crash between any two steps re-reads everything after the last commit: rows are upserts under
natural keys and records are keyed, so a repeat overwrites and nothing is counted twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from streams.engine.pipeline import Drained, Folded, Record
from streams.errors import RuntimeServiceError
from streams.events import DEAD_LETTER_MIN_BYTES, DeadLetter
from streams.sink import Sink
from streams.tables import DEAD_LETTERS

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]


class Refusal(Protocol):
    """Why Kafka did not take a record (``confluent_kafka.KafkaError``)."""

    def str(self) -> str: ...


class Output(Protocol):
    async def publish(self, records: Sequence[Record]) -> Mapping[int, Refusal]: ...


class CheckpointObserver(Protocol):
    def rows_written(self, table: str, count: int, seconds: float) -> None: ...
    def record_refused(self, topic: str, reason: str) -> None: ...
    def letter_fallback(self, letter: DeadLetter, reason: str) -> None: ...
    def letter_failure(self, letter: DeadLetter, reason: str) -> None: ...
    def checkpointed(self, pending: Pending) -> None: ...


@dataclass
class Pending:
    """Everything folded since the last checkpoint: not durable yet."""

    folded: Folded = field(default_factory=Folded)
    drained: Drained = field(default_factory=Drained)
    consumed: Counter[str] = field(default_factory=Counter)  # by topic
    offsets: dict[TopicPartition, int] = field(default_factory=dict)  # next offset to read
    timestamps: dict[str, list[int]] = field(default_factory=dict)  # topic -> Kafka times (ms)

    def add(self, other: Pending) -> None:
        self.folded.add(other.folded)
        self.drained.add(other.drained)
        self.consumed.update(other.consumed)
        self.offsets.update(other.offsets)
        for topic, times in other.timestamps.items():
            self.timestamps.setdefault(topic, []).extend(times)


class Checkpoint:
    """``commit(pending, commit_offsets)`` makes ``pending`` durable in the fixed order above.

    Transient Kafka refusals are retried with capped backoff, holding the checkpoint (and so
    consumption), like the Cassandra sink does during an outage. A result record refused for good
    is logged and counted (its row is in Cassandra); a dead letter refused for good goes to the
    ``dead_letters`` table, and if that fails too, a letter with coordinates only is sent. A record
    of a ``required`` topic (one a later stage reads: it is state, not a result) refused for good
    fails the checkpoint: nothing is committed, and the worker stops saying why.
    """

    def __init__(
        self,
        sink: Sink,
        outputs: Callable[[str], Output],
        dead_letter_topic: str,
        pipeline_version: str,
        observer: CheckpointObserver,
        *,
        dead_letter_max_bytes: int,
        is_transient: Callable[[Any], bool],
        required: Collection[str] = (),
    ) -> None:
        self.sink, self.outputs, self.observer = sink, outputs, observer
        self.required = frozenset(required)
        self.dead_letter_topic = dead_letter_topic
        self.version = pipeline_version
        self.max_bytes = dead_letter_max_bytes
        self.is_transient = is_transient

    async def commit(
        self, pending: Pending, commit_offsets: Callable[[dict[TopicPartition, int]], Awaitable[Any]]
    ) -> None:
        await self.write_rows(pending.drained.rows, pending.drained.stamps)
        await self.publish_records(pending.drained.records)
        await self.send_letters(pending.folded.letters)
        await commit_offsets(pending.offsets)
        self.observer.checkpointed(pending)

    async def write_rows(
        self, rows: Mapping[str, Sequence[Mapping[str, Any]]], stamps: Mapping[str, Sequence[int]]
    ) -> None:
        """Each table's rows, at their write timestamps where the pipeline gave their partitions."""
        await asyncio.gather(
            *(self._write(table, batch, stamps.get(table)) for table, batch in rows.items() if batch)
        )

    async def _write(
        self, table: str, rows: Sequence[Mapping[str, Any]], stamps: Sequence[int] | None
    ) -> None:
        started = time.perf_counter()
        await self.sink.write(table, rows, stamps)
        self.observer.rows_written(table, len(rows), time.perf_counter() - started)

    async def publish_records(self, records: Mapping[str, Sequence[Record]]) -> None:
        """Every topic's records at once: one round trip to Kafka, not one per topic."""
        await asyncio.gather(
            *(self._publish_records(topic, batch) for topic, batch in records.items() if batch)
        )

    async def _publish_records(self, topic: str, batch: Sequence[Record]) -> None:
        refused = await self._publish(topic, batch)
        if refused and topic in self.required:
            index, error = next(iter(refused.items()))
            what = f"{len(refused)} records to {topic} refused by Kafka for good"
            raise RuntimeServiceError(
                f"{what} (the next stage needs them): {batch[index][0][:200]!r}: {error}"
            )
        for index, error in refused.items():
            log.error("result record %s refused by Kafka for good: %s", batch[index][0][:200], error)
            self.observer.record_refused(topic, error)

    async def send_letters(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        records = [(str(x.coordinates).encode(), x.to_record(self.version, self.max_bytes)) for x in letters]
        refused = await self._publish(self.dead_letter_topic, records)
        for index, reason in refused.items():
            await self._fall_back(letters[index], reason)

    async def _fall_back(self, letter: DeadLetter, reason: str) -> None:
        try:
            await self.sink.write(DEAD_LETTERS.name, [letter.to_row(self.version)])
            log.error("dead letter %s refused by Kafka (%s): kept in table %s",
                      letter.coordinates, reason, DEAD_LETTERS.name)  # fmt: skip
            self.observer.letter_fallback(letter, reason)
            return
        except Exception as exc:  # the fallback failed too: a letter with coordinates only
            log.error(
                "dead letter %s refused by Kafka (%s) and Cassandra (%s)", letter.coordinates, reason, exc
            )
        record = letter.to_record(self.version, DEAD_LETTER_MIN_BYTES)  # size and sha256 of the original
        record["raw_unavailable"] = f"refused by Kafka ({reason[:200]}) and by the fallback table"
        refused = await self._publish(self.dead_letter_topic, [(str(letter.coordinates).encode(), record)])
        if refused:
            log.error("dead letter %s lost from every output; reason %s",
                      letter.coordinates, letter.rejection.reason[:500])  # fmt: skip
        self.observer.letter_failure(letter, reason)

    async def _publish(self, topic: str, records: Sequence[Record]) -> dict[int, str]:
        """Publish, retrying transient refusals for ever (capped backoff); returns permanent ones."""
        output, todo = self.outputs(topic), list(range(len(records)))
        permanent: dict[int, str] = {}
        attempt = 0
        while todo:
            refused = await output.publish([records[i] for i in todo])
            retry = []
            for position, error in refused.items():
                if self.is_transient(error):
                    retry.append(todo[position])
                else:
                    permanent[todo[position]] = error.str()
            todo, attempt = retry, attempt + 1
            if todo:
                log.warning("Kafka refused %d records to %s for now (attempt %d), holding the checkpoint",
                            len(todo), topic, attempt)  # fmt: skip
                await asyncio.sleep(min(0.1 * 2 ** min(attempt, 6), 5.0))
        return permanent
