"""Training data from the synthetic generator, featurised by the same code the worker runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from streams.fraud.entities import ENTITY_FEATURES
from streams.fraud.features import FEATURES
from streams.fraud.generator import Scenario, TransactionGenerator, TransactionProfile
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


def generated(
    prefixes: dict[str, str], *, seed: int, transactions: int, start_ms: int,
    mean_gap_ms: float = DEMO_GAP_MS, ring_shares: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> Scenario:  # fmt: skip
    """A generated history: ``transactions`` ``mean_gap_ms`` apart on average (the demo's traffic
    by default), with fraud rings if ``ring_shares`` says so (`fraud.rings`)."""
    profile = TransactionProfile(mean_gap_ms=mean_gap_ms, ring_shares=ring_shares)
    generator = TransactionGenerator(profile, seed=seed, start_ms=start_ms, ip_prefixes=prefixes)
    return generator.scenario(transactions)


def synthetic_training_data(
    prefixes: dict[str, str], *, seed: int, transactions: int, start_ms: int,
    mean_gap_ms: float = DEMO_GAP_MS, ring_shares: tuple[float, float, float] = (0.0, 0.0, 0.0),
    entities: bool = False,
) -> TrainingData:  # fmt: skip
    """Features of a `generated` history (one customer state, in arrival order), labelled by the
    ground truth; with ``entities``, each row is followed by the transaction's entity features
    (`detection.entity_rows`)."""
    from streams.fraud.detection import study_data

    scenario = generated(
        prefixes, seed=seed, transactions=transactions, start_ms=start_ms, mean_gap_ms=mean_gap_ms,
        ring_shares=ring_shares,
    )  # fmt: skip
    study = study_data(scenario, prefixes, entities=entities)
    labels = np.array([pattern != "legit" for pattern in study.patterns], dtype=float)
    if not entities:
        return TrainingData(study.x, labels, study.ts)
    return TrainingData(
        np.hstack([study.x, study.entities]), labels, study.ts, None, FEATURES + ENTITY_FEATURES
    )
