from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.fraud.decision import ALLOW, DISABLE_INVOICE, REVIEW, DecisionPolicy, decide, holdout_draw
from streams.fraud.evaluation import ScoredOutcome, cohort_metrics, psi, season_bucket
from streams.fraud.features import FEATURES, FeatureState, compute, update
from streams.fraud.model import FraudModel, as_matrix
from streams.settings import load_settings

PREFIXES = {"31": "DE", "105": "NG"}
BASE = {"customer_id": "c", "currency": "EUR", "payment_method": "invoice", "billing_country": "DE"}


def tx(i: int, ts: int, amount: float, **extra: object) -> dict[str, object]:
    return {**BASE, "transaction_id": f"t{i}", "ts": ts, "amount": amount, **extra}


def test_a_transaction_never_leaks_into_its_own_features() -> None:
    state = FeatureState()
    first = compute(state, tx(1, 1_000_000, 80.0), PREFIXES)
    assert first["count_24h"] == 0 and first["no_history"] == 1.0 and first["amount_z"] == 0.0
    update(state, tx(1, 1_000_000, 80.0))
    again = compute(state, tx(2, 1_000_500, 80.0), PREFIXES)
    assert again["count_1m"] == 1.0 and again["no_history"] == 0.0


@given(st.lists(st.floats(1, 5000), min_size=1, max_size=30))
def test_missing_optional_fields_are_imputed_and_flagged(amounts: list[float]) -> None:
    state = FeatureState()
    for i, amount in enumerate(amounts):
        features = compute(state, tx(i, 1_000_000 + i * 1000, amount), PREFIXES)
        assert set(features) == set(FEATURES)
        assert features["device_missing"] == features["card_missing"] == features["ip_missing"] == 1.0
        assert features["basket_items"] == 1.0 and features["basket_items_missing"] == 1.0
        assert all(np.isfinite(v) for v in features.values())
        update(state, tx(i, 1_000_000 + i * 1000, amount))


def test_decisions_follow_thresholds_and_the_holdout_is_deterministic() -> None:
    policy = DecisionPolicy(disable_invoice_at=0.3, review_at=0.7, holdout_share=0.1)
    assert decide("a", 0.1, policy) == (ALLOW, False)
    risky = [decide(f"t{i}", 0.5, policy) for i in range(5000)]
    assert {d for d, h in risky if not h} == {DISABLE_INVOICE}
    assert all(d == ALLOW for d, h in risky if h)
    assert 0.08 < sum(h for _, h in risky) / len(risky) < 0.12
    assert risky == [decide(f"t{i}", 0.5, policy) for i in range(5000)]  # replays agree
    assert decide("x", 0.9, DecisionPolicy(holdout_share=1e-9)) == (REVIEW, False)
    assert holdout_draw("t1", "s1") != holdout_draw("t1", "s2")


def test_cohort_metrics_weight_the_holdout_and_ignore_blocked_transactions() -> None:
    policy = DecisionPolicy(disable_invoice_at=0.5, holdout_share=0.5)
    outcomes = [
        ScoredOutcome("a", 0.9, ALLOW, True, True),  # holdout fraud: weight 2
        ScoredOutcome("b", 0.9, DISABLE_INVOICE, False, None),  # blocked: not evaluable
        ScoredOutcome("c", 0.1, ALLOW, False, True),  # missed fraud
        ScoredOutcome("d", 0.2, ALLOW, False, None),  # unlabelled: legitimate
    ]
    m = cohort_metrics(outcomes, policy, review_budget=3, min_holdout=1)
    assert m["precision"] == 1.0
    assert m["recall"] == pytest.approx(2 / 3)
    # The review queue is a (weight 2, fraud), b (blocked: unseen), d (weight 1): 2 of 3 by weight;
    # it holds 2 of the day's 3 (weighted) fraud (a 2, c 1).
    assert m["precision_at_k"] == pytest.approx(2 / 3)
    assert m["recall_at_k"] == pytest.approx(2 / 3)
    assert m["labelled"] == 2 and m["fraud_labelled"] == 2 and m["holdout"] == 1


def test_psi_is_zero_for_equal_distributions_and_grows_with_shift() -> None:
    assert psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0)
    assert psi([10, 20, 30], [30, 20, 10]) > psi([10, 20, 30], [12, 20, 28]) > 0
    assert {season_bucket(1_767_225_600_000 + h * 3_600_000) for h in range(168)} == set(range(8))


def test_the_pinned_model_scores_and_explains(tmp_path: Path) -> None:
    model = FraudModel.load(load_settings().fraud.model_file)
    state = FeatureState()
    x = as_matrix(
        [compute(state, tx(1, 1_000_000, 50.0, device_id="d", card_id="k", ip="31.0.0.1"), PREFIXES)]
    )
    score, contributions = model.score(x)
    assert 0 <= score[0] <= 1
    assert all(name in FEATURES for name in model.reasons(contributions)[0])
    stale = json.loads(load_settings().fraud.model_file.read_text())
    stale["features"] = stale["features"][:-1]
    (tmp_path / "stale.json").write_text(json.dumps(stale))
    with pytest.raises(ValueError, match="retrain"):
        FraudModel.load(tmp_path / "stale.json")


def test_training_splits_by_time_calibrates_and_reports(tmp_path: Path) -> None:
    from streams.fraud.synthetic import load_ip_prefixes, synthetic_training_data
    from streams.fraud.training import train

    settings = load_settings()
    data = synthetic_training_data(
        load_ip_prefixes(settings.fraud.ip_countries_file),
        seed=3,
        transactions=30_000,
        start_ms=1_764_547_200_000,
    )
    current = FraudModel.load(settings.fraud.model_file)
    model, report = train(data, "test-v2", threshold=0.3, current=current)
    assert report["train"]["to_ts"] < report["test"]["from_ts"]  # the test split is the newest
    assert report["new"]["pr_auc"] > 10 * report["new"]["base_rate"]
    assert report["current"]["version"] == current.version
    assert set(model.reference) == set(FEATURES)
    path = tmp_path / "model.json"
    path.write_text(model.to_json())
    again = FraudModel.load(path)
    x = data.x[:100]
    assert np.allclose(again.score(x)[0], model.score(x)[0])
    with pytest.raises(ValueError, match="not enough"):
        train(type(data)(data.x[:100], data.y[:100], data.ts[:100]), "tiny", threshold=0.3)


def test_weighted_rows_count_as_many_rows_in_the_fit_and_the_report() -> None:
    from streams.fraud.training import TrainingData, effective_size, evaluate, train

    assert effective_size(np.ones(4)) == 4.0
    assert effective_size(np.array([20.0, 1.0, 1.0])) == pytest.approx(22 * 22 / 402)
    # A model whose score is sigmoid(first feature): scores 0.88, 0.73, 0.27, 0.12.
    coef = np.zeros(len(FEATURES))
    coef[0] = 1.0
    model = FraudModel("m", FEATURES, np.zeros(len(FEATURES)), np.ones(len(FEATURES)), coef, 0.0, (1.0, 0.0))
    x = np.zeros((4, len(FEATURES)))
    x[:, 0] = [2.0, 1.0, -1.0, -2.0]
    y = np.array([1.0, 0.0, 1.0, 0.0])
    plain = evaluate(model, x, y, threshold=0.5)
    assert (plain["recall_at_threshold"], plain["precision_at_threshold"]) == (0.5, 0.5)
    # The flagged fraud is a holdout row standing for 20: recall 20 / 21, precision 20 / 21.
    weighted = evaluate(model, x, y, threshold=0.5, weight=np.array([20.0, 1.0, 1.0, 1.0]))
    assert weighted["recall_at_threshold"] == pytest.approx(20 / 21)
    assert weighted["precision_at_threshold"] == pytest.approx(20 / 21)
    assert weighted["base_rate"] == pytest.approx(21 / 23)
    # The weights reach the fit: every 7th row counted twice moves the coefficients.
    rng = np.random.default_rng(5)
    n = 1200
    xs = rng.normal(size=(n, len(FEATURES)))
    ys = (rng.random(n) < 1 / (1 + np.exp(-(xs[:, 0] * 2 - 2)))).astype(float)
    ts = np.arange(n, dtype=np.int64)
    twice = np.where(np.arange(n) % 7 == 0, 2.0, 1.0)
    weighted_model, report = train(TrainingData(xs, ys, ts, twice), "w", threshold=0.3)
    assert report["weighted"] and report["train"]["effective_n"] < report["train"]["n"]
    plain_model, plain_report = train(TrainingData(xs, ys, ts), "u", threshold=0.3)
    assert not plain_report["weighted"] and plain_report["train"]["effective_n"] == plain_report["train"]["n"]
    assert not np.allclose(weighted_model.coef, plain_model.coef)
