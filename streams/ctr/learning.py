"""Priors that learn from the stream, in event time. Pure and deterministic.

Each partition keeps the final counts of its ads' aligned learning windows (the hourly windows
that start on the hour: they do not overlap). Every ``refit_ms`` of event time (an *epoch*) the
priors are refitted from the windows that became final in the trailing ``history_ms``:

- the windows are summed per ad: an ad is one draw from its campaign's Beta;
- a **global** fit over every ad (method of moments): the spread between campaigns included, so it
  is wide and serves a campaign without ads of its own;
- one **concentration** shared by the campaigns, pooled over their within-campaign moments
  (a campaign's own few ads are too few to estimate a spread on their own);
- per campaign with ``min_ads`` ads of its own, a **mean**: its ads' CTRs weighted by their
  precision (not by traffic: one heavy ad does not stand for its campaign), with the global mean
  as one more ad (a pull that matters only for a campaign with few, sparse ads).

A window takes the priors of the epoch it starts in. Those read only windows final by the
epoch's start, which every fold reaches before any event of the window, so the priors of a
window never depend on where batches ended, and a replay of the log (or a restore from a
snapshot, which holds the final counts) yields the same priors at the same points.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from streams.ctr.smoothing import BetaPrior

# (close time = window end + grace, campaign_id, ad_id, impressions, clicks) of a final window
FinalWindow = tuple[int, str, str, int, int]

LEARNED_CAMPAIGN = "learned_campaign"
LEARNED_GLOBAL = "learned_global"


@dataclass(frozen=True)
class PriorLearning:
    """The learning rule a version pins (the rule, not its output)."""

    window: str  # the window spec learned from (its windows that start at a multiple of its size)
    size_ms: int
    refit_ms: int = 3_600_000
    history_ms: int = 86_400_000
    min_impressions: int = 50  # an ad (its windows summed) enters the spread estimate with this many
    min_ads: int = 1  # distinct ads a campaign needs for a prior of its own

    def __post_init__(self) -> None:
        if self.refit_ms <= 0 or self.history_ms < self.refit_ms:
            raise ValueError("the prior history must be at least one refit interval")
        if self.min_ads < 1:
            raise ValueError("a campaign prior needs at least 1 ad")

    def learns_from(self, window: str, start: int) -> bool:
        return window == self.window and start % self.size_ms == 0

    def epoch(self, start: int) -> int:
        """The epoch whose priors a window starting at ``start`` uses."""
        return start - start % self.refit_ms

    def forget_before(self, earliest_start: int) -> int:
        """Final windows that closed before this are read by no epoch still to come, when no window
        that starts before ``earliest_start`` will have a row again."""
        return self.epoch(earliest_start) - self.history_ms


@dataclass(frozen=True)
class LearnedPriors:
    """One partition's priors for one epoch (empty when the history holds too little)."""

    campaigns: Mapping[str, BetaPrior] = field(default_factory=dict)
    global_: BetaPrior | None = None


def version_of(epoch: int, partition: int) -> str:
    """``learned@2026-11-30T05:00Z/p3``: when and where (each partition learns from its own ads)."""
    when = datetime.fromtimestamp(epoch / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")
    return f"learned@{when}/p{partition}"


def learn(finals: Iterable[FinalWindow], epoch: int, rule: PriorLearning, version: str) -> LearnedPriors:
    """The priors of ``epoch`` from the final windows that closed in (epoch - history, epoch]."""
    totals: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for closed, campaign, ad, impressions, clicks in finals:
        if epoch - rule.history_ms < closed <= epoch:
            total = totals[campaign][ad]
            total[0] += impressions
            total[1] += clicks
    ads = {campaign: [(n, c) for n, c in per_ad.values() if n > 0] for campaign, per_ad in totals.items()}
    dense = {campaign: [(n, c) for n, c in a if n >= rule.min_impressions] for campaign, a in ads.items()}
    every = [ad for campaign_ads in dense.values() for ad in campaign_ads]
    global_x = _spread_share([every])
    x = _spread_share([a for a in dense.values() if len(a) >= rule.min_ads])
    if global_x is None:
        return LearnedPriors()
    global_mean = _precision_weighted(every, global_x, ())
    global_ = BetaPrior.from_mean(global_mean, 1 / global_x - 1, LEARNED_GLOBAL, version)
    if x is None:
        return LearnedPriors({}, global_)
    # The global mean counts as one more ad, as far from any campaign's mean as ads of all campaigns
    # are from each other: a pull that matters only for a campaign with few and sparse ads.
    pull = (global_mean, global_mean * (1 - global_mean) * global_x)
    campaigns = {
        campaign: BetaPrior.from_mean(
            _precision_weighted(a, x, (pull,)), 1 / x - 1, LEARNED_CAMPAIGN, version
        )
        for campaign, a in ads.items()
        if len(a) >= rule.min_ads
    }
    return LearnedPriors(campaigns, global_)


def _precision_weighted(
    ads: list[tuple[int, int]], x: float, extra: tuple[tuple[float, float], ...]
) -> float:
    """The mean of the ads' CTRs, each weighted by its precision as an estimate of it: the inverse of
    m (1 - m) (x + (1 - x) / n), m first the plain pooled CTR, then this mean once more (a sparse ad
    says little, and one heavy ad does not stand for its campaign); ``extra``: (value, variance)
    estimates weighed in beside them."""
    mean = (sum(c for _, c in ads) + sum(v for v, _ in extra)) / (sum(n for n, _ in ads) + len(extra))
    for _ in range(2):
        scale = max(mean * (1 - mean), 1e-12)
        weights = [1 / (scale * (x + (1 - x) / n)) for n, _ in ads] + [1 / v for _, v in extra]
        values = [c / n for n, c in ads] + [v for v, _ in extra]
        mean = sum(w * v for w, v in zip(weights, values, strict=True)) / sum(weights)
    return mean


def _spread_share(groups: list[list[tuple[int, int]]]) -> float | None:
    """x = 1 / (alpha + beta + 1), the share of a Beta's p (1 - p) that is spread between the true
    CTRs, shared by the groups (campaigns), from their ads' (impressions, clicks); None when the CTRs
    spread no more than binomial noise explains.

    The Paule-Mandel moment estimator, pooled: an ad's CTR varies around its campaign's mean m by
    m (1 - m) (x + (1 - x) / n), so with weights w = 1 / (x + (1 - x) / n) and m the weighted mean,
    sum w (r - m)^2 / (m (1 - m)) has expectation k - 1 per campaign of k ads; x is where the
    pooled sum meets the pooled degrees of freedom (it falls as x grows: bisection). The weights
    lie between traffic (x = 0, dense ads say more) and equality (a heavy ad does not stand for its
    campaign), as the estimate says the spread is small or large."""
    usable = [[(n, c / n) for n, c in ads] for ads in groups if len(ads) >= 2]
    usable = [ads for ads in usable if 0 < sum(n * r for n, r in ads) < sum(n for n, _ in ads)]
    freedom = sum(len(ads) - 1 for ads in usable)
    if not usable or _excess(usable, 0.0, freedom) <= 0 or _excess(usable, 1 - 1e-12, freedom) > 0:
        return None
    low, high = 0.0, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if _excess(usable, middle, freedom) > 0 else (low, middle)
    return low if 0 < low < 1 else None


def _excess(groups: list[list[tuple[int, float]]], x: float, freedom: int) -> float:
    """sum over groups of sum w (r - m)^2 / (m (1 - m)), less the degrees of freedom."""
    total = 0.0
    for ads in groups:
        weights = [1 / (x + (1 - x) / n) for n, _ in ads]
        mean = sum(w * r for w, (_, r) in zip(weights, ads, strict=True)) / sum(weights)
        if 0 < mean < 1:
            spread = sum(w * (r - mean) ** 2 for w, (_, r) in zip(weights, ads, strict=True))
            total += spread / (mean * (1 - mean))
    return total - freedom
