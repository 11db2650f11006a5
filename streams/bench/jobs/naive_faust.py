"""Rolling CTR written the way the Faust documentation shows it: the baseline of `streams bench`.

One event at a time through an agent (``async for event in stream``), windowed tables
(``app.Table(...).tumbling(...)``) keyed by ad, and a prepared Cassandra INSERT awaited per update.
No batching, no dedupe, no watermark: what our worker's design adds is measured against this.

Simplifications (stated in docs/benchmarks.md): only the 1 min tumbling window per ad (our worker
also keeps 1 h hopping windows, campaign partials and ad x segment cells); the input is already
keyed by ad, so no ``group_by`` repartition. Faust expires windows against the *wall clock*
(``Table._del_old_keys`` compares window ends with ``time.time()``), so the bench stamps its
backlog with recent event times and keeps windows for a day: an old backlog (a replay of last
month) would lose its windows under the docs' ``expires=timedelta(hours=1)``.

    python -m streams.bench.jobs.naive_faust --topic T --group G --metrics-port P \
        --keyspace K --table bench_naive_ctr --run-id R
"""

from __future__ import annotations

import asyncio
import atexit
import time
from datetime import timedelta
from typing import Any, cast

import faust
from faust.types import EventT

from streams.bench.jobs import Latencies, dump_latencies, insert_cql, job_arguments, serve_progress
from streams.io.cassandra import connect
from streams.settings import load_settings


class AdEvent(faust.Record, serializer="json"):
    type: str
    event_id: str
    ts: int  # event time, epoch ms
    ad_id: str
    campaign_id: str
    user_id: str
    segment: str


def event_time(event: EventT | None) -> float:
    """Windows in event time: the JSON ``ts`` (ms), in the seconds Faust windows use."""
    assert event is not None
    return cast(AdEvent, event.value).ts / 1000.0


async def execute(session: Any, statement: Any, values: tuple[Any, ...]) -> None:
    """Await a driver request on the event loop (the driver answers on its own thread)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def resolve(exc: BaseException | None) -> None:
        if done.done():
            return
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)

    def ok(_: Any) -> None:
        loop.call_soon_threadsafe(resolve, None)

    def failed(exc: BaseException) -> None:
        loop.call_soon_threadsafe(resolve, exc)

    session.execute_async(statement, values).add_callbacks(ok, failed)
    await done


def main(argv: list[str] | None = None) -> None:
    args = job_arguments(__doc__ or "").parse_args(argv)
    settings = load_settings()
    _, consumed = serve_progress(args.metrics_port, "events counted and written")
    cluster, session = connect(settings.cassandra)
    insert = session.prepare(insert_cql(args.keyspace, args.table))
    latencies: Latencies = []
    atexit.register(dump_latencies, args.latency_out, latencies)

    app = faust.App(
        args.group,
        broker=";".join(f"kafka://{host}" for host in settings.kafka.bootstrap.split(",")),
        store="memory://",
        web_enabled=False,
        datadir=args.state_dir,
        topic_partitions=settings.kafka.partitions,
        consumer_auto_offset_reset="earliest",
    )
    topic = app.topic(args.topic, key_type=str, value_type=AdEvent)
    # `relative_to` (a callable giving the event time) exists on faust's WindowWrapper, not on its type.
    impressions = (
        app.Table("impressions", default=int)
        .tumbling(timedelta(minutes=1), expires=timedelta(days=1))
        .relative_to(event_time)  # type: ignore[attr-defined]
    )
    clicks = (
        app.Table("clicks", default=int)
        .tumbling(timedelta(minutes=1), expires=timedelta(days=1))
        .relative_to(event_time)  # type: ignore[attr-defined]
    )
    progress = consumed.labels(args.topic)

    @app.agent(topic)
    async def count_ctr(events: faust.StreamT[AdEvent]) -> None:
        async for event in events:
            if event.type == "click":
                clicks[event.ad_id] += 1
            else:
                impressions[event.ad_id] += 1
            window_start = event.ts - event.ts % 60_000
            row = (args.run_id, event.ad_id, window_start, impressions[event.ad_id].value(),
                   clicks[event.ad_id].value())  # fmt: skip
            await execute(session, insert, row)
            progress.inc()
            if args.latency_out:
                created_ms = events.current_event.message.timestamp * 1000  # type: ignore[union-attr]
                latencies.append((created_ms, time.time() * 1000 - created_ms))

    try:
        faust.Worker(app, loglevel="warning").execute_from_commandline()
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
