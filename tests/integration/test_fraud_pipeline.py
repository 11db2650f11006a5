"""Fraud scoring end to end on the real Kafka and Cassandra, checked against oracles of its own:
one score per transaction, hand-computed features, detection far above chance, and cohort
metrics recomputed from the labels topic with plain code."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from scipy.stats import chi2

from streams.cli.transactions import read_decisions
from streams.fraud.features import FEATURES
from streams.fraud.generator import TransactionGenerator, TransactionProfile
from streams.fraud.model import FraudModel
from streams.fraud.synthetic import load_ip_prefixes
from streams.io.cassandra import connect
from streams.produce import produce
from streams.settings import Settings
from tests.integration.fraud_oracle import DAY, START, oracle_valid_transaction
from tests.integration.kafka_records import read_partitions
from tests.support import metric, running_worker, scrape, settings_env, wait_until

pytestmark = pytest.mark.integration

T = START + 40 * DAY + 3 * 3_600_000  # hand-made cases: 03:00 UTC, far after the scenario
HOLDOUT = 0.2


def hand_cases() -> list[dict[str, Any]]:
    base = {"customer_id": "hand-A", "currency": "EUR", "billing_country": "DE", "email_domain": "web.de"}
    return [
        {
            **base,
            "transaction_id": "hand-1",
            "ts": T,
            "amount": 100.0,
            "payment_method": "invoice",
            "card_id": "hc1",
            "device_id": "hd1",
            "ip": "31.1.2.3",
            "shipping_country": "DE",
            "basket_items": 2,
            "is_new_customer": True,
        },
        {
            **base,
            "transaction_id": "hand-2",
            "ts": T + 30_000,
            "amount": 50.0,
            "payment_method": "card",
            "card_id": "hc2",
            "device_id": "hd2",
            "ip": "105.9.9.9",
            "shipping_country": "NG",
        },
        {
            **base,
            "transaction_id": "hand-3",
            "ts": T + 2 * 3_600_000,
            "amount": 200.0,
            "payment_method": "paypal",
            "card_id": "hc3",
            "device_id": "hd1",
            "shipping_country": None,
            "basket_items": None,
        },
    ]


def expected_hand_features() -> dict[str, dict[str, float]]:
    """Written out by hand from the feature definitions (README), not computed by the pipeline."""
    mean1, var1 = math.log1p(100), 0.0
    delta = math.log1p(50) - mean1
    mean2, var2 = mean1 + 0.1 * delta, 0.9 * (var1 + 0.1 * delta * delta)
    zero = dict.fromkeys(FEATURES, 0.0)
    return {
        "hand-1": {
            **zero,
            "log_amount": math.log1p(100),
            "no_history": 1.0,
            "distinct_cards_device_1h": 1.0,
            "is_new_customer": 1.0,
            "basket_items": 2.0,
            "night": 1.0,
            "pm_invoice": 1.0,
        },
        "hand-2": {
            **zero,
            "log_amount": math.log1p(50),
            "count_1m": 1.0,
            "count_1h": 1.0,
            "count_24h": 1.0,
            "log_sum_1h": math.log1p(100),
            "log_sum_24h": math.log1p(100),
            "amount_z": (math.log1p(50) - mean1) / math.sqrt(var1 + 0.05),
            "distinct_cards_device_1h": 1.0,
            "new_device": 1.0,
            "new_card": 1.0,
            "is_new_customer_missing": 1.0,
            "billing_shipping_mismatch": 1.0,
            "billing_ip_mismatch": 1.0,
            "basket_items": 1.0,
            "basket_items_missing": 1.0,
            "night": 1.0,
            "pm_card": 1.0,
        },
        "hand-3": {
            **zero,
            "log_amount": math.log1p(200),
            "count_24h": 2.0,
            "log_sum_24h": math.log1p(150),
            "amount_z": (math.log1p(200) - mean2) / math.sqrt(var2 + 0.05),
            "distinct_cards_device_1h": 1.0,
            "new_card": 1.0,
            "is_new_customer_missing": 1.0,
            "shipping_missing": 1.0,
            "ip_missing": 1.0,
            "basket_items": 1.0,
            "basket_items_missing": 1.0,
            "night": 1.0,
            "pm_paypal": 1.0,
        },
    }


def weighted_average_precision(rows: list[tuple[float, float, float]]) -> float:
    """AP over (score, is_fraud, weight): sum over distinct thresholds of (R_k - R_k-1) * P_k."""
    rows = [r for r in rows if r[2] > 0]
    total_positive = sum(w * y for _, y, w in rows)
    ap, tp, fp, last_recall = 0.0, 0.0, 0.0, 0.0
    for threshold in sorted({s for s, _, _ in rows}, reverse=True):
        at = [r for r in rows if r[0] == threshold]
        tp += sum(w * y for _, y, w in at)
        fp += sum(w * (1 - y) for _, y, w in at)
        recall = tp / total_positive
        ap += (recall - last_recall) * (tp / (tp + fp))
        last_recall = recall
    return ap


def interval_oracle(n: int, k: int, missed: float, min_holdout: int) -> dict[str, Any]:
    """Precision (Wilson) and recall (Garwood on k, through k/h / (k/h + missed)) at 95 %, or
    insufficient below ``min_holdout`` flagged holdout rows."""
    names = ("precision", "precision_low", "precision_high", "recall", "recall_low", "recall_high")
    if n < min_holdout:
        return {"insufficient": True, **dict.fromkeys(names)}
    z, p = 1.959963984540054, k / n
    center, half = (p + z * z / (2 * n)), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low_a = chi2.ppf(0.025, 2 * k) / 2 / HOLDOUT if k else 0.0
    high_a = chi2.ppf(0.975, 2 * k + 2) / 2 / HOLDOUT

    def recall(a: float) -> float | None:
        return a / (a + missed) if a + missed > 0 else None

    return {
        "insufficient": False,
        "precision": p,
        "precision_low": (center - half) / (1 + z * z / n),
        "precision_high": (center + half) / (1 + z * z / n),
        "recall": recall(k / HOLDOUT),
        "recall_low": recall(low_a) if missed > 0 or low_a > 0 else None,
        "recall_high": recall(high_a),
    }


def threshold_counts_oracle(outcomes: list[dict[str, Any]], threshold: float) -> tuple[int, int, float]:
    """(flagged holdout rows, of them fraud, fraud among the rows not flagged)."""
    held = [o for o in outcomes if o["score"] >= threshold and o["holdout"]]
    missed = sum(1.0 for o in outcomes if o["score"] < threshold and o["fraud"] and o["decision"] == "allow")
    return len(held), sum(1 for o in held if o["fraud"]), missed


def cohort_oracle(
    outcomes: list[dict[str, Any]], threshold: float, budget: int, min_holdout: int
) -> dict[str, Any]:
    def weight(o: dict[str, Any]) -> float:
        return 1 / HOLDOUT if o["holdout"] else (1.0 if o["decision"] == "allow" else 0.0)

    actual = sum(weight(o) for o in outcomes if o["fraud"])
    n, k, missed = threshold_counts_oracle(outcomes, threshold)
    queue = sorted(outcomes, key=lambda o: (-o["score"], o["transaction_id"]))[:budget]
    # blocked rows in the queue are seen through its holdout rows: at least min_holdout of them
    seen = not any(weight(o) == 0 for o in queue) or sum(o["holdout"] for o in queue) >= min_holdout
    evaluable = [(o["score"], 1.0 if o["fraud"] else 0.0, weight(o)) for o in outcomes]
    positives = [e for e in evaluable if e[2] > 0]
    has_both = any(y for _, y, _ in positives) and not all(y for _, y, _ in positives)
    return {
        "transactions": len(outcomes),
        "labelled": sum(1 for o in outcomes if o["labelled"]),
        "fraud_labelled": sum(1 for o in outcomes if o["fraud"]),
        "holdout_flagged": n,
        **interval_oracle(n, k, missed, min_holdout),
        # the review queue, on what a shop observes (weighted; blocked rows are unseen)
        "precision_at_k": (
            sum(weight(o) for o in queue if o["fraud"]) / sum(weight(o) for o in queue)
            if sum(weight(o) for o in queue) and seen
            else None
        ),
        "recall_at_k": sum(weight(o) for o in queue if o["fraud"]) / actual if actual and seen else None,
        "pr_auc": weighted_average_precision(evaluable) if has_both else None,
    }


@pytest.fixture
def fraud_settings(isolated: Settings) -> Settings:
    fraud = isolated.fraud.model_copy(
        update={
            "holdout_share": HOLDOUT,
            "metrics_interval_s": 2.0,
            "metrics_days": 60,
            "min_holdout_rows": 3,
        }
    )
    return isolated.model_copy(update={"fraud": fraud})


def train_from_archive(settings: Settings, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", "train", "--version", "fraud-it-v2", "--out", str(out),
         "--maturity-days", "3"],
        env={**os.environ, **settings_env(settings)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_scores_features_detection_and_cohort_metrics(fraud_settings: Settings, tmp_path: Path) -> None:
    settings = fraud_settings
    prefixes = load_ip_prefixes(settings.fraud.ip_countries_file)
    generator = TransactionGenerator(
        TransactionProfile(customers=600, mean_gap_ms=20 * DAY / 8000, fraud_share=0.008, missing_share=0.08),
        seed=5,
        start_ms=START,
        ip_prefixes=prefixes,
    )
    scenario = generator.scenario(8000)
    hands = [(tx["customer_id"].encode(), orjson.dumps(tx)) for tx in hand_cases()]
    messages = scenario.transactions + hands
    assert produce(settings.kafka, settings.topics.transactions, messages).failed == 0

    valid = {}
    for _, raw in messages:
        tx = oracle_valid_transaction(raw)
        if tx is not None:
            valid.setdefault(tx["transaction_id"], tx)
    invalid = sum(1 for _, raw in messages if oracle_valid_transaction(raw) is None)
    assert invalid > 0 and any(
        len(orjson.loads(v)) < 14 for _, v in scenario.transactions[:2000] if v[:1] == b"{" and v[-1:] == b"}"
    )

    with running_worker(settings, tmp_path):
        # Labels follow the decisions, as a shop learns them: read from the scores topic, as
        # `streams produce transactions` does, and the same as the archived rows say.
        wait_until(
            lambda: (
                (text := scrape(settings))
                and metric(text, "streams_events_consumed_total", topic=settings.topics.transactions)
                == len(messages)
            ),
            300,
            "every transaction scored",
            interval_s=1,
        )
        version = settings.worker.pipeline_version
        decisions = read_decisions(settings, version, set(scenario.truth), timeout_s=120)
        cluster, session = connect(settings.cassandra, keyspace=settings.cassandra.keyspace)
        try:
            archived = {
                r.transaction_id: (r.decision, r.holdout)
                for r in session.execute("SELECT transaction_id, decision, holdout FROM fraud_transactions")
                if r.transaction_id in scenario.truth
            }
        finally:
            cluster.shutdown()
        assert decisions == archived
        decided_labels = scenario.labels_for(decisions)
        assert produce(settings.kafka, settings.topics.labels, decided_labels).failed == 0
        wait_until(
            lambda: (
                (text := scrape(settings))
                and metric(text, "streams_fraud_labels_joined_total") == len(decided_labels)
            ),
            300,
            "every transaction scored and every label joined",
            interval_s=1,
        )
        final_metrics = scrape(settings)
        cluster, session = connect(settings.cassandra, keyspace=settings.cassandra.keyspace)
        try:

            def cohort_rows() -> list[Any]:
                return list(session.execute("SELECT * FROM fraud_cohort"))

            # Wait until the worker's periodic refresh has seen every label, and a refresh later
            # nothing changed (a refresh writes each day's row, then the 7-day rows it changed).
            seen: list[Any] = []

            def metrics_fresh() -> list[Any] | None:
                rows = list(session.execute("SELECT * FROM fraud_cohort_metrics"))
                values = [{k: v for k, v in r._asdict().items() if k != "computed_at"} for r in rows]
                settled = sum(r.labelled for r in rows) == len(decided_labels) and seen == [values]
                seen[:] = [values]
                return rows if settled else None

            stored_metrics = wait_until(
                metrics_fresh, 60, "cohort metrics covering every label", interval_s=3
            )
            transactions = list(session.execute("SELECT * FROM fraud_transactions"))
            scores = list(session.execute("SELECT transaction_id FROM fraud_scores"))
            cohort = cohort_rows()
        finally:
            cluster.shutdown()

    # Exactly one score per valid transaction (duplicates and malformed ones excluded).
    assert sorted(r.transaction_id for r in transactions) == sorted(valid)
    assert sorted(r.transaction_id for r in scores) == sorted(valid)
    topic = settings.topics.transactions
    assert metric(final_metrics, "streams_events_dead_lettered_total", topic=topic) == invalid

    # Hand-computed features, exactly.
    by_id = {r.transaction_id: r for r in transactions}
    for tx_id, expected in expected_hand_features().items():
        stored = dict(zip(FEATURES, by_id[tx_id].features, strict=True))
        assert stored == pytest.approx(expected, abs=1e-12), tx_id

    # Injected fraud is caught far better than chance (base rate ~1 %).
    truth = scenario.truth
    scored = [
        (r.score, truth[r.transaction_id] != "legit") for r in transactions if r.transaction_id in truth
    ]
    base_rate = sum(y for _, y in scored) / len(scored)
    pr_auc = weighted_average_precision([(s, float(y), 1.0) for s, y in scored])
    flagged = [y for s, y in scored if s >= settings.fraud.disable_invoice_at]
    recall = sum(flagged) / sum(y for _, y in scored)
    print(f"fraud on ground truth: base rate {base_rate:.3%}, PR-AUC {pr_auc:.3f}, recall {recall:.1%}")
    assert pr_auc > 20 * base_rate and pr_auc > 0.5
    assert recall > 0.6

    # Labels (days later in event time) joined to their decisions; cohort metrics equal the oracle.
    labels = {
        orjson.loads(v)["transaction_id"]: orjson.loads(v)
        for vs in read_partitions(settings, settings.topics.labels).values()
        for _, v in vs
    }
    assert {r.transaction_id: r.is_fraud for r in transactions if r.is_fraud is not None} == {
        t: lb["is_fraud"] for t, lb in labels.items()
    }
    days: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in cohort:
        label = labels.get(r.transaction_id)
        days[r.cohort_day].append(
            {
                "transaction_id": r.transaction_id,
                "score": r.score,
                "decision": r.decision,
                "holdout": r.holdout,
                "labelled": label is not None,
                "fraud": bool(label and label["is_fraud"]),
            }
        )
    assert {r.cohort_day for r in stored_metrics} == set(days)
    assert any(r.holdout for r in cohort)
    threshold, budget, least = (
        settings.fraud.disable_invoice_at, settings.fraud.review_budget, settings.fraud.min_holdout_rows
    )  # fmt: skip
    for row in stored_metrics:
        expected = cohort_oracle(days[row.cohort_day], threshold, budget, least)
        actual = {k: getattr(row, k) for k in expected}
        assert actual == pytest.approx(expected, abs=1e-9), row.cohort_day
        # The rolling 7-day cohort: the day and the 6 before it, pooled.
        pooled = [
            threshold_counts_oracle(days[d], threshold) for d in range(row.cohort_day - 6, row.cohort_day + 1)
        ]
        n, k, missed = (sum(c[i] for c in pooled) for i in range(3))
        expected = {f"pooled_{name}": v for name, v in interval_oracle(n, k, missed, least).items()}
        actual = {name: getattr(row, name) for name in expected}
        assert actual == pytest.approx(expected, abs=1e-9), row.cohort_day
        assert row.pooled_holdout_flagged == n and row.computed_at is not None
    verdicts = {r.insufficient for r in stored_metrics} | {r.pooled_insufficient for r in stored_metrics}
    assert verdicts == {True, False}  # the scenario has both kinds of days

    # Ground truth: every transaction's label had the shop allowed it, blocked ones included
    # (`scenario.labels`). The estimates see only the labels of what was decided, the holdout's
    # among them; their 95 % intervals of the rolling 7-day cohorts hold the true precision and
    # recall.
    truth_labels = {
        orjson.loads(v)["transaction_id"]: orjson.loads(v)["is_fraud"] for _, v in scenario.labels
    }

    def truth_of(window: list[dict[str, Any]]) -> tuple[float | None, float | None]:
        flagged = [o for o in window if o["score"] >= threshold]
        fraud = [o for o in window if truth_labels.get(o["transaction_id"], False)]
        caught = sum(1 for o in flagged if truth_labels.get(o["transaction_id"], False))
        return (caught / len(flagged) if flagged else None, caught / len(fraud) if fraud else None)

    covered = []
    for row in stored_metrics:
        if row.pooled_insufficient:
            continue
        window = [o for d in range(row.cohort_day - 6, row.cohort_day + 1) for o in days[d]]
        precision, recall = truth_of(window)
        covered.append(row.pooled_precision_low <= precision <= row.pooled_precision_high)
        covered.append(row.pooled_recall_low <= recall <= row.pooled_recall_high)
        print(f"7 days to {row.cohort_day}: precision {precision:.3f} in [{row.pooled_precision_low:.3f}, "
              f"{row.pooled_precision_high:.3f}], recall {recall:.3f} in [{row.pooled_recall_low:.3f}, "
              f"{row.pooled_recall_high:.3f}] ({row.pooled_holdout_flagged} flagged held out)")  # fmt: skip
    assert len(covered) >= 10 and all(covered)

    # The training loop learns a new version from what this pipeline archived.
    result = train_from_archive(settings, tmp_path / "fraud-it-v2.json")
    assert result.returncode == 0, result.stderr
    trained = FraudModel.load(tmp_path / "fraud-it-v2.json")
    assert trained.version == "fraud-it-v2" and trained.metrics["current"]["version"] == "fraud-lr-v2"
    # holdout rows weighted 1 / h: fewer effective rows than rows
    train_split = trained.metrics["train"]
    assert trained.metrics["weighted"] and train_split["effective_n"] < train_split["n"]
    assert "effective sample size" in result.stdout
    assert trained.metrics["new"]["pr_auc"] > 5 * trained.metrics["new"]["base_rate"]


def streams_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env={**os.environ, **settings_env(settings)}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_produced_labels_follow_the_serving_versions_decisions(isolated: Settings, tmp_path: Path) -> None:
    """`streams produce transactions` (labels 'decided', the default) waits for the decisions of the
    serving version and sends the labels a shop would learn from them."""
    settings = isolated
    count, days, seed = 1500, 3, 8
    produce_args = ("produce", "transactions", "--count", str(count), "--days", str(days),
                    "--start-ms", str(START), "--seed", str(seed))  # fmt: skip
    with running_worker(settings, tmp_path):
        result = streams_cli(settings, *produce_args)
        assert result.returncode == 0, result.stderr
    assert f"following the decisions of {settings.worker.pipeline_version}" in result.stdout

    # The same scenario, regenerated; the decisions as archived in Cassandra.
    generator = TransactionGenerator(
        TransactionProfile(mean_gap_ms=days * DAY / count), seed=seed, start_ms=START,
        ip_prefixes=load_ip_prefixes(settings.fraud.ip_countries_file),
    )  # fmt: skip
    scenario = generator.scenario(count)
    cluster, session = connect(settings.cassandra, keyspace=settings.cassandra.keyspace)
    try:
        rows = list(session.execute("SELECT transaction_id, decision, holdout FROM fraud_transactions"))
    finally:
        cluster.shutdown()
    decisions = {r.transaction_id: (r.decision, r.holdout) for r in rows}
    assert decisions.keys() == scenario.truth.keys()
    sent = [v for vs in read_partitions(settings, settings.topics.labels).values() for _, v in vs]
    assert sorted(sent) == sorted(v for _, v in scenario.labels_for(decisions))

    labels = {orjson.loads(v)["transaction_id"]: orjson.loads(v) for v in sent}
    outcomes = {o.transaction_id: o for o in scenario.outcomes}
    blocked_invoices = [
        t for t, (decision, holdout) in decisions.items()
        if decision == "disable_invoice" and not holdout and outcomes[t].payment_method == "invoice"
    ]  # fmt: skip
    reviewed = {t for t, (decision, holdout) in decisions.items() if decision == "review" and not holdout}
    assert blocked_invoices and reviewed  # both kinds of decisions were made
    assert all(labels[t]["source"] != "unpaid_invoice" for t in blocked_invoices if t in labels)
    assert {t for t, lb in labels.items() if lb["source"] == "manual_review"} == reviewed
    assert all(labels[t]["is_fraud"] == (scenario.truth[t] != "legit") for t in reviewed)

    # Decisions that never come: one clear line once the wait is over.
    missing = streams_cli(settings, *produce_args[:-1], "9", "--version", "nosuch", "--decision-timeout", "3")
    assert missing.returncode == 1
    assert "have no decision of nosuch after 3 s" in missing.stderr, missing.stderr
