"""Clicks in their impression's windows: the clicks that wait for their impression. Pure.

The rule is in `streams.ctr.state.apply_batch`; this holds a waiting click (with its raw message
and coordinates, for the dead letter if its impression never comes) and its expiry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from streams.ctr.events import AdEvent
from streams.events import Coordinates

Origin = Callable[[int], tuple[bytes, Coordinates]]  # an event's index -> its raw message and where
NOWHERE: Origin = lambda i: (b"", Coordinates("", 0, i))  # noqa: E731 - events folded without messages


@dataclass
class PendingClick:
    """A click that came before its impression, with where it came from (for a dead letter)."""

    event: AdEvent
    raw: bytes
    coordinates: Coordinates


class HasPending(Protocol):
    pending: dict[str, list[PendingClick]]
    pending_floor: int | None


def expire(state: HasPending, watermark: int, grace_ms: int) -> list[tuple[PendingClick, int]]:
    """Take out the pending clicks now older than the watermark minus the grace, in arrival order
    per impression."""
    expired: list[tuple[PendingClick, int]] = []
    bound = watermark - grace_ms
    for impression_id, clicks in list(state.pending.items()):
        expired += [(c, watermark) for c in clicks if c.event.ts < bound]
        waiting = [c for c in clicks if c.event.ts >= bound]
        if waiting:
            state.pending[impression_id] = waiting
        else:
            del state.pending[impression_id]
    state.pending_floor = min((c.event.ts for cs in state.pending.values() for c in cs), default=None)
    return expired
