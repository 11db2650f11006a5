from __future__ import annotations

from streams.ctr.views import campaign_windows, ended_windows_before, top_ads


def partial(partition: int, impressions: int, clicks: int, final: bool = True) -> dict[str, object]:
    return {
        "campaign_id": "c1",
        "window": "1h",
        "window_start": 0,
        "window_end": 3_600_000,
        "source_partition": partition,
        "impressions": impressions,
        "clicks": clicks,
        "final": final,
        "prior_alpha": 1.0,
        "prior_beta": 332.0,
        "prior_level": "campaign",
        "prior_version": "p1",
    }


def test_campaign_windows_sum_partitions_and_smooth_the_total() -> None:
    rows = campaign_windows([partial(0, 1000, 3), partial(1, 500, 2, final=False)], 0.95)
    assert len(rows) == 1
    row = rows[0]
    assert (row["impressions"], row["clicks"], row["partitions"], row["final"]) == (1500, 5, 2, False)
    assert row["smoothed_ctr"] == (1 + 5) / (1 + 332 + 1500)
    assert row["ci_low"] <= row["smoothed_ctr"] <= row["ci_high"]
    assert row["prior_level"] == "campaign"


def test_top_ads_rank_by_the_lower_bound_not_the_raw_rate() -> None:
    cells = [
        {"ad_id": "lucky", "ci_low": 0.0004, "smoothed_ctr": 0.006},  # 1 click in 10 impressions
        {"ad_id": "proven", "ci_low": 0.0052, "smoothed_ctr": 0.006},  # 300 clicks in 50,000
        {"ad_id": "weak", "ci_low": 0.0001, "smoothed_ctr": 0.001},
    ]
    assert [c["ad_id"] for c in top_ads(cells, 2)] == ["proven", "lucky"]


def test_top_ads_default_to_the_newest_window_that_has_ended() -> None:
    """Hourly windows every 5 minutes; at 10:07 the newest ended one is 09:05-10:05 (starts below
    09:07 + 1 ms): the 10:05 one holds two minutes and is never final."""
    hour, minute = 3_600_000, 60_000
    at = 10 * hour + 7 * minute
    bound = ended_windows_before(at, hour)
    starts = range(8 * hour, at, 5 * minute)
    assert max(s for s in starts if s < bound) == 9 * hour + 5 * minute
    assert (
        max(s for s in starts if s < ended_windows_before(10 * hour + 5 * minute, hour))
        == 9 * hour + 5 * minute
    )
    assert max(s for s in starts if s < ended_windows_before(10 * hour + 5 * minute - 1, hour)) == 9 * hour
