"""The CTR pipeline step: fold events per partition, turn changed windows into result rows. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streams.ctr.smoothing import BetaPrior, CtrEstimate, PriorSet, estimate
from streams.ctr.state import AdEvent, CtrConfig, Outcome, PartitionState, WindowUpdate, apply, drain
from streams.ctr.windows import WindowSpec

DAY_MS = 86_400_000
HOUR_MS = 3_600_000

AD_TABLE = "ctr_ad_windows"
CAMPAIGN_TABLE = "ctr_campaign_windows"
CELL_TABLE = "ctr_segment_cells"


@dataclass(frozen=True)
class CellPolicy:
    """How an ad x segment cell borrows strength when it is too sparse."""

    min_cell_impressions: int = 1000
    min_ad_impressions: int = 1000
    backoff_strength: float = 500.0  # pseudo-impressions of the ad-level prior


def cell_prior(
    cell_impressions: int, ad_estimate: CtrEstimate | None, campaign_prior: BetaPrior, policy: CellPolicy
) -> BetaPrior:
    """Sparse cell: lean on its ad when the ad has enough data, else on the campaign prior."""
    if cell_impressions >= policy.min_cell_impressions or ad_estimate is None:
        return campaign_prior
    if ad_estimate.impressions < policy.min_ad_impressions:
        return campaign_prior
    return BetaPrior.from_mean(
        ad_estimate.smoothed_ctr, policy.backoff_strength, "ad", campaign_prior.version
    )


def _estimate_columns(est: CtrEstimate) -> dict[str, Any]:
    return {
        "impressions": est.impressions,
        "clicks": est.clicks,
        "raw_ctr": est.raw_ctr,
        "smoothed_ctr": est.smoothed_ctr,
        "ci_low": est.ci_low,
        "ci_high": est.ci_high,
        "ci_level": est.ci_level,
        "ci_method": est.ci_method,
        "prior_alpha": est.prior.alpha,
        "prior_beta": est.prior.beta,
        "prior_level": est.prior.level,
        "prior_version": est.prior.version,
    }


@dataclass
class CtrRows:
    ads: list[dict[str, Any]] = field(default_factory=list)
    campaigns: list[dict[str, Any]] = field(default_factory=list)
    cells: list[dict[str, Any]] = field(default_factory=list)

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

    def apply(self, event: AdEvent, partition: int) -> Outcome:
        state = self.states.get(partition)
        if state is None:
            state = self.states[partition] = PartitionState(partition)
        return apply(state, event, self.config)

    def drain(self) -> CtrRows:
        rows = CtrRows()
        for partition, state in sorted(self.states.items()):
            for update in drain(state, self.config):
                campaign_id = (
                    update.key[1] if update.kind == "campaign" else state.campaign_of[update.key[-2]]
                )
                if update.kind == "ad":
                    rows.ads.append(self._ad_row(update, campaign_id))
                elif update.kind == "campaign":
                    rows.campaigns.append(self._campaign_row(update, partition))
                else:
                    rows.cells.append(self._cell_row(update, campaign_id))
        return rows

    def _window_columns(self, window: str, start: int, bucket_ms: int) -> dict[str, Any]:
        return {
            "pipeline_version": self.version,
            "window": window,
            "bucket": start // bucket_ms,
            "window_start": start,
            "window_end": self.specs[window].end(start),
        }

    def _ad_row(self, update: WindowUpdate, campaign_id: str) -> dict[str, Any]:
        window, ad_id, start = update.key
        est = estimate(
            update.counts.impressions,
            update.counts.clicks,
            self.priors.for_campaign(campaign_id),
            self.ci_level,
        )
        return {
            **self._window_columns(window, start, DAY_MS),
            "ad_id": ad_id,
            "campaign_id": campaign_id,
            **_estimate_columns(est),
            "final": update.final,
        }

    def _campaign_row(self, update: WindowUpdate, partition: int) -> dict[str, Any]:
        """A per-partition partial; readers sum partitions and smooth with the stored prior."""
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

    def _cell_row(self, update: WindowUpdate, campaign_id: str) -> dict[str, Any]:
        window, segment, ad_id, start = update.key
        campaign_prior = self.priors.for_campaign(campaign_id)
        ad = update.ad_counts
        ad_est = estimate(ad.impressions, ad.clicks, campaign_prior, self.ci_level) if ad else None
        prior = cell_prior(update.counts.impressions, ad_est, campaign_prior, self.cell_policy)
        est = estimate(update.counts.impressions, update.counts.clicks, prior, self.ci_level)
        return {
            **self._window_columns(window, start, HOUR_MS),
            "segment": segment,
            "ad_id": ad_id,
            "campaign_id": campaign_id,
            **_estimate_columns(est),
            "final": update.final,
        }
