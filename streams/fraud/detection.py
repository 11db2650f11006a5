"""Detection per fraud pattern on generated ground truth: how a model does on each pattern the
generator knows (rings included), scored by the pipeline's own processor over the traffic spread
across Kafka partitions as the topic spreads it (customers by a hash of their id), so that
partition-local features see what a worker sees. Offline: no services."""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from sklearn.metrics import average_precision_score

from streams.fraud.decision import DecisionPolicy
from streams.fraud.generator import Scenario
from streams.fraud.model import FraudModel
from streams.fraud.processor import FraudProcessor


@dataclass(frozen=True)
class PatternDetection:
    pattern: str
    transactions: int
    flagged: float  # share at or above the invoice-disable threshold (recall; for legit: FPR)
    reviewed: float  # share at or above the review threshold
    pr_auc: float | None  # the pattern against legitimate traffic (None for legit)


def scores_of(
    model: FraudModel,
    policy: DecisionPolicy,
    prefixes: Mapping[str, str],
    scenario: Scenario,
    partitions: int,
) -> dict[str, float]:
    """Each valid transaction's score, folded per partition in arrival order as a worker would."""
    by_partition: dict[int, list[tuple[dict[str, Any], int]]] = defaultdict(list)
    for key, raw in scenario.transactions:
        try:
            tx = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(tx, dict) and tx.get("transaction_id") in scenario.truth:
            partition = zlib.crc32(key) % partitions
            by_partition[partition].append((tx, partition))
    processor = FraudProcessor(model, policy, prefixes, "evaluation")
    scores: dict[str, float] = {}
    for partition in sorted(by_partition):
        for row in processor.process(by_partition[partition], []).transactions:
            scores[row["transaction_id"]] = row["score"]
    return scores


def detection(
    scores: Mapping[str, float], truth: Mapping[str, str], policy: DecisionPolicy
) -> list[PatternDetection]:
    """Per pattern (legitimate traffic last): recall at the invoice-disable and review thresholds,
    PR-AUC against legitimate traffic; for legitimate traffic the false-positive rates."""
    by_pattern: dict[str, list[float]] = defaultdict(list)
    for tx_id, score in scores.items():
        by_pattern[truth[tx_id]].append(score)
    legit = np.array(by_pattern.pop("legit", []), dtype=float)
    out = []
    for pattern in sorted(by_pattern):
        fraud = np.array(by_pattern[pattern], dtype=float)
        both = np.concatenate([fraud, legit])
        labels = np.concatenate([np.ones(len(fraud)), np.zeros(len(legit))])
        pr_auc = float(average_precision_score(labels, both)) if len(legit) else None
        out.append(PatternDetection(pattern, len(fraud), *_shares(fraud, policy), pr_auc))
    out.append(PatternDetection("legit", len(legit), *_shares(legit, policy), None))
    return out


def _shares(scores: Sequence[float] | np.ndarray, policy: DecisionPolicy) -> tuple[float, float]:
    values = np.asarray(scores, dtype=float)
    if not len(values):
        return 0.0, 0.0
    return float(np.mean(values >= policy.disable_invoice_at)), float(np.mean(values >= policy.review_at))
