"""Detection per fraud pattern on generated ground truth: how a model does on each pattern the
generator knows (rings included), scored by the pipeline's own processor over the traffic spread
across partitions as a topic spreads it (customers by a hash of their id: crc32 here, where Kafka
uses murmur2, so the split differs but not its effect), so that partition-local features see what
a worker sees. Offline: no services."""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
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
    for key, tx in scenario.valid_events():
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


@dataclass(frozen=True)
class StudyData:
    x: np.ndarray  # the partition-local features (`fraud.features`), one row per transaction
    entities: np.ndarray  # the entity features (`fraud.entities`), seen across every customer
    patterns: list[str]
    ids: list[str]


def study_data(scenario: Scenario, prefixes: Mapping[str, str]) -> StudyData:
    """Both feature sets of every valid transaction in arrival order, each from what came before
    it: one customer state (as `streams train --synthetic`) and one global entity history (what an
    exact entity stage would know)."""
    from streams.fraud.entities import EntityHistory
    from streams.fraud.features import FeatureState, compute, update
    from streams.fraud.model import as_matrix

    state, history, lookup = FeatureState(), EntityHistory(), dict(prefixes)
    rows, entity_rows, patterns, ids = [], [], [], []
    day = None
    for _, tx in scenario.valid_events():
        if day != tx["ts"] // 86_400_000:
            day = tx["ts"] // 86_400_000
            history.evict()
        rows.append(compute(state, tx, lookup))
        update(state, tx)
        entity_rows.append(history.features(tx))
        history.add(tx)
        patterns.append(scenario.truth[tx["transaction_id"]])
        ids.append(tx["transaction_id"])
    return StudyData(as_matrix(rows), np.array(entity_rows, dtype=float), patterns, ids)


def entity_study(train: StudyData, test: StudyData, max_fpr: float = 0.01) -> dict[str, Any]:
    """Logistic regressions (balanced classes) on the partition-local features alone and with the
    entity features, fitted on ``train``; detection per pattern on ``test`` at the score above
    which ``max_fpr`` of the test period's legitimate transactions lie (recall at that false-
    positive rate, a point of the ROC curve), and PR-AUC against legitimate traffic."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.array([p != "legit" for p in train.patterns], dtype=int)
    out: dict[str, Any] = {}
    for name, fit_x, test_x in (
        ("partition-local features", train.x, test.x),
        ("with entity features", np.hstack([train.x, train.entities]), np.hstack([test.x, test.entities])),
    ):
        model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000))
        model.fit(fit_x, y)
        predicted = model.predict_proba(test_x)[:, 1]
        legit = predicted[np.array([p == "legit" for p in test.patterns])]
        threshold = float(np.quantile(legit, 1 - max_fpr))
        scores = dict(zip(test.ids, predicted.tolist(), strict=True))
        policy = DecisionPolicy(disable_invoice_at=threshold, review_at=min(1.0, threshold + 0.2))
        out[name] = {
            "threshold": threshold,
            "patterns": detection(scores, dict(zip(test.ids, test.patterns, strict=True)), policy),
        }
    return out
