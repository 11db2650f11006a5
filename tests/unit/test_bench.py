"""The pure parts of `streams bench`: input, oracle, checks, latency matching, figures and reports."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from streams.bench.check import compare, compare_ids, compare_totals
from streams.bench.fraud import customer_sweep, live_transactions, valid_ids
from streams.bench.latency import match_ctr_latencies, percentiles
from streams.bench.measure import Measurement
from streams.bench.memory import (
    MIB,
    RssSample,
    SoakFigures,
    StateFigures,
    bytes_per_key,
    growth,
    least_squares_slope,
    rss_at_share,
)
from streams.bench.report import BenchReport, markdown, summarize, table_rows, update_docs
from streams.bench.runner import Input, RunResult
from streams.bench.scenarios import BenchOptions
from streams.bench.workload import WINDOW_MS, Oracle, ad_sweep, bench_messages
from streams.errors import ConfigError
from streams.events import Rejected, decode, load_validator
from streams.settings import Settings

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


def test_least_squares_slope_and_growth() -> None:
    assert least_squares_slope([(0, 100.0), (1, 102.0), (2, 104.0)]) == pytest.approx(2.0)
    assert least_squares_slope([(0, 100.0), (1, 101.0), (2, 100.0), (3, 101.0)]) == pytest.approx(0.2)
    assert least_squares_slope([(0, 5.0), (0, 7.0)]) == 0.0  # x does not vary
    assert least_squares_slope([(3, 5.0)]) == 0.0
    assert growth(200.0, 210.0) == (10.0, 5.0)
    assert growth(200.0, 190.0) == (-10.0, -5.0)
    assert math.isnan(growth(0.0, 10.0)[1])


def sample(seconds: float, rss: float, done: int = 0, behind: int = 0) -> RssSample:
    return RssSample(seconds, rss, done, behind)


def soak_figures(rss_of: Callable[[float], float]) -> SoakFigures:
    """30 s warm-up, 600 s measured at 1,000 events/s, a sample every 2 s, 10 s of drain."""
    samples = tuple(sample(t, rss_of(t), behind=int(t) % 7) for t in range(0, 641, 2))
    return SoakFigures("ctr", 1000.0, 30.0, 600.0, 660.0, 660_000, 150.0, 2.0, samples, 512.0)


def test_soak_figures_judge_the_steady_phase_by_its_trend() -> None:
    flat = soak_figures(lambda t: 400.0 if t < 30 else 300.0 + (3 if t == 100 else 0))  # no warm-up
    assert (flat.start_mib, flat.end_mib, flat.peak_mib) == (300.0, 300.0, 303.0)
    assert flat.steady[0].seconds == 30 and flat.steady[-1].seconds == 630
    assert flat.growth == (0.0, 0.0) and abs(flat.slope_mib_per_min) < 0.01
    assert flat.most_behind == 6

    leaking = soak_figures(lambda t: 300.0 + t / 60)  # 1 MiB per minute
    assert leaking.slope_mib_per_min == pytest.approx(1.0)
    assert leaking.growth[0] == pytest.approx(10.0)
    assert leaking.bytes_per_event == pytest.approx(MIB / 60_000)  # 1 MiB over 60,000 events
    # The second half only: a ramp that flattened half-way is no trend.
    settled = soak_figures(lambda t: 300.0 + min(t, 300) / 10)
    assert settled.slope_mib_per_min == pytest.approx(0.0, abs=1e-9) and settled.growth[0] == 27.0
    assert "+0.00 MiB/min" in settled.summary()
    assert table_rows(memory_report("soak", [RunResult("ours (ctr)", 1, memory=settled)]))[1][0][7] == "+0.00"
    # State per key: RSS at the end above the idle worker's, over the keys produced.
    keyed = replace(settled, keys=1000, idle_mib=100.0)
    assert keyed.state_per_key_bytes == pytest.approx((330.0 - 100.0) * MIB / 1000)
    assert math.isnan(settled.state_per_key_bytes)
    json = leaking.to_json()
    assert json["samples"]["columns"] == ["seconds", "rss_mib", "done", "behind"]
    assert json["slope_mib_per_min_second_half"] == pytest.approx(1.0)


def state_figures(keys: int, target: int) -> StateFigures:
    """Batches of a tenth of the keys; 100 MiB fixed, then 1 KiB per key."""
    samples = [sample(0, 90.0)]
    samples += [sample(i, 100.0 + i * keys / 10 / 1024, done=i * keys // 10) for i in range(1, 11)]
    return StateFigures("fraud", "customers", keys, target, tuple(samples), 101.0 + keys / 1024, 120.0)


def test_state_figures_per_key_bytes_leave_the_fixed_cost_out() -> None:
    samples = state_figures(10_000, 10_000).samples
    assert rss_at_share(samples, 10_000, 0.1) == samples[1]
    assert rss_at_share(samples, 10_000, 0.5) == samples[5]
    assert rss_at_share(samples[:5], 10_000, 1.0) is None
    assert bytes_per_key(samples[1], samples[10]) == pytest.approx(1024)
    assert math.isnan(bytes_per_key(samples[3], samples[3]))

    measured = state_figures(10_000, 10_000)
    assert measured.first_mib == 90.0 and measured.per_key_bytes == pytest.approx(1024)
    assert not measured.extrapolated and measured.at_target_mib == measured.at(1.0)
    small = state_figures(20_000, 1_000_000)
    assert small.extrapolated
    assert small.at_target_mib == pytest.approx(100.0 + 1_000_000 / 1024)  # the same line, extended
    assert "1,024 bytes per key" in small.summary()


def memory_report(scenario: str, runs: list[RunResult]) -> BenchReport:
    started = datetime(2026, 1, 1, tzinfo=UTC)
    names = {"ours (ctr)": "ctr", "ours (fraud)": "fraud"}
    return BenchReport(scenario, f"streams bench --scenario {scenario}", started, 900.0, names, runs,
                       options={"rate": 1000.0})  # fmt: skip


def test_memory_tables_have_one_row_per_phase() -> None:
    from streams.bench.check import Check

    soak = RunResult("ours (ctr)", 1, memory=soak_figures(lambda t: 300.0 + t / 60), check=Check(True, "ok"))
    failed = RunResult("ours (fraud)", 1, error="RuntimeServiceError: worker exited")
    header, rows = table_rows(memory_report("soak", [soak, failed]))
    assert header[:4] == ["phase", "events/s", "event time x", "RSS start"]
    assert rows[0][0] == "ours (ctr)" and rows[0][6:8] == ["+10.0 (+3.3 %)", "+1.00"] and rows[0][-1] == "yes"
    assert rows[1][:2] == ["ours (fraud)", "failed"] and rows[1][-1] == "no" and len(rows[1]) == len(header)
    text = markdown(memory_report("soak", [soak, failed]))
    assert "One row per phase and repeat (1 repeat(s))." in text
    assert "660 s of history (660,000 events) caught up in 150 s first" in text
    assert "ours (fraud) (repeat 1): RuntimeServiceError: worker exited" in text

    state = RunResult("ours (fraud)", 1, memory=state_figures(20_000, 1_000_000), check=Check(True, "ok"))
    header, rows = table_rows(memory_report("state", [state]))
    assert rows[0][1] == "20,000 customers" and rows[0][8] == "1,024"
    assert rows[0][9].endswith("(extrapolated)") and header[9] == "at target"
    assert "RSS with 100,000 ads and 1,000,000 customers" in markdown(memory_report("state", [state]))


def test_memory_scenarios_have_their_own_defaults() -> None:
    soak = BenchOptions.for_scenario("soak")
    assert (soak.rate, soak.seconds, soak.repeats, soak.keys) == (1000.0, 600.0, 1, 1_000_000)
    latency = BenchOptions.for_scenario("latency", seconds=5)
    assert (latency.rate, latency.seconds, latency.repeats) == (500.0, 5, 3)
    assert BenchOptions.for_scenario("state", repeats=2, keys=20_000).repeats == 2
    with pytest.raises(ConfigError, match="--keys"):
        BenchOptions.for_scenario("state", keys=999)


def test_ad_sweep_touches_every_ad_once_within_a_minute() -> None:
    messages = list(ad_sweep(500, start_ms=START, span_ms=50_000))
    events = [orjson.loads(value) for _, value in messages]
    assert len({e["ad_id"] for e in events}) == 500 and {e["type"] for e in events} == {"impression"}
    assert len({e["campaign_id"] for e in events}) == 25  # 20 ads per campaign
    assert all(key == e["ad_id"].encode() for (key, _), e in zip(messages, events, strict=True))
    times = [e["ts"] for e in events]
    assert times == sorted(times) and times[0] >= START and times[-1] < START + 50_000
    validator = load_validator(Settings().schemas_dir / "ad_event.schema.json")
    assert not any(isinstance(decode(value, validator), Rejected) for _, value in messages)


def test_customer_sweep_touches_every_customer_once_with_valid_transactions() -> None:
    settings = Settings()
    messages = list(customer_sweep(settings, 3000, start_ms=START, span_ms=3000))
    events = [orjson.loads(value) for _, value in messages]
    assert len({e["customer_id"] for e in events}) == 3000
    assert all(key == e["customer_id"].encode() for (key, _), e in zip(messages, events, strict=True))
    devices = [e["device_id"] for e in events if e.get("device_id")]
    assert len(devices) == len(set(devices)) > 2500  # own devices (a few are missing, as generated)
    assert [e["ts"] for e in events] == [START + i for i in range(3000)]
    assert len(valid_ids(settings, messages)) == 3000  # nothing the worker would dead-letter

    live = list(live_transactions(settings, 1500, start_ms=START, rate=500))
    assert [orjson.loads(value)["ts"] for _, value in live][:3] == [START, START + 2, START + 4]
    assert len(valid_ids(settings, live)) == 1500
