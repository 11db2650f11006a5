from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.ctr.windows import WindowSpec, parse_duration_ms


def test_durations() -> None:
    assert parse_duration_ms("1m") == 60_000
    assert parse_duration_ms("90s") == 90_000
    assert parse_duration_ms("1h") == 3_600_000
    for bad in ("", "1", "0m", "1y", "-1m"):
        with pytest.raises(ValueError):
            parse_duration_ms(bad)


@given(st.integers(0, 4_000_000_000_000), st.sampled_from([(60_000, 60_000), (3_600_000, 300_000)]))
def test_every_window_that_contains_an_event_is_found(ts: int, size_step: tuple[int, int]) -> None:
    size, step = size_step
    spec = WindowSpec("w", size, step)
    starts = spec.starts(ts)
    assert len(starts) == size // step
    assert all(s <= ts < spec.end(s) and s % step == 0 for s in starts)


def test_hopping_size_must_be_a_multiple_of_the_step() -> None:
    with pytest.raises(ValueError):
        WindowSpec("w", 3_600_000, 7 * 60_000)
