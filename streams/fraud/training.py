"""Training a new model version: time-based split, class weights, Platt calibration, report.

Uses scikit-learn; the result is a plain `FraudModel` file that the worker scores with numpy.

Rows may carry sample weights: learning from the archive, a holdout row stands for 1 / h risky
transactions (h the holdout share; the blocked ones, whose outcome is never seen, are not
learned from), so the risky region weighs in the fit, the calibration and the report as much as
it does in traffic. Without the weights it was under-represented about 1 / h times. The report
gives each split's effective sample size, Kish's (sum w)^2 / sum w^2: what the weighted rows are
worth as plain ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

from streams.fraud.evaluation import reference_of, reliability
from streams.fraud.features import FEATURES
from streams.fraud.model import FraudModel, Matrix


@dataclass(frozen=True)
class TrainingData:
    x: Matrix
    y: np.ndarray
    ts: np.ndarray
    weight: np.ndarray | None = None  # sample weights (None: 1 each)
    features: tuple[str, ...] = FEATURES  # the columns of ``x``: the model's features

    def columns(self, features: tuple[str, ...]) -> Matrix | None:
        """``x`` reduced to ``features`` (a model's) in their order; None if one is missing."""
        if features == self.features:
            return self.x  # itself, not a copy: the same sums to the last bit
        if not set(features) <= set(self.features):
            return None
        return self.x[:, [self.features.index(name) for name in features]]

    @property
    def weights(self) -> np.ndarray:
        return np.ones(len(self.y)) if self.weight is None else self.weight

    def ordered(self) -> TrainingData:
        order = np.argsort(self.ts, kind="stable")
        weight = None if self.weight is None else self.weight[order]
        return TrainingData(self.x[order], self.y[order], self.ts[order], weight, self.features)


def effective_size(weight: np.ndarray) -> float:
    """Kish's effective sample size of weighted rows."""
    total = float(weight.sum())
    return total * total / float(np.square(weight).sum()) if total else 0.0


def evaluate(
    model: FraudModel, x: Matrix, y: np.ndarray, threshold: float, weight: np.ndarray | None = None
) -> dict[str, Any]:
    """PR-AUC, recall and precision at the threshold, base rate, Brier score and reliability,
    each weighted by ``weight`` (1 each without)."""
    w = np.ones(len(y)) if weight is None else weight
    p, _ = model.score(x)
    flagged = p >= threshold
    caught = float(np.sum(w * (flagged & (y == 1))))
    return {
        "pr_auc": float(average_precision_score(y, p, sample_weight=w)) if y.any() else None,
        "recall_at_threshold": caught / float(np.sum(w * (y == 1))) if y.any() else 0.0,
        "precision_at_threshold": caught / float(np.sum(w * flagged)) if flagged.any() else 0.0,
        "threshold": threshold,
        "base_rate": float(np.average(y, weights=w)),
        "brier": float(np.average((p - y) ** 2, weights=w)),
        "reliability": reliability(p, y.astype(float), w),
    }


def train(
    data: TrainingData,
    version: str,
    *,
    threshold: float,
    current: FraudModel | None = None,
    seed: int = 0,
    fraud_weight: float | None = None,
) -> tuple[FraudModel, dict[str, Any]]:
    """Fit on the oldest 60 %, calibrate on the next 20 %, report on the newest 20 %: a model of
    ``data.features``. ``current`` is reported on the same rows if they hold its features.

    The fit weighs the classes equally (``fraud_weight`` None) or a fraud row ``fraud_weight``
    times a legitimate one: that shapes the ranking only, since the calibration is fitted on the
    calibration split's own base rate."""
    data, features = data.ordered(), data.features
    n = len(data.y)
    if n < 500 or data.y.sum() < 20:
        raise ValueError(f"not enough labelled data to train: {n} transactions, {int(data.y.sum())} fraud")
    a, b = int(n * 0.6), int(n * 0.8)
    x_train, y_train, w = data.x[:a], data.y[:a], data.weights
    mean = x_train.mean(axis=0)
    scale = x_train.std(axis=0)
    scale[scale == 0] = 1.0
    weights = "balanced" if fraud_weight is None else {0.0: 1.0, 1.0: fraud_weight}
    classifier = LogisticRegression(class_weight=weights, C=0.5, max_iter=2000, random_state=seed)
    classifier.fit((x_train - mean) / scale, y_train, sample_weight=w[:a])
    uncalibrated = FraudModel(
        version,
        features,
        mean,
        scale,
        classifier.coef_[0].astype(float),
        float(classifier.intercept_[0]),
        (1.0, 0.0),
    )
    margin, _ = uncalibrated.margins(data.x[a:b])
    platt = LogisticRegression(C=1e6, max_iter=1000)
    platt.fit(margin.reshape(-1, 1), data.y[a:b], sample_weight=w[a:b])
    model = FraudModel(
        version, features, mean, scale, uncalibrated.coef, uncalibrated.intercept,
        (float(platt.coef_[0][0]), float(platt.intercept_[0])),
        reference=reference_of(x_train, data.ts[:a].tolist(), features),
    )  # fmt: skip
    report: dict[str, Any] = {
        "version": version,
        "train": {
            "from_ts": int(data.ts[0]),
            "to_ts": int(data.ts[a - 1]),
            "n": a,
            "fraud": int(y_train.sum()),
            "effective_n": effective_size(w[:a]),
        },
        "test": {
            "from_ts": int(data.ts[b]),
            "to_ts": int(data.ts[-1]),
            "n": n - b,
            "fraud": int(data.y[b:].sum()),
            "effective_n": effective_size(w[b:]),
        },
        "weighted": data.weight is not None,
        **({} if fraud_weight is None else {"fraud_weight": fraud_weight}),
        "new": evaluate(model, data.x[b:], data.y[b:], threshold, w[b:]),
    }
    current_x = None if current is None else data.columns(current.features)
    if current is not None and current_x is not None:
        report["current"] = {
            "version": current.version,
            **evaluate(current, current_x[b:], data.y[b:], threshold, w[b:]),
        }
    return FraudModel(**{**model.__dict__, "metrics": report}), report
