"""What readers see: campaign windows summed over partitions, top ads by lower credible bound. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from streams.ctr.smoothing import BetaPrior, estimate


def campaign_windows(partials: Iterable[Mapping[str, Any]], ci_level: float) -> list[dict[str, Any]]:
    """Sum the per-partition partial rows of each campaign window and smooth the total."""
    totals: dict[tuple[str, str, int], dict[str, Any]] = {}
    for p in partials:
        key = (p["campaign_id"], p["window"], p["window_start"])
        total = totals.setdefault(
            key,
            {
                "campaign_id": p["campaign_id"],
                "window": p["window"],
                "window_start": p["window_start"],
                "window_end": p["window_end"],
                "impressions": 0,
                "clicks": 0,
                "partitions": 0,
                "final": True,
                "prior": BetaPrior(p["prior_alpha"], p["prior_beta"], p["prior_level"], p["prior_version"]),
            },
        )
        total["impressions"] += p["impressions"]
        total["clicks"] += p["clicks"]
        total["partitions"] += 1
        total["final"] = total["final"] and p["final"]
    rows = []
    for total in sorted(totals.values(), key=lambda t: t["window_start"], reverse=True):
        prior: BetaPrior = total.pop("prior")
        est = estimate(total["impressions"], total["clicks"], prior, ci_level)
        rows.append(
            {
                **total,
                "raw_ctr": est.raw_ctr,
                "smoothed_ctr": est.smoothed_ctr,
                "ci_low": est.ci_low,
                "ci_high": est.ci_high,
                "ci_level": est.ci_level,
                "ci_method": est.ci_method,
                "prior_alpha": prior.alpha,
                "prior_beta": prior.beta,
                "prior_level": prior.level,
                "prior_version": prior.version,
            }
        )
    return rows


def top_ads(cells: Iterable[Mapping[str, Any]], k: int) -> list[dict[str, Any]]:
    """The k best ads of one segment window by the lower bound of the credible interval.

    Ranking by the lower bound rewards evidence: an ad with 1 click in 10 impressions does not
    outrank one with 300 clicks in 50,000.
    """
    ranked = sorted(cells, key=lambda c: (-c["ci_low"], -c["smoothed_ctr"], c["ad_id"]))
    return [dict(c) for c in ranked[:k]]


def ended_windows_before(at_ms: int, length_ms: int) -> int:
    """The bound on window starts (``window_start < bound``) that keeps the windows of
    ``length_ms`` that have ended by ``at_ms``: the newest one below it is the newest complete
    window (at "now", the newest started one holds a few minutes of data and is never final)."""
    return at_ms - length_ms + 1
