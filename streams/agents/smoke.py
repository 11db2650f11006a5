"""The smoke agent: one Cassandra row per valid event."""

from __future__ import annotations

from typing import Any

import faust

from streams.agents.common import AgentContext, ConsumerLag, coordinates, write_rows
from streams.events import load_validator
from streams.pipelines import smoke
from streams.pipelines.batch import decode_batch


def register_smoke(app: faust.App, ctx: AgentContext) -> None:
    settings, worker, metrics = ctx.settings, ctx.settings.worker, ctx.metrics
    source = app.topic(settings.topics.smoke, key_serializer="raw", value_serializer="raw")
    validator = load_validator(settings.schemas_dir / smoke.SCHEMA_FILE)
    topic = settings.topics.smoke
    lag = ConsumerLag(app, metrics)

    @app.agent(source, name="smoke")
    async def smoke_agent(stream: Any) -> None:  # a faust.Stream; StreamT lacks take_events
        async for events in stream.take_events(worker.batch_size, within=worker.batch_timeout_s):
            batch = decode_batch(((e.message.value, coordinates(e.message)) for e in events), validator)
            rows = [smoke.smoke_row(ev, at, worker.pipeline_version) for ev, at, _ in batch.events]
            await write_rows(ctx, smoke.TABLE, rows)
            await ctx.dead_letters.send(batch.dead_letters)
            metrics.batch_events.observe(len(events))
            metrics.consumed.labels(topic).inc(len(events))
            metrics.processed.labels(topic).inc(len(batch.events))
            lag.observe(events)
