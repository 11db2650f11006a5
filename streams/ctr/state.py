"""Per-partition CTR state: watermark, dedupe and open window counts. Pure and deterministic.

Everything depends only on the partition's own order of events (event time, never wall clock):
the watermark is the largest event time seen in the partition, an event is *late* when it is
older than the watermark minus the grace period, and a window is *final* once the watermark has
passed its end plus the grace period. Because ad events are keyed by ``ad_id``, every ad and
ad x segment cell lives in exactly one partition; campaign counts are kept per partition and
summed by readers, so no cross-partition ordering can change a result.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from streams.ctr.windows import WindowSpec


@dataclass(frozen=True)
class AdEvent:
    event_id: str
    type: str  # impression | click
    ts: int
    ad_id: str
    campaign_id: str
    segment: str

    @classmethod
    def from_json(cls, event: Mapping[str, Any]) -> AdEvent:
        return cls(
            event["event_id"],
            event["type"],
            event["ts"],
            event["ad_id"],
            event["campaign_id"],
            event["segment"],
        )


@dataclass(frozen=True)
class CtrConfig:
    windows: tuple[WindowSpec, ...]
    cell_window: str  # the window the ad x segment cells are computed on
    grace_ms: int
    dedupe_horizon_ms: int

    def __post_init__(self) -> None:
        if self.cell_window not in {w.name for w in self.windows}:
            raise ValueError(f"cell window {self.cell_window!r} is not one of the windows")
        if self.dedupe_horizon_ms < self.grace_ms:
            raise ValueError("the dedupe horizon must be at least the grace period")


class Outcome(Enum):
    COUNTED = "counted"
    DUPLICATE = "duplicate"
    LATE = "late"


@dataclass
class Counts:
    impressions: int = 0
    clicks: int = 0

    def add(self, event_type: str) -> None:
        if event_type == "click":
            self.clicks += 1
        else:
            self.impressions += 1


AdKey = tuple[str, str, int]  # (window, ad_id, start)
CampaignKey = tuple[str, str, int]  # (window, campaign_id, start)
CellKey = tuple[str, str, str, int]  # (window, segment, ad_id, start)


@dataclass
class PartitionState:
    partition: int
    watermark: int | None = None
    seen: dict[str, int] = field(default_factory=dict)  # event_id -> ts, for dedupe
    ads: dict[AdKey, Counts] = field(default_factory=dict)
    campaigns: dict[CampaignKey, Counts] = field(default_factory=dict)
    cells: dict[CellKey, Counts] = field(default_factory=dict)
    campaign_of: dict[str, str] = field(default_factory=dict)  # ad_id -> campaign_id
    dirty: set[tuple[str, tuple[Any, ...]]] = field(default_factory=set)


def apply(state: PartitionState, event: AdEvent, config: CtrConfig) -> Outcome:
    """Fold one event into the state, in the partition's order."""
    seen_at = state.seen.get(event.event_id)
    # Ids older than the horizon count as forgotten whether or not `drain` has trimmed them yet,
    # so the outcome never depends on where batches happened to end.
    if seen_at is not None and (
        state.watermark is None or seen_at >= state.watermark - config.dedupe_horizon_ms
    ):
        return Outcome.DUPLICATE
    if state.watermark is not None and event.ts < state.watermark - config.grace_ms:
        return Outcome.LATE
    state.seen[event.event_id] = event.ts
    if state.watermark is None or event.ts > state.watermark:
        state.watermark = event.ts
    state.campaign_of[event.ad_id] = event.campaign_id
    for spec in config.windows:
        for start in spec.starts(event.ts):
            ad_key = (spec.name, event.ad_id, start)
            campaign_key = (spec.name, event.campaign_id, start)
            state.ads.setdefault(ad_key, Counts()).add(event.type)
            state.campaigns.setdefault(campaign_key, Counts()).add(event.type)
            state.dirty.add(("ad", ad_key))
            state.dirty.add(("campaign", campaign_key))
            if spec.name == config.cell_window:
                cell_key = (spec.name, event.segment, event.ad_id, start)
                state.cells.setdefault(cell_key, Counts()).add(event.type)
                state.dirty.add(("cell", cell_key))
    return Outcome.COUNTED


@dataclass(frozen=True)
class WindowUpdate:
    """A window whose counts changed or that became final since the last drain."""

    kind: str  # ad | campaign | cell
    key: tuple[Any, ...]
    counts: Counts
    final: bool
    ad_counts: Counts | None = None  # for a cell: its ad's counts in the same window (backoff)


def drain(state: PartitionState, config: CtrConfig) -> Iterator[WindowUpdate]:
    """Yield changed windows and windows that just closed (final), then forget the closed ones.

    Cells come after the ads of the same partition so a reader of both sees the ad first.
    """
    specs = {spec.name: spec for spec in config.windows}
    watermark = state.watermark if state.watermark is not None else 0
    tables: dict[str, dict[Any, Counts]] = {"ad": state.ads, "campaign": state.campaigns, "cell": state.cells}
    closed: list[tuple[str, Any]] = []
    for kind, table in tables.items():
        for key, counts in table.items():
            spec = specs[key[0]]
            final = spec.closed(key[-1], watermark, config.grace_ms)
            if final:
                closed.append((kind, key))
            if final or (kind, key) in state.dirty:
                ad_counts = state.ads.get((key[0], key[2], key[3])) if kind == "cell" else None
                yield WindowUpdate(kind, key, Counts(counts.impressions, counts.clicks), final, ad_counts)
    for kind, key in closed:
        del tables[kind][key]
    state.dirty.clear()
    horizon = watermark - config.dedupe_horizon_ms
    if state.seen and min(state.seen.values()) < horizon:
        state.seen = {eid: ts for eid, ts in state.seen.items() if ts >= horizon}
