from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.ctr.processor import CellPolicy, CtrProcessor, cell_prior
from streams.ctr.smoothing import BetaPrior, PriorSet, estimate
from streams.ctr.state import AdEvent, CtrConfig, Outcome, PartitionState, apply, drain
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


def test_sparse_cells_back_off_to_the_ad_then_the_campaign() -> None:
    campaign = BetaPrior.from_mean(0.003, 1000, "campaign", "p1")
    policy = CellPolicy(min_cell_impressions=1000, min_ad_impressions=1000, backoff_strength=500)
    busy_ad = estimate(50_000, 500, campaign)
    assert cell_prior(5000, busy_ad, campaign, policy) == campaign  # dense cell: stands on its own
    backed = cell_prior(10, busy_ad, campaign, policy)
    assert backed.level == "ad" and abs(backed.mean - busy_ad.smoothed_ctr) < 1e-6
    quiet_ad = estimate(20, 0, campaign)
    assert cell_prior(10, quiet_ad, campaign, policy) == campaign


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
    assert campaign == [c for c in campaign if c["source_partition"] == 2 and c["impressions"] == 9]
    assert {r["segment"] for r in rows.cells} == {"s2"} and all(r["window"] == "1h" for r in rows.cells)
    assert len(processor.drain()) == 0  # nothing changed since
