"""A model of entity features (`streams train --entities`, `deploy/models/fraud-lr-v3.json`): what
it is trained on, and that `streams evaluate` scores it on the rows a worker with an exact entity
stage would give it, checked against the pipeline's processor and a brute-force entity oracle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from streams.cli import app
from streams.cli.transactions import RING_SHARES
from streams.fraud.decision import DecisionPolicy
from streams.fraud.detection import scores_of
from streams.fraud.entities import ENTITY_FEATURES
from streams.fraud.features import FEATURES
from streams.fraud.generator import Scenario
from streams.fraud.model import FraudModel
from streams.fraud.processor import FraudProcessor
from streams.fraud.synthetic import generated, load_ip_prefixes
from streams.settings import load_settings
from tests.unit.test_fraud_entities import oracle

MODELS = Path(__file__).resolve().parents[2] / "deploy" / "models"
V3_COMMAND = (
    "streams train --version fraud-lr-v3 --out deploy/models/fraud-lr-v3.json --synthetic "
    "--transactions 120000 --seed 1001 --rings --entities --fraud-weight 10"
)


@pytest.fixture(scope="module")
def prefixes() -> dict[str, str]:
    return load_ip_prefixes(load_settings().fraud.ip_countries_file)


@pytest.fixture(scope="module")
def scenario(prefixes: dict[str, str]) -> Scenario:
    """Two days of the demo's traffic with rings ten times as frequent (enough ring transactions)."""
    shares = (RING_SHARES[0] * 10, RING_SHARES[1] * 10, RING_SHARES[2] * 10)
    return generated(prefixes, seed=7, transactions=3000, start_ms=1_767_225_600_000, ring_shares=shares)


def test_the_shipped_v3_is_a_model_of_both_feature_sets_with_its_command() -> None:
    model = FraudModel.load(MODELS / "fraud-lr-v3.json")
    assert model.version == "fraud-lr-v3"
    assert model.features == FEATURES + ENTITY_FEATURES
    assert len(model.coef) == len(model.mean) == len(model.scale) == len(FEATURES + ENTITY_FEATURES)
    assert model.metrics["command"] == V3_COMMAND
    assert model.metrics["current"]["version"] == "fraud-lr-v2" and model.metrics["fraud_weight"] == 10.0
    assert "command" not in FraudModel.load(MODELS / "fraud-lr-v2.json").metrics  # unchanged


def test_training_with_entities_gives_a_model_of_both_feature_sets(tmp_path: Path) -> None:
    path, made = tmp_path / "model.json", []
    for _ in range(2):
        result = CliRunner().invoke(
            app,
            ["train", "--version", "it-v3", "--out", str(path), "--synthetic", "--transactions", "4000",
             "--seed", "5", "--rings", "--entities", "--fraud-weight", "10"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        made.append(path.read_bytes())
        path.unlink()
    assert made[0] == made[1]  # the same command, the same file
    path.write_bytes(made[0])
    model = FraudModel.load(path)
    assert model.features == FEATURES + ENTITY_FEATURES
    assert set(model.reference) == set(FEATURES + ENTITY_FEATURES)
    assert model.metrics["command"].endswith("--seed 5 --rings --entities --fraud-weight 10")
    assert model.metrics["current"]["version"] == load_settings().fraud.model_file.stem  # its own rows


def test_entities_without_synthetic_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streams", "train", "--version", "x", "--out", str(tmp_path / "x.json"),
         "--entities"],
        capture_output=True, text=True, env=dict(os.environ), timeout=60,
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert lines[0].startswith("streams: error: --entities needs --synthetic")


def processor_rows(
    model: FraudModel, prefixes: dict[str, str], scenario: Scenario, partitions: int
) -> dict[str, dict[str, Any]]:
    """The pipeline's processor over the traffic spread across partitions: each transaction's row
    (score and partition-local features)."""
    by_partition: dict[int, list[tuple[dict[str, Any], int]]] = defaultdict(list)
    for key, tx in scenario.valid_events():
        by_partition[zlib.crc32(key) % partitions].append((tx, zlib.crc32(key) % partitions))
    processor = FraudProcessor(model, DecisionPolicy(), prefixes, "test")
    rows = {}
    for partition in sorted(by_partition):
        for row in processor.process(by_partition[partition], []).transactions:
            rows[row["transaction_id"]] = row
    return rows


def test_evaluate_scores_an_entity_model_on_processor_rows_and_exact_entity_features(
    prefixes: dict[str, str], scenario: Scenario
) -> None:
    v2, v3 = (FraudModel.load(MODELS / f"fraud-lr-v{n}.json") for n in (2, 3))
    v2_scores, v3_scores = scores_of([v2, v3], prefixes, scenario, 3)
    rows = processor_rows(v2, prefixes, scenario, 3)
    assert set(v3_scores) == set(v2_scores) == set(rows)
    for tx_id, row in rows.items():  # the partition-local model: as the processor scores it
        assert v2_scores[tx_id] == pytest.approx(row["score"], rel=1e-12, abs=1e-15)
    txs = [tx for _, tx in scenario.valid_events()]
    rings = [
        tx
        for tx in txs
        if scenario.truth[tx["transaction_id"]] in ("device_farm", "shared_card", "reshipping")
    ]
    sample = rings[::3] + txs[::150]
    assert len(rings) > 30 and len(sample) > 40
    for tx in sample:
        entities = oracle(txs, tx)
        x = np.array([rows[tx["transaction_id"]]["features"] + [entities[name] for name in ENTITY_FEATURES]])
        assert v3_scores[tx["transaction_id"]] == pytest.approx(float(v3.score(x)[0][0]), rel=1e-9)
    seen = [oracle(txs, tx) for tx in rings[::3]]
    assert any(f["device_customers_1h"] > 0 for f in seen) and any(
        f["address_customers_24h"] > 0 for f in seen
    )


def test_evaluate_compares_an_entity_model_with_the_shipped_one() -> None:
    result = CliRunner().invoke(
        app,
        ["evaluate", "--model", str(MODELS / "fraud-lr-v2.json"), "--model", str(MODELS / "fraud-lr-v3.json"),
         "--transactions", "3000", "--days", "2", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [m["model"] for m in report["models"]] == ["fraud-lr-v2", "fraud-lr-v3"]
    for compared in report["models"]:
        patterns = {p["pattern"]: p for p in compared["patterns"]}
        assert {"device_farm", "legit"} <= set(patterns) and 0.0 <= compared["flagged"] <= 1.0
        assert patterns["legit"]["pr_auc"] is None and patterns["device_farm"]["pr_auc"] is not None
    table = CliRunner().invoke(
        app,
        ["evaluate", "--model", str(MODELS / "fraud-lr-v2.json"), "--model", str(MODELS / "fraud-lr-v3.json"),
         "--transactions", "3000", "--days", "2"],
    )  # fmt: skip
    assert table.exit_code == 0 and "fraud-lr-v3" in table.output and "PR-AUC" in table.output


def test_the_drift_inspector_bins_the_entity_features_at_the_reference_edges() -> None:
    from streams.fraud.model import LiveHistograms, season_buckets

    model = FraudModel.load(Path(__file__).resolve().parents[2] / "deploy" / "models" / "fraud-lr-v3.json")
    rows = np.zeros((3, len(model.features)))
    column = model.features.index("device_customers_24h")
    rows[:, column] = [0.0, np.log1p(3), np.log1p(40)]
    ts = [1_767_225_600_000] * 3
    live = LiveHistograms(model)
    live.add(rows, ts)
    bucket = int(season_buckets(np.array(ts, dtype=np.int64))[0])
    counts = live.counts()[("device_customers_24h", bucket)]
    edges = np.asarray(model.reference["device_customers_24h"]["edges"], dtype=float)
    expected = np.bincount(np.searchsorted(edges, rows[:, column], side="right"), minlength=len(edges) + 1)
    assert counts == expected.tolist() and sum(counts) == 3
