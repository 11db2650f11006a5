"""Per-transaction fraud features from per-partition state. Pure and deterministic.

State is keyed by customer (transactions and labels are keyed by ``customer_id``, so a
customer's whole history lives in one partition). Device features (distinct cards per device)
are *partition-local*: a device used by customers in other partitions is not seen here; an exact
view would need a re-keyed topic, whose interleaving would make replays non-deterministic.

Features of a transaction use only what came before it in the partition: the customer's
history is updated after scoring, so a transaction never leaks into its own score.

Missing optional fields are imputed with documented defaults and flagged:
amount z-score 0 without history, basket_items 1, unknown device/card/ip/country -> no
mismatch and not new, is_new_customer -> "no history in state".
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
EW_ALPHA = 0.1  # weight of the newest amount in the customer's exponentially weighted history
PAYMENT_METHODS = ("invoice", "card", "paypal", "prepaid", "direct_debit")

FEATURES: tuple[str, ...] = (
    "log_amount",
    "count_1m",
    "count_1h",
    "count_24h",
    "log_sum_1h",
    "log_sum_24h",
    "amount_z",
    "no_history",
    "distinct_cards_device_1h",
    "device_missing",
    "new_device",
    "card_missing",
    "new_card",
    "is_new_customer",
    "is_new_customer_missing",
    "billing_shipping_mismatch",
    "shipping_missing",
    "billing_ip_mismatch",
    "ip_missing",
    "basket_items",
    "basket_items_missing",
    "night",
    *(f"pm_{m}" for m in PAYMENT_METHODS),
)


@dataclass
class CustomerHistory:
    recent: deque[tuple[int, float]] = field(default_factory=deque)  # (ts, amount), last 24 h
    ew_mean: float = 0.0  # of log(amount)
    ew_var: float = 0.0
    n: int = 0
    devices: set[str] = field(default_factory=set)
    cards: set[str] = field(default_factory=set)


@dataclass
class FeatureState:
    """One partition's feature state."""

    customers: dict[str, CustomerHistory] = field(default_factory=dict)
    device_cards: dict[str, dict[str, int]] = field(default_factory=dict)  # device -> card -> last ts


def ip_country(ip: str | None, prefixes: Mapping[str, str]) -> str | None:
    if not ip:
        return None
    return prefixes.get(ip.split(".", 1)[0])


def compute(state: FeatureState, tx: Mapping[str, Any], prefixes: Mapping[str, str]) -> dict[str, float]:
    """The feature vector of ``tx`` from what the partition saw before it (state is not changed)."""
    ts, amount = tx["ts"], float(tx["amount"])
    history = state.customers.get(tx["customer_id"])
    recent = [(t, a) for t, a in history.recent if ts - DAY < t <= ts] if history else []
    in_hour = [(t, a) for t, a in recent if t > ts - HOUR]
    log_amount = math.log1p(amount)
    has_history = history is not None and history.n > 0
    z = 0.0
    if has_history and history is not None:
        z = (log_amount - history.ew_mean) / math.sqrt(history.ew_var + 0.05)
    device, card = tx.get("device_id"), tx.get("card_id")
    cards_on_device = state.device_cards.get(device, {}) if device else {}
    distinct_cards = len(
        {c for c, last in cards_on_device.items() if ts - HOUR < last <= ts} | ({card} if card else set())
    )
    billing, shipping = tx.get("billing_country"), tx.get("shipping_country")
    from_ip = ip_country(tx.get("ip"), prefixes)
    basket = tx.get("basket_items")
    new_customer = tx.get("is_new_customer")
    hour = (ts // HOUR) % 24
    features = {
        "log_amount": log_amount,
        "count_1m": float(sum(1 for t, _ in recent if t > ts - MIN)),
        "count_1h": float(len(in_hour)),
        "count_24h": float(len(recent)),
        "log_sum_1h": math.log1p(sum(a for _, a in in_hour)),
        "log_sum_24h": math.log1p(sum(a for _, a in recent)),
        "amount_z": z,
        "no_history": 0.0 if has_history else 1.0,
        "distinct_cards_device_1h": float(distinct_cards),
        "device_missing": 0.0 if device else 1.0,
        "new_device": 1.0 if device and has_history and history and device not in history.devices else 0.0,
        "card_missing": 0.0 if card else 1.0,
        "new_card": 1.0 if card and has_history and history and card not in history.cards else 0.0,
        "is_new_customer": float(new_customer) if new_customer is not None else (0.0 if has_history else 1.0),
        "is_new_customer_missing": 1.0 if new_customer is None else 0.0,
        "billing_shipping_mismatch": 1.0 if billing and shipping and billing != shipping else 0.0,
        "shipping_missing": 0.0 if shipping else 1.0,
        "billing_ip_mismatch": 1.0 if billing and from_ip and billing != from_ip else 0.0,
        "ip_missing": 0.0 if from_ip else 1.0,
        "basket_items": float(basket) if basket is not None else 1.0,
        "basket_items_missing": 1.0 if basket is None else 0.0,
        "night": 1.0 if hour < 6 else 0.0,
    }
    for method in PAYMENT_METHODS:
        features[f"pm_{method}"] = 1.0 if tx["payment_method"] == method else 0.0
    return features


def update(state: FeatureState, tx: Mapping[str, Any]) -> None:
    """Fold ``tx`` into the state, after it has been scored."""
    ts, amount = tx["ts"], float(tx["amount"])
    history = state.customers.setdefault(tx["customer_id"], CustomerHistory())
    history.recent.append((ts, amount))
    newest = max(t for t, _ in history.recent)
    while history.recent and history.recent[0][0] <= newest - DAY:
        history.recent.popleft()
    log_amount = math.log1p(amount)
    if history.n == 0:
        history.ew_mean, history.ew_var = log_amount, 0.0
    else:
        delta = log_amount - history.ew_mean
        history.ew_mean += EW_ALPHA * delta
        history.ew_var = (1 - EW_ALPHA) * (history.ew_var + EW_ALPHA * delta * delta)
    history.n += 1
    if tx.get("device_id"):
        history.devices.add(tx["device_id"])
        cards = state.device_cards.setdefault(tx["device_id"], {})
        if tx.get("card_id"):
            cards[tx["card_id"]] = max(cards.get(tx["card_id"], ts), ts)
            for card, last in list(cards.items()):
                if last <= ts - DAY:
                    del cards[card]
    if tx.get("card_id"):
        history.cards.add(tx["card_id"])
