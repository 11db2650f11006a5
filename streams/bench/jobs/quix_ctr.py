"""Rolling CTR with Quix Streams' own API: the second comparison job of `streams bench`.

``Application`` -> ``app.dataframe(topic)`` -> a 1 min event-time tumbling window per message key
(the ad) with ``.agg(impressions=Sum(...), clicks=Sum(...))`` -> ``.current()`` -> a
``BatchingSink`` that upserts the newest value of every window of a checkpoint into Cassandra.
Event time is the JSON ``ts`` (a timestamp extractor), grace 1 min like our worker.

``.current()`` rather than ``.final()``: Quix closes a window only when a later message *of the
same key* moves past its end plus grace, so at the end of a backlog the newest windows of every ad
would never be emitted by ``.final()``. Checkpoints every 10,000 messages or 1 s (``commit_every``,
``commit_interval``), the same bounds as our worker's batches; offsets are committed right after
the sink has flushed. RocksDB state with changelog topics, as Quix sets it up by default.

    python -m streams.bench.jobs.quix_ctr --topic T --group G --metrics-port P \
        --keyspace K --table bench_quix_ctr --run-id R --state-dir DIR
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from cassandra.concurrent import execute_concurrent_with_args
from quixstreams import Application
from quixstreams.dataframe.windows.aggregations import Last, Sum
from quixstreams.sinks import BatchingSink, SinkBatch

from streams.bench.jobs import Latencies, dump_latencies, insert_cql, job_arguments, serve_progress
from streams.io.cassandra import connect
from streams.settings import load_settings


class CassandraCtrSink(BatchingSink):
    """Upserts the newest value of each (ad, window) of a checkpoint, then counts its events done."""

    def __init__(self, session: Any, statement: Any, run_id: str, progress: Any, latencies: Latencies | None):
        super().__init__()
        self._session, self._statement, self._run_id = session, statement, run_id
        self._progress, self._latencies = progress, latencies

    def write(self, batch: SinkBatch) -> None:
        newest: dict[tuple[str, int], Any] = {}
        for item in batch:  # one item per input event (`.current()`), in offset order
            newest[(item.key.decode(), item.value["start"])] = item.value
        rows = [(self._run_id, ad, start, w["impressions"], w["clicks"]) for (ad, start), w in newest.items()]
        execute_concurrent_with_args(
            self._session, self._statement, rows, concurrency=64, raise_on_first_error=True
        )
        self._progress.inc(batch.size)
        if self._latencies is not None:
            now_ms = time.time() * 1000
            self._latencies.extend((i.value["created_ms"], now_ms - i.value["created_ms"]) for i in batch)


def main(argv: list[str] | None = None) -> None:
    args = job_arguments(__doc__ or "").parse_args(argv)
    settings = load_settings()
    _, consumed = serve_progress(args.metrics_port, "events counted and written")
    cluster, session = connect(settings.cassandra)
    latencies: Latencies | None = [] if args.latency_out else None

    def event_time(value: Any, headers: Any, timestamp: int, timestamp_type: Any) -> int:
        if latencies is not None:
            value["created_ms"] = timestamp  # the Kafka CreateTime, for the latency scenario only
        return int(value["ts"])

    app = Application(
        broker_address=settings.kafka.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_interval=1.0,
        commit_every=10_000,
        state_dir=args.state_dir,
        loglevel="WARNING",
    )
    topic = app.topic(args.topic, value_deserializer="json", timestamp_extractor=event_time)
    sdf = app.dataframe(topic)
    sdf = sdf.apply(
        lambda e: {"impressions": int(e["type"] == "impression"), "clicks": int(e["type"] == "click"),
                   "created_ms": e.get("created_ms")}
    )  # fmt: skip
    aggregations: dict[str, Any] = {"impressions": Sum("impressions"), "clicks": Sum("clicks")}
    if latencies is not None:
        aggregations["created_ms"] = Last("created_ms")
    windows = sdf.tumbling_window(timedelta(minutes=1), grace_ms=timedelta(minutes=1)).agg(**aggregations)
    statement = session.prepare(insert_cql(args.keyspace, args.table))
    windows.current().sink(
        CassandraCtrSink(session, statement, args.run_id, consumed.labels(args.topic), latencies)
    )
    try:
        app.run()
    finally:
        dump_latencies(args.latency_out, latencies or [])
        cluster.shutdown()


if __name__ == "__main__":
    main()
