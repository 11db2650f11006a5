"""The tamper-evident decision log (`fraud.audit`): the hash of an entry computed by hand, the
chain the processor builds (the same whatever the batches), and what `verify_chain` and
`compare_decisions` find after each kind of tampering."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from typing import Any

import orjson
import pytest

from streams.compose import compose
from streams.fraud import audit
from streams.fraud.audit import Head, compare_decisions, verify_chain
from streams.fraud.generator import TransactionGenerator, TransactionProfile
from streams.fraud.processor import FraudProcessor
from streams.settings import Settings

T0 = 1_764_547_200_000


def test_an_entrys_hash_by_hand() -> None:
    features = [1.0, 0.1, -2.5]
    entry = {"seq": 7, "transaction_id": "tx-1", "ts": T0, "score": 0.1, "decision": "allow",
             "holdout": False, "reasons": ["amount_z"], "model_version": "m1",
             "features_digest": audit.features_digest(features), "source_offset": 41}  # fmt: skip
    digest = hashlib.sha256(struct.pack(">3d", 1.0, 0.1, -2.5)).hexdigest()[:32]
    assert entry["features_digest"] == digest
    canonical = json.dumps(
        [7, "tx-1", T0, 0.1, "allow", False, ["amount_z"], "m1", digest, 41], separators=(",", ":")
    )
    prev = hashlib.sha256(b"streams-decision-log:3").hexdigest()
    assert audit.genesis(3) == prev
    assert audit.entry_hash(prev, entry) == hashlib.sha256((prev + canonical).encode()).hexdigest()
    # every hashed field counts
    for name, other in (("score", 0.1000000001), ("decision", "review"), ("holdout", True), ("seq", 8),
                        ("reasons", []), ("features_digest", "0" * 32), ("source_offset", 42)):  # fmt: skip
        assert audit.entry_hash(prev, {**entry, name: other}) != audit.entry_hash(prev, entry), name


def processor() -> FraudProcessor:
    params = compose(Settings()).fraud
    return FraudProcessor(params.model, params.policy, params.ip_prefixes, "v1")


def traffic(count: int = 600) -> list[tuple[dict[str, Any], int]]:
    params = compose(Settings()).fraud
    generator = TransactionGenerator(
        TransactionProfile(customers=80, mean_gap_ms=60_000, fraud_share=0.03, malformed_share=0.0,
                           missing_share=0.0),
        seed=11, start_ms=T0, ip_prefixes=params.ip_prefixes,
    )  # fmt: skip
    scenario = generator.scenario(count)
    events = [orjson.loads(value) for _, value in scenario.transactions]
    return [(event, zlib.crc32(event["customer_id"].encode()) % 3) for event in events]


def logged(batches: list[list[tuple[dict[str, Any], int]]]) -> list[dict[str, Any]]:
    fraud, log = processor(), []
    offsets: dict[int, int] = {}
    for batch in batches:
        for partition in sorted({p for _, p in batch}):  # one partition per call, as the pipeline does
            txs = [(tx, p) for tx, p in batch if p == partition]
            at = [offsets.get(partition, 0) + i for i in range(len(txs))]
            offsets[partition] = offsets.get(partition, 0) + len(txs)
            log += fraud.process(txs, [], at).log
    return log


def chains(log: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    by_partition: dict[int, list[dict[str, Any]]] = {}
    for entry in sorted(log, key=lambda e: (e["source_partition"], e["seq"])):
        by_partition.setdefault(entry["source_partition"], []).append(entry)
    return by_partition


def test_the_processor_chains_every_decision_the_same_whatever_the_batches() -> None:
    events = traffic()
    whole = logged([events])
    assert len(whole) == len(events)
    in_pieces = logged([events[i : i + 7] for i in range(0, len(events), 7)])
    key = lambda e: (e["source_partition"], e["seq"])  # noqa: E731
    assert sorted(whole, key=key) == sorted(in_pieces, key=key)
    for partition, entries in chains(whole).items():
        assert [e["seq"] for e in entries] == list(range(len(entries)))
        assert all(e["bucket"] == 0 for e in entries)
        findings, head = verify_chain(partition, entries)
        assert findings == [] and head == Head(len(entries) - 1, entries[-1]["hash"])


@pytest.fixture
def chain() -> list[dict[str, Any]]:
    by_partition = chains(logged([traffic(300)]))
    return by_partition[0]


def kinds(findings: list[audit.Finding]) -> list[tuple[str, int | None]]:
    return [(f.kind, f.seq) for f in findings]


def test_an_altered_entry(chain: list[dict[str, Any]]) -> None:
    chain[5] = {**chain[5], "decision": "allow" if chain[5]["decision"] != "allow" else "review"}
    assert kinds(verify_chain(0, chain)[0]) == [("altered", 5)]


def test_an_altered_entry_with_its_hash_recomputed_breaks_the_next_link(chain: list[dict[str, Any]]) -> None:
    forged = {**chain[5], "score": 0.01}
    forged["hash"] = audit.entry_hash(forged["prev_hash"], forged)
    chain[5] = forged
    assert kinds(verify_chain(0, chain)[0]) == [("inserted", 6)]


def test_a_deleted_entry(chain: list[dict[str, Any]]) -> None:
    del chain[9]
    assert kinds(verify_chain(0, chain)[0]) == [("deleted", 9)]


def test_a_forged_entry_appended(chain: list[dict[str, Any]]) -> None:
    last = chain[-1]
    forged = {**last, "seq": last["seq"] + 1, "transaction_id": "forged", "prev_hash": "0" * 64}
    forged["hash"] = audit.entry_hash(forged["prev_hash"], forged)
    findings = verify_chain(0, [*chain, forged])[0]
    assert [(f.kind, f.seq, f.transaction_id) for f in findings] == [("inserted", last["seq"] + 1, "forged")]


def test_the_published_head_shows_a_rewritten_chain_and_a_cut_tail(chain: list[dict[str, Any]]) -> None:
    head = Head(chain[-1]["seq"], chain[-1]["hash"])
    assert verify_chain(0, chain, published=head)[0] == []
    # rewritten from the start with every hash recomputed: each link holds, the head does not
    rewritten, prev = [], audit.genesis(0)
    for entry in chain:
        entry = {**entry, "prev_hash": prev, "decision": "allow"}
        entry["hash"] = prev = audit.entry_hash(entry["prev_hash"], entry)
        rewritten.append(entry)
    assert verify_chain(0, rewritten)[0] == []
    assert kinds(verify_chain(0, rewritten, published=head)[0]) == [("rewritten", head.seq)]
    # the last two entries gone
    assert kinds(verify_chain(0, chain[:-2], published=head)[0]) == [
        ("deleted", head.seq - 1), ("deleted", head.seq),
    ]  # fmt: skip


def test_a_chain_anchored_at_its_first_entry(chain: list[dict[str, Any]]) -> None:
    """A version replayed from a point in the log: its chain starts mid-way."""
    assert kinds(verify_chain(0, chain[10:])[0]) == [("deleted", s) for s in range(10)]
    assert verify_chain(0, chain[10:], anchored=True)[0] == []


def test_decision_rows_against_the_log(chain: list[dict[str, Any]]) -> None:
    latest = {e["transaction_id"]: e for e in chain}
    rows = [{**{k: e[k] for k in ("transaction_id", "source_partition", "source_offset", *audit.COMPARED)}}
            for e in chain]  # fmt: skip
    assert compare_decisions(latest, rows, "fraud_transactions") == []
    rows[3] = {**rows[3], "decision": "allow" if rows[3]["decision"] != "allow" else "review"}
    removed = rows.pop(7)
    rows.append({**rows[0], "transaction_id": "forged", "source_partition": 0, "source_offset": 99})
    rows.append({"transaction_id": chain[1]["transaction_id"], "score": None})  # a label's cells only
    found = compare_decisions(latest, rows, "fraud_transactions")
    assert [(f.kind, f.transaction_id) for f in found] == [
        ("altered", rows[3]["transaction_id"]),
        ("inserted", "forged"),
        ("deleted", removed["transaction_id"]),
    ]
    assert found[0].detail == "differs from the log in decision" and found[0].seq == chain[3]["seq"]
    assert found[1].partition == 0 and found[1].source_offset == 99


def fraud_pipeline(heads_interval_s: float) -> Any:
    from streams.engine.testing import LogMessage
    from streams.events import load_validator
    from streams.fraud.messages import label_decoder, transaction_decoder
    from streams.fraud.pipeline import FraudPipeline

    settings = Settings()
    decoders = (
        transaction_decoder(load_validator(settings.schemas_dir / "transaction.schema.json")),
        label_decoder(load_validator(settings.schemas_dir / "label.schema.json")),
    )
    pipeline = FraudPipeline(
        processor(),
        decoders,
        ("tx", "labels"),
        "scores",
        heads_topic="heads",
        heads_interval_s=heads_interval_s,
    )
    offsets: dict[int, int] = {}

    def fold(events: list[tuple[dict[str, Any], int]], partition: int) -> None:
        start = offsets.get(partition, 0)
        batch = {
            "tx": [LogMessage("tx", partition, start + i, orjson.dumps(e)) for i, (e, _) in enumerate(events)]
        }
        offsets[partition] = start + len(events)
        pipeline.fold(partition, batch)

    return pipeline, fold


def test_each_drain_publishes_the_heads_of_the_partitions_that_decided() -> None:
    pipeline, fold = fraud_pipeline(heads_interval_s=0.0)
    events = traffic(60)
    fold([e for e in events if e[1] == 0], 0)
    fold([e for e in events if e[1] == 1], 1)
    drained = pipeline.drain()
    log = drained.rows[audit.LOG_TABLE]
    heads = {key: value for key, value in drained.records["heads"]}
    assert set(heads) == {b"0", b"1"}
    for partition in (0, 1):
        last = max((e for e in log if e["source_partition"] == partition), key=lambda e: e["seq"])
        assert heads[str(partition).encode()] == {
            "pipeline_version": "v1", "source_partition": partition, "seq": last["seq"], "hash": last["hash"],
        }  # fmt: skip
    assert "heads" not in pipeline.drain().records  # nothing decided since
    fold([e for e in events if e[1] == 2], 2)
    assert [key for key, _ in pipeline.drain().records["heads"]] == [b"2"]


def test_heads_wait_for_their_interval_and_are_not_lost() -> None:
    pipeline, fold = fraud_pipeline(heads_interval_s=3600.0)
    events, more = traffic(60), traffic(120)[60:]  # (the same seed: the first 60 are the same)
    fold([e for e in events if e[1] == 0], 0)
    assert [key for key, _ in pipeline.drain().records["heads"]] == [b"0"]  # the first at once
    fold([e for e in more if e[1] == 0], 0)
    assert "heads" not in pipeline.drain().records  # partition 0 grew within the interval: later
    fold([e for e in events if e[1] == 1], 1)
    assert [key for key, _ in pipeline.drain().records["heads"]] == [b"1"]  # a chain's first: at once
    pipeline.closing()  # the last drain before partitions leave: the waiting heads go out
    assert [key for key, _ in pipeline.drain().records["heads"]] == [b"0"]
