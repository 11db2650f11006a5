"""Rolling CTR end to end on the real Kafka and Cassandra, checked against an independent oracle.

The oracle (`ctr_oracle`) reads the raw topic back (each partition in offset order, as the worker
sees it) and recomputes everything with plain code of its own: validity, duplicates, lateness,
window counts, final flags. Every (ad, window) row in Cassandra must match it exactly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

from streams.ctr.generator import ClickstreamGenerator
from streams.produce import produce
from streams.settings import Settings
from streams.versions import result_topic
from tests.integration.ctr_oracle import PROFILE, START, as_counts, assert_rows_match_oracle, ctr_rows, oracle
from tests.integration.kafka_records import read_partitions
from tests.support import metric, running_worker, scrape, settings_env, wait_until

pytestmark = pytest.mark.integration

IMPRESSIONS = 24_000  # at 100/s of event time: 4 minutes, so most windows close


def test_every_window_row_matches_the_oracle(ctr_settings: Settings, tmp_path: Path) -> None:
    settings = ctr_settings
    generator = ClickstreamGenerator(PROFILE, seed=11, start_ms=START, rate=100)
    messages = list(generator.messages(IMPRESSIONS))
    report = produce(settings.kafka, settings.topics.ad_events, messages)
    assert report.failed == 0

    with running_worker(settings, tmp_path):
        wait_until(
            lambda: (
                metric(scrape(settings), "streams_events_consumed_total", topic=settings.topics.ad_events)
                == len(messages)
            ),
            240,
            "the worker to consume every message",
            interval_s=1,
        )
        final_metrics = scrape(settings)

    expected = oracle(read_partitions(settings, settings.topics.ad_events))
    assert expected["rejected"]["late_event"] > 0 and expected["duplicates"] > 0  # the scenario has dirt
    assert expected["rejected"]["malformed_json"] > 0 and expected["rejected"]["schema_violation"] > 0

    ad_rows = assert_rows_match_oracle(settings, expected)
    assert any(r.final for r in ad_rows) and any(not r.final for r in ad_rows)
    assert_top_ads_read_the_newest_ended_window(settings)

    # Identical dead-letter, late and duplicate counts.
    topic = settings.topics.ad_events
    for kind in ("malformed_json", "schema_violation", "late_event"):
        assert (
            metric(final_metrics, "streams_events_dead_lettered_total", topic=topic, reason=kind)
            == (expected["rejected"][kind])
        ), kind
    assert (
        metric(final_metrics, "streams_events_late_total", topic=topic) == expected["rejected"]["late_event"]
    )
    assert metric(final_metrics, "streams_events_duplicate_total", topic=topic) == expected["duplicates"]
    letters = Counter(
        orjson.loads(raw)["reason_kind"]
        for messages_ in read_partitions(settings, settings.topics.dead_letters).values()
        for _, raw in messages_
    )
    assert letters == +expected["rejected"]

    # The result topic carries the same rows (latest record per natural key).
    latest: dict[tuple[str, str, int], tuple[int, int]] = {}
    for messages_ in read_partitions(
        settings, result_topic(settings.topics.ctr_results, settings.worker.pipeline_version)
    ).values():
        for _, raw in messages_:
            record = orjson.loads(raw)
            if record["kind"] == "ad":
                key = (record["window"], record["ad_id"], record["window_start"])
                latest[key] = (record["impressions"], record["clicks"])
    assert latest == as_counts(expected["ads"])


def assert_top_ads_read_the_newest_ended_window(settings: Settings) -> None:
    """`streams query top-ads` at START + 2m5s (1 min windows every 10 s): by default the newest
    window ended by then starts at START + 60 s; with --include-open, the one started at START + 120 s.
    Its ads are the cells of that window ranked by their lower bound."""
    cells = ctr_rows(settings)["cells"]
    segment = Counter(c.segment for c in cells if c.window == "1m").most_common(1)[0][0]
    at = START + 125_000
    for flags, start in (((), START + 60_000), (("--include-open",), START + 120_000)):
        command = [sys.executable, "-m", "streams", "query", "top-ads", "--segment", segment, "--k", "5",
                   "--at", str(at), "--json", *flags]  # fmt: skip
        done = subprocess.run(command, env={**os.environ, **settings_env(settings)}, capture_output=True,
                              text=True, timeout=60, check=True)  # fmt: skip
        shown = orjson.loads(done.stdout)
        window = [c for c in cells if c.window == "1m" and c.segment == segment and c.window_start == start]
        ranked = sorted(window, key=lambda c: (-c.ci_low, -c.smoothed_ctr, c.ad_id))[:5]
        assert [r["ad_id"] for r in shown] == [c.ad_id for c in ranked] and shown, (flags, shown)
        assert {r["window_start"] for r in shown} == {start}
