"""The fraud pipeline step: features, scores, decisions, and the delayed-label join. Pure.

Labels are joined against the partition's own decisions (transactions and labels are both keyed
by customer, so they are co-partitioned). A label whose transaction is not known yet waits until
the partition's transaction watermark passes the label's time; if the transaction has still not
appeared, the label is an orphan (counted). This makes the join depend only on the log, not on
how fast the two topics happen to be consumed during a replay.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streams.fraud.decision import DecisionPolicy, decide
from streams.fraud.evaluation import histogram, season_bucket
from streams.fraud.features import FEATURES, FeatureState, compute, update
from streams.fraud.model import FraudModel, as_matrix

DAY_MS = 86_400_000

SCORES_TABLE = "fraud_scores"
TRANSACTIONS_TABLE = "fraud_transactions"
COHORT_TABLE = "fraud_cohort"


@dataclass(frozen=True)
class Decided:
    cohort_day: int
    ts: int


@dataclass
class PartitionFraud:
    features: FeatureState = field(default_factory=FeatureState)
    decisions: dict[str, Decided] = field(default_factory=dict)
    watermark: int | None = None  # largest transaction time seen
    pending: list[dict[str, Any]] = field(default_factory=list)  # labels waiting for their transaction


@dataclass
class FraudOutput:
    scores: list[dict[str, Any]] = field(default_factory=list)
    transactions: list[dict[str, Any]] = field(default_factory=list)
    cohort: list[dict[str, Any]] = field(default_factory=list)
    results: list[tuple[bytes, dict[str, Any]]] = field(default_factory=list)
    label_transactions: list[dict[str, Any]] = field(default_factory=list)
    label_cohort: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    orphans: int = 0


class FraudProcessor:
    def __init__(
        self,
        model: FraudModel,
        policy: DecisionPolicy,
        ip_prefixes: Mapping[str, str],
        pipeline_version: str,
        *,
        label_horizon_ms: int = 90 * DAY_MS,
    ) -> None:
        self.model = model
        self.policy = policy
        self.prefixes = dict(ip_prefixes)
        self.version = pipeline_version
        self.label_horizon_ms = label_horizon_ms
        self.states: dict[int, PartitionFraud] = {}
        # Live feature histograms per (feature, season bucket), for the drift inspector.
        self.live_counts: dict[tuple[str, int], list[int]] = {}

    def state(self, partition: int) -> PartitionFraud:
        if partition not in self.states:
            self.states[partition] = PartitionFraud()
        return self.states[partition]

    def process(
        self, transactions: list[tuple[dict[str, Any], int]], labels: list[tuple[dict[str, Any], int]]
    ) -> FraudOutput:
        out = FraudOutput()
        fresh: list[tuple[dict[str, Any], int, dict[str, float]]] = []
        for tx, partition in transactions:
            state = self.state(partition)
            if tx["transaction_id"] in state.decisions:  # seen before, in this batch or earlier
                out.duplicates += 1
                continue
            fresh.append((tx, partition, compute(state.features, tx, self.prefixes)))
            update(state.features, tx)  # after its own features: no leak into its score
            state.decisions[tx["transaction_id"]] = Decided(tx["ts"] // DAY_MS, tx["ts"])
            state.watermark = tx["ts"] if state.watermark is None else max(state.watermark, tx["ts"])
        if fresh:
            self._score(fresh, out)
        for label, partition in labels:
            self.state(partition).pending.append(label)
        for partition, state in self.states.items():
            self._release_labels(partition, state, out)
            self._evict(state)
        return out

    def _score(self, fresh: list[tuple[dict[str, Any], int, dict[str, float]]], out: FraudOutput) -> None:
        x = as_matrix([features for _, _, features in fresh])
        scores, contributions = self.model.score(x)
        reasons = self.model.reasons(contributions)
        self._observe(x, [tx["ts"] for tx, _, _ in fresh])
        for i, (tx, partition, _) in enumerate(fresh):
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
                    "reasons": reasons[i],
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
                    "reasons": reasons[i],
                    "model_version": self.model.version,
                    "features": x[i].tolist(),
                }
            )
            out.cohort.append({**common, "cohort_day": cohort_day, "source_partition": partition})
            out.results.append(
                (
                    tx["customer_id"].encode(),
                    {**common, "customer_id": tx["customer_id"], "ts": tx["ts"], "reasons": reasons[i],
                     "model_version": self.model.version},
                )
            )  # fmt: skip

    def _release_labels(self, partition: int, state: PartitionFraud, out: FraudOutput) -> None:
        waiting = []
        for label in state.pending:
            decided = state.decisions.get(label["transaction_id"])
            if decided is not None:
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

    def _evict(self, state: PartitionFraud) -> None:
        if state.watermark is None:
            return
        horizon = state.watermark - self.label_horizon_ms
        if state.decisions and next(iter(state.decisions.values())).ts < horizon:
            state.decisions = {k: d for k, d in state.decisions.items() if d.ts >= horizon}

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
