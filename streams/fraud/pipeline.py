"""The fraud pipeline the engine drives: transactions and their delayed labels, co-partitioned by
customer, folded together per partition; scores for a whole batch at once.

Before a batch is folded (`prepare`), the transactions its labels name that the partition no longer
holds in memory are looked up in the archive (`Lookup`, given by the host: the
``fraud_transactions`` rows in Cassandra); the processor decides which of them count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, ClassVar, Protocol

import msgspec

from streams.engine.pipeline import Batch, Drained, Folded, Message, PartitionStates, decode_all
from streams.events import Rejected
from streams.fraud import audit
from streams.fraud.entity_stage import AnswerBatch
from streams.fraud.processor import (
    COHORT_TABLE,
    SCORES_TABLE,
    TRANSACTIONS_TABLE,
    Archived,
    FraudOutput,
    FraudProcessor,
)
from streams.fraud.state import PartitionFraud
from streams.tables import of_pipeline

TRANSACTION_SCHEMA = "transaction.schema.json"
LABEL_SCHEMA = "label.schema.json"
TABLES = of_pipeline("fraud")


class Decoder(Protocol):
    def decode(self, raw: bytes | None) -> Any: ...


# (pipeline version, transaction ids) -> the archived decisions among them, by id
Lookup = Callable[[str, Sequence[str]], Awaitable[dict[str, Archived]]]


class FraudPipeline(PartitionStates):
    stateful = True
    name = "fraud"
    tables: ClassVar[dict[str, tuple[str, ...]]] = TABLES
    state_type = PartitionFraud

    def __init__(
        self,
        processor: FraudProcessor,
        decoders: tuple[Decoder, Decoder],
        topics: tuple[str, str],
        scores_topic: str,
        lookup: Lookup | None = None,
        heads_topic: str | None = None,
        heads_interval_s: float = 1.0,
        entity_topics: tuple[str, str] | None = None,
        idle_after_s: float = 3.0,
    ) -> None:
        """Without ``lookup`` the processor must keep its decisions for the whole label horizon
        (``archive=False``). ``heads_topic``: where each drain publishes the decision log's head
        of every partition that decided something since (after the rows, `Drained` order), at most
        every ``heads_interval_s`` of wall-clock time (a head is a witness, not a result).
        ``entity_topics``: (sightings, answers) of the entity stage, when the processor has an
        entity link; a partition without a new transaction for ``idle_after_s`` (wall clock)
        tells the stage it is idle (`fraud.entity_stage`)."""
        self.processor = processor
        self.lookup = lookup
        self._labels: dict[int, tuple[Sequence[Message], list[Any], Folded]] = {}
        self.tx_decoder, self.label_decoder = decoders
        self.transactions, self.labels = topics
        self.topics: tuple[str, ...] = topics
        self.entity_topics = entity_topics
        if entity_topics is not None:
            self.topics = (*topics, entity_topics[1])
        self._answers = msgspec.json.Decoder(AnswerBatch)
        self.idle_after_s = idle_after_s
        self._last_transaction: dict[int, float] = {}  # partition -> when (time.monotonic)
        self._idle: set[int] = set()  # partitions that told the stage they are idle
        self.scores_topic = scores_topic
        self.heads_topic = heads_topic
        self._chained: set[int] = set()  # partitions whose decision log grew since heads were sent
        self.heads_interval_s = heads_interval_s
        self._heads_sent = -math.inf  # (time.monotonic)
        self._published: set[int] = set()  # partitions whose head was published once
        self.out = Drained()
        # Cohort days that got a decision or a label (the monitor recomputes them, `refreshable`):
        # folded since the last drain; folded before it (rows maybe still on their way); durable
        # (folded before the drain before that one, whose checkpoint ended before the last drain
        # began; or rebuilt: written by an earlier owner).
        self.touched_days: set[int] = set()
        self.drained_days: set[int] = set()
        self.durable_days: set[int] = set()

    async def prepare(self, partition: int, batch: Batch) -> None:
        """Decode the batch's labels and look up the transactions they name that are not in memory."""
        messages = batch.get(self.labels, ())
        if not messages or self.lookup is None:
            return
        decoded = Folded()
        labels, _ = decode_all(self.label_decoder.decode, messages, decoded.letters)
        self._labels[partition] = (messages, labels, decoded)
        ids = self.processor.unknown(partition, {label.transaction_id for label in labels})
        if ids:
            self.processor.looked_up[partition] = await self.lookup(self.processor.version, sorted(ids))

    def _decoded_labels(self, partition: int, messages: Sequence[Message], letters: list[Any]) -> list[Any]:
        kept = self._labels.pop(partition, None)
        if kept is not None and kept[0] is messages:  # decoded by `prepare` for this very batch
            letters += kept[2].letters
            return kept[1]
        labels, _ = decode_all(self.label_decoder.decode, messages, letters)
        return labels

    def fold(self, partition: int, batch: Batch, *, replay: bool = False) -> Folded:
        folded = Folded()
        txs, sources = decode_all(self.tx_decoder.decode, batch.get(self.transactions, ()), folded.letters)
        labels = self._decoded_labels(partition, batch.get(self.labels, ()), folded.letters)
        offsets = [message.offset() or 0 for message in sources]
        answers: list[Any] = []
        if self.entity_topics is not None:
            found, _ = decode_all(self._decode_answer, batch.get(self.entity_topics[1], ()), folded.letters)
            answers = [(answer, partition) for batch in found for answer in batch.answers]
        process = self.processor.process
        out = process(
            [(tx, partition) for tx in txs], [(lb, partition) for lb in labels], offsets, live=not replay,
            answers=answers,
        )  # fmt: skip
        days = {row["cohort_day"] for row in out.cohort} | {row["cohort_day"] for row in out.label_cohort}
        if replay:
            self.processor.seal([partition], durable=True)  # a rebuild: these rows were written before
            self.durable_days |= days
            return Folded()
        self.touched_days |= days
        self._keep(out, partition)
        if self.entity_topics is not None and txs:
            self._sent(partition, out)
        t = folded.tallies
        if answers:
            t[f"processed:{self.topics[-1]}"] += len(answers)
        t[f"processed:{self.transactions}"] += len(txs)
        t[f"processed:{self.labels}"] += len(labels)
        t[f"duplicate:{self.transactions}"] += out.duplicates
        for row in out.scores:
            t[f"fraud_decision:{row['decision']}"] += 1
            if row["holdout"]:
                t["fraud_holdout"] += 1
        t["labels_joined"] += len(out.label_cohort)
        t["labels_orphaned"] += out.orphans
        folded.observations["fraud_score"] = [row["score"] for row in out.scores]
        return folded

    def _keep(self, out: FraudOutput, partition: int) -> None:
        """Label columns and score columns are separate cells of the same rows: order-free upserts
        (the sink writes rows with different columns as separate statements)."""
        self.out.put(SCORES_TABLE, out.scores, partition)
        self.out.put(TRANSACTIONS_TABLE, out.transactions + out.label_transactions, partition)
        self.out.put(COHORT_TABLE, out.cohort + out.label_cohort, partition)
        if out.log:
            self.out.put(audit.LOG_TABLE, out.log, partition)
            self._chained.add(partition)
        self.out.records.setdefault(self.scores_topic, []).extend(out.results)

    def _decode_answer(self, raw: bytes | None) -> Any:
        try:
            return self._answers.decode(raw or b"")
        except msgspec.DecodeError as exc:
            return Rejected("schema_violation", f"not an entity stage answer: {exc}"[:500])

    def _sent(self, partition: int, out: FraudOutput) -> None:
        """The batch's sightings and the partition's mark (it is not idle: it just sent)."""
        assert self.processor.entities is not None and self.entity_topics is not None
        records = self.out.records.setdefault(self.entity_topics[0], [])
        watermark = self.processor.states[partition].watermark
        records += self.processor.entities.batches(partition, out.sightings.get(partition, {}), watermark)
        self._last_transaction[partition] = time.monotonic()
        self._idle.discard(partition)

    def idle(self, partitions: set[int], now: float) -> bool:
        """Tell the entity stage which owned partitions went quiet (True: records to send)."""
        link = self.processor.entities
        if link is None or self.entity_topics is None:
            return False
        quiet = [p for p in sorted(partitions - self._idle)
                 if now - self._last_transaction.setdefault(p, now) >= self.idle_after_s]  # fmt: skip
        records = self.out.records.setdefault(self.entity_topics[0], [])
        for partition in quiet:
            state = self.processor.states.get(partition)
            records += link.batches(partition, {}, None if state is None else state.watermark, idle=True)
            self._idle.add(partition)
        return bool(quiet)

    def forget(self, partitions: Iterable[int]) -> None:
        partitions = list(partitions)
        super().forget(partitions)
        for partition in partitions:
            self._last_transaction.pop(partition, None)
            self._idle.discard(partition)

    def drain(self) -> Drained:
        self._publish_heads()
        out, self.out = self.out, Drained()
        self.processor.seal()
        # The engine drains once the previous checkpoint has ended: what that one held is durable.
        self.durable_days |= self.drained_days
        self.drained_days, self.touched_days = self.touched_days, set()
        return out

    def closing(self) -> None:
        """The next drain is the last before partitions leave (a revoke, a stop): it publishes the
        heads that wait for their interval."""
        self._heads_sent = -math.inf

    def _publish_heads(self) -> None:
        """The heads of the partitions whose log grew, once the interval is over; a partition's
        first head at once (every chain has a published head as soon as it has entries)."""
        if self.heads_topic is None or not self._chained:
            return
        now = time.monotonic()
        if now - self._heads_sent >= self.heads_interval_s:
            chained, self._chained, self._heads_sent = self._chained, set(), now
        else:
            chained = self._chained - self._published
            self._chained -= chained
        self._published |= chained
        if not chained:
            return
        records = self.out.records.setdefault(self.heads_topic, [])
        for partition in sorted(chained):
            state = self.processor.states.get(partition)
            if state is not None and state.chain_head:
                head = {"pipeline_version": self.processor.version, "source_partition": partition,
                        "seq": state.chain_length - 1, "hash": state.chain_head}  # fmt: skip
                records.append((str(partition).encode(), head))

    def refreshable(self) -> set[int]:
        """The cohort days to recompute: every day that got a decision or a label, at each call
        until its rows are known durable, then once more (and then no more)."""
        durable, self.durable_days = self.durable_days, set()
        return durable | self.drained_days | self.touched_days
