"""Cohort metrics rows as stored in Cassandra (pure)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from streams.fraud.decision import DecisionPolicy
from streams.fraud.evaluation import ScoredOutcome, cohort_metrics


def metrics_row(
    version: str, cohort_day: int, outcomes: Sequence[ScoredOutcome], policy: DecisionPolicy, budget: int
) -> dict[str, Any]:
    m = cohort_metrics(outcomes, policy, budget)
    return {
        "pipeline_version": version,
        "cohort_day": cohort_day,
        "transactions": m["transactions"],
        "labelled": m["labelled"],
        "fraud_labelled": m["fraud_labelled"],
        "holdout": m["holdout"],
        "threshold": m["threshold"],
        "precision": m["precision"],
        "recall": m["recall"],
        "precision_at_k": m["precision_at_k"],
        "recall_at_k": m["recall_at_k"],
        "review_budget": m["review_budget"],
        "pr_auc": m["pr_auc"],
        "decisions": m["decisions"],
        "reliability": json.dumps(m["reliability"]),
    }
