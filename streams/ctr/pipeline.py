"""The CTR pipeline the engine drives: dedupe, event-time windows and smoothing per batch."""

from __future__ import annotations

from collections import Counter
from typing import ClassVar

from streams.ctr.attribution import PendingClick
from streams.ctr.events import AdEventMessage
from streams.ctr.processor import AD_TABLE, CAMPAIGN_TABLE, CELL_TABLE, CtrProcessor, CtrRows
from streams.ctr.state import Outcome, PartitionState
from streams.engine.pipeline import (
    Batch,
    Drained,
    Folded,
    Message,
    PartitionStates,
    Record,
    coordinates_of,
    decode_all,
)
from streams.events import Coordinates, DeadLetter, Rejected, TypedDecoder, Validator
from streams.tables import of_pipeline

SCHEMA_FILE = "ad_event.schema.json"
TABLES = of_pipeline("ctr")


def result_records(rows: CtrRows) -> list[Record]:
    """Every upserted row, tagged with its kind and keyed by its natural key (the topic is compacted)."""

    def key(*parts: object) -> bytes:
        return "|".join(str(p) for p in parts).encode()

    records: list[Record] = []
    for r in rows.ads:
        records.append((key("ad", r["pipeline_version"], r["ad_id"], r["window"], r["window_start"]),
                        {"kind": "ad", **r}))  # fmt: skip
    for r in rows.campaigns:
        k = key("campaign", r["pipeline_version"], r["campaign_id"], r["window"], r["window_start"],
                r["source_partition"])  # fmt: skip
        records.append((k, {"kind": "campaign_partial", **r}))
    for r in rows.cells:
        k = key("cell", r["pipeline_version"], r["segment"], r["ad_id"], r["window"], r["window_start"])
        records.append((k, {"kind": "segment_cell", **r}))
    return records


def late_letter(message: Message, ts: int, watermark: int, grace_ms: int) -> DeadLetter:
    reason = (
        f"late: event time {ts} is older than the partition watermark {watermark} minus grace {grace_ms} ms"
    )
    return DeadLetter(message.value() or b"", coordinates_of(message), Rejected("late_event", reason))


def unattributed_letter(click: PendingClick, watermark: int, grace_ms: int) -> DeadLetter:
    event = click.event
    reason = (
        f"unattributed click: its impression {event.impression_id} was not counted in this partition "
        f"before the watermark {watermark} passed the click's time {event.ts} plus grace {grace_ms} ms"
    )
    return DeadLetter(click.raw, click.coordinates, Rejected("unattributed_click", reason))


class CtrPipeline(PartitionStates):
    stateful = True
    name = "ctr"
    tables: ClassVar[dict[str, tuple[str, ...]]] = TABLES
    state_type = PartitionState

    def __init__(self, processor: CtrProcessor, validator: Validator, topic: str, results_topic: str) -> None:
        self.processor = processor
        self.decoder = TypedDecoder(AdEventMessage, validator)
        self.topic, self.results_topic = topic, results_topic
        self.topics = (topic,)

    def fold(self, partition: int, batch: Batch, *, replay: bool = False) -> Folded:
        """Decode, then fold the partition's events in its order; a message's coordinates are only
        built for the few that become dead letters."""
        folded = Folded()
        events, sources = decode_all(self.decoder.decode, batch.get(self.topic, ()), folded.letters)

        def origin(i: int) -> tuple[bytes, Coordinates]:
            return sources[i].value() or b"", coordinates_of(sources[i])

        outcomes, late_watermarks, attributed_later, unattributed = self.processor.apply_batch(
            events, partition, origin
        )
        if replay:
            self.processor.settle(partition)
            return Folded()
        grace_ms = self.processor.config.grace_ms
        for i, watermark in late_watermarks.items():
            folded.letters.append(late_letter(sources[i], events[i].ts, watermark, grace_ms))
        for click, watermark in unattributed:
            folded.letters.append(unattributed_letter(click, watermark, grace_ms))
        counted: Counter[str] = Counter(
            e.type for e, o in zip(events, outcomes, strict=True) if o is Outcome.COUNTED
        )
        counted["click"] += attributed_later
        tallies = folded.tallies
        tallies[f"processed:{self.topic}"] += sum(counted.values())
        tallies[f"duplicate:{self.topic}"] += outcomes.count(Outcome.DUPLICATE)
        tallies[f"late:{self.topic}"] += len(late_watermarks)
        for event_type, count in counted.items():
            tallies[f"ctr_event:{event_type}"] += count
        return folded

    def drain(self) -> Drained:
        rows = self.processor.drain()
        tables = {AD_TABLE: "ads", CAMPAIGN_TABLE: "campaigns", CELL_TABLE: "cells"}
        drained = Drained(
            rows={table: getattr(rows, kind) for table, kind in tables.items()},
            records={self.results_topic: result_records(rows)} if len(rows) else {},
            sources={table: rows.sources.get(kind, []) for table, kind in tables.items()},
        )
        for table, table_rows in drained.rows.items():
            if table_rows:
                drained.tallies[f"windows_final:{table}"] += sum(1 for r in table_rows if r["final"])
        return drained
