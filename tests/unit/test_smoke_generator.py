from __future__ import annotations

import orjson

from streams.events import Coordinates
from streams.smoke import logic as smoke


def test_generator_is_deterministic_for_a_seed_and_adds_the_bad_messages() -> None:
    first = list(smoke.smoke_events("r", 100, start_ms=1_700_000_000_000, seed=3, bad_every=10))
    second = list(smoke.smoke_events("r", 100, start_ms=1_700_000_000_000, seed=3, bad_every=10))
    other = list(smoke.smoke_events("r", 100, start_ms=1_700_000_000_000, seed=4, bad_every=10))
    assert first == second != other
    assert len(first) == 110
    assert sum(1 for key, _ in first if key == b"bad") == 10
    ids = [orjson.loads(v)["event_id"] for k, v in first if k != b"bad"]
    assert len(set(ids)) == 100


def test_smoke_row_carries_coordinates_and_version() -> None:
    event = {"event_id": "e", "run_id": "r", "ts": 5, "payload": "p"}
    row = smoke.smoke_row(event, Coordinates("t", 2, 9), "v3")
    assert row == {
        "run_id": "r",
        "event_id": "e",
        "ts": 5,
        "payload": "p",
        "source_partition": 2,
        "source_offset": 9,
        "pipeline_version": "v3",
    }
