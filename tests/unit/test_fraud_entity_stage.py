"""The entity stage wired between customer partitions (`fraud.entity_link`, `fraud.entity_stage`):
whatever order the customer partitions, the stage partitions and the answers are folded in, every
transaction gets the entity features of a global view of the log (`EntityHistory`, fed with the
counted transactions in any order), and the same scores and decision log."""

from __future__ import annotations

import asyncio
import random
import zlib
from typing import Any

import msgspec
import numpy as np
import orjson
import pytest

from streams.engine.checkpoint import Checkpoint, Pending
from streams.engine.pipeline import PartitionStates, route_of
from streams.engine.testing import Harness, MemoryOutput, Recorder, Refused
from streams.errors import RuntimeServiceError
from streams.events import load_validator
from streams.fraud.decision import DecisionPolicy
from streams.fraud.entities import ENTITY_FEATURES, EntityHistory
from streams.fraud.entity_link import CHUNK, EntityLink
from streams.fraud.entity_pipeline import EntityPipeline
from streams.fraud.entity_stage import AnswerBatch, EntityPartition, EntityStage, Sighting, SourceBatch
from streams.fraud.features import FEATURES
from streams.fraud.messages import as_transaction, label_decoder, transaction_decoder
from streams.fraud.model import FraudModel
from streams.fraud.pipeline import FraudPipeline
from streams.fraud.processor import FraudProcessor
from streams.fraud.state import PartitionFraud
from streams.settings import Settings
from streams.sink import MemorySink
from tests.unit.test_fraud_entities import with_entities

T0 = 1_767_225_600_000
SOURCES, STAGES, GRACE = 3, 2, 1_000
NAMES = FEATURES + ENTITY_FEATURES


def model() -> FraudModel:
    coef = np.linspace(-1.0, 1.0, len(NAMES))
    return FraudModel("m-entities", NAMES, np.zeros(len(NAMES)), np.ones(len(NAMES)), coef, -2.0, (1.0, 0.0))


def traffic(seed: int, count: int = 300) -> list[dict[str, Any]]:
    """Customers of every partition sharing a few devices, cards, /24s and addresses; some
    transactions out of order within their partition (late ones among them)."""
    rng = random.Random(seed)
    txs, ts = [], T0
    for i in range(count):
        ts += rng.choice((1, 500, 60_000, 3_600_000))
        tx: dict[str, Any] = {
            "transaction_id": f"t{i:04d}", "customer_id": f"c{rng.randint(0, 20)}", "amount": 10.0 + i,
            "currency": "EUR", "payment_method": rng.choice(("invoice", "card")),
            "ts": ts - (rng.choice((0, 0, 0, 800, 5_000)) if i else 0),
        }  # fmt: skip
        txs.append(with_entities(tx, rng, (6, 8, 5), 0.85, networks=1))
    return txs


def source_of(tx: dict[str, Any]) -> int:
    return zlib.crc32(tx["customer_id"].encode()) % SOURCES


def oracle(txs: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Entity features from one global history of the counted transactions (those not more than
    the grace below their partition's largest earlier time), added in the worst order."""
    largest: dict[int, int] = {}
    counted = []
    for tx in txs:
        top = largest.get(source_of(tx))
        if top is None or tx["ts"] >= top - GRACE:
            counted.append(tx)
        largest[source_of(tx)] = max(top or tx["ts"], tx["ts"])
    history = EntityHistory()
    for tx in reversed(counted):
        history.add_transaction(tx)
    return {tx["transaction_id"]: history.transaction_features(tx) for tx in txs}


def run(txs: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """Fold everything in a random interleaving; scores and log entries by transaction id."""
    rng = random.Random(seed)
    link = EntityLink(STAGES, grace_ms=GRACE, late_limit_ms=86_400_000)
    fraud = FraudProcessor(model(), DecisionPolicy(), {}, "v", archive=False, entities=link)
    stage = EntityStage(SOURCES)
    inbox = {p: [as_transaction(tx) for tx in txs if source_of(tx) == p] for p in range(SOURCES)}
    sightings: dict[int, list[Any]] = {s: [] for s in range(STAGES)}
    answers: dict[int, list[Any]] = {p: [] for p in range(SOURCES)}
    decode = msgspec.json.Decoder(SourceBatch)
    answer_batch = msgspec.json.Decoder(AnswerBatch)
    rows: dict[str, Any] = {}

    def fold_customer(p: int, take: int, *, idle: bool = False) -> None:
        batch, inbox[p] = inbox[p][:take], inbox[p][take:]
        cut = rng.randint(0, len(answers[p]))
        came, answers[p] = answers[p][:cut], answers[p][cut:]
        out = fraud.process([(tx, p) for tx in batch], [], answers=[(a, p) for a in came])
        records = link.batches(p, out.sightings.get(p, {}), fraud.states[p].watermark) if batch else []
        if idle:
            state = fraud.states.get(p)
            records += link.batches(p, {}, None if state is None else state.watermark, idle=True)
        for key, value in records:
            sightings[int(key.split(b"/")[0])].append(decode.decode(msgspec.json.encode(value)))
        for row, entry in zip(out.transactions, out.log, strict=True):
            assert row["transaction_id"] not in rows
            rows[row["transaction_id"]] = (row["score"], row["features"], entry["hash"])

    def fold_stage(s: int, take: int) -> None:
        batch, sightings[s] = sightings[s][:take], sightings[s][take:]
        for source, answered in stage.fold(s, batch).answers.items():
            answers[source] += answer_batch.decode(msgspec.json.encode(AnswerBatch(answered))).answers

    while any(inbox.values()):
        p = rng.randrange(SOURCES)
        if rng.random() < 0.5:
            fold_customer(p, rng.randint(0, 7))
        else:
            fold_stage(rng.randrange(STAGES), rng.randint(0, 30))
    for p in range(SOURCES):  # the stream ends: every partition goes quiet
        fold_customer(p, 0, idle=True)
    while any(sightings.values()) or any(answers.values()):
        for s in range(STAGES):
            fold_stage(s, len(sightings[s]))
        for p in range(SOURCES):
            fold_customer(p, 0)
    assert not any(fraud.states[p].pending for p in range(SOURCES))
    return rows


@pytest.mark.parametrize("seed", [1, 2])
def test_every_interleaving_gives_the_global_views_features_and_the_same_decisions(seed: int) -> None:
    txs = traffic(seed)
    expected = oracle(txs)
    first = run(txs, seed=100 * seed)
    assert set(first) == set(expected)
    width = len(ENTITY_FEATURES)
    for tx_id, (_, features, _) in first.items():
        assert features[-width:] == expected[tx_id], tx_id
    assert any(sum(row) for row in expected.values())  # entities are shared: something is counted
    for other in (100 * seed + 1, 100 * seed + 2):
        assert run(txs, seed=other) == first


def test_a_quiet_partition_holds_every_answer_until_it_says_it_is_idle() -> None:
    link = EntityLink(1, grace_ms=0, late_limit_ms=86_400_000)
    fraud = FraudProcessor(model(), DecisionPolicy(), {}, "v", archive=False, entities=link)
    stage = EntityStage(2)
    tx = as_transaction({"transaction_id": "a", "customer_id": "c", "amount": 5.0, "currency": "EUR",
                         "payment_method": "invoice", "ts": T0, "device_id": "d"})  # fmt: skip
    out = fraud.process([(tx, 0)], [])
    assert out.scores == [] and len(fraud.states[0].pending) == 1
    told = decoded(link.batches(0, out.sightings[0], T0 + 1))
    assert stage.fold(0, told).answers == {}  # partition 1 has not said anything yet
    answered = stage.fold(0, decoded(link.batches(1, {}, None, idle=True))).answers
    assert [a.transaction_id for a in answered[0]] == ["a"]
    scored = fraud.process([], [], answers=[(answered[0][0], 0)])
    assert [row["transaction_id"] for row in scored.scores] == ["a"]


def decoded(records: list[Any]) -> list[SourceBatch]:
    """Records to the stage as it reads them (JSON and back)."""
    return [msgspec.json.decode(orjson.dumps(value), type=SourceBatch) for _, value in records]


class Snapshotted(PartitionStates):
    """The engine's snapshot of a pipeline's partition states (msgpack, typed decode)."""

    name = "entity-test"

    def __init__(self, processor: Any, state_type: type) -> None:
        self.processor = processor
        self.state_type = state_type  # type: ignore[misc]


def test_held_transactions_and_the_stage_resume_from_snapshots_as_if_never_stopped() -> None:
    txs = traffic(7, count=60)
    outcomes = []
    for restart in (False, True):
        link = EntityLink(1, grace_ms=GRACE, late_limit_ms=86_400_000)
        fraud = FraudProcessor(model(), DecisionPolicy(), {}, "v", archive=False, entities=link)
        stage = EntityStage(1)
        out = fraud.process([(as_transaction(tx), 0) for tx in txs], [])
        watermark = fraud.states[0].watermark
        told = decoded(
            link.batches(0, out.sightings[0], watermark) + link.batches(0, {}, watermark, idle=True)
        )
        assert fraud.states[0].pending and out.scores == []
        answers = stage.fold(0, told[:1]).answers.get(0, [])  # those below the grace
        if restart:  # both stop here, and new processes restore their snapshots
            fraud_states, stage_states = (
                Snapshotted(fraud, PartitionFraud),
                Snapshotted(stage, EntityPartition),
            )
            saved = fraud_states.snapshot(0), stage_states.snapshot(0)
            fraud = FraudProcessor(model(), DecisionPolicy(), {}, "v", archive=False, entities=link)
            stage = EntityStage(1)
            assert saved[0] is not None and saved[1] is not None
            Snapshotted(fraud, PartitionFraud).restore(0, saved[0])
            Snapshotted(stage, EntityPartition).restore(0, saved[1])
        answers += stage.fold(0, told[1:]).answers[0]  # the rest, once the partition is idle
        scored = fraud.process([], [], answers=[(a, 0) for a in answers])
        outcomes.append([(r["transaction_id"], r["score"], r["features"]) for r in scored.transactions])
    assert len(outcomes[0]) == len(txs) and outcomes[0] == outcomes[1]


def linked_pipelines(idle_after_s: float) -> list[Any]:
    """A worker's fraud pipeline with its entity stage, as `worker.fraud_pipelines` builds them."""
    settings = Settings()
    decoders = (
        transaction_decoder(load_validator(settings.schemas_dir / "transaction.schema.json")),
        label_decoder(load_validator(settings.schemas_dir / "label.schema.json")),
    )
    link = EntityLink(STAGES, grace_ms=GRACE, late_limit_ms=86_400_000)
    fraud = FraudProcessor(model(), DecisionPolicy(), {}, "v", archive=False, entities=link)
    topics = ("sightings", "answers")
    pipeline = FraudPipeline(fraud, decoders, ("tx", "labels"), "scores", entity_topics=topics,
                             idle_after_s=idle_after_s)  # fmt: skip
    return [pipeline, EntityPipeline(EntityStage(SOURCES), *topics)]


def test_two_workers_through_the_engine_score_everything_with_the_global_views_features() -> None:
    """Two jobs (workers) of one group on an in-memory log: the stage's topics are routed back into
    the log; the stream ends, the partitions go idle, and every transaction is scored."""
    txs = traffic(5, count=200)
    h = Harness(linked_pipelines(0.05))
    for tx in txs:
        h.log.append("tx", source_of(tx), orjson.dumps(tx), tx["customer_id"].encode())

    def route(topic: str, record: Any) -> None:
        if topic in ("sightings", "answers"):
            h.log.append(topic, route_of(record[0]), orjson.dumps(record[1]), record[0])

    h.outputs.refuse = route  # type: ignore[assignment]
    other = h.successor(linked_pipelines(0.05))
    owned = (
        [(t, p) for t in ("tx", "labels", "answers") for p in (0, 1)] + [("sightings", 0)],
        [(t, 2) for t in ("tx", "labels", "answers")] + [("sightings", 1)],
    )

    async def run() -> None:
        jobs = [h.start(owned[0]), other.start(owned[1])]
        deadline = asyncio.get_running_loop().time() + 30
        while len(h.outputs.topics.get("scores", [])) < len(txs):
            assert asyncio.get_running_loop().time() < deadline, "not everything was scored"
            await asyncio.sleep(0.02)
        for job, _, task in jobs:
            await job.stop()
            await task

    asyncio.run(run())
    assert isinstance(h.sink, MemorySink)
    rows = {r["transaction_id"]: r["features"] for r in h.sink.tables["fraud_transactions"].values()}
    expected = oracle(txs)
    assert rows.keys() == expected.keys()
    assert all(rows[tx_id][-len(ENTITY_FEATURES) :] == row for tx_id, row in expected.items())


@pytest.mark.parametrize("count", [0, 1, CHUNK, CHUNK + 1, 2 * CHUNK + 3])
def test_sightings_travel_in_chunks_with_the_mark_in_the_last(count: int) -> None:
    link = EntityLink(2, grace_ms=10, late_limit_ms=86_400_000)
    items = [Sighting(i, "device", "d", T0 + i, f"t{i}", "c", "", True) for i in range(count)]
    to_one = [value for key, value in link.batches(0, {1: items}, T0 + 99) if route_of(key) == 1]
    assert [s[0] for value in to_one for s in value["sightings"]] == list(range(count))
    assert all(len(value["sightings"]) <= CHUNK for value in to_one)
    assert [value["watermark"] for value in to_one] == [None] * (len(to_one) - 1) + [T0 + 89]
    to_other = [value for key, value in link.batches(0, {1: items}, T0 + 99) if route_of(key) == 0]
    assert to_other == [{"source": 0, "sightings": [], "watermark": T0 + 89, "idle": False}]


def test_a_record_a_later_stage_needs_refused_for_good_fails_the_checkpoint() -> None:
    outputs = MemoryOutput(
        refuse=lambda topic, record: Refused("too large") if topic == "sightings" else None
    )
    checkpoint = Checkpoint(
        MemorySink({}), outputs.output, "dead-letters", "v", Recorder(),
        dead_letter_max_bytes=1000, is_transient=lambda e: False, required={"sightings"},
    )  # fmt: skip
    pending = Pending()
    pending.drained.records = {"scores": [(b"c", {"a": 1})], "sightings": [(b"0/k", {"b": 2})]}
    pending.offsets = {("tx", 0): 5}
    committed: list[Any] = []

    async def commit(offsets: Any) -> None:
        committed.append(offsets)

    with pytest.raises(RuntimeServiceError, match="refused by Kafka for good"):
        asyncio.run(checkpoint.commit(pending, commit))
    assert committed == []  # the next owner re-reads it
