"""The fraud pipeline step: features, scores, decisions, and the delayed-label join. Pure.

Labels are joined against the partition's own decisions (transactions and labels are both keyed
by customer, so they are co-partitioned). A label whose transaction is not known yet waits until
the partition's transaction watermark passes the label's time; if the transaction has still not
appeared, the label is an orphan (counted). This makes the join depend only on the log, not on
how fast the two topics happen to be consumed during a replay.

The work is per batch: one pass folds each transaction into its partition's features (a row of
floats each), then the batch is scored, explained and binned for drift with numpy at once, and
the rows are built. Only the partitions a batch touches are visited for labels and eviction; a
partition nobody touched has nothing new to release or forget.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np

from streams.fraud.decision import ALLOW, DecisionPolicy, decide
from streams.fraud.features import FeatureState, advance
from streams.fraud.messages import LabelMessage, TransactionMessage, as_label, as_transaction
from streams.fraud.model import FraudModel, LiveHistograms

DAY_MS = 86_400_000

SCORES_TABLE = "fraud_scores"
TRANSACTIONS_TABLE = "fraud_transactions"
COHORT_TABLE = "fraud_cohort"

Transaction = TransactionMessage | Mapping[str, Any]  # a mapping: the schema path's dict
Label = LabelMessage | Mapping[str, Any]


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
    # so in time order, from `in_order_start` on), and a heap of the (ts, id) of the others.
    in_order: list[str] = field(default_factory=list)
    in_order_start: int = 0
    out_of_order: list[tuple[int, str]] = field(default_factory=list)
    forgotten: int = 0  # decisions deleted since `decisions` was last compacted
    watermark: int | None = None  # largest transaction time seen
    labels: LabelQueue = field(default_factory=LabelQueue)


@dataclass
class FraudOutput:
    scores: list[dict[str, Any]] = field(default_factory=list)
    transactions: list[dict[str, Any]] = field(default_factory=list)
    cohort: list[dict[str, Any]] = field(default_factory=list)
    results: list[tuple[bytes, dict[str, Any]]] = field(default_factory=list)
    label_transactions: list[dict[str, Any]] = field(default_factory=list)
    label_cohort: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    orphans: int = 0


class FraudProcessor:
    def __init__(
        self,
        model: FraudModel,
        policy: DecisionPolicy,
        ip_prefixes: Mapping[str, str],
        pipeline_version: str,
        *,
        label_horizon_ms: int = 90 * DAY_MS,
    ) -> None:
        self.model = model
        self.policy = policy
        self.prefixes = dict(ip_prefixes)
        self.version = pipeline_version
        self.label_horizon_ms = label_horizon_ms
        self.states: dict[int, PartitionFraud] = {}
        self._live = LiveHistograms(model)  # against this model's edges: a new model is a new version

    @property
    def live_counts(self) -> dict[tuple[str, int], list[int]]:
        """Live feature histograms per (feature, season bucket), for the drift inspector."""
        return self._live.counts()

    def state(self, partition: int) -> PartitionFraud:
        if partition not in self.states:
            self.states[partition] = PartitionFraud()
        return self.states[partition]

    def process(
        self, transactions: Sequence[tuple[Transaction, int]], labels: Sequence[tuple[Label, int]]
    ) -> FraudOutput:
        """Score the new transactions (in order, each from what its partition saw before it), then
        join the labels; a transaction id already decided in its partition is a duplicate."""
        out = FraudOutput()
        fresh: list[TransactionMessage] = []
        partitions: list[int] = []
        rows: list[list[float]] = []
        touched: set[int] = set()
        for partition, run in itertools.groupby(transactions, key=itemgetter(1)):
            touched.add(partition)
            before = len(fresh)
            self._fold(self.state(partition), run, fresh, rows, out)
            partitions.extend(itertools.repeat(partition, len(fresh) - before))
        if fresh:
            self._score(fresh, partitions, rows, out)
        arrived: dict[int, list[LabelMessage]] = {}
        for label, partition in labels:
            self.state(partition)
            touched.add(partition)
            arrived.setdefault(partition, []).append(
                label if type(label) is LabelMessage else as_label(label)
            )
        for partition, state in self.states.items():
            if partition in touched:
                self._release_labels(partition, state, arrived.get(partition, ()), out)
                self._evict(state)
        return out

    def _fold(
        self,
        state: PartitionFraud,
        run: Iterable[tuple[Transaction, int]],
        fresh: list[TransactionMessage],
        rows: list[list[float]],
        out: FraudOutput,
    ) -> None:
        """Consecutive transactions of one partition: duplicates counted, the others' features
        computed and folded into the state, one after the other."""
        decisions, in_order, labels = state.decisions, state.in_order, state.labels
        features, prefixes, watermark = state.features, self.prefixes, state.watermark
        for tx, _ in run:
            if type(tx) is not TransactionMessage:
                tx = as_transaction(tx)
            tx_id, ts = tx.transaction_id, tx.ts
            if tx_id in decisions:  # seen before, in this batch or earlier
                out.duplicates += 1
                continue
            rows.append(advance(features, tx, prefixes))  # its features, then its fold: no leak
            fresh.append(tx)
            decisions[tx_id] = ts
            if watermark is None or ts >= watermark:
                in_order.append(tx_id)
                watermark = ts
            else:
                heapq.heappush(state.out_of_order, (ts, tx_id))
            if labels.by_transaction:
                labels.decided(tx_id)
        state.watermark = watermark

    def _score(
        self,
        fresh: list[TransactionMessage],
        partitions: list[int],
        rows: list[list[float]],
        out: FraudOutput,
    ) -> None:
        """Score, explain and bin the batch with numpy at once, then decide and build its rows."""
        x = np.fromiter(itertools.chain.from_iterable(rows), float, len(rows) * len(rows[0]))
        x = x.reshape(len(rows), -1)
        scores, contributions = self.model.score(x)
        reasons = self.model.reasons(contributions)
        self._live.add(x, [tx.ts for tx in fresh])
        version, model_version = self.version, self.model.version
        policy, risky_from = self.policy, self.policy.disable_invoice_at
        scored, stored, cohort, results = out.scores, out.transactions, out.cohort, out.results
        for tx, partition, score, why, features in zip(
            fresh, partitions, scores.tolist(), reasons, rows, strict=True
        ):
            tx_id, customer, ts = tx.transaction_id, tx.customer_id, tx.ts
            decision, holdout = (ALLOW, False) if score < risky_from else decide(tx_id, score, policy)
            cohort_day = ts // DAY_MS
            scored.append(
                {"pipeline_version": version, "transaction_id": tx_id, "score": score, "decision": decision,
                 "holdout": holdout, "customer_id": customer, "ts": ts, "amount": tx.amount,
                 "currency": tx.currency, "payment_method": tx.payment_method, "reasons": why,
                 "model_version": model_version}
            )  # fmt: skip
            stored.append(
                {"pipeline_version": version, "transaction_id": tx_id, "score": score, "decision": decision,
                 "holdout": holdout, "customer_id": customer, "ts": ts, "cohort_day": cohort_day,
                 "source_partition": partition, "reasons": why, "model_version": model_version,
                 "features": features}
            )  # fmt: skip
            cohort.append(
                {"pipeline_version": version, "transaction_id": tx_id, "score": score, "decision": decision,
                 "holdout": holdout, "cohort_day": cohort_day, "source_partition": partition}
            )  # fmt: skip
            results.append(
                (customer.encode(),
                 {"pipeline_version": version, "transaction_id": tx_id, "score": score, "decision": decision,
                  "holdout": holdout, "customer_id": customer, "ts": ts, "reasons": why,
                  "model_version": model_version})
            )  # fmt: skip

    def _release_labels(
        self, partition: int, state: PartitionFraud, arrived: Sequence[LabelMessage], out: FraudOutput
    ) -> None:
        """Labels in arrival order: joined if their transaction was decided, orphans once the
        watermark has passed their time, else they wait."""
        queue, watermark = state.labels, state.watermark
        for number in queue.candidates(watermark):
            label = queue.waiting.get(number)
            if label is not None and self._settle(partition, state, label, out):
                queue.remove(number)
        for label in arrived:
            if not self._settle(partition, state, label, out):
                queue.wait(label)

    def _settle(self, partition: int, state: PartitionFraud, label: LabelMessage, out: FraudOutput) -> bool:
        """Join or count the label as an orphan (True), or leave it waiting (False)."""
        ts = state.decisions.get(label.transaction_id)
        if ts is not None:
            version, tx_id = self.version, label.transaction_id
            out.label_transactions.append(
                {"pipeline_version": version, "transaction_id": tx_id, "is_fraud": label.is_fraud,
                 "label_source": label.source, "label_ts": label.ts}
            )  # fmt: skip
            out.label_cohort.append(
                {"pipeline_version": version, "transaction_id": tx_id, "is_fraud": label.is_fraud,
                 "label_source": label.source, "cohort_day": ts // DAY_MS, "source_partition": partition}
            )  # fmt: skip
            return True
        if state.watermark is not None and state.watermark >= label.ts:
            out.orphans += 1
            return True
        return False

    def _evict(self, state: PartitionFraud) -> None:
        """Once the oldest decision (in decision order) is past the label horizon, forget every
        decision past it."""
        if state.watermark is None or not state.decisions:
            return
        horizon = state.watermark - self.label_horizon_ms
        if next(iter(state.decisions.values())) >= horizon:
            return
        decisions, in_order, start = state.decisions, state.in_order, state.in_order_start
        forgotten = state.forgotten
        while start < len(in_order) and decisions[in_order[start]] < horizon:
            del decisions[in_order[start]]
            start += 1
            forgotten += 1
        while state.out_of_order and state.out_of_order[0][0] < horizon:
            del decisions[heapq.heappop(state.out_of_order)[1]]
            forgotten += 1
        if 2 * start > len(in_order):
            del in_order[:start]
            start = 0
        if forgotten > len(decisions):  # deleted entries slow down finding the oldest one
            state.decisions, forgotten = dict(decisions), 0
        state.in_order_start, state.forgotten = start, forgotten
