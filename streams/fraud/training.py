"""Training a new model version: time-based split, class weights, Platt calibration, report.

Uses scikit-learn; the result is a plain `FraudModel` file that the worker scores with numpy.
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

    def ordered(self) -> TrainingData:
        order = np.argsort(self.ts, kind="stable")
        return TrainingData(self.x[order], self.y[order], self.ts[order])


def evaluate(model: FraudModel, x: Matrix, y: np.ndarray, threshold: float) -> dict[str, Any]:
    p, _ = model.score(x)
    flagged = p >= threshold
    return {
        "pr_auc": float(average_precision_score(y, p)) if y.any() else None,
        "recall_at_threshold": float((flagged & (y == 1)).sum() / max(y.sum(), 1)),
        "precision_at_threshold": float((flagged & (y == 1)).sum() / max(flagged.sum(), 1)),
        "threshold": threshold,
        "base_rate": float(y.mean()),
        "brier": float(np.mean((p - y) ** 2)),
        "reliability": reliability(p, y.astype(float)),
    }


def train(
    data: TrainingData, version: str, *, threshold: float, current: FraudModel | None = None, seed: int = 0
) -> tuple[FraudModel, dict[str, Any]]:
    """Fit on the oldest 60 %, calibrate on the next 20 %, report on the newest 20 %."""
    data = data.ordered()
    n = len(data.y)
    if n < 500 or data.y.sum() < 20:
        raise ValueError(f"not enough labelled data to train: {n} transactions, {int(data.y.sum())} fraud")
    a, b = int(n * 0.6), int(n * 0.8)
    x_train, y_train = data.x[:a], data.y[:a]
    mean = x_train.mean(axis=0)
    scale = x_train.std(axis=0)
    scale[scale == 0] = 1.0
    classifier = LogisticRegression(class_weight="balanced", C=0.5, max_iter=2000, random_state=seed)
    classifier.fit((x_train - mean) / scale, y_train)
    uncalibrated = FraudModel(
        version,
        FEATURES,
        mean,
        scale,
        classifier.coef_[0].astype(float),
        float(classifier.intercept_[0]),
        (1.0, 0.0),
    )
    margin, _ = uncalibrated.margins(data.x[a:b])
    platt = LogisticRegression(C=1e6, max_iter=1000)
    platt.fit(margin.reshape(-1, 1), data.y[a:b])
    model = FraudModel(
        version, FEATURES, mean, scale, uncalibrated.coef, uncalibrated.intercept,
        (float(platt.coef_[0][0]), float(platt.intercept_[0])),
        reference=reference_of(x_train, data.ts[:a].tolist(), FEATURES),
    )  # fmt: skip
    report: dict[str, Any] = {
        "version": version,
        "train": {
            "from_ts": int(data.ts[0]),
            "to_ts": int(data.ts[a - 1]),
            "n": a,
            "fraud": int(y_train.sum()),
        },
        "test": {
            "from_ts": int(data.ts[b]),
            "to_ts": int(data.ts[-1]),
            "n": n - b,
            "fraud": int(data.y[b:].sum()),
        },
        "new": evaluate(model, data.x[b:], data.y[b:], threshold),
    }
    if current is not None:
        report["current"] = {
            "version": current.version,
            **evaluate(current, data.x[b:], data.y[b:], threshold),
        }
    return FraudModel(**{**model.__dict__, "metrics": report}), report
