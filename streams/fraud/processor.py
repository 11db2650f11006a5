"""The fraud pipeline step: features, scores, decisions, and the delayed-label join. Pure.

Labels are joined against the partition's own decisions (transactions and labels are both keyed
by customer, so they are co-partitioned). A label whose transaction is not known yet waits until
the partition's transaction watermark passes the label's time; if the transaction has still not
appeared, the label is an orphan (counted). This makes the join depend only on the log, not on
how fast the two topics happen to be consumed during a replay. A label joins a transaction
decided within ``label_horizon_ms`` before the label's own time.

Decisions are not kept for the label horizon (90 days of transaction ids would not fit in memory):
a decision stays in memory while it is within the dedupe horizon (``dedupe_horizon_ms``, a
transaction id seen again within it is a duplicate) and until its rows are durable. A label whose
transaction has left memory is joined with the archived row (``fraud_transactions``), which the
pipeline looks up before folding (`Lookup`): a row counts only if this partition decided it at an
earlier offset, so a row written ahead of the fold (a crash before the commit, a rebuild) cannot
join a label the log would not. At any fold, a decision earlier in the log is in memory or
durable, so the join is the same whichever of the two answers.

The work is per batch: one pass folds each transaction into its partition's features (a row of
floats each), then the batch is scored, explained and binned for drift with numpy at once, and
the rows are built. Only the partitions a batch touches are visited for labels; decisions are
forgotten when the pipeline drains (`seal`).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streams.fraud import audit
from streams.fraud.decision import ALLOW, DecisionPolicy, decide
from streams.fraud.entity_link import EntityLink
from streams.fraud.entity_stage import EntityFeatures, Sighting
from streams.fraud.features import advance
from streams.fraud.messages import LabelMessage, TransactionMessage, as_label, as_transaction
from streams.fraud.model import FraudModel, LiveHistograms
from streams.fraud.state import PartitionFraud

DAY_MS = 86_400_000

SCORES_TABLE = "fraud_scores"
TRANSACTIONS_TABLE = "fraud_transactions"
COHORT_TABLE = "fraud_cohort"

Transaction = TransactionMessage | Mapping[str, Any]  # a mapping: the schema path's dict
Label = LabelMessage | Mapping[str, Any]


@dataclass(frozen=True)
class Archived:
    """A decision's archived row, as the label join needs it."""

    ts: int
    source_partition: int | None
    source_offset: int | None


@dataclass
class FraudOutput:
    scores: list[dict[str, Any]] = field(default_factory=list)
    transactions: list[dict[str, Any]] = field(default_factory=list)
    cohort: list[dict[str, Any]] = field(default_factory=list)
    results: list[tuple[bytes, dict[str, Any]]] = field(default_factory=list)
    label_transactions: list[dict[str, Any]] = field(default_factory=list)
    label_cohort: list[dict[str, Any]] = field(default_factory=list)
    offsets: list[int | None] = field(default_factory=list)  # of each scored transaction
    numbers: list[int] = field(default_factory=list)  # and its decision number in its partition
    log: list[dict[str, Any]] = field(default_factory=list)  # the decision log's new entries
    sightings: dict[int, dict[int, list[Sighting]]] = field(default_factory=dict)  # partition -> stage p.
    duplicates: int = 0
    orphans: int = 0


def _partition(item: tuple[tuple[Transaction, int], int | None]) -> int:
    return item[0][1]


class FraudProcessor:
    def __init__(
        self,
        model: FraudModel,
        policy: DecisionPolicy,
        ip_prefixes: Mapping[str, str],
        pipeline_version: str,
        *,
        label_horizon_ms: int = 90 * DAY_MS,
        dedupe_horizon_ms: int = DAY_MS,
        history_horizon_ms: int = 30 * DAY_MS,
        archive: bool = True,
        drift_window_hours: int | None = None,
        entities: EntityLink | None = None,
    ) -> None:
        """``archive``: labels of forgotten decisions are joined with archived rows (`looked_up`);
        without one, decisions are kept in memory for the whole label horizon.
        ``drift_window_hours``: the event time the live feature histograms cover (None: all).
        ``entities``: the model uses entity features: transactions wait for the entity stage."""
        self.model = model
        self.policy = policy
        self.prefixes = dict(ip_prefixes)
        self.version = pipeline_version
        self.label_horizon_ms = label_horizon_ms
        self.dedupe_horizon_ms = dedupe_horizon_ms
        self.history_horizon_ms = history_horizon_ms
        self.memory_horizon_ms = dedupe_horizon_ms if archive else max(dedupe_horizon_ms, label_horizon_ms)
        self.states: dict[int, PartitionFraud] = {}
        self.looked_up: dict[int, dict[str, Archived]] = {}  # partition -> found before this fold
        # Against this model's edges (a new model is a new version).
        self._live = LiveHistograms(model, drift_window_hours)
        self.entities = entities

    @property
    def live_counts(self) -> dict[tuple[str, int], list[int]]:
        """Live feature histograms per (feature, season bucket), for the drift inspector."""
        return self._live.counts()

    def state(self, partition: int) -> PartitionFraud:
        if partition not in self.states:
            self.states[partition] = PartitionFraud()
            self.states[partition].features.horizon_ms = self.history_horizon_ms
        return self.states[partition]

    def unknown(self, partition: int, transaction_ids: Iterable[str]) -> list[str]:
        """Which of these transactions the partition does not hold in memory (to look up)."""
        state = self.states.get(partition)
        decisions = state.decisions if state is not None else {}
        return [tx_id for tx_id in transaction_ids if tx_id not in decisions]

    def process(
        self,
        transactions: Sequence[tuple[Transaction, int]],
        labels: Sequence[tuple[Label, int]],
        offsets: Sequence[int] | None = None,
        *,
        live: bool = True,
        answers: Sequence[tuple[EntityFeatures, int]] = (),
    ) -> FraudOutput:
        """Score the new transactions (in order, each from what its partition saw before it), then
        join the labels; a transaction id decided in its partition within the dedupe horizon is a
        duplicate. ``offsets``: each transaction's offset in its topic (None: unknown). ``live``
        False: a rebuild (the live feature histograms saw these transactions already, or should
        not: they are history). ``answers``: the entity stage's, with their partition."""
        out = FraudOutput()
        fresh: list[TransactionMessage] = []
        partitions: list[int] = []
        rows: list[list[float]] = []
        touched: set[int] = set()
        # With an entity link: each fresh one's partition watermark before it, and its `in_order` place
        placed: list[tuple[int | None, int]] | None = None if self.entities is None else []
        at: Iterable[int | None] = offsets if offsets is not None else itertools.repeat(None)
        for partition, run in itertools.groupby(zip(transactions, at, strict=False), key=_partition):
            touched.add(partition)
            before = len(fresh)
            self._fold(self.state(partition), run, fresh, rows, out, placed)
            partitions.extend(itertools.repeat(partition, len(fresh) - before))
        if self.entities is not None and placed is not None:
            ready = self.entities.hold(self.state, (
                (tx, p, row, offset, seq, clock, place) for (tx, p, row, offset, seq, (clock, place))
                in zip(fresh, partitions, rows, out.offsets, out.numbers, placed, strict=True)
            ), answers, out.sightings)  # fmt: skip
            fresh, partitions, rows, out.offsets, out.numbers = (
                ready.txs, ready.partitions, ready.rows, ready.offsets, ready.numbers)  # fmt: skip
        if fresh:
            self._score(fresh, partitions, rows, out, live=live)
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
        self.looked_up.clear()
        return out

    def _fold(
        self,
        state: PartitionFraud,
        run: Iterable[tuple[tuple[Transaction, int], int | None]],
        fresh: list[TransactionMessage],
        rows: list[list[float]],
        out: FraudOutput,
        placed: list[tuple[int | None, int]] | None,
    ) -> None:
        """Consecutive transactions of one partition: duplicates counted, the others' features
        computed and folded into the state, one after the other (``placed``: see `process`)."""
        decisions, in_order, labels = state.decisions, state.in_order, state.labels
        features, prefixes, watermark = state.features, self.prefixes, state.watermark
        dedupe, offsets = self.dedupe_horizon_ms, out.offsets
        for (tx, _), offset in run:
            if type(tx) is not TransactionMessage:
                tx = as_transaction(tx)
            if offset is not None:
                state.position = offset + 1
            tx_id, ts = tx.transaction_id, tx.ts
            seen = decisions.get(tx_id)
            if seen is not None and watermark is not None and seen >= watermark - dedupe:
                out.duplicates += 1  # seen within the dedupe horizon, in this batch or earlier
                continue
            rows.append(advance(features, tx, prefixes))  # its features, then its fold: no leak
            if placed is not None:
                placed.append((watermark, state.in_order_trimmed + len(in_order)))
            fresh.append(tx)
            offsets.append(offset)
            out.numbers.append(state.numbered)
            if seen is not None:  # decided again after the horizon: one entry, the newest
                del decisions[tx_id]
                state.redecided[tx_id] = state.numbered  # not forgotten through its older entries
            decisions[tx_id] = ts
            if watermark is None or ts >= watermark:
                in_order.append(tx_id)
                watermark = ts
            else:
                heapq.heappush(state.out_of_order, (ts, state.numbered, tx_id))
            state.numbered += 1
            if labels.by_transaction:
                labels.decided(tx_id)
        state.watermark = watermark

    def _score(
        self,
        fresh: list[TransactionMessage],
        partitions: list[int],
        rows: list[list[float]],
        out: FraudOutput,
        *,
        live: bool,
    ) -> None:
        """Score, explain and bin the batch with numpy at once, then decide and build its rows."""
        x = np.fromiter(itertools.chain.from_iterable(rows), float, len(rows) * len(rows[0]))
        x = x.reshape(len(rows), -1)
        scores, contributions = self.model.score(x)
        reasons = self.model.reasons(contributions)
        if live:
            self._live.add(x, [tx.ts for tx in fresh])
        version, model_version = self.version, self.model.version
        policy, risky_from = self.policy, self.policy.disable_invoice_at
        scored, stored, cohort, results = out.scores, out.transactions, out.cohort, out.results
        for tx, partition, score, why, features, offset, seq in zip(
            fresh, partitions, scores.tolist(), reasons, rows, out.offsets, out.numbers, strict=True
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
                 "source_partition": partition, "source_offset": offset, "reasons": why,
                 "model_version": model_version, "features": features}
            )  # fmt: skip
            cohort.append(
                {"pipeline_version": version, "transaction_id": tx_id, "score": score, "decision": decision,
                 "holdout": holdout, "cohort_day": cohort_day, "source_partition": partition}
            )  # fmt: skip
            self._append_log(partition, seq, stored[-1], out.log)
            results.append(
                (customer.encode(),
                 {"pipeline_version": version, "transaction_id": tx_id, "score": score, "decision": decision,
                  "holdout": holdout, "customer_id": customer, "ts": ts, "reasons": why,
                  "model_version": model_version})
            )  # fmt: skip

    def _append_log(self, partition: int, seq: int, row: dict[str, Any], log: list[dict[str, Any]]) -> None:
        """Chain the decision (its ``fraud_transactions`` row) onto the partition's decision log."""
        state = self.states[partition]
        prev_hash = state.chain_head or audit.genesis(partition)
        entry = {
            "pipeline_version": self.version, "source_partition": partition, "bucket": audit.bucket_of(seq),
            "seq": seq, "transaction_id": row["transaction_id"], "ts": row["ts"], "score": row["score"],
            "decision": row["decision"], "holdout": row["holdout"], "reasons": row["reasons"],
            "model_version": row["model_version"], "features_digest": audit.features_digest(row["features"]),
            "source_offset": row["source_offset"], "prev_hash": prev_hash,
        }  # fmt: skip
        entry["hash"] = state.chain_head = audit.entry_hash(prev_hash, entry)
        log.append(entry)

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

    def _decided_at(self, partition: int, state: PartitionFraud, tx_id: str) -> int | None:
        """The time of the partition's decision of ``tx_id`` earlier in its log, if any: in memory,
        or archived (found by the lookup before this fold, at an offset already folded)."""
        ts = state.decisions.get(tx_id)
        if ts is not None:
            return ts
        row = self.looked_up.get(partition, {}).get(tx_id)
        if row is None or row.source_partition != partition or row.source_offset is None:
            return None
        return row.ts if row.source_offset < state.position else None

    def _settle(self, partition: int, state: PartitionFraud, label: LabelMessage, out: FraudOutput) -> bool:
        """Join or count the label as an orphan (True), or leave it waiting (False)."""
        ts = self._decided_at(partition, state, label.transaction_id)
        if ts is not None and ts < label.ts - self.label_horizon_ms:
            out.orphans += 1  # decided too long before its label
            return True
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

    def seal(self, partitions: Iterable[int] | None = None, *, durable: bool = False) -> None:
        """At a drain: forget the decisions past the memory horizon whose rows are durable (those
        drained before this drain; all of them if ``durable``: a rebuild of ``partitions``, whose
        rows were written before); what is drained now becomes durable at the next drain."""
        chosen = (
            self.states.values()
            if partitions is None
            else [self.states[p] for p in partitions if p in self.states]
        )
        for state in chosen:
            if durable:
                state.sealed, state.sealed_in_order = state.durable_marks()
            self._evict(state)
            state.sealed, state.sealed_in_order = state.durable_marks()

    def _evict(self, state: PartitionFraud) -> None:
        """Forget every durable decision past the memory horizon (in time order; one not durable
        yet stops the pass, and is forgotten at a later drain)."""
        if state.redecided:
            state.redecided = {k: n for k, n in state.redecided.items() if n >= state.sealed}
        if state.watermark is None or not state.decisions:
            return
        horizon = state.watermark - self.memory_horizon_ms
        decisions, in_order, start = state.decisions, state.in_order, state.in_order_start
        forgotten, sealed_in_order, redecided = state.forgotten, state.sealed_in_order, state.redecided

        def forget(tx_id: str) -> int:
            """1 if the decision is forgotten now, 0 if it is gone already or must stay."""
            ts = decisions.get(tx_id)
            if ts is None or ts >= horizon or tx_id in redecided:
                return 0
            del decisions[tx_id]
            return 1

        while start < sealed_in_order:
            ts = decisions.get(in_order[start])
            if ts is not None and ts >= horizon:
                break  # in time order: the rest are newer (or not durable yet)
            forgotten += forget(in_order[start])
            start += 1
        heap = state.out_of_order
        while heap and heap[0][0] < horizon and heap[0][1] < state.sealed:
            forgotten += forget(heapq.heappop(heap)[2])
        if 2 * start > len(in_order):
            del in_order[:start]
            sealed_in_order -= start
            state.in_order_trimmed += start
            start = 0
        if forgotten > len(decisions):  # deleted entries slow down finding the oldest one
            state.decisions, forgotten = dict(decisions), 0
        state.in_order_start, state.forgotten, state.sealed_in_order = start, forgotten, sealed_in_order
