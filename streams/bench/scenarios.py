"""Choosing the contenders of a scenario and running it (the body of `streams bench`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from streams.bench.contenders import CTR_CONTENDERS, Contender
from streams.bench.ctr import bench_backlog, bench_latency, replay_contenders
from streams.bench.fraud import ENTITY_MODEL, bench_fraud, bench_fraud_latency
from streams.bench.memory import MEMORY_SCENARIOS
from streams.bench.recovery import bench_recovery
from streams.bench.report import BenchReport, started_now
from streams.bench.runner import Input, Report, RunResult
from streams.bench.soak import PIPELINES, bench_soak, bench_state, phase_name
from streams.errors import ConfigError
from streams.settings import Settings

SCENARIOS = ("ctr", "replay", "latency", "fraud", "fraud-latency", *MEMORY_SCENARIOS, "recovery")
# (rate, seconds, repeats) when not given: a soak runs once for 10 minutes, well below our rate.
OTHER_DEFAULTS = (500.0, 20.0, 3)
DEFAULTS = {
    "soak": (1000.0, 600.0, 1),
    "state": (*OTHER_DEFAULTS[:2], 1),
    "recovery": (*OTHER_DEFAULTS[:2], 1),
}
# --events when not given: the recovery scenario's histories are that and five times that.
EVENTS = {"recovery": 1_000_000}
DEFAULT_EVENTS = 200_000


@dataclass(frozen=True)
class BenchOptions:
    scenario: str = "ctr"
    events: int = DEFAULT_EVENTS
    repeats: int = 3
    contenders: tuple[str, ...] = tuple(CTR_CONTENDERS)
    rate: float = 500.0
    seconds: float = 20.0
    workers: tuple[int, ...] = (1, 2)
    keys: int = 1_000_000
    out_dir: Path = Path(".streams/bench")
    pipelines: tuple[str, ...] = PIPELINES  # soak, state: the phases
    time_scale: float = 1.0  # soak: seconds of event time per second

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ConfigError(f"unknown scenario {self.scenario!r}: choose one of {', '.join(SCENARIOS)}")
        unknown = [name for name in self.contenders if name not in CTR_CONTENDERS]
        if unknown or not self.contenders:
            choices = ", ".join(CTR_CONTENDERS)
            raise ConfigError(f"unknown contender {unknown[0] if unknown else ''!r}: choose from {choices}")
        if not self.workers or min(self.workers) < 1:
            raise ConfigError("--workers needs positive process counts, e.g. 1,2")
        if self.keys < 1000:
            raise ConfigError("--keys needs at least 1000 (the CTR phase sweeps a tenth as many ads)")
        if not self.pipelines or any(p not in PIPELINES for p in self.pipelines):
            raise ConfigError(
                f"--pipelines takes some of {','.join(PIPELINES)}, not {','.join(self.pipelines)!r}"
            )
        if self.time_scale < 1:
            raise ConfigError("--time-scale is event seconds per wall second: 1 or more")

    @classmethod
    def for_scenario(
        cls, scenario: str, *, rate: float | None = None, seconds: float | None = None,
        repeats: int | None = None, events: int | None = None, **options: Any,
    ) -> BenchOptions:  # fmt: skip
        """Options with the scenario's own defaults for what was not given."""
        default_rate, default_seconds, default_repeats = DEFAULTS.get(scenario, OTHER_DEFAULTS)
        return cls(
            scenario=scenario,
            events=EVENTS.get(scenario, DEFAULT_EVENTS) if events is None else events,
            rate=default_rate if rate is None else rate,
            seconds=default_seconds if seconds is None else seconds,
            repeats=default_repeats if repeats is None else repeats,
            **options,
        )


def ctr_contenders(names: Sequence[str]) -> tuple[list[Contender], dict[str, str]]:
    """The named contenders that can run here, and why the others cannot."""
    chosen, skipped = [], {}
    for name in names:
        contender = CTR_CONTENDERS[name]()
        reason = contender.unavailable()
        if reason:
            skipped[name] = reason
        else:
            chosen.append(contender)
    return chosen, skipped


def run_bench(settings: Settings, options: BenchOptions, command: str, report: Report) -> BenchReport:
    """Run the scenario and return every run with the input it used (outputs are written by the caller)."""
    started, clock = started_now(), time.monotonic()
    o = options
    bench: Input | None = None
    runs: list[RunResult] = []
    skipped: dict[str, str] = {}
    contenders: list[Contender] = []
    if o.scenario in ("ctr", "latency"):
        contenders, skipped = ctr_contenders(o.contenders)
    if o.scenario == "replay":
        contenders = replay_contenders(o.workers)
    for name, reason in skipped.items():
        report(f"skipping {name}: {reason}")
    if o.scenario in ("ctr", "replay"):
        bench, runs = bench_backlog(settings, contenders, o.events, o.repeats, o.out_dir, report)
    elif o.scenario == "fraud":
        bench, runs = bench_fraud(settings, o.events, o.repeats, o.out_dir, report)
    if o.scenario == "latency":
        runs = bench_latency(settings, contenders, o.rate, o.seconds, o.repeats, o.out_dir, report)
    if o.scenario in ("latency", "fraud-latency"):
        runs += bench_fraud_latency(settings, o.rate, o.seconds, o.repeats, o.out_dir, report)
    if o.scenario == "soak":
        runs = bench_soak(
            settings, o.rate, o.seconds, o.repeats, o.out_dir, report, o.pipelines, o.time_scale
        )
    if o.scenario == "state":
        runs = bench_state(settings, o.keys, o.repeats, o.out_dir, report, o.pipelines)
    if o.scenario == "recovery":
        runs = bench_recovery(settings, o.events, o.repeats, o.out_dir, report)
    names = {c.name: c.description for c in contenders}
    if o.scenario in MEMORY_SCENARIOS:
        names = {phase_name(p): f"this project's worker (`streams worker`, {p} pipeline only, 1 process)"
                 for p in PIPELINES}  # fmt: skip
    if o.scenario == "recovery":
        names = {r.contender: "this project's worker (`streams worker`, ctr pipeline, 1 process), restarted"
                 for r in runs}  # fmt: skip
    if o.scenario == "fraud":
        names["ours"] = "this project's worker (`streams worker`, fraud pipeline, 1 process)"
        names["ours-entities"] = f"the same with the entity stage on (model {ENTITY_MODEL.name})"
    if o.scenario in ("latency", "fraud-latency"):
        names["ours (fraud)"] = "this project's worker, fraud pipeline: transaction to its score record"
        names["ours (fraud, entity features)"] = f"the same, entity stage on (model {ENTITY_MODEL.name})"
    options_json = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(o).items()}
    return BenchReport(
        o.scenario, command, started, time.monotonic() - clock, names, runs, bench, skipped, options_json
    )
