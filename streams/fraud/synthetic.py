"""Training data from the synthetic generator, featurised by the same code the worker runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from streams.fraud.features import FeatureState, compute, update
from streams.fraud.generator import TransactionGenerator, TransactionProfile
from streams.fraud.model import as_matrix
from streams.fraud.training import TrainingData


def load_ip_prefixes(path: Path) -> dict[str, str]:
    return ip_prefixes_from_bytes(path.read_bytes())


def ip_prefixes_from_bytes(content: bytes) -> dict[str, str]:
    """The pinned prefix table's content: first IPv4 octet -> country (KeyError/ValueError if not)."""
    prefixes = json.loads(content)["prefixes"]
    if not isinstance(prefixes, dict) or not all(isinstance(v, str) for v in prefixes.values()):
        raise ValueError("'prefixes' must map each first octet to a country code")
    return dict(prefixes)


# The demo's traffic (`streams demo`, `streams produce transactions`: 20,000 transactions over 14
# days): a model trained on denser traffic sees counts per hour and day it never meets live, and
# its drift inspector fires for ever (count_24h averaged 62.9 in training against 2.5 live).
DEMO_GAP_MS = 14 * 86_400_000 / 20_000


def synthetic_training_data(
    prefixes: dict[str, str], *, seed: int, transactions: int, start_ms: int,
    mean_gap_ms: float = DEMO_GAP_MS, ring_shares: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> TrainingData:  # fmt: skip
    """Features of a generated history (one state, in arrival order), labelled by the ground truth;
    transactions ``mean_gap_ms`` apart on average (the demo's traffic by default), with fraud
    rings if ``ring_shares`` says so (`fraud.rings`)."""
    profile = TransactionProfile(mean_gap_ms=mean_gap_ms, ring_shares=ring_shares)
    scenario = TransactionGenerator(profile, seed=seed, start_ms=start_ms, ip_prefixes=prefixes).scenario(
        transactions
    )
    state = FeatureState()
    rows, labels, times = [], [], []
    for _, tx in scenario.valid_events():
        rows.append(compute(state, tx, prefixes))
        update(state, tx)
        labels.append(scenario.truth[tx["transaction_id"]] != "legit")
        times.append(tx["ts"])
    return TrainingData(as_matrix(rows), np.array(labels, dtype=float), np.array(times, dtype=np.int64))
