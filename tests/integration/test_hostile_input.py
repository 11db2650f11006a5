"""No input can stop the stream: the hostile corpus (`streams.hostile`: a ~900 kB event, 100,000
levels of nesting, broken UTF-8, numbers JSON cannot hold, wrong types, bounds...) mixed into valid
traffic on each raw topic, through the real `streams worker` on the real Kafka and Cassandra.

Each hostile message gets exactly one dead letter at its own coordinates with the reason the corpus
declares (capped to the letter limit, with the original's size and sha256), or is processed as the
corpus declares; the worker process is never restarted; the valid traffic's results equal an
oracle computed independently. Then a dead-letter topic that refuses every letter: nothing is
dropped, each letter is in the `dead_letters` table, counted, and the fallback alert's expression
holds for the worker in the local Prometheus.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from streams.ctr.generator import ClickstreamGenerator
from streams.fraud.generator import TransactionGenerator, TransactionProfile
from streams.fraud.synthetic import load_ip_prefixes
from streams.hostile import VALID, HostileMessage
from streams.io.cassandra import connect
from streams.io.kafka import client_config
from streams.produce import produce
from streams.settings import Settings
from tests.integration import hostile_checks as hostile
from tests.integration.ctr_oracle import CLEAN_PROFILE, CTR_WINDOWS, SEC, assert_ctr_rows_match, ctr_oracle
from tests.integration.ctr_oracle import START as AD_START
from tests.integration.faults import caught_up, high_watermarks
from tests.integration.fraud_oracle import DAY
from tests.integration.fraud_oracle import START as FRAUD_START
from tests.integration.kafka_records import Located, produce_located, read_records
from tests.support import metric, running_worker, scrape, wait_until

pytestmark = pytest.mark.integration

Pair = tuple[bytes, bytes]
# No dirt of its own (no late, duplicate or malformed messages; clicks: CLEAN_PROFILE): every dead
# letter is a hostile one.
CLEAN_TRANSACTIONS = TransactionProfile(
    customers=300, mean_gap_ms=3 * DAY / 2000, fraud_share=0.02, malformed_share=0.0
)


@dataclass
class Traffic:
    """Valid traffic per topic (by settings attribute), and where the corpus goes in the target's."""

    messages: dict[str, list[Pair]]
    base_ms: int  # event time of the corpus' valid events: never late, never making others late
    split: int
    labels: dict[str, bool] = field(default_factory=dict)  # transaction id -> is_fraud


def clickstream() -> Traffic:
    messages = list(ClickstreamGenerator(CLEAN_PROFILE, seed=23, start_ms=AD_START, rate=100).messages(3000))
    split = len(messages) // 2
    return Traffic({"ad_events": messages}, max(orjson.loads(v)["ts"] for _, v in messages[:split]), split)


def transactions(settings: Settings, target: str) -> Traffic:
    prefixes = load_ip_prefixes(settings.fraud.ip_countries_file)
    generator = TransactionGenerator(CLEAN_TRANSACTIONS, seed=29, start_ms=FRAUD_START, ip_prefixes=prefixes)
    scenario = generator.scenario(2000)
    messages = {"transactions": scenario.transactions, "labels": scenario.labels}
    base_ms = FRAUD_START + DAY  # two days before the last transaction: hostile labels get orphaned
    split = next(i for i, (_, v) in enumerate(messages[target]) if orjson.loads(v)["ts"] > base_ms)
    labels = {(lb := orjson.loads(v))["transaction_id"]: lb["is_fraud"] for _, v in scenario.labels}
    return Traffic(messages, base_ms, split, labels)


def send(
    settings: Settings, traffic: Traffic, target: str, corpus: list[HostileMessage]
) -> dict[Located, HostileMessage]:
    """Other topics first, then the target's traffic with the corpus in the middle, in order."""
    topics = settings.topics
    for name, messages in traffic.messages.items():
        if name != target:
            assert produce(settings.kafka, getattr(topics, name), messages).failed == 0
    head, tail = traffic.messages[target][: traffic.split], traffic.messages[target][traffic.split :]
    assert produce(settings.kafka, getattr(topics, target), head).failed == 0
    sent = hostile.send_corpus(settings, getattr(topics, target), corpus)
    assert produce(settings.kafka, getattr(topics, target), tail).failed == 0
    return sent


def run_until_caught_up(
    settings: Settings, topics: list[str], log_dir: Path, then: Callable[[], None] = lambda: None
) -> str:
    """Run the worker until its group committed every offset, then ``then()`` while it still runs;
    returns its final /metrics."""
    ends = {t: {p: e for p, e in high_watermarks(settings, t).items() if e} for t in topics}
    with running_worker(settings, log_dir) as worker:

        def done() -> bool:
            hostile.assert_alive(worker, log_dir)
            return caught_up(settings, ends)

        wait_until(done, 240, "every offset committed", interval_s=1)
        # Counters move once a checkpoint is done: wait for the one whose offsets we saw.
        text = wait_until(
            lambda: (t := scrape(settings)) and all(
                metric(t, "streams_events_consumed_total", topic=topic) == sum(ends[topic].values())
                for topic in topics
            ) and t,
            30, "the consumed counters to reach the produced counts",
        )  # fmt: skip
        then()
        hostile.assert_alive(worker, log_dir)
    hostile.assert_no_crash_logged(log_dir, started=True)  # running_worker checked its exit status
    return str(text)


@pytest.mark.parametrize("kind", ["ad_events", "transactions", "labels"])
def test_no_hostile_message_stops_the_stream(isolated: Settings, kind: str, tmp_path: Path) -> None:
    settings = isolated.model_copy(update={"ctr": CTR_WINDOWS})
    traffic = clickstream() if kind == "ad_events" else transactions(settings, kind)
    corpus = hostile.corpus(settings, kind, "it-hostile", traffic.base_ms)  # topics are the test's own
    sent = send(settings, traffic, kind, corpus)
    topic = getattr(settings.topics, kind)
    topics = [getattr(settings.topics, name) for name in traffic.messages]
    final_metrics = run_until_caught_up(settings, topics, tmp_path)

    hostile.assert_one_letter_each(hostile.read_letters(settings), topic, sent)
    letters = sum(hostile.expected_letter(m) is not None for m in sent.values())
    consumed = metric(final_metrics, "streams_events_consumed_total", topic=topic)
    dead = metric(final_metrics, "streams_events_dead_lettered_total", topic=topic)
    assert consumed == len(traffic.messages[kind]) + len(corpus) and dead == letters
    assert consumed == metric(final_metrics, "streams_events_processed_total", topic=topic) + dead
    valid = [m for m in sent.values() if hostile.expected_letter(m) is None]
    print(f"\n{kind}: {len(corpus)} hostile messages ({letters} dead letters, {len(valid)} processed)")
    if kind == "ad_events":
        assert_ctr_as_oracle(settings, sent)
    else:
        assert_fraud_as_oracle(settings, traffic, kind, valid, final_metrics)


def assert_ctr_as_oracle(settings: Settings, sent: dict[Located, HostileMessage]) -> None:
    """Every window row equals the oracle over the valid traffic plus the corpus' valid events."""
    events = {
        p: [(o, hostile.parsed(sent[(p, o)]) if (p, o) in sent and sent[(p, o)].expected == VALID
             else None if (p, o) in sent else orjson.loads(value or b"")) for o, _, value in records]
        for p, records in read_records(settings, settings.topics.ad_events).items()
    }  # fmt: skip
    expected = ctr_oracle(events)
    assert expected.duplicates == set()
    assert expected.late == {w for w, m in sent.items() if hostile.expected_letter(m) == "late_event"}
    for m in sent.values():  # each processed one is an impression in its own ad's 10 s window
        if m.expected == VALID and hostile.expected_letter(m) is None:
            ts = int((event := hostile.parsed(m))["ts"])
            assert expected.ads[("10s", event["ad_id"], ts - ts % (10 * SEC))] == [1, 0], m.name
    assert_ctr_rows_match(settings, expected)


def assert_fraud_as_oracle(
    settings: Settings, traffic: Traffic, kind: str, valid: list[HostileMessage], final_metrics: str
) -> None:
    """One score per valid transaction (the generator's and the corpus'), every label joined to its
    transaction, the corpus' valid labels orphaned (their transactions never existed)."""
    tx_ids = {orjson.loads(v)["transaction_id"] for _, v in traffic.messages["transactions"]}
    if kind == "transactions":
        tx_ids |= {hostile.parsed(m)["transaction_id"] for m in valid}
    cluster, session = connect(settings.cassandra, keyspace=settings.cassandra.keyspace)
    try:
        rows = list(session.execute("SELECT transaction_id, is_fraud FROM fraud_transactions"))
        scores = sorted(r.transaction_id for r in session.execute("SELECT transaction_id FROM fraud_scores"))
    finally:
        cluster.shutdown()
    assert {r.transaction_id for r in rows} == tx_ids and scores == sorted(tx_ids)
    assert {r.transaction_id: r.is_fraud for r in rows if r.is_fraud is not None} == traffic.labels
    assert metric(final_metrics, "streams_fraud_labels_joined_total") == len(traffic.labels)
    orphans = len(valid) if kind == "labels" else 0
    assert metric(final_metrics, "streams_fraud_labels_orphaned_total") == orphans


DEAD_LETTER_LIMIT = 4096  # bytes the dead-letter topic accepts: less than any letter of BIG_BAD
BIG_BAD = 5  # malformed messages of 10 kB of random bytes (incompressible: lz4 cannot shrink them)
FALLBACK_ALERT = "StreamsDeadLetterFallback"


def restrict_message_size(settings: Settings, topic: str, max_bytes: int) -> None:
    admin = AdminClient(client_config(settings.kafka))
    entry = ConfigEntry("max.message.bytes", str(max_bytes), incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result()

    def applied() -> bool:
        (future,) = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)]).values()
        return bool(future.result()["max.message.bytes"].value == str(max_bytes))

    wait_until(applied, 30, f"max.message.bytes={max_bytes} on {topic}")


def clicks_with_big_bad_messages() -> tuple[list[tuple[bytes, bytes]], set[int]]:
    """The clean clickstream with BIG_BAD malformed messages spread in it (on neighbours' keys)."""
    rng = random.Random(31)
    messages = list(ClickstreamGenerator(CLEAN_PROFILE, seed=37, start_ms=AD_START, rate=100).messages(2000))
    at = set()
    for i in range(BIG_BAD):
        index = (i + 1) * len(messages) // (BIG_BAD + 1)
        messages.insert(index, (messages[index][0], b"\x00" + rng.randbytes(10_000 - 1)))
        at.add(index)
    return messages, at


def test_a_dead_letter_the_topic_refuses_is_kept_in_cassandra_and_alerted(
    isolated: Settings, tmp_path: Path
) -> None:
    settings = isolated.model_copy(update={"ctr": CTR_WINDOWS})
    topic = settings.topics.ad_events
    restrict_message_size(settings, settings.topics.dead_letters, DEAD_LETTER_LIMIT)
    messages, bad_at = clicks_with_big_bad_messages()
    where = produce_located(settings.kafka, topic, messages)
    bad = {where[i]: messages[i] for i in bad_at}

    final = run_until_caught_up(settings, [topic], tmp_path, then=lambda: assert_alert(settings, topic))

    # Nothing dropped: each letter is in the table with its reason, coordinates and exact bytes.
    version = settings.worker.pipeline_version
    cluster, session = connect(settings.cassandra, keyspace=settings.cassandra.keyspace)
    try:
        rows = {(r.topic, r.partition, r.offset): r for r in session.execute("SELECT * FROM dead_letters")}
    finally:
        cluster.shutdown()
    assert set(rows) == {(topic, p, o) for p, o in bad}
    for (p, o), (key, value) in bad.items():
        hostile.assert_kept_in_table(rows[(topic, p, o)], version, "malformed_json", key, value)
    assert hostile.read_letters(settings) == []  # the topic took none: no letter twice, none lost
    assert metric(final, "streams_dead_letter_fallbacks_total", topic=topic) == BIG_BAD
    assert metric(final, "streams_dead_letter_failures_total", topic=topic) == 0
    assert (
        metric(final, "streams_events_dead_lettered_total", topic=topic, reason="malformed_json") == BIG_BAD
    )

    # The stream went on: the valid traffic's windows equal the oracle.
    events = {
        p: [(o, None if (p, o) in bad else orjson.loads(value or b"")) for o, _, value in records]
        for p, records in read_records(settings, topic).items()
    }
    expected = ctr_oracle(events)
    assert expected.late == expected.duplicates == set()
    assert_ctr_rows_match(settings, expected)


def assert_alert(settings: Settings, topic: str) -> None:
    """The rule's exact expression holds for this worker in the local Prometheus (which scrapes it
    by file-based discovery); if Prometheus has loaded the rule, the alert is pending or firing."""
    w = settings.worker
    labels = {"pipeline_version": w.pipeline_version, "instance": f"{w.metrics_host}:{w.metrics_port}",
              "topic": topic}  # fmt: skip
    expr = hostile.rule_expr(FALLBACK_ALERT)
    values = wait_until(
        lambda: (v := hostile.expr_values(settings, expr, **labels)) == [BIG_BAD] and v,
        90, f"Prometheus to evaluate {FALLBACK_ALERT}'s expression to {BIG_BAD} for this worker",
    )  # fmt: skip
    assert values == [BIG_BAD]
    if not hostile.rule_loaded(settings, FALLBACK_ALERT):
        print(f"\n{FALLBACK_ALERT} is not loaded by the local Prometheus: its expression was checked")
        return
    states = wait_until(
        lambda: hostile.alert_states(settings, FALLBACK_ALERT, **labels), 60, f"{FALLBACK_ALERT} pending"
    )
    assert set(states) <= {"pending", "firing"}
    print(f"\n{FALLBACK_ALERT} is {states} in the local Prometheus")
