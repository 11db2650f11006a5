"""Empirical-Bayes CTR: Beta-Binomial priors by method of moments, Beta posterior intervals. Pure."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy.special import betaincinv

CI_METHOD = "beta_posterior_equal_tailed"
# Alpha is floored at 1: the posterior stays unimodal, so its mean lies inside the interval.
MIN_ALPHA = 1.0


@dataclass(frozen=True)
class BetaPrior:
    alpha: float
    beta: float
    level: str  # where it came from: campaign | global | default | ad (cell backoff)
    version: str

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    @classmethod
    def from_mean(cls, mean: float, strength: float, level: str, version: str) -> BetaPrior:
        """A prior with the given mean and pseudo-count ``strength`` (alpha + beta), alpha floored."""
        mean = min(max(mean, 1e-9), 1 - 1e-9)
        alpha = max(mean * strength, MIN_ALPHA)
        return cls(alpha, alpha * (1 - mean) / mean, level, version)


@dataclass(frozen=True)
class CtrEstimate:
    impressions: int
    clicks: int
    raw_ctr: float | None  # None without impressions
    smoothed_ctr: float  # posterior mean
    ci_low: float
    ci_high: float
    ci_level: float
    ci_method: str
    prior: BetaPrior


Floats = NDArray[np.float64]


def posterior(
    impressions: Floats, clicks: Floats, alpha: Floats, beta: Floats, ci_level: float
) -> tuple[Floats, Floats, Floats]:
    """Vectorised posterior Beta(alpha + clicks, beta + misses): mean and equal-tailed interval."""
    a = alpha + clicks
    b = beta + np.maximum(impressions - clicks, 0)
    tail = (1 - ci_level) / 2
    return a / (a + b), betaincinv(a, b, tail), betaincinv(a, b, 1 - tail)


def backoff_prior(mean: Floats, strength: float) -> tuple[Floats, Floats]:
    """Beta(mean * strength, (1 - mean) * strength) per element: exactly ``strength``
    pseudo-impressions (alpha may be below 1; flooring it would raise the strength)."""
    mean = np.clip(mean, 1e-9, 1 - 1e-9)
    return mean * strength, (1 - mean) * strength


def estimate(impressions: int, clicks: int, prior: BetaPrior, ci_level: float = 0.95) -> CtrEstimate:
    """One cell's posterior (see `posterior`)."""
    one = np.ones(1)
    mean, low, high = posterior(
        one * impressions, one * clicks, one * prior.alpha, one * prior.beta, ci_level
    )
    return CtrEstimate(
        impressions=impressions,
        clicks=clicks,
        raw_ctr=clicks / impressions if impressions else None,
        smoothed_ctr=float(mean[0]),
        ci_low=float(low[0]),
        ci_high=float(high[0]),
        ci_level=ci_level,
        ci_method=CI_METHOD,
        prior=prior,
    )


def fit_beta_moments(
    cells: Iterable[tuple[int, int]], *, min_impressions: int, min_cells: int = 3
) -> tuple[float, float] | None:
    """Method-of-moments Beta fit on (impressions, clicks) cells with enough impressions.

    The unbiased moment estimator of the between-cell variance of the true rates (Kleinman, 1973),
    with the rates weighted by impressions: for k cells of n_i impressions (N in all), pooled mean
    m and S = sum n_i (r_i - m)^2,

        E[S] = (k - 1) E[p (1 - p)] + tau^2 (N - sum n_i^2 / N),  E[p (1 - p)] = m (1 - m) - tau^2

    so tau^2 = (S - (k - 1) m (1 - m)) / (N - sum n_i^2 / N - (k - 1)): the binomial noise counts
    k - 1 degrees of freedom (one went to estimating m), and the spread is scaled by the sum of
    squared shares. (Counting k and leaving the shares out underestimates tau^2 by about 47 % with
    3 cells, 28 % with 5: too strong a prior.) A fit is degenerate (None) when there are too few
    cells, no clicks at all, no over-dispersion left, or more than any Beta allows.
    """
    usable = [(n, c) for n, c in cells if n >= min_impressions]
    if len(usable) < min_cells:
        return None
    moments = between_variance(usable)
    if moments is None:
        return None
    mean, between = moments
    if between <= 0:
        return None
    strength = mean * (1 - mean) / between - 1
    if strength <= 0:
        return None
    return mean * strength, (1 - mean) * strength


def between_variance(cells: Sequence[tuple[int, int]]) -> tuple[float, float] | None:
    """(pooled mean, unbiased between-cell variance tau^2: negative when the spread is below the
    binomial noise) of (impressions, clicks) cells; None without clicks or information."""
    total_n = sum(n for n, _ in cells)
    if total_n == 0:
        return None
    mean = sum(c for _, c in cells) / total_n
    if not 0 < mean < 1:
        return None
    k = len(cells)
    spread = sum(n * (c / n - mean) ** 2 for n, c in cells)
    scale = total_n - sum(n * n for n, _ in cells) / total_n - (k - 1)
    if scale <= 0:  # e.g. single impressions: no information on the spread
        return None
    return mean, (spread - (k - 1) * mean * (1 - mean)) / scale


@dataclass(frozen=True)
class PriorSet:
    """The priors pinned by one pipeline version: per campaign, else global, else a default."""

    version: str
    default: BetaPrior
    global_: BetaPrior | None = None
    campaigns: Mapping[str, BetaPrior] = field(default_factory=dict)

    def for_campaign(self, campaign_id: str) -> BetaPrior:
        return self.campaigns.get(campaign_id) or self.global_ or self.default

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": self.version,
                "default": asdict(self.default),
                "global": asdict(self.global_) if self.global_ else None,
                "campaigns": {k: asdict(v) for k, v in sorted(self.campaigns.items())},
            },
            indent=2,
        )

    @classmethod
    def load(cls, path: Path) -> PriorSet:
        return cls.from_bytes(path.read_bytes())

    @classmethod
    def from_bytes(cls, content: bytes) -> PriorSet:
        """A prior file's content (as `to_json` writes it); KeyError, TypeError or ValueError if not."""
        data = json.loads(content)

        def prior(d: Mapping[str, object]) -> BetaPrior:
            return BetaPrior(float(d["alpha"]), float(d["beta"]), str(d["level"]), data["version"])  # type: ignore[arg-type]

        return cls(
            version=data["version"],
            default=prior(data["default"]),
            global_=prior(data["global"]) if data.get("global") else None,
            campaigns={k: prior(v) for k, v in data.get("campaigns", {}).items()},
        )


def fit_priors(
    cells_by_campaign: Mapping[str, list[tuple[int, int]]],
    *,
    version: str,
    default: BetaPrior,
    min_impressions: int,
    min_cells: int = 3,
) -> PriorSet:
    """One prior per campaign plus a global one; a degenerate fit backs off: campaign, global, default."""

    def floored(fit: tuple[float, float], level: str) -> BetaPrior:
        alpha, beta = fit
        return BetaPrior.from_mean(alpha / (alpha + beta), alpha + beta, level, version)

    everything = [cell for cells in cells_by_campaign.values() for cell in cells]
    global_fit = fit_beta_moments(everything, min_impressions=min_impressions, min_cells=min_cells)
    campaigns = {}
    for campaign, cells in cells_by_campaign.items():
        fit = fit_beta_moments(cells, min_impressions=min_impressions, min_cells=min_cells)
        if fit is not None:
            campaigns[campaign] = floored(fit, "campaign")
    return PriorSet(
        version=version,
        default=BetaPrior(default.alpha, default.beta, "default", version),
        global_=floored(global_fit, "global") if global_fit else None,
        campaigns=campaigns,
    )
