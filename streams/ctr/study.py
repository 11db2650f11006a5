"""How good are the smoothed CTRs? Error against the generator's truth, by sparsity. Pure.

A seeded clickstream whose campaigns differ in CTR level runs through the CTR processor (partitioned
by ad as Kafka would, priors learned in event time). Every final hourly ad window after a warm-up
is then estimated four ways from its own counts: the raw CTR, the version's default prior, the
learned priors (the row as the pipeline wrote it) and the generator's true campaign priors (the
ideal: no estimator of the prior can do better on average). The error is against the ad's true
CTR (its CTR averaged over the segments its impressions fall in), as RMSE per sparsity band, with
the share of 95 % intervals that hold the truth.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from streams.ctr.events import AdEvent
from streams.ctr.generator import ClickstreamGenerator, ClickstreamProfile
from streams.ctr.learning import PriorLearning
from streams.ctr.processor import HOUR_MS, CtrProcessor
from streams.ctr.smoothing import BetaPrior, PriorSet, posterior
from streams.ctr.state import CtrConfig
from streams.ctr.windows import WindowSpec

BANDS = ((0, 100), (100, 1000), (1000, None))  # impressions per window: [low, high)
METHODS = ("raw", "default prior", "learned priors", "true priors")
LEVEL = 0.95


@dataclass(frozen=True)
class StudyOptions:
    seed: int = 7
    hours: int = 12
    rate: float = 20.0  # impressions per second of event time
    spread: float = 50.0  # highest over lowest campaign CTR level
    mean_ctr: float = 0.01
    partitions: int = 4
    warmup_hours: int = 6  # windows starting earlier are left out: the priors are still learning


@dataclass(frozen=True)
class BandFigures:
    band: str
    windows: int
    rmse: dict[str, float]  # method -> RMSE
    coverage: dict[str, float]  # method -> share of intervals holding the truth (not for raw)


def run_study(options: StudyOptions, default: BetaPrior) -> list[BandFigures]:
    """RMSE and coverage per band (see the module docstring); ``default``: the file's default prior."""
    profile = ClickstreamProfile(
        campaign_spread=options.spread, mean_ctr=options.mean_ctr, out_of_order_share=0.0,
        late_share=0.0, duplicate_share=0.0, malformed_share=0.0,
    )  # fmt: skip
    start = 1_767_225_600_000  # 2026-01-01T00:00Z: hours on the hour
    generator = ClickstreamGenerator(profile, seed=options.seed, start_ms=start, rate=options.rate)
    rows = final_hourly_rows(generator, int(options.rate * options.hours * 3600), options.partitions, default)
    truth = true_ctr(generator)
    ideal = true_priors(generator)
    rows = [r for r in rows if r["window_start"] >= start + options.warmup_hours * HOUR_MS]
    return figures(rows, truth, ideal, default)


def final_hourly_rows(
    generator: ClickstreamGenerator, impressions: int, partitions: int, default: BetaPrior
) -> list[dict[str, Any]]:
    """The final rows of the hourly ad windows, as the processor writes them with learned priors."""
    hour = WindowSpec("1h", HOUR_MS, HOUR_MS)
    config = CtrConfig(
        windows=(hour,), cell_window="1h", grace_ms=60_000, dedupe_horizon_ms=600_000,
        learning=PriorLearning("1h", HOUR_MS),
    )  # fmt: skip
    processor = CtrProcessor(config, PriorSet("study", default), "study", ci_level=LEVEL)
    decoder = msgspec.json.Decoder(AdEvent)
    batches: dict[int, list[AdEvent]] = defaultdict(list)
    rows: list[dict[str, Any]] = []
    pending = 0
    for key, value in generator.messages(impressions):
        batches[zlib.crc32(key) % partitions].append(decoder.decode(value))
        pending += 1
        if pending >= 20_000:
            rows += _fold_and_drain(processor, batches)
            pending = 0
    rows += _fold_and_drain(processor, batches)
    return rows


def _fold_and_drain(processor: CtrProcessor, batches: dict[int, list[AdEvent]]) -> list[dict[str, Any]]:
    for partition, events in sorted(batches.items()):
        processor.apply_batch(events, partition)
    batches.clear()
    return [r for r in processor.drain().ads if r["final"]]


def true_ctr(generator: ClickstreamGenerator) -> dict[str, float]:
    """Each ad's CTR averaged over the segments (an impression's segment is drawn uniformly)."""
    lifts = list(generator.segment_lift.values())
    return {ad.ad_id: float(np.mean([min(ad.true_ctr * s, 0.5) for s in lifts])) for ad in generator.ads}


def true_priors(generator: ClickstreamGenerator) -> dict[str, BetaPrior]:
    """Per campaign, the Beta with the mean and variance of its ads' true CTRs as drawn: the
    campaign level and concentration, scaled by the mean segment lift."""
    p = generator.profile
    lift = float(np.mean(list(generator.segment_lift.values())))
    priors = {}
    for campaign, level in generator.campaign_ctr.items():
        mean = level * lift
        variance = lift**2 * level * (1 - level) / (p.ctr_concentration + 1)
        strength = mean * (1 - mean) / variance - 1
        priors[campaign] = BetaPrior(mean * strength, (1 - mean) * strength, "true", "generator")
    return priors


def figures(
    rows: Iterable[Mapping[str, Any]],
    truth: Mapping[str, float],
    ideal: Mapping[str, BetaPrior],
    default: BetaPrior,
) -> list[BandFigures]:
    rows = [r for r in rows if r["impressions"] > 0]
    n = np.array([r["impressions"] for r in rows], dtype=float)
    c = np.array([r["clicks"] for r in rows], dtype=float)
    true = np.array([truth[str(r["ad_id"])] for r in rows])
    written = [np.array([r[k] for r in rows], dtype=float) for k in ("smoothed_ctr", "ci_low", "ci_high")]
    estimates: dict[str, tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = {
        "raw": (c / n, None, None),
        "learned priors": (written[0], written[1], written[2]),
    }
    for method, priors in (("default prior", [default] * len(rows)),
                           ("true priors", [ideal[str(r["campaign_id"])] for r in rows])):  # fmt: skip
        alpha = np.array([p.alpha for p in priors])
        beta = np.array([p.beta for p in priors])
        estimates[method] = posterior(n, c, alpha, beta, LEVEL)
    result = []
    for low, high in BANDS:
        inside = (n >= low) & (n < (high if high is not None else np.inf))
        label = f"< {high:,}" if low == 0 else f"{low:,}-{high:,}" if high else f">= {low:,}"
        rmse, coverage = {}, {}
        if not inside.any():
            result.append(BandFigures(label, 0, {}, {}))
            continue
        for method in METHODS:
            mean, ci_low, ci_high = estimates[method]
            rmse[method] = float(np.sqrt(np.mean((mean[inside] - true[inside]) ** 2)))
            if ci_low is not None and ci_high is not None:
                held = (ci_low[inside] <= true[inside]) & (true[inside] <= ci_high[inside])
                coverage[method] = float(held.mean())
        result.append(BandFigures(label, int(inside.sum()), rmse, coverage))
    return result
