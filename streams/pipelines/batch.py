"""Splitting a consumed batch into usable events and dead letters. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from streams.events import Coordinates, DeadLetter, Rejected, Validator, decode


@dataclass
class DecodedBatch:
    events: list[tuple[dict[str, Any], Coordinates, bytes]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


def decode_batch(messages: Iterable[tuple[bytes | None, Coordinates]], validator: Validator) -> DecodedBatch:
    batch = DecodedBatch()
    for raw, coordinates in messages:
        result = decode(raw, validator)
        if isinstance(result, Rejected):
            batch.dead_letters.append(DeadLetter(raw or b"", coordinates, result))
        else:
            batch.events.append((result, coordinates, raw or b""))
    return batch
