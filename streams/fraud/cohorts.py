"""Cohort metrics rows as stored in Cassandra (pure)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from streams.fraud.decision import DecisionPolicy
from streams.fraud.evaluation import MIN_HOLDOUT, ScoredOutcome, cohort_metrics


def metrics_row(
    version: str, cohort_day: int, outcomes: Sequence[ScoredOutcome], policy: DecisionPolicy, budget: int,
    min_holdout: int = MIN_HOLDOUT,
) -> dict[str, Any]:  # fmt: skip
    m = cohort_metrics(outcomes, policy, budget, min_holdout)
    counts = m["counts"]
    return {
        "pipeline_version": version,
        "cohort_day": cohort_day,
        "transactions": m["transactions"],
        "labelled": m["labelled"],
        "fraud_labelled": m["fraud_labelled"],
        "holdout": m["holdout"],
        "threshold": m["threshold"],
        "insufficient": m["insufficient"],
        "holdout_flagged": counts.flagged_holdout,
        "holdout_flagged_fraud": counts.flagged_holdout_fraud,
        "missed_fraud": counts.missed_fraud,
        "precision": m["precision"],
        "precision_low": m["precision_low"],
        "precision_high": m["precision_high"],
        "recall": m["recall"],
        "recall_low": m["recall_low"],
        "recall_high": m["recall_high"],
        "precision_at_k": m["precision_at_k"],
        "recall_at_k": m["recall_at_k"],
        "review_budget": m["review_budget"],
        "pr_auc": m["pr_auc"],
        "decisions": m["decisions"],
        "reliability": json.dumps(m["reliability"]),
    }
