"""Per-partition CTR state: watermark, dedupe and open window counts. Pure and deterministic.

Everything depends only on the partition's own order of events (event time, never wall clock):
the watermark is the largest event time seen in the partition, an event is *late* when it is
older than the watermark minus the grace period, and a window is *final* once the watermark has
passed its end plus the grace period. Because ad events are keyed by ``ad_id``, every ad and
ad x segment cell lives in exactly one partition; campaign counts are kept per partition and
summed by readers, so no cross-partition ordering can change a result.

The work is per batch, not per event: the per-event loop only decides duplicate / late /
counted (or, for a click, where it counts) and moves the watermark; the counted events are then
tallied per window *pane* (the window step) in C (`Counter`) and added through `panes.count`. `drain`
first moves the panes that closed into their windows, then visits only the windows changed since
the last drain, plus, when the watermark has passed the earliest close time, the windows that
closed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple

from streams.ctr.attribution import NOWHERE, Origin, PendingClick, expire
from streams.ctr.events import AdEvent
from streams.ctr.learning import FinalWindow, PriorLearning
from streams.ctr.panes import Counts, close_panes, count
from streams.ctr.windows import WindowSpec


@dataclass(frozen=True)
class CtrConfig:
    windows: tuple[WindowSpec, ...]
    cell_window: str  # the window the ad x segment cells are computed on
    grace_ms: int
    dedupe_horizon_ms: int
    learning: PriorLearning | None = None  # keep final windows to learn priors from (`learning`)
    # A click counts in its impression's windows (see `apply_batch`); else at its own time.
    attribute_clicks: bool = False

    def __post_init__(self) -> None:
        if self.cell_window not in {w.name for w in self.windows}:
            raise ValueError(f"cell window {self.cell_window!r} is not one of the windows")
        if self.learning is not None and self.learning.window not in {w.name for w in self.windows}:
            raise ValueError(f"prior learning window {self.learning.window!r} is not one of the windows")
        if self.dedupe_horizon_ms < self.grace_ms:
            raise ValueError("the dedupe horizon must be at least the grace period")


class Outcome(Enum):
    COUNTED = "counted"
    DUPLICATE = "duplicate"
    LATE = "late"
    PENDING = "pending"  # a click waiting for its impression


AdKey = tuple[str, str, int]  # (window, ad_id, start)
CampaignKey = tuple[str, str, int]  # (window, campaign_id, start)
CellKey = tuple[str, str, str, int]  # (window, segment, ad_id, start)
KINDS = ("ad", "campaign", "cell")  # the order `drain` yields them in


@dataclass
class PartitionState:
    partition: int
    watermark: int | None = None
    seen: dict[str, int] = field(default_factory=dict)  # event_id -> ts, for dedupe
    seen_floor: int | None = None  # no entry of `seen` is older than this
    ads: dict[AdKey, Counts] = field(default_factory=dict)
    campaigns: dict[CampaignKey, Counts] = field(default_factory=dict)
    cells: dict[CellKey, Counts] = field(default_factory=dict)
    campaign_of: dict[str, str] = field(default_factory=dict)  # ad_id -> campaign_id
    # (window, ad_id, start) -> the segments with a cell in it: a cell's row depends on its ad's
    # counts (back-off), so the cells of an ad whose counts changed are drained again.
    cell_segments: dict[AdKey, list[str]] = field(default_factory=dict)
    # Changed since the last drain, per kind, in first-change order (dicts as ordered sets).
    dirty: dict[str, dict[Any, None]] = field(default_factory=lambda: {kind: {} for kind in KINDS})
    next_close: int | None = None  # the earliest end + grace of an open window
    finals: list[FinalWindow] = field(default_factory=list)  # what priors learn from, in close order
    pending: dict[str, list[PendingClick]] = field(default_factory=dict)  # impression_id -> its clicks
    pending_floor: int | None = None  # no pending click is older than this
    # Open panes of the hopping windows, per kind: (window, *ids, pane start) -> counts not yet in
    # the windows; a pane's counts join its windows once when it closes (`panes.count`).
    panes: dict[str, dict[Any, Counts]] = field(default_factory=lambda: {kind: {} for kind in KINDS})
    next_pane_close: int | None = None  # the earliest end + grace of an open pane

    def tables(self) -> dict[str, dict[Any, Counts]]:
        return {"ad": self.ads, "campaign": self.campaigns, "cell": self.cells}


class Folded(NamedTuple):
    outcomes: list[Outcome]  # one per event
    late_watermarks: dict[int, int]  # index of a late event -> the watermark it was late for
    attributed_later: int  # pending clicks (of this or earlier batches) whose impression came
    unattributed: list[tuple[PendingClick, int]]  # clicks that waited in vain, and the watermark then


def apply(state: PartitionState, event: AdEvent, config: CtrConfig) -> Outcome:
    """Fold one event into the state (see `apply_batch`)."""
    return apply_batch(state, [event], config).outcomes[0]


Attributed = tuple[AdEvent, int, int]  # a click, its impression's time, the watermark when counted


def apply_batch(
    state: PartitionState, events: Sequence[AdEvent], config: CtrConfig, origin: Origin = NOWHERE
) -> Folded:
    """Fold a partition's events into the state, in the partition's order.

    With ``attribute_clicks``, a click counts at its impression's time, in those of the
    impression's windows still open (end + grace after the watermark): a window never holds a
    click without its impression. A click whose impression was counted in the partition within the
    dedupe horizon counts at once. Otherwise it waits (``PENDING``) for its impression, which may
    still come out of order, until the watermark passes its own time plus the grace: then no
    impression at or before it can come without being late, and it is dead-lettered
    (``unattributed``). Everything depends on the partition's order only.
    """
    outcomes: list[Outcome] = []
    late: dict[int, int] = {}
    counted: list[AdEvent] = []
    attributed: list[Attributed] = []
    unattributed: list[tuple[PendingClick, int]] = []
    seen, campaign_of, pending = state.seen, state.campaign_of, state.pending
    watermark = state.watermark
    horizon_ms, grace_ms, attribute = config.dedupe_horizon_ms, config.grace_ms, config.attribute_clicks
    oldest: int | None = None
    resolved = 0
    for i, event in enumerate(events):
        # Ids older than the horizon count as forgotten whether or not `drain` has trimmed them
        # yet, so the outcome never depends on where batches happened to end.
        if _remembered(seen.get(event.event_id), watermark, horizon_ms) is not None:
            outcomes.append(Outcome.DUPLICATE)
            continue
        ts = event.ts
        if watermark is not None and ts < watermark - grace_ms:
            late[len(outcomes)] = watermark
            outcomes.append(Outcome.LATE)
            continue
        impression_at = None
        if attribute and event.type == "click" and isinstance(event.impression_id, str):
            impression_at = _remembered(seen.get(event.impression_id), watermark, horizon_ms)
        seen[event.event_id] = ts
        oldest = ts if oldest is None or ts < oldest else oldest
        if watermark is None or ts > watermark:
            watermark, advanced = ts, True
        else:
            advanced = False
        campaign_of[event.ad_id] = event.campaign_id
        if impression_at is not None:
            attributed.append((event, impression_at, watermark))
            outcomes.append(Outcome.COUNTED)
        elif attribute and event.type == "click":
            raw, coordinates = origin(i)
            pending.setdefault(str(event.impression_id), []).append(PendingClick(event, raw, coordinates))
            floor = state.pending_floor
            state.pending_floor = ts if floor is None or ts < floor else floor
            outcomes.append(Outcome.PENDING)
        else:
            counted.append(event)
            outcomes.append(Outcome.COUNTED)
            for click in pending.pop(event.event_id, ()) if pending else ():
                attributed.append((click.event, ts, watermark))
                resolved += 1
        floor = state.pending_floor
        if advanced and floor is not None and floor < watermark - grace_ms:
            unattributed += expire(state, watermark, grace_ms)
    state.watermark = watermark
    if oldest is not None:
        state.seen_floor = oldest if state.seen_floor is None else min(state.seen_floor, oldest)
    if counted or attributed:
        for spec in config.windows:
            count(state, spec, counted, attributed, spec.name == config.cell_window, config.grace_ms)
    return Folded(outcomes, late, resolved, unattributed)


def _remembered(seen_at: int | None, watermark: int | None, horizon_ms: int) -> int | None:
    """When an id was counted, if the partition still remembers it: within the dedupe horizon of
    the watermark (one rule for duplicates and for a click's impression)."""
    if seen_at is None or (watermark is not None and seen_at < watermark - horizon_ms):
        return None
    return seen_at


@dataclass(frozen=True)
class WindowUpdate:
    """A window whose counts changed or that became final since the last drain."""

    kind: str  # ad | campaign | cell
    key: tuple[Any, ...]
    counts: Counts
    final: bool
    ad_counts: Counts | None = None  # for a cell: its ad's counts in the same window (backoff)
    refresh: bool = False  # a cell unchanged itself, drained because its ad's counts changed


def drain(state: PartitionState, config: CtrConfig) -> Iterator[WindowUpdate]:
    """Move the panes that closed into their windows, then yield changed windows and windows that
    just closed (final), and forget the closed ones.

    Cells come after the ads of the same partition so a reader of both sees the ad first.
    """
    watermark = state.watermark if state.watermark is not None else 0
    if state.next_pane_close is not None and state.next_pane_close <= watermark:
        close_panes(state, config, watermark)
    tables = state.tables()
    closed = _closed(state, config, watermark) if _closing(state, watermark) else None
    for kind in KINDS:
        table, final = tables[kind], closed[kind] if closed else {}
        changed = {**state.dirty[kind], **final}
        refreshed = _refreshed(state, changed) if kind == "cell" else {}
        for key in {**changed, **refreshed}:
            counts = table[key]
            ad_counts = state.ads.get((key[0], key[2], key[3])) if kind == "cell" else None
            yield WindowUpdate(kind, key, Counts(counts.impressions, counts.clicks), key in final, ad_counts,
                               key in refreshed)  # fmt: skip
    if closed:
        if config.learning is not None:
            _keep_finals(state, config, closed["ad"], watermark)
        for kind in KINDS:
            for key in closed[kind]:
                del tables[kind][key]
        for key in closed["ad"]:
            state.cell_segments.pop(key, None)
    for dirty in state.dirty.values():
        dirty.clear()
    _forget_old_ids(state, watermark - config.dedupe_horizon_ms, config.grace_ms)


def _keep_finals(state: PartitionState, config: CtrConfig, closed: dict[Any, None], watermark: int) -> None:
    """Keep the final counts of the ad windows priors learn from; forget those no epoch still reads."""
    learning = config.learning
    assert learning is not None
    for key in closed:
        window, ad_id, start = key
        if learning.learns_from(window, start):
            counts = state.ads[key]
            closes = start + learning.size_ms + config.grace_ms
            state.finals.append((closes, state.campaign_of[ad_id], ad_id, counts.impressions, counts.clicks))
    # A window open after this drain (or opened later) starts after watermark - its size - grace;
    # the ones closing now get their last rows from this drain, after this.
    open_after = watermark - max(spec.size_ms for spec in config.windows) - config.grace_ms
    horizon = learning.forget_before(min([open_after, *(key[-1] for key in closed)]))
    if state.finals and state.finals[0][0] <= horizon:
        state.finals = [final for final in state.finals if final[0] > horizon]


def _refreshed(state: PartitionState, changed: dict[Any, None]) -> dict[Any, None]:
    """The cells not changed themselves whose ad's counts changed (in the cells' window)."""
    refreshed: dict[Any, None] = {}
    for window, ad_id, start in state.dirty["ad"]:
        for segment in state.cell_segments.get((window, ad_id, start), ()):
            key = (window, segment, ad_id, start)
            if key not in changed:
                refreshed[key] = None
    return refreshed


def _closing(state: PartitionState, watermark: int) -> bool:
    return state.next_close is not None and state.next_close <= watermark


def _closed(state: PartitionState, config: CtrConfig, watermark: int) -> dict[str, dict[Any, None]]:
    """The windows the watermark has closed, per kind; `next_close` moves to the earliest open one."""
    specs = {spec.name: spec for spec in config.windows}
    closed: dict[str, dict[Any, None]] = {}
    next_close: int | None = None
    for kind, table in state.tables().items():
        closed[kind] = {}
        for key in table:
            closes = specs[key[0]].end(key[-1]) + config.grace_ms
            if closes <= watermark:
                closed[kind][key] = None
            elif next_close is None or closes < next_close:
                next_close = closes
    state.next_close = next_close
    return closed


def _forget_old_ids(state: PartitionState, horizon: int, slack_ms: int) -> None:
    """Trim the dedupe ids older than the horizon, once they are ``slack_ms`` past it (a trim
    walks every id, so it is not done on every drain)."""
    if state.seen_floor is not None and state.seen_floor < horizon - slack_ms:
        state.seen = {eid: ts for eid, ts in state.seen.items() if ts >= horizon}
        state.seen_floor = min(state.seen.values(), default=None)
