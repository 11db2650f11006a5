"""Synthetic clickstream with realistic sparsity and the usual dirt. Deterministic per seed.

Many ads across campaigns with heavy-tailed traffic; campaigns whose CTR levels differ by
``campaign_spread`` (30x between the lowest and the highest, evenly in log scale around a mean of
0.003, as display, search and retargeting do), true ad CTRs drawn around their campaign's level,
clicks that follow their impressions by seconds, and configurable shares of out-of-order,
late, duplicate and malformed messages. Yields (key, value) pairs in arrival order.
"""

from __future__ import annotations

import heapq
import itertools
import random
from bisect import bisect
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import orjson

SEGMENTS = ("sports", "news", "tech", "travel", "finance", "gaming", "food", "auto")


@dataclass(frozen=True)
class ClickstreamProfile:
    campaigns: int = 20
    ads: int = 400
    segments: tuple[str, ...] = SEGMENTS
    mean_ctr: float = 0.003
    campaign_spread: float = 30.0  # highest over lowest campaign CTR level
    ctr_concentration: float = 400.0  # Beta(alpha + beta) of the true ad CTRs around their campaign mean
    traffic_tail: float = 1.1  # Pareto shape of the traffic per ad (smaller = heavier tail)
    click_delay_ms: tuple[int, int] = (500, 20_000)
    out_of_order_share: float = 0.02
    max_disorder_ms: int = 20_000  # keep below the worker's grace period
    late_share: float = 0.002
    late_by_ms: int = 10 * 60_000  # well beyond the grace period
    duplicate_share: float = 0.005
    malformed_share: float = 0.001


@dataclass(frozen=True)
class Ad:
    ad_id: str
    campaign_id: str
    true_ctr: float


def campaign_levels(mean: float, spread: float, campaigns: int) -> list[float]:
    """CTR levels evenly spaced in log scale from mean / sqrt(spread) to mean * sqrt(spread)
    (each at most 0.05): the highest is ``spread`` times the lowest."""
    if campaigns == 1:
        return [min(mean, 0.05)]
    return [min(mean * spread ** (i / (campaigns - 1) - 0.5), 0.05) for i in range(campaigns)]


class ClickstreamGenerator:
    def __init__(self, profile: ClickstreamProfile, *, seed: int, start_ms: int, rate: float) -> None:
        self.profile = profile
        self.rng = random.Random(seed)
        self.seed = seed
        self.start_ms = start_ms
        self.step_ms = 1000.0 / rate  # event time between impressions
        self.ads = self._make_ads()
        weights = [self.rng.paretovariate(profile.traffic_tail) for _ in self.ads]
        self.cum_weights = list(itertools.accumulate(weights))
        self.segment_lift = {s: self.rng.lognormvariate(0, 0.35) for s in profile.segments}

    def _make_ads(self) -> list[Ad]:
        p = self.profile
        campaign_means = campaign_levels(p.mean_ctr, p.campaign_spread, p.campaigns)
        self.rng.shuffle(campaign_means)
        self.campaign_ctr = {f"campaign-{c:03d}": m for c, m in enumerate(campaign_means)}
        ads = []
        for i in range(p.ads):
            c = i % p.campaigns
            m = campaign_means[c]
            ctr = self.rng.betavariate(m * p.ctr_concentration, (1 - m) * p.ctr_concentration)
            ads.append(Ad(f"ad-{i:05d}", f"campaign-{c:03d}", ctr))
        return ads

    def messages(self, impressions: int) -> Iterator[tuple[bytes, bytes]]:
        """About ``impressions`` impressions plus their clicks and the configured dirt."""
        p, rng = self.profile, self.rng
        pending: list[tuple[float, int, bytes, bytes]] = []  # (arrival time, seq, key, value)
        recent: deque[tuple[bytes, bytes]] = deque(maxlen=500)
        seq = itertools.count()
        for i in range(impressions):
            now = self.start_ms + i * self.step_ms
            ad = self.ads[bisect(self.cum_weights, rng.random() * self.cum_weights[-1])]
            segment = rng.choice(p.segments)
            ts = int(now)
            if rng.random() < p.late_share:
                ts -= p.late_by_ms  # arrives long after its event time: late
            impression_id = f"i{self.seed}-{i}"
            event = self._event("impression", impression_id, ts, ad, segment, f"u{rng.randrange(50_000)}")
            arrival = now + (rng.uniform(0, p.max_disorder_ms) if rng.random() < p.out_of_order_share else 0)
            heapq.heappush(pending, (arrival, next(seq), ad.ad_id.encode(), event))
            if rng.random() < min(ad.true_ctr * self.segment_lift[segment], 0.5):
                delay = rng.randint(*p.click_delay_ms)
                click = self._event("click", f"c{self.seed}-{i}", ts + delay, ad, segment, "", impression_id)
                heapq.heappush(pending, (now + delay, next(seq), ad.ad_id.encode(), click))
            while pending and pending[0][0] <= now:
                _, _, key, value = heapq.heappop(pending)
                recent.append((key, value))
                yield key, value
                if rng.random() < p.duplicate_share:
                    yield rng.choice(recent)
                if rng.random() < p.malformed_share:
                    yield key, self._malformed(value)
        while pending:
            _, _, key, value = heapq.heappop(pending)
            yield key, value

    @staticmethod
    def _event(
        kind: str, event_id: str, ts: int, ad: Ad, segment: str, user: str, impression_id: str | None = None
    ) -> bytes:
        event: dict[str, object] = {
            "type": kind,
            "event_id": event_id,
            "ts": ts,
            "ad_id": ad.ad_id,
            "campaign_id": ad.campaign_id,
            "user_id": user or "u0",
            "segment": segment,
        }
        if impression_id is not None:
            event["impression_id"] = impression_id
        return orjson.dumps(event)

    def _malformed(self, value: bytes) -> bytes:
        event = orjson.loads(value)
        match self.rng.randrange(5):
            case 0:
                return value[: len(value) // 2]  # truncated JSON
            case 1:
                event.pop("ad_id")
            case 2:
                event["type"] = "view"
            case 3:
                event["ts"] = -event["ts"]
            case _:
                event["ts"] = event["ts"] * 1000  # microseconds by mistake: absurd
        event["event_id"] = "bad-" + event["event_id"]
        return orjson.dumps(event)
