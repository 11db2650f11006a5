"""The fraud tests' scenario clock, their plain re-statement of the transaction contract, and an
oracle of what the worker must store for each transaction, computed independently of its code."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.settings import Settings

DAY = 86_400_000
START = 1_767_225_600_000  # 2026-01-01T00:00Z


def oracle_valid_transaction(raw: bytes | None) -> dict[str, Any] | None:
    try:
        tx = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None
    ok = (
        isinstance(tx, dict)
        and all(isinstance(tx.get(f), str) and tx[f] for f in ("transaction_id", "customer_id"))
        and isinstance(tx.get("amount"), int | float)
        and tx["amount"] > 0
        and tx.get("payment_method") in ("invoice", "card", "paypal", "prepaid", "direct_debit")
        and isinstance(tx.get("ts"), int)
    )
    return tx if ok else None


# The scoring contract restated plainly, from the pinned files and the settings (not the worker's
# code): each feature by a scan of everything its partition saw before the transaction, the model
# as written in its JSON file, and the decision policy with its holdout draw. The horizons, with W
# the partition's newest decided time before the transaction: a customer, device or card last seen
# before W minus the history horizon is new; a card counts on a device only if used after W minus
# a day; an id decided at or after W minus the dedupe horizon is a duplicate.
MIN, HOUR = 60_000, 3_600_000
PAYMENT_METHODS = ("invoice", "card", "paypal", "prepaid", "direct_debit")
HOLDOUT_SALT = "holdout-v1"


@dataclass(frozen=True)
class Scored:
    """What the worker must store for one transaction."""

    score: float
    decision: str
    holdout: bool
    features: list[float]
    is_fraud: bool | None  # its label's verdict, None if it has none


@dataclass
class _Customer:
    seen: list[tuple[int, float]] = field(default_factory=list)  # (ts, amount), arrival order
    ew_mean: float = 0.0  # of log1p(amount), weight 0.1 for the newest
    ew_var: float = 0.0
    devices: dict[str, int] = field(default_factory=dict)  # -> the newest time used
    cards: dict[str, int] = field(default_factory=dict)

    def newest(self) -> int:
        return max(t for t, _ in self.seen)


@dataclass
class _Horizon:
    watermark: int | None
    history_ms: int

    def known(self, seen: dict[str, int], key: str | None) -> bool:
        return bool(key) and key in seen and (self.watermark is None or seen[key] >= self.since)

    @property
    def since(self) -> int:
        return -(2**63) if self.watermark is None else self.watermark - self.history_ms


DeviceCards = dict[str, dict[str, int]]  # device -> card -> the newest time it was used on it


def _features(
    tx: dict[str, Any], customer: _Customer | None, device_cards: DeviceCards, prefixes: dict[str, str],
    horizon: _Horizon,
) -> list[float]:  # fmt: skip
    ts, log_amount = tx["ts"], math.log1p(tx["amount"])
    device, card, ip = tx.get("device_id"), tx.get("card_id"), tx.get("ip")
    earlier = customer.seen if customer else []

    def within(window: int) -> list[float]:
        return [amount for t, amount in earlier if ts - window < t <= ts]

    if device:
        stale = -(2**63) if horizon.watermark is None else horizon.watermark - DAY
        after = max(ts - HOUR, stale)
        others = [c for c, last in device_cards.get(device, {}).items() if c != card and after < last <= ts]
        cards_on_device = float(len(others) + (1 if card else 0))
    else:
        cards_on_device = 1.0 if card else 0.0
    billing, shipping = tx.get("billing_country"), tx.get("shipping_country")
    ip_country = prefixes.get(ip.split(".")[0]) if ip else None
    new_customer, basket = tx.get("is_new_customer"), tx.get("basket_items")
    return [
        log_amount,
        float(len(within(MIN))),
        float(len(within(HOUR))),
        float(len(within(DAY))),
        math.log1p(sum(within(HOUR))),
        math.log1p(sum(within(DAY))),
        (log_amount - customer.ew_mean) / math.sqrt(customer.ew_var + 0.05) if customer else 0.0,
        0.0 if customer else 1.0,
        cards_on_device,
        0.0 if device else 1.0,
        1.0 if customer and device and not horizon.known(customer.devices, device) else 0.0,
        0.0 if card else 1.0,
        1.0 if customer and card and not horizon.known(customer.cards, card) else 0.0,
        float(new_customer) if new_customer is not None else (0.0 if customer else 1.0),
        1.0 if new_customer is None else 0.0,
        1.0 if billing and shipping and billing != shipping else 0.0,
        0.0 if shipping else 1.0,
        1.0 if billing and ip_country and billing != ip_country else 0.0,
        0.0 if ip_country else 1.0,
        float(basket) if basket is not None else 1.0,
        1.0 if basket is None else 0.0,
        1.0 if ts // HOUR % 24 < 6 else 0.0,
        *(1.0 if tx["payment_method"] == method else 0.0 for method in PAYMENT_METHODS),
    ]


def _remember(tx: dict[str, Any], customer: _Customer, device_cards: DeviceCards) -> None:
    log_amount = math.log1p(tx["amount"])
    if not customer.seen:
        customer.ew_mean, customer.ew_var = log_amount, 0.0
    else:
        delta = log_amount - customer.ew_mean
        customer.ew_mean += 0.1 * delta
        customer.ew_var = 0.9 * (customer.ew_var + 0.1 * delta * delta)
    customer.seen.append((tx["ts"], tx["amount"]))
    device, card = tx.get("device_id"), tx.get("card_id")
    if device:
        customer.devices[device] = max(customer.devices.get(device, tx["ts"]), tx["ts"])
        if card:
            cards = device_cards.setdefault(device, {})
            cards[card] = max(cards.get(card, tx["ts"]), tx["ts"])
    if card:
        customer.cards[card] = max(customer.cards.get(card, tx["ts"]), tx["ts"])


def _decide(settings: Settings, transaction_id: str, score: float) -> tuple[str, bool]:
    f = settings.fraud
    if score < f.disable_invoice_at:
        return "allow", False
    digest = hashlib.blake2b(f"{HOLDOUT_SALT}:{transaction_id}".encode(), digest_size=8).digest()
    if int.from_bytes(digest, "big") / 2**64 < f.holdout_share:
        return "allow", True
    return ("review" if score >= f.review_at else "disable_invoice"), False


Partitions = Mapping[int, Sequence[tuple[int, bytes | None]]]


def fraud_oracle(settings: Settings, transactions: Partitions, labels: Partitions) -> dict[str, Scored]:
    """transaction id -> what the worker must store, from the raw topics read back per partition."""
    model = json.loads(settings.fraud.model_file.read_text())
    prefixes = json.loads(settings.fraud.ip_countries_file.read_text())["prefixes"]
    a, b = model["calibration"]
    terms = list(zip(model["mean"], model["scale"], model["coef"], strict=True))
    dedupe_ms = settings.fraud.dedupe_horizon_hours * HOUR
    history_ms = settings.fraud.history_horizon_days * DAY
    result: dict[str, Scored] = {}
    for partition, records in transactions.items():
        customers: dict[str, _Customer] = {}
        device_cards: DeviceCards = {}
        verdicts: dict[str, bool] = {}
        for _, raw in labels.get(partition, []):
            label = orjson.loads(raw or b"")
            verdicts[label["transaction_id"]] = label["is_fraud"]
        decided: dict[str, int] = {}  # id -> the time of its newest decision
        watermark: int | None = None
        for _, raw in records:
            tx = oracle_valid_transaction(raw)
            if tx is None:
                continue
            tx_id = tx["transaction_id"]
            if tx_id in decided and watermark is not None and decided[tx_id] >= watermark - dedupe_ms:
                continue  # a duplicate
            horizon = _Horizon(watermark, history_ms)
            customer = customers.get(tx["customer_id"])
            if customer is not None and watermark is not None and customer.newest() < horizon.since:
                customer = customers[tx["customer_id"]] = _Customer()  # idle beyond the horizon: new
            features = _features(tx, customer if customer and customer.seen else None, device_cards, prefixes,
                                 horizon)  # fmt: skip
            _remember(tx, customers.setdefault(tx["customer_id"], _Customer()), device_cards)
            decided[tx_id] = tx["ts"]
            watermark = tx["ts"] if watermark is None else max(watermark, tx["ts"])
            margin = sum((x - m) / s * c for x, (m, s, c) in zip(features, terms, strict=True))
            score = 1 / (1 + math.exp(-(a * (margin + model["intercept"]) + b)))
            decision, holdout = _decide(settings, tx_id, score)
            result[tx_id] = Scored(score, decision, holdout, features, verdicts.get(tx_id))
    return result
