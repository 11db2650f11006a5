"""The smoke pipeline the engine drives: one row per valid event, with its coordinates."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from streams.engine.pipeline import Batch, Drained, Folded, coordinates_of
from streams.events import DeadLetter, Rejected, Validator, decode
from streams.smoke.logic import TABLE, smoke_row
from streams.tables import of_pipeline


class SmokePipeline:
    stateful = False
    name = "smoke"
    tables: ClassVar[dict[str, tuple[str, ...]]] = of_pipeline("smoke")

    def __init__(self, validator: Validator, topic: str, pipeline_version: str) -> None:
        self.validator, self.topic, self.version = validator, topic, pipeline_version
        self.topics = (topic,)
        self.out = Drained()

    def fold(self, partition: int, batch: Batch, *, replay: bool = False) -> Folded:
        folded = Folded()
        if replay:  # stateless: nothing to rebuild
            return folded
        rows = self.out.rows.setdefault(TABLE, [])
        for message in batch.get(self.topic, ()):
            at = coordinates_of(message)
            event = decode(message.value(), self.validator)
            if isinstance(event, Rejected):
                folded.letters.append(DeadLetter(message.value() or b"", at, event))
            else:
                rows.append(smoke_row(event, at, self.version))
                folded.tallies[f"processed:{self.topic}"] += 1
        return folded

    def drain(self) -> Drained:
        out, self.out = self.out, Drained()
        return out

    def forget(self, partitions: Iterable[int]) -> None:
        """Stateless."""

    def watermark(self, partition: int) -> int | None:
        return None
