"""The fraud pipeline the engine drives: transactions and their delayed labels, co-partitioned by
customer, folded together per partition; scores for a whole batch at once."""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from streams.engine.pipeline import Batch, Drained, Folded, PartitionStates, decode_all
from streams.fraud.processor import (
    COHORT_TABLE,
    SCORES_TABLE,
    TRANSACTIONS_TABLE,
    FraudOutput,
    FraudProcessor,
    PartitionFraud,
)
from streams.tables import of_pipeline

TRANSACTION_SCHEMA = "transaction.schema.json"
LABEL_SCHEMA = "label.schema.json"
TABLES = of_pipeline("fraud")


class Decoder(Protocol):
    def decode(self, raw: bytes | None) -> Any: ...


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
    ) -> None:
        self.processor = processor
        self.tx_decoder, self.label_decoder = decoders
        self.transactions, self.labels = topics
        self.topics = topics
        self.scores_topic = scores_topic
        self.out = Drained()

    def fold(self, partition: int, batch: Batch, *, replay: bool = False) -> Folded:
        folded = Folded()
        txs, _ = decode_all(self.tx_decoder.decode, batch.get(self.transactions, ()), folded.letters)
        labels, _ = decode_all(self.label_decoder.decode, batch.get(self.labels, ()), folded.letters)
        out = self.processor.process([(tx, partition) for tx in txs], [(lb, partition) for lb in labels])
        if replay:
            return Folded()
        self._keep(out, partition)
        t = folded.tallies
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
        self.out.records.setdefault(self.scores_topic, []).extend(out.results)

    def drain(self) -> Drained:
        out, self.out = self.out, Drained()
        return out
