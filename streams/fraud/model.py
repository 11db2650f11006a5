"""A versioned, calibrated logistic model scored with numpy (training lives in `training`).

The file under version control holds everything scoring needs: feature order, standardisation,
coefficients, Platt calibration, and the training reference distributions the inspector
compares live traffic with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from streams.fraud.features import FEATURES

Matrix = NDArray[np.float64]


@dataclass(frozen=True)
class FraudModel:
    version: str
    features: tuple[str, ...]
    mean: Matrix
    scale: Matrix
    coef: Matrix
    intercept: float
    calibration: tuple[float, float]  # Platt: p = sigmoid(a * margin + b)
    reference: dict[str, Any] = field(default_factory=dict)  # feature -> {"edges", "fractions"}
    metrics: dict[str, Any] = field(default_factory=dict)  # evaluation report at training time

    def margins(self, x: Matrix) -> tuple[Matrix, Matrix]:
        """Per-row margin and per-feature contributions (coefficient x standardised value)."""
        contributions = (x - self.mean) / self.scale * self.coef
        return contributions.sum(axis=1) + self.intercept, contributions

    def score(self, x: Matrix) -> tuple[Matrix, Matrix]:
        """Calibrated fraud probabilities and the contributions behind them."""
        margin, contributions = self.margins(x)
        a, b = self.calibration
        return 1.0 / (1.0 + np.exp(-(a * margin + b))), contributions

    def reasons(self, contributions: Matrix, k: int = 3) -> list[list[str]]:
        """Reason codes: the features pushing each score up the most (positive contributions only)."""
        order = np.argsort(-contributions, axis=1)[:, :k]
        return [[self.features[j] for j in row if contributions[i, j] > 0] for i, row in enumerate(order)]

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": self.version,
                "features": list(self.features),
                "mean": self.mean.tolist(),
                "scale": self.scale.tolist(),
                "coef": self.coef.tolist(),
                "intercept": self.intercept,
                "calibration": list(self.calibration),
                "reference": self.reference,
                "metrics": self.metrics,
            },
            indent=1,
        )

    @classmethod
    def load(cls, path: Path) -> FraudModel:
        data = json.loads(path.read_text())
        if tuple(data["features"]) != FEATURES:
            raise ValueError(f"{path}: model features differ from this code's features (retrain it)")
        a, b = data["calibration"]
        return cls(
            version=data["version"],
            features=tuple(data["features"]),
            mean=np.array(data["mean"], dtype=float),
            scale=np.array(data["scale"], dtype=float),
            coef=np.array(data["coef"], dtype=float),
            intercept=float(data["intercept"]),
            calibration=(float(a), float(b)),
            reference=data.get("reference", {}),
            metrics=data.get("metrics", {}),
        )


def as_matrix(rows: list[dict[str, float]]) -> Matrix:
    return np.array([[row[name] for name in FEATURES] for row in rows], dtype=float).reshape(
        -1, len(FEATURES)
    )
