"""The ceiling of one Python process: a confluent-kafka consumer that only polls and decodes.

No state, no windows, no writes: ``consume()`` batches of up to 1,000 messages, ``orjson.loads``
each one and tally its type (the tally is what the bench checks). Offsets are auto-committed.

    python -m streams.bench.jobs.raw_ceiling --topic T --group G --metrics-port P
"""

from __future__ import annotations

import signal
import time
from collections import Counter as Tally
from typing import Any

import orjson
from confluent_kafka import Consumer
from prometheus_client import Counter

from streams.bench.jobs import Latencies, dump_latencies, job_arguments, serve_progress
from streams.io.kafka import client_config
from streams.settings import load_settings


def main(argv: list[str] | None = None) -> None:
    args = job_arguments(__doc__ or "").parse_args(argv)
    settings = load_settings()
    registry, consumed = serve_progress(args.metrics_port, "events decoded")
    decoded = Counter("bench_events_decoded_total", "decoded events by type", ["type"], registry=registry)
    consumer = Consumer(
        {**client_config(settings.kafka), "group.id": args.group, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([args.topic])
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    progress = consumed.labels(args.topic)
    latencies: Latencies = []
    try:
        while not stopping:
            messages = consumer.consume(1000, timeout=0.01)
            tally: Tally[str] = Tally()
            for message in messages:
                if message.error() is None:
                    event: dict[str, Any] = orjson.loads(message.value() or b"null")
                    tally[event["type"]] += 1
            if args.latency_out:
                now_ms = time.time() * 1000
                latencies.extend(
                    (m.timestamp()[1], now_ms - m.timestamp()[1]) for m in messages if not m.error()
                )
            for kind, count in tally.items():
                decoded.labels(kind).inc(count)
            progress.inc(sum(tally.values()))
    finally:
        consumer.close()
        dump_latencies(args.latency_out, latencies)


if __name__ == "__main__":
    main()
