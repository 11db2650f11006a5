"""Our worker's memory over time (``soak``) and over keys (``state``): the figures, from RSS samples.

No growth is judged from a trend, not from one point: the least-squares slope of RSS over the
second half of the steady phase, in MiB per minute, and what it means per event. Per-key memory
is the RSS difference between 10 % and 100 % of the keys seen, over the keys added in between, so
the worker's fixed cost (imports, connections, the first batch's buffers) is left out.

RSS is what the kernel says the process holds (VmRSS): CPython returns freed memory to the system
only when a whole arena is free, so it rarely goes down; a flat line is what bounded state looks like.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MEMORY_SCENARIOS = ("soak", "state")
TARGET_KEYS = {"ctr": 100_000, "fraud": 1_000_000}  # the 100k ads and 1M customers
KEY_NAMES = {"ctr": "ads", "fraud": "customers"}
MIB = 1024 * 1024
NAN = float("nan")


def least_squares_slope(points: Sequence[tuple[float, float]]) -> float:
    """Slope of the least-squares line through (x, y); 0 when x does not vary (or < 2 points)."""
    if len(points) < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx


def growth(start: float, end: float) -> tuple[float, float]:
    """(end - start, the same in % of start); the percentage is NaN without a positive start."""
    return end - start, (100 * (end - start) / start if start > 0 else NAN)


@dataclass(frozen=True)
class RssSample:
    seconds: float  # soak: since the live traffic started; state: since the worker served /metrics
    rss_mib: float
    done: int  # events the worker has done (its streams_events_consumed_total)
    behind: int  # produced but not done yet

    def to_json(self) -> list[float]:
        return [round(self.seconds, 3), round(self.rss_mib, 4), self.done, self.behind]  # VmRSS is in KiB


@dataclass(frozen=True)
class SoakFigures:
    """One pipeline fed at a steady rate: RSS every few seconds, judged over the steady phase."""

    pipeline: str
    offered_per_s: float  # what the producer sustained over the live traffic
    warmup_s: float
    seconds: float  # the steady phase, after the warm-up
    history_s: float  # event time pre-loaded before the live traffic (state at its steady size)
    history_events: int
    history_catch_up_s: float | None
    sample_s: float
    samples: tuple[RssSample, ...]
    peak_hwm_mib: float  # VmHWM at the end: the largest RSS of the whole run, catch-up included
    time_scale: float = 1.0  # seconds of event time per second of wall time
    keys: int = 0  # distinct keys (customers, ads) in what was produced
    idle_mib: float = NAN  # serving, before the first event
    state_bytes: int = 0  # the newest snapshot of each partition at the end, summed (0: none)

    @property
    def snapshot_per_key_bytes(self) -> float:
        """The state as stored, per key: what each customer (ad) costs the state itself."""
        return self.state_bytes / self.keys if self.keys and self.state_bytes else NAN

    @property
    def state_per_key_bytes(self) -> float:
        """RSS above the idle worker at the end, per key: what the state costs per customer (ad)."""
        return (self.end_mib - self.idle_mib) * MIB / self.keys if self.keys else NAN

    @property
    def steady(self) -> list[RssSample]:
        end = self.warmup_s + self.seconds
        return [s for s in self.samples if self.warmup_s <= s.seconds <= end]

    @property
    def start_mib(self) -> float:
        return self.steady[0].rss_mib if self.steady else NAN

    @property
    def end_mib(self) -> float:
        return self.steady[-1].rss_mib if self.steady else NAN

    @property
    def peak_mib(self) -> float:
        return max((s.rss_mib for s in self.steady), default=NAN)

    @property
    def growth(self) -> tuple[float, float]:
        return growth(self.start_mib, self.end_mib)

    @property
    def slope_mib_per_min(self) -> float:
        """Over the second half of the steady phase."""
        half = self.warmup_s + self.seconds / 2
        return least_squares_slope([(s.seconds / 60, s.rss_mib) for s in self.steady if s.seconds >= half])

    @property
    def bytes_per_event(self) -> float:
        """The slope per event offered: what each event leaves behind, if the trend is state."""
        return self.slope_mib_per_min * MIB / (self.offered_per_s * 60) if self.offered_per_s else NAN

    @property
    def most_behind(self) -> int:
        return max((s.behind for s in self.steady), default=0)

    def summary(self) -> str:
        return (
            f"RSS {self.start_mib:,.0f} -> {self.end_mib:,.0f} MiB (peak {self.peak_mib:,.0f}), "
            f"second half {round(self.slope_mib_per_min, 2) + 0.0:+.2f} MiB/min"
        )

    def to_json(self) -> dict[str, Any]:
        growth_mib, growth_pct = self.growth
        return {
            "pipeline": self.pipeline, "offered_per_s": self.offered_per_s, "warmup_s": self.warmup_s,
            "seconds": self.seconds, "history_s": self.history_s, "history_events": self.history_events,
            "history_catch_up_s": self.history_catch_up_s, "sample_s": self.sample_s,
            "start_mib": self.start_mib, "end_mib": self.end_mib, "peak_mib": self.peak_mib,
            "growth_mib": growth_mib, "growth_pct": growth_pct,
            "slope_mib_per_min_second_half": self.slope_mib_per_min,
            "bytes_per_event": self.bytes_per_event, "most_behind": self.most_behind,
            "peak_hwm_mib": self.peak_hwm_mib, "time_scale": self.time_scale, "keys": self.keys,
            "idle_mib": self.idle_mib, "state_per_key_bytes": self.state_per_key_bytes,
            "state_bytes": self.state_bytes, "snapshot_per_key_bytes": self.snapshot_per_key_bytes,
            "samples": {"columns": ["seconds", "rss_mib", "done", "behind"],
                        "rows": [s.to_json() for s in self.samples]},
        }  # fmt: skip


def rss_at_share(samples: Sequence[RssSample], keys: int, share: float) -> RssSample | None:
    """The first sample taken once at least ``share`` of ``keys`` were done (one event per key)."""
    return next((s for s in samples if s.done >= math.ceil(share * keys)), None)


def bytes_per_key(first: RssSample, last: RssSample) -> float:
    """RSS added per key between two samples (NaN if no key was added in between)."""
    keys = last.done - first.done
    return (last.rss_mib - first.rss_mib) * MIB / keys if keys > 0 else NAN


@dataclass(frozen=True)
class StateFigures:
    """One pipeline over a backlog with one event per key: RSS as the keys are seen."""

    pipeline: str
    key_name: str  # ads | customers
    keys: int
    target_keys: int  # the size the issue asks about; beyond `keys` it is extrapolated
    samples: tuple[RssSample, ...]  # at every change of the progress counter (0.1 s scrapes)
    settled_mib: float  # a few seconds after the last key
    peak_hwm_mib: float

    def at(self, share: float) -> float:
        sample = rss_at_share(self.samples, self.keys, share)
        return sample.rss_mib if sample else NAN

    @property
    def first_mib(self) -> float:
        """Serving /metrics, before the first batch was done."""
        return self.samples[0].rss_mib if self.samples else NAN

    @property
    def per_key_bytes(self) -> float:
        first, last = rss_at_share(self.samples, self.keys, 0.1), rss_at_share(self.samples, self.keys, 1.0)
        return bytes_per_key(first, last) if first and last else NAN

    @property
    def extrapolated(self) -> bool:
        return self.keys < self.target_keys

    @property
    def at_target_mib(self) -> float:
        """RSS with ``target_keys`` keys: measured, or the 100 % point plus the per-key slope."""
        if not self.extrapolated:
            return self.at(1.0)
        return self.at(1.0) + self.per_key_bytes * (self.target_keys - self.keys) / MIB

    def summary(self) -> str:
        return (
            f"RSS {self.at(0.1):,.0f} / {self.at(0.5):,.0f} / {self.at(1.0):,.0f} MiB at 10/50/100 % of "
            f"{self.keys:,} {self.key_name}, {self.per_key_bytes:,.0f} bytes per key"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline, "key_name": self.key_name, "keys": self.keys,
            "target_keys": self.target_keys, "first_mib": self.first_mib, "at_10pct_mib": self.at(0.1),
            "at_50pct_mib": self.at(0.5), "at_100pct_mib": self.at(1.0), "settled_mib": self.settled_mib,
            "per_key_bytes": self.per_key_bytes, "at_target_mib": self.at_target_mib,
            "at_target_extrapolated": self.extrapolated, "peak_hwm_mib": self.peak_hwm_mib,
            "samples": {"columns": ["seconds", "rss_mib", "done", "behind"],
                        "rows": [s.to_json() for s in self.samples]},
        }  # fmt: skip
