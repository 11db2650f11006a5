"""What the engine asks of a pipeline, and what a pipeline hands back at a checkpoint."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import msgspec

from streams.events import Coordinates, DeadLetter, Rejected


class Message(Protocol):
    """The part of a consumed Kafka message a pipeline reads (``confluent_kafka.Message``)."""

    def value(self) -> bytes | None: ...
    def key(self) -> bytes | None: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def timestamp(self) -> tuple[int, int]: ...


def coordinates_of(message: Message) -> Coordinates:
    kind, timestamp = message.timestamp()
    return Coordinates(
        topic=message.topic() or "",
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        timestamp_ms=timestamp if kind else None,
        key=message.key(),
    )


def decode_all(
    decode: Callable[[bytes | None], Any], messages: Iterable[Message], letters: list[DeadLetter]
) -> tuple[list[Any], list[Message]]:
    """Decode messages in order: the events and the messages they came from; whatever ``decode``
    rejects goes to ``letters`` (coordinates are built only for those few)."""
    events: list[Any] = []
    sources: list[Message] = []
    for message in messages:
        value = message.value()
        event = decode(value)
        if isinstance(event, Rejected):
            letters.append(DeadLetter(value or b"", coordinates_of(message), event))
        else:
            events.append(event)
            sources.append(message)
    return events, sources


Batch = Mapping[str, Sequence[Message]]  # topic -> one partition's messages, in offset order
Record = tuple[bytes, Mapping[str, Any]]  # key, JSON value


def routed_key(partition: int, key: str) -> bytes:
    """The key of a record bound for ``partition`` of a routed topic (an internal topic between two
    stages of a pipeline, whose records must land on a partition the producer chooses, whatever
    the client's partitioner): ``b"<partition>/<key>"``."""
    return f"{partition}/{key}".encode()


def route_of(key: bytes) -> int:
    """The partition a `routed_key` names."""
    return int(key[: key.index(b"/")])


@dataclass
class Drained:
    """Everything a pipeline changed since its last drain: rows to upsert per table, records to
    publish per topic, and drain-time tallies (e.g. ``"windows_final:ctr_ad_windows"``)."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    records: dict[str, list[Record]] = field(default_factory=dict)
    tallies: Counter[str] = field(default_factory=Counter)
    # The source partition of each row (same order), for the rows' write timestamps (fencing:
    # `tables.FENCE_BASE`); a table without it is written at the sink's own time.
    sources: dict[str, list[int]] = field(default_factory=dict)
    stamps: dict[str, list[int]] = field(default_factory=dict)  # set by the engine from `sources`

    def put(self, table: str, rows: Sequence[dict[str, Any]], partition: int) -> None:
        self.rows.setdefault(table, []).extend(rows)
        self.sources.setdefault(table, []).extend([partition] * len(rows))

    def add(self, other: Drained) -> None:
        for table, rows in other.rows.items():
            self.rows.setdefault(table, []).extend(rows)
        for fields, theirs in ((self.sources, other.sources), (self.stamps, other.stamps)):
            for table, values in theirs.items():
                fields.setdefault(table, []).extend(values)
        for topic, records in other.records.items():
            self.records.setdefault(topic, []).extend(records)
        self.tallies.update(other.tallies)


@dataclass
class Folded:
    """What folding one partition's batch did: dead letters, tallies for the metrics observer
    (``name -> count``, e.g. ``"duplicate:ad-events"``) and observations (``name -> values``)."""

    letters: list[DeadLetter] = field(default_factory=list)
    tallies: Counter[str] = field(default_factory=Counter)
    observations: dict[str, list[float]] = field(default_factory=dict)

    def add(self, other: Folded) -> None:
        self.letters += other.letters
        self.tallies.update(other.tallies)
        for name, values in other.observations.items():
            self.observations.setdefault(name, []).extend(values)


class Pipeline(Protocol):
    """A small pure object the engine drives. State is per source partition number; the
    pipeline's topics are co-partitioned (partition i of each is folded together)."""

    name: str
    stateful: bool  # False: nothing to rebuild when a partition is taken over

    @property
    def topics(self) -> tuple[str, ...]:
        """The co-partitioned source topics, in the order a partition's batch is folded."""
        ...

    @property
    def tables(self) -> Mapping[str, tuple[str, ...]]:
        """Result table -> its primary-key columns (for the in-memory sink)."""
        ...

    def fold(self, partition: int, batch: Batch, *, replay: bool = False) -> Folded:
        """Fold one partition's messages into the state: the messages it cannot use and the
        tallies. ``replay``: a rebuild from the log, whose rows were written before (discarded)."""
        ...

    def drain(self) -> Drained:
        """Rows, records and tallies of everything folded since the last drain."""
        ...

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the state of partitions this worker no longer owns."""
        ...

    def watermark(self, partition: int) -> int | None:
        """The partition's event-time watermark (ms), if any."""
        ...

    @property
    def snapshot_format(self) -> str:
        """Names the layout `snapshot` writes: a snapshot of another layout is never restored."""
        ...

    def snapshot(self, partition: int) -> bytes | None:
        """The partition's state as bytes (None: nothing to keep), right after a drain."""
        ...

    def restore(self, partition: int, data: bytes) -> None:
        """Replace the partition's state with one `snapshot` returned (raises if it cannot)."""
        ...


async def fold_prepared(pipeline: Pipeline, partition: int, batch: Batch, *, replay: bool) -> Folded:
    """``pipeline.fold``, after the pipeline's optional ``async prepare(partition, batch)``: the
    reads a fold needs (e.g. archived rows a label joins), done before the pure fold."""
    prepare = getattr(pipeline, "prepare", None)
    if prepare is not None:
        await prepare(partition, batch)
    return pipeline.fold(partition, batch, replay=replay)


_ADDRESS = re.compile(r" at 0x[0-9a-f]+")  # default factories' addresses: not part of a layout


class PartitionStates:
    """`forget`, `watermark` and snapshots for a pipeline whose processor keeps its state in
    ``processor.states`` (partition -> a ``state_type`` with a ``watermark``).

    A snapshot is the state in msgpack; decoding is typed (it builds ``state_type`` and its
    fields' classes, validating every value, and runs no code), and the format names a digest of
    the state's type tree, so a snapshot taken by code with another state layout is refused.
    """

    processor: Any
    name: str
    state_type: ClassVar[type]

    @property
    def snapshot_format(self) -> str:
        layout = _ADDRESS.sub("", repr(msgspec.inspect.type_info(self.state_type)))
        return f"{self.name}/{hashlib.sha256(layout.encode()).hexdigest()[:16]}"

    def snapshot(self, partition: int) -> bytes | None:
        state = self.processor.states.get(partition)
        return None if state is None else msgspec.msgpack.encode(state)

    def restore(self, partition: int, data: bytes) -> None:
        self.processor.states[partition] = msgspec.msgpack.decode(data, type=self.state_type)

    def forget(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self.processor.states.pop(partition, None)

    def watermark(self, partition: int) -> int | None:
        state = self.processor.states.get(partition)
        return state.watermark if state is not None else None
