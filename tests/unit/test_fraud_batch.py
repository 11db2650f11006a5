"""The batch `FraudProcessor` against its executable specification (`fraud_reference`, the
per-transaction implementation it replaced): on random streams of transactions and labels over
several partitions and customers, cut into random batches, every output row (keys, their order
and values, floats to the last bit) and every piece of state that decides a later output agree."""

from __future__ import annotations

import itertools
from functools import cache
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.fraud.decision import DecisionPolicy
from streams.fraud.features import DAY, HOUR, MIN, PAYMENT_METHODS
from streams.fraud.generator import TransactionGenerator, TransactionProfile
from streams.fraud.messages import as_label, as_transaction
from streams.fraud.model import FraudModel
from streams.fraud.processor import Archived, FraudOutput, FraudProcessor
from streams.settings import load_settings
from tests.unit.fraud_reference import ReferenceProcessor

PREFIXES = {"31": "DE", "105": "NG", "62": "AT"}
START = 1_767_225_600_000
STEPS = (0, 1, 1000, MIN - 1, MIN, MIN + 1, HOUR - 1, HOUR, HOUR + 1, DAY - 1, DAY, DAY + 1, 3 * DAY)
OPTIONAL: dict[str, list[Any]] = {
    "card_id": ["k0", "k1", "k2", "", None],
    "device_id": ["d0", "d1", "d2", "", None],
    "ip": ["31.1.2.3", "105.9.9.9", "62.0.0.1", "10.0.0.1", "nodots", "", None],
    "email_domain": ["web.de", None],
    "billing_country": ["DE", "AT", "NG", None],
    "shipping_country": ["DE", "AT", None],
    "basket_items": [0, 1, 7, None],
    "is_new_customer": [True, False, None],
}
AMOUNTS = st.one_of(
    st.sampled_from([0.01, 0.1, 0.3, 12.34, 99.99, 1_000_000.0, 5e-324]),
    st.floats(min_value=0.01, max_value=1_000_000, allow_nan=False),
)

Event = tuple[str, dict[str, Any], int, bool]  # kind, event, partition, pass it as a dict


@cache
def model() -> FraudModel:
    return FraudModel.load(load_settings().fraud.model_file)


def signed_steps() -> st.SearchStrategy[int]:
    return st.builds(lambda step, sign: step * sign, st.sampled_from(STEPS), st.sampled_from((1, 1, 1, -1)))


@st.composite
def transaction(draw: st.DrawFn, number: int, ts: int, customer: str) -> dict[str, Any]:
    tx: dict[str, Any] = {
        "transaction_id": f"t{number}",
        "ts": ts,
        "customer_id": customer,
        "amount": draw(AMOUNTS),
        "currency": "EUR",
        "payment_method": draw(st.sampled_from(PAYMENT_METHODS)),
    }
    for name, values in OPTIONAL.items():
        if draw(st.booleans()):  # else absent
            tx[name] = draw(st.sampled_from(values))
    return tx


@st.composite
def streams(draw: st.DrawFn) -> list[list[Event]]:
    """Batches of transactions (some repeated: duplicates) and labels (before or after their
    transaction, for unknown ones, in another partition), times jumping back and forth."""
    partitions = draw(st.integers(1, 3))
    customers = {f"c{i}": draw(st.integers(0, partitions - 1)) for i in range(draw(st.integers(1, 4)))}
    events: list[Event] = []
    txs: list[dict[str, Any]] = []
    ts = START
    for number in range(draw(st.integers(0, 40))):
        ts += draw(signed_steps())
        customer = draw(st.sampled_from(sorted(customers)))
        kind = draw(st.sampled_from(("tx", "tx", "tx", "tx", "again", "label")))
        if kind == "again" and txs:  # the same id again, as it was or with other fields
            tx = draw(st.sampled_from(txs))
            if draw(st.booleans()):
                tx = {**tx, "ts": ts, "amount": draw(AMOUNTS)}
            events.append(("tx", tx, customers[tx["customer_id"]], draw(st.booleans())))
        elif kind == "label":
            label = {
                "transaction_id": f"t{draw(st.integers(0, number + 3))}",
                "customer_id": customer,
                "ts": ts + draw(signed_steps()),
                "is_fraud": draw(st.booleans()),
                "source": draw(st.sampled_from(("chargeback", "unpaid_invoice", "manual_review", "paid"))),
            }
            events.append(("label", label, customers[customer], draw(st.booleans())))
        else:
            tx = draw(transaction(number, ts, customer))
            txs.append(tx)
            events.append(("tx", tx, customers[customer], draw(st.booleans())))
    cuts = sorted(set(draw(st.lists(st.integers(0, len(events)), max_size=6))) | {0, len(events)})
    return [events[a:b] for a, b in itertools.pairwise(cuts)]


def rows(out: Any) -> str:
    """Every field of an output, strictly: key order, types, floats by their shortest repr."""
    return repr(
        [(name, getattr(out, name)) for name in FraudOutput.__dataclass_fields__ if name not in LINKED]
    )


LINKED = ("sightings",)  # a version with entity features only (the reference has none)


def customers(histories: dict[str, Any], since: int | None) -> list[Any]:
    """The customers whose history can still decide a feature, with the devices and cards that
    can (what a sweep may have forgotten already is left out on both sides)."""

    def kept(seen: dict[str, int]) -> list[tuple[str, int]]:
        return sorted((k, last) for k, last in seen.items() if since is None or last >= since)

    def newest(h: Any) -> int:
        return h.newest if hasattr(h, "newest") else h.reach[-1]

    return sorted(
        (c, list(h.recent), h.ew_mean, h.ew_var, h.n, kept(h.devices), kept(h.cards))
        for c, h in histories.items()
        if since is None or newest(h) >= since
    )


def device_cards(features: Any) -> list[Any]:
    stale = None if features.watermark is None else features.watermark - DAY
    found = []
    for device, cards in features.device_cards.items():
        fresh = [(c, last) for c, last in cards.items() if stale is None or last > stale]
        if fresh:
            found.append((device, fresh))
    return sorted(found)


def state_view(
    partition: int, features: Any, watermark: int | None, decisions: dict[str, int], labels: list[Any],
    dedupe_ms: int,
) -> tuple[Any, ...]:  # fmt: skip
    """What of a partition's state can decide a later output: the decisions within the dedupe
    horizon, the waiting labels, the customers, devices and cards still within their horizons."""
    since = None if features.watermark is None else features.watermark - features.horizon_ms
    dedupe = None if watermark is None else watermark - dedupe_ms
    within = sorted((tx_id, ts) for tx_id, ts in decisions.items() if dedupe is None or ts >= dedupe)
    known = customers(features.customers, since)
    return (partition, watermark, within, labels, known, device_cards(features))


def reference_state(processor: ReferenceProcessor) -> str:
    return repr([
        state_view(
            partition, state.features, state.watermark, {k: d.ts for k, d in state.decisions.items()},
            [(lb["transaction_id"], lb["ts"], lb["is_fraud"], lb["source"]) for lb in state.pending],
            processor.dedupe_horizon_ms,
        )
        for partition, state in processor.states.items()
    ])  # fmt: skip


def batch_state(processor: FraudProcessor) -> str:
    return repr([
        state_view(
            partition, state.features, state.watermark, state.decisions,
            [(lb.transaction_id, lb.ts, lb.is_fraud, lb.source) for lb in state.labels.waiting.values()],
            processor.dedupe_horizon_ms,
        )
        for partition, state in processor.states.items()
    ])  # fmt: skip


class Archive:
    """The durable rows a worker's label join looks up: each batch's rows once it is drained."""

    def __init__(self) -> None:
        self.rows: dict[str, Archived] = {}
        self.offsets: dict[int, int] = {}  # partition -> the next transaction offset

    def number(self, txs: list[tuple[Any, int]]) -> list[int]:
        numbers = []
        for _, partition in txs:
            numbers.append(self.offsets.get(partition, 0))
            self.offsets[partition] = numbers[-1] + 1
        return numbers

    def prepare(self, processor: FraudProcessor, labels: list[tuple[Any, int]]) -> None:
        for partition in {p for _, p in labels}:
            ids = {lb["transaction_id"] if isinstance(lb, dict) else lb.transaction_id for lb, p in labels
                   if p == partition}  # fmt: skip
            found = {i: self.rows[i] for i in processor.unknown(partition, ids) if i in self.rows}
            processor.looked_up[partition] = found

    def drained(self, out: FraudOutput) -> None:
        for row in out.transactions:
            self.rows[row["transaction_id"]] = Archived(
                row["ts"], row["source_partition"], row["source_offset"]
            )


def run_both(
    batches: list[list[Event]],
    policy: DecisionPolicy,
    horizon_ms: int,
    state_every: int = 1,
    dedupe_ms: int = DAY,
    history_ms: int = 30 * DAY,
) -> None:
    """The reference keeps every decision; the batch processor forgets them at each drain past
    the dedupe horizon, and its label join reads the forgotten ones from an archive."""
    horizons = {
        "label_horizon_ms": horizon_ms,
        "dedupe_horizon_ms": dedupe_ms,
        "history_horizon_ms": history_ms,
    }
    reference = ReferenceProcessor(model(), policy, PREFIXES, "v", **horizons)
    batched = FraudProcessor(model(), policy, PREFIXES, "v", **horizons)
    archive = Archive()
    for number, batch in enumerate(batches, 1):
        txs = [(tx, p) for kind, tx, p, _ in batch if kind == "tx"]
        labels = [(label, p) for kind, label, p, _ in batch if kind == "label"]
        offsets = archive.number(txs)
        expected = reference.process(txs, labels, offsets)
        got_labels = [
            (lb if as_dict else as_label(lb), p) for kind, lb, p, as_dict in batch if kind == "label"
        ]
        archive.prepare(batched, got_labels)
        got = batched.process(
            [(tx if as_dict else as_transaction(tx), p) for kind, tx, p, as_dict in batch if kind == "tx"],
            got_labels,
            offsets,
        )
        assert rows(got) == rows(expected)
        batched.seal()
        archive.drained(got)
        if number % state_every == 0 or number == len(batches):
            assert batch_state(batched) == reference_state(reference)
    assert batched.live_counts == reference.live_counts
    assert list(batched.live_counts) == list(reference.live_counts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    streams(),
    st.sampled_from([(0.0, 0.0, 0.5), (0.05, 0.5, 0.3), (0.3, 0.7, 0.05), (0.2, 0.2, 1.0)]),
    st.sampled_from([HOUR, DAY, 90 * DAY]),
    st.sampled_from([HOUR, DAY]),
    st.sampled_from([HOUR, 2 * DAY, 30 * DAY]),
)
def test_the_batch_processor_equals_the_reference(
    batches: list[list[Event]],
    thresholds: tuple[float, float, float],
    horizon_ms: int,
    dedupe_ms: int,
    history_ms: int,
) -> None:
    disable_at, review_at, holdout = thresholds
    policy = DecisionPolicy(disable_at, review_at, holdout)
    run_both(batches, policy, horizon_ms, dedupe_ms=dedupe_ms, history_ms=history_ms)


@pytest.mark.parametrize(("batch_size", "horizon_ms"), [(2, 2 * DAY), (137, 2 * DAY), (5000, 90 * DAY)])
def test_a_generated_history_with_labels_equals_the_reference(batch_size: int, horizon_ms: int) -> None:
    """Long histories of few customers: queues trimmed and compacted, decisions forgotten, labels
    joined, orphaned and kept waiting across batches; times shuffled a little in places."""
    generator = TransactionGenerator(
        TransactionProfile(customers=25, mean_gap_ms=60_000, malformed_share=0.0),
        seed=7,
        start_ms=START,
        ip_prefixes=PREFIXES,
    )
    scenario = generator.scenario(6000)
    txs = [orjson.loads(raw) for _, raw in scenario.transactions]
    for i in range(0, len(txs) - 3, 97):  # some out of order, some a day or an hour late
        txs[i]["ts"] -= (DAY, HOUR, MIN, 1)[i % 4]
        txs[i], txs[i + 2] = txs[i + 2], txs[i]
    labels = [orjson.loads(raw) for _, raw in scenario.labels]
    partition = {f"cust-{i:06d}": i % 3 for i in range(25)}
    events: list[Event] = [("tx", tx, partition[tx["customer_id"]], False) for tx in txs]
    for i, label in enumerate(labels):  # labels early and late against their transactions
        events.insert(
            min(len(events), (i * 7919) % (len(events) + 1)),
            ("label", label, partition[label["customer_id"]], True),
        )
    batches = [events[i : i + batch_size] for i in range(0, len(events), batch_size)]
    run_both(batches, DecisionPolicy(0.1, 0.5, 0.2), horizon_ms, state_every=50)


def tx_event(number: int, ts: int, partition: int = 0, **fields: Any) -> Event:
    tx = {"transaction_id": f"t{number}", "ts": ts, "customer_id": "c0", "amount": 10.0 + number}
    tx |= {"currency": "EUR", "payment_method": "card", **fields}
    return ("tx", tx, partition, False)


def label_event(tx_number: int, ts: int, partition: int = 0) -> Event:
    label = {"transaction_id": f"t{tx_number}", "customer_id": "c0", "ts": ts, "is_fraud": True}
    return ("label", label | {"source": "chargeback"}, partition, False)


EDGES = {
    "windows at their bounds": [
        [tx_event(i, START + step) for i, step in enumerate((0, MIN, HOUR, DAY, DAY + MIN, DAY + HOUR))]
    ],
    "a card on the device exactly an hour ago": [
        [
            tx_event(0, START, device_id="d", card_id="k1"),
            tx_event(1, START + HOUR, device_id="d", card_id="k2"),
        ],
        [tx_event(2, START + HOUR + 1, device_id="d", card_id="k3", customer_id="c1")],
    ],
    "a waiting label released when the watermark reaches its time": [
        [tx_event(0, START), label_event(5, START + HOUR)],
        [tx_event(1, START + HOUR - 1)],
        [tx_event(2, START + HOUR)],
        [label_event(2, START + 2 * HOUR), label_event(9, START + 3 * HOUR)],
        [tx_event(3, START + 3 * HOUR - 1), tx_event(9, START + 3 * HOUR - 2)],
    ],
    "late entries straddling the window starts": [
        [tx_event(0, START + DAY), tx_event(1, START), tx_event(2, START + 2 * DAY)],
        [tx_event(3, START + MIN + 1), tx_event(4, START + DAY + HOUR), tx_event(5, START + 2 * DAY - MIN)],
        [tx_event(6, START + 2 * DAY + MIN), tx_event(7, START + 2 * DAY + MIN - 1)],
    ],
}


@pytest.mark.parametrize("name", sorted(EDGES))
def test_edge_cases_equal_the_reference(name: str) -> None:
    run_both(EDGES[name], DecisionPolicy(), 90 * DAY)


@given(
    st.lists(
        st.lists(st.sampled_from([-1.5, -0.0, 0.0, 0.0, 1e-300, 0.25, 0.25, 2.0]), min_size=27, max_size=27),
        max_size=20,
    )
)
def test_reason_codes_equal_the_reference(contributions: list[list[float]]) -> None:
    """Zeros, negative zeros and ties among the largest contributions included."""
    from tests.unit.fraud_reference import reasons

    x = np.array(contributions, dtype=float).reshape(-1, 27)
    assert model().reasons(x) == reasons(model(), x)


@given(st.lists(st.integers(0, 4_102_444_800_000), min_size=1, max_size=50))
def test_season_buckets_of_many_times_are_those_of_each(times: list[int]) -> None:
    from streams.fraud.evaluation import season_bucket
    from streams.fraud.model import season_buckets

    assert season_buckets(np.array(times, dtype=np.int64)).tolist() == [season_bucket(t) for t in times]
