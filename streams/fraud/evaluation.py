"""Cohort metrics from delayed labels, and drift (PSI) of live features. Pure.

Blocked transactions cannot show fraud (the customer had to pay up front), so evaluating on them
would be blind. Evaluation therefore uses the allowed transactions plus the random holdout of
risky ones, each holdout row weighted by 1 / holdout share (inverse propensity). Unlabelled
transactions count as legitimate: fraud surfaces as a chargeback or an unpaid invoice.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score

from streams.fraud.decision import ALLOW, DecisionPolicy

RELIABILITY_BINS = 10


@dataclass(frozen=True)
class ScoredOutcome:
    transaction_id: str
    score: float
    decision: str
    holdout: bool
    is_fraud: bool | None  # None: no label (yet)


def reliability(
    score: np.ndarray, fraud: np.ndarray, weight: np.ndarray | None = None
) -> list[dict[str, Any]]:
    """Calibration: per score decile, the (weighted) mean score against the observed fraud rate.
    The edges are k / 10 (not ``linspace``, whose 3 * 0.1 put a score of 0.3 in the 0.2 bin)."""
    weight = np.ones_like(score) if weight is None else weight
    bins = []
    for low, high in itertools.pairwise(np.arange(RELIABILITY_BINS + 1) / RELIABILITY_BINS):
        inside = (score >= low) & ((score < high) | (high == 1.0))
        if inside.any():
            w = weight[inside]
            bins.append(
                {
                    "low": float(low),
                    "high": float(high),
                    "count": int(inside.sum()),
                    "mean_score": float(np.average(score[inside], weights=w)),
                    "fraud_rate": float(np.average(fraud[inside], weights=w)),
                }
            )
    return bins


def evaluation_weight(outcome: ScoredOutcome, policy: DecisionPolicy) -> float:
    if outcome.holdout:
        return 1.0 / policy.holdout_share
    return 1.0 if outcome.decision == ALLOW else 0.0


def cohort_metrics(
    outcomes: Sequence[ScoredOutcome], policy: DecisionPolicy, review_budget: int
) -> dict[str, Any]:
    """Precision and recall at the operating threshold, precision@k and recall@k of the review
    queue (the ``review_budget`` highest scores), PR-AUC, reliability bins."""
    n = len(outcomes)
    score = np.array([o.score for o in outcomes], dtype=float)
    fraud = np.array([bool(o.is_fraud) for o in outcomes], dtype=float)
    weight = np.array([evaluation_weight(o, policy) for o in outcomes], dtype=float)
    flagged = (score >= policy.disable_invoice_at).astype(float)
    tp = float(np.sum(weight * fraud * flagged))
    predicted, actual = float(np.sum(weight * flagged)), float(np.sum(weight * fraud))
    # The day's review queue: highest scores first, ties broken by transaction id (deterministic).
    ranked = sorted(range(n), key=lambda i: (-outcomes[i].score, outcomes[i].transaction_id))
    top = np.array(ranked[:review_budget], dtype=int)
    queue_weight = float(weight[top].sum()) if n else 0.0
    queue_fraud = float(np.sum(weight[top] * fraud[top])) if n else 0.0
    evaluable = weight > 0
    pr_auc = None
    if evaluable.any() and fraud[evaluable].any() and not fraud[evaluable].all():
        pr_auc = float(
            average_precision_score(fraud[evaluable], score[evaluable], sample_weight=weight[evaluable])
        )
    bins = reliability(score[evaluable], fraud[evaluable], weight[evaluable])
    decisions: dict[str, int] = {}
    for o in outcomes:
        decisions[o.decision] = decisions.get(o.decision, 0) + 1
    return {
        "transactions": n,
        "labelled": sum(1 for o in outcomes if o.is_fraud is not None),
        "fraud_labelled": int(fraud.sum()),
        "holdout": sum(1 for o in outcomes if o.holdout),
        "decisions": decisions,
        "threshold": policy.disable_invoice_at,
        "precision": tp / predicted if predicted else None,
        "recall": tp / actual if actual else None,
        # Of the queue, only the outcomes a shop observes count (allowed and holdout rows, weighted):
        # a blocked transaction's fraud is never seen. Recall@k: the share of the day's (weighted)
        # fraud the queue holds, 100 % for a perfect ranking even when the day has fewer than k.
        "precision_at_k": queue_fraud / queue_weight if queue_weight else None,
        "recall_at_k": queue_fraud / actual if actual else None,
        "review_budget": review_budget,
        "pr_auc": pr_auc,
        "reliability": bins,
    }


def psi(reference: Sequence[float], live: Sequence[float], floor: float = 1e-4) -> float:
    """Population stability index between two binned distributions (fractions or counts)."""
    ref = np.maximum(np.asarray(reference, dtype=float), 0)
    cur = np.maximum(np.asarray(live, dtype=float), 0)
    ref = np.maximum(ref / max(ref.sum(), 1e-12), floor)
    cur = np.maximum(cur / max(cur.sum(), 1e-12), floor)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def season_bucket(ts: int) -> int:
    """Hour-of-week, coarsened to 8 buckets (weekday/weekend x four six-hour day parts):
    the inspector compares live traffic with the reference of the same bucket."""
    weekday = (ts // 86_400_000 + 3) % 7
    return (4 if weekday >= 5 else 0) + (ts // 3_600_000) % 24 // 6


def histogram(values: np.ndarray, edges: Sequence[float]) -> list[int]:
    """Counts in bins split at ``edges`` (open-ended first and last bins)."""
    index = np.searchsorted(np.asarray(edges, dtype=float), values, side="right")
    return np.bincount(index, minlength=len(edges) + 1).astype(int).tolist()


def reference_of(x: np.ndarray, ts: Sequence[int], features: Sequence[str]) -> dict[str, Any]:
    """Training reference: per feature, bin edges and per-season-bucket bin fractions."""
    buckets = np.array([season_bucket(t) for t in ts])
    reference: dict[str, Any] = {}
    for j, name in enumerate(features):
        column = x[:, j]
        edges = sorted(set(np.quantile(column, np.linspace(0.1, 0.9, 9)).round(6).tolist()))
        reference[name] = {
            "edges": edges,
            "fractions": {
                str(b): histogram(column[buckets == b], edges) for b in range(8) if (buckets == b).any()
            },
        }
    return reference


def feature_psi(
    reference: Mapping[str, Any], live_counts: Mapping[tuple[str, int], list[int]]
) -> dict[str, float]:
    """PSI per feature of the live counts against the reference of the same season bucket."""
    result: dict[str, float] = {}
    for (name, bucket), counts in live_counts.items():
        ref = reference.get(name, {}).get("fractions", {}).get(str(bucket))
        if ref is None or sum(counts) < 100:
            continue
        result[name] = max(result.get(name, 0.0), psi(ref, counts))
    return result
