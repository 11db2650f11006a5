from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from streams.ctr.smoothing import BetaPrior, PriorSet, estimate, fit_beta_moments, fit_priors

priors = st.builds(
    lambda mean, strength: BetaPrior.from_mean(mean, strength, "campaign", "p1"),
    st.floats(0.0005, 0.2),
    st.floats(10, 5000),
)
counts = st.integers(0, 200_000).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, min(n, 2000))))


@given(priors, counts)
def test_smoothing_is_monotone_in_clicks(prior: BetaPrior, nc: tuple[int, int]) -> None:
    n, c = nc
    n = max(n, c + 1)
    assert estimate(n, c + 1, prior).smoothed_ctr > estimate(n, c, prior).smoothed_ctr


@given(priors, counts)
def test_the_interval_contains_the_smoothed_ctr(prior: BetaPrior, nc: tuple[int, int]) -> None:
    est = estimate(*nc, prior)
    assert 0 <= est.ci_low <= est.smoothed_ctr <= est.ci_high <= 1
    assert est.ci_level == 0.95 and est.ci_method == "beta_posterior_equal_tailed"


@given(priors, st.integers(1, 500), st.integers(0, 500), st.integers(2, 50))
def test_it_shrinks_toward_the_prior_as_impressions_go_to_zero(
    prior: BetaPrior, n: int, c: int, k: int
) -> None:
    c = min(c, n)
    assert estimate(0, 0, prior).smoothed_ctr == prior.mean
    small, large = estimate(n, c, prior), estimate(n * k, c * k, prior)
    raw = c / n
    # Between the prior mean and the raw rate, and closer to the raw rate with more data.
    assert min(raw, prior.mean) - 1e-12 <= small.smoothed_ctr <= max(raw, prior.mean) + 1e-12
    assert abs(large.smoothed_ctr - raw) <= abs(small.smoothed_ctr - raw) + 1e-12


def test_method_of_moments_recovers_a_known_beta() -> None:
    rng = random.Random(1)
    alpha, beta = 3.0, 997.0  # mean 0.003, strength 1000
    cells = []
    for _ in range(3000):
        p = rng.betavariate(alpha, beta)
        n = 50_000
        clicks = round(n * p + rng.gauss(0, (n * p * (1 - p)) ** 0.5))  # binomial, normal approx.
        cells.append((n, max(clicks, 0)))
    fit = fit_beta_moments(cells, min_impressions=1000)
    assert fit is not None
    a, b = fit
    assert abs(a / (a + b) - 0.003) < 0.0002
    assert 600 < a + b < 1600


def test_degenerate_fits_back_off() -> None:
    default = BetaPrior(1.0, 332.0, "default", "p1")
    cells = {
        "no-clicks": [(10_000, 0)] * 5,  # mean 0: degenerate
        "too-few": [(10_000, 30)],  # fewer than min_cells
        "no-dispersion": [(10_000, 30)] * 5,  # identical rates: no over-dispersion
    }
    fitted = fit_priors(cells, version="p1", default=default, min_impressions=1000)
    assert fitted.campaigns == {}  # every campaign fit is degenerate
    assert fitted.global_ is not None  # pooled, the rates 0 and 0.003 do disperse
    assert fitted.for_campaign("too-few").level == "global"

    nothing = fit_priors({"a": [(10_000, 0)] * 5}, version="p1", default=default, min_impressions=1000)
    assert nothing.global_ is None
    assert nothing.for_campaign("a") == BetaPrior(1.0, 332.0, "default", "p1")


def test_prior_sets_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    prior_set = PriorSet(
        version="p9",
        default=BetaPrior(1.0, 332.0, "default", "p9"),
        global_=BetaPrior(2.0, 600.0, "global", "p9"),
        campaigns={"c1": BetaPrior(1.5, 400.0, "campaign", "p9")},
    )
    path = tmp_path / "priors.json"
    path.write_text(prior_set.to_json())
    assert PriorSet.load(path) == prior_set
    assert prior_set.for_campaign("c1").level == "campaign"
    assert prior_set.for_campaign("c2").level == "global"
