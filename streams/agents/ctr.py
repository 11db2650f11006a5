"""The CTR agent: dedupe, event-time windows and smoothing per batch; upserts and result records."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import faust
import mode

from streams.agents.common import AgentContext, write_rows
from streams.agents.recovery import History, StateRebuilder
from streams.ctr.processor import AD_TABLE, CAMPAIGN_TABLE, CELL_TABLE, CellPolicy, CtrProcessor, CtrRows
from streams.ctr.smoothing import PriorSet
from streams.ctr.state import AdEvent, AdEventMessage, CtrConfig, Outcome
from streams.ctr.windows import WindowSpec, parse_duration_ms
from streams.errors import ConfigError
from streams.events import Coordinates, DeadLetter, Rejected, TypedDecoder, load_validator
from streams.io.kafka_consumer import BatchConsumer, coordinates_of
from streams.settings import CtrSettings, Settings
from streams.versions import ctr_group, result_topic

if TYPE_CHECKING:
    from confluent_kafka import Message

log = logging.getLogger(__name__)

SCHEMA_FILE = "ad_event.schema.json"


def ctr_config(ctr: CtrSettings) -> CtrConfig:
    if ctr.tumbling == ctr.hopping:
        raise ConfigError("the tumbling and hopping windows need different sizes (they name the windows)")
    return CtrConfig(
        windows=(
            WindowSpec.parse(ctr.tumbling, ctr.tumbling),
            WindowSpec.parse(ctr.hopping, ctr.hopping, ctr.hop_every),
        ),
        cell_window=ctr.hopping,
        grace_ms=parse_duration_ms(ctr.grace),
        dedupe_horizon_ms=parse_duration_ms(ctr.dedupe_horizon),
    )


def make_processor(settings: Settings) -> CtrProcessor:
    ctr = settings.ctr
    if not ctr.prior_file.exists():
        raise ConfigError(f"CTR prior file not found: {ctr.prior_file}")
    return CtrProcessor(
        ctr_config(ctr),
        PriorSet.load(ctr.prior_file),
        settings.worker.pipeline_version,
        ci_level=ctr.ci_level,
        cell_policy=CellPolicy(ctr.min_cell_impressions, ctr.min_ad_impressions, ctr.backoff_strength),
    )


def result_records(rows: CtrRows) -> list[tuple[bytes, Mapping[str, Any]]]:
    """Every upserted row, tagged with its kind and keyed by its natural key (the topic is compacted)."""

    def key(*parts: object) -> bytes:
        return "|".join(str(p) for p in parts).encode()

    return [
        *(
            (
                key("ad", r["pipeline_version"], r["ad_id"], r["window"], r["window_start"]),
                {"kind": "ad", **r},
            )
            for r in rows.ads
        ),
        *(
            (
                key(
                    "campaign",
                    r["pipeline_version"],
                    r["campaign_id"],
                    r["window"],
                    r["window_start"],
                    r["source_partition"],
                ),
                {"kind": "campaign_partial", **r},
            )
            for r in rows.campaigns
        ),
        *(
            (
                key("cell", r["pipeline_version"], r["segment"], r["ad_id"], r["window"], r["window_start"]),
                {"kind": "segment_cell", **r},
            )
            for r in rows.cells
        ),
    ]


def late_letter(raw: bytes, at: Coordinates, ts: int, watermark: int, grace_ms: int) -> DeadLetter:
    reason = (
        f"late: event time {ts} is older than the partition watermark {watermark} minus grace {grace_ms} ms"
    )
    return DeadLetter(raw, at, Rejected("late_event", reason))


@dataclass
class FoldedBatch:
    """What consumed batches did: the dead letters (bad and late events) and the tallies."""

    letters: list[DeadLetter] = field(default_factory=list)
    counted: Counter[str] = field(default_factory=Counter)  # by event type
    consumed: int = 0
    duplicates: int = 0
    late: int = 0
    next_offsets: dict[int, int] = field(default_factory=dict)  # partition -> after its last message

    def add(self, other: FoldedBatch) -> None:
        self.letters += other.letters
        self.counted.update(other.counted)
        self.consumed += other.consumed
        self.duplicates += other.duplicates
        self.late += other.late
        self.next_offsets.update(other.next_offsets)


def fold_messages(
    processor: CtrProcessor, decoder: TypedDecoder[AdEventMessage], messages: Sequence[Message]
) -> FoldedBatch:
    """Decode a batch of Kafka messages, fold each partition's events in its order; a message's
    coordinates are only built for the few that become dead letters."""
    folded = FoldedBatch(consumed=len(messages))
    by_partition: dict[int, tuple[list[AdEvent], list[Message]]] = {}
    for message in messages:
        partition, value = message.partition(), message.value()
        folded.next_offsets[partition] = (message.offset() or 0) + 1  # in order within a partition
        event = decoder.decode(value)
        if isinstance(event, Rejected):
            folded.letters.append(DeadLetter(value or b"", coordinates_of(message), event))
            continue
        events, sources = by_partition.setdefault(partition, ([], []))
        events.append(event)
        sources.append(message)
    grace_ms = processor.config.grace_ms
    for partition, (events, sources) in by_partition.items():
        outcomes, late_watermarks = processor.apply_batch(events, partition)
        for i, watermark in late_watermarks.items():
            message = sources[i]
            letter = late_letter(message.value(), coordinates_of(message), events[i].ts, watermark, grace_ms)
            folded.letters.append(letter)
        folded.late += len(late_watermarks)
        folded.duplicates += outcomes.count(Outcome.DUPLICATE)
        folded.counted.update(e.type for e, o in zip(events, outcomes, strict=True) if o is Outcome.COUNTED)
    return folded


class CtrJob:
    """The CTR pipeline inside a Faust worker: a bulk consumer of the ad events (own consumer
    group), folded as they come; every flush interval the windows changed since the last flush
    are upserted once, published, dead letters sent, and only then the offsets committed.

    The flush interval is short while the job is caught up (latency) and long while it works
    through a backlog (each changed window is written once per interval, not once per batch).
    A partition about to be revoked is flushed and committed first; one lost without notice is
    forgotten, and its next owner re-reads what was not committed.
    """

    def __init__(self, ctx: AgentContext, group_id: str) -> None:
        settings = ctx.settings
        self.ctx, self.worker, self.metrics = ctx, settings.worker, ctx.metrics
        self.topic = settings.topics.ad_events
        self.results = ctx.outputs(
            result_topic(settings.topics.ctr_results, settings.worker.pipeline_version)
        )
        self.decoder = TypedDecoder(AdEventMessage, load_validator(settings.schemas_dir / SCHEMA_FILE))
        self.processor = make_processor(settings)
        self.rebuilder = StateRebuilder(
            settings.kafka, group_id, [self.topic], self.processor.states, self._fold
        )
        self.consumer = BatchConsumer(
            settings.kafka, group_id, self.topic,
            on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost,
        )  # fmt: skip
        self.pending = FoldedBatch()  # folded since the last flush: not durable yet
        self.suspended: set[int] = set()  # revoked, flushed and committed: kept if given back
        self.stopping = False
        self.stopped = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def _fold(self, history: History, partition: int) -> None:
        """Replay a partition's earlier events into the state; their rows were written before."""
        decode = self.decoder.decode
        events = [e for raw, _ in history[self.topic] if not isinstance(e := decode(raw), Rejected)]
        self.processor.apply_batch(events, partition)
        self.processor.settle(partition)  # other partitions' changes wait for the next flush

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        w = self.worker
        await self.consumer.start()
        last_flush, caught_up = 0.0, True
        try:
            while not self.stopping:
                due = last_flush + (w.flush_interval_s if caught_up else w.catchup_flush_interval_s)
                wait_s = min(max(due - time.monotonic(), 0.01), 0.5)
                messages = await self.consumer.consume(w.batch_size, wait_s)
                caught_up = len(messages) < w.batch_size
                if messages:
                    await self._take(messages)
                pending = self.pending
                if pending.consumed and (time.monotonic() >= due or len(pending.letters) >= w.batch_size):
                    await self.consumer.commit(await self._flush())
                    last_flush = time.monotonic()
        finally:
            await self.consumer.close()  # flushes and commits through `_on_revoke`
            self.stopped.set()

    async def stop(self, timeout_s: float = 60.0) -> None:
        self.stopping = True
        if self._loop is not None:
            await asyncio.wait_for(self.stopped.wait(), timeout_s)

    async def _take(self, messages: list[Message]) -> None:
        firsts: dict[tuple[str, int], int] = {}
        for message in messages:
            firsts.setdefault((self.topic, message.partition() or 0), message.offset() or 0)
        await self.rebuilder.ensure(firsts)
        folded = fold_messages(self.processor, self.decoder, messages)
        self.pending.add(folded)
        m, topic = self.metrics, self.topic
        m.batch_events.observe(len(messages))
        for partition, behind in self.consumer.lag(folded.next_offsets).items():
            m.consumer_lag.labels(topic, str(partition)).set(behind)
        for partition in folded.next_offsets:
            watermark = self.processor.states[partition].watermark
            if watermark is not None:
                m.watermark.labels(topic, str(partition)).set(watermark / 1000)

    async def _flush(self) -> dict[int, int]:
        """Make everything folded so far durable, then count it (so the counters, like those of the
        Faust agents, only count what is durable); returns the offsets that may now be committed."""
        done, self.pending = self.pending, FoldedBatch()
        rows = self.processor.drain()
        await asyncio.gather(
            self._write(AD_TABLE, rows.ads),
            self._write(CAMPAIGN_TABLE, rows.campaigns),
            self._write(CELL_TABLE, rows.cells),
        )
        await self.results.send(result_records(rows))
        await self.ctx.dead_letters.send(done.letters)
        m, topic = self.metrics, self.topic
        m.consumed.labels(topic).inc(done.consumed)
        m.processed.labels(topic).inc(sum(done.counted.values()))
        m.duplicates.labels(topic).inc(done.duplicates)
        m.late.labels(topic).inc(done.late)
        for event_type, count in done.counted.items():
            m.ctr_events.labels(event_type).inc(count)
        return done.next_offsets

    async def _write(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        await write_rows(self.ctx, table, rows)
        self.metrics.windows_final.labels(table).inc(sum(1 for r in rows if r["final"]))

    # Rebalance callbacks: on the consumer's thread, inside `consume` (the event loop is free).

    def _on_revoke(self, partitions: list[int]) -> None:
        if self._loop is None:
            return
        try:
            offsets = asyncio.run_coroutine_threadsafe(self._flush(), self._loop).result(timeout=120)
        except Exception as exc:  # the sink is down: the next owner re-reads what is not committed
            log.warning("could not flush before partitions %s were revoked: %s", partitions, exc)
            self._on_lost(partitions)
            return
        self.consumer.commit_now(offsets)
        self.suspended |= set(partitions)
        for partition in partitions:
            self._drop_series(partition)

    def _on_assign(self, partitions: list[int]) -> None:
        self.rebuilder.forget(self.suspended - set(partitions))
        self.suspended.clear()

    def _on_lost(self, partitions: list[int]) -> None:
        self.rebuilder.forget(partitions)
        for partition in partitions:
            self.pending.next_offsets.pop(partition, None)
            self._drop_series(partition)

    def _drop_series(self, partition: int) -> None:
        for gauge in (self.metrics.consumer_lag, self.metrics.watermark):
            with contextlib.suppress(KeyError):  # never reported
                gauge.remove(self.topic, str(partition))


def register_ctr(app: faust.App, ctx: AgentContext) -> None:
    """Run the CTR job as a service of the Faust worker: started and stopped with it."""
    settings = ctx.settings
    job = CtrJob(ctx, ctr_group(settings.worker.app_id, settings.worker.pipeline_version))

    class CtrService(mode.Service):
        async def on_start(self) -> None:
            self.add_future(self._run())

        async def _run(self) -> None:
            try:
                await job.run()
            except Exception as exc:  # the worker must not live on without its CTR job
                log.exception("the CTR job failed")
                await self.crash(exc)

        async def on_stop(self) -> None:
            await job.stop()

    app.service(CtrService)
