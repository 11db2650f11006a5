"""The entity stage as a pipeline the engine drives (`fraud.entity_stage`): it reads the sightings
and marks the fraud pipeline's customer partitions send, partitioned by entity, and sends the
answers back to the customer partitions that asked (a routed topic, co-partitioned with the
transactions).

Runs in the fraud workers of a version whose model uses entity features, in the same consumer
group: every worker of the version holds some entity partitions and some customer partitions.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from streams.engine.pipeline import Batch, Drained, Folded, PartitionStates, decode_all, routed_key
from streams.events import Rejected
from streams.fraud.entity_link import CHUNK
from streams.fraud.entity_stage import AnswerBatch, EntityPartition, EntityStage, SourceBatch


class EntityPipeline(PartitionStates):
    stateful = True
    name = "entities"
    tables: ClassVar[dict[str, tuple[str, ...]]] = {}
    state_type = EntityPartition

    def __init__(self, stage: EntityStage, sightings_topic: str, features_topic: str) -> None:
        self.processor = stage
        self.sightings_topic = sightings_topic
        self.features_topic = features_topic
        self.topics = (sightings_topic,)
        self._decoder = msgspec.json.Decoder(SourceBatch)
        self.out = Drained()

    def decode(self, raw: bytes | None) -> Any:
        """The fraud pipeline's own messages: one that does not decode is a bug, dead-lettered."""
        try:
            return self._decoder.decode(raw or b"")
        except msgspec.DecodeError as exc:
            return Rejected("schema_violation", f"not a batch of sightings: {exc}"[:500])

    def fold(self, partition: int, batch: Batch, *, replay: bool = False) -> Folded:
        folded = Folded()
        messages, _ = decode_all(self.decode, batch.get(self.sightings_topic, ()), folded.letters)
        out = self.processor.fold(partition, messages)
        if replay:  # a rebuild: these answers were sent before
            return Folded()
        records = self.out.records.setdefault(self.features_topic, [])
        for source, answers in out.answers.items():
            key = routed_key(source, f"from/{partition}")
            for start in range(0, len(answers), CHUNK):  # records far below Kafka's size limit
                records.append((key, msgspec.to_builtins(AnswerBatch(answers[start : start + CHUNK]))))
        folded.tallies.update(out.tallies)
        folded.tallies[f"processed:{self.sightings_topic}"] += sum(len(m.sightings) for m in messages)
        return folded

    def drain(self) -> Drained:
        out, self.out = self.out, Drained()
        return out
