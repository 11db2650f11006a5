"""Entity features across customers (issue 16): what a device, a card, an IP /24 or a shipping
address did with *other* customers before a transaction. Pure and exact.

A transaction's features of one entity count that entity's events strictly before it in (event
time, transaction id) order, within the longest window (`HORIZON_MS`), whatever order the events
were added in. So any holder of an entity that has added every earlier event of it computes the
same values: the entity stage (`fraud.entity_stage`, keyed by entity, fed from every customer
partition) and a global view of generated traffic (training, `streams evaluate`) agree exactly.

The age of an entity is how long before the transaction it was first seen *within the horizon*
(at most 7 days): an older first sighting would need state without bound, and a value that
depends on when state was evicted would not be exact under replay.

Email domains are left out: a few domains carry most traffic, hot keys whose exact 7-day
histories would hold most transactions (an approximate count would not be exact under replay).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
KINDS = ("device", "card", "ip24", "address")
WINDOWS = (("1h", HOUR_MS), ("24h", DAY_MS), ("7d", 7 * DAY_MS))
HORIZON_MS = 7 * DAY_MS  # the longest window: older events are never counted
PAIRED = {"device": "card", "card": "device"}  # distinct cards per device, devices per card (24 h)
KIND_FEATURES = {
    kind: (
        *(f"{kind}_customers_{name}" for name, _ in WINDOWS),
        f"{kind}_age_days",
        *((f"{kind}_{PAIRED[kind]}s_24h",) if kind in PAIRED else ()),
    )
    for kind in KINDS
}
ENTITY_FEATURES = tuple(name for kind in KINDS for name in KIND_FEATURES[kind])


def entity_keys(tx: Mapping[str, Any]) -> dict[str, str | None]:
    """The entities a transaction names (None: absent)."""
    ip = tx.get("ip")
    prefix = ".".join(ip.split(".")[:3]) if isinstance(ip, str) and ip.count(".") == 3 else None
    return {
        "device": tx.get("device_id") or None,
        "card": tx.get("card_id") or None,
        "ip24": prefix,
        "address": tx.get("shipping_address") or None,
    }


def sightings(tx: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(kind, value, paired entity) of each entity the transaction names, in `KINDS` order."""
    keys = entity_keys(tx)
    return [(kind, value, keys[PAIRED[kind]] or "" if kind in PAIRED else "")
            for kind in KINDS if (value := keys[kind]) is not None]  # fmt: skip


def absent(kind: str) -> list[float]:
    """The features of an entity the transaction does not name."""
    return [0.0] * len(KIND_FEATURES[kind])


# An entity's event: (event time, transaction id, customer, the paired entity or "").
Event = tuple[int, str, str, str]
SLIDE_FROM = 24  # events in the 7-day window from which an entity's windows slide (`Sliding`)


class Sliding:
    """The distinct customers of an entity over its three windows (and its paired entities over
    24 h) up to a question, kept as counters and moved forward question by question: each event
    enters and leaves each window once, instead of every question counting its whole window.
    Questions come in (time, id) order per entity (the stage answers in watermark order); one
    before ``at`` is counted afresh, and an event added before ``at`` or an eviction drops it.
    Exact: the counters hold what `_log_distinct` would count."""

    __slots__ = ("at", "counts", "lows")

    def __init__(self, ts: int, tx_id: str) -> None:
        self.at = (ts - HORIZON_MS, "")  # every window is empty up to here
        self.lows = [ts - HORIZON_MS] * 4  # each window's lower time bound (1 h, 24 h, 7 d, pairs 24 h)
        self.counts: list[dict[str, int]] = [{}, {}, {}, {}]

    def move(self, events: list[Event], ts: int, tx_id: str, end: int, customer: str, age: float,
             paired: bool) -> list[float]:  # fmt: skip
        """The features at ``(ts, tx_id)`` (``end``: the index of the first event not before it)."""
        begin = bisect.bisect_left(events, (*self.at, "", ""), 0, end)
        for event in events[begin:end]:  # entered every window
            for counts in self.counts[:3]:
                counts[event[2]] = counts.get(event[2], 0) + 1
            pairs = self.counts[3]
            pairs[event[3]] = pairs.get(event[3], 0) + 1
        for window, width in enumerate((HOUR_MS, DAY_MS, HORIZON_MS, DAY_MS)):
            low = ts - width
            if low > self.lows[window]:
                counts = self.counts[window]
                first = bisect.bisect_left(events, (self.lows[window], "", "", ""), 0, end)
                last = bisect.bisect_left(events, (low, "", "", ""), first, end)
                for event in events[first:last]:  # left it
                    value = event[2] if window < 3 else event[3]
                    left = counts[value] - 1
                    if left:
                        counts[value] = left
                    else:
                        del counts[value]
                self.lows[window] = low
        self.at = (ts, tx_id)
        values = [math.log1p(len(c) - (customer in c) - ("" in c)) for c in self.counts[:3]] + [age]
        return values + ([math.log1p(len(self.counts[3]) - ("" in self.counts[3]))] if paired else [])


@dataclass
class EntityHistory:
    """Per entity key (``kind:value``): its events in (ts, transaction id) order."""

    events: dict[str, list[Event]] = field(default_factory=dict)

    def add(self, kind: str, value: str, ts: int, tx_id: str, customer: str, pair: str) -> bool:
        """Add an event; False if the transaction was added to this entity before (a repeat)."""
        events = self.events.setdefault(f"{kind}:{value}", [])
        event = (ts, tx_id, customer, pair)
        at = bisect.bisect_left(events, (ts, tx_id, "", ""))
        if at < len(events) and events[at][:2] == (ts, tx_id):
            return False
        events.insert(at, event)
        cursor = self.__dict__.get("_cursors", {}).get(f"{kind}:{value}")
        if cursor is not None and (ts, tx_id) < cursor.at:  # inside what it counted: count afresh
            del self.__dict__["_cursors"][f"{kind}:{value}"]
        return True

    def features(self, kind: str, value: str, ts: int, tx_id: str, customer: str) -> list[float]:
        """The entity's features (`KIND_FEATURES[kind]`) for a transaction at ``(ts, tx_id)`` of
        ``customer``, from the entity's events before it."""
        key = f"{kind}:{value}"
        events = self.events.get(key, [])
        end = bisect.bisect_left(events, (ts, tx_id, "", ""))
        start = bisect.bisect_left(events, (ts - HORIZON_MS, "", "", ""), 0, end)
        age = (ts - events[start][0]) / DAY_MS if start < end else 0.0
        paired = kind in PAIRED
        if end - start <= SLIDE_FROM:
            window = events[start:end]
            values = [_log_distinct(window, ts - width, customer, 2) for _, width in WINDOWS]
            return values + [age] + ([_log_distinct(window, ts - DAY_MS, None, 3)] if paired else [])
        cursors = self.__dict__.setdefault("_cursors", {})  # derived: not a field, not snapshotted
        cursor = cursors.get(key)
        if cursor is not None and (ts, tx_id) < cursor.at:  # a late question: counted afresh
            cursor = Sliding(ts, tx_id)
        elif cursor is None:
            cursor = cursors[key] = Sliding(ts, tx_id)
        return cursor.move(events, ts, tx_id, end, customer, age, paired)

    def evict(self, before_ts: int) -> None:
        """Forget the events older than ``before_ts`` (and entities left without any)."""
        self.__dict__.pop("_cursors", None)
        for key in list(self.events):
            events = self.events[key]
            cut = bisect.bisect_left(events, (before_ts, "", "", ""))
            if cut == len(events):
                del self.events[key]
            elif cut:
                del events[:cut]

    # A global view (every event of every entity in one history): training and evaluation.

    def transaction_features(self, tx: Mapping[str, Any]) -> list[float]:
        """``tx``'s entity features (`ENTITY_FEATURES` order), from the events before it."""
        keys = entity_keys(tx)
        ts, tx_id, customer = int(tx["ts"]), str(tx["transaction_id"]), str(tx["customer_id"])
        row: list[float] = []
        for kind in KINDS:
            value = keys[kind]
            row += absent(kind) if value is None else self.features(kind, value, ts, tx_id, customer)
        return row

    def add_transaction(self, tx: Mapping[str, Any]) -> None:
        ts, tx_id, customer = int(tx["ts"]), str(tx["transaction_id"]), str(tx["customer_id"])
        for kind, value, pair in sightings(tx):
            self.add(kind, value, ts, tx_id, customer, pair)


def _log_distinct(events: list[Event], since: int, exclude: str | None, field_index: int) -> float:
    """log1p of the distinct values of field ``field_index`` (2: customer, 3: the paired entity)
    among ``events`` at or after ``since``, ``exclude`` and "" left out."""
    start = bisect.bisect_left(events, (since, "", "", ""))
    distinct = {event[field_index] for event in events[start:]}
    distinct.discard("")
    distinct.discard(exclude)
    return math.log1p(len(distinct))
