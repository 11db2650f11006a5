from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.ctr.events import AdEvent
from streams.ctr.processor import CtrProcessor
from streams.ctr.smoothing import BetaPrior, PriorSet
from streams.ctr.state import CtrConfig, Outcome, PartitionState, apply, apply_batch, drain
from streams.ctr.windows import WindowSpec

MIN = 60_000
CONFIG = CtrConfig(
    windows=(WindowSpec("1m", MIN, MIN), WindowSpec("1h", 60 * MIN, 5 * MIN)),
    cell_window="1h",
    grace_ms=2 * MIN,
    dedupe_horizon_ms=10 * MIN,
)
T0 = 1_700_000_000_000 - 1_700_000_000_000 % (60 * MIN)


def ev(i: int, ts: int, kind: str = "impression", ad: str = "a1", segment: str = "s1") -> AdEvent:
    return AdEvent(f"e{i}", kind, ts, ad, "c1", segment)


def final_counts(events: list[AdEvent]) -> dict[tuple[str, tuple[object, ...]], tuple[int, int]]:
    state = PartitionState(0)
    for event in events:
        apply(state, event, CONFIG)
    return {(u.kind, u.key): (u.counts.impressions, u.counts.clicks) for u in drain(state, CONFIG)}


def test_duplicates_and_late_events_are_not_counted() -> None:
    state = PartitionState(0)
    assert apply(state, ev(1, T0 + 10 * MIN), CONFIG) is Outcome.COUNTED
    assert apply(state, ev(1, T0 + 10 * MIN), CONFIG) is Outcome.DUPLICATE
    assert apply(state, ev(2, T0 + 9 * MIN), CONFIG) is Outcome.COUNTED  # within grace
    assert apply(state, ev(3, T0 + 7 * MIN), CONFIG) is Outcome.LATE  # older than watermark - grace
    counts = {(u.kind, u.key): u.counts for u in drain(state, CONFIG)}
    assert counts[("ad", ("1m", "a1", T0 + 10 * MIN))].impressions == 1
    assert counts[("ad", ("1m", "a1", T0 + 9 * MIN))].impressions == 1
    assert ("ad", ("1m", "a1", T0 + 7 * MIN)) not in counts


def test_windows_become_final_once_the_watermark_passes_end_plus_grace() -> None:
    state = PartitionState(0)
    apply(state, ev(1, T0 + 30_000), CONFIG)
    first = {u.key: u.final for u in drain(state, CONFIG) if u.kind == "ad"}
    assert first[("1m", "a1", T0)] is False
    apply(state, ev(2, T0 + 3 * MIN), CONFIG)  # 1m window [T0, T0+1m) + 2m grace has passed
    second = {u.key: u.final for u in drain(state, CONFIG) if u.kind == "ad"}
    assert second[("1m", "a1", T0)] is True
    assert ("1m", "a1", T0) not in state.ads  # forgotten once final
    third = {u.key for u in drain(state, CONFIG)}
    assert ("1m", "a1", T0) not in third  # and not written again


@given(st.permutations(list(range(40))), st.randoms(use_true_random=False))
def test_counts_do_not_depend_on_arrival_order_within_the_grace_period(order: list[int], rnd) -> None:  # type: ignore[no-untyped-def]
    events = [
        ev(i, T0 + rnd.randrange(CONFIG.grace_ms), "click" if i % 7 == 0 else "impression", f"a{i % 3}")
        for i in range(40)
    ]
    assert final_counts(events) == final_counts([events[i] for i in order])


def test_processor_rows_carry_prior_interval_and_version() -> None:
    priors = PriorSet("p1", BetaPrior(1.0, 332.0, "default", "p1"))
    processor = CtrProcessor(CONFIG, priors, "v1")
    for i in range(10):
        processor.apply(ev(i, T0 + i * 1000, "click" if i == 3 else "impression", segment="s2"), partition=2)
    rows = processor.drain()
    ad = next(r for r in rows.ads if r["window"] == "1m" and r["window_start"] == T0)
    assert (ad["impressions"], ad["clicks"], ad["raw_ctr"]) == (9, 1, 1 / 9)
    assert ad["prior_level"] == "default" and ad["prior_version"] == "p1" and ad["pipeline_version"] == "v1"
    assert ad["ci_low"] <= ad["smoothed_ctr"] <= ad["ci_high"]
    campaign = [r for r in rows.campaigns if r["window"] == "1m"]
    assert [
        (c["campaign_id"], c["window_start"], c["source_partition"], c["impressions"], c["clicks"])
        for c in campaign
    ] == [("c1", T0, 2, 9, 1)]
    assert rows.cells == []  # the hourly windows wait for their pane [T0, T0 + 5m) to close
    assert len(processor.drain()) == 0  # nothing changed since
    processor.apply(ev(99, T0 + 5 * MIN + CONFIG.grace_ms, ad="a9", segment="s9"), partition=2)
    rows = processor.drain()
    assert {r["segment"] for r in rows.cells} == {"s2"} and all(r["window"] == "1h" for r in rows.cells)
    assert {r["impressions"] for r in rows.cells} == {9}


class ReferenceState:
    """The plain definition, one event at a time over every window that contains it: the oracle
    for the batched, pane-based `apply_batch` / `drain`. A hopping window's counts are held per
    pane (one step) until the watermark passes the pane's end plus the grace."""

    def __init__(self) -> None:
        self.watermark: int | None = None
        self.seen: dict[str, int] = {}
        self.windows: dict[tuple[str, tuple[object, ...]], list[int]] = {}
        self.dirty: set[tuple[str, tuple[object, ...]]] = set()
        self.held: list[tuple[int, tuple[str, tuple[object, ...]], bool]] = []  # (pane closes, key, click)

    def apply(self, event: AdEvent) -> Outcome:
        seen_at = self.seen.get(event.event_id)
        if seen_at is not None and (
            self.watermark is None or seen_at >= self.watermark - CONFIG.dedupe_horizon_ms
        ):
            return Outcome.DUPLICATE
        if self.watermark is not None and event.ts < self.watermark - CONFIG.grace_ms:
            return Outcome.LATE
        self.seen[event.event_id] = event.ts
        self.watermark = max(event.ts, self.watermark or event.ts)
        for spec in CONFIG.windows:
            for start in spec.starts(event.ts):
                keys = [("ad", (spec.name, event.ad_id, start)), ("campaign", (spec.name, "c1", start))]
                if spec.name == CONFIG.cell_window:
                    keys.append(("cell", (spec.name, event.segment, event.ad_id, start)))
                pane_closes = event.ts - event.ts % spec.step_ms + spec.step_ms + CONFIG.grace_ms
                for key in keys:
                    if spec.step_ms < spec.size_ms:
                        self.held.append((pane_closes, key, event.type == "click"))
                    else:
                        self.windows.setdefault(key, [0, 0])[event.type == "click"] += 1
                        self.dirty.add(key)
        return Outcome.COUNTED

    def drain(self) -> dict[tuple[str, tuple[object, ...]], tuple[int, int, bool]]:
        specs = {spec.name: spec for spec in CONFIG.windows}
        for closes, key, click in self.held:
            if closes <= (self.watermark or 0):
                self.windows.setdefault(key, [0, 0])[click] += 1
                self.dirty.add(key)
        self.held = [held for held in self.held if held[0] > (self.watermark or 0)]
        out = {}
        changed_ads = {key for kind, key in self.dirty if kind == "ad"}  # their cells are drained too
        for (kind, key), (impressions, clicks) in list(self.windows.items()):
            final = specs[key[0]].closed(key[-1], self.watermark or 0, CONFIG.grace_ms)  # type: ignore[arg-type]
            refreshed = kind == "cell" and (key[0], key[2], key[3]) in changed_ads
            if final or (kind, key) in self.dirty or refreshed:
                out[kind, key] = (impressions, clicks, final)
            if final:
                del self.windows[kind, key]
        self.dirty.clear()
        return out


@given(
    st.lists(
        st.tuples(
            st.integers(0, 60),  # event id: repeats are duplicates
            st.integers(0, 150 * MIN),  # event time offset: far back ones are late
            st.booleans(),  # click
            st.sampled_from(["a1", "a2", "a3"]),
            st.sampled_from(["s1", "s2"]),
        ),
        max_size=120,
    ),
    st.lists(st.integers(1, 30), min_size=1),
)
def test_batched_panes_match_the_event_by_event_definition(
    rows: list[tuple[int, int, bool, str, str]], cuts: list[int]
) -> None:
    events = [ev(i, T0 + t, "click" if click else "impression", ad, seg) for i, t, click, ad, seg in rows]
    state, reference = PartitionState(0), ReferenceState()
    position, turn = 0, 0
    while position < len(events) or turn == 0:
        batch = events[position : position + cuts[turn % len(cuts)]]
        position, turn = position + len(batch), turn + 1
        assert apply_batch(state, batch, CONFIG).outcomes == [reference.apply(event) for event in batch]
        drained = drain(state, CONFIG)
        assert {(u.kind, u.key): (u.counts.impressions, u.counts.clicks, u.final) for u in drained} == (
            reference.drain()
        )


def test_rebuilding_one_partition_keeps_the_other_partitions_changes() -> None:
    """A partition rebuilt from the log mid-interval must not swallow rows still due elsewhere."""
    processor = CtrProcessor(CONFIG, PriorSet("p1", BetaPrior(1.0, 332.0, "default", "p1")), "v1")
    processor.apply_batch([ev(1, T0)], partition=0)
    processor.apply_batch([ev(2, T0, ad="a2")], partition=1)  # the rebuilt history of partition 1
    processor.settle(1)
    rows = processor.drain()
    assert {r["ad_id"] for r in rows.ads} == {"a1"}


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=8))
def test_cell_rows_do_not_depend_on_where_drains_fall(cuts: list[int]) -> None:
    """A sparse cell borrows from its ad's counts, so its row is written again when its ad's
    counts change: the last row of every cell is the same whatever the drain boundaries (a live
    run and a replay of the same log drain at different places)."""
    from streams.ctr.processor import CellPolicy

    priors = PriorSet("p1", BetaPrior(1.0, 332.0, "default", "p1"))
    events = [ev(0, T0, segment="rare")] + [
        ev(i, T0 + i * 100, "click" if i % 9 == 0 else "impression", segment="busy") for i in range(1, 120)
    ]
    events.append(ev(999, T0 + 5 * MIN + CONFIG.grace_ms, ad="a9"))  # closes the pane of the others

    def last_rows(boundaries: list[int]) -> dict[tuple[object, ...], dict[str, object]]:
        processor = CtrProcessor(CONFIG, priors, "v1", cell_policy=CellPolicy(30, 60, 500.0))
        rows: dict[tuple[object, ...], dict[str, object]] = {}
        start = 0
        for end in [*boundaries, len(events)]:
            processor.apply_batch(events[start:end], partition=0)
            for row in processor.drain().cells:
                rows[(row["segment"], row["window"], row["window_start"])] = row
            start = end
        return rows

    one_drain = last_rows([])
    assert one_drain[("rare", "1h", T0)]["prior_level"] == "ad"  # the rare cell borrows from its ad
    boundaries = sorted({min(sum(cuts[: i + 1]), len(events)) for i in range(len(cuts))})
    assert last_rows(boundaries) == one_drain
