"""Cohort metrics from delayed labels, and drift (PSI) of live features. Pure.

Blocked transactions cannot show fraud (the customer had to pay up front), so evaluating on them
would be blind. Evaluation therefore uses the allowed transactions plus the random holdout of
risky ones, each holdout row weighted by 1 / holdout share (inverse propensity). Unlabelled
transactions count as legitimate: fraud surfaces as a chargeback or an unpaid invoice.

Precision and recall at the threshold rest on the holdout rows among the flagged ones (the only
flagged outcomes a shop sees), so each comes with the count of those rows and a 95 % interval
over the holdout draw: the allowed rows are always seen, only which risky rows were held out is
random. Precision is the fraud share of the ``n`` flagged holdout rows (Wilson's interval on
``k`` of ``n``). Recall is ``A / (A + B)``: ``A = k / h`` the estimated fraud among flagged
transactions, ``B`` the fraud seen among the others; ``k`` is taken as Poisson and ``A``'s
interval is Garwood's exact one, mapped through the increasing function (with ``B = 0`` there is
no missed fraud at all, and recall is 1). Below ``min_holdout`` flagged holdout rows a day is
*insufficient*: no precision or recall is given, whatever the few rows say.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import binomtest, chi2
from sklearn.metrics import average_precision_score

from streams.fraud.decision import ALLOW, DecisionPolicy

RELIABILITY_BINS = 10
CONFIDENCE = 0.95
MIN_HOLDOUT = 10  # flagged holdout rows below which precision and recall are "insufficient"


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


@dataclass(frozen=True)
class ThresholdCounts:
    """What precision and recall at the threshold rest on (sums over days pool them)."""

    flagged_holdout: int  # n: flagged rows held out (their outcome is seen)
    flagged_holdout_fraud: int  # k: of those, fraud
    missed_fraud: float  # B: weighted fraud among the rows not flagged (all seen)

    def __add__(self, other: ThresholdCounts) -> ThresholdCounts:
        return ThresholdCounts(
            self.flagged_holdout + other.flagged_holdout,
            self.flagged_holdout_fraud + other.flagged_holdout_fraud,
            self.missed_fraud + other.missed_fraud,
        )


def threshold_metrics(counts: ThresholdCounts, holdout_share: float, min_holdout: int) -> dict[str, Any]:
    """Precision and recall at the threshold with their intervals (module docstring), or
    ``insufficient`` with None for all of them."""
    n, k, missed = counts.flagged_holdout, counts.flagged_holdout_fraud, counts.missed_fraud
    empty: dict[str, Any] = dict.fromkeys(
        ("precision", "precision_low", "precision_high", "recall", "recall_low", "recall_high")
    )
    if n < max(min_holdout, 1):
        return {**empty, "insufficient": True}
    found = binomtest(k, n).proportion_ci(CONFIDENCE, method="wilson")
    alpha = 1 - CONFIDENCE
    a_low = chi2.ppf(alpha / 2, 2 * k) / 2 / holdout_share if k else 0.0
    a_high = chi2.ppf(1 - alpha / 2, 2 * k + 2) / 2 / holdout_share
    estimate = k / holdout_share

    def recall(a: float) -> float | None:
        return a / (a + missed) if a + missed > 0 else None

    return {
        "insufficient": False,
        "precision": k / n,
        "precision_low": float(found.low),
        "precision_high": float(found.high),
        "recall": recall(estimate),
        "recall_low": recall(a_low) if missed > 0 or a_low > 0 else None,
        "recall_high": recall(a_high),
    }


def threshold_counts(outcomes: Sequence[ScoredOutcome], policy: DecisionPolicy) -> ThresholdCounts:
    n = k = 0
    missed = 0.0
    for o in outcomes:
        if o.score >= policy.disable_invoice_at:
            if o.holdout:
                n += 1
                k += bool(o.is_fraud)
        elif o.is_fraud:
            missed += evaluation_weight(o, policy)
    return ThresholdCounts(n, k, missed)


def evaluation_weight(outcome: ScoredOutcome, policy: DecisionPolicy) -> float:
    if outcome.holdout:
        return 1.0 / policy.holdout_share
    return 1.0 if outcome.decision == ALLOW else 0.0


def cohort_metrics(
    outcomes: Sequence[ScoredOutcome],
    policy: DecisionPolicy,
    review_budget: int,
    min_holdout: int = MIN_HOLDOUT,
) -> dict[str, Any]:
    """Precision and recall at the operating threshold, precision@k and recall@k of the review
    queue (the ``review_budget`` highest scores), PR-AUC, reliability bins. Below ``min_holdout``
    flagged holdout rows the threshold figures are insufficient; so are the queue's, when it holds
    blocked rows and fewer than ``min_holdout`` held-out ones."""
    n = len(outcomes)
    score = np.array([o.score for o in outcomes], dtype=float)
    fraud = np.array([bool(o.is_fraud) for o in outcomes], dtype=float)
    weight = np.array([evaluation_weight(o, policy) for o in outcomes], dtype=float)
    actual = float(np.sum(weight * fraud))
    # The day's review queue: highest scores first, ties broken by transaction id (deterministic).
    ranked = sorted(range(n), key=lambda i: (-outcomes[i].score, outcomes[i].transaction_id))
    top = np.array(ranked[:review_budget], dtype=int)
    queue_weight = float(weight[top].sum()) if n else 0.0
    queue_fraud = float(np.sum(weight[top] * fraud[top])) if n else 0.0
    # A queue with blocked rows is seen through its holdout rows only: too few of them, and the
    # figure is one or two rows times 1 / holdout share (0 % one day, 100 % the next).
    extrapolated = n > 0 and bool(np.any(weight[top] == 0))
    queue_insufficient = extrapolated and sum(outcomes[i].holdout for i in top) < min_holdout
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
    counts = threshold_counts(outcomes, policy)
    return {
        "transactions": n,
        "labelled": sum(1 for o in outcomes if o.is_fraud is not None),
        "fraud_labelled": int(fraud.sum()),
        "holdout": sum(1 for o in outcomes if o.holdout),
        "decisions": decisions,
        "threshold": policy.disable_invoice_at,
        "counts": counts,
        **threshold_metrics(counts, policy.holdout_share, min_holdout),
        # Of the queue, only the outcomes a shop observes count (allowed and holdout rows, weighted):
        # a blocked transaction's fraud is never seen. Recall@k: the share of the day's (weighted)
        # fraud the queue holds, 100 % for a perfect ranking even when the day has fewer than k.
        # Both None when the queue's blocked rows rest on fewer than ``min_holdout`` held-out rows.
        "precision_at_k": queue_fraud / queue_weight if queue_weight and not queue_insufficient else None,
        "recall_at_k": queue_fraud / actual if actual and not queue_insufficient else None,
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


DISCRETE_VALUES = 10  # a feature with at most this many distinct values is binned value by value


def bin_edges(column: np.ndarray) -> list[float]:
    """Where a feature's histogram is split. A discrete feature (binary, one-hot, a small count:
    at most `DISCRETE_VALUES` distinct values) gets a bin per value, split halfway between
    neighbours; a constant one gets bins below, at and above it. Deciles would collapse such a
    feature to one edge with 0 and 1 in one bin, where no shift shows. A continuous feature gets
    its deciles (rounded to 6 decimals, repeats dropped)."""
    values = np.unique(column)
    if len(values) == 1:
        return [round(float(values[0]), 6), round(float(values[0]) + 1e-6, 6)]
    if len(values) <= DISCRETE_VALUES:
        return [round(float(a + b) / 2, 6) for a, b in itertools.pairwise(values.tolist())]
    return sorted(set(np.quantile(column, np.linspace(0.1, 0.9, 9)).round(6).tolist()))


def reference_of(x: np.ndarray, ts: Sequence[int], features: Sequence[str]) -> dict[str, Any]:
    """Training reference: per feature, bin edges (`bin_edges`) and per-season-bucket bin counts."""
    buckets = np.array([season_bucket(t) for t in ts])
    reference: dict[str, Any] = {}
    for j, name in enumerate(features):
        column = x[:, j]
        edges = bin_edges(column)
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
