"""Entity features across customers (`fraud.entities`) against a brute-force count: the same
whatever order the events were added in."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from streams.fraud.entities import (
    AGE_CAP_DAYS,
    DAY_MS,
    ENTITY_FEATURES,
    KINDS,
    WINDOWS,
    EntityHistory,
    entity_keys,
)

T0 = 1_767_225_600_000


def traffic(seed: int, count: int = 400) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    txs = []
    for i in range(count):
        tx: dict[str, Any] = {
            "transaction_id": f"t{i:04d}",
            "ts": T0 + rng.choice((0, 1, 60_000, 3_600_000, DAY_MS)) * rng.randint(0, 9) + rng.randint(0, 3),
            "customer_id": f"c{rng.randint(0, 30)}",
        }
        for name, pool in (("device_id", 12), ("card_id", 15), ("shipping_address", 10)):
            if rng.random() < 0.9:
                tx[name] = f"{name[:3]}{rng.randint(0, pool)}"
        if rng.random() < 0.9:
            tx["ip"] = f"10.{rng.randint(0, 1)}.{rng.randint(0, 3)}.{rng.randint(1, 254)}"
        txs.append(tx)
    return txs


def brute(txs: list[dict[str, Any]], tx: dict[str, Any]) -> list[float]:
    at = (tx["ts"], tx["transaction_id"])
    keys = entity_keys(tx)
    counts, ages = [], []
    for kind in KINDS:
        same = [e for e in txs if keys[kind] is not None and entity_keys(e)[kind] == keys[kind]]
        before = [e for e in same if (e["ts"], e["transaction_id"]) < at]
        for _, width in WINDOWS:
            customers = {e["customer_id"] for e in before if e["ts"] >= at[0] - width} - {tx["customer_id"]}
            counts.append(math.log1p(len(customers)))
        first = min((e["ts"] for e in same), default=None)
        ages.append(0.0 if first is None or first >= at[0] else min((at[0] - first) / DAY_MS, AGE_CAP_DAYS))
    pairs = []
    for kind, other in (("device", "card"), ("card", "device")):
        recent = [
            e for e in txs
            if keys[kind] is not None and entity_keys(e)[kind] == keys[kind]
            and (e["ts"], e["transaction_id"]) < at and e["ts"] >= at[0] - DAY_MS
        ]  # fmt: skip
        pairs.append(math.log1p(len({entity_keys(e)[other] for e in recent} - {None})))
    return counts + ages + pairs


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_features_equal_a_brute_force_count_in_any_order_of_arrival(seed: int) -> None:
    txs = traffic(seed)
    shuffled = txs[:]
    random.Random(seed).shuffle(shuffled)
    history = EntityHistory()
    for tx in shuffled:
        history.add(tx)
    for tx in txs:
        assert history.features(tx) == pytest.approx(brute(txs, tx)), tx["transaction_id"]
    assert len(history.features(txs[0])) == len(ENTITY_FEATURES)


def test_a_device_shared_by_new_customers_by_hand() -> None:
    farm = [
        {"transaction_id": f"f{i}", "ts": T0 + i * 600_000, "customer_id": f"new{i}", "device_id": "d1",
         "card_id": f"k{i}", "ip": "10.0.0.1"}
        for i in range(5)
    ]  # fmt: skip
    history = EntityHistory()
    for tx in farm:
        history.add(tx)
    features = dict(zip(ENTITY_FEATURES, history.features(farm[4]), strict=True))
    assert features["device_customers_1h"] == pytest.approx(math.log1p(4))  # 4 others in 40 minutes
    assert features["ip24_customers_24h"] == pytest.approx(math.log1p(4))
    assert features["device_cards_24h"] == pytest.approx(math.log1p(4))  # k0..k3 on d1 before
    assert features["card_customers_7d"] == 0.0  # its own card is new
    assert features["device_age_days"] == pytest.approx(40 / 1440)
    assert history.features(farm[0])[:12] == [0.0] * 12  # the first sees nobody


def test_eviction_forgets_what_no_window_can_see() -> None:
    history = EntityHistory()
    old = {"transaction_id": "a", "ts": T0, "customer_id": "c1", "device_id": "d"}
    new = {"transaction_id": "b", "ts": T0 + 8 * DAY_MS, "customer_id": "c2", "device_id": "d"}
    history.add(old)
    history.add(new)
    before = history.features(new)
    history.evict()
    assert history.events["device:d"] == [(new["ts"], "b", "c2", "")]
    after = dict(zip(ENTITY_FEATURES, history.features(new), strict=True))
    assert after["device_customers_7d"] == before[ENTITY_FEATURES.index("device_customers_7d")] == 0.0
    assert after["device_age_days"] == 8.0  # still known since its first sighting
