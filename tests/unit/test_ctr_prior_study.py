"""The learned priors against the ideal, on a seeded stream whose campaigns differ 50x in CTR
(`streams ctr prior-study` prints the same figures): a measured quantity with a margin."""

from __future__ import annotations

from streams.ctr.smoothing import PriorSet
from streams.ctr.study import StudyOptions, run_study
from streams.settings import Settings


def test_learned_priors_come_within_a_fifth_of_the_ideal_in_every_sparsity_band() -> None:
    default = PriorSet.load(Settings().ctr.prior_file).default
    bands = run_study(StudyOptions(seed=7, hours=12, warmup_hours=6, spread=50.0), default)
    assert [b.band for b in bands] == ["< 100", "100-1,000", ">= 1,000"]
    for band in bands:
        rmse = band.rmse
        assert band.windows >= 30, band
        assert rmse["learned priors"] <= 1.2 * rmse["true priors"], band
        assert rmse["learned priors"] <= rmse["raw"], band
    sparse, middle, _ = bands
    # The truth is the truth: the ideal's intervals hold it as often as they say.
    for band in (sparse, middle):
        assert 0.93 <= band.coverage["true priors"] <= 0.97, band
    # Why it matters: one default prior for campaigns 50x apart is no better than no prior at all.
    assert middle.rmse["default prior"] >= middle.rmse["raw"], middle
    assert sparse.rmse["default prior"] >= 2 * sparse.rmse["learned priors"], sparse
