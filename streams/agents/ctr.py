"""The CTR agent: dedupe, event-time windows and smoothing per batch; upserts and result records."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import faust

from streams.agents.common import AgentContext, ConsumerLag, coordinates, write_rows
from streams.agents.recovery import History, StateRebuilder, first_offsets
from streams.ctr.processor import AD_TABLE, CAMPAIGN_TABLE, CELL_TABLE, CellPolicy, CtrProcessor, CtrRows
from streams.ctr.smoothing import PriorSet
from streams.ctr.state import AdEvent, CtrConfig, Outcome
from streams.ctr.windows import WindowSpec, parse_duration_ms
from streams.errors import ConfigError
from streams.events import DeadLetter, Rejected, load_validator
from streams.pipelines.batch import decode_batch
from streams.settings import CtrSettings, Settings
from streams.versions import result_topic

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


def late_letter(raw: bytes, at: Any, ts: int, watermark: int | None, grace_ms: int) -> DeadLetter:
    reason = (
        f"late: event time {ts} is older than the partition watermark {watermark} minus grace {grace_ms} ms"
    )
    return DeadLetter(raw, at, Rejected("late_event", reason))


def register_ctr(app: faust.App, ctx: AgentContext) -> None:
    settings, worker, metrics = ctx.settings, ctx.settings.worker, ctx.metrics
    topic = settings.topics.ad_events
    source = app.topic(topic, key_serializer="raw", value_serializer="raw")
    results = ctx.outputs(result_topic(settings.topics.ctr_results, settings.worker.pipeline_version))
    validator = load_validator(settings.schemas_dir / SCHEMA_FILE)
    processor = make_processor(settings)
    grace_ms = processor.config.grace_ms
    lag = ConsumerLag(app, metrics)

    async def write(table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        await write_rows(ctx, table, rows)
        metrics.windows_final.labels(table).inc(sum(1 for r in rows if r["final"]))

    def fold(history: History, partition: int) -> None:
        """Replay a partition's earlier events into the state; their rows were written before."""
        for event, at, _ in decode_batch(history[topic], validator).events:
            processor.apply(AdEvent.from_json(event), at.partition)
        processor.drain()

    rebuilder = StateRebuilder(app, settings.kafka, [topic], processor.states, fold)

    @app.agent(source, name="ctr")
    async def ctr_agent(stream: Any) -> None:  # a faust.Stream; StreamT lacks take_events
        async for events in stream.take_events(worker.batch_size, within=worker.batch_timeout_s):
            await rebuilder.ensure(first_offsets(events))
            batch = decode_batch(((e.message.value, coordinates(e.message)) for e in events), validator)
            letters = list(batch.dead_letters)
            duplicates = 0
            counted: Counter[str] = Counter()
            for event, at, raw in batch.events:
                ad_event = AdEvent.from_json(event)
                watermark = (
                    processor.states[at.partition].watermark if at.partition in processor.states else None
                )
                outcome = processor.apply(ad_event, at.partition)
                if outcome is Outcome.LATE:
                    letters.append(late_letter(raw, at, ad_event.ts, watermark, grace_ms))
                elif outcome is Outcome.DUPLICATE:
                    duplicates += 1
                else:
                    counted[ad_event.type] += 1
            rows = processor.drain()
            # Durable first (Cassandra, results, dead letters), then the batch's offsets are acked.
            await asyncio.gather(
                write(AD_TABLE, rows.ads),
                write(CAMPAIGN_TABLE, rows.campaigns),
                write(CELL_TABLE, rows.cells),
            )
            await results.send(result_records(rows))
            await ctx.dead_letters.send(letters)
            late = sum(1 for letter in letters if letter.rejection.kind == "late_event")
            metrics.batch_events.observe(len(events))
            metrics.consumed.labels(topic).inc(len(events))
            metrics.processed.labels(topic).inc(len(batch.events) - late - duplicates)
            metrics.duplicates.labels(topic).inc(duplicates)
            metrics.late.labels(topic).inc(late)
            for event_type, count in counted.items():
                metrics.ctr_events.labels(event_type).inc(count)
            lag.observe(events)
            for partition, state in processor.states.items():
                if state.watermark is not None:
                    metrics.watermark.labels(topic, str(partition)).set(state.watermark / 1000)
