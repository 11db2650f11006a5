"""Every CTR time rule at its exact boundary, one case in and one out: window ends, lateness at
watermark - grace, dedupe at the horizon (and its trim), finality at end + grace."""

from __future__ import annotations

import pytest

from streams.ctr.events import AdEvent
from streams.ctr.state import CtrConfig, Outcome, PartitionState, apply, apply_batch, drain
from streams.ctr.windows import WindowSpec, parse_duration_ms

MIN = 60_000
HOUR = 60 * MIN
GRACE = 2 * MIN
HORIZON = 10 * MIN
CONFIG = CtrConfig(
    windows=(WindowSpec("1m", MIN, MIN), WindowSpec("1h", HOUR, 5 * MIN)),
    cell_window="1h",
    grace_ms=GRACE,
    dedupe_horizon_ms=HORIZON,
)
T0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR


def ev(event_id: str, ts: int, kind: str = "impression") -> AdEvent:
    return AdEvent(event_id, kind, ts, "a1", "c1", "s1")


@pytest.mark.parametrize(
    ("text", "ms"),
    [("1ms", 1), ("90s", 90_000), ("1m", MIN), ("2h", 2 * HOUR), ("1d", 86_400_000), (" 5m ", 5 * MIN)],
)
def test_durations_in_every_unit(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "1", "0m", "1y", "-1m", "m", "1.5m", "x1m", "1mx", "1 m"])
def test_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration_ms(text)


def test_window_specs_parse_and_refuse_a_size_that_is_not_a_multiple_of_the_step() -> None:
    assert WindowSpec.parse("1h", "1h", "5m") == WindowSpec("1h", HOUR, 5 * MIN)
    assert WindowSpec.parse("1m", "1m") == WindowSpec("1m", MIN, MIN)
    assert WindowSpec.parse("1m", "1m", "") == WindowSpec("1m", MIN, MIN)
    for size, step in [(0, 1), (1, 0), (-2, 1), (2, -1), (3, 2)]:
        with pytest.raises(ValueError, match="positive multiple"):
            WindowSpec("w", size, step)
    WindowSpec("w", 1, 1)  # the smallest there is


def test_a_window_holds_its_start_and_not_its_end() -> None:
    tumbling, hopping = CONFIG.windows
    assert tumbling.starts(T0) == [T0]
    assert tumbling.starts(T0 + MIN - 1) == [T0]  # last millisecond in
    assert tumbling.starts(T0 + MIN) == [T0 + MIN]  # the end is the next window's start
    assert tumbling.end(T0) == T0 + MIN
    # hopping: newest first, the oldest window still holds ts, the one before it does not
    starts = hopping.starts(T0 + HOUR - 1)
    assert starts == [T0 + HOUR - 5 * MIN * k for k in range(1, 13)]
    assert starts[-1] == T0 and hopping.end(T0) == T0 + HOUR
    assert hopping.starts(T0 + HOUR)[-1] == T0 + 5 * MIN


def test_a_window_closes_exactly_at_end_plus_grace() -> None:
    spec = CONFIG.windows[0]
    assert not spec.closed(T0, T0 + MIN + GRACE - 1, GRACE)
    assert spec.closed(T0, T0 + MIN + GRACE, GRACE)


def test_lateness_is_strictly_older_than_watermark_minus_grace() -> None:
    state = PartitionState(0)
    watermark = T0 + 30 * MIN
    assert apply(state, ev("w", watermark), CONFIG) is Outcome.COUNTED
    assert apply(state, ev("in", watermark - GRACE), CONFIG) is Outcome.COUNTED
    folded = apply_batch(state, [ev("out", watermark - GRACE - 1)], CONFIG)
    assert folded.outcomes == [Outcome.LATE] and folded.late_watermarks == {0: watermark}
    assert state.watermark == watermark  # an older event never moves it back
    assert apply(state, ev("newer", watermark + 1), CONFIG) is Outcome.COUNTED
    assert state.watermark == watermark + 1
    assert "out" not in state.seen  # a late event is not remembered: its retry is late again


def _seen_at_the_horizon(offset: int) -> tuple[PartitionState, AdEvent]:
    """An event seen at ts, then the watermark moved to ts + HORIZON + offset."""
    state = PartitionState(0)
    first = ev("dup", T0)
    apply(state, first, CONFIG)
    apply(state, ev("clock", T0 + HORIZON + offset), CONFIG)
    return state, first


def test_an_id_is_a_duplicate_up_to_the_horizon_and_forgotten_after() -> None:
    state, first = _seen_at_the_horizon(0)  # seen exactly at watermark - horizon: remembered
    assert apply(state, first, CONFIG) is Outcome.DUPLICATE
    assert apply(state, ev("dup", T0 + HORIZON), CONFIG) is Outcome.DUPLICATE  # whatever its time
    state, first = _seen_at_the_horizon(1)  # one millisecond older: forgotten
    assert apply(state, first, CONFIG) is Outcome.LATE  # and judged on its time alone
    assert apply(state, ev("dup", T0 + HORIZON), CONFIG) is Outcome.COUNTED


def test_a_duplicate_does_not_move_the_watermark_or_count() -> None:
    state = PartitionState(0)
    apply(state, ev("a", T0), CONFIG)
    assert apply(state, ev("a", T0 + 5 * MIN, "click"), CONFIG) is Outcome.DUPLICATE
    assert state.watermark == T0
    counts = {u.key: (u.counts.impressions, u.counts.clicks) for u in drain(state, CONFIG) if u.kind == "ad"}
    assert counts[("1m", "a1", T0)] == (1, 0) and ("1m", "a1", T0 + 5 * MIN) not in counts


def test_the_dedupe_trim_keeps_ids_at_the_horizon_and_waits_for_the_grace_slack() -> None:
    state = PartitionState(0)
    apply_batch(state, [ev("old", T0), ev("edge", T0 + GRACE), ev("at", T0 + GRACE + 1)], CONFIG)
    assert state.seen_floor == T0
    # watermark T0 + GRACE + HORIZON: horizon T0 + GRACE, the floor T0 is not below horizon - slack
    apply(state, ev("w1", T0 + GRACE + HORIZON), CONFIG)
    list(drain(state, CONFIG))
    assert set(state.seen) == {"old", "edge", "at", "w1"}
    # one millisecond on: T0 < horizon - slack: trimmed, keeping the ids at the horizon or newer
    apply(state, ev("w2", T0 + GRACE + HORIZON + 1), CONFIG)
    list(drain(state, CONFIG))
    assert set(state.seen) == {"at", "w1", "w2"}
    assert state.seen_floor == T0 + GRACE + 1


def test_the_seen_floor_is_the_oldest_counted_time() -> None:
    state = PartitionState(0)
    apply_batch(state, [ev("a", T0 + 5), ev("b", T0 + 3), ev("c", T0 + 4)], CONFIG)
    assert state.seen_floor == T0 + 3
    apply_batch(state, [ev("d", T0 + 4)], CONFIG)
    assert state.seen_floor == T0 + 3
    apply_batch(state, [ev("e", T0 + 2)], CONFIG)
    assert state.seen_floor == T0 + 2


def _finals(state: PartitionState) -> dict[tuple[str, tuple[object, ...]], bool]:
    return {(u.kind, u.key): u.final for u in drain(state, CONFIG)}


def test_a_window_is_final_exactly_when_the_watermark_reaches_end_plus_grace() -> None:
    state = PartitionState(0)
    apply(state, ev("e", T0 + 59_999), CONFIG)  # the last millisecond of [T0, T0 + 1m)
    first = _finals(state)
    assert first[("ad", ("1m", "a1", T0))] is False
    assert first[("campaign", ("1m", "c1", T0))] is False
    apply(state, ev("w", T0 + MIN + GRACE - 1), CONFIG)  # one millisecond short
    before = _finals(state)
    assert ("ad", ("1m", "a1", T0)) not in before  # unchanged and not closed: not written
    assert ("1m", "a1", T0) in state.ads
    apply(state, ev("x", T0 + MIN + GRACE), CONFIG)  # exactly end + grace
    closing = _finals(state)
    for kind, key in [("ad", ("1m", "a1", T0)), ("campaign", ("1m", "c1", T0))]:
        assert closing[kind, key] is True
    assert ("1m", "a1", T0) not in state.ads and ("1m", "c1", T0) not in state.campaigns
    assert closing[("ad", ("1m", "a1", T0 + MIN + GRACE))] is False  # the window of "x" is open
    assert ("ad", ("1m", "a1", T0)) not in _finals(state)  # written final once, then forgotten


def test_finality_of_cells_and_hopping_windows_and_the_next_close() -> None:
    state = PartitionState(0)
    apply(state, ev("e", T0), CONFIG)
    list(drain(state, CONFIG))
    assert state.next_close == T0 + MIN + GRACE  # the 1m window closes first
    # the oldest 1h window holding T0 started 55 minutes before it
    oldest = T0 - 55 * MIN
    apply(state, ev("w", oldest + HOUR + GRACE - 1), CONFIG)
    finals = _finals(state)
    assert ("cell", ("1h", "s1", "a1", oldest)) not in finals
    # the pane [T0, T0 + 5m) closes at its end plus grace, as its oldest window does: until then its
    # counts are in no hourly window
    assert ("1h", "s1", "a1", T0) in state.panes["cell"] and not state.cells
    apply(state, ev("x", oldest + HOUR + GRACE), CONFIG)
    finals = _finals(state)
    assert finals[("cell", ("1h", "s1", "a1", oldest))] is True
    assert finals[("ad", ("1h", "a1", oldest))] is True
    assert ("1h", "s1", "a1", oldest) not in state.cells
    # the next window to close: the 1m window [T0 + 6m, T0 + 7m) of "w", plus grace
    assert state.next_close == T0 + 7 * MIN + GRACE


def test_a_cell_update_carries_its_ad_counts_in_the_same_window() -> None:
    state = PartitionState(0)
    apply_batch(
        state,
        [ev("i1", T0), ev("c1", T0 + 1, "click"), AdEvent("i2", "impression", T0 + 2, "a1", "c1", "s2")],
        CONFIG,
    )
    assert not [u for u in drain(state, CONFIG) if u.kind == "cell"]  # the pane is open
    apply(state, AdEvent("z", "impression", T0 + 5 * MIN + GRACE, "a9", "c9", "s9"), CONFIG)  # closes it
    cells = {u.key: u for u in drain(state, CONFIG) if u.kind == "cell" and u.key[-1] == T0}
    s1 = cells[("1h", "s1", "a1", T0)]
    assert (s1.counts.impressions, s1.counts.clicks) == (1, 1)
    assert s1.ad_counts is not None and (s1.ad_counts.impressions, s1.ad_counts.clicks) == (2, 1)


def test_an_ad_seen_under_two_campaigns_in_one_batch_counts_every_event() -> None:
    state = PartitionState(0)
    apply_batch(
        state,
        [
            AdEvent("i1", "impression", T0, "a1", "c1", "s1"),
            AdEvent("i2", "impression", T0 + 1, "a1", "c2", "s1"),
            AdEvent("z", "impression", T0 + 5 * MIN + GRACE, "a9", "c9", "s9"),  # closes their pane
        ],
        CONFIG,
    )
    counts = {(u.kind, u.key): u.counts.impressions for u in drain(state, CONFIG) if u.key[-1] == T0}
    assert counts == {
        ("ad", ("1m", "a1", T0)): 2,
        ("ad", ("1h", "a1", T0)): 2,
        ("campaign", ("1m", "c1", T0)): 1,
        ("campaign", ("1m", "c2", T0)): 1,
        ("campaign", ("1h", "c1", T0)): 1,
        ("campaign", ("1h", "c2", T0)): 1,
        ("cell", ("1h", "s1", "a1", T0)): 2,
    }
    assert state.campaign_of["a1"] == "c2"  # the latest campaign names the ad's rows


def test_hopping_windows_alone_close_on_time() -> None:
    """The earliest close of a new event is its oldest hopping window's end plus grace."""
    hopping = CtrConfig((CONFIG.windows[1],), cell_window="1h", grace_ms=GRACE, dedupe_horizon_ms=HORIZON)
    state = PartitionState(0)
    apply(state, ev("e", T0), hopping)
    list(drain(state, hopping))
    oldest = T0 - 55 * MIN
    assert state.next_close is None  # no window yet: the pane holds the counts
    assert state.next_pane_close == T0 + 5 * MIN + GRACE == oldest + HOUR + GRACE  # the same instant
    apply(state, ev("w", oldest + HOUR + GRACE), hopping)
    finals = {(u.kind, u.key): u.final for u in drain(state, hopping)}
    assert finals[("ad", ("1h", "a1", oldest))] is True
    assert finals[("ad", ("1h", "a1", oldest + 5 * MIN))] is False
