"""The composition root: every cross-field rule is one line naming the setting, the pins are those
versions have always had, and each pinned file is read once (what is hashed is what is parsed)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streams import lifecycle
from streams.compose import MAX_TTL_S, compose
from streams.ctr.learning import PriorLearning
from streams.ctr.processor import CellPolicy
from streams.ctr.smoothing import BetaPrior, PriorSet
from streams.ctr.state import CtrConfig
from streams.ctr.windows import WindowSpec
from streams.errors import ConfigError
from streams.fraud.decision import DecisionPolicy
from streams.fraud.model import FraudModel
from streams.fraud.synthetic import load_ip_prefixes
from streams.settings import Settings
from streams.versions import pinned_params

DEFAULTS = Settings()
DEPLOY = DEFAULTS.deploy_dir


def with_ctr(**changes: Any) -> Settings:
    return DEFAULTS.model_copy(update={"ctr": DEFAULTS.ctr.model_copy(update=changes)})


def with_fraud(**changes: Any) -> Settings:
    return DEFAULTS.model_copy(update={"fraud": DEFAULTS.fraud.model_copy(update=changes)})


def refused(settings: Settings) -> str:
    with pytest.raises(ConfigError) as caught:
        compose(settings)
    message = str(caught.value)
    assert "\n" not in message
    return message


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_default_pins_are_the_ones_registered_versions_carry() -> None:
    prior = DEPLOY / "priors" / "ctr-default.json"
    model = DEPLOY / "models" / "fraud-lr-v2.json"
    ip_countries = DEPLOY / "fraud" / "ip-countries-v1.json"
    expected = {
        "partitions": 4,
        "sources": {"ad_events": "ad-events", "transactions": "transactions", "labels": "labels"},
        "ctr": {
            "tumbling": "1m", "hopping": "1h", "hop_every": "5m", "grace": "1m", "dedupe_horizon": "10m",
            "ci_level": 0.95, "min_cell_impressions": 1000, "min_ad_impressions": 1000,
            "backoff_strength": 500.0, "ttl_s": 0,
            "click_attribution": "impression", "prior_learning": True, "prior_refit_every": "1h",
            "prior_history": "24h", "prior_min_impressions": 50, "prior_min_ads": 1,
            "prior": {"file": "ctr-default.json", "sha256": sha256_of(prior)},
        },
        "fraud": {
            "disable_invoice_at": 0.3, "review_at": 0.7, "holdout_share": 0.05, "review_budget": 50,
            "label_horizon_days": 90, "dedupe_horizon_hours": 24, "history_horizon_days": 30,
            "model": {"file": "fraud-lr-v2.json", "sha256": sha256_of(model)},
            "ip_countries": {"file": "ip-countries-v1.json", "sha256": sha256_of(ip_countries)},
        },
    }  # fmt: skip
    composition = compose(DEFAULTS)
    assert json.dumps(composition.pins, sort_keys=True) == json.dumps(expected, sort_keys=True)
    assert pinned_params(DEFAULTS) == expected
    assert composition.version == "v1" and composition.settings is DEFAULTS


def test_default_parameters_are_typed_and_complete() -> None:
    composition = compose(DEFAULTS)
    ctr, fraud = composition.ctr, composition.fraud
    assert ctr.config == CtrConfig(
        windows=(WindowSpec("1m", 60_000, 60_000), WindowSpec("1h", 3_600_000, 300_000)),
        cell_window="1h",
        grace_ms=60_000,
        dedupe_horizon_ms=600_000,
        learning=PriorLearning("1h", 3_600_000, 3_600_000, 86_400_000, min_impressions=50, min_ads=1),
        attribute_clicks=True,
    )
    assert compose(with_ctr(prior_learning=False)).ctr.config.learning is None
    assert ctr.priors == PriorSet.load(DEFAULTS.ctr.prior_file)
    assert (ctr.ci_level, ctr.cell_policy, ctr.ttl_s) == (0.95, CellPolicy(1000, 1000, 500.0), 0)
    assert fraud.policy == DecisionPolicy(0.3, 0.7, 0.05)
    assert dict(fraud.ip_prefixes) == load_ip_prefixes(DEFAULTS.fraud.ip_countries_file)
    assert fraud.label_horizon_ms == 90 * 86_400_000
    assert (fraud.review_budget, fraud.metrics_days, fraud.drift_alert_psi) == (50, 14, 0.25)
    assert (fraud.metrics_interval_s, fraud.batch_timeout_s) == (30.0, 0.01)


def test_the_model_is_built_as_the_model_loader_builds_it() -> None:
    built, loaded = compose(DEFAULTS).fraud.model, FraudModel.load(DEFAULTS.fraud.model_file)
    for name in ("mean", "scale", "coef"):
        assert np.array_equal(getattr(built, name), getattr(loaded, name))
    for name in ("version", "features", "intercept", "calibration", "reference", "metrics"):
        assert getattr(built, name) == getattr(loaded, name)


def test_each_pinned_file_is_read_once_and_parsed_from_the_hashed_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prior_file = tmp_path / "priors-x.json"
    content = {
        "version": "x-1",
        "default": {"alpha": 1.0, "beta": 300.0, "level": "default"},
        "global": {"alpha": 2.0, "beta": 500.0, "level": "global"},
        "campaigns": {"c7": {"alpha": 3.0, "beta": 700.0, "level": "campaign"}},
    }
    prior_file.write_text(json.dumps(content))
    reads: list[Path] = []
    read_bytes = Path.read_bytes

    def counted(path: Path) -> bytes:
        reads.append(path)
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", counted)
    composition = compose(with_ctr(prior_file=prior_file))
    f = DEFAULTS.fraud
    assert sorted(reads) == sorted([prior_file, f.model_file, f.ip_countries_file])
    assert composition.pins["ctr"]["prior"] == {"file": "priors-x.json", "sha256": sha256_of(prior_file)}
    assert composition.ctr.priors == PriorSet(
        version="x-1",
        default=BetaPrior(1.0, 300.0, "default", "x-1"),
        global_=BetaPrior(2.0, 500.0, "global", "x-1"),
        campaigns={"c7": BetaPrior(3.0, 700.0, "campaign", "x-1")},
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            with_ctr(dedupe_horizon="10s"),
            "invalid setting ctr.dedupe_horizon: '10s' is shorter than ctr.grace '1m' "
            "(the dedupe horizon must cover the grace period)",
        ),
        (
            with_ctr(tumbling="1h"),
            "invalid setting ctr.hopping: '1h' is also ctr.tumbling "
            "(the two windows need different sizes: they name the windows)",
        ),
        (
            with_ctr(hop_every="7m"),
            "invalid setting ctr.hop_every: '7m' does not divide ctr.hopping '1h' "
            "(a hopping window is a whole number of hops)",
        ),
        (
            with_ctr(hop_every="2h"),
            "invalid setting ctr.hop_every: '2h' does not divide ctr.hopping '1h' "
            "(a hopping window is a whole number of hops)",
        ),
        (
            with_ctr(prior_refit_every="2h", prior_history="1h"),
            "invalid setting ctr.prior_history: '1h' is shorter than ctr.prior_refit_every '2h' "
            "(a refit reads at least one interval of final windows)",
        ),
        (
            with_fraud(review_at=0.2),
            "invalid setting fraud.review_at: 0.2 is below fraud.disable_invoice_at 0.3",
        ),
        (
            with_ctr(ttl_s=MAX_TTL_S + 1),
            f"invalid setting ctr.ttl_s: {MAX_TTL_S + 1} is above Cassandra's largest TTL "
            f"{MAX_TTL_S} (20 years)",
        ),
        (
            with_ctr(grace="soon"),  # model_copy skips the field validators: compose still checks
            "invalid setting ctr.grace: not a duration: 'soon' (use e.g. 30s, 1m, 1h)",
        ),
    ],
)
def test_a_cross_field_rule_is_one_line_naming_the_setting(settings: Settings, message: str) -> None:
    assert refused(settings) == message


def test_equal_bounds_are_allowed() -> None:
    compose(with_ctr(dedupe_horizon="1m", grace="1m", hop_every="1h"))
    compose(with_ctr(prior_refit_every="2h", prior_history="2h"))
    compose(with_fraud(review_at=0.3, disable_invoice_at=0.3))


def test_an_unreadable_file_names_its_setting(tmp_path: Path) -> None:
    missing = tmp_path / "x.json"
    assert refused(with_ctr(prior_file=missing)) == (
        f"invalid setting ctr.prior_file: cannot read {missing}: No such file or directory"
    )
    assert refused(with_fraud(ip_countries_file=tmp_path)).startswith(
        f"invalid setting fraud.ip_countries_file: cannot read {tmp_path}: "
    )


def model_json(**changes: Any) -> str:
    data = json.loads(DEFAULTS.fraud.model_file.read_text())
    return json.dumps({k: v for k, v in {**data, **changes}.items() if v is not None})


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (model_json(coef=None), "not a fraud model (missing key 'coef')"),
        (model_json(features=["log_amount"]), "not a fraud model (its features differ from this code's"),
        (model_json(coef=[1.0, 2.0]), "not a fraud model ('coef' must hold"),
        (model_json(scale=[0.0] * len(json.loads(model_json())["scale"])), "not a fraud model ('scale' must"),
        ("[1, 2]", "not a fraud model ("),
        ("{not json", "is not JSON (Expecting property name"),
    ],
)
def test_a_file_that_is_not_a_fraud_model_is_refused(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "model.json"
    path.write_text(content)
    message = refused(with_fraud(model_file=path))
    assert message.startswith("invalid setting fraud.model_file: ") and problem in message


@pytest.mark.parametrize(
    ("setting", "content", "problem"),
    [
        ("prior_file", '{"version": "p", "global": null}', "not a CTR prior file (missing key 'default')"),
        (
            "prior_file",
            '{"version": "p", "default": {"alpha": 0, "beta": 300, "level": "default"}}',
            "not a CTR prior file (a default prior has alpha 0.0, beta 300.0: both must be > 0)",
        ),
        ("ip_countries_file", '{"version": "i"}', "not an IP prefix table (missing key 'prefixes')"),
        (
            "ip_countries_file",
            '{"prefixes": {"1": 7}}',
            "not an IP prefix table ('prefixes' must map each first octet to a country code)",
        ),
    ],
)
def test_a_file_that_is_not_a_prior_set_or_prefix_table_is_refused(
    tmp_path: Path, setting: str, content: str, problem: str
) -> None:
    path = tmp_path / "file.json"
    path.write_text(content)
    group = "ctr" if setting == "prior_file" else "fraud"
    settings = with_ctr(**{setting: path}) if group == "ctr" else with_fraud(**{setting: path})
    assert refused(settings) == f"invalid setting {group}.{setting}: {problem}"


class Untouchable:
    """A Cassandra session that must not be used."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the session was used ({name}) before the settings were checked")


def test_invalid_settings_register_nothing() -> None:
    bad = with_ctr(dedupe_horizon="10s")
    with pytest.raises(ConfigError, match=r"^invalid setting ctr\.dedupe_horizon: "):
        lifecycle.ensure_registered(Untouchable(), bad)
    with pytest.raises(ConfigError, match=r"^invalid setting ctr\.dedupe_horizon: "):
        lifecycle.begin_replay(Untouchable(), bad, None)
