"""The composition root: the settings are checked once, every cross-field rule included, and turned
into the typed parameters the pipelines run with, before any version is registered or started.

The pinned files (CTR priors, fraud model, IP prefix table) are read here, once: the bytes hashed
into the version's pins are the bytes parsed. Reads files; no Kafka, no Cassandra. Every failure is
one `ConfigError` line naming the setting.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import numpy as np

from streams.ctr.learning import PriorLearning
from streams.ctr.processor import CellPolicy
from streams.ctr.smoothing import PriorSet
from streams.ctr.state import CtrConfig
from streams.ctr.windows import WindowSpec, parse_duration_ms
from streams.errors import ConfigError
from streams.fraud.decision import DecisionPolicy
from streams.fraud.entities import ENTITY_FEATURES
from streams.fraud.features import FEATURES
from streams.fraud.model import FraudModel
from streams.fraud.processor import DAY_MS
from streams.fraud.synthetic import ip_prefixes_from_bytes
from streams.settings import CtrSettings, FraudSettings, Settings
from streams.versions import content_pin, params_of

T = TypeVar("T")

# Cassandra refuses a TTL above 20 years (and would only say so at the first write).
MAX_TTL_S = 630_720_000
MODEL_ARRAYS = ("mean", "scale", "coef")

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class CtrParams:
    """What the CTR pipeline runs with."""

    config: CtrConfig
    priors: PriorSet
    ci_level: float
    cell_policy: CellPolicy
    ttl_s: int


@dataclass(frozen=True)
class FraudParams:
    """What the fraud pipeline runs with."""

    model: FraudModel
    policy: DecisionPolicy
    ip_prefixes: Mapping[str, str]
    label_horizon_ms: int
    dedupe_horizon_ms: int
    history_horizon_ms: int
    review_budget: int
    min_holdout_rows: int
    drift_window_hours: int
    metrics_days: int
    metrics_interval_s: float
    drift_alert_psi: float
    batch_timeout_s: float
    catchup_flush_interval_s: float
    entities: EntityParams | None  # the model uses entity features


@dataclass(frozen=True)
class EntityParams:
    """The entity stage (`fraud.entity_stage`) of a version whose model uses entity features."""

    grace_ms: int
    late_limit_ms: int
    idle_s: float


@dataclass(frozen=True)
class Composition:
    """One pipeline version's checked parameters, its pins, and the settings (operational knobs)."""

    version: str
    ctr: CtrParams
    fraud: FraudParams
    pins: dict[str, Any]
    settings: Settings


@dataclass(frozen=True)
class PinnedFile:
    """A pinned file's content, read once, and the setting that named it."""

    setting: str
    path: Path
    content: bytes

    @property
    def pin(self) -> dict[str, str]:
        return content_pin(self.path, self.content)


def invalid(setting: str, problem: str) -> ConfigError:
    return ConfigError(f"invalid setting {setting}: {problem}")


def compose(settings: Settings) -> Composition:
    """Check ``settings`` and build every pipeline's parameters; raises `ConfigError`."""
    ctr, fraud = settings.ctr, settings.fraud
    prior = read_pinned("ctr.prior_file", ctr.prior_file)
    model = read_pinned("fraud.model_file", fraud.model_file)
    ip_countries = read_pinned("fraud.ip_countries_file", fraud.ip_countries_file)
    fraud_p = fraud_params(fraud, model, ip_countries)
    pins = params_of(settings, prior=prior.pin, model=model.pin, ip_countries=ip_countries.pin)
    if fraud_p.entities is not None:  # (pinned only then: versions without entities keep their pins)
        pins["fraud"]["entities"] = {"grace_ms": fraud.entity_grace_ms,
                                     "late_limit_hours": fraud.entity_late_limit_hours}  # fmt: skip
    return Composition(
        version=settings.worker.pipeline_version,
        ctr=ctr_params(ctr, prior),
        fraud=fraud_p,
        pins=pins,
        settings=settings,
    )


def ctr_params(ctr: CtrSettings, prior: PinnedFile) -> CtrParams:
    config = ctr_config(ctr)
    if ctr.ttl_s > MAX_TTL_S:
        raise invalid("ctr.ttl_s", f"{ctr.ttl_s} is above Cassandra's largest TTL {MAX_TTL_S} (20 years)")
    return CtrParams(
        config=config,
        priors=parse(prior, "a CTR prior file", prior_set_from_bytes),
        ci_level=ctr.ci_level,
        cell_policy=CellPolicy(ctr.min_cell_impressions, ctr.min_ad_impressions, ctr.backoff_strength),
        ttl_s=ctr.ttl_s,
    )


def fraud_params(fraud: FraudSettings, model: PinnedFile, ip_countries: PinnedFile) -> FraudParams:
    policy = decision_policy(fraud)
    parsed = parse(model, "a fraud model", fraud_model_from_bytes)
    entities = None
    if parsed.features != FEATURES:
        late_limit_ms = fraud.entity_late_limit_hours * HOUR_MS
        entities = EntityParams(fraud.entity_grace_ms, late_limit_ms, fraud.entity_idle_s)
    return FraudParams(
        model=parsed,
        policy=policy,
        ip_prefixes=MappingProxyType(parse(ip_countries, "an IP prefix table", ip_prefixes_from_bytes)),
        label_horizon_ms=fraud.label_horizon_days * DAY_MS,
        dedupe_horizon_ms=fraud.dedupe_horizon_hours * HOUR_MS,
        history_horizon_ms=fraud.history_horizon_days * DAY_MS,
        review_budget=fraud.review_budget,
        min_holdout_rows=fraud.min_holdout_rows,
        drift_window_hours=fraud.drift_window_hours,
        metrics_days=fraud.metrics_days,
        metrics_interval_s=fraud.metrics_interval_s,
        drift_alert_psi=fraud.drift_alert_psi,
        batch_timeout_s=fraud.batch_timeout_s,
        catchup_flush_interval_s=fraud.catchup_flush_interval_s,
        entities=entities,
    )


def duration_ms(setting: str, text: str) -> int:
    try:
        return parse_duration_ms(text)
    except ValueError as exc:
        raise invalid(setting, str(exc)) from None


def ctr_config(ctr: CtrSettings) -> CtrConfig:
    """The windows (named by their size), grace and dedupe horizon, with the rules between them."""
    tumbling, hopping = duration_ms("ctr.tumbling", ctr.tumbling), duration_ms("ctr.hopping", ctr.hopping)
    hop_every, grace = duration_ms("ctr.hop_every", ctr.hop_every), duration_ms("ctr.grace", ctr.grace)
    horizon = duration_ms("ctr.dedupe_horizon", ctr.dedupe_horizon)
    if ctr.hopping == ctr.tumbling:
        raise invalid(
            "ctr.hopping",
            f"{ctr.hopping!r} is also ctr.tumbling "
            "(the two windows need different sizes: they name the windows)",
        )
    if hopping % hop_every:
        raise invalid(
            "ctr.hop_every",
            f"{ctr.hop_every!r} does not divide ctr.hopping {ctr.hopping!r} "
            "(a hopping window is a whole number of hops)",
        )
    if horizon < grace:
        raise invalid(
            "ctr.dedupe_horizon",
            f"{ctr.dedupe_horizon!r} is shorter than ctr.grace {ctr.grace!r} "
            "(the dedupe horizon must cover the grace period)",
        )
    try:
        return CtrConfig(
            windows=(
                WindowSpec(ctr.tumbling, tumbling, tumbling),
                WindowSpec(ctr.hopping, hopping, hop_every),
            ),
            cell_window=ctr.hopping,
            grace_ms=grace,
            dedupe_horizon_ms=horizon,
            learning=prior_learning(ctr, hopping) if ctr.prior_learning else None,
            attribute_clicks=ctr.click_attribution == "impression",
        )
    except ValueError as exc:  # a rule of the CTR state that the checks above do not know yet
        raise invalid("ctr", str(exc)) from None


def prior_learning(ctr: CtrSettings, hopping_ms: int) -> PriorLearning:
    """The learning rule: refit every interval from the final hopping windows on the hour."""
    refit = duration_ms("ctr.prior_refit_every", ctr.prior_refit_every)
    history = duration_ms("ctr.prior_history", ctr.prior_history)
    if history < refit:
        raise invalid(
            "ctr.prior_history",
            f"{ctr.prior_history!r} is shorter than ctr.prior_refit_every {ctr.prior_refit_every!r} "
            "(a refit reads at least one interval of final windows)",
        )
    return PriorLearning(
        window=ctr.hopping,
        size_ms=hopping_ms,
        refit_ms=refit,
        history_ms=history,
        min_impressions=ctr.prior_min_impressions,
        min_ads=ctr.prior_min_ads,
    )


def decision_policy(fraud: FraudSettings) -> DecisionPolicy:
    if fraud.review_at < fraud.disable_invoice_at:
        raise invalid(
            "fraud.review_at",
            f"{fraud.review_at} is below fraud.disable_invoice_at {fraud.disable_invoice_at}",
        )
    return DecisionPolicy(fraud.disable_invoice_at, fraud.review_at, fraud.holdout_share)


def read_pinned(setting: str, path: Path) -> PinnedFile:
    try:
        return PinnedFile(setting, path, path.read_bytes())
    except OSError as exc:
        raise invalid(setting, f"cannot read {path}: {exc.strerror}") from None


def parse(pinned: PinnedFile, what: str, parser: Callable[[bytes], T]) -> T:
    """``parser(content)``, with whatever it refuses as one line naming the setting."""
    try:
        return parser(pinned.content)
    except json.JSONDecodeError as exc:
        raise invalid(pinned.setting, f"{pinned.path} is not JSON ({exc})") from None
    except KeyError as exc:
        raise invalid(pinned.setting, f"not {what} (missing key {exc.args[0]!r})") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise invalid(pinned.setting, f"not {what} ({exc})") from None


def prior_set_from_bytes(content: bytes) -> PriorSet:
    """`PriorSet.from_bytes`, refusing priors no posterior can be computed with."""
    priors = PriorSet.from_bytes(content)
    for prior in (priors.default, priors.global_, *priors.campaigns.values()):
        if prior is not None and not (prior.alpha > 0 and prior.beta > 0):
            raise ValueError(
                f"a {prior.level} prior has alpha {prior.alpha}, beta {prior.beta}: both must be > 0"
            )
    return priors


def fraud_model_from_bytes(content: bytes) -> FraudModel:
    """A model file's content (as `FraudModel.to_json` writes it), checked against this code's features."""
    data = json.loads(content)
    features = tuple(data["features"])
    if features not in (FEATURES, FEATURES + ENTITY_FEATURES):
        raise ValueError("its features differ from this code's features, with or without entity features "
                         "(retrain it)")  # fmt: skip
    arrays = {name: np.array(data[name], dtype=float) for name in MODEL_ARRAYS}
    for name, values in arrays.items():
        if values.shape != (len(features),) or not np.isfinite(values).all():
            raise ValueError(f"'{name}' must hold {len(features)} finite numbers, one per feature")
    if not arrays["scale"].all():
        raise ValueError("'scale' must not contain 0")
    a, b = data["calibration"]
    return FraudModel(
        version=str(data["version"]),
        features=features,
        mean=arrays["mean"],
        scale=arrays["scale"],
        coef=arrays["coef"],
        intercept=float(data["intercept"]),
        calibration=(float(a), float(b)),
        reference=data.get("reference", {}),
        metrics=data.get("metrics", {}),
    )
