"""Pure logic of pipeline versions: pins, digests, names, and the row-by-row comparison of `verify`."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.errors import ConfigError
from streams.settings import Settings
from streams.verify import RESULT_TABLES, compare, keyed
from streams.versions import file_pin, first_difference, names_of, params_digest, pinned_params

AD_TABLE = next(t for t in RESULT_TABLES if t.name == "ctr_ad_windows")


def ad_row(ad: str, start: int, clicks: int, smoothed: float = 0.01, final: bool = True) -> dict[str, object]:
    return {
        "ad_id": ad, "window": "1m", "window_start": start, "window_end": start + 60_000, "campaign_id": "c",
        "impressions": 100, "clicks": clicks, "smoothed_ctr": smoothed, "ci_low": 0.0, "ci_high": 0.1,
        "prior_level": "campaign", "final": final,
    }  # fmt: skip


def test_pins_change_with_result_affecting_settings_only() -> None:
    base = Settings()
    same_speed = base.model_copy(update={"worker": base.worker.model_copy(update={"batch_size": 5})})
    other_window = base.model_copy(update={"ctr": base.ctr.model_copy(update={"tumbling": "2m"})})
    pins = pinned_params(base)
    assert params_digest(pinned_params(same_speed)) == params_digest(pins)
    assert params_digest(pinned_params(other_window)) != params_digest(pins)
    assert first_difference(pins, pinned_params(other_window)) == "ctr.tumbling: pinned '1m', configured '2m'"
    assert first_difference(pins, pinned_params(same_speed)) is None


def test_a_lookup_file_is_pinned_by_content(tmp_path: Path) -> None:
    model = tmp_path / "model.json"
    model.write_text('{"weights": [1]}')
    before = file_pin(model)
    model.write_text('{"weights": [2]}')
    assert before["file"] == file_pin(model)["file"] and before["sha256"] != file_pin(model)["sha256"]
    with pytest.raises(ConfigError, match="cannot read"):
        file_pin(tmp_path / "missing.json")


def test_every_kafka_name_of_a_version_carries_it() -> None:
    names = names_of(Settings(), "v2", ("ctr", "fraud"))
    assert names.group_id == "streams-v2" and names.groups == ("streams-v2",)  # one group per version
    assert names.group_of("ad-events") == names.group_of("transactions") == "streams-v2"
    assert names.result_topics == (
        "ctr-results.v2", "fraud-scores.v2", "fraud-chain-heads.v2", "fraud-entity-sightings.v2",
        "fraud-entity-features.v2",
    )  # fmt: skip
    assert names.source_topics == ("ad-events", "transactions", "labels")


def test_identical_results_show_no_difference() -> None:
    rows = keyed(AD_TABLE, [ad_row("a", 0, 1), ad_row("b", 60_000, 2)])
    result = compare(AD_TABLE, rows, dict(rows))
    assert (result.rows_a, result.rows_b, result.differences, result.examples) == (2, 2, 0, [])


def test_missing_and_changed_rows_are_each_reported() -> None:
    a = keyed(AD_TABLE, [ad_row("a", 0, 1), ad_row("b", 0, 2), ad_row("c", 0, 3)])
    b = keyed(AD_TABLE, [ad_row("a", 0, 1), ad_row("b", 0, 5, final=False), ad_row("d", 0, 1)])
    result = compare(AD_TABLE, a, b)
    assert (result.only_in_a, result.only_in_b, result.differing) == (1, 1, 1)
    changed = next(d for d in result.examples if d.kind == "differs")
    assert changed.key == ("b", "1m", 0) and changed.columns == {"clicks": (2, 5), "final": (True, False)}


def test_tolerance_applies_to_decimals_only() -> None:
    a = keyed(AD_TABLE, [ad_row("a", 0, 1, smoothed=0.0100000001)])
    b = keyed(AD_TABLE, [ad_row("a", 0, 1, smoothed=0.0100000002)])
    assert compare(AD_TABLE, a, b).differing == 1
    assert compare(AD_TABLE, a, b, rel_tol=1e-6).differing == 0


@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(0, 5), st.integers(0, 9)), max_size=30))
def test_differences_are_symmetric(entries: list[tuple[str, int, int]]) -> None:
    a = keyed(AD_TABLE, [ad_row(ad, start * 60_000, clicks) for ad, start, clicks in entries[::2]])
    b = keyed(AD_TABLE, [ad_row(ad, start * 60_000, clicks) for ad, start, clicks in entries[1::2]])
    ab, ba = compare(AD_TABLE, a, b), compare(AD_TABLE, b, a)
    assert (ab.only_in_a, ab.only_in_b, ab.differing) == (ba.only_in_b, ba.only_in_a, ba.differing)
    assert ab.differences == len(set(a) ^ set(b)) + sum(a[k] != b[k] for k in set(a) & set(b))
