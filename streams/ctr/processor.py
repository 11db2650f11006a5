"""The CTR pipeline step: fold events per partition, turn changed windows into result rows. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streams.ctr.attribution import NOWHERE, Origin
from streams.ctr.events import AdEvent
from streams.ctr.learning import LearnedPriors, learn, version_of
from streams.ctr.panes import Counts
from streams.ctr.smoothing import (
    CI_METHOD,
    BetaPrior,
    PriorSet,
    backoff_prior,
    posterior,
)
from streams.ctr.state import (
    CtrConfig,
    Folded,
    Outcome,
    PartitionState,
    WindowUpdate,
    apply_batch,
    drain,
)
from streams.ctr.windows import WindowSpec

DAY_MS = 86_400_000
HOUR_MS = 3_600_000

AD_TABLE = "ctr_ad_windows"
CAMPAIGN_TABLE = "ctr_campaign_windows"
CELL_TABLE = "ctr_segment_cells"


NOTHING_LEARNED = LearnedPriors()


@dataclass(frozen=True)
class CellPolicy:
    """How an ad x segment cell borrows strength when it is too sparse."""

    min_cell_impressions: int = 1000
    min_ad_impressions: int = 1000
    backoff_strength: float = 500.0  # pseudo-impressions of the ad-level prior


@dataclass
class CtrRows:
    ads: list[dict[str, Any]] = field(default_factory=list)
    campaigns: list[dict[str, Any]] = field(default_factory=list)
    cells: list[dict[str, Any]] = field(default_factory=list)
    sources: dict[str, list[int]] = field(default_factory=dict)  # kind -> each row's partition

    def __len__(self) -> int:
        return len(self.ads) + len(self.campaigns) + len(self.cells)


class CtrProcessor:
    """Holds one `PartitionState` per source partition; `drain` gives the rows to upsert."""

    def __init__(
        self,
        config: CtrConfig,
        priors: PriorSet,
        pipeline_version: str,
        *,
        ci_level: float = 0.95,
        cell_policy: CellPolicy | None = None,
    ) -> None:
        self.config = config
        self.priors = priors
        self.version = pipeline_version
        self.ci_level = ci_level
        self.cell_policy = cell_policy or CellPolicy()
        self.specs: dict[str, WindowSpec] = {w.name: w for w in config.windows}
        self.states: dict[int, PartitionState] = {}
        self._learned: dict[tuple[int, int], LearnedPriors] = {}  # (partition, epoch) -> its priors

    def apply(self, event: AdEvent, partition: int) -> Outcome:
        return self.apply_batch([event], partition).outcomes[0]

    def apply_batch(self, events: Sequence[AdEvent], partition: int, origin: Origin = NOWHERE) -> Folded:
        """Fold one partition's events, in its order; one outcome per event (``origin``: where an
        event came from, kept with a click that waits for its impression)."""
        state = self.states.get(partition)
        if state is None:
            state = self.states[partition] = PartitionState(partition)
        return apply_batch(state, events, self.config, origin)

    def settle(self, partition: int) -> None:
        """Forget what changed in one partition without making rows (a rebuild: written before)."""
        if partition in self.states:
            for _ in drain(self.states[partition], self.config):
                pass

    def prior_for(self, partition: int, start: int, campaign_id: str) -> BetaPrior:
        """The prior of an ad or cell window: the campaign's learned prior for the epoch the window
        starts in, else the file's campaign prior, the learned global one, the file's global one,
        the file's default (the file is where a version starts before it has learned anything)."""
        learned = self._learned_priors(partition, start)
        return (
            learned.campaigns.get(campaign_id)
            or self.priors.campaigns.get(campaign_id)
            or learned.global_
            or self.priors.for_campaign(campaign_id)
        )

    def _learned_priors(self, partition: int, start: int) -> LearnedPriors:
        learning = self.config.learning
        if learning is None:
            return NOTHING_LEARNED
        epoch = learning.epoch(start)
        learned = self._learned.get((partition, epoch))
        if learned is None:
            if len(self._learned) > 256:  # a cache: any epoch can be learned again, the same
                self._learned.clear()
            finals = self.states[partition].finals
            learned = learn(finals, epoch, learning, version_of(epoch, partition))
            self._learned[partition, epoch] = learned
        return learned

    def drain(self) -> CtrRows:
        """Rows for every window that changed or closed since the last drain, smoothed in bulk."""
        ads: list[tuple[WindowUpdate, str, int]] = []
        cells: list[tuple[WindowUpdate, str, int]] = []
        rows = CtrRows()
        sources: dict[str, list[int]] = {"ads": [], "campaigns": [], "cells": []}
        for partition, state in sorted(self.states.items()):
            for update in drain(state, self.config):
                if update.kind == "campaign":
                    rows.campaigns.append(self._campaign_row(update, partition))
                    sources["campaigns"].append(partition)
                elif update.kind == "ad":
                    ads.append((update, state.campaign_of[update.key[1]], partition))
                    sources["ads"].append(partition)
                elif not update.refresh or update.counts.impressions < self.cell_policy.min_cell_impressions:
                    # refreshed only if it may borrow from its ad (a denser cell's row does not depend on it)
                    cells.append((update, state.campaign_of[update.key[2]], partition))
                    sources["cells"].append(partition)
        rows.sources = sources
        rows.ads = self._ad_rows(ads)
        rows.cells = self._cell_rows(cells)
        return rows

    def _ad_rows(self, ads: list[tuple[WindowUpdate, str, int]]) -> list[dict[str, Any]]:
        priors = [self.prior_for(partition, u.key[2], campaign) for u, campaign, partition in ads]
        n = np.array([u.counts.impressions for u, _, _ in ads], dtype=float)
        c = np.array([u.counts.clicks for u, _, _ in ads], dtype=float)
        alpha = np.array([p.alpha for p in priors], dtype=float)
        beta = np.array([p.beta for p in priors], dtype=float)
        mean, low, high = posterior(n, c, alpha, beta, self.ci_level)
        rows = []
        for i, (update, campaign_id, _) in enumerate(ads):
            window, ad_id, start = update.key
            rows.append(
                {
                    **self._window_columns(window, start, DAY_MS),
                    "ad_id": ad_id,
                    "campaign_id": campaign_id,
                    **self._estimate_columns(update, mean[i], low[i], high[i], priors[i]),
                    "final": update.final,
                }
            )
        return rows

    def _cell_rows(self, cells: list[tuple[WindowUpdate, str, int]]) -> list[dict[str, Any]]:
        """Sparse cells borrow from the rest of their ad (its other segments) when that has enough
        data, else stand on the campaign prior. The borrowed prior has exactly the back-off strength
        in pseudo-impressions, centred on the rest's posterior mean under the campaign prior: a cell
        is never pulled toward its own counts, and never harder than the policy says."""
        policy = self.cell_policy
        campaign_priors = [self.prior_for(partition, u.key[3], campaign) for u, campaign, partition in cells]
        n = np.array([u.counts.impressions for u, _, _ in cells], dtype=float)
        c = np.array([u.counts.clicks for u, _, _ in cells], dtype=float)
        ad_counts = [u.ad_counts or Counts() for u, _, _ in cells]
        rest_n = np.array([a.impressions for a in ad_counts], dtype=float) - n
        rest_c = np.array([a.clicks for a in ad_counts], dtype=float) - c
        rest_n, rest_c = np.maximum(rest_n, 0), np.maximum(rest_c, 0)
        alpha = np.array([p.alpha for p in campaign_priors], dtype=float)
        beta = np.array([p.beta for p in campaign_priors], dtype=float)
        rest_mean = (alpha + rest_c) / (alpha + beta + np.maximum(rest_n, rest_c))
        backoff = (n < policy.min_cell_impressions) & (rest_n >= policy.min_ad_impressions)
        ad_alpha, ad_beta = backoff_prior(rest_mean, policy.backoff_strength)
        alpha = np.where(backoff, ad_alpha, alpha)
        beta = np.where(backoff, ad_beta, beta)
        mean, low, high = posterior(n, c, alpha, beta, self.ci_level)
        rows = []
        for i, (update, campaign_id, _) in enumerate(cells):
            window, segment, ad_id, start = update.key
            campaign_prior = campaign_priors[i]
            prior = (
                BetaPrior(float(alpha[i]), float(beta[i]), "ad", campaign_prior.version)
                if backoff[i]
                else campaign_prior
            )
            rows.append(
                {
                    **self._window_columns(window, start, HOUR_MS),
                    "segment": segment,
                    "ad_id": ad_id,
                    "campaign_id": campaign_id,
                    **self._estimate_columns(update, mean[i], low[i], high[i], prior),
                    "final": update.final,
                }
            )
        return rows

    def _estimate_columns(
        self, update: WindowUpdate, mean: float, low: float, high: float, prior: BetaPrior
    ) -> dict[str, Any]:
        n, c = update.counts.impressions, update.counts.clicks
        return {
            "impressions": n,
            "clicks": c,
            "raw_ctr": c / n if n else None,
            "smoothed_ctr": float(mean),
            "ci_low": float(low),
            "ci_high": float(high),
            "ci_level": self.ci_level,
            "ci_method": CI_METHOD,
            "prior_alpha": prior.alpha,
            "prior_beta": prior.beta,
            "prior_level": prior.level,
            "prior_version": prior.version,
        }

    def _window_columns(self, window: str, start: int, bucket_ms: int) -> dict[str, Any]:
        return {
            "pipeline_version": self.version,
            "window": window,
            "bucket": start // bucket_ms,
            "window_start": start,
            "window_end": self.specs[window].end(start),
        }

    def _campaign_row(self, update: WindowUpdate, partition: int) -> dict[str, Any]:
        """A per-partition partial; readers sum partitions and smooth with the stored prior: the
        file's, the same in every partition (each partition learns from its own ads)."""
        window, campaign_id, start = update.key
        prior = self.priors.for_campaign(campaign_id)
        return {
            **self._window_columns(window, start, DAY_MS),
            "campaign_id": campaign_id,
            "source_partition": partition,
            "impressions": update.counts.impressions,
            "clicks": update.counts.clicks,
            "prior_alpha": prior.alpha,
            "prior_beta": prior.beta,
            "prior_level": prior.level,
            "prior_version": prior.version,
            "final": update.final,
        }
