"""The bench input: a clean, YSB-like clickstream and the oracle every contender is checked against.

Our generator's events are about 150 bytes; the Yahoo Streaming Benchmark's are about 250 (user,
page and ad ids, ad type, event type, time, IP address). Each event gets the YSB fields it lacks
(``page_id``, ``ad_type``, ``ip_address``), which every contender must decode and ignore. The
profile is clean (no late, duplicate or malformed events; out-of-order ones stay within the grace
period), so every contender must count every event exactly once.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

import orjson

from streams.ctr.generator import ClickstreamGenerator, ClickstreamProfile

WINDOW_MS = 60_000  # the 1 min tumbling window every contender computes
AD_TYPES = ("banner", "modal", "sponsored-search", "mail", "mobile")


def clean_profile() -> ClickstreamProfile:
    return ClickstreamProfile(late_share=0.0, duplicate_share=0.0, malformed_share=0.0)


def ysb_like(messages: Iterable[tuple[bytes, bytes]], seed: int) -> Iterator[tuple[bytes, bytes]]:
    """Add the YSB fields our events lack (deterministic per seed)."""
    rng = random.Random(seed)
    for key, value in messages:
        event = orjson.loads(value)
        event["page_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        event["ad_type"] = rng.choice(AD_TYPES)
        event["ip_address"] = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        yield key, orjson.dumps(event)


def ad_event_stream(
    events: int, *, start_ms: int, rate: float, seed: int = 42
) -> Iterator[tuple[bytes, bytes]]:
    """About ``events`` impressions (plus their clicks) at ``rate`` impressions/s of event time, lazily."""
    generator = ClickstreamGenerator(clean_profile(), seed=seed, start_ms=start_ms, rate=rate)
    return ysb_like(generator.messages(events), seed)


def bench_messages(events: int, *, start_ms: int, rate: float, seed: int = 42) -> list[tuple[bytes, bytes]]:
    return list(ad_event_stream(events, start_ms=start_ms, rate=rate, seed=seed))


def ad_sweep(ads: int, *, start_ms: int, span_ms: int, seed: int = 42) -> Iterator[tuple[bytes, bytes]]:
    """One impression for each of ``ads`` ads in turn (20 ads per campaign), in event-time order
    within ``span_ms``: the generator's events, each given the next of the generator's ads."""
    profile = replace(clean_profile(), ads=ads, campaigns=max(ads // 20, 1), out_of_order_share=0.0)
    generator = ClickstreamGenerator(profile, seed=seed, start_ms=start_ms, rate=ads * 1000 / span_ms)
    ads_in_turn = iter(generator.ads)
    for _, value in ysb_like(generator.messages(ads), seed):
        event = orjson.loads(value)
        if event["type"] != "impression":
            continue
        ad = next(ads_in_turn)
        event["ad_id"], event["campaign_id"] = ad.ad_id, ad.campaign_id
        yield ad.ad_id.encode(), orjson.dumps(event)


@dataclass
class Oracle:
    """(ad_id, window_start) -> [impressions, clicks] of the 1 min tumbling windows."""

    windows: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    by_type: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of(cls, messages: Iterable[tuple[bytes, bytes]]) -> Oracle:
        oracle = cls()
        for _ in oracle.counting(messages):
            pass
        return oracle

    def counting(self, messages: Iterable[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
        """``messages`` passed through, each counted on the way (a long input is never held whole)."""
        for key, value in messages:
            event = orjson.loads(value)
            start = event["ts"] - event["ts"] % WINDOW_MS
            counts = self.windows.setdefault((event["ad_id"], start), [0, 0])
            counts[event["type"] == "click"] += 1
            self.by_type[event["type"]] += 1
            yield key, value

    @property
    def ads(self) -> list[str]:
        return sorted({ad for ad, _ in self.windows})

    @property
    def window_starts(self) -> list[int]:
        return sorted({start for _, start in self.windows})


def mean_size(messages: list[tuple[bytes, bytes]]) -> float:
    return sum(len(value) for _, value in messages) / len(messages) if messages else 0.0
