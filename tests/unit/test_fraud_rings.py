"""Rings in the generated traffic (`fraud.rings`): each pattern shows only across customers, and
households keep a shared address from being a signal by itself."""

from __future__ import annotations

import itertools
from collections import defaultdict

import orjson

from streams.fraud.generator import TransactionGenerator, TransactionProfile
from streams.fraud.rings import PATTERNS, rhythm
from streams.fraud.synthetic import load_ip_prefixes
from streams.settings import load_settings

T0 = 1_764_547_200_000  # a Monday, 00:00 UTC
DAY, HOUR = 86_400_000, 3_600_000


def ring_traffic() -> tuple[list[dict], dict[str, str]]:  # type: ignore[type-arg]
    profile = TransactionProfile(
        mean_gap_ms=14 * DAY / 20_000,
        ring_shares=(0.001, 0.001, 0.001),
        malformed_share=0.0,
        missing_share=0.0,
    )
    generator = TransactionGenerator(
        profile, seed=9, start_ms=T0, ip_prefixes=load_ip_prefixes(load_settings().fraud.ip_countries_file)
    )
    scenario = generator.scenario(20_000)
    return [orjson.loads(v) for _, v in scenario.transactions], scenario.truth


def test_each_ring_shares_one_entity_across_customers_only() -> None:
    events, truth = ring_traffic()
    by_pattern = defaultdict(list)
    for event in events:
        by_pattern[truth[event["transaction_id"]]].append(event)
    assert all(by_pattern[p] for p in PATTERNS)
    entity = {"device_farm": "device_id", "shared_card": "card_id", "reshipping": "shipping_address"}
    for pattern, field in entity.items():
        customers = defaultdict(set)
        for event in by_pattern[pattern]:
            customers[event[field]].add(event["customer_id"])
        assert min(len(c) for c in customers.values()) >= 4, pattern  # one entity, many customers
    # ring accounts are new; a stolen card pays in existing accounts, from their own devices
    assert all(e["is_new_customer"] for e in by_pattern["device_farm"] + by_pattern["reshipping"])
    assert all(e["device_id"].startswith("dev-0") for e in by_pattern["shared_card"])
    # legitimate customers share an address with at most one other (households)
    sharing = defaultdict(set)
    for event in by_pattern["legit"]:
        sharing[event["shipping_address"]].add(event["customer_id"])
    sizes = {len(c) for c in sharing.values()}
    assert sizes == {1, 2}
    # the stream stays in time order (a card-testing burst runs a few seconds ahead)
    times = [e["ts"] for e in events]
    assert all(b >= a - 200_000 for a, b in itertools.pairwise(times))


def test_each_pattern_has_its_own_rhythm() -> None:
    week = [T0 + h * HOUR for h in range(7 * 24)]
    for pattern in PATTERNS:
        assert abs(sum(rhythm(pattern, ts) for ts in week) / len(week) - 1) < 1e-9, pattern
    peak = {p: max(week, key=lambda ts, p=p: rhythm(p, ts)) for p in PATTERNS}
    assert (peak["device_farm"] // HOUR) % 24 == 2
    assert (peak["shared_card"] // HOUR) % 24 == 14 and (peak["shared_card"] - T0) // DAY < 5  # weekday
    assert (peak["reshipping"] // HOUR) % 24 == 20 and (peak["reshipping"] - T0) // DAY >= 5  # weekend
