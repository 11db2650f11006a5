"""The tables, notes and plot of the memory scenarios (``soak``, ``state``): one row per phase and
repeat, since a trend of one long run is the figure, not a median of short ones."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from streams.bench.memory import KEY_NAMES, TARGET_KEYS, SoakFigures, StateFigures, least_squares_slope
from streams.bench.runner import RunResult

SOAK_HEADER = ["phase", "events/s", "event time x", "RSS start", "RSS end", "peak", "growth (%)",
               "MiB/min, 2nd half", "bytes/event", "RSS bytes/key", "snapshot bytes/key", "most behind",
               "correct"]  # fmt: skip
STATE_HEADER = ["phase", "keys", "events/s", "RSS first", "10 % keys", "50 %", "100 %", "settled",
                "bytes/key", "at target", "correct"]  # fmt: skip
TARGETS = " and ".join(f"{TARGET_KEYS[p]:,} {KEY_NAMES[p]}" for p in TARGET_KEYS)


def _num(value: float, pattern: str = "{:,.0f}") -> str:
    return "n/a" if math.isnan(value) else pattern.format(value)


def _signed(value: float, decimals: int) -> str:
    """``+1.25``, ``-0.50``; never ``-0.00`` for a value that rounds to zero."""
    return "n/a" if math.isnan(value) else f"{round(value, decimals) + 0.0:+,.{decimals}f}"


def _label(run: RunResult, runs: Sequence[RunResult]) -> str:
    return run.contender if max(r.repeat for r in runs) == 1 else f"{run.contender} #{run.repeat}"


def _correct(run: RunResult) -> str:
    return "yes" if run.ok else "no"


def soak_row(run: RunResult, figures: SoakFigures, label: str) -> list[str]:
    growth_mib, growth_pct = figures.growth
    return [
        label, _num(figures.offered_per_s), _num(figures.time_scale, "{:,.0f}"), _num(figures.start_mib),
        _num(figures.end_mib), _num(figures.peak_mib),
        f"{_signed(growth_mib, 1)} ({_signed(growth_pct, 1)} %)",
        _signed(figures.slope_mib_per_min, 2), _signed(figures.bytes_per_event, 0),
        _num(figures.state_per_key_bytes), _num(figures.snapshot_per_key_bytes), f"{figures.most_behind:,}",
        _correct(run),
    ]  # fmt: skip


def state_row(run: RunResult, figures: StateFigures, label: str) -> list[str]:
    m = run.measurement
    rate = _num(m.events_per_s) if m is not None and m.rated else "n/a"
    target = _num(figures.at_target_mib) + (" (extrapolated)" if figures.extrapolated else " (measured)")
    return [
        label, f"{figures.keys:,} {figures.key_name}", rate, _num(figures.first_mib), _num(figures.at(0.1)),
        _num(figures.at(0.5)), _num(figures.at(1.0)), _num(figures.settled_mib),
        _num(figures.per_key_bytes), target, _correct(run),
    ]  # fmt: skip


def memory_table(scenario: str, runs: Sequence[RunResult]) -> tuple[list[str], list[list[str]]]:
    header = SOAK_HEADER if scenario == "soak" else STATE_HEADER
    rows = []
    for run in runs:
        label = _label(run, runs)
        if isinstance(run.memory, SoakFigures):
            rows.append(soak_row(run, run.memory, label))
        elif isinstance(run.memory, StateFigures):
            rows.append(state_row(run, run.memory, label))
        else:
            rows.append([label, "failed", *([""] * (len(header) - 3)), _correct(run)])
    return header, rows


def memory_notes(scenario: str, runs: Sequence[RunResult]) -> list[str]:
    """How each run was fed, and how to read the figures."""
    notes = []
    for run in runs:
        m = run.memory
        if isinstance(m, SoakFigures):
            history = (
                f"{m.history_s:,.0f} s of history ({m.history_events:,} events) caught up in "
                f"{m.history_catch_up_s:,.0f} s first"
                if m.history_events and m.history_catch_up_s is not None
                else "no history"
            )
            notes.append(
                f"- {_label(run, runs)}: {history}; {m.warmup_s:.0f} s warm-up, then {m.seconds:.0f} s "
                f"measured; VmHWM of the whole run {m.peak_hwm_mib:,.0f} MiB."
            )
        elif isinstance(m, StateFigures):
            notes.append(
                f"- {_label(run, runs)}: {m.keys:,} {m.key_name}, one event each; VmHWM "
                f"{m.peak_hwm_mib:,.0f} MiB."
            )
    if scenario == "soak":
        every = next((f"{r.memory.sample_s:.0f} s" for r in runs if isinstance(r.memory, SoakFigures)), "")
        notes.append(
            f"- RSS in MiB (VmRSS), sampled every {every}; start and end are the first and last samples "
            "of the measured period, peak its largest; the slope is the least-squares fit over its "
            "second half; bytes/event is that slope over the offered rate; most behind = produced but "
            "not yet done, at worst, in the measured period. event time x = seconds of event time per "
            "second (a scaled soak reaches the 24 h horizons within the run); RSS bytes/key = RSS at the "
            "end above the idle worker's (consumer buffers, batches and the interpreter's arenas "
            "included), over the distinct keys (customers, ads) produced; snapshot bytes/key = the "
            "newest snapshot of every partition at the end (the state itself, msgpack) over those keys."
        )
    else:
        notes.append(
            f"- RSS in MiB (VmRSS); first = serving, nothing done yet. bytes/key = RSS growth from 10 % "
            f"to 100 % of the keys over the keys added in between. at target = RSS with {TARGETS}: "
            "measured, or (extrapolated) = RSS at 100 % plus bytes/key for the missing keys, a straight "
            "line that dict resizes and the allocator only follow roughly."
        )
        if any(isinstance(r.memory, StateFigures) and math.isnan(r.memory.per_key_bytes) for r in runs):
            notes.append(
                "- n/a: the keys were done in one batch (up to 10,000 events), so there is no slope: "
                "sweep more keys (--keys)."
            )
    return notes


def memory_figure(scenario: str, runs: Sequence[RunResult]) -> Any:
    """RSS over time (soak) or over the share of keys seen (state), one line per phase."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.8))
    for run in runs:
        m = run.memory
        if isinstance(m, SoakFigures):
            minutes = [s.seconds / 60 for s in m.samples]
            (line,) = ax.plot(minutes, [s.rss_mib for s in m.samples], label=_label(run, runs))
            half = [(s.seconds / 60, s.rss_mib) for s in m.steady if s.seconds >= m.warmup_s + m.seconds / 2]
            if len(half) >= 2:
                slope = least_squares_slope(half)
                mean_x, mean_y = sum(x for x, _ in half) / len(half), sum(y for _, y in half) / len(half)
                xs = [half[0][0], half[-1][0]]
                ax.plot(xs, [mean_y + slope * (x - mean_x) for x in xs], "--", color=line.get_color(),
                        label=f"fit, 2nd half: {slope:+.2f} MiB/min")  # fmt: skip
            ax.axvline(m.warmup_s / 60, color="grey", linestyle=":", linewidth=1)
        elif isinstance(m, StateFigures):
            shares = [100 * s.done / m.keys for s in m.samples]
            ax.plot(shares, [s.rss_mib for s in m.samples], marker=".", label=f"{_label(run, runs)}: "
                    f"{m.keys:,} {m.key_name}, {m.per_key_bytes:,.0f} bytes/key")  # fmt: skip
    if scenario == "soak":
        ax.set_xlabel("minutes since the live traffic started (dotted: end of the warm-up)")
    else:
        ax.set_xlabel("% of the keys seen (one event per key)")
    ax.set_ylabel("worker RSS, MiB")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
