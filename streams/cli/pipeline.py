"""`streams worker | produce | bench`, and the producing helpers other commands share."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from streams.errors import ConfigError, RuntimeServiceError, StreamsError
from streams.produce import ProduceReport, produce
from streams.settings import Settings, load_settings
from streams.smoke import logic as smoke

console = Console()
err = Console(stderr=True)
produce_app = typer.Typer(help="Produce generated events to Kafka.", no_args_is_help=True)


def worker() -> None:
    """Run a worker: the engine over every pipeline of the version (stops cleanly on SIGTERM / Ctrl-C).
    Settings are checked before anything is started or registered."""
    from streams.compose import compose
    from streams.worker import run_worker

    settings = load_settings()
    run_worker(settings, compose(settings))


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err, transient=True,
    )  # fmt: skip


def produce_smoke_run(
    settings: Settings, run_id: str, count: int, rate: float | None, bad_every: int, seed: int
) -> ProduceReport:
    total = count + (count // bad_every if bad_every else 0)
    messages = smoke.smoke_events(
        run_id, count, start_ms=int(time.time() * 1000), seed=seed, bad_every=bad_every
    )
    with progress_bar() as progress:
        task = progress.add_task(f"producing to {settings.topics.smoke}", total=total)
        report = produce(
            settings.kafka, settings.topics.smoke, messages, rate=rate,
            on_progress=lambda n: progress.advance(task, n),
        )  # fmt: skip
    check_report(report)
    return report


@produce_app.command("smoke")
def produce_smoke(
    count: Annotated[int, typer.Option(min=1, help="Valid events to send.")] = 1000,
    rate: Annotated[
        float | None,
        typer.Option(min=1, help="Messages per second (default: as fast as possible)."),
    ] = None,
    run_id: Annotated[
        str | None, typer.Option(help="Groups the events of one run (default: time-based).")
    ] = None,
    bad_every: Annotated[
        int, typer.Option(min=0, help="Add one malformed message after every N valid ones.")
    ] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the generator.")] = 0,
) -> None:
    """Smoke events: proves Kafka -> worker -> Cassandra."""
    settings = load_settings()
    run_id = run_id or f"run-{int(time.time())}"
    produce_smoke_run(settings, run_id, count, rate, bad_every, seed)
    console.print(f"run id: {run_id}")


@produce_app.command("clickstream")
def produce_clickstream(
    rate: Annotated[
        float, typer.Option(min=1, help="Impressions per second (event time follows the wall clock).")
    ] = 1000,
    duration: Annotated[float, typer.Option(min=0.1, help="Seconds of traffic.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed: the same seed and start give the same messages.")] = 1,
    start_ms: Annotated[
        int | None, typer.Option(help="Event time of the first impression (default: now).")
    ] = None,
    ads: Annotated[int, typer.Option(min=1, help="Ads (spread over the campaigns).")] = 400,
    campaigns: Annotated[int, typer.Option(min=1, help="Campaigns.")] = 20,
    campaign_spread: Annotated[
        float, typer.Option(min=1, help="Highest over lowest campaign CTR level (display vs search: 10-50).")
    ] = 30.0,
    out_of_order: Annotated[float, typer.Option(min=0, max=1, help="Share of out-of-order events.")] = 0.02,
    late: Annotated[
        float, typer.Option(min=0, max=1, help="Share of events later than the grace period.")
    ] = 0.002,
    duplicates: Annotated[float, typer.Option(min=0, max=1, help="Share of re-sent events.")] = 0.005,
    malformed: Annotated[float, typer.Option(min=0, max=1, help="Share of malformed messages.")] = 0.001,
) -> None:
    """Ad impressions and clicks (keyed by ad_id) with realistic sparsity and dirt."""
    from streams.ctr.generator import ClickstreamGenerator, ClickstreamProfile

    settings = load_settings()
    profile = ClickstreamProfile(
        campaigns=campaigns, ads=ads, campaign_spread=campaign_spread, out_of_order_share=out_of_order,
        late_share=late, duplicate_share=duplicates, malformed_share=malformed,
    )  # fmt: skip
    start = start_ms if start_ms is not None else int(time.time() * 1000)
    generator = ClickstreamGenerator(profile, seed=seed, start_ms=start, rate=rate)
    impressions = int(rate * duration)
    with progress_bar() as progress:
        task = progress.add_task(f"producing to {settings.topics.ad_events}", total=impressions)
        report = produce(
            settings.kafka, settings.topics.ad_events, generator.messages(impressions), rate=rate,
            on_progress=lambda n: progress.advance(task, n),
        )  # fmt: skip
    check_report(report)


def check_report(report: ProduceReport) -> None:
    if report.failed:
        raise RuntimeServiceError(
            f"{report.failed} messages were not acknowledged by Kafka: {report.first_error}"
        )
    console.print(f"sent {report.sent} messages in {report.seconds:.1f}s ({report.rate:.0f} msg/s)")
    if not report.kept_up:
        err.print(
            f"warning: could not sustain the requested {report.requested_rate:.0f} msg/s "
            f"(reached {report.rate:.0f} msg/s)"
        )


def bench(
    scenario: Annotated[
        str,
        typer.Option(
            help="ctr | replay (backlog catch-up) | latency (fixed rate) | fraud | fraud-latency | "
            "soak (worker RSS at a steady rate) | state (worker RSS as keys grow) | "
            "recovery (worker restart to caught-up after N and 5N events of history, with and without "
            "snapshots, and after kill -9 with and without a static instance id)."
        ),
    ] = "ctr",
    events: Annotated[
        int | None,
        typer.Option(
            min=1000,
            help="Impressions (transactions) in the pre-loaded backlog (200,000); recovery: N, the "
            "shorter history (1,000,000; the longer one is 5N).",
        ),
    ] = None,
    repeats: Annotated[
        int | None, typer.Option(min=1, help="Runs of every contender (default 3; soak, state, recovery: 1).")
    ] = None,
    contenders: Annotated[
        str, typer.Option(help="ctr, latency: comma-separated, of ours, naive-faust, quix, raw.")
    ] = "ours,naive-faust,quix,raw",
    rate: Annotated[
        float | None,
        typer.Option(min=1, help="latency, soak: offered events (transactions) per second (500; soak 1000)."),
    ] = None,
    seconds: Annotated[
        float | None,
        typer.Option(min=1, help="latency: how long to offer them (20); soak: after a 30 s warm-up (600)."),
    ] = None,
    workers: Annotated[str, typer.Option(help="replay: worker process counts to compare, e.g. 1,2.")] = "1,2",
    pipelines: Annotated[
        str, typer.Option(help="soak, state: the phases to run, of ctr,fraud.")
    ] = "ctr,fraud",
    time_scale: Annotated[
        float,
        typer.Option(
            min=1,
            help="soak: seconds of event time per second (60: the fraud phase reaches its 24 h horizons).",
        ),
    ] = 1.0,
    keys: Annotated[
        int,
        typer.Option(
            min=1000, help="state: customers, one transaction each; the CTR phase sweeps a tenth as many ads."
        ),
    ] = 1_000_000,
    out: Annotated[Path, typer.Option(help="Where results (JSON, Markdown, PNG) and logs go.")] = Path(
        ".streams/bench"
    ),
    docs: Annotated[
        Path | None,
        typer.Option(help="Page whose section for this scenario is rewritten (default: docs/benchmarks.md)."),
    ] = None,
    no_docs: Annotated[bool, typer.Option("--no-docs", help="Leave the benchmarks page alone.")] = False,
) -> None:
    """Compare our worker with a naive Faust job, Quix Streams and a raw consumer on this machine;
    measure our worker's memory at a steady rate (soak) and as its state grows (state), and its
    restart time after a long history and after kill -9 (recovery)."""
    from streams.bench.memory import MEMORY_SCENARIOS
    from streams.bench.scenarios import BenchOptions, run_bench
    from streams.settings import project_dir

    try:
        process_counts = tuple(int(n) for n in workers.split(","))
    except ValueError:
        raise ConfigError(f"--workers takes process counts like 1,2, not {workers!r}") from None
    options = BenchOptions.for_scenario(
        scenario,
        rate=rate,
        seconds=seconds,
        repeats=repeats,
        events=events,
        contenders=tuple(name.strip() for name in contenders.split(",") if name.strip()),
        workers=process_counts,
        keys=keys,
        out_dir=out,
        pipelines=tuple(name.strip() for name in pipelines.split(",") if name.strip()),
        time_scale=time_scale,
    )
    command = shlex.join(["streams", *sys.argv[1:]])
    result = run_bench(load_settings(), options, command, lambda line: err.print(line, highlight=False))
    what = f"medians of {options.repeats}"
    if scenario in MEMORY_SCENARIOS or scenario == "recovery":
        what = "one row per " + ("restart" if scenario == "recovery" else "phase")
    page = None if no_docs else docs or project_dir() / "docs" / "benchmarks.md"
    show_bench(result, f"streams bench --scenario {scenario} ({what})", out, page)
    if not result.ok:
        failed = sum(1 for run in result.runs if not run.ok)
        raise StreamsError(f"{failed} of {len(result.runs)} runs failed or gave wrong results (see {out})")


def show_bench(result: Any, title: str, out: Path, page: Path | None) -> None:
    """The result table, the files written, and the benchmarks ``page`` updated (None: left alone)."""
    from rich.table import Table

    from streams.bench.report import table_rows, update_docs, write_outputs

    header, rows = table_rows(result)
    table = Table(title=title)
    for i, column in enumerate(header):
        table.add_column(column, no_wrap=i == 0, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if result.scenario == "recovery":
        from streams.bench.recovery_report import ratio_line

        console.print(ratio_line(result.runs))
    for path in write_outputs(result, out, lambda line: err.print(f"warning: {line}")):
        console.print(f"wrote {path}")
    if page is not None:
        update_docs(result, page)
        console.print(f"updated {page}")
