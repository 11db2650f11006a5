"""Detection per pattern (`fraud.detection`, `streams evaluate`): hand-computed shares and PR-AUC,
and the command on generated traffic with rings."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from streams.cli import app
from streams.fraud.decision import DecisionPolicy
from streams.fraud.detection import detection


def test_shares_and_pr_auc_by_hand() -> None:
    policy = DecisionPolicy(disable_invoice_at=0.3, review_at=0.7)
    scores = {"f1": 0.9, "f2": 0.5, "f3": 0.1, "g1": 0.8, "l1": 0.6, "l2": 0.2, "l3": 0.05, "l4": 0.01}
    truth = {"f1": "farm", "f2": "farm", "f3": "farm", "g1": "spike", "l1": "legit", "l2": "legit",
             "l3": "legit", "l4": "legit"}  # fmt: skip
    farm, spike, legit = detection(scores, truth, policy)
    assert (farm.pattern, farm.transactions, farm.flagged, farm.reviewed) == ("farm", 3, 2 / 3, 1 / 3)
    # ranked: f1 .9 (tp), l1 .6 (fp), f2 .5 (tp), l2 .2, f3 .1 (tp), ...: AP = (1 + 2/3 + 3/5) / 3
    assert farm.pr_auc == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    assert (spike.flagged, spike.reviewed, spike.pr_auc) == (1.0, 1.0, 1.0)
    assert (legit.pattern, legit.transactions, legit.flagged, legit.reviewed, legit.pr_auc) == (
        "legit", 4, 0.25, 0.0, None,
    )  # fmt: skip


def test_the_command_reports_every_pattern_rings_included() -> None:
    result = CliRunner().invoke(app, ["evaluate", "--json"])  # 20,000 over 14 days
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [m["model"] for m in report["models"]] == ["fraud-lr-v2"]
    patterns = {row["pattern"]: row for row in report["models"][0]["patterns"]}
    assert {"device_farm", "shared_card", "reshipping", "card_testing", "legit"} <= set(patterns)
    assert patterns["legit"]["transactions"] > 19_000 and patterns["legit"]["pr_auc"] is None
    assert report["partitions"] >= 1 and report["transactions"] >= 20_000


def test_the_entity_study_compares_both_feature_sets_on_a_held_out_period() -> None:
    result = CliRunner().invoke(app, ["entity-study", "--train", "6000", "--test", "3000", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report) == {"partition-local features", "with entity features"}
    for name, found in report.items():
        legit = next(p for p in found["patterns"] if p["pattern"] == "legit")
        assert legit["flagged"] <= 0.011, name  # read at 1 % false positives of the test period
        assert 0.0 < found["threshold"] < 1.0
