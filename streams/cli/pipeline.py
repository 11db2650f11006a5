"""`streams worker | produce | query | demo`."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from streams.errors import RuntimeServiceError
from streams.pipelines import smoke
from streams.produce import ProduceReport, produce
from streams.runtime import manager
from streams.runtime.process import ManagedProcess
from streams.settings import Settings, load_settings

console = Console()
err = Console(stderr=True)
produce_app = typer.Typer(help="Produce generated events to Kafka.", no_args_is_help=True)
query_app = typer.Typer(help="Query results archived in Cassandra.", no_args_is_help=True)

AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def worker() -> None:
    """Run a Faust worker (stops cleanly on SIGTERM / Ctrl-C)."""
    from streams.worker import run_worker

    run_worker(load_settings())


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err, transient=True,
    )  # fmt: skip


def _produce_smoke(
    settings: Settings, run_id: str, count: int, rate: float | None, bad_every: int, seed: int
) -> ProduceReport:
    total = count + (count // bad_every if bad_every else 0)
    messages = smoke.smoke_events(
        run_id, count, start_ms=int(time.time() * 1000), seed=seed, bad_every=bad_every
    )
    with _progress() as progress:
        task = progress.add_task(f"producing to {settings.topics.smoke}", total=total)
        report = produce(
            settings.kafka, settings.topics.smoke, messages, rate=rate,
            on_progress=lambda n: progress.advance(task, n),
        )  # fmt: skip
    _report(report)
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
    _produce_smoke(settings, run_id, count, rate, bad_every, seed)
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
        campaigns=campaigns, ads=ads, out_of_order_share=out_of_order, late_share=late,
        duplicate_share=duplicates, malformed_share=malformed,
    )  # fmt: skip
    start = start_ms if start_ms is not None else int(time.time() * 1000)
    generator = ClickstreamGenerator(profile, seed=seed, start_ms=start, rate=rate)
    impressions = int(rate * duration)
    with _progress() as progress:
        task = progress.add_task(f"producing to {settings.topics.ad_events}", total=impressions)
        report = produce(
            settings.kafka, settings.topics.ad_events, generator.messages(impressions), rate=rate,
            on_progress=lambda n: progress.advance(task, n),
        )  # fmt: skip
    _report(report)


def _report(report: ProduceReport) -> None:
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


@query_app.command("smoke")
def query_smoke(
    run_id: Annotated[str, typer.Option(help="The run to read back.")],
    limit: Annotated[int, typer.Option(min=1, help="Rows to show.")] = 20,
    as_json: AsJson = False,
) -> None:
    """Rows the smoke pipeline archived for one run."""
    settings = load_settings()
    rows = _read_smoke(settings, run_id)
    if as_json:
        typer.echo(json.dumps(rows[:limit], indent=2))
        return
    _print_smoke(rows, limit)


def _read_smoke(settings: Settings, run_id: str) -> list[dict[str, object]]:
    from streams.io.cassandra import connect, read_smoke_events

    cluster, session = connect(settings.cassandra)
    try:
        return read_smoke_events(session, settings.cassandra.keyspace, run_id)
    finally:
        cluster.shutdown()


def _print_smoke(rows: list[dict[str, object]], limit: int) -> None:
    table = Table("event_id", "ts", "payload", "partition", "offset", "version", title=f"{len(rows)} rows")
    for row in rows[:limit]:
        table.add_row(
            *(
                str(row[c])
                for c in (
                    "event_id",
                    "ts",
                    "payload",
                    "source_partition",
                    "source_offset",
                    "pipeline_version",
                )
            )
        )
    console.print(table)


def _start_background_worker(settings: Settings) -> ManagedProcess:
    home = settings.runtime.home
    process = ManagedProcess("worker", home / "run" / "worker.pid", home / "worker" / "worker.log")
    if process.pid() is None:
        process.start([sys.executable, "-m", "streams", "worker"])
        console.print(f"worker: started (pid {process.pid()}, log {process.log_file})")
    else:
        console.print(f"worker: already running (pid {process.pid()})")
    return process


def demo(
    seconds: Annotated[float, typer.Option(min=1, help="How long to produce.")] = 10,
    rate: Annotated[float, typer.Option(min=1, help="Events per second.")] = 200,
) -> None:
    """Start everything, stream events for a while and show what arrived in Cassandra."""
    from streams.cli.dev import bootstrap

    settings = load_settings()
    manager.up(settings, report=console.print)
    bootstrap(settings)
    worker_process = _start_background_worker(settings)
    run_id = f"demo-{int(time.time())}"
    count = int(seconds * rate)
    console.print(f"producing {count} events (+ a few malformed ones) at {rate:.0f}/s, run {run_id}")
    _produce_smoke(settings, run_id, count, rate, bad_every=max(count // 5, 1), seed=7)
    deadline = time.monotonic() + 120
    rows: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        if worker_process.pid() is None:
            raise RuntimeServiceError(
                f"the worker stopped: {worker_process.last_log_line()} (log: {worker_process.log_file})"
            )
        rows = _read_smoke(settings, run_id)
        if len(rows) >= count:
            break
        time.sleep(1)
    _print_smoke(rows, 10)
    console.print(
        f"[bold]{len(rows)} of {count} events arrived in Cassandra[/] "
        f"({settings.cassandra.keyspace}.smoke_events, run_id={run_id})"
    )
    w = settings.worker
    console.print(f"metrics:    http://{w.metrics_host}:{w.metrics_port}/metrics")
    console.print(
        f"prometheus: http://127.0.0.1:{settings.runtime.prometheus_port}"
        "/graph?g0.expr=streams_events_processed_total"
    )
    console.print("dead letters: topic " + settings.topics.dead_letters)
    console.print("services and worker keep running; stop them with [bold]make down[/]")
    if len(rows) < count:
        raise RuntimeServiceError(
            f"only {len(rows)} of {count} events arrived (worker log: {worker_process.log_file})"
        )
