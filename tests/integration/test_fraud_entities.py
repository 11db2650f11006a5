"""Entity features across customers end to end (real Kafka and Cassandra, two workers): the
features of hand-built cases (a device, a card and an address shared by customers of different
partitions) equal a hand computation, and a replay of the version with two workers of its own
equals the live one (`streams verify`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from streams.fraud.entities import ENTITY_FEATURES, EntityHistory
from streams.fraud.features import FEATURES
from streams.fraud.generator import Scenario, TransactionGenerator, TransactionProfile
from streams.fraud.messages import TransactionMessage, as_transaction
from streams.fraud.synthetic import load_ip_prefixes
from streams.io.kafka import committed_offsets, existing_topics, group_members
from streams.produce import produce, produce_each
from streams.settings import Settings
from streams.versions import names_of, result_topic
from tests.integration.ctr_oracle import START
from tests.integration.faults import group_of, high_watermarks, kill_when, start_worker
from tests.integration.kafka_records import read_partitions
from tests.integration.test_replay import fraud_rows, streams_cli, with_version
from tests.support import free_port, running_worker, wait_until

pytestmark = pytest.mark.integration
MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
NAMES = FEATURES + ENTITY_FEATURES


SHIPPED = (
    Path(__file__).resolve().parents[2] / "deploy" / "models" / "fraud-lr-v3.json"
)  # reads entity features


def tx(tx_id: str, customer: str, ts: int, **entities: str) -> dict[str, Any]:
    return {"transaction_id": tx_id, "customer_id": customer, "ts": ts, "amount": 49.0, "currency": "EUR",
            "payment_method": "invoice", **entities}  # fmt: skip


# Hand-built: a device farm (4 customers, one device), a card tried by 3 customers, a shared
# shipping address; each later transaction's features are counted by hand below.
T = START + 30 * DAY
HAND = [
    tx("farm-1", "farm-a", T, device_id="dev-farm", card_id="card-1"),
    tx("farm-2", "farm-b", T + 10 * MIN, device_id="dev-farm", card_id="card-2"),
    tx("farm-3", "farm-c", T + 20 * MIN, device_id="dev-farm", card_id="card-3"),
    tx("farm-4", "farm-d", T + 2 * HOUR, device_id="dev-farm", card_id="card-4"),
    tx("card-1", "thief-a", T + 5 * MIN, card_id="card-x", device_id="dev-a"),
    tx("card-2", "thief-b", T + 6 * MIN, card_id="card-x", device_id="dev-b"),
    tx("card-3", "thief-c", T + 3 * DAY, card_id="card-x", device_id="dev-c"),
    tx("ship-1", "drop-a", T + 1 * MIN, shipping_address="addr-9"),
    tx("ship-2", "drop-b", T + 8 * DAY, shipping_address="addr-9"),  # past the 7-day window
    tx("ship-3", "drop-c", T + 8 * DAY + MIN, shipping_address="addr-9"),
]
L = math.log1p
# transaction id -> {feature: value} counted by hand from HAND (other features of it: 0)
EXPECTED = {
    "farm-2": {"device_customers_1h": L(1), "device_customers_24h": L(1), "device_customers_7d": L(1),
               "device_age_days": 10 / 1440, "device_cards_24h": L(1)},
    "farm-3": {"device_customers_1h": L(2), "device_customers_24h": L(2), "device_customers_7d": L(2),
               "device_age_days": 20 / 1440, "device_cards_24h": L(2)},
    "farm-4": {"device_customers_1h": 0.0, "device_customers_24h": L(3), "device_customers_7d": L(3),
               "device_age_days": 120 / 1440, "device_cards_24h": L(3)},
    "card-2": {"card_customers_1h": L(1), "card_customers_24h": L(1), "card_customers_7d": L(1),
               "card_age_days": 1 / 1440, "card_devices_24h": L(1)},
    "card-3": {"card_customers_1h": 0.0, "card_customers_24h": 0.0, "card_customers_7d": L(2),
               "card_age_days": 3 - 5 / 1440, "card_devices_24h": 0.0},
    "ship-2": {},
    "ship-3": {"address_customers_1h": L(1), "address_customers_24h": L(1), "address_customers_7d": L(1),
               "address_age_days": 1 / 1440},
}  # fmt: skip


def background(settings: Settings, count: int) -> Scenario:
    """Generated traffic with rings (device farms, shared cards, reshipping) over 2 days."""
    generator = TransactionGenerator(
        TransactionProfile(customers=150, mean_gap_ms=2 * DAY / count, ring_shares=(0.02, 0.02, 0.02)),
        seed=11, start_ms=START, ip_prefixes=load_ip_prefixes(settings.fraud.ip_countries_file),
    )  # fmt: skip
    return generator.scenario(count)


def test_entity_features_across_partitions_on_two_workers_and_replayed(
    isolated: Settings, tmp_path: Path
) -> None:
    fraud = isolated.fraud.model_copy(update={"model_file": SHIPPED, "entity_idle_s": 2.0})
    worker = isolated.worker.model_copy(update={"pipelines": ("fraud",)})
    base = isolated.model_copy(update={"fraud": fraud, "worker": worker})
    live, replayed = with_version(base, "e1"), with_version(base, "e2")
    second = live.model_copy(update={"worker": live.worker.model_copy(update={"metrics_port": free_port()})})
    topic = base.topics.transactions
    in_order = sorted(HAND, key=lambda t: t["ts"])  # (a partition's transactions come in time order)
    hand = [(t["customer_id"].encode(), orjson.dumps(t)) for t in in_order]
    scenario = background(base, 1500)  # 2 days, a month before the hand-built ones
    total = len(hand) + len(list(scenario.valid_events()))

    with running_worker(live, tmp_path), running_worker(second, tmp_path):
        assert produce(base.kafka, topic, scenario.transactions).failed == 0
        deliveries = produce_each(base.kafka, topic, hand)
        partitions = {t["transaction_id"]: d.partition for t, d in zip(in_order, deliveries, strict=True)}
        farm = {partitions[f"farm-{i}"] for i in range(1, 5)}
        assert len(farm) > 1, f"the farm's customers all landed on one partition {farm}: pick others"
        rows = wait_until(lambda: (r := fraud_rows(base, "e1")) and len(r) >= total and r, 240, "e1's scores")
        group = names_of(base, "e1", ("fraud",)).group_id
        assert group_members(base.kafka, group) == 2  # both workers share the customer and entity partitions
        for tx_id, features in EXPECTED.items():
            got = dict(zip(NAMES, rows[tx_id]["features"], strict=True))
            want = {name: features.get(name, 0.0) for name in ENTITY_FEATURES}
            assert {n: got[n] for n in ENTITY_FEATURES} == pytest.approx(want, abs=1e-9), tx_id

        replay = streams_cli(replayed, "replay", "--version", "e2", "--from-beginning", "--workers", "2",
                             "--caught-up-lag", "0", timeout_s=400)  # fmt: skip
        assert replay.returncode == 0, replay.stderr
        wait_until(lambda: len(fraud_rows(base, "e2")) >= total, 240, "e2's scores")
        same = streams_cli(base, "verify", "e1", "e2")
        assert same.returncode == 0, same.stdout + same.stderr
        for version in ("e1", "e2"):  # each decision log against its published heads
            audit = streams_cli(base, "audit", "verify", "--version", version)
            assert audit.returncode == 0, audit.stdout + audit.stderr
        assert len(rows) == total
    retire = streams_cli(base, "retire", "e2", "--yes")
    assert retire.returncode == 0, retire.stderr
    left = existing_topics(base.kafka)
    assert result_topic(base.topics.fraud_entity_sightings, "e1") in left
    assert not {result_topic(name, "e2") for name in (base.topics.fraud_entity_sightings,
                                                       base.topics.fraud_entity_features)} & left  # fmt: skip


def global_view(
    partitions: dict[int, list[tuple[int, bytes | None]]], grace_ms: int
) -> dict[str, list[float]]:
    """Entity features from one history of every partition's counted transactions (those not more
    than the grace below their partition's largest earlier time: the worker's lateness rule), valid
    ones only, first sighting of an id only."""
    counted, every, seen = [], [], set()
    for messages in partitions.values():
        largest = None
        for _, raw in messages:
            try:
                event = orjson.loads(raw or b"")
                tx = as_transaction(msgspec.convert(event, TransactionMessage))
            except (orjson.JSONDecodeError, msgspec.ValidationError, TypeError):
                continue
            if tx.transaction_id in seen:
                continue
            seen.add(tx.transaction_id)
            every.append(event)
            if largest is None or tx.ts >= largest - grace_ms:
                counted.append(event)
            largest = tx.ts if largest is None else max(largest, tx.ts)
    history = EntityHistory()
    for event in counted:
        history.add_transaction(event)
    return {event["transaction_id"]: history.transaction_features(event) for event in every}


def test_a_worker_killed_mid_stream_and_restarted_gives_the_global_views_features(
    isolated: Settings, tmp_path: Path
) -> None:
    worker = isolated.worker.model_copy(update={"batch_size": 300, "pipelines": ("fraud",)})
    fraud = isolated.fraud.model_copy(
        update={"model_file": SHIPPED, "entity_idle_s": 2.0, "catchup_flush_interval_s": 0.1}
    )
    settings = isolated.model_copy(update={"worker": worker, "fraud": fraud})
    scenario = background(settings, 4000)
    t = settings.topics
    assert produce(settings.kafka, t.transactions, scenario.transactions).failed == 0
    total = len(list(scenario.valid_events()))
    group = group_of(settings, t.transactions)
    ends = high_watermarks(settings, t.transactions)

    def resumes_mid_log() -> bool:
        committed = committed_offsets(settings.kafka, group, t.transactions, ends)
        return any(0 < committed.get(p, 0) < end for p, end in ends.items())

    kill_when(start_worker(settings, tmp_path / "first-worker.log"), resumes_mid_log, "a partition half done")
    with running_worker(settings, tmp_path):
        rows = wait_until(
            lambda: (r := fraud_rows(settings, settings.worker.pipeline_version)) and len(r) >= total and r,
            300, "every transaction scored",
        )  # fmt: skip
        audit = streams_cli(settings, "audit", "verify", "--json")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert orjson.loads(audit.stdout)["entries"] == total  # one decision each, none twice
    expected = global_view(read_partitions(settings, t.transactions), fraud.entity_grace_ms)
    assert rows.keys() == expected.keys()
    width = len(ENTITY_FEATURES)
    assert all(list(rows[tx_id]["features"])[-width:] == pytest.approx(want, abs=1e-12)
               for tx_id, want in expected.items())  # fmt: skip
    assert sum(1 for want in expected.values() if any(want)) > total // 2  # entities are shared
