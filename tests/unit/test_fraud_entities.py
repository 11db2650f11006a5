"""Entity features across customers (`fraud.entities`) against a brute-force oracle written apart
from the module (plain list filtering): the same whatever order the events were added in, repeats
change nothing, and eviction never changes a transaction whose windows start after the cut."""

from __future__ import annotations

import copy
import math
import random
from typing import Any

import pytest

from streams.fraud.entities import DAY_MS, ENTITY_FEATURES, HORIZON_MS, EntityHistory, sightings

T0 = 1_767_225_600_000
HOUR = 3_600_000
WINDOWS = {"1h": HOUR, "24h": DAY_MS, "7d": 7 * DAY_MS}
PAIRED = {"device": "card", "card": "device"}


def traffic(seed: int, count: int = 400) -> list[dict[str, Any]]:
    """Few entities shared by many customers; times on whole minutes, hours and days apart (ties
    and window edges hit exactly) over 12 days (beyond the 7-day horizon)."""
    rng = random.Random(seed)
    txs = []
    for i in range(count):
        tx: dict[str, Any] = {
            "transaction_id": f"t{i:04d}",
            "ts": T0 + rng.choice((0, 1, 60_000, HOUR, DAY_MS)) * rng.randint(0, 12) + rng.randint(0, 3),
            "customer_id": f"c{rng.randint(0, 30)}",
        }
        txs.append(with_entities(tx, rng, (12, 15, 10), 0.9, networks=2))
    return txs


def with_entities(
    tx: dict[str, Any], rng: random.Random, pools: tuple[int, int, int], share: float, networks: int
) -> dict[str, Any]:
    """``tx`` with a device, card and shipping address drawn from small pools (sizes ``pools``)
    and an IP in one of ``networks`` x 4 /24s, each present with probability ``share``."""
    for name, pool in zip(("device_id", "card_id", "shipping_address"), pools, strict=True):
        if rng.random() < share:
            tx[name] = f"{name[:3]}{rng.randint(0, pool)}"
    if rng.random() < share:
        tx["ip"] = f"10.{rng.randint(0, networks - 1)}.{rng.randint(0, 3)}.{rng.randint(1, 254)}"
    return tx


def keys(tx: dict[str, Any]) -> dict[str, str | None]:
    ip = tx.get("ip")
    return {
        "device": tx.get("device_id"),
        "card": tx.get("card_id"),
        "ip24": ip.rsplit(".", 1)[0] if ip else None,
        "address": tx.get("shipping_address"),
    }


def oracle(txs: list[dict[str, Any]], tx: dict[str, Any]) -> dict[str, float]:
    """Every entity feature of ``tx`` from the transactions strictly before it in (ts, id) order."""
    ts, at, mine = tx["ts"], (tx["ts"], tx["transaction_id"]), keys(tx)
    earlier = [e for e in txs if (e["ts"], e["transaction_id"]) < at and e["ts"] >= ts - 7 * DAY_MS]
    out: dict[str, float] = {}
    for kind in ("device", "card", "ip24", "address"):
        same = [e for e in earlier if mine[kind] is not None and keys(e)[kind] == mine[kind]]
        for name, width in WINDOWS.items():
            others = {e["customer_id"] for e in same if e["ts"] >= ts - width} - {tx["customer_id"]}
            out[f"{kind}_customers_{name}"] = math.log1p(len(others))
        out[f"{kind}_age_days"] = (ts - min(e["ts"] for e in same)) / DAY_MS if same else 0.0
        if kind in PAIRED:
            paired = {keys(e)[PAIRED[kind]] for e in same if e["ts"] >= ts - DAY_MS} - {None}
            out[f"{kind}_{PAIRED[kind]}s_24h"] = math.log1p(len(paired))
    return out


def named(row: list[float]) -> dict[str, float]:
    return dict(zip(ENTITY_FEATURES, row, strict=True))


def filled(txs: list[dict[str, Any]]) -> EntityHistory:
    history = EntityHistory()
    for tx in txs:
        history.add_transaction(tx)
    return history


def test_the_oracle_names_every_feature() -> None:
    assert set(oracle(traffic(1, 5), traffic(1, 5)[0])) == set(ENTITY_FEATURES)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_features_equal_the_oracle_in_any_order_of_arrival(seed: int) -> None:
    txs = traffic(seed)
    shuffled = txs[:]
    random.Random(seed).shuffle(shuffled)
    history = filled(shuffled)
    assert filled(txs).events == history.events
    for tx in txs:
        assert named(history.transaction_features(tx)) == pytest.approx(oracle(txs, tx)), tx["transaction_id"]


def test_a_repeated_event_is_refused_and_changes_nothing() -> None:
    txs = traffic(4, 200)
    history = filled(txs)
    before = copy.deepcopy(history.events)
    for tx in random.Random(4).sample(txs, 50):
        for kind, value, pair in sightings(tx):
            assert not history.add(kind, value, tx["ts"], tx["transaction_id"], tx["customer_id"], pair)
        history.add_transaction(tx)
    assert history.events == before
    fresh = EntityHistory()
    assert fresh.add("device", "d", T0, "t1", "c1", "k1") and not fresh.add("device", "d", T0, "t1", "c2", "")


@pytest.mark.parametrize("cut", ["1d", "4d", "the newest window start"])
def test_eviction_keeps_every_window_that_starts_at_or_after_the_cut(cut: str) -> None:
    txs = traffic(5)
    history = filled(txs)
    newest = max(tx["ts"] for tx in txs)
    before = newest - HORIZON_MS if cut == "the newest window start" else T0 + int(cut[0]) * DAY_MS
    events = sum(len(e) for e in history.events.values())
    history.evict(before)
    assert all(event[0] >= before for events in history.events.values() for event in events)
    assert all(history.events.values())  # an entity left without events is forgotten
    assert sum(len(e) for e in history.events.values()) < events
    kept = [tx for tx in txs if tx["ts"] - HORIZON_MS >= before]
    assert kept  # the traffic spans 12 days: some windows start after every cut
    for tx in kept:
        assert named(history.transaction_features(tx)) == pytest.approx(oracle(txs, tx)), tx["transaction_id"]


def test_a_device_shared_by_new_customers_by_hand() -> None:
    farm = [
        {"transaction_id": f"f{i}", "ts": T0 + i * 600_000, "customer_id": f"new{i}", "device_id": "d1",
         "card_id": f"k{i}", "ip": "10.0.0.1"}
        for i in range(5)
    ]  # fmt: skip
    history = filled(farm)
    features = named(history.transaction_features(farm[4]))
    assert features["device_customers_1h"] == pytest.approx(math.log1p(4))  # 4 others in 40 minutes
    assert features["ip24_customers_24h"] == pytest.approx(math.log1p(4))
    assert features["device_cards_24h"] == pytest.approx(math.log1p(4))  # k0..k3 on d1 before
    assert features["card_devices_24h"] == 0.0 and features["card_customers_7d"] == 0.0  # its card is new
    assert features["device_age_days"] == pytest.approx(40 / 1440)
    assert features["address_age_days"] == 0.0  # no address: the entity's features are 0
    assert history.transaction_features(farm[0]) == [0.0] * len(ENTITY_FEATURES)  # the first sees nobody


def test_the_age_counts_from_the_first_sighting_within_the_horizon() -> None:
    seen = [
        {"transaction_id": name, "ts": T0 + days * DAY_MS, "customer_id": "c1", "device_id": "d"}
        for name, days in (("a", 0), ("b", 6), ("c", 10))
    ]
    history = filled(seen)
    by_id = {tx["transaction_id"]: named(history.transaction_features(tx)) for tx in seen}
    assert by_id["b"]["device_age_days"] == 6.0  # seen 6 days before
    assert by_id["c"]["device_age_days"] == 4.0  # the sighting 10 days before is beyond 7 days
    assert by_id["c"]["device_customers_7d"] == 0.0  # its own customer does not count


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_sliding_windows_equal_the_oracle_under_adds_questions_and_evictions_in_any_order(seed: int) -> None:
    """Hot entities (windows of hundreds of events, counted by `Sliding`): questions mostly move
    forward in time, some go back (a late transaction); events land before questions already
    answered (a partition back from idle); evictions drop the oldest. Every answer is the oracle's."""
    rng = random.Random(seed)
    history, added, evicted_before = EntityHistory(), [], None
    clock = T0
    for i in range(1500):
        clock += rng.choice((1, 30_000, 600_000, HOUR))
        tx = {"transaction_id": f"t{i:05d}", "customer_id": f"c{rng.randint(0, 40)}",
              "ts": clock - rng.choice((0, 0, 0, 0, 5 * 60_000, DAY_MS)),
              "device_id": f"d{rng.randint(0, 2)}", "card_id": f"k{rng.randint(0, 60)}"}  # fmt: skip
        if evicted_before is not None and tx["ts"] < evicted_before + HORIZON_MS:
            tx["ts"] = evicted_before + HORIZON_MS  # the stage asks nothing that eviction cut into
        if rng.random() < 0.8:
            history.add_transaction(tx)
            added.append(tx)
        if rng.random() < 0.5:
            kept = [e for e in added if evicted_before is None or e["ts"] >= evicted_before]
            got = dict(zip(ENTITY_FEATURES, history.transaction_features(tx), strict=True))
            assert got == pytest.approx(oracle(kept, tx), abs=1e-12), tx["transaction_id"]
        if i % 400 == 399:
            evicted_before = clock - 8 * DAY_MS
            history.evict(evicted_before)
