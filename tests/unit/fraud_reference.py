"""The executable specification of the fraud step: the per-transaction implementation as it was
before the batch rewrite (features by rescanning the customer's 24 h deque, one dict per
transaction, decisions kept as objects). Test-only: `test_fraud_batch` checks that the fast
`FraudProcessor` gives the same outputs and state as this, on random streams.

Copied from ``streams/fraud/features.py``, ``processor.py`` and ``model.py`` (``as_matrix``,
``FraudModel.reasons``) at commit b46dedf; only names were changed. Do not optimise it.

Since then, the horizons that bound the state were added as plain rules (nothing is ever
forgotten here): with W the partition's watermark before a transaction, a customer whose newest
transaction is older than W minus the history horizon is new again, and so is a device or card
the customer last used before it; a card counts on a device only if used after W minus a day; a
transaction id is a duplicate only if decided at or after W minus the dedupe horizon; a label
joins a decision only if it is at most the label horizon older than the label.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streams.fraud import audit
from streams.fraud.decision import DecisionPolicy, decide
from streams.fraud.evaluation import histogram, season_bucket
from streams.fraud.features import DAY, EW_ALPHA, FEATURES, HOUR, MIN, PAYMENT_METHODS
from streams.fraud.model import FraudModel

DAY_MS = 86_400_000


@dataclass
class CustomerHistory:
    recent: deque[tuple[int, float]] = field(default_factory=deque)  # (ts, amount), last 24 h
    ew_mean: float = 0.0  # of log(amount)
    ew_var: float = 0.0
    n: int = 0
    newest: int = 0
    devices: dict[str, int] = field(default_factory=dict)  # -> newest time used
    cards: dict[str, int] = field(default_factory=dict)


@dataclass
class FeatureState:
    customers: dict[str, CustomerHistory] = field(default_factory=dict)
    device_cards: dict[str, dict[str, int]] = field(default_factory=dict)  # device -> card -> last ts
    watermark: int | None = None
    horizon_ms: int = 30 * DAY


def current(state: FeatureState, customer: str) -> CustomerHistory | None:
    """The customer's history unless it is idle beyond the horizon."""
    history = state.customers.get(customer)
    if history is None or state.watermark is None:
        return history
    return history if history.newest >= state.watermark - state.horizon_ms else None


def known(state: FeatureState, seen: dict[str, int], key: str) -> bool:
    return key in seen and (state.watermark is None or seen[key] >= state.watermark - state.horizon_ms)


def ip_country(ip: str | None, prefixes: Mapping[str, str]) -> str | None:
    if not ip:
        return None
    return prefixes.get(ip.split(".", 1)[0])


def compute(state: FeatureState, tx: Mapping[str, Any], prefixes: Mapping[str, str]) -> dict[str, float]:
    ts, amount = tx["ts"], float(tx["amount"])
    history = current(state, tx["customer_id"])
    recent = [(t, a) for t, a in history.recent if ts - DAY < t <= ts] if history else []
    in_hour = [(t, a) for t, a in recent if t > ts - HOUR]
    log_amount = math.log1p(amount)
    has_history = history is not None and history.n > 0
    z = 0.0
    if has_history and history is not None:
        z = (log_amount - history.ew_mean) / math.sqrt(history.ew_var + 0.05)
    device, card = tx.get("device_id"), tx.get("card_id")
    cards_on_device = state.device_cards.get(device, {}) if device else {}
    fresh_after = -math.inf if state.watermark is None else state.watermark - DAY
    distinct_cards = len(
        {c for c, last in cards_on_device.items() if ts - HOUR < last <= ts and last > fresh_after}
        | ({card} if card else set())
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
        "new_device": 1.0
        if device and has_history and history and not known(state, history.devices, device)
        else 0.0,
        "card_missing": 0.0 if card else 1.0,
        "new_card": 1.0
        if card and has_history and history and not known(state, history.cards, card)
        else 0.0,
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
    ts, amount = tx["ts"], float(tx["amount"])
    history = current(state, tx["customer_id"])
    if history is None:
        history = state.customers[tx["customer_id"]] = CustomerHistory()
    history.newest = ts if history.n == 0 else max(history.newest, ts)
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
        history.devices[tx["device_id"]] = max(history.devices.get(tx["device_id"], ts), ts)
        cards = state.device_cards.setdefault(tx["device_id"], {})
        if tx.get("card_id"):
            cards[tx["card_id"]] = max(cards.get(tx["card_id"], ts), ts)
            for card, last in list(cards.items()):
                if last <= ts - DAY:
                    del cards[card]
    if tx.get("card_id"):
        history.cards[tx["card_id"]] = max(history.cards.get(tx["card_id"], ts), ts)
    state.watermark = ts if state.watermark is None else max(state.watermark, ts)


def as_matrix(rows: list[dict[str, float]]) -> np.ndarray:
    return np.array([[row[name] for name in FEATURES] for row in rows], dtype=float).reshape(
        -1, len(FEATURES)
    )


def reasons(model: FraudModel, contributions: np.ndarray, k: int = 3) -> list[list[str]]:
    order = np.argsort(-contributions, axis=1)[:, :k]
    return [[model.features[j] for j in row if contributions[i, j] > 0] for i, row in enumerate(order)]


@dataclass(frozen=True)
class Decided:
    cohort_day: int
    ts: int


@dataclass
class PartitionFraud:
    features: FeatureState = field(default_factory=FeatureState)
    decisions: dict[str, Decided] = field(default_factory=dict)
    watermark: int | None = None
    pending: list[dict[str, Any]] = field(default_factory=list)
    numbered: int = 0  # decisions made
    chain_head: str = ""  # the decision log's last hash


@dataclass
class FraudOutput:
    scores: list[dict[str, Any]] = field(default_factory=list)
    transactions: list[dict[str, Any]] = field(default_factory=list)
    cohort: list[dict[str, Any]] = field(default_factory=list)
    results: list[tuple[bytes, dict[str, Any]]] = field(default_factory=list)
    label_transactions: list[dict[str, Any]] = field(default_factory=list)
    label_cohort: list[dict[str, Any]] = field(default_factory=list)
    offsets: list[int | None] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    orphans: int = 0


class ReferenceProcessor:
    def __init__(
        self,
        model: FraudModel,
        policy: DecisionPolicy,
        ip_prefixes: Mapping[str, str],
        pipeline_version: str,
        *,
        label_horizon_ms: int = 90 * DAY_MS,
        dedupe_horizon_ms: int = DAY_MS,
        history_horizon_ms: int = 30 * DAY_MS,
    ) -> None:
        self.model = model
        self.policy = policy
        self.prefixes = dict(ip_prefixes)
        self.version = pipeline_version
        self.label_horizon_ms = label_horizon_ms
        self.dedupe_horizon_ms = dedupe_horizon_ms
        self.history_horizon_ms = history_horizon_ms
        self.states: dict[int, PartitionFraud] = {}
        self.live_counts: dict[tuple[str, int], list[int]] = {}

    def state(self, partition: int) -> PartitionFraud:
        if partition not in self.states:
            self.states[partition] = PartitionFraud()
            self.states[partition].features.horizon_ms = self.history_horizon_ms
        return self.states[partition]

    def process(
        self,
        transactions: list[tuple[dict[str, Any], int]],
        labels: list[tuple[dict[str, Any], int]],
        offsets: list[int] | None = None,
    ) -> FraudOutput:
        out = FraudOutput()
        fresh: list[tuple[dict[str, Any], int, dict[str, float]]] = []
        for i, (tx, partition) in enumerate(transactions):
            state = self.state(partition)
            decided = state.decisions.get(tx["transaction_id"])
            if (
                decided is not None
                and state.watermark is not None
                and decided.ts >= state.watermark - self.dedupe_horizon_ms
            ):
                out.duplicates += 1
                continue
            state.decisions.pop(tx["transaction_id"], None)
            out.offsets.append(offsets[i] if offsets is not None else None)
            out.numbers.append(state.numbered)
            state.numbered += 1
            fresh.append((tx, partition, compute(state.features, tx, self.prefixes)))
            update(state.features, tx)
            state.decisions[tx["transaction_id"]] = Decided(tx["ts"] // DAY_MS, tx["ts"])
            state.watermark = tx["ts"] if state.watermark is None else max(state.watermark, tx["ts"])
        if fresh:
            self._score(fresh, out)
        for label, partition in labels:
            self.state(partition).pending.append(label)
        for partition, state in self.states.items():
            self._release_labels(partition, state, out)
        return out

    def _score(self, fresh: list[tuple[dict[str, Any], int, dict[str, float]]], out: FraudOutput) -> None:
        x = as_matrix([features for _, _, features in fresh])
        scores, contributions = self.model.score(x)
        why = reasons(self.model, contributions)
        self._observe(x, [tx["ts"] for tx, _, _ in fresh])
        for i, ((tx, partition, _), offset) in enumerate(zip(fresh, out.offsets, strict=True)):
            score = float(scores[i])
            decision, holdout = decide(tx["transaction_id"], score, self.policy)
            common = {
                "pipeline_version": self.version,
                "transaction_id": tx["transaction_id"],
                "score": score,
                "decision": decision,
                "holdout": holdout,
            }
            cohort_day = tx["ts"] // DAY_MS
            out.scores.append(
                {
                    **common,
                    "customer_id": tx["customer_id"],
                    "ts": tx["ts"],
                    "amount": float(tx["amount"]),
                    "currency": tx["currency"],
                    "payment_method": tx["payment_method"],
                    "reasons": why[i],
                    "model_version": self.model.version,
                }
            )
            out.transactions.append(
                {
                    **common,
                    "customer_id": tx["customer_id"],
                    "ts": tx["ts"],
                    "cohort_day": cohort_day,
                    "source_partition": partition,
                    "source_offset": offset,
                    "reasons": why[i],
                    "model_version": self.model.version,
                    "features": x[i].tolist(),
                }
            )
            out.cohort.append({**common, "cohort_day": cohort_day, "source_partition": partition})
            self._chain(partition, out.numbers[i], out.transactions[-1], out)
            out.results.append(
                (
                    tx["customer_id"].encode(),
                    {**common, "customer_id": tx["customer_id"], "ts": tx["ts"], "reasons": why[i],
                     "model_version": self.model.version},
                )
            )  # fmt: skip

    def _chain(self, partition: int, seq: int, row: dict[str, Any], out: FraudOutput) -> None:
        """The decision appended to its partition's log: each entry hashes the one before it."""
        state = self.states[partition]
        entry = {
            "pipeline_version": self.version,
            "source_partition": partition,
            "bucket": seq // 65_536,
            "seq": seq,
            **{name: row[name] for name in ("transaction_id", "ts", "score", "decision", "holdout", "reasons",
                                           "model_version")},
            "features_digest": audit.features_digest(row["features"]),
            "source_offset": row["source_offset"],
            "prev_hash": state.chain_head or audit.genesis(partition),
        }  # fmt: skip
        entry["hash"] = state.chain_head = audit.entry_hash(entry["prev_hash"], entry)
        out.log.append(entry)

    def _release_labels(self, partition: int, state: PartitionFraud, out: FraudOutput) -> None:
        waiting = []
        for label in state.pending:
            decided = state.decisions.get(label["transaction_id"])
            if decided is not None and decided.ts < label["ts"] - self.label_horizon_ms:
                out.orphans += 1
            elif decided is not None:
                fields = {"is_fraud": label["is_fraud"], "label_source": label["source"]}
                key = {"pipeline_version": self.version, "transaction_id": label["transaction_id"]}
                out.label_transactions.append({**key, **fields, "label_ts": label["ts"]})
                out.label_cohort.append(
                    {**key, **fields, "cohort_day": decided.cohort_day, "source_partition": partition}
                )
            elif state.watermark is not None and state.watermark >= label["ts"]:
                out.orphans += 1
            else:
                waiting.append(label)
        state.pending = waiting

    def _observe(self, x: np.ndarray, ts: list[int]) -> None:
        buckets = np.array([season_bucket(t) for t in ts])
        for bucket in set(buckets.tolist()):
            rows = x[buckets == bucket]
            for j, name in enumerate(FEATURES):
                edges = self.model.reference.get(name, {}).get("edges")
                if edges is None:
                    continue
                counts = histogram(rows[:, j], edges)
                current = self.live_counts.setdefault((name, bucket), [0] * len(counts))
                self.live_counts[(name, bucket)] = [a + b for a, b in zip(current, counts, strict=True)]
