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

from streams.fraud.entities import ENTITY_FEATURES
from streams.fraud.features import FEATURES

Matrix = NDArray[np.float64]
# What a model may be trained on: the partition-local features, then the entity features.
MODEL_FEATURES = (FEATURES, FEATURES + ENTITY_FEATURES)


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
        if tuple(data["features"]) not in MODEL_FEATURES:
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
    (as `histogram`), for the drift inspector, over the last ``window_hours`` hours of event time
    (None: all of it). Counts are kept per event hour, each hour in one flat tally (feature by
    feature, bin by bin) filled with one `np.bincount`; an hour older than the window before the
    newest one is dropped, and an hour's season bucket is the one of its start."""

    def __init__(self, model: FraudModel, window_hours: int | None = None) -> None:
        self.features = [
            (name, np.asarray(spec["edges"], dtype=float))
            for name in model.features  # entity features too, for a model that reads them
            if (spec := model.reference.get(name, {})).get("edges") is not None
        ]
        self.columns = [model.features.index(name) for name, _ in self.features]
        self.widths = [len(edges) + 1 for _, edges in self.features]  # bins per feature
        self.offsets = np.cumsum([0, *self.widths[:-1]])  # where each feature's counts start
        self.size = sum(self.widths)
        self.window_hours = window_hours
        self.hours: dict[int, NDArray[np.int64]] = {}  # event hour -> tally
        self.buckets: list[int] = []  # season buckets seen, in the order they first appeared

    def add(self, x: Matrix, ts: Sequence[int]) -> None:
        """Count the rows of ``x`` (the model's features, in its order) scored at times ``ts``."""
        times = np.asarray(ts, dtype=np.int64)
        bins = np.empty((len(times), len(self.features)), dtype=np.int64)
        for k, ((_, edges), column) in enumerate(zip(self.features, self.columns, strict=True)):
            bins[:, k] = np.searchsorted(edges, x[:, column], side="right")
        bins += self.offsets
        hours = times // HOUR_MS
        for bucket in np.unique(season_buckets(times)).tolist():
            if bucket not in self.buckets:
                self.buckets.append(bucket)
        for hour in np.unique(hours).tolist():
            tally = self.hours.get(hour)
            if tally is None:
                tally = self.hours[hour] = np.zeros(self.size, dtype=np.int64)
            tally += np.bincount(bins[hours == hour].ravel(), minlength=self.size)
        if self.window_hours is not None and self.hours:
            oldest = max(self.hours) - self.window_hours + 1
            for hour in [h for h in self.hours if h < oldest]:
                del self.hours[hour]

    def counts(self) -> dict[tuple[str, int], list[int]]:
        """(feature, season bucket) -> count per bin, for the buckets within the window."""
        by_bucket: dict[int, NDArray[np.int64]] = {}
        starts = np.fromiter(self.hours, dtype=np.int64, count=len(self.hours)) * HOUR_MS
        for bucket, tally in zip(season_buckets(starts).tolist(), self.hours.values(), strict=True):
            by_bucket[bucket] = by_bucket.get(bucket, 0) + tally
        spans = list(zip(self.features, self.widths, self.offsets.tolist(), strict=True))
        return {
            (name, bucket): by_bucket[bucket][offset : offset + width].tolist()
            for bucket in self.buckets
            if bucket in by_bucket
            for (name, _), width, offset in spans
        }


SEASON_BUCKETS = 8
HOUR_MS = 3_600_000


def season_buckets(ts: NDArray[np.int64]) -> NDArray[np.int64]:
    """`streams.fraud.evaluation.season_bucket` of many times at once."""
    weekday = (ts // 86_400_000 + 3) % 7
    return np.where(weekday >= 5, 4, 0) + (ts // 3_600_000) % 24 // 6
