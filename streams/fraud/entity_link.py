"""The customer side of the entity stage (`fraud.entity_stage`). Pure.

A version whose model uses entity features does not score a transaction when it is folded: its
customer features are computed then (in log order, as always), its sightings go to the entity
stage, and it waits in its partition's `Held` queue until every entity it names has answered.
Transactions are scored from the head of the queue, in decision-number order, so the decision log
and every row are the same whatever order the answers come back in.

Lateness is the customer partition's own: a transaction more than the grace below the partition's
largest transaction time asks but is not counted; one more than the late limit below it does not
ask (its entity features are those of an entity never seen). Both depend on the partition's log
alone.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from streams.engine.pipeline import Record, routed_key
from streams.fraud.entities import KINDS, absent, sightings
from streams.fraud.entity_stage import EntityFeatures, Sighting, SourceBatch
from streams.fraud.messages import TransactionMessage


@dataclass
class Held:
    """A transaction folded but not scored yet: its customer features and the answers so far."""

    seq: int
    tx: TransactionMessage
    row: list[float]
    offset: int | None
    asked: list[str]  # the kinds of entity it named (and asked about)
    answers: dict[str, list[float]] = field(default_factory=dict)
    in_order_at: int = 0  # `in_order` entries before it (counting trimmed ones): for durability


@dataclass
class Ready:
    """Transactions to score now, in order, with what `FraudProcessor._score` needs of each."""

    txs: list[TransactionMessage] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    rows: list[list[float]] = field(default_factory=list)
    offsets: list[int | None] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)


CHUNK = 500  # sightings or answers per record: ~50 KB, at most ~400 KB with the longest ids


def entity_partition(key: str, partitions: int) -> int:
    """The stage partition of an entity (a stable hash: the same in every process)."""
    return zlib.crc32(key.encode()) % partitions


class EntityLink:
    def __init__(self, stage_partitions: int, *, grace_ms: int, late_limit_ms: int) -> None:
        self.stage_partitions = stage_partitions
        self.grace_ms = grace_ms
        self.late_limit_ms = late_limit_ms

    def ask(self, held: Held, clock: int | None, by_target: dict[int, list[Sighting]]) -> None:
        """The sightings of a transaction just folded (``clock``: the partition's largest
        transaction time before it), by stage partition; ``held.asked``: the answers it waits for."""
        tx = held.tx
        behind = 0 if clock is None else clock - self.grace_ms - tx.ts
        if behind > self.late_limit_ms:
            return  # too late to ask: features of entities never seen
        named = sightings({"device_id": tx.device_id, "card_id": tx.card_id, "ip": tx.ip,
                           "shipping_address": tx.shipping_address})  # fmt: skip
        for kind, value, pair in named:
            key = f"{kind}:{value}"
            sighting = Sighting(held.seq, kind, value, tx.ts, tx.transaction_id, tx.customer_id, pair,
                                counted=behind <= 0)  # fmt: skip
            by_target.setdefault(entity_partition(key, self.stage_partitions), []).append(sighting)
            held.asked.append(kind)

    def batches(
        self,
        partition: int,
        sightings: dict[int, list[Sighting]],
        watermark: int | None,
        *,
        idle: bool = False,
    ) -> list[Record]:
        """Records to every stage partition: the partition's sightings for it, at most `CHUNK` per
        record (a record stays far below Kafka's message size limit), then its mark in the last
        (``watermark``: its largest transaction time, None: none yet)."""
        mark = None if watermark is None else watermark - self.grace_ms
        records: list[Record] = []
        for target in range(self.stage_partitions):
            key, items = routed_key(target, f"from/{partition}"), sightings.get(target, [])
            chunks = [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)] or [[]]
            for chunk in chunks[:-1]:
                records.append((key, msgspec.to_builtins(SourceBatch(partition, chunk, None))))
            records.append((key, msgspec.to_builtins(SourceBatch(partition, chunks[-1], mark, idle))))
        return records

    def hold(
        self,
        state_of: Callable[[int], Any],
        folded: Iterable[tuple[TransactionMessage, int, list[float], int | None, int, int | None, int]],
        answers: Sequence[tuple[EntityFeatures, int]],
        sightings: dict[int, dict[int, list[Sighting]]],
    ) -> Ready:
        """Queue the transactions just folded (tx, partition, customer features, offset, decision
        number, the partition's clock before it, its `in_order` position) in their partition's
        state (``state_of``: a `PartitionFraud`), asking about their entities (``sightings``: by
        partition, then stage partition), and file the answers. The answered transactions at the
        head of each queue are ready, in decision order."""
        touched: dict[int, None] = {}
        for tx, partition, row, offset, seq, clock, at in folded:
            held = Held(seq, tx, row, offset, [], in_order_at=at)
            self.ask(held, clock, sightings.setdefault(partition, {}))
            state = state_of(partition)
            if state.early:
                claim_early(held, state.early)
            state.pending.append(held)
            touched[partition] = None
        for answer, partition in answers:
            state = state_of(partition)
            self.answer(state.pending, state.early, state.numbered, answer)
            touched[partition] = None
        ready = Ready()
        for partition in touched:
            self.release(partition, state_of(partition).pending, ready)
        return ready

    @staticmethod
    def answer(
        pending: list[Held], early: dict[int, dict[str, list[float]]], numbered: int, answer: EntityFeatures
    ) -> None:
        """File an answer with its held transaction. An answer to one not folded yet (``numbered``:
        the next decision number) waits in ``early``: its sighting was sent by an owner whose
        offsets were not committed. An answer to one scored already is a repeat."""
        if answer.seq >= numbered:
            early.setdefault(answer.seq, {}).setdefault(answer.kind, answer.values)
        elif pending and answer.seq >= pending[0].seq:
            held = pending[answer.seq - pending[0].seq]
            if held.tx.transaction_id == answer.transaction_id:
                held.answers.setdefault(answer.kind, answer.values)

    @staticmethod
    def release(partition: int, pending: list[Held], ready: Ready) -> int:
        """Move the answered transactions at the head of the queue to ``ready``; how many."""
        done = 0
        for held in pending:
            if len(held.answers) < len(held.asked):
                break
            entity_row: list[float] = []
            for kind in KINDS:
                entity_row += held.answers.get(kind) or absent(kind)
            ready.txs.append(held.tx)
            ready.partitions.append(partition)
            ready.rows.append(held.row + entity_row)
            ready.offsets.append(held.offset)
            ready.numbers.append(held.seq)
            done += 1
        del pending[:done]
        return done


def claim_early(held: Held, early: dict[int, dict[str, list[float]]]) -> None:
    """Answers that came before their transaction was folded (see `EntityLink.answer`)."""
    found = early.pop(held.seq, None)
    if found:
        held.answers.update({kind: values for kind, values in found.items() if kind in held.asked})
