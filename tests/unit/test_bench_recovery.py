"""The pure parts of `streams bench --scenario recovery`: figures, verdicts, rows, ratio, options."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streams.bench import recovery
from streams.bench.check import Check
from streams.bench.recovery import recoveries
from streams.bench.recovery_report import (
    HEADER,
    MIB,
    RecoveryFigures,
    events_label,
    ratio_line,
    recovery_row,
    recovery_table,
    snapshot_ratio,
    verdict,
)
from streams.bench.report import BenchReport, markdown, table_rows, update_docs
from streams.bench.runner import RunResult
from streams.bench.scenarios import BenchOptions
from streams.bench.workload import Oracle, bench_messages

OK = Check(True, "ok: 10 windows")


def figures(mode: str, events: int = 1_000_000, seconds: float = 4.0, **changes: Any) -> RecoveryFigures:
    source = "log" if mode == "log" else "snapshot"
    found = RecoveryFigures(mode, events, events + 2698, seconds, 0, {source: 6}, 6, 3 * MIB)
    return replace(found, **changes)


def run_of(f: RecoveryFigures, repeat: int = 1, check: Check = OK) -> RunResult:
    return RunResult(f.label, repeat, recovery=f, check=verdict(check, f))


def test_labels_say_history_and_mode() -> None:
    assert [events_label(n) for n in (1_000_000, 5_000_000, 200_000, 2_500_000, 500)] == [
        "1M", "5M", "200k", "2.5M", "500",
    ]  # fmt: skip
    assert figures("snapshot").label == "1M, snapshot"
    assert figures("log", 5_000_000).label == "5M, whole log"
    assert figures("static").label == "kill -9, static id"
    assert figures("dynamic").label == "kill -9, dynamic"
    with pytest.raises(ValueError, match="unknown recovery mode"):
        figures("warm")


def test_the_path_must_be_the_one_the_row_names_on_every_partition_the_tail_reached() -> None:
    assert figures("snapshot").path_ok and figures("log").path_ok and figures("static").path_ok
    assert not figures("snapshot", recoveries={"snapshot": 5, "log": 1}).path_ok  # one fell back
    assert not figures("snapshot", recoveries={"snapshot": 5}).path_ok  # one never recovered
    assert not figures("log", recoveries={"snapshot": 6}).path_ok  # snapshots were not switched off
    assert not figures("snapshot", recoveries={}, tail_partitions=0).path_ok  # nothing proves anything
    wrong = verdict(OK, figures("dynamic", recoveries={"log": 6}))
    assert not wrong.correct and "WRONG: expected snapshot only" in wrong.summary
    assert not verdict(Check(False, "WRONG: 1 of 10 windows differ"), figures("snapshot")).correct


def test_recoveries_are_read_per_source_from_the_worker_metrics() -> None:
    text = (
        "# TYPE streams_recoveries_total counter\n"
        'streams_recoveries_total{pipeline="ctr",source="snapshot"} 5.0\n'
        'streams_recoveries_total{pipeline="ctr",source="log"} 1.0\n'
        'streams_recoveries_total{pipeline="fraud",source="log"} 3.0\n'
    )
    assert recoveries(text) == {"snapshot": 5, "log": 1}
    assert recoveries("") == {}


def test_ratio_of_snapshot_restarts_longest_over_shortest_history_per_repeat() -> None:
    runs = [
        run_of(figures("snapshot", 1_000_000, 4.0)), run_of(figures("log", 1_000_000, 40.0)),
        run_of(figures("snapshot", 5_000_000, 5.0)), run_of(figures("log", 5_000_000, 200.0)),
        run_of(figures("snapshot", 1_000_000, 2.0), repeat=2),
        run_of(figures("snapshot", 5_000_000, 3.0), repeat=2),
    ]  # fmt: skip
    assert snapshot_ratio(runs) == pytest.approx((1.25 + 1.5) / 2)
    assert "5M / 1M: 1.38x (target <= 1.3x: NOT met)" in ratio_line(runs)
    assert "1.25x (target <= 1.3x: met)" in ratio_line(runs[:4])
    wrong = run_of(figures("snapshot", 5_000_000, 1.0), check=Check(False, "WRONG"))
    assert snapshot_ratio([runs[0], wrong]) is None  # a wrong run is no figure
    assert "n/a" in ratio_line([runs[0]])


def test_table_has_one_row_per_restart_and_failures_say_no() -> None:
    runs = [
        run_of(figures("snapshot", seconds=3.25, snapshot_bytes=int(1.5 * MIB))),
        run_of(figures("log", seconds=41.0, refolded=1_002_698)),
        RunResult("kill -9, static id", 1, error="RuntimeServiceError: ours exited with code 1"),
    ]
    header, rows = recovery_table(runs)
    assert header == HEADER
    assert rows[0] == ["1M, snapshot", "1,002,698 msgs", "3.2", "0", "1.50", "6 / 0 of 6", "yes"]
    assert rows[1][:5] == ["1M, whole log", "1,002,698 msgs", "41.0", "1,002,698", "(not read)"]
    assert rows[2] == ["kill -9, static id", "", "n/a", "n/a", "n/a", "n/a", "no"]
    assert recovery_row(run_of(figures("static", attempt=2)), "x")[-1] == "yes (try 2)"
    _, repeated = recovery_table([*runs[:1], run_of(figures("snapshot"), repeat=2)])
    assert [row[0] for row in repeated] == ["1M, snapshot #1", "1M, snapshot #2"]


def test_report_section_and_docs_page(tmp_path: Path) -> None:
    runs = [run_of(figures("snapshot")), run_of(figures("snapshot", 5_000_000, 4.4))]
    names = {r.contender: "our worker, restarted" for r in runs}
    started = datetime(2026, 11, 29, 18, 0, tzinfo=UTC)
    report = BenchReport("recovery", "streams bench --scenario recovery", started, 600.0, names, runs)
    assert report.ok and table_rows(report)[0] == HEADER
    text = markdown(report)
    assert "One row per restart" in text and "5M / 1M: 1.10x" in text and "| 5M, snapshot |" in text
    page = tmp_path / "benchmarks.md"
    update_docs(report, page)
    update_docs(report, page)
    assert page.read_text().count("<!-- streams bench: recovery -->") == 1


def test_recovery_options_default_to_a_million_events_once() -> None:
    options = BenchOptions.for_scenario("recovery")
    assert (options.events, options.repeats) == (1_000_000, 1)
    assert BenchOptions.for_scenario("recovery", events=50_000).events == 50_000
    assert BenchOptions.for_scenario("ctr").events == 200_000


def test_oracle_counting_passes_messages_through_and_equals_the_oracle_of_all() -> None:
    first = bench_messages(300, start_ms=1_795_000_000_000, rate=100)
    tail = bench_messages(50, start_ms=1_795_000_003_000, rate=100, seed=1001)
    oracle = Oracle()
    assert list(oracle.counting(first)) == first
    assert list(oracle.counting(iter(tail))) == tail
    expected = Oracle.of(first + tail)
    assert (oracle.windows, oracle.by_type) == (expected.windows, expected.by_type)


class FakeHistory:
    def __init__(self) -> None:
        self.stops = 0
        self.lines: list[str] = []

    def stop(self) -> None:
        self.stops += 1

    def report(self, line: str) -> None:
        self.lines.append(line)


def test_a_failed_or_wrong_restart_is_tried_once_more_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recovery, "RETRY_PAUSE_S", 0.0)
    h = FakeHistory()
    tries = iter([run_of(figures("snapshot", recoveries={"log": 6})), run_of(figures("snapshot"))])
    result = recovery.guarded(h, "1M, snapshot", 1, lambda: next(tries))  # type: ignore[arg-type]
    assert result.ok and result.recovery is not None and result.recovery.attempt == 2
    assert result.check is not None and "try 2, before:" in result.check.summary
    assert h.stops == 2 and any("try 1 failed" in line for line in h.lines)

    def broken() -> RunResult:
        raise RuntimeError("Cassandra is down")

    failed = recovery.guarded(h, "kill -9, dynamic", 1, broken)  # type: ignore[arg-type]
    assert failed.error == "RuntimeError: Cassandra is down" and not failed.ok
    first = recovery.guarded(h, "1M, whole log", 1, lambda: run_of(figures("log")))  # type: ignore[arg-type]
    assert first.ok and first.recovery is not None and first.recovery.attempt == 1
