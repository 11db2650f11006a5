"""Every time rule of the fraud features at its exact boundary, one case in and one out, with
expected values worked out by hand: the 1 min / 1 h / 24 h windows (``ts - window < t <= ts``) on
both the in-order path and the path that rescans for out-of-order entries, distinct cards per
device in the last hour, ``night`` (hours 0-5 UTC), the amount history (EWMA), the 24 h trim of
the customer queue and of the device's cards, and the label join (orphan once the watermark
reaches the label's time, a label horizon, a dedupe horizon, decisions forgotten once durable and
past it, the archive's rows), and the history horizon (idle customers, devices and cards)."""

from __future__ import annotations

from math import log1p, sqrt
from typing import Any

import pytest

from streams.fraud.decision import DecisionPolicy
from streams.fraud.features import (
    FEATURES,
    FeatureState,
    advance,
    compute,
    features_of,
    ip_country,
    update,
)
from streams.fraud.messages import as_transaction
from streams.fraud.model import FraudModel
from streams.fraud.processor import FraudProcessor
from streams.settings import load_settings

MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000  # written out: not the module's constants
T = 1_767_225_600_000  # 2026-01-01 00:00:00 UTC
PREFIXES = {"31": "DE", "105": "NG"}
WINDOWS = ("count_1m", "count_1h", "count_24h", "log_sum_1h", "log_sum_24h")


def tx(number: int, ts: int, amount: float = 10.0, customer: str = "c", **fields: Any) -> dict[str, Any]:
    return {"transaction_id": f"t{number}", "ts": ts, "customer_id": customer, "amount": amount,
            "currency": "EUR", "payment_method": "card", **fields}  # fmt: skip


def history(*entries: tuple[int, float], **fields: Any) -> FeatureState:
    """A state holding the customer's transactions at these (ts, amount), in this arrival order."""
    state = FeatureState()
    for number, (ts, amount) in enumerate(entries):
        update(state, tx(number, ts, amount, **fields))
    return state


def windows(state: FeatureState, ts: int, **fields: Any) -> tuple[float, ...]:
    features = compute(state, tx(99, ts, 1.0, **fields), PREFIXES)
    return tuple(features[name] for name in WINDOWS)


# One earlier transaction of 10.0 at T, the new one at T + offset (in order: the direct path).
IN_ORDER = [
    (0, (1, 1, 1, log1p(10), log1p(10))),  # the same millisecond is inside every window
    (MIN - 1, (1, 1, 1, log1p(10), log1p(10))),
    (MIN, (0, 1, 1, log1p(10), log1p(10))),
    (HOUR - 1, (0, 1, 1, log1p(10), log1p(10))),
    (HOUR, (0, 0, 1, 0.0, log1p(10))),
    (DAY - 1, (0, 0, 1, 0.0, log1p(10))),
    (DAY, (0, 0, 0, 0.0, 0.0)),
]


@pytest.mark.parametrize(("offset", "expected"), IN_ORDER)
def test_windows_include_their_newest_end_and_exclude_their_oldest(offset: int, expected: tuple) -> None:
    assert windows(history((T, 10.0)), T + offset) == expected


@pytest.mark.parametrize(("offset", "expected"), IN_ORDER[:-1])
def test_windows_of_a_late_transaction_exclude_what_came_after_it(offset: int, expected: tuple) -> None:
    """The customer's newest transaction (1000.0 at T + 24 h - 1) is after the late one: outside."""
    state = history((T, 10.0), (T + DAY - 1, 1000.0))
    if offset < DAY - 1:
        assert windows(state, T + offset) == expected
    else:  # not late: the newest one is at the same millisecond, inside every window
        assert windows(state, T + offset) == (1, 1, 2, log1p(1000), log1p(1010))


@pytest.mark.parametrize(("width", "name"), [(MIN, "count_1m"), (HOUR, "count_1h"), (DAY, "count_24h")])
def test_an_out_of_order_entry_at_a_window_start_is_outside(width: int, name: str) -> None:
    """The customer's entries: 20.0 at T + 10, then (late) 5.0 at T. The late entry sits after the
    window start found by bisection over the running maximum, so the window must be rescanned."""
    state = history((T + 10, 20.0), (T, 5.0))
    at_edge = compute(state, tx(9, T + width, 1.0), PREFIXES)
    inside = compute(state, tx(9, T + width - 1, 1.0), PREFIXES)
    assert at_edge[name] == 1 and inside[name] == 2
    if name == "count_1h":
        assert at_edge["log_sum_1h"] == log1p(20.0) and inside["log_sum_1h"] == log1p(25.0)
    if name == "count_24h":
        assert at_edge["log_sum_24h"] == log1p(20.0) and inside["log_sum_24h"] == log1p(25.0)


def test_an_out_of_order_entry_older_than_a_day_is_ignored_while_it_is_still_queued() -> None:
    """Entries 1.0 at T + 2 h, 2.0 late at T, then 4.0 at T + 25 h: the queue is trimmed from its
    front only, so T stays behind T + 2 h, but no window counts it."""
    state = history((T + 2 * HOUR, 1.0), (T, 2.0), (T + 25 * HOUR, 4.0))
    assert state.customers["c"].recent == [(T + 2 * HOUR, 1.0), (T, 2.0), (T + 25 * HOUR, 4.0)]
    assert windows(state, T + 25 * HOUR) == (1, 1, 2, log1p(4.0), log1p(5.0))
    assert windows(state, T + 26 * HOUR) == (0, 0, 1, 0.0, log1p(4.0))  # T + 2 h is 24 h old


def test_late_entries_within_every_window_count_on_the_direct_path() -> None:
    """Late entries not at any window start: no rescan needed, and none is lost."""
    state = history((T + 30, 1.0), (T + 20, 2.0), (T + 40, 4.0), (T + 35, 8.0))
    assert windows(state, T + 40) == (4, 4, 4, log1p(15.0), log1p(15.0))
    assert windows(state, T + 30 + MIN) == (2, 4, 4, log1p(15.0), log1p(15.0))  # T+40, T+35
    assert windows(state, T + 20 + MIN) == (3, 4, 4, log1p(15.0), log1p(15.0))  # not T + 20


def test_a_late_query_rescans_and_drops_the_later_entries() -> None:
    state = history((T, 1.0), (T + MIN, 2.0), (T + 2 * MIN, 4.0))
    assert windows(state, T + MIN) == (1, 2, 2, log1p(3.0), log1p(3.0))
    assert windows(state, T + MIN - 1) == (1, 1, 1, log1p(1.0), log1p(1.0))


def test_the_queue_keeps_what_is_younger_than_24_h_of_its_newest_time() -> None:
    state = history((T, 1.0), (T + 1, 2.0), (T + DAY, 4.0))
    assert state.customers["c"].recent == [(T + 1, 2.0), (T + DAY, 4.0)]
    state = history((T, 1.0), (T + 1, 2.0), (T + DAY, 4.0))  # T is exactly 24 h old: trimmed
    assert state.customers["c"].recent == [(T + 1, 2.0), (T + DAY, 4.0)]
    late = history((T + DAY, 4.0), (T, 1.0), (T + 1, 2.0))  # trimmed from its front only
    assert late.customers["c"].recent == [(T + DAY, 4.0), (T, 1.0), (T + 1, 2.0)]
    assert windows(late, T + DAY) == (1, 1, 2, log1p(4.0), log1p(6.0))


def scan(entries: list[tuple[int, float]], ts: int) -> tuple[float, ...]:
    """The windows of ``ts`` by brute force over every (t, amount) ever seen by the customer."""
    day = [(t, a) for t, a in entries if ts - DAY < t <= ts]
    hour = [a for t, a in day if ts - HOUR < t]
    minute = [a for t, a in day if ts - MIN < t]
    return len(minute), len(hour), len(day), log1p(sum(hour)), log1p(sum(a for _, a in day))


def test_a_long_queue_is_compacted_without_losing_its_late_entries() -> None:
    """300 entries a minute apart, every tenth one 90 s late (before its predecessor), then one a
    day later that trims the first 200: the queue is compacted, and a late entry that remains is
    still excluded at exactly 24 h and included a millisecond before."""
    entries = [(T + i * MIN - (90_000 if i % 10 == 5 else 0), float(i + 1)) for i in range(300)]
    entries.append((T + DAY + 199 * MIN, 1.0))
    state = history(*entries)
    h = state.customers["c"]
    assert h.start == 0 and len(h.times) == 101  # compacted: the premise of this test
    assert h.recent == entries[200:]
    late = entries[255][0]
    for ts in (late + DAY, late + DAY - 1, late + DAY + HOUR, late + DAY + HOUR - 1, T + DAY + 250 * MIN):
        assert windows(state, ts) == scan(entries, ts), ts
    assert windows(state, late + DAY)[2] + 1 == windows(state, late + DAY - 1)[2]


@pytest.mark.parametrize(
    ("queued", "trimmed", "compacted"),
    [(126, 64, False), (127, 64, False), (129, 65, False), (128, 65, True), (200, 150, True)],
)
def test_the_queue_is_compacted_once_more_than_64_trimmed_entries_are_over_half_of_it(
    queued: int, trimmed: int, compacted: bool
) -> None:
    """``queued`` entries 1 ms apart, then one that trims the first ``trimmed`` (memory bound)."""
    entries = [(T + i, 1.0) for i in range(queued)] + [(T + trimmed - 1 + DAY, 2.0)]
    h = history(*entries).customers["c"]
    assert (h.start, len(h.times)) == ((0, queued + 1 - trimmed) if compacted else (trimmed, queued + 1))
    assert h.recent == entries[trimmed:]


def test_an_entry_at_the_newest_time_is_not_out_of_order() -> None:
    h = history((T, 1.0), (T, 2.0), (T - 1, 4.0), (T, 8.0)).customers["c"]
    assert (h.late, h.reach) == ([2], [T, T, T, T])


def test_a_card_used_on_the_device_exactly_an_hour_ago_is_not_counted() -> None:
    state = history((T, 10.0), device_id="d", card_id="k1")

    def cards(ts: int, card: str | None) -> float:
        return compute(state, tx(9, ts, 1.0, customer="other", device_id="d", card_id=card), PREFIXES)[
            "distinct_cards_device_1h"
        ]

    assert cards(T + HOUR - 1, "k2") == 2.0
    assert cards(T + HOUR, "k2") == 1.0  # only its own card
    assert cards(T, "k2") == 2.0  # used at the same millisecond: inside
    assert cards(T - 1, "k2") == 1.0  # a later use is not "in the last hour" of an earlier time
    assert cards(T + 1, "k1") == 1.0  # its own card is counted once
    assert cards(T + 1, None) == 1.0  # no card: the others only
    assert cards(T + HOUR, None) == 0.0


def test_distinct_cards_without_a_device() -> None:
    state = history((T, 10.0), device_id="d", card_id="k1")
    no_device = compute(state, tx(9, T + 1, 1.0, card_id="k2"), PREFIXES)
    assert no_device["distinct_cards_device_1h"] == 1.0 and no_device["device_missing"] == 1.0
    neither = compute(state, tx(9, T + 1, 1.0), PREFIXES)
    assert neither["distinct_cards_device_1h"] == 0.0
    assert neither["device_missing"] == 1.0 and neither["card_missing"] == 1.0


def test_a_device_keeps_the_newest_use_of_each_card() -> None:
    """k1 at T + 100, then k1 again late at T: the device remembers T + 100."""
    state = FeatureState()
    update(state, tx(0, T + 100, device_id="d", card_id="k1"))
    update(state, tx(1, T, device_id="d", card_id="k1"))
    assert state.device_cards == {"d": {"k1": T + 100}}
    query = compute(state, tx(2, T + HOUR + 50, 1.0, device_id="d", card_id="k2"), PREFIXES)
    assert query["distinct_cards_device_1h"] == 2.0


def test_a_device_forgets_cards_last_used_24_h_before_the_newest_use() -> None:
    state = FeatureState()
    update(state, tx(0, T, device_id="d", card_id="k1"))
    update(state, tx(1, T + DAY - 1, device_id="d", card_id="k2"))
    assert state.device_cards == {"d": {"k1": T, "k2": T + DAY - 1}}
    update(state, tx(2, T + DAY, device_id="d", card_id="k3"))
    assert state.device_cards == {"d": {"k2": T + DAY - 1, "k3": T + DAY}}
    # Observable: a late transaction at T + 10 no longer sees k1.
    late = compute(state, tx(3, T + 10, 1.0, device_id="d", card_id="k4"), PREFIXES)
    assert late["distinct_cards_device_1h"] == 1.0


def test_a_device_with_one_card_keeps_it_and_a_device_without_cards_is_known() -> None:
    state = FeatureState()
    update(state, tx(0, T, device_id="d", card_id="k1"))
    update(state, tx(1, T + 2 * DAY, device_id="d", card_id="k1"))
    update(state, tx(2, T + 2 * DAY, device_id="e"))
    assert state.device_cards == {"d": {"k1": T + 2 * DAY}, "e": {}}
    update(state, tx(3, T + 3 * DAY - 1, device_id="d", card_id="k2"))
    assert state.device_cards["d"] == {"k1": T + 2 * DAY, "k2": T + 3 * DAY - 1}
    update(state, tx(4, T + 3 * DAY, device_id="d", card_id="k2"))
    assert state.device_cards["d"] == {"k2": T + 3 * DAY}


@pytest.mark.parametrize(
    ("offset", "night"),
    [(0, 1.0), (6 * HOUR - 1, 1.0), (6 * HOUR, 0.0), (12 * HOUR, 0.0), (DAY - 1, 0.0), (DAY, 1.0),
     (DAY + 5 * HOUR, 1.0), (DAY + 7 * HOUR, 0.0), (-1, 0.0), (-HOUR, 0.0), (-6 * HOUR - 1, 0.0)],
)  # fmt: skip
def test_night_is_hours_0_to_5_utc(offset: int, night: float) -> None:
    assert compute(FeatureState(), tx(0, T + offset), PREFIXES)["night"] == night


def test_the_amount_history_is_an_exponentially_weighted_mean_and_variance_of_log_amounts() -> None:
    """z = (log1p(amount) - mean) / sqrt(var + 0.05); after each transaction, with d = its
    log1p(amount) - mean: mean += 0.1 d, var = 0.9 (var + 0.1 d^2); the first sets mean, var 0."""
    amounts = [9.0, 99.0, 4.0]
    state = FeatureState()
    first = advance(state, as_transaction(tx(0, T, amounts[0])), PREFIXES)
    assert first[FEATURES.index("amount_z")] == 0.0
    h = state.customers["c"]
    assert (h.ew_mean, h.ew_var, h.n) == (log1p(9.0), 0.0, 1)
    second = compute(state, tx(1, T + 1, amounts[1]), PREFIXES)
    assert second["amount_z"] == pytest.approx((log1p(99) - log1p(9)) / sqrt(0.05), rel=1e-12)
    advance(state, as_transaction(tx(1, T + 1, amounts[1])), PREFIXES)
    d = log1p(99) - log1p(9)
    mean, var = log1p(9) + 0.1 * d, 0.9 * (0.0 + 0.1 * d * d)
    assert (h.ew_mean, h.ew_var, h.n) == (pytest.approx(mean, rel=1e-12), pytest.approx(var, rel=1e-12), 2)
    third = compute(state, tx(2, T + 2, amounts[2]), PREFIXES)
    assert third["amount_z"] == pytest.approx((log1p(4) - mean) / sqrt(var + 0.05), rel=1e-12)
    update(state, tx(2, T + 2, amounts[2]))
    d3 = log1p(4) - mean
    assert h.ew_mean == pytest.approx(mean + 0.1 * d3, rel=1e-12)
    assert h.ew_var == pytest.approx(0.9 * (var + 0.1 * d3 * d3), rel=1e-12)


def test_a_whole_feature_vector_by_hand() -> None:
    state = FeatureState()
    update(state, tx(0, T + 7 * HOUR, 30.0, device_id="d1", card_id="k1", basket_items=2))
    row = features_of(
        state,
        as_transaction(
            tx(
                1,
                T + 7 * HOUR + 30_000,
                50.0,
                device_id="d2",
                card_id="k1",
                ip="105.1.2.3",
                billing_country="DE",
                shipping_country="AT",
                basket_items=3,
                is_new_customer=False,
                payment_method="paypal",
            )
        ),
        PREFIXES,
    )
    expected = {
        "log_amount": log1p(50.0),
        "count_1m": 1.0, "count_1h": 1.0, "count_24h": 1.0,
        "log_sum_1h": log1p(30.0), "log_sum_24h": log1p(30.0),
        "amount_z": (log1p(50.0) - log1p(30.0)) / sqrt(0.05),
        "no_history": 0.0,
        "distinct_cards_device_1h": 1.0, "device_missing": 0.0, "new_device": 1.0,
        "card_missing": 0.0, "new_card": 0.0,
        "is_new_customer": 0.0, "is_new_customer_missing": 0.0,
        "billing_shipping_mismatch": 1.0, "shipping_missing": 0.0,
        "billing_ip_mismatch": 1.0, "ip_missing": 0.0,
        "basket_items": 3.0, "basket_items_missing": 0.0,
        "night": 0.0,
        "pm_invoice": 0.0, "pm_card": 0.0, "pm_paypal": 1.0, "pm_prepaid": 0.0, "pm_direct_debit": 0.0,
    }  # fmt: skip
    assert dict(zip(FEATURES, row, strict=True)) == pytest.approx(expected, rel=1e-12)


def test_a_first_transaction_and_its_imputed_fields_by_hand() -> None:
    row = compute(FeatureState(), tx(0, T + 3 * HOUR, 5.0, card_id="k", ip="10.0.0.1",
                                     billing_country="DE", shipping_country="DE",
                                     basket_items=0, payment_method="direct_debit"), PREFIXES)  # fmt: skip
    expected = {
        "log_amount": log1p(5.0),
        "count_1m": 0.0, "count_1h": 0.0, "count_24h": 0.0, "log_sum_1h": 0.0, "log_sum_24h": 0.0,
        "amount_z": 0.0, "no_history": 1.0,
        "distinct_cards_device_1h": 1.0, "device_missing": 1.0, "new_device": 0.0,
        "card_missing": 0.0, "new_card": 0.0,
        "is_new_customer": 1.0, "is_new_customer_missing": 1.0,  # no history: taken as new
        "billing_shipping_mismatch": 0.0, "shipping_missing": 0.0,
        "billing_ip_mismatch": 0.0, "ip_missing": 1.0,  # 10.x is in no prefix
        "basket_items": 0.0, "basket_items_missing": 0.0,
        "night": 1.0,
        "pm_invoice": 0.0, "pm_card": 0.0, "pm_paypal": 0.0, "pm_prepaid": 0.0, "pm_direct_debit": 1.0,
    }  # fmt: skip
    assert row == expected


def test_new_device_and_card_and_known_customer_flags() -> None:
    state = history((T, 10.0), device_id="d", card_id="k")
    same = compute(state, tx(1, T + 1, device_id="d", card_id="k", ip="31.0.0.1",
                             billing_country="DE", is_new_customer=True), PREFIXES)  # fmt: skip
    assert (same["new_device"], same["new_card"], same["billing_ip_mismatch"], same["ip_missing"]) == (
        0,
        0,
        0,
        0,
    )
    assert (same["is_new_customer"], same["is_new_customer_missing"]) == (1.0, 0.0)
    other = compute(state, tx(1, T + 1, device_id="e", card_id="j", ip="31.0.0.1"), PREFIXES)
    assert (other["new_device"], other["new_card"], other["is_new_customer"]) == (1.0, 1.0, 0.0)
    assert other["billing_ip_mismatch"] == 0.0  # no billing country: no mismatch
    assert other["shipping_missing"] == 1.0 and other["billing_shipping_mismatch"] == 0.0
    empty = compute(state, tx(1, T + 1, device_id="", card_id="", ip=""), PREFIXES)
    assert (empty["new_device"], empty["new_card"], empty["device_missing"], empty["card_missing"]) == (
        0,
        0,
        1,
        1,
    )
    assert empty["distinct_cards_device_1h"] == 0.0 and empty["ip_missing"] == 1.0


def test_payment_methods_are_one_hot_and_an_unknown_one_is_all_zeros() -> None:
    def one_hot(method: str) -> list[float]:
        row = compute(FeatureState(), tx(0, T, payment_method=method), PREFIXES)
        return [row[f"pm_{m}"] for m in ("invoice", "card", "paypal", "prepaid", "direct_debit")]

    assert one_hot("invoice") == [1, 0, 0, 0, 0] and one_hot("prepaid") == [0, 0, 0, 1, 0]
    assert one_hot("crypto") == [0, 0, 0, 0, 0]  # not in the schema: a dict handed in as it is


def test_ip_country_is_the_first_octet_looked_up() -> None:
    assert ip_country("105.1.2.3", PREFIXES) == "NG"
    assert ip_country("1051.2.3", PREFIXES) is None
    assert ip_country("31", PREFIXES) == "DE"
    assert ip_country("", PREFIXES) is None and ip_country(None, PREFIXES) is None


def test_advance_scores_before_it_folds() -> None:
    state = FeatureState()
    rows = [advance(state, as_transaction(tx(i, T + i, 10.0)), PREFIXES) for i in range(3)]
    assert [row[FEATURES.index("count_1m")] for row in rows] == [0.0, 1.0, 2.0]
    assert state.customers["c"].recent == [(T, 10.0), (T + 1, 10.0), (T + 2, 10.0)]
    assert state.customers["c"].n == 3


# The label join, through the processor (pure): a label waits for its transaction until the
# partition's watermark reaches the label's time; a decision older than the horizon is forgotten.


def processor(horizon: int) -> FraudProcessor:
    model = FraudModel.load(load_settings().fraud.model_file)
    return FraudProcessor(model, DecisionPolicy(), PREFIXES, "v", label_horizon_ms=horizon)


def label(tx_number: int, ts: int) -> dict[str, Any]:
    return {"transaction_id": f"t{tx_number}", "customer_id": "c", "ts": ts, "is_fraud": True,
            "source": "chargeback"}  # fmt: skip


def test_a_label_is_an_orphan_once_the_watermark_reaches_its_time() -> None:
    fraud = processor(90 * DAY)
    out = fraud.process([(tx(0, T), 0)], [(label(5, T + HOUR), 0)])
    assert out.orphans == 0 and out.label_transactions == []
    assert fraud.process([(tx(1, T + HOUR - 1), 0)], []).orphans == 0  # one millisecond short
    assert fraud.process([(tx(2, T + HOUR), 0)], []).orphans == 1
    assert fraud.state(0).labels.waiting == {}


def test_a_waiting_label_joins_when_its_transaction_arrives_and_labels_keep_their_order() -> None:
    fraud = processor(90 * DAY)
    out = fraud.process([(tx(0, T), 0)], [(label(1, T + 5), 0), (label(0, T + 9), 0), (label(1, T + 7), 0)])
    assert [(row["transaction_id"], row["label_ts"]) for row in out.label_transactions] == [("t0", T + 9)]
    out = fraud.process([(tx(1, T + 1), 0)], [])
    assert [(row["transaction_id"], row["label_ts"]) for row in out.label_transactions] == [
        ("t1", T + 5),
        ("t1", T + 7),
    ]
    assert out.label_cohort[0]["cohort_day"] == T // DAY and out.orphans == 0


def dedupe_processor(dedupe: int, label_horizon: int = 90 * DAY) -> FraudProcessor:
    model = FraudModel.load(load_settings().fraud.model_file)
    return FraudProcessor(model, DecisionPolicy(), PREFIXES, "v", label_horizon_ms=label_horizon,
                          dedupe_horizon_ms=dedupe)  # fmt: skip


def test_an_id_is_a_duplicate_while_its_decision_is_within_the_dedupe_horizon_of_the_watermark() -> None:
    fraud = dedupe_processor(HOUR)
    fraud.process([(tx(0, T), 0), (tx(1, T + HOUR), 0)], [])
    assert fraud.process([(tx(0, T + HOUR), 0)], []).duplicates == 1  # exactly the horizon old: in
    fraud.process([(tx(2, T + HOUR + 1), 0)], [])  # the watermark moves one past it
    again = fraud.process([(tx(0, T + HOUR + 2), 0)], [])
    assert again.duplicates == 0 and len(again.scores) == 1  # decided anew
    assert fraud.process([(tx(0, T + HOUR + 3), 0)], []).duplicates == 1  # and a duplicate of that


def test_the_dedupe_rule_does_not_depend_on_when_decisions_are_forgotten() -> None:
    """Whether the pipeline drained (and so forgot) between two copies or not, the verdict is the
    watermark's: the copy two hours later is a new decision both ways."""
    verdicts = []
    for drain in (False, True):
        fraud = dedupe_processor(HOUR)
        fraud.process([(tx(0, T), 0), (tx(1, T + 2 * HOUR), 0)], [], [0, 1])
        if drain:
            fraud.seal(), fraud.seal()  # durable after the second drain: forgotten
            assert "t0" not in fraud.state(0).decisions
        verdicts.append(fraud.process([(tx(0, T + 2 * HOUR), 0)], [], [2]).duplicates)
    assert verdicts == [0, 0]


def test_a_label_joins_a_decision_at_most_the_label_horizon_older_than_the_label() -> None:
    fraud = dedupe_processor(HOUR, label_horizon=DAY)
    fraud.process([(tx(0, T), 0), (tx(1, T + 1), 0)], [])
    out = fraud.process([], [(label(0, T + DAY), 0), (label(1, T + DAY + 2), 0)])
    assert [row["transaction_id"] for row in out.label_transactions] == ["t0"]  # exactly a day: in
    assert out.orphans == 1  # a day and a millisecond: out


def test_decisions_are_forgotten_past_the_dedupe_horizon_only_once_drained_twice() -> None:
    """Drained once: their rows are being written. Drained twice: durable, and forgotten if past
    the horizon; in time order, an out-of-order decision by its own time."""
    fraud = dedupe_processor(HOUR)
    fraud.process([(tx(0, T + 10), 0), (tx(1, T), 0), (tx(2, T + HOUR), 0), (tx(3, T + HOUR + 1), 0)], [])
    fraud.seal()
    assert list(fraud.state(0).decisions) == ["t0", "t1", "t2", "t3"]  # not durable yet
    fraud.process([(tx(4, T + HOUR + 11), 0)], [])
    fraud.seal()  # t0 (T + 10) and t1 (T) are past T + 11; t4 is not durable yet
    assert list(fraud.state(0).decisions) == ["t2", "t3", "t4"]
    fraud.process([(tx(5, T + 2 * HOUR + 11), 0)], [])
    fraud.seal()
    assert list(fraud.state(0).decisions) == ["t4", "t5"]  # t4 (T + HOUR + 11) is exactly in
    fraud.process([(tx(6, T + 4 * HOUR), 0)], [])
    fraud.seal()
    assert list(fraud.state(0).decisions) == ["t6"]


def test_a_rebuild_seals_what_it_folds_but_only_its_own_partition() -> None:
    fraud = dedupe_processor(HOUR)
    fraud.process([(tx(0, T), 0), (tx(1, T + 2 * HOUR), 0), (tx(2, T), 1), (tx(3, T + 2 * HOUR), 1)], [])
    fraud.seal([0], durable=True)
    assert list(fraud.state(0).decisions) == ["t1"] and list(fraud.state(1).decisions) == ["t2", "t3"]


def archived(ts: int, partition: int, offset: int | None) -> Any:
    from streams.fraud.processor import Archived

    return Archived(ts, partition, offset)


def test_a_label_of_a_forgotten_decision_joins_the_archived_row_decided_earlier_in_the_log() -> None:
    fraud = dedupe_processor(HOUR)
    fraud.process([(tx(0, T), 0), (tx(1, T + 2 * HOUR), 0)], [], [40, 41])
    fraud.seal(), fraud.seal()
    assert fraud.unknown(0, ["t0", "t1"]) == ["t0"]
    fraud.looked_up[0] = {"t0": archived(T, 0, 40)}
    out = fraud.process([], [(label(0, T + 3 * HOUR), 0)])
    assert [(r["transaction_id"], r["cohort_day"]) for r in out.label_cohort] == [("t0", T // DAY)]
    assert fraud.looked_up == {}  # used for one fold only


@pytest.mark.parametrize(
    ("row", "why"),
    [
        (archived(T, 0, 42), "written ahead of the fold (a crash before the commit)"),
        (archived(T, 1, 40), "decided in another partition"),
        (archived(T, 0, None), "from code that did not record offsets"),
    ],
)
def test_an_archived_row_the_log_did_not_decide_here_before_does_not_join(row: Any, why: str) -> None:
    fraud = dedupe_processor(HOUR)
    fraud.process([(tx(1, T + 2 * HOUR), 0)], [], [41])
    fraud.looked_up[0] = {"t0": row}
    out = fraud.process([], [(label(0, T + HOUR), 0)])
    assert out.label_transactions == [] and out.orphans == 1, why


# The history horizon: a customer idle beyond it is new again, so is a device or card not used
# within it; a card counts on a device only if used after the watermark minus a day.


def test_a_customer_idle_beyond_the_history_horizon_is_new_again() -> None:
    state = FeatureState(horizon_ms=DAY)
    for i, ts in enumerate((T, T + 5 * DAY)):  # the other customer moves the watermark
        advance(state, as_transaction(tx(i, ts, customer="c" if i == 0 else "other")), PREFIXES)
    row = compute(state, tx(9, T + 5 * DAY, device_id="d"), PREFIXES)
    assert row["no_history"] == 1.0 and row["amount_z"] == 0.0
    state2 = FeatureState(horizon_ms=DAY)
    advance(state2, as_transaction(tx(0, T)), PREFIXES)
    advance(state2, as_transaction(tx(1, T + DAY, customer="other")), PREFIXES)
    assert compute(state2, tx(9, T + DAY), PREFIXES)["no_history"] == 0.0  # exactly the horizon: known


def test_a_device_or_card_not_used_within_the_history_horizon_is_new_again() -> None:
    state = FeatureState(horizon_ms=2 * DAY)
    advance(state, as_transaction(tx(0, T, device_id="d", card_id="k")), PREFIXES)
    advance(state, as_transaction(tx(1, T + DAY + 1, device_id="e", card_id="m")), PREFIXES)
    assert compute(state, tx(2, T + 2 * DAY, device_id="d", card_id="k"), PREFIXES)["new_device"] == 0.0
    advance(state, as_transaction(tx(3, T + 2 * DAY + 1, device_id="e", card_id="m")), PREFIXES)
    row = compute(state, tx(4, T + 2 * DAY + 1, device_id="d", card_id="k"), PREFIXES)
    assert (row["new_device"], row["new_card"], row["no_history"]) == (1.0, 1.0, 0.0)


def test_a_card_last_used_a_day_before_the_watermark_no_longer_counts_on_its_device() -> None:
    state = FeatureState()
    advance(state, as_transaction(tx(0, T, device_id="d", card_id="k1")), PREFIXES)
    advance(state, as_transaction(tx(1, T + DAY, customer="other")), PREFIXES)
    late = tx(2, T + 1, device_id="d", card_id="k2")  # a day late: k1 was used a millisecond before
    assert compute(state, late, PREFIXES)["distinct_cards_device_1h"] == 1.0
    state2 = FeatureState()
    advance(state2, as_transaction(tx(0, T + 1, device_id="d", card_id="k1")), PREFIXES)
    advance(state2, as_transaction(tx(1, T + DAY, customer="other")), PREFIXES)
    assert (
        compute(state2, tx(2, T + 2, device_id="d", card_id="k2"), PREFIXES)["distinct_cards_device_1h"]
        == 2.0
    )


def test_a_sweep_at_each_new_event_hour_forgets_what_no_feature_reads() -> None:
    state = FeatureState(horizon_ms=DAY)
    advance(state, as_transaction(tx(0, T, device_id="d", card_id="k")), PREFIXES)
    advance(state, as_transaction(tx(1, T + DAY, customer="other")), PREFIXES)  # swept: c is in
    advance(state, as_transaction(tx(2, T + DAY + HOUR - 1, customer="other")), PREFIXES)
    assert set(state.customers) == {"c", "other"}  # c is idle now, but no new hour: not swept
    advance(state, as_transaction(tx(3, T + DAY + HOUR, customer="other")), PREFIXES)
    assert set(state.customers) == {"other"} and state.device_cards == {}
