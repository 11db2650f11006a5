"""The smoke pipeline the engine drives: one row per valid event, with its coordinates."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from streams.engine.pipeline import Batch, Drained, Folded, coordinates_of, decode_all
from streams.events import Validator, decode
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
        events, sources = decode_all(self._decode, batch.get(self.topic, ()), folded.letters)
        rows = [smoke_row(e, coordinates_of(m), self.version) for e, m in zip(events, sources, strict=True)]
        self.out.rows.setdefault(TABLE, []).extend(rows)
        folded.tallies[f"processed:{self.topic}"] += len(rows)
        return folded

    def _decode(self, raw: bytes | None) -> Any:
        return decode(raw, self.validator)

    def drain(self) -> Drained:
        out, self.out = self.out, Drained()
        return out

    def forget(self, partitions: Iterable[int]) -> None:
        """Stateless."""

    def watermark(self, partition: int) -> int | None:
        return None

    snapshot_format = "smoke"  # stateless: nothing is ever snapshotted

    def snapshot(self, partition: int) -> bytes | None:
        return None

    def restore(self, partition: int, data: bytes) -> None:
        """Stateless: nothing to restore."""
