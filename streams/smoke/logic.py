"""The smoke pipeline's pure logic: its row, and a generator of good and deliberately bad events."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import orjson

from streams.events import Coordinates

TABLE = "smoke_events"
SCHEMA_FILE = "smoke_event.schema.json"

# Deliberately broken messages the producer can mix in, to exercise the dead-letter path.
BAD_MESSAGES = (
    b"{not json",
    b'{"run_id": "x", "ts": 1700000000000}',  # no event_id
    b'{"event_id": "e", "run_id": "x", "ts": -5}',  # negative timestamp
    b"[1, 2, 3]",
)


def smoke_row(event: dict[str, Any], at: Coordinates, pipeline_version: str) -> dict[str, Any]:
    return {
        "run_id": event["run_id"],
        "event_id": event["event_id"],
        "ts": event["ts"],
        "payload": event.get("payload"),
        "source_partition": at.partition,
        "source_offset": at.offset,
        "pipeline_version": pipeline_version,
    }


def smoke_events(
    run_id: str, count: int, *, start_ms: int, seed: int = 0, bad_every: int = 0
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs: ``count`` valid events, plus a bad one after every ``bad_every``.

    Deterministic for a seed; event time advances from ``start_ms``.
    """
    rng = random.Random(seed)
    for i in range(count):
        event_id = f"{run_id}-{i:08d}"
        ts = start_ms + i * 10 + rng.randrange(10)
        yield (
            event_id.encode(),
            orjson.dumps({"event_id": event_id, "run_id": run_id, "ts": ts, "payload": f"hello {i}"}),
        )
        if bad_every and (i + 1) % bad_every == 0:
            yield b"bad", BAD_MESSAGES[(i // bad_every) % len(BAD_MESSAGES)]
