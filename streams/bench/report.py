"""What `streams bench` leaves behind: medians per contender, a JSON file with every run, a Markdown
table, a PNG plot, and the scenario's section of ``docs/benchmarks.md``."""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from streams.bench.measure import Measurement
from streams.bench.memory import MEMORY_SCENARIOS
from streams.bench.memory_report import memory_figure, memory_notes, memory_table
from streams.bench.recovery_report import recovery_figure, recovery_notes, recovery_table
from streams.bench.runner import Input, RunResult

LATENCY_KEYS = ("p50", "p99", "p999")


@dataclass(frozen=True)
class Summary:
    """Medians of one contender's runs (failed or wrong runs are counted, not averaged in)."""

    contender: str
    description: str
    runs: int
    correct: int
    events_per_s: float | None = None
    vs_baseline: float | None = None  # median over repeats of (this / the first contender), same repeat
    cpu_s_per_million: float | None = None
    peak_rss_mib: float | None = None
    startup_s: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    offered_per_s: float | None = None  # latency scenarios: the rate the producer sustained


@dataclass
class BenchReport:
    scenario: str
    command: str
    started: datetime
    seconds: float
    contenders: dict[str, str]  # name -> description, in run order
    runs: list[RunResult]
    input: Input | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.runs) and all(run.ok for run in self.runs)

    @property
    def baseline(self) -> str:
        return next(iter(self.contenders), "")

    def summaries(self) -> list[Summary]:
        return [summarize(name, text, self.runs, self.baseline) for name, text in self.contenders.items()]


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def rated_runs(runs: Sequence[RunResult], name: str) -> dict[int, Measurement]:
    """repeat -> figures, of a contender's correct runs that measured a rate."""
    return {
        r.repeat: r.measurement
        for r in runs
        if r.contender == name and r.ok and r.measurement is not None and r.measurement.rated
    }


def measured(runs: Sequence[RunResult], name: str) -> list[Measurement]:
    return list(rated_runs(runs, name).values())


def summarize(name: str, description: str, runs: Sequence[RunResult], baseline: str) -> Summary:
    mine = [r for r in runs if r.contender == name]
    rated, base = rated_runs(runs, name), rated_runs(runs, baseline)
    ratios = [m.events_per_s / base[repeat].events_per_s for repeat, m in rated.items() if repeat in base]
    latencies = [r.latency_ms for r in mine if r.ok and r.latency_ms and r.latency_ms.get("events")]
    return Summary(
        contender=name,
        description=description,
        runs=len(mine),
        correct=sum(1 for r in mine if r.ok),
        events_per_s=_median([m.events_per_s for m in rated.values()]),
        vs_baseline=_median(ratios),
        cpu_s_per_million=_median([m.cpu_s_per_million for m in rated.values()]),
        peak_rss_mib=_median([r.measurement.peak_rss_mib for r in mine if r.ok and r.measurement]),
        startup_s=_median([r.measurement.startup_s for r in mine if r.ok and r.measurement]),
        latency_ms={k: v for k in LATENCY_KEYS if (v := _median([lat[k] for lat in latencies])) is not None},
        offered_per_s=_median([lat["offered_per_s"] for lat in latencies if "offered_per_s" in lat]),
    )


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(), "platform": platform.platform()}  # fmt: skip


def bench_input(bench: Input) -> dict[str, Any]:
    return {"topic_messages": bench.messages, "mean_message_bytes": round(bench.mean_bytes, 1), **bench.extra}


def to_json(report: BenchReport) -> dict[str, Any]:
    bench = report.input
    return {
        "scenario": report.scenario,
        "command": report.command,
        "started_utc": report.started.isoformat(timespec="seconds"),
        "seconds": round(report.seconds, 1),
        "ok": report.ok,
        "machine": machine(),
        "options": report.options,
        "input": None if bench is None else bench_input(bench),
        "contenders": report.contenders,
        "skipped": report.skipped,
        "summary": [asdict(s) for s in report.summaries()],
        "runs": [run.to_json() for run in report.runs],
    }


def _fmt(value: float | None, pattern: str = "{:,.0f}") -> str:
    return (
        "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else pattern.format(value)
    )


def table_rows(report: BenchReport) -> tuple[list[str], list[list[str]]]:
    """Column headers and one row per contender (shared by the terminal and Markdown tables)."""
    if report.scenario in MEMORY_SCENARIOS:
        return memory_table(report.scenario, report.runs)
    if report.scenario == "recovery":
        return recovery_table(report.runs)
    summaries = report.summaries()
    if any(s.latency_ms for s in summaries) or report.scenario in ("latency", "fraud-latency"):
        header = ["contender", "offered events/s", "p50 ms", "p99 ms", "p99.9 ms", "correct"]
        rows = [
            [s.contender, _fmt(s.offered_per_s), *(_fmt(s.latency_ms.get(k)) for k in LATENCY_KEYS),
             f"{s.correct}/{s.runs}"]
            for s in summaries
        ]  # fmt: skip
    else:
        header = ["contender", "events/s", f"vs {report.baseline}", "CPU s / 1M events", "peak RSS MiB",
                  "start-up s", "correct"]  # fmt: skip
        rows = [[s.contender, _fmt(s.events_per_s), _fmt(s.vs_baseline, "{:.2f}x"), _fmt(s.cpu_s_per_million),
                 _fmt(s.peak_rss_mib), _fmt(s.startup_s, "{:.1f}"), f"{s.correct}/{s.runs}"]
                for s in summaries]  # fmt: skip
    rows += [
        [name, "skipped: " + reason, *([""] * (len(header) - 2))] for name, reason in report.skipped.items()
    ]
    return header, rows


def markdown(report: BenchReport) -> str:
    header, rows = table_rows(report)
    lines = [
        f"Command: `{report.command}`  ",
        f"Run: {report.started:%Y-%m-%d %H:%M} UTC, {report.seconds:.0f} s; machine: {os.cpu_count()} CPUs "
        f"shared with Kafka and Cassandra (load average {os.getloadavg()[0]:.1f} at the end)  ",
    ]
    if report.input is not None:
        extra = report.input.extra
        span = f", {extra['event_time_span_s']:.0f} s of event time" if "event_time_span_s" in extra else ""
        lines.append(
            f"Input: {report.input.messages:,} messages of ~{report.input.mean_bytes:.0f} bytes{span}"
        )
    repeats = max((r.repeat for r in report.runs), default=0)
    memory = report.scenario in MEMORY_SCENARIOS
    align = "|".join(["---"] + ["---:"] * (len(header) - 1))
    recovery = report.scenario == "recovery"
    what = (
        f"One row per {'restart' if recovery else 'phase'} and repeat ({repeats} repeat(s))."
        if memory or recovery
        else f"Medians over {repeats} repeat(s)."
    )
    lines += ["", what, "", "| " + " | ".join(header) + " |", f"|{align}|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if memory:
        lines += ["", *memory_notes(report.scenario, report.runs)]
    if recovery:
        lines += ["", *recovery_notes(report.runs)]
    failures = [f"- {r.contender} (repeat {r.repeat}): {r.error or (r.check.summary if r.check else '')}"
                for r in report.runs if not r.ok]  # fmt: skip
    if failures:
        lines += ["", "Failed or wrong runs:", *failures]
    return "\n".join(lines) + "\n"


def plot(report: BenchReport, path: Path) -> None:
    """Throughput and CPU per contender (backlog scenarios) or latency percentiles (latency ones)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summaries = [s for s in report.summaries() if s.correct]
    names = [s.contender for s in summaries]
    if report.scenario in MEMORY_SCENARIOS:
        fig = memory_figure(report.scenario, report.runs)
    elif report.scenario == "recovery":
        fig = recovery_figure(report.runs)
    elif any(s.latency_ms for s in summaries):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        width = 0.8 / len(LATENCY_KEYS)
        for i, key in enumerate(LATENCY_KEYS):
            values = [s.latency_ms.get(key, 0) for s in summaries]
            positions = [x + i * width for x in range(len(names))]
            bars = ax.bar(positions, values, width, label=key.replace("p999", "p99.9"))
            ax.bar_label(bars, fmt="{:,.0f}", fontsize=8)
        ax.set_xticks([x + width for x in range(len(names))], names)
        ax.set_yscale("log")
        ax.set_ylabel("produce-to-result latency, ms (log)")
        ax.legend()
    else:
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
        per_run = {name: [m.events_per_s for m in measured(report.runs, name)] for name in names}
        rates = [s.events_per_s or 0 for s in summaries]
        low = [rate - min(per_run[n], default=rate) for n, rate in zip(names, rates, strict=True)]
        high = [max(per_run[n], default=rate) - rate for n, rate in zip(names, rates, strict=True)]
        cpu = [s.cpu_s_per_million or 0 for s in summaries]
        left.barh(names, rates, xerr=[low, high], color="tab:blue")
        left.set_xlabel("events/s, backlog catch-up (log; whiskers: min-max of repeats)")
        right.barh(names, cpu, color="tab:orange")
        right.set_xlabel("CPU seconds per million events (log)")
        for ax, values in ((left, rates), (right, cpu)):
            if any(v > 0 for v in values):
                ax.set_xscale("log")
                ax.set_xlim(left=max(min(v for v in values if v > 0) / 4, 0.1))
            ax.invert_yaxis()
            for y, value in enumerate(values):
                text, x = (f"{value:,.0f}", value) if value > 0 else ("n/a (run too short)", ax.get_xlim()[0])
                ax.annotate(text, (x, y), xytext=(4, 0), textcoords="offset points", va="center")
    offered = ""
    if "latency" in report.scenario or report.scenario == "soak":
        offered = f", {report.options['rate']:,.0f} events/s offered"
    fig.suptitle(f"streams bench --scenario {report.scenario} ({report.started:%Y-%m-%d}{offered})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(report: BenchReport, out_dir: Path, warn: Callable[[str], None]) -> list[Path]:
    """``<scenario>.json``, ``.md`` and ``.png`` under ``out_dir``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / report.scenario
    written = [stem.with_suffix(".json"), stem.with_suffix(".md")]
    written[0].write_bytes(
        orjson.dumps(to_json(report), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
    written[1].write_text(f"## streams bench: {report.scenario}\n\n" + markdown(report))
    try:
        plot(report, stem.with_suffix(".png"))
        written.append(stem.with_suffix(".png"))
    except ImportError:
        warn("matplotlib is not installed: no plot (pip install -e '.[bench]')")
    return written


def update_docs(report: BenchReport, page: Path) -> None:
    """Replace the scenario's section of the benchmarks page (between its markers), or append one."""
    begin, end = f"<!-- streams bench: {report.scenario} -->", f"<!-- /streams bench: {report.scenario} -->"
    section = f"{begin}\n{markdown(report)}{end}"
    text = page.read_text() if page.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + f"\n\n## Latest results: `{report.scenario}`\n\n{section}\n"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text)


def started_now() -> datetime:
    return datetime.now(UTC)
