"""The figures of the ``recovery`` scenario and its table, notes and plot: one row per restart.

A restart is judged on two things besides its time: the results equal the oracle, and the
recovery took the path the row claims (every partition the tail reached recovered once, from a
snapshot or from the whole log as the mode says, and none from the other).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streams.bench.check import Check

if TYPE_CHECKING:
    from streams.bench.runner import RunResult

MIB = 1024 * 1024
TAIL_EVENTS = 2_000  # impressions produced before each restart (recovery is lazy: it needs traffic)
RATIO_TARGET = 1.3  # the acceptance: recovery after 5N events within 1.3x of after N
# mode -> (what the row says, the recovery source every partition must report)
MODES = {
    "snapshot": ("snapshot", "snapshot"),
    "log": ("whole log", "log"),
    "static": ("kill -9, static id", "snapshot"),
    "dynamic": ("kill -9, dynamic", "snapshot"),
}
HEADER = ["restart", "history", "recovery s", "re-folded msgs", "snapshot MiB", "recoveries snap / log",
          "correct"]  # fmt: skip


def events_label(events: int) -> str:
    """1000000 -> ``1M``, 5000000 -> ``5M``, 200000 -> ``200k``."""
    if events >= 1_000_000:
        return f"{events / 1_000_000:g}M"
    return f"{events / 1000:g}k" if events >= 1000 else str(events)


@dataclass(frozen=True)
class RecoveryFigures:
    """One restart of our worker after a history: how long to caught-up and what it re-folded."""

    mode: str  # snapshot | log | static | dynamic (see MODES)
    history_events: int  # impressions of the history (--events or a multiple)
    history_messages: int  # messages in the topic when the restart began
    seconds: float  # process start to the committed offsets at the topic's end
    refolded: int  # streams_recovery_messages_total of the restarted process
    recoveries: dict[str, int] = field(default_factory=dict)  # source -> partitions recovered
    tail_partitions: int = 0  # partitions the tail reached: each must recover once
    snapshot_bytes: int = 0  # the newest snapshot of every partition, summed, before the restart
    attempt: int = 1  # a restart that failed during another test's outage is tried once more

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown recovery mode {self.mode!r}")

    @property
    def source(self) -> str:
        return MODES[self.mode][1]

    @property
    def label(self) -> str:
        what = MODES[self.mode][0]
        return what if self.mode in ("static", "dynamic") else f"{events_label(self.history_events)}, {what}"

    @property
    def path_ok(self) -> bool:
        others = sum(n for source, n in self.recoveries.items() if source != self.source)
        return (
            self.tail_partitions > 0
            and self.recoveries.get(self.source, 0) == self.tail_partitions
            and not others
        )

    def path_summary(self) -> str:
        counts = ", ".join(f"{source} {n}" for source, n in sorted(self.recoveries.items())) or "none"
        verdict = "as expected" if self.path_ok else f"WRONG: expected {self.source} only"
        return f"recoveries {counts} of {self.tail_partitions} partitions ({verdict})"

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "label": self.label, "history_events": self.history_events,
            "history_messages": self.history_messages, "seconds": self.seconds, "refolded": self.refolded,
            "recoveries": self.recoveries, "tail_partitions": self.tail_partitions,
            "snapshot_bytes": self.snapshot_bytes, "expected_source": self.source, "path_ok": self.path_ok,
            "attempt": self.attempt,
        }  # fmt: skip


def verdict(results: Check, figures: RecoveryFigures) -> Check:
    """The oracle's check and the recovery path together: both must hold."""
    return Check(results.correct and figures.path_ok, f"{results.summary}; {figures.path_summary()}")


def snapshot_ratio(runs: Sequence[RunResult]) -> float | None:
    """Median over repeats of (snapshot recovery after the longest history / after the shortest)."""
    ratios = []
    snapshot = [r for r in runs if r.ok and r.recovery is not None and r.recovery.mode == "snapshot"]
    for repeat in sorted({r.repeat for r in snapshot}):
        seconds = {
            r.recovery.history_events: r.recovery.seconds
            for r in snapshot
            if r.repeat == repeat and r.recovery
        }
        if len(seconds) >= 2 and seconds[min(seconds)] > 0:
            ratios.append(seconds[max(seconds)] / seconds[min(seconds)])
    return statistics.median(ratios) if ratios else None


def ratio_line(runs: Sequence[RunResult]) -> str:
    histories = sorted(
        {r.recovery.history_events for r in runs if r.recovery and r.recovery.mode == "snapshot"}
    )
    ratio = snapshot_ratio(runs)
    if ratio is None or len(histories) < 2:
        return "Snapshot recovery ratio: n/a (needs a correct snapshot restart after each history)"
    met = "met" if ratio <= RATIO_TARGET else "NOT met"
    longest, shortest = events_label(histories[-1]), events_label(histories[0])
    return f"Snapshot recovery time {longest} / {shortest}: {ratio:.2f}x (target <= {RATIO_TARGET}x: {met})"


def recovery_row(run: RunResult, label: str) -> list[str]:
    f = run.recovery
    if f is None:
        return [label, "", "n/a", "n/a", "n/a", "n/a", "no"]
    size = f"{f.snapshot_bytes / MIB:,.2f}" if f.source == "snapshot" else "(not read)"
    recoveries = f"{f.recoveries.get('snapshot', 0)} / {f.recoveries.get('log', 0)} of {f.tail_partitions}"
    correct = ("yes" if run.ok else "no") + (f" (try {f.attempt})" if f.attempt > 1 else "")
    return [label, f"{f.history_messages:,} msgs", f"{f.seconds:,.1f}", f"{f.refolded:,}", size, recoveries,
            correct]  # fmt: skip


def recovery_table(runs: Sequence[RunResult]) -> tuple[list[str], list[list[str]]]:
    several = max((r.repeat for r in runs), default=1) > 1
    rows = []
    for run in runs:
        label = run.recovery.label if run.recovery else run.contender
        rows.append(recovery_row(run, f"{label} #{run.repeat}" if several else label))
    return HEADER, rows


def recovery_notes(runs: Sequence[RunResult], tail_events: int = TAIL_EVENTS) -> list[str]:
    return [
        ratio_line(runs),
        "",
        "Each history is pre-loaded, caught up by one worker and stopped with SIGTERM (its revoke "
        f"snapshots every partition); then a tail of {tail_events:,} impressions with later event times "
        "is produced and a worker started: the time is from its process start to its group's committed "
        "offsets at the topic's new end. `whole log`: the same with STREAMS_WORKER__SNAPSHOTS=false "
        "(another tail first). `kill -9`: a worker caught up on a tail is SIGKILLed, another tail "
        "produced, the worker restarted with the same STREAMS_WORKER__INSTANCE_ID (static) or none "
        "(dynamic: the group waits out the dead member's session timeout). Re-folded messages and "
        "recoveries by source are the restarted worker's own metrics; the snapshot size is the sum over "
        "partitions of the newest snapshot's `size` in `state_snapshots`. Correct: every window equals "
        "the oracle and every partition the tail reached recovered from the source the row names; "
        "`(try 2)`: the first try failed (e.g. during another test's outage of the shared services) and "
        "the restart was done again after another tail (what went wrong is in the JSON's check).",
    ]


def recovery_figure(runs: Sequence[RunResult]) -> Any:
    """Restart times, one bar per row (failed rows left out)."""
    import matplotlib.pyplot as plt

    _, rows = recovery_table([r for r in runs if r.ok and r.recovery])
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.5))
    seconds = [float(row[2].replace(",", "")) for row in rows]
    ax.barh([row[0] for row in rows], seconds, color="tab:green")
    ax.invert_yaxis()
    ax.set_xlabel("seconds from the worker's start to caught-up")
    for y, value in enumerate(seconds):
        ax.annotate(f"{value:,.1f}", (value, y), xytext=(4, 0), textcoords="offset points", va="center")
    return fig
