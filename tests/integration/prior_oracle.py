"""The learned CTR priors, restated from the README's rule for the e2e oracle (numpy and scipy's
root finder, not the pipeline's code).

Per partition and per epoch (a refit interval of event time): the hopping windows that start on a
multiple of their size and closed (end + grace) within the trailing history are summed per ad;
the spread share x = 1 / (alpha + beta + 1) is the Paule-Mandel root of the pooled weighted moments
(within campaigns for the campaign priors, over all ads for the global one, ads with at least the
minimum impressions); a campaign's mean weighs its ads' CTRs (and the global mean, as one more ad)
by their precision. A window takes the priors of the epoch it starts in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.optimize import brentq

from streams.ctr.windows import parse_duration_ms
from streams.settings import CtrSettings

Prior = tuple[float, float, str]  # alpha, beta, level


class PriorOracle:
    def __init__(self, ctr: CtrSettings, expected: Mapping[str, Any]) -> None:
        self.ctr = ctr
        self.refit = parse_duration_ms(ctr.prior_refit_every)
        self.history = parse_duration_ms(ctr.prior_history)
        self.size = parse_duration_ms(ctr.hopping)
        self.grace = parse_duration_ms(ctr.grace)
        self.partition_of_ad = expected["partition_of_ad"]
        self.campaign_of_ad = expected["campaign_of_ad"]
        # partition -> [(close, campaign, ad, impressions, clicks)] of its aligned hopping windows
        self.finals: dict[int, list[tuple[int, str, str, int, int]]] = defaultdict(list)
        for (window, ad, start), (n, c) in expected["ads"].items():
            if window == ctr.hopping and start % self.size == 0:
                close = start + self.size + self.grace
                self.finals[self.partition_of_ad[ad]].append((close, self.campaign_of_ad[ad], ad, n, c))
        self.cache: dict[tuple[int, int], tuple[dict[str, Prior], Prior | None]] = {}

    def learned(self, ad: str, campaign: str, start: int) -> tuple[Prior | None, Prior | None]:
        """(the campaign's learned prior, the learned global prior) for a window of ``ad``."""
        if not self.ctr.prior_learning:
            return None, None
        partition, epoch = self.partition_of_ad[ad], start - start % self.refit
        if (partition, epoch) not in self.cache:
            self.cache[partition, epoch] = self.fit(self.finals[partition], epoch)
        campaigns, global_ = self.cache[partition, epoch]
        return campaigns.get(campaign), global_

    def fit(
        self, finals: Sequence[tuple[int, str, str, int, int]], epoch: int
    ) -> tuple[dict[str, Prior], Prior | None]:
        per_ad: dict[tuple[str, str], np.ndarray] = defaultdict(lambda: np.zeros(2))
        for close, campaign, ad, n, c in finals:
            if epoch - self.history < close <= epoch:
                per_ad[campaign, ad] += (n, c)
        groups: dict[str, np.ndarray] = defaultdict(lambda: np.zeros((0, 2)))
        for (campaign, _), nc in per_ad.items():
            if nc[0] > 0:
                groups[campaign] = np.vstack([groups[campaign], nc])
        least = self.ctr.prior_min_impressions
        dense = {k: g[g[:, 0] >= least] for k, g in groups.items()}
        everything = np.vstack(list(dense.values())) if dense else np.zeros((0, 2))
        global_x = paule_mandel([everything])
        if global_x is None:
            return {}, None
        global_mean = precision_mean(everything, global_x, None)
        global_prior = from_mean(global_mean, 1 / global_x - 1, "learned_global")
        x = paule_mandel([g for g in dense.values() if len(g) >= self.ctr.prior_min_ads])
        if x is None:
            return {}, global_prior
        pull = (global_mean, global_mean * (1 - global_mean) * global_x)
        campaigns = {
            k: from_mean(precision_mean(g, x, pull), 1 / x - 1, "learned_campaign")
            for k, g in groups.items()
            if len(g) >= self.ctr.prior_min_ads
        }
        return campaigns, global_prior


def from_mean(mean: float, strength: float, level: str) -> Prior:
    """alpha = mean * strength, floored at 1 (the beta keeps the mean)."""
    mean = min(max(mean, 1e-9), 1 - 1e-9)
    alpha = max(mean * strength, 1.0)
    return alpha, alpha * (1 - mean) / mean, level


def paule_mandel(groups: Sequence[np.ndarray]) -> float | None:
    groups = [g for g in groups if len(g) >= 2 and 0 < g[:, 1].sum() < g[:, 0].sum()]
    if not groups:
        return None
    freedom = sum(len(g) - 1 for g in groups)

    def excess(x: float) -> float:
        total = 0.0
        for g in groups:
            n, r = g[:, 0], g[:, 1] / g[:, 0]
            w = 1 / (x + (1 - x) / n)
            m = float(np.sum(w * r) / np.sum(w))
            if 0 < m < 1:
                total += float(np.sum(w * (r - m) ** 2)) / (m * (1 - m))
        return total - freedom

    if excess(0.0) <= 0:
        return None
    if excess(1 - 1e-12) > 0:
        return None
    x = float(brentq(excess, 0.0, 1 - 1e-12, xtol=1e-18, rtol=1e-15, maxiter=500))
    return x if x > 0 else None


def precision_mean(g: np.ndarray, x: float, pull: tuple[float, float] | None) -> float:
    n, r = g[:, 0], g[:, 1] / g[:, 0]
    extra_value, extra_variance = pull if pull else (0.0, None)
    mean = (g[:, 1].sum() + (extra_value if pull else 0.0)) / (n.sum() + (1 if pull else 0))
    for _ in range(2):
        w = 1 / (max(mean * (1 - mean), 1e-12) * (x + (1 - x) / n))
        top, bottom = float(np.sum(w * r)), float(np.sum(w))
        if extra_variance is not None:
            top, bottom = top + extra_value / extra_variance, bottom + 1 / extra_variance
        mean = top / bottom
    return mean
