"""Priors learned in event time: what they read, that they recover a known truth, and that batch
boundaries, snapshots and replays never change them. Checked against the restatement the e2e
oracle uses (`tests/integration/prior_oracle.py`)."""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import msgspec
import numpy as np
import pytest

from streams.compose import compose
from streams.ctr.events import AdEvent
from streams.ctr.generator import ClickstreamGenerator
from streams.ctr.learning import LEARNED_CAMPAIGN, PriorLearning, _spread_share, learn
from streams.ctr.processor import CtrProcessor
from streams.ctr.smoothing import BetaPrior, PriorSet
from streams.ctr.state import PartitionState
from streams.settings import Settings
from tests.integration.ctr_oracle import CTR_WINDOWS, PROFILE, START, ctr_oracle, oracle_valid
from tests.integration.prior_oracle import PriorOracle

SETTINGS = Settings(ctr=CTR_WINDOWS)  # 1 min hopping windows, refit every minute over 3 minutes
PARTITIONS = 3
IMPRESSIONS = 36_000  # at 100/s: 6 minutes, so 4 epochs learn


def partitioned(seed: int = 3) -> dict[int, list[tuple[int, dict[str, Any] | str]]]:
    """The generator's messages judged by the oracle's own validity rules, per partition in order."""
    generator = ClickstreamGenerator(PROFILE, seed=seed, start_ms=START, rate=100)
    partitions: dict[int, list[tuple[int, dict[str, Any] | str]]] = {p: [] for p in range(PARTITIONS)}
    for key, value in generator.messages(IMPRESSIONS):
        events = partitions[zlib.crc32(key) % PARTITIONS]
        events.append((len(events), oracle_valid(value)))
    return partitions


def processor(priors: PriorSet | None = None) -> CtrProcessor:
    c = compose(SETTINGS).ctr
    return CtrProcessor(c.config, priors or c.priors, "v1", ci_level=c.ci_level, cell_policy=c.cell_policy)


def batches(partitions: dict[int, list[tuple[int, Any]]], size: int) -> Iterator[tuple[int, list[AdEvent]]]:
    """The valid events of each partition in batches of ``size`` messages, partitions interleaved."""
    longest = max(len(events) for events in partitions.values())
    for begin in range(0, longest, size):
        for partition, events in partitions.items():
            chunk = [
                msgspec.convert(e, AdEvent) for _, e in events[begin : begin + size] if isinstance(e, dict)
            ]
            if chunk:
                yield partition, chunk


def run(size: int, restore_after: int | None = None) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Every ad and cell row as last written; ``restore_after``: that many batches, then the states
    go through a snapshot's encoding into a fresh processor that goes on."""
    p, rows = processor(), {}
    for i, (partition, events) in enumerate(batches(partitioned(), size)):
        if i == restore_after:
            fresh = processor()
            fresh.states = {
                k: msgspec.msgpack.decode(msgspec.msgpack.encode(s), type=PartitionState)
                for k, s in p.states.items()
            }
            p = fresh
        p.apply_batch(events, partition)
        drained = p.drain()
        for r in drained.ads:
            rows["ad", r["window"], r["ad_id"], r["window_start"]] = r
        for r in drained.cells:
            rows["cell", r["window"], r["segment"], r["ad_id"], r["window_start"]] = r
    return rows


def test_every_row_takes_the_prior_the_restated_rule_gives() -> None:
    partitions = partitioned()
    expected = ctr_oracle(partitions)
    learned = PriorOracle(SETTINGS.ctr, vars(expected))
    rows = run(500)
    levels: Counter[str] = Counter()
    for key, r in rows.items():
        if key[0] != "ad":
            continue
        campaign, fallback = learned.learned(r["ad_id"], r["campaign_id"], r["window_start"])
        want = campaign or fallback or (1.0, 332.3, "default")
        got = (r["prior_alpha"], r["prior_beta"], r["prior_level"])
        assert got[2] == want[2] and got[:2] == pytest.approx(want[:2], rel=1e-9), (key, got, want)
        levels[r["prior_level"]] += 1
    assert levels["learned_campaign"] > 1000 and levels["default"] > 1000, levels
    versions = {r["prior_version"] for r in rows.values() if r["prior_level"] == LEARNED_CAMPAIGN}
    assert "learned@2023-11-14T22:15Z/p0" in versions and len(versions) >= 3 * PARTITIONS  # 4 epochs


def test_batch_boundaries_and_a_snapshot_change_no_row() -> None:
    reference = run(5000)
    assert run(97) == reference
    assert run(300, restore_after=40) == reference


def test_a_fit_reads_only_the_windows_that_closed_in_its_history() -> None:
    rule = PriorLearning("1h", 3_600_000, refit_ms=3_600_000, history_ms=3 * 3_600_000, min_impressions=10)
    epoch = 10 * 3_600_000
    rng = np.random.default_rng(5)
    inside = [
        (epoch - 3_600_000 * h, f"c{c}", f"ad{c}-{a}", 500, int(rng.binomial(500, 0.01 * (c + 1))))
        for h in range(3) for c in range(4) for a in range(5)
    ]  # fmt: skip
    fitted = learn(inside, epoch, rule, "v")
    edges = [(epoch - 3 * 3_600_000, "c0", "ad0-0", 500, 400), (epoch + 1, "c0", "ad0-0", 500, 400)]
    assert learn(inside + edges, epoch, rule, "v") == fitted  # at the history's start, or after
    assert learn([*inside, (epoch, "c0", "ad0-0", 500, 400)], epoch, rule, "v") != fitted
    assert set(fitted.campaigns) == {"c0", "c1", "c2", "c3"} and fitted.global_ is not None
    means = [fitted.campaigns[f"c{c}"].mean for c in range(4)]
    assert means == sorted(means)  # the campaigns' levels, in order


@pytest.mark.parametrize(("concentration", "margin"), [(100.0, 0.35), (400.0, 0.1), (2000.0, 0.25)])
def test_the_pooled_spread_recovers_the_concentration(concentration: float, margin: float) -> None:
    """40 campaigns of 5 ads with heavy-tailed traffic around levels 50x apart, 20 seeded draws:
    the median estimate is near the truth (a skewed Beta, alpha < 1 at the lowest levels, is
    overestimated the most; a strong one is hard to tell from binomial noise)."""
    estimates = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        groups = []
        for level in np.geomspace(0.002, 0.1, 40):
            p = rng.beta(level * concentration, (1 - level) * concentration, size=5)
            n = np.maximum((rng.pareto(1.1, size=5) + 1) * 300, 20).astype(int)
            groups.append([(int(k), int(c)) for k, c in zip(n, rng.binomial(n, p), strict=True)])
        x = _spread_share(groups)
        estimates.append(1 / x - 1 if x else np.inf)
    assert float(np.median(estimates)) == pytest.approx(concentration, rel=margin)


def test_no_spread_beyond_the_noise_learns_no_concentration() -> None:
    rng = np.random.default_rng(2)
    groups = [[(1000, int(rng.binomial(1000, 0.02))) for _ in range(5)] for _ in range(20)]
    assert _spread_share(groups) is None
    assert _spread_share([[(100, 0), (100, 0)]]) is None  # no clicks: no information


def test_learned_priors_come_first_then_the_file() -> None:
    file_campaign = BetaPrior(2.0, 98.0, "campaign", "file-1")
    priors = PriorSet(
        "file-1", BetaPrior(1.0, 332.3, "default", "file-1"), campaigns={"never-seen": file_campaign}
    )
    p = processor(priors)
    for partition, events in batches(partitioned(), 2000):
        p.apply_batch(events, partition)
        p.drain()
    late = START + 4 * 60_000  # the epoch that starts 4 minutes in
    campaign = sorted(set(p.states[0].campaign_of.values()))[0]
    assert p.prior_for(0, late, campaign).level == "learned_campaign"
    assert p.prior_for(0, late, "never-seen") is file_campaign  # not learned here: the file's
    assert p.prior_for(0, late, "other").level == "learned_global"  # neither: the learned global
    assert p.prior_for(0, START, "other").level == "default"  # nothing learned yet: the file's default


def test_the_kept_final_windows_span_the_history_and_no_more() -> None:
    p = processor()
    for partition, events in batches(partitioned(), 1000):
        p.apply_batch(events, partition)
        p.drain()
    learning = compose(SETTINGS).ctr.config.learning
    assert learning is not None
    for state in p.states.values():
        closes = [final[0] for final in state.finals]
        # history + the longest window + grace + one refit interval of slack
        assert max(closes) - min(closes) <= learning.history_ms + 60_000 + 5_000 + learning.refit_ms
        assert len(closes) > 0
