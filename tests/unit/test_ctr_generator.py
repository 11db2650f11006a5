"""The clickstream generator's campaign CTR levels: as far apart as asked, deterministic per seed."""

from __future__ import annotations

import itertools

import pytest

from streams.ctr.generator import ClickstreamGenerator, ClickstreamProfile, campaign_levels


def test_campaign_levels_span_the_spread_evenly_in_log_scale() -> None:
    levels = campaign_levels(0.003, 30.0, 5)
    assert max(levels) / min(levels) == pytest.approx(30.0)
    assert levels[2] == pytest.approx(0.003)  # the middle one is the mean (geometrically)
    ratios = [b / a for a, b in itertools.pairwise(levels)]
    assert ratios == pytest.approx([30**0.25] * 4)
    assert campaign_levels(0.003, 30.0, 1) == [0.003]
    assert max(campaign_levels(0.02, 50.0, 3)) == 0.05  # capped


def test_generated_ads_follow_their_campaign_levels_and_the_seed() -> None:
    profile = ClickstreamProfile(campaigns=4, ads=400, campaign_spread=50.0)
    ads = ClickstreamGenerator(profile, seed=3, start_ms=0, rate=100).ads
    by_campaign: dict[str, list[float]] = {}
    for ad in ads:
        by_campaign.setdefault(ad.campaign_id, []).append(ad.true_ctr)
    means = sorted(sum(v) / len(v) for v in by_campaign.values())
    assert means[-1] / means[0] > 25  # 50x apart in level, the ads drawn around it (100 each)
    again = ClickstreamGenerator(profile, seed=3, start_ms=0, rate=100).ads
    assert again == ads
