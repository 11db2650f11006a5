"""The fraud statistics the product writes, against values worked out by hand in each test (never
by calling the function under test): PSI (where KL divergence differs), the reliability table
(score 1.0 included, scores on decile edges in the upper bin), season buckets (from the calendar),
histograms and training references, precision / recall / precision@k / PR-AUC of a cohort (where
the best and the worst ranking differ), the holdout draw and decisions at their thresholds, and the
stored cohort row."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from math import log, nextafter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.fraud.cohorts import metrics_row
from streams.fraud.decision import (
    ALLOW,
    DISABLE_INVOICE,
    REVIEW,
    DecisionPolicy,
    decide,
    holdout_draw,
)
from streams.fraud.evaluation import (
    ScoredOutcome,
    ThresholdCounts,
    bin_edges,
    cohort_metrics,
    evaluation_weight,
    feature_psi,
    histogram,
    psi,
    reference_of,
    reliability,
    season_bucket,
    threshold_metrics,
)

HOUR, DAY = 3_600_000, 86_400_000
T = 1_767_225_600_000  # Thursday 2026-01-01 00:00:00 UTC

# ---- PSI: sum over bins of (live - reference) * ln(live / reference), on fractions floored at 1e-4


def test_psi_of_a_two_bin_shift_is_not_kl_divergence() -> None:
    # reference (0.5, 0.5), live (0.9, 0.1): 0.4 ln 1.8 + (-0.4) ln 0.2 = 0.4 ln 9
    expected = 0.4 * log(9)
    kl_live_ref = 0.9 * log(0.9 / 0.5) + 0.1 * log(0.1 / 0.5)
    kl_ref_live = 0.5 * log(0.5 / 0.9) + 0.5 * log(0.5 / 0.1)
    assert psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(expected, rel=1e-12)
    assert expected != pytest.approx(kl_live_ref) and expected != pytest.approx(kl_ref_live)
    assert psi([50, 50], [90, 10]) == pytest.approx(expected, rel=1e-12)  # counts are normalised
    assert psi([0.9, 0.1], [0.5, 0.5]) == pytest.approx(expected, rel=1e-12)  # symmetric
    # fractions that do not add up to 1 (a part of the bins) are normalised too
    assert psi([0.1, 0.1], [0.9, 0.1]) == pytest.approx(expected, rel=1e-12)
    assert psi([0.5, 0.5], [0.09, 0.01]) == pytest.approx(expected, rel=1e-12)


def test_psi_floors_empty_bins_after_normalising() -> None:
    # (1, 0) against (0, 1): both empty bins become 1e-4 (no renormalisation)
    assert psi([1, 0], [0, 1]) == pytest.approx(2 * (1 - 1e-4) * log(1e4), rel=1e-12)
    assert psi([1, 0], [0, 1], floor=0.01) == pytest.approx(2 * 0.99 * log(100), rel=1e-12)
    # an empty reference: every bin at the floor
    assert psi([0, 0], [3, 1]) == pytest.approx(
        (0.75 - 1e-4) * log(0.75 / 1e-4) + (0.25 - 1e-4) * log(0.25 / 1e-4), rel=1e-12
    )
    assert psi([0, 0], [0, 0]) == 0.0
    assert psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0, abs=1e-15)


def test_psi_treats_negative_counts_as_empty() -> None:
    # reference (-3, 1, 1) -> (0, .5, .5) -> (1e-4, .5, .5); live (0, 1, 3) -> (1e-4, .25, .75)
    expected = -0.25 * log(0.5) + 0.25 * log(1.5)  # = 0.25 ln 3
    assert psi([-3, 1, 1], [0, 1, 3]) == pytest.approx(expected, rel=1e-12)
    assert psi([0, 1, 1], [-7, 1, 3]) == pytest.approx(expected, rel=1e-12)


def test_feature_psi_takes_the_worst_bucket_with_enough_live_transactions() -> None:
    reference = {
        "f": {"edges": [1.0], "fractions": {"0": [1, 1], "4": [1, 3]}},
        "g": {"edges": [1.0], "fractions": {"0": [1, 1], "1": [1, 3]}},
    }
    live = {
        ("f", 4): [75, 25],  # against (.25, .75): .5 ln 3 + .5 ln 3 = ln 3
        ("f", 0): [50, 50],  # PSI 0: the worst bucket is kept
        ("f", 1): [500, 0],  # no reference for bucket 1: skipped
        ("g", 0): [99, 0],  # 99 transactions: too few, skipped
        ("g", 1): [50, 50],  # 100: against (.25, .75): .25 ln 2 + .25 ln 1.5 = .25 ln 3
        ("h", 0): [500, 0],  # not in the reference
    }
    result = feature_psi(reference, live)
    assert result == {"f": pytest.approx(log(3), rel=1e-12), "g": pytest.approx(0.25 * log(3), rel=1e-12)}
    assert feature_psi(reference, {("f", 0): [50, 50]}) == {"f": 0.0}


# ---- reliability: per decile [k/10, (k+1)/10), the last one closed at 1.0; weighted means


def test_reliability_bins_by_hand_including_a_score_of_one() -> None:
    score = np.array([0.0, 0.05, 0.3, 0.35, 0.6, 0.7, 0.9, 0.99, 1.0])
    fraud = np.array([0, 0, 1, 0, 0, 1, 0, 1, 1], dtype=float)
    weight = np.array([1, 1, 1, 3, 1, 1, 1, 1, 2], dtype=float)
    assert reliability(score, fraud, weight) == [
        {"low": 0.0, "high": 0.1, "count": 2, "mean_score": pytest.approx(0.025), "fraud_rate": 0.0},
        # 0.3 (fraud, w 1) and 0.35 (not, w 3): mean (0.3 + 1.05) / 4, fraud 1 / 4
        {"low": 0.3, "high": 0.4, "count": 2, "mean_score": pytest.approx(0.3375), "fraud_rate": 0.25},
        {"low": 0.6, "high": 0.7, "count": 1, "mean_score": 0.6, "fraud_rate": 0.0},
        {"low": 0.7, "high": 0.8, "count": 1, "mean_score": 0.7, "fraud_rate": 1.0},
        # 0.9 (not, w 1), 0.99 (fraud, w 1), 1.0 (fraud, w 2): mean (0.9 + 0.99 + 2) / 4, fraud 3 / 4
        {"low": 0.9, "high": 1.0, "count": 3, "mean_score": pytest.approx(0.9725), "fraud_rate": 0.75},
    ]


def test_reliability_of_scores_of_one_only_and_of_nothing() -> None:
    assert reliability(np.array([1.0, 1.0]), np.array([1.0, 0.0])) == [
        {"low": 0.9, "high": 1.0, "count": 2, "mean_score": 1.0, "fraud_rate": 0.5}
    ]
    assert reliability(np.array([0.1]), np.array([1.0])) == [
        {"low": 0.1, "high": 0.2, "count": 1, "mean_score": 0.1, "fraud_rate": 1.0}
    ]
    assert reliability(np.array([]), np.array([])) == []


# ---- season buckets: (weekend ? 4 : 0) + UTC hour // 6, from the calendar


def calendar_bucket(ts: int) -> int:
    moment = datetime.fromtimestamp(ts / 1000, UTC)
    return (4 if moment.weekday() >= 5 else 0) + moment.hour // 6


@pytest.mark.parametrize(
    ("ts", "bucket"),
    [
        (T, 0),  # Thursday 00:00
        (T + 6 * HOUR - 1, 0),
        (T + 6 * HOUR, 1),
        (T + 12 * HOUR - 1, 1),
        (T + 12 * HOUR, 2),
        (T + 18 * HOUR, 3),
        (T + 2 * DAY - 1, 3),  # Friday 23:59:59.999
        (T + 2 * DAY, 4),  # Saturday 00:00
        (T + 2 * DAY + 6 * HOUR, 5),
        (T + 3 * DAY + 23 * HOUR, 7),  # Sunday 23:00
        (T + 4 * DAY - 1, 7),
        (T + 4 * DAY, 0),  # Monday 00:00
        (0, 0),  # Thursday 1970-01-01 00:00
    ],
)
def test_season_bucket_at_its_edges(ts: int, bucket: int) -> None:
    assert calendar_bucket(ts) == bucket
    assert season_bucket(ts) == bucket
    assert type(season_bucket(ts)) is int  # a key as str(bucket): "5", never "5.0"


def test_season_buckets_of_every_hour_of_a_week_follow_the_calendar() -> None:
    for hour in range(7 * 24 + 1):
        for offset in (0, 1, HOUR - 1):
            ts = T + hour * HOUR + offset
            assert season_bucket(ts) == calendar_bucket(ts), ts


@given(st.integers(946_684_800_000, 4_102_444_800_000))
def test_season_bucket_of_any_time_follows_the_calendar(ts: int) -> None:
    assert season_bucket(ts) == calendar_bucket(ts)


# ---- histograms and the training reference


def test_histogram_puts_a_value_on_an_edge_in_the_upper_bin() -> None:
    assert histogram(np.array([0.5, 1.0, 1.5, 2.0, 3.0, 4.0]), [1.0, 2.0, 3.0]) == [1, 2, 1, 2]
    assert histogram(np.array([]), [1.0, 2.0]) == [0, 0, 0]
    assert histogram(np.array([-1.0, 7.0]), []) == [2]
    counts = histogram(np.array([0.5, 1.0]), [1.0])
    assert all(type(count) is int for count in counts)  # written to JSON as 1, not 1.0


def test_reference_of_by_hand() -> None:
    """0..99 (first half on a Thursday night, bucket 0; second on a Saturday noon, bucket 6): the
    deciles of 0..99 are 9.9, 19.8, ..., 89.1; a constant column has bins below, at and above it."""
    x = np.column_stack([np.arange(100, dtype=float), np.full(100, 5.0), np.arange(100) / 7])
    ts = [T] * 50 + [T + 2 * DAY + 12 * HOUR] * 50
    reference = reference_of(x, ts, ["amount", "flag", "sevenths"])
    # 9.9 / 7 = 1.4142857..., 19.8 / 7 = 2.8285714..., ...: edges rounded to 6 decimals
    assert reference["sevenths"]["edges"] == [
        1.414286,
        2.828571,
        4.242857,
        5.657143,
        7.071429,
        8.485714,
        9.9,
        11.314286,
        12.728571,
    ]
    assert reference["amount"]["edges"] == pytest.approx(
        [9.9, 19.8, 29.7, 39.6, 49.5, 59.4, 69.3, 79.2, 89.1]
    )
    assert reference["amount"]["fractions"] == {"0": [10] * 5 + [0] * 5, "6": [0] * 5 + [10] * 5}
    assert reference["flag"] == {"edges": [5.0, 5.000001], "fractions": {"0": [0, 50, 0], "6": [0, 50, 0]}}


def test_a_discrete_feature_gets_a_bin_per_value_so_its_shift_shows() -> None:
    assert bin_edges(np.array([0.0, 1.0, 0.0, 0.0])) == [0.5]
    assert bin_edges(np.array([1.0, 2.0, 3.0, 5.0, 2.0])) == [1.5, 2.5, 4.0]  # a count
    assert len(bin_edges(np.arange(100, dtype=float))) == 9  # continuous: deciles
    # A binary feature at 1.2 % in training and 50 % live: deciles put 0 and 1 in one bin
    # (PSI 0); a bin per value sees it: (0.5 - 0.988) ln(0.5 / 0.988) + (0.5 - 0.012) ln(0.5 / 0.012).
    train = np.array([1.0] * 12 + [0.0] * 988)
    live = np.array([1.0] * 500 + [0.0] * 500)
    edges = bin_edges(train)
    expected = (0.5 - 0.988) * log(0.5 / 0.988) + (0.5 - 0.012) * log(0.5 / 0.012)
    assert psi(histogram(train, edges), histogram(live, edges)) == pytest.approx(expected)
    assert expected == pytest.approx(2.15, abs=0.01)
    deciles = sorted(set(np.quantile(train, np.linspace(0.1, 0.9, 9)).tolist()))
    assert psi(histogram(train, deciles), histogram(live, deciles)) == 0.0  # what the old edges saw


# ---- cohort metrics: allowed rows weight 1, holdout rows 1 / holdout share, blocked rows 0

POLICY = DecisionPolicy(disable_invoice_at=0.5, review_at=0.8, holdout_share=0.25)
COHORT = [
    ScoredOutcome("a", 0.95, REVIEW, False, True),  # blocked: weight 0
    ScoredOutcome("b", 0.9, ALLOW, True, True),  # holdout: weight 4
    ScoredOutcome("d", 0.5, ALLOW, True, None),  # holdout, exactly at the threshold: flagged
    ScoredOutcome("c", 0.45, ALLOW, True, False),  # holdout, below the threshold
    ScoredOutcome("e", 0.4, ALLOW, False, True),  # allowed: weight 1, missed fraud
    ScoredOutcome("f", 0.2, ALLOW, False, False),
    ScoredOutcome("g", 0.05, ALLOW, False, None),  # unlabelled: legitimate
    ScoredOutcome("h", 0.7, DISABLE_INVOICE, False, None),  # blocked: weight 0
]


def test_cohort_metrics_by_hand() -> None:
    m = cohort_metrics(COHORT, POLICY, review_budget=3, min_holdout=1)
    # Flagged (score >= 0.5) by weight: a 0 + b 4 + d 4 + h 0 = 8, of which fraud: b 4.
    assert m["precision"] == 0.5
    # Fraud by weight: a 0 + b 4 + e 1 = 5, of which flagged: b 4.
    assert m["recall"] == 0.8
    # Review queue: a, b, h. Observed in it: only b (weight 4, fraud); a and h were blocked.
    assert m["precision_at_k"] == 1.0
    # Of the day's weighted fraud (b 4, e 1; a is blocked, unseen), the queue holds b: 4 / 5.
    assert m["recall_at_k"] == pytest.approx(0.8)
    # Evaluable by descending score: b F 4 | d 4 | c 4 | e F 1 | f 1 | g 1. Precision at each new
    # recall: b (recall 0.8, precision 1), e (recall 1, precision 5/13): AP = 0.8 + 0.2 * 5/13.
    assert m["pr_auc"] == pytest.approx(0.8 + 0.2 * 5 / 13, rel=1e-12)
    assert m["reliability"] == [
        {"low": 0.0, "high": 0.1, "count": 1, "mean_score": 0.05, "fraud_rate": 0.0},
        {"low": 0.2, "high": 0.3, "count": 1, "mean_score": 0.2, "fraud_rate": 0.0},
        # c (0.45, weight 4, not) and e (0.4, weight 1, fraud): mean 2.2 / 5, fraud 1 / 5
        {"low": 0.4, "high": 0.5, "count": 2, "mean_score": pytest.approx(0.44), "fraud_rate": 0.2},
        {"low": 0.5, "high": 0.6, "count": 1, "mean_score": 0.5, "fraud_rate": 0.0},
        {"low": 0.9, "high": 1.0, "count": 1, "mean_score": 0.9, "fraud_rate": 1.0},
    ]  # a and h (blocked) are not in it
    assert {k: m[k] for k in ("transactions", "labelled", "fraud_labelled", "holdout")} == {
        "transactions": 8,
        "labelled": 5,
        "fraud_labelled": 3,
        "holdout": 3,
    }
    assert m["decisions"] == {REVIEW: 1, ALLOW: 6, DISABLE_INVOICE: 1}
    assert (m["threshold"], m["review_budget"]) == (0.5, 3)


@pytest.mark.parametrize(
    ("budget", "precision", "recall"),
    [(1, None, None), (2, 1.0, 0.8), (4, 0.5, 0.8), (6, 5 / 13, 1.0), (8, 5 / 15, 1.0), (20, 5 / 15, 1.0)],
)
def test_precision_and_recall_at_k_for_each_budget(
    budget: int, precision: float | None, recall: float | None
) -> None:
    # By descending score, with weights: a F 0 | b F 4 | h 0 | d 4 | c 4 | e F 1 | f 1 | g 1.
    # Precision@k: weighted fraud over weighted rows of the queue (None: nothing in it observed).
    m = cohort_metrics(COHORT, POLICY, budget, min_holdout=1)
    assert m["precision_at_k"] == (None if precision is None else pytest.approx(precision))
    assert m["recall_at_k"] == (None if recall is None else pytest.approx(recall))  # 1: a blocked queue


def test_a_perfect_ranking_with_one_fraud_has_full_recall_at_k() -> None:
    day = [ScoredOutcome("f", 0.2, ALLOW, False, True)] + [
        ScoredOutcome(f"l{i}", 0.1, ALLOW, False, False) for i in range(100)
    ]
    m = cohort_metrics(day, POLICY, 50)
    assert m["recall_at_k"] == 1.0  # the only fraud is first in the queue
    assert m["precision_at_k"] == pytest.approx(1 / 50)  # 50 reviewed, 1 fraud: what k costs


def test_precision_at_k_breaks_ties_by_transaction_id() -> None:
    tied = [ScoredOutcome("x2", 0.9, ALLOW, False, True), ScoredOutcome("x1", 0.9, ALLOW, False, False)]
    assert cohort_metrics(tied, POLICY, 1)["precision_at_k"] == 0.0  # x1 first
    swapped = [ScoredOutcome("x1", 0.9, ALLOW, False, True), ScoredOutcome("x2", 0.9, ALLOW, False, False)]
    assert cohort_metrics(swapped, POLICY, 1)["precision_at_k"] == 1.0


def test_cohort_metrics_without_what_they_need() -> None:
    empty = cohort_metrics([], POLICY, 5)
    assert (empty["precision"], empty["recall"], empty["precision_at_k"], empty["pr_auc"]) == (None,) * 4
    assert empty["recall_at_k"] is None
    assert (empty["transactions"], empty["decisions"], empty["reliability"]) == (0, {}, [])
    legit = [ScoredOutcome("a", 0.1, ALLOW, False, False), ScoredOutcome("b", 0.2, ALLOW, False, None)]
    m = cohort_metrics(legit, POLICY, 1)
    assert (m["precision"], m["recall"], m["pr_auc"], m["precision_at_k"]) == (None, None, None, 0.0)
    assert m["recall_at_k"] is None  # no fraud to find
    fraud = [ScoredOutcome("a", 0.6, ALLOW, True, True), ScoredOutcome("b", 0.2, ALLOW, False, True)]
    m = cohort_metrics(fraud, POLICY, 1, min_holdout=1)
    # a is a holdout row (weight 4): precision 1, recall 4 / (4 + 1); all fraud: no PR curve
    assert (m["precision"], m["recall"], m["pr_auc"]) == (1.0, 0.8, None)
    blocked = [ScoredOutcome("a", 0.9, REVIEW, False, True), ScoredOutcome("b", 0.9, REVIEW, False, False)]
    m = cohort_metrics(blocked, POLICY, 2)
    assert (m["precision"], m["recall"], m["pr_auc"], m["reliability"]) == (None, None, None, [])
    assert (m["precision_at_k"], m["recall_at_k"]) == (None, None)  # nothing observed


def test_evaluation_weights() -> None:
    policy = DecisionPolicy(holdout_share=0.05)
    assert evaluation_weight(ScoredOutcome("a", 0.9, ALLOW, True, None), policy) == pytest.approx(20.0)
    assert evaluation_weight(ScoredOutcome("a", 0.1, ALLOW, False, None), policy) == 1.0
    assert evaluation_weight(ScoredOutcome("a", 0.9, REVIEW, False, None), policy) == 0.0
    assert evaluation_weight(ScoredOutcome("a", 0.5, DISABLE_INVOICE, False, None), policy) == 0.0


def test_the_stored_cohort_row() -> None:
    row = metrics_row("v7", 20454, COHORT, POLICY, 3, min_holdout=1)
    assert json.loads(row.pop("reliability")) == cohort_metrics(COHORT, POLICY, 3)["reliability"]
    assert row == {
        "pipeline_version": "v7",
        "cohort_day": 20454,
        "transactions": 8,
        "labelled": 5,
        "fraud_labelled": 3,
        "holdout": 3,
        "threshold": 0.5,
        "insufficient": False,
        "holdout_flagged": 2,
        "holdout_flagged_fraud": 1,
        "missed_fraud": 1.0,
        "precision": 0.5,
        "precision_low": pytest.approx(wilson(1, 2)[0]),
        "precision_high": pytest.approx(wilson(1, 2)[1]),
        "recall": 0.8,
        "recall_low": pytest.approx(garwood_recall(1, 0.25, 1.0)[0]),
        "recall_high": pytest.approx(garwood_recall(1, 0.25, 1.0)[1]),
        "precision_at_k": 1.0,
        "recall_at_k": pytest.approx(0.8),
        "review_budget": 3,
        "pr_auc": pytest.approx(0.8 + 0.2 * 5 / 13),
        "decisions": {REVIEW: 1, ALLOW: 6, DISABLE_INVOICE: 1},
    }


# ---- uncertainty: the flagged holdout rows are what precision and recall at the threshold rest on

Z = 1.959963984540054  # the normal quantile of 97.5 %
# Chi-square quantiles from a table: (probability, degrees of freedom) -> quantile
CHI2 = {(0.025, 2): 0.0506356, (0.975, 4): 11.1433, (0.025, 10): 3.24697, (0.975, 12): 23.3367}


def wilson(k: int, n: int) -> tuple[float, float]:
    p = k / n
    center = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return center - half, center + half


def garwood_recall(k: int, h: float, missed: float) -> tuple[float, float]:
    low, high = CHI2[(0.025, 2 * k)] / 2 / h, CHI2[(0.975, 2 * k + 2)] / 2 / h
    return low / (low + missed), high / (high + missed)


def test_precision_and_recall_come_with_their_intervals() -> None:
    # 20 flagged holdout rows (share 0.25), 5 of them fraud; 3 fraud among the rows not flagged.
    day = [ScoredOutcome(f"h{i}", 0.9, ALLOW, True, i < 5) for i in range(20)]
    day += [ScoredOutcome(f"b{i}", 0.9, DISABLE_INVOICE, False, None) for i in range(60)]  # blocked
    day += [ScoredOutcome(f"m{i}", 0.1, ALLOW, False, i < 3) for i in range(100)]
    m = cohort_metrics(day, POLICY, 10, min_holdout=10)
    assert m["insufficient"] is False
    assert m["precision"] == 0.25  # 5 of 20
    assert (m["precision_low"], m["precision_high"]) == pytest.approx(wilson(5, 20), abs=1e-9)
    # Estimated flagged fraud 5 / 0.25 = 20 against 3 missed: recall 20 / 23.
    assert m["recall"] == pytest.approx(20 / 23)
    assert (m["recall_low"], m["recall_high"]) == pytest.approx(garwood_recall(5, 0.25, 3), abs=1e-4)
    assert m["recall_low"] < m["recall"] < m["recall_high"]


def test_a_day_whose_flagged_rows_include_no_holdout_row_is_insufficient_not_zero() -> None:
    day = [ScoredOutcome(f"b{i}", 0.9, DISABLE_INVOICE, False, None) for i in range(35)]
    day += [ScoredOutcome(f"m{i}", 0.1, ALLOW, False, i < 2) for i in range(500)]
    m = cohort_metrics(day, POLICY, 10)
    assert m["insufficient"] is True
    assert [m[k] for k in ("precision", "recall", "precision_low", "recall_high")] == [None] * 4
    # below the minimum (10 by default) it is insufficient too, whatever the few rows say
    few = day + [ScoredOutcome(f"h{i}", 0.9, ALLOW, True, False) for i in range(9)]
    assert cohort_metrics(few, POLICY, 10)["insufficient"] is True
    assert cohort_metrics(few, POLICY, 10, min_holdout=9)["precision"] == 0.0


def test_without_missed_fraud_recall_is_one_for_sure() -> None:
    day = [ScoredOutcome(f"h{i}", 0.9, ALLOW, True, i < 1) for i in range(12)]
    day += [ScoredOutcome(f"m{i}", 0.1, ALLOW, False, False) for i in range(50)]
    m = cohort_metrics(day, POLICY, 10)
    assert (m["recall"], m["recall_low"], m["recall_high"]) == (1.0, 1.0, 1.0)


def test_threshold_counts_pool_by_summing() -> None:
    a, b = ThresholdCounts(4, 1, 2.0), ThresholdCounts(8, 3, 1.0)
    assert a + b == ThresholdCounts(12, 4, 3.0)
    pooled = threshold_metrics(a + b, 0.25, 10)
    assert pooled["precision"] == pytest.approx(4 / 12) and pooled["recall"] == pytest.approx(16 / 19)
    assert threshold_metrics(a, 0.25, 10)["insufficient"] is True


# ---- decisions


def test_the_default_policy() -> None:
    policy = DecisionPolicy()
    assert (policy.disable_invoice_at, policy.review_at, policy.holdout_share, policy.holdout_salt) == (
        0.3,
        0.7,
        0.05,
        "holdout-v1",
    )


def expected_draw(transaction_id: str, salt: str) -> float:
    """The first 8 bytes of BLAKE2b("salt:id"), big-endian, over 2^64."""
    digest = hashlib.blake2b(f"{salt}:{transaction_id}".encode(), digest_size=8).digest()
    return sum(byte << (8 * (7 - i)) for i, byte in enumerate(digest)) / 18_446_744_073_709_551_616


@pytest.mark.parametrize(("transaction_id", "salt"), [("t1", "holdout-v1"), ("t1", "s2"), ("tx-000042", "x")])
def test_the_holdout_draw_is_a_fixed_hash_of_salt_and_id(transaction_id: str, salt: str) -> None:
    assert holdout_draw(transaction_id, salt) == expected_draw(transaction_id, salt)
    assert 0 <= holdout_draw(transaction_id, salt) < 1


def test_decisions_at_their_thresholds() -> None:
    never = DecisionPolicy(disable_invoice_at=0.3, review_at=0.7, holdout_share=0.0)
    assert decide("t", nextafter(0.3, 0), never) == (ALLOW, False)
    assert decide("t", 0.3, never) == (DISABLE_INVOICE, False)
    assert decide("t", nextafter(0.7, 0), never) == (DISABLE_INVOICE, False)
    assert decide("t", 0.7, never) == (REVIEW, False)
    assert decide("t", 1.0, never) == (REVIEW, False)
    always = DecisionPolicy(disable_invoice_at=0.3, review_at=0.7, holdout_share=1.0)
    assert decide("t", nextafter(0.3, 0), always) == (ALLOW, False)  # not risky: not in the holdout
    assert decide("t", 0.3, always) == (ALLOW, True)
    assert decide("t", 0.9, always) == (ALLOW, True)


def test_the_holdout_takes_draws_strictly_below_its_share() -> None:
    draw = expected_draw("t1", "salt")
    at = DecisionPolicy(holdout_share=draw, holdout_salt="salt")
    above = DecisionPolicy(holdout_share=nextafter(draw, 1), holdout_salt="salt")
    assert decide("t1", 0.9, at) == (REVIEW, False)
    assert decide("t1", 0.5, at) == (DISABLE_INVOICE, False)
    assert decide("t1", 0.9, above) == (ALLOW, True)
    other_salt = DecisionPolicy(holdout_share=nextafter(draw, 1), holdout_salt="other")
    assert decide("t1", 0.9, other_salt) == (
        (ALLOW, True) if expected_draw("t1", "other") < nextafter(draw, 1) else (REVIEW, False)
    )


def test_a_queue_seen_through_too_few_holdout_rows_is_insufficient() -> None:
    """50 blocked, 2 held out (one a fraud): 1 / 2 at weight 20 each would read 50 %."""
    day = [ScoredOutcome(f"b{i:02d}", 0.9, REVIEW, False, None) for i in range(50)] + [
        ScoredOutcome("h1", 0.95, ALLOW, True, True),
        ScoredOutcome("h2", 0.95, ALLOW, True, False),
    ]
    m = cohort_metrics(day, POLICY, 50, min_holdout=3)
    assert (m["precision_at_k"], m["recall_at_k"]) == (None, None)
    m = cohort_metrics(day, POLICY, 50, min_holdout=2)
    assert m["precision_at_k"] == 0.5 and m["recall_at_k"] == 1.0
    # a queue with nothing blocked is observed whole: no holdout needed
    allowed = [ScoredOutcome("f", 0.2, ALLOW, False, True), ScoredOutcome("l", 0.1, ALLOW, False, False)]
    assert cohort_metrics(allowed, POLICY, 2, min_holdout=10)["precision_at_k"] == 0.5
