"""A fraud partition's state: its customers' feature state, its decisions in memory (for dedupe
and the label join), and the labels waiting for their transaction. Snapshotted as a whole
(msgspec, typed); folded only by `FraudProcessor`."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from streams.fraud.entity_link import Held
from streams.fraud.features import FeatureState
from streams.fraud.messages import LabelMessage


@dataclass
class LabelQueue:
    """Labels waiting for their transaction, in arrival order, indexed by transaction and by time."""

    waiting: dict[int, LabelMessage] = field(default_factory=dict)  # arrival number -> label
    by_transaction: dict[str, list[int]] = field(default_factory=dict)
    by_time: list[tuple[int, int]] = field(default_factory=list)  # heap of (label ts, arrival number)
    arrivals: int = 0
    due: list[int] = field(default_factory=list)  # waiting labels whose transaction was just decided

    def wait(self, label: LabelMessage) -> None:
        number = self.arrivals
        self.arrivals += 1
        self.waiting[number] = label
        self.by_transaction.setdefault(label.transaction_id, []).append(number)
        heapq.heappush(self.by_time, (label.ts, number))

    def decided(self, transaction_id: str) -> None:
        numbers = self.by_transaction.pop(transaction_id, None)
        if numbers is not None:
            self.due.extend(numbers)

    def candidates(self, watermark: int | None) -> list[int]:
        """The waiting labels that may be released now: their transaction was decided, or the
        watermark passed their time. Any other waiting label keeps waiting."""
        found, self.due = self.due, []
        if watermark is not None:
            while self.by_time and self.by_time[0][0] <= watermark:
                found.append(heapq.heappop(self.by_time)[1])
        return sorted(set(found))

    def remove(self, number: int) -> None:
        label = self.waiting.pop(number)
        numbers = self.by_transaction.get(label.transaction_id)
        if numbers is not None and number in numbers:
            numbers.remove(number)
            if not numbers:
                del self.by_transaction[label.transaction_id]


@dataclass
class PartitionFraud:
    features: FeatureState = field(default_factory=FeatureState)
    decisions: dict[str, int] = field(default_factory=dict)  # transaction id -> ts, decision order
    # The decisions by time, for eviction: those not older than an earlier one (in decision order,
    # so in time order, from `in_order_start` on), and a heap of the (ts, number, id) of the others.
    in_order: list[str] = field(default_factory=list)
    in_order_start: int = 0
    out_of_order: list[tuple[int, int, str]] = field(default_factory=list)
    forgotten: int = 0  # decisions deleted since `decisions` was last compacted
    watermark: int | None = None  # largest transaction time seen
    labels: LabelQueue = field(default_factory=LabelQueue)
    position: int = 0  # the transaction offset after the last one folded
    numbered: int = 0  # decisions made so far (the number of the next one)
    # Decisions drained before the last drain are durable: those numbered below `sealed`, the
    # first `sealed_in_order` of `in_order`. Only these may be forgotten.
    sealed: int = 0
    sealed_in_order: int = 0
    redecided: dict[str, int] = field(default_factory=dict)  # id decided again -> its number
    chain_head: str = ""  # the hash of the decision log's last entry ("": none yet)
    # A version with entity features (`fraud.entity_link`): the transactions waiting for their
    # entities' answers, in decision order; answers that came before their transaction.
    pending: list[Held] = field(default_factory=list)
    early: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    in_order_trimmed: int = 0  # entries deleted from the front of `in_order` so far

    @property
    def chain_length(self) -> int:
        """Entries of the decision log: the decisions scored (a pending one has none yet)."""
        return self.pending[0].seq if self.pending else self.numbered

    def durable_marks(self) -> tuple[int, int]:
        """(decision number, `in_order` length) below which decisions are scored: all of them but
        the pending ones, which get rows (and become durable) only once scored."""
        if self.pending:
            head = self.pending[0]
            return head.seq, head.in_order_at - self.in_order_trimmed
        return self.numbered, len(self.in_order)
