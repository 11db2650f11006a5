"""Detection per fraud pattern on generated ground truth: how a model does on each pattern the
generator knows (rings included), scored over the traffic spread across partitions as a topic
spreads it (customers by a hash of their id: crc32 here, where Kafka uses murmur2, so the split
differs but not its effect), so that partition-local features see what a worker sees (the
processor's fold), followed for a model of entity features by those of one global view of the
traffic (what the entity stage computes exactly). Offline: no services."""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score

from streams.fraud.decision import DecisionPolicy
from streams.fraud.entities import DAY_MS, ENTITY_FEATURES, HORIZON_MS, EntityHistory
from streams.fraud.features import FEATURES, FeatureState, advance, compute, update
from streams.fraud.generator import Scenario
from streams.fraud.messages import as_transaction
from streams.fraud.model import MODEL_FEATURES, FraudModel, as_matrix


@dataclass(frozen=True)
class PatternDetection:
    pattern: str
    transactions: int
    flagged: float  # share at or above the invoice-disable threshold (recall; for legit: FPR)
    reviewed: float  # share at or above the review threshold
    pr_auc: float | None  # the pattern against legitimate traffic (None for legit)


def scores_of(
    models: Sequence[FraudModel], prefixes: Mapping[str, str], scenario: Scenario, partitions: int
) -> list[dict[str, float]]:
    """Each model's score of each valid transaction, on the rows its features name: the partition-
    local features (`partition_rows`), followed for a model of `ENTITY_FEATURES` by the entity
    features (`entity_rows`)."""
    for model in models:
        if model.features not in MODEL_FEATURES:
            raise ValueError(f"model {model.version}: features other than FEATURES (+ ENTITY_FEATURES)")
    local = partition_rows(scenario, prefixes, partitions)
    ids = list(local)
    x = np.array([local[i] for i in ids], dtype=float).reshape(len(ids), len(FEATURES))
    if any(model.features != FEATURES for model in models):
        entities = entity_rows(scenario)
        x = np.hstack([x, np.array([entities[i] for i in ids], dtype=float).reshape(len(ids), -1)])
    return [
        dict(zip(ids, model.score(x[:, : len(model.features)])[0].tolist(), strict=True)) for model in models
    ]


def partition_rows(
    scenario: Scenario, prefixes: Mapping[str, str], partitions: int
) -> dict[str, list[float]]:
    """Each valid transaction's partition-local features (`FEATURES` order), from what its
    partition saw before it: the processor's fold (`features.advance`) with its default history
    horizon, per partition in arrival order (each transaction is valid once: no duplicate)."""
    states: dict[int, FeatureState] = defaultdict(FeatureState)
    lookup = dict(prefixes)
    rows: dict[str, list[float]] = {}
    for key, tx in scenario.valid_events():
        message = as_transaction(tx)
        rows[message.transaction_id] = advance(states[zlib.crc32(key) % partitions], message, lookup)
    return rows


def entity_rows(scenario: Scenario) -> dict[str, list[float]]:
    """Each valid transaction's entity features (`ENTITY_FEATURES` order) from one global history,
    as `fraud.entities` defines them: from every event before it in (event time, transaction id)
    order, whatever order the traffic arrived in (a few transactions arrive late). So the history
    is filled in that order and each transaction's features are read when its turn comes."""
    ordered = sorted(
        (tx for _, tx in scenario.valid_events()), key=lambda tx: (tx["ts"], tx["transaction_id"])
    )
    history, rows, evicted = EntityHistory(), {}, None
    for tx in ordered:
        if evicted != tx["ts"] // DAY_MS:  # once a day: no later window starts before the cut
            evicted = tx["ts"] // DAY_MS
            history.evict(tx["ts"] - HORIZON_MS)
        rows[tx["transaction_id"]] = history.transaction_features(tx)
        history.add_transaction(tx)
    return rows


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
    ts: np.ndarray  # event times


def study_data(scenario: Scenario, prefixes: Mapping[str, str], *, entities: bool = True) -> StudyData:
    """Both feature sets of every valid transaction in arrival order, each from what came before
    it: one customer state (`streams train --synthetic`, whatever the partitions) and one global
    entity history (`entity_rows`; without ``entities``, zeros instead)."""
    state, lookup = FeatureState(), dict(prefixes)
    known = entity_rows(scenario) if entities else {}
    absent = [0.0] * len(ENTITY_FEATURES)
    rows, entity_x, patterns, ids, times = [], [], [], [], []
    for _, tx in scenario.valid_events():
        rows.append(compute(state, tx, lookup))
        update(state, tx)
        entity_x.append(known.get(tx["transaction_id"], absent))
        patterns.append(scenario.truth[tx["transaction_id"]])
        ids.append(tx["transaction_id"])
        times.append(tx["ts"])
    x = np.array(entity_x, dtype=float).reshape(-1, len(ENTITY_FEATURES))
    return StudyData(as_matrix(rows), x, patterns, ids, np.array(times, dtype=np.int64))


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
