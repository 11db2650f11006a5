"""The comparison jobs of `streams bench`, each a program of its own (``python -m ...``).

They compute the same rolling CTR counts as our worker (impressions and clicks per ad and 1 min
event-time window) over the same input topic, and serve the same progress counter
(``streams_events_consumed_total{topic}``, see `streams.bench.measure`) on ``--metrics-port``.
"""

from __future__ import annotations

import argparse

import orjson
from prometheus_client import CollectorRegistry, Counter, start_http_server


def job_arguments(description: str) -> argparse.ArgumentParser:
    """The options every job takes; Kafka and Cassandra come from the STREAMS_* settings."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--topic", required=True, help="the input topic (ad events keyed by ad_id)")
    parser.add_argument("--group", required=True, help="consumer group (and app id)")
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--keyspace", help="Cassandra keyspace of the result table")
    parser.add_argument("--table", help="result table: (run_id, ad_id, window_start, impressions, clicks)")
    parser.add_argument("--run-id", help="the run's partition of the result table")
    parser.add_argument("--state-dir", help="local state, if the framework keeps any")
    parser.add_argument(
        "--latency-out",
        help="at exit, write [Kafka CreateTime ms, produce-to-result ms] per event here (JSON)",
    )
    return parser


def serve_progress(port: int, meaning: str) -> tuple[CollectorRegistry, Counter]:
    """The progress counter the harness scrapes, served on ``port`` (the registry takes more)."""
    registry = CollectorRegistry()
    consumed = Counter("streams_events_consumed_total", meaning, ["topic"], registry=registry)
    start_http_server(port, "127.0.0.1", registry=registry)
    return registry, consumed


Latencies = list[tuple[float, float]]  # (Kafka CreateTime of the event in ms, its latency in ms)


def dump_latencies(path: str | None, latencies: Latencies) -> None:
    if path:
        with open(path, "wb") as out:
            out.write(orjson.dumps(latencies))


def insert_cql(keyspace: str, table: str) -> str:
    return (
        f"INSERT INTO {keyspace}.{table} (run_id, ad_id, window_start, impressions, clicks) "
        "VALUES (?, ?, ?, ?, ?)"
    )
