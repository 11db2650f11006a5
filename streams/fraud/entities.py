"""Entity features across customers (issue 16, first part): what a device, a card, an IP /24 or a
shipping address did with *other* customers before a transaction. Pure and exact.

A transaction's features count the entity's events strictly before it in (event time, transaction
id) order, whatever order they were added in, so any stage that has added every earlier event of
an entity computes the same values. That is the contract an entity stage keyed by entity has to
meet (its events arrive from every customer partition); `streams evaluate --entities` uses it
with a global view of generated traffic to measure what the features are worth.

Not yet wired into the pipeline: the worker's features are `fraud.features` (partition-local).
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
HORIZON_MS = 7 * DAY_MS  # the longest window: older events are forgotten
AGE_CAP_DAYS = 30.0
ENTITY_FEATURES = (
    *(f"{kind}_customers_{name}" for kind in KINDS for name, _ in WINDOWS),
    *(f"{kind}_age_days" for kind in KINDS),
    "device_cards_24h",
    "card_devices_24h",
)


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


# An entity's event: (event time, transaction id, customer, the other entity it pairs with).
Event = tuple[int, str, str, str]


@dataclass
class EntityHistory:
    """Per entity key (``kind:value``): its events in (ts, transaction id) order within
    `HORIZON_MS` of the newest transaction added, and when it was first seen."""

    events: dict[str, list[Event]] = field(default_factory=dict)
    first_seen: dict[str, int] = field(default_factory=dict)
    newest: int | None = None

    def features(self, tx: Mapping[str, Any]) -> list[float]:
        """``tx``'s entity features (`ENTITY_FEATURES` order), from the events before it."""
        keys = entity_keys(tx)
        at = (int(tx["ts"]), str(tx["transaction_id"]))
        customer = str(tx["customer_id"])
        counts, ages = [], []
        for kind in KINDS:
            value = keys[kind]
            events = self._before(kind, value, at)
            for _, width in WINDOWS:
                counts.append(_log_distinct(events, at[0] - width, customer, 2))
            first = self.first_seen.get(f"{kind}:{value}") if value is not None else None
            age = 0.0 if first is None or first >= at[0] else (at[0] - first) / DAY_MS
            ages.append(min(age, AGE_CAP_DAYS))
        pairs = [
            _log_distinct(self._before("device", keys["device"], at), at[0] - DAY_MS, None, 3),
            _log_distinct(self._before("card", keys["card"], at), at[0] - DAY_MS, None, 3),
        ]
        return counts + ages + pairs

    def add(self, tx: Mapping[str, Any]) -> None:
        keys = entity_keys(tx)
        ts, tx_id, customer = int(tx["ts"]), str(tx["transaction_id"]), str(tx["customer_id"])
        pair = {"device": keys["card"] or "", "card": keys["device"] or ""}
        for kind in KINDS:
            value = keys[kind]
            if value is None:
                continue
            key = f"{kind}:{value}"
            bisect.insort(self.events.setdefault(key, []), (ts, tx_id, customer, pair.get(kind, "")))
            self.first_seen[key] = min(self.first_seen.get(key, ts), ts)
        if self.newest is None or ts > self.newest:
            self.newest = ts

    def evict(self) -> None:
        """Forget events older than the longest window before the newest transaction (an entity
        keeps its first-seen time while it has events; one without any is new again)."""
        if self.newest is None:
            return
        horizon = self.newest - HORIZON_MS
        for key in list(self.events):
            events = self.events[key]
            cut = bisect.bisect_left(events, (horizon, "", "", ""))
            if cut == len(events):
                del self.events[key], self.first_seen[key]
            elif cut:
                del events[:cut]

    def _before(self, kind: str, value: str | None, at: tuple[int, str]) -> list[Event]:
        if value is None:
            return []
        events = self.events.get(f"{kind}:{value}", [])
        return events[: bisect.bisect_left(events, (at[0], at[1], "", ""))]


def _log_distinct(events: list[Event], since: int, exclude: str | None, field_index: int) -> float:
    """log1p of the distinct values of field ``field_index`` (2: customer, 3: the paired entity)
    among ``events`` at or after ``since``, ``exclude`` left out."""
    start = bisect.bisect_left(events, (since, "", "", ""))
    distinct = {event[field_index] for event in events[start:]} - {exclude, ""}
    return math.log1p(len(distinct))
