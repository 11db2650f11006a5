"""Priors that learn from the stream, in event time. Pure and deterministic.

Each partition keeps the final counts of its ads' aligned learning windows (the hourly windows
that start on the hour: they do not overlap). Every ``refit_ms`` of event time (an *epoch*) the
priors are refitted from the windows that became final in the trailing ``history_ms``:

- a **global** fit over every ad window (method of moments, `between_variance`): the spread
  between campaigns included, so it is wide and serves a campaign without data of its own;
- one **concentration** shared by the campaigns, pooled over their within-campaign moments
  (a campaign's own few ads are too few to estimate a spread on their own);
- per campaign with ``min_ads`` ads of its own, a **mean**: its pooled CTR shrunk toward the global
  mean by the global fit's strength (negligible for a campaign with data when campaigns differ).

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

from streams.ctr.smoothing import BetaPrior, between_variance

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
    min_impressions: int = 50  # an ad window enters the fit with at least this many impressions
    min_ads: int = 3  # distinct ads a campaign needs for a prior of its own

    def __post_init__(self) -> None:
        if self.refit_ms <= 0 or self.history_ms < self.refit_ms:
            raise ValueError("the prior history must be at least one refit interval")
        if self.min_ads < 2:
            raise ValueError("a campaign prior needs at least 2 ads")

    def learns_from(self, window: str, start: int) -> bool:
        return window == self.window and start % self.size_ms == 0

    def epoch(self, start: int) -> int:
        """The epoch whose priors a window starting at ``start`` uses."""
        return start - start % self.refit_ms

    def forget_before(self, watermark: int, longest_ms: int, grace_ms: int) -> int:
        """Final windows that closed before this are read by no epoch still to come: an open window
        starts after watermark - longest window - grace, so its epoch is at least that one's."""
        return self.epoch(watermark - longest_ms - grace_ms) - self.history_ms


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
    cells: dict[str, list[tuple[int, int]]] = defaultdict(list)
    ads: dict[str, set[str]] = defaultdict(set)
    for closed, campaign, ad, impressions, clicks in finals:
        if epoch - rule.history_ms < closed <= epoch and impressions >= rule.min_impressions:
            cells[campaign].append((impressions, clicks))
            ads[campaign].add(ad)
    every = [cell for campaign_cells in cells.values() for cell in campaign_cells]
    global_ = _global_prior(every, version)
    concentration = _pooled_concentration([cells[c] for c in cells if len(ads[c]) >= rule.min_ads])
    if concentration is None:
        return LearnedPriors({}, global_)
    campaigns = {}
    for campaign, campaign_cells in cells.items():
        if len(ads[campaign]) < rule.min_ads:
            continue
        n = float(sum(i for i, _ in campaign_cells))
        c = float(sum(k for _, k in campaign_cells))
        if global_ is not None:  # shrink toward the global mean by the global strength
            n, c = n + global_.alpha + global_.beta, c + global_.alpha
        campaigns[campaign] = BetaPrior.from_mean(c / n, concentration, LEARNED_CAMPAIGN, version)
    return LearnedPriors(campaigns, global_)


def _global_prior(cells: list[tuple[int, int]], version: str) -> BetaPrior | None:
    moments = between_variance(cells) if len(cells) >= 2 else None
    if moments is None or moments[1] <= 0:
        return None
    mean, between = moments
    strength = mean * (1 - mean) / between - 1
    return BetaPrior.from_mean(mean, strength, LEARNED_GLOBAL, version) if strength > 0 else None


def _pooled_concentration(campaigns: list[list[tuple[int, int]]]) -> float | None:
    """alpha + beta shared by the campaigns: the binomial-free within-campaign variances, each
    weighted by its degrees of freedom (cells - 1), against the matching p (1 - p) terms."""
    noise = spread = 0.0
    for cells in campaigns:
        moments = between_variance(cells) if len(cells) >= 2 else None
        if moments is None:
            continue
        mean, between = moments
        noise += (len(cells) - 1) * mean * (1 - mean)
        spread += (len(cells) - 1) * between
    if spread <= 0:
        return None
    strength = noise / spread - 1
    return strength if strength > 0 else None
