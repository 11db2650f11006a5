"""Counting events into windows through panes. Pure.

A pane is one step of a window spec. A tumbling window is its own pane, so its counts go straight
to the window. A hopping window's panes hold their counts until they close (the watermark passes
the pane's end plus the grace); then each pane's counts join its size/step windows at once. An
hourly window every 5 minutes is therefore written when one of its 12 panes closes (and final
with its last), not at every flush: the rows a flush writes are the tumbling windows that changed
and the hopping windows of the panes that closed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streams.ctr.events import AdEvent
from streams.ctr.windows import WindowSpec

if TYPE_CHECKING:
    from streams.ctr.state import Attributed, CtrConfig, PartitionState


@dataclass
class Counts:
    impressions: int = 0
    clicks: int = 0


def count(
    state: PartitionState,
    spec: WindowSpec,
    events: list[AdEvent],
    attributed: list[Attributed],
    with_cells: bool,
    grace_ms: int,
) -> None:
    """Tally the events per (segment, ad, campaign, pane, is click, watermark bound), then add each
    tally where it belongs. A tumbling window is its own pane: the tally goes to the window. A
    hopping window's pane (one step) holds its tally until the pane closes (the watermark passes
    its end plus the grace); then the pane's counts join its size/step windows at once (`drain`), so
    an hourly window is written when one of its panes closes, not at every flush. An attributed
    click (bound: the watermark when it came; 0 for every other event) whose pane had closed goes
    straight to the windows that were still open."""
    step, name = spec.step_ms, spec.name
    tallies = Counter(
        (e.segment, e.ad_id, e.campaign_id, e.ts - e.ts % step, e.type == "click", 0) for e in events
    )
    tallies.update(
        (e.segment, e.ad_id, e.campaign_id, t - t % step, True, bound) for e, t, bound in attributed
    )
    ads: Counter[tuple[str, int, bool, int]] = Counter()
    campaigns: Counter[tuple[str, int, bool, int]] = Counter()
    cells: Counter[tuple[str, str, int, bool, int]] = Counter()
    for (segment, ad_id, campaign_id, pane, click, bound), n in tallies.items():
        ads[ad_id, pane, click, bound] += n
        campaigns[campaign_id, pane, click, bound] += n
        if with_cells:
            cells[segment, ad_id, pane, click, bound] += n
    hopping = step < spec.size_ms
    pane_close_after = step + grace_ms
    tables = state.tables()
    for kind, tally in (("ad", ads), ("campaign", campaigns), ("cell", cells)):
        panes, table = state.panes[kind], tables[kind]
        for (*ids, pane, click, bound), n in tally.items():
            impressions, clicks = (0, n) if click else (n, 0)
            if hopping and pane + pane_close_after > bound:
                key = (name, *ids, pane)
                counts = panes.get(key)
                if counts is None:
                    counts = panes[key] = Counts()
                    closes = pane + pane_close_after
                    if state.next_pane_close is None or closes < state.next_pane_close:
                        state.next_pane_close = closes
                counts.impressions += impressions
                counts.clicks += clicks
            else:
                _add_to_windows(state, table, spec, kind, ids, pane, impressions, clicks, grace_ms, bound)


def _add_to_windows(
    state: PartitionState, table: dict[Any, Counts], spec: WindowSpec, kind: str, ids: list[str], pane: int,
    impressions: int, clicks: int, grace_ms: int, bound: int = 0,
) -> None:  # fmt: skip
    """Add counts of one pane to every window holding it (in ``table``, the state's table of
    ``kind``) that ``bound`` left open."""
    dirty, close_after = state.dirty[kind], spec.size_ms + grace_ms
    for start in range(pane, pane - spec.size_ms, -spec.step_ms):
        if bound and start + close_after <= bound:
            continue  # closed when the click came
        key = (spec.name, *ids, start)
        counts = table.get(key)
        if counts is None:
            counts = table[key] = Counts()
            if kind == "cell":
                state.cell_segments.setdefault((spec.name, ids[1], start), []).append(ids[0])
            closes = start + close_after
            if state.next_close is None or closes < state.next_close:
                state.next_close = closes
        dirty[key] = None  # an existing key keeps its place
        counts.impressions += impressions
        counts.clicks += clicks


def close_panes(state: PartitionState, config: CtrConfig, watermark: int) -> None:
    """Move the counts of every pane the watermark closed into its windows. No window holding a
    pane can have closed before it: a window ends at or after each of its panes."""
    specs = {spec.name: spec for spec in config.windows}
    next_pane_close: int | None = None
    tables = state.tables()
    for kind, panes in state.panes.items():
        closed = []
        for key, counts in panes.items():
            spec = specs[key[0]]
            closes = key[-1] + spec.step_ms + config.grace_ms
            if closes <= watermark:
                closed.append(key)
                _add_to_windows(state, tables[kind], spec, kind, list(key[1:-1]), key[-1], counts.impressions,
                                counts.clicks, config.grace_ms)  # fmt: skip
            elif next_pane_close is None or closes < next_pane_close:
                next_pane_close = closes
        for key in closed:
            del panes[key]
    state.next_pane_close = next_pane_close
