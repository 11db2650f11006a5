"""The pure parts of `streams bench`: input, oracle, checks, latency matching, figures and reports."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from streams.bench.check import compare, compare_ids, compare_totals
from streams.bench.latency import match_ctr_latencies, percentiles
from streams.bench.measure import Measurement
from streams.bench.report import BenchReport, markdown, summarize, table_rows, update_docs
from streams.bench.runner import Input, RunResult
from streams.bench.scenarios import BenchOptions
from streams.bench.workload import WINDOW_MS, Oracle, bench_messages
from streams.errors import ConfigError

START = 1_795_000_000_000 - 1_795_000_000_000 % WINDOW_MS


def event(kind: str, ad: str, ts: int) -> dict[str, object]:
    return {"type": kind, "event_id": f"{kind}-{ad}-{ts}", "ts": ts, "ad_id": ad}


def test_bench_messages_are_clean_ysb_sized_and_deterministic() -> None:
    messages = bench_messages(2000, start_ms=START, rate=100)
    assert messages == bench_messages(2000, start_ms=START, rate=100)
    events = [orjson.loads(value) for _, value in messages]
    assert 230 <= sum(len(value) for _, value in messages) / len(messages) <= 270
    assert {"page_id", "ad_type", "ip_address", "ts", "ad_id"} <= set(events[0])
    assert len({e["event_id"] for e in events}) == len(events)  # no duplicates, nothing malformed
    assert all(key == e["ad_id"].encode() for (key, _), e in zip(messages, events, strict=True))


def test_oracle_counts_impressions_and_clicks_per_ad_and_minute() -> None:
    messages = [
        (b"a", orjson.dumps(event("impression", "a", START + 1))),
        (b"a", orjson.dumps(event("click", "a", START + 59_999))),
        (b"a", orjson.dumps(event("impression", "a", START + WINDOW_MS))),
        (b"b", orjson.dumps(event("impression", "b", START + 5))),
    ]
    oracle = Oracle.of(messages)
    assert oracle.windows == {("a", START): [1, 1], ("a", START + WINDOW_MS): [1, 0], ("b", START): [1, 0]}
    assert oracle.by_type == {"impression": 3, "click": 1}
    assert oracle.ads == ["a", "b"]


def test_compare_demands_every_window_exactly() -> None:
    oracle = Oracle(windows={("a", START): [3, 1], ("b", START): [2, 0]})
    oracle.by_type.update(impression=5, click=1)
    assert compare(oracle, {("a", START): (3, 1), ("b", START): (2, 0)}).correct
    assert not compare(oracle, {("a", START): (3, 1)}).correct  # missing
    assert not compare(oracle, {("a", START): (3, 1), ("b", START): (2, 0), ("c", START): (1, 0)}).correct
    wrong = compare(oracle, {("a", START): (4, 1), ("b", START): (2, 0)})
    assert not wrong.correct and "1 of 2 windows" in wrong.summary


def test_compare_totals_and_ids() -> None:
    oracle = Oracle()
    oracle.by_type.update(impression=10, click=2)
    assert compare_totals(oracle, {"impression": 10.0, "click": 2.0}).correct
    assert not compare_totals(oracle, {"impression": 10.0}).correct
    assert compare_ids({"t1", "t2"}, {"t2", "t1"}, "scored").correct
    assert "1 of 2 scored missing" in compare_ids({"t1", "t2"}, {"t1"}, "scored").summary


def test_ctr_latency_is_to_the_first_row_that_counts_the_event() -> None:
    events = [
        (event("impression", "a", START + 10), 1000),
        (event("impression", "a", START + 20), 1100),
        (event("click", "a", START + 30), 1200),
    ]
    row = {"kind": "ad", "window": "1m", "ad_id": "a", "window_start": START}
    rows = [
        ({**row, "impressions": 1, "clicks": 0}, 1500),
        ({**row, "impressions": 2, "clicks": 1}, 2000),
        ({**row, "impressions": 2, "clicks": 1, "final": True}, 9000),  # a rewrite counts nothing new
        ({**row, "window": "1h", "impressions": 2, "clicks": 1}, 1300),  # another window kind
    ]
    assert match_ctr_latencies(events, rows) == [(1000, 500), (1100, 900), (1200, 800)]


def test_percentiles_only_count_the_measured_period() -> None:
    latencies = [(float(created), float(created % 100)) for created in range(0, 2000)]
    figures = percentiles(latencies, since_ms=1000)
    assert figures["events"] == 1000
    assert figures["p50"] == 50 and figures["p99"] == 99 and figures["p999"] == 99
    assert percentiles([], since_ms=0)["events"] == 0


def test_a_rate_needs_a_long_and_full_enough_interval() -> None:
    assert Measurement(10_000, 4.0, 2.0, 100, 1.0, expected=20_000).rated
    assert not Measurement(58, 0.1, 0.0, 50, 0.4, expected=20_058).rated
    assert Measurement(1000, 2.0, 1.0, 10, 0, expected=1000).cpu_s_per_million == 1000


def run(contender: str, repeat: int, rate: float, ok: bool = True) -> RunResult:
    from streams.bench.check import Check

    measurement = Measurement(int(rate * 10), 10.0, 5.0, 100.0, 2.0, expected=int(rate * 10))
    return RunResult(contender, repeat, measurement, Check(ok, "ok" if ok else "WRONG"))


def test_summary_takes_medians_and_ratios_within_each_repeat() -> None:
    runs = [run("ours", 1, 1000), run("naive", 1, 200), run("ours", 2, 2000), run("naive", 2, 600)]
    runs.append(run("ours", 3, 1500, ok=False))
    ours, naive = summarize("ours", "", runs, "ours"), summarize("naive", "", runs, "ours")
    assert (ours.runs, ours.correct, ours.events_per_s, ours.vs_baseline) == (3, 2, 1500, 1.0)
    assert naive.events_per_s == 400 and naive.vs_baseline == pytest.approx(0.25)  # median of 0.2, 0.3


def report_of(runs: list[RunResult]) -> BenchReport:
    bench = Input("t", 20_000, 245.0, Oracle(), {"event_time_span_s": 20.0})
    started = datetime(2026, 1, 1, tzinfo=UTC)
    contenders = {"ours": "ours", "naive": "naive"}
    command = "streams bench --events 20000"
    return BenchReport("ctr", command, started, 60.0, contenders, runs, bench, {"quix": "not installed"})


def test_markdown_table_and_docs_section(tmp_path: Path) -> None:
    report = report_of([run("ours", 1, 1000), run("naive", 1, 200, ok=False)])
    header, rows = table_rows(report)
    assert header[:3] == ["contender", "events/s", "vs ours"]
    assert rows[0][:3] == ["ours", "1,000", "1.00x"] and rows[1][1] == "n/a"
    assert rows[2][:2] == ["quix", "skipped: not installed"]
    text = markdown(report)
    assert "`streams bench --events 20000`" in text and "| ours | 1,000 |" in text
    assert "naive (repeat 1): WRONG" in text

    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\nHand-written prose.\n")
    update_docs(report, page)
    update_docs(report_of([run("ours", 1, 3000), run("naive", 1, 300)]), page)
    content = page.read_text()
    assert content.startswith("# Benchmarks\n\nHand-written prose.")
    assert content.count("<!-- streams bench: ctr -->") == 1 and "| ours | 3,000 |" in content
    assert "| ours | 1,000 |" not in content


def test_options_reject_unknown_names() -> None:
    with pytest.raises(ConfigError, match="unknown scenario"):
        BenchOptions(scenario="throughput")
    with pytest.raises(ConfigError, match="unknown contender 'flink'"):
        BenchOptions(contenders=("ours", "flink"))
