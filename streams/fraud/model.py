"""A versioned, calibrated logistic model scored with numpy (training lives in `training`).

The file under version control holds everything scoring needs: feature order, standardisation,
coefficients, Platt calibration, and the training reference distributions the inspector
compares live traffic with.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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
        """Reason codes: the features pushing each score up the most (positive contributions only),
        largest first. Each row's top ``k`` (positive ones, else 0) is coded as one integer in
        base ``features + 1``; the names of a code are looked up once."""
        top = np.argsort(-contributions, axis=1)[:, :k]
        positive = np.take_along_axis(contributions, top, axis=1) > 0
        base = len(self.features) + 1
        digits = np.where(positive, top + 1, 0)
        codes = digits @ (base ** np.arange(digits.shape[1] - 1, -1, -1, dtype=np.int64))
        names = _REASON_NAMES.setdefault(self.features, {})
        reasons = []
        for code in codes.tolist():
            found = names.get(code)
            if found is None:
                found = names[code] = _decode_reasons(self.features, code, digits.shape[1])
            reasons.append(list(found))
        return reasons

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


_REASON_NAMES: dict[tuple[str, ...], dict[int, tuple[str, ...]]] = {}


def _decode_reasons(features: tuple[str, ...], code: int, k: int) -> tuple[str, ...]:
    base = len(features) + 1
    digits = [(code // base**place) % base for place in range(k - 1, -1, -1)]
    return tuple(features[digit - 1] for digit in digits if digit)


def as_matrix(rows: list[dict[str, float]]) -> Matrix:
    return np.array([[row[name] for name in FEATURES] for row in rows], dtype=float).reshape(
        -1, len(FEATURES)
    )


class LiveHistograms:
    """Live feature histograms per (feature, season bucket), binned at the model's reference edges
    (as `histogram`), for the drift inspector. A batch is counted with one `np.bincount` into a
    flat tally: feature by feature, bucket by bucket, bin by bin."""

    def __init__(self, model: FraudModel) -> None:
        self.features = [
            (name, np.asarray(spec["edges"], dtype=float))
            for name in FEATURES
            if (spec := model.reference.get(name, {})).get("edges") is not None
        ]
        self.columns = [FEATURES.index(name) for name, _ in self.features]
        self.widths = [len(edges) + 1 for _, edges in self.features]  # bins per feature
        sizes = [SEASON_BUCKETS * width for width in self.widths]
        self.offsets = [sum(sizes[:k]) for k in range(len(sizes))]  # where each feature's counts start
        self.tally = np.zeros(sum(sizes), dtype=np.int64)
        self.buckets: list[int] = []  # season buckets seen, in the order they first appeared

    def add(self, x: Matrix, ts: Sequence[int]) -> None:
        """Count the rows of ``x`` (features in `FEATURES` order) scored at times ``ts``."""
        buckets = season_buckets(np.asarray(ts, dtype=np.int64))
        bins = np.empty((len(buckets), len(self.features)), dtype=np.int64)
        for k, ((_, edges), column) in enumerate(zip(self.features, self.columns, strict=True)):
            bins[:, k] = np.searchsorted(edges, x[:, column], side="right")
        bins += buckets[:, None] * np.asarray(self.widths) + np.asarray(self.offsets)
        self.tally += np.bincount(bins.ravel(), minlength=len(self.tally))
        for bucket in np.flatnonzero(np.bincount(buckets, minlength=SEASON_BUCKETS)).tolist():
            if bucket not in self.buckets:
                self.buckets.append(bucket)

    def counts(self) -> dict[tuple[str, int], list[int]]:
        """(feature, season bucket) -> count per bin, for the buckets seen."""
        tally = self.tally.tolist()
        return {
            (name, bucket): tally[offset + bucket * width : offset + (bucket + 1) * width]
            for bucket in self.buckets
            for (name, _), width, offset in zip(self.features, self.widths, self.offsets, strict=True)
        }


SEASON_BUCKETS = 8


def season_buckets(ts: NDArray[np.int64]) -> NDArray[np.int64]:
    """`streams.fraud.evaluation.season_bucket` of many times at once."""
    weekday = (ts // 86_400_000 + 3) % 7
    return np.where(weekday >= 5, 4, 0) + (ts // 3_600_000) % 24 // 6
