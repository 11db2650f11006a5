"""`streams replay | promote | retire | versions | verify`: Kappa reprocessing from the command line."""

from __future__ import annotations

import json
import time
from collections import deque
from datetime import datetime
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from streams.cli.query import AsJson, emit, parse_time_ms, session_of
from streams.errors import ConfigError, RuntimeServiceError
from streams.settings import Settings, load_settings

console = Console()
err = Console(stderr=True)

CaughtUpLag = Annotated[
    int, typer.Option(min=0, help="A version is caught up when at most this many records are unprocessed.")
]


def _settings_for(version: str) -> Settings:
    from pydantic import ValidationError

    from streams.settings import WorkerSettings

    base = load_settings()
    try:
        worker = WorkerSettings.model_validate({**base.worker.model_dump(), "pipeline_version": version})
    except ValidationError:
        raise ConfigError(
            f"not a version name: {version!r} (letters, digits, '.', '_' and '-'; up to 48)"
        ) from None
    return base.model_copy(update={"worker": worker})


def replay(
    version: Annotated[str, typer.Option("--version", help="The new pipeline version's name.")],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Read the raw topics from their start (the default).")
    ] = False,
    start: Annotated[
        str | None, typer.Option("--from", help="Start at this time instead (ISO-8601 UTC or epoch ms).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes of the new version.")] = 1,
    wait: Annotated[bool, typer.Option(help="Show progress until the version has caught up.")] = True,
    caught_up_lag: CaughtUpLag = 1000,
    timeout: Annotated[float, typer.Option(min=1, help="Give up waiting after this many seconds.")] = 3600,
) -> None:
    """Start a pipeline version over the log (own consumer group, state and results) while the
    serving version keeps running; settings come from the environment, as for `streams worker`."""
    from streams import lifecycle
    from streams.compose import compose

    if from_beginning and start:
        raise ConfigError("give --from-beginning or --from, not both")
    settings = _settings_for(version)
    composition = compose(settings)  # settings that cannot work create and register nothing
    from_ms = parse_time_ms(start) if start else None
    with session_of(settings) as session:
        lifecycle.bootstrap(settings, session)
        record, created = lifecycle.begin_replay(session, settings, from_ms, composition=composition)
        processes = lifecycle.start_workers(settings, version, workers)
        origin = "the beginning" if from_ms is None else start
        verb = "started" if created else "resumed"
        console.print(f"replay of {version} {verb} from {origin} with {len(processes)} workers")
        console.print(
            f"  logs: {settings.runtime.home / 'worker'}/worker-{settings.worker.app_id}-{version}-*.log"
        )
        if not wait:
            return
        names = lifecycle.names(settings, record)
        _follow(session, settings, record, names, processes, caught_up_lag, timeout)


def _follow(
    session: Any,
    settings: Settings,
    record: Any,
    names: Any,
    processes: list[Any],
    threshold: int,
    timeout: float,
) -> None:
    """Records behind per topic, rate and ETA, until the version is within ``threshold`` of the head."""
    from streams import lifecycle
    from streams.versions import measure_lag

    samples: deque[tuple[float, int]] = deque(maxlen=10)
    deadline = time.monotonic() + timeout
    with Live(console=err, refresh_per_second=2, transient=True) as live:
        while True:
            lag = measure_lag(settings, names)
            samples.append((time.monotonic(), sum(lag.committed.values())))
            (t0, n0), (t1, n1) = samples[0], samples[-1]
            rate = (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0
            live.update(_progress_table(record.version, lag, rate))
            if lag.total <= threshold and (sum(lag.committed.values()) > 0 or lag.total == 0):
                lifecycle.caught_up(session, settings, record, lag, threshold)
                break
            if all(p.pid() is None for p in processes):
                logs = ", ".join(str(p.log_file) for p in processes)
                why = processes[0].last_error()[:300]
                raise RuntimeServiceError(f"the workers of {record.version} exited: {why} (logs: {logs})")
            if time.monotonic() > deadline:
                raise RuntimeServiceError(
                    f"{record.version} has not caught up in {timeout:.0f}s ({lag.total} records behind); "
                    "its workers keep running (`streams versions`)"
                )
            time.sleep(1.0)
    console.print(
        f"{record.version} has caught up with the live head ({lag.total} records behind, "
        f"{sum(lag.committed.values())} processed); its workers keep following the log. "
        f"Compare with `streams verify`, switch readers with `streams promote {record.version}`."
    )


def _progress_table(version: str, lag: Any, rate: float) -> Group:
    table = Table("topic", "processed", "behind", box=box.SIMPLE_HEAD, title=f"replay of {version}")
    for topic, behind in lag.behind.items():
        table.add_row(topic, f"{lag.committed[topic]:,}", f"{behind:,}")
    eta = f"{lag.total / rate:,.0f} s" if rate > 0 else "-"
    return Group(table, f"rate {rate:,.0f} records/s, {lag.total:,} behind, ETA {eta}")


def promote(
    version: Annotated[str, typer.Argument(help="The version readers should use from now on.")],
    force: Annotated[bool, typer.Option(help="Promote even if it has not caught up.")] = False,
    caught_up_lag: CaughtUpLag = 1000,
) -> None:
    """Switch the serving version atomically: `query` commands (and documented CQL) read it."""
    from streams import lifecycle

    settings = load_settings()
    with session_of(settings) as session:
        previous = lifecycle.promote(session, settings, version, max_lag=caught_up_lag, force=force)
    if previous is None:
        console.print(f"{version} already serves")
    else:
        console.print(f"{version} now serves (before: {previous or 'none'})")


def retire(
    version: Annotated[str, typer.Argument(help="The version to remove.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Stop a version's workers and delete its topics, consumer group, state and result rows."""
    from streams import lifecycle

    settings = load_settings()
    with session_of(settings) as session:
        lifecycle.require(session, settings, version)
        if not yes:
            typer.confirm(f"retire {version}: delete its result topics, consumer group and rows?", abort=True)
        lifecycle.retire(session, settings, version, report=lambda line: console.print(f"  {line}"))
    console.print(f"{version} retired")


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def versions(caught_up_lag: CaughtUpLag = 1000, as_json: AsJson = False) -> None:
    """Every pipeline version: state, serving, workers, lag, created and promoted times."""
    from streams import lifecycle
    from streams.io import version_store as store
    from streams.io.kafka import group_members
    from streams.versions import measure_lag

    settings = load_settings()
    rows: list[dict[str, Any]] = []
    with session_of(settings) as session:
        serving = store.serving_version(session, settings.cassandra.keyspace)
        for record in store.list_versions(session, settings.cassandra.keyspace):
            row: dict[str, Any] = {
                "version": record.version,
                "state": record.state,
                "serving": record.version == serving,
            }
            if record.state != lifecycle.RETIRED:
                names = lifecycle.names(settings, record)
                lag = measure_lag(settings, names)
                if lifecycle.caught_up(session, settings, record, lag, caught_up_lag):
                    # Just marked live: show the record as it is now (caught-up time included).
                    keyspace = settings.cassandra.keyspace
                    record = store.read_version(session, keyspace, record.version) or record
                    row["state"] = lifecycle.LIVE
                row |= {"workers": group_members(settings.kafka, names.group_id), "lag": lag.total}
            ctr, fraud = record.params.get("ctr", {}), record.params.get("fraud", {})
            row |= {
                "pipelines": list(record.pipelines),
                "windows": f"{ctr.get('tumbling')}/{ctr.get('hopping')} every {ctr.get('hop_every')}",
                "model": fraud.get("model", {}).get("file"),
                "replay_from": record.replay_from,
                "params_digest": record.params_digest,
                "created_at": _when(record.created_at),
                "caught_up_at": _when(record.caught_up_at),
                "promoted_at": _when(record.promoted_at),
                "retired_at": _when(record.retired_at),
            }
            rows.append(row)

    def render() -> None:
        table = Table(
            "", "version", "state", "workers", "lag", "windows", "model", "from", "created", "caught up",
            "promoted", box=box.SIMPLE_HEAD,
        )  # fmt: skip
        for r in rows:
            table.add_row(
                "*" if r["serving"] else "", r["version"], r["state"], str(r.get("workers", "-")),
                f"{r['lag']:,}" if "lag" in r else "-", r["windows"], str(r["model"]), r["replay_from"],
                r["created_at"], r["caught_up_at"], r["promoted_at"],
            )  # fmt: skip
        console.print(table)
        console.print("* serving: `streams query` and the documented CQL read this version")

    emit(rows, as_json, render, empty="no versions yet (start a worker or `streams replay`)")


def verify(
    version_a: Annotated[str, typer.Argument(help="One version.")],
    version_b: Annotated[str, typer.Argument(help="The other version.")],
    start: Annotated[str | None, typer.Option("--from", help="Windows/transactions from this time.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="... until this time (exclusive).")] = None,
    tables: Annotated[str | None, typer.Option(help="Comma-separated result tables (default: all).")] = None,
    rel_tol: Annotated[
        float, typer.Option(min=0, help="Relative tolerance for decimals (default exact).")
    ] = 0.0,
    examples: Annotated[int, typer.Option(min=0, help="Differences to print per table.")] = 10,
    as_json: AsJson = False,
) -> None:
    """Compare two versions' results window by window and score by score; exit 1 on differences."""
    from streams.io.version_store import read_version
    from streams.verify import RESULT_TABLES, compare, read_results

    settings = load_settings()
    chosen = [t for t in RESULT_TABLES if tables is None or t.name in tables.split(",")]
    if tables is not None and len(chosen) != len(tables.split(",")):
        known = ", ".join(t.name for t in RESULT_TABLES)
        raise ConfigError(f"unknown table in {tables!r}; choose from {known}")
    from_ms = parse_time_ms(start) if start else None
    to_ms = parse_time_ms(end) if end else None
    keyspace = settings.cassandra.keyspace
    results = []
    with session_of(settings) as session:
        for version in (version_a, version_b):
            if read_version(session, keyspace, version) is None:
                raise ConfigError(f"unknown version {version!r} (see `streams versions`)")
        for table in chosen:
            a = read_results(session, keyspace, table, version_a, from_ms, to_ms)
            b = read_results(session, keyspace, table, version_b, from_ms, to_ms)
            results.append(compare(table, a, b, rel_tol=rel_tol, max_examples=examples))
    total = sum(r.differences for r in results)
    if as_json:
        typer.echo(json.dumps([_as_dict(r) for r in results], indent=2, default=str))
    else:
        _print_comparison(version_a, version_b, results)
    if total:
        raise typer.Exit(1)


def _as_dict(result: Any) -> dict[str, Any]:
    return {
        "table": result.table, "rows_a": result.rows_a, "rows_b": result.rows_b,
        "only_in_a": result.only_in_a, "only_in_b": result.only_in_b, "differing": result.differing,
        "examples": [
            {"key": list(d.key), "kind": d.kind, "columns": {c: list(v) for c, v in d.columns.items()}}
            for d in result.examples
        ],
    }  # fmt: skip


def _print_comparison(version_a: str, version_b: str, results: list[Any]) -> None:
    table = Table(
        "table", f"rows {version_a}", f"rows {version_b}", f"only in {version_a}", f"only in {version_b}",
        "differing", box=box.SIMPLE_HEAD, title=f"{version_a} vs {version_b}",
    )  # fmt: skip
    for r in results:
        table.add_row(
            r.table,
            f"{r.rows_a:,}",
            f"{r.rows_b:,}",
            f"{r.only_in_a:,}",
            f"{r.only_in_b:,}",
            f"{r.differing:,}",
        )
    console.print(table)
    for r in results:
        for d in r.examples:
            where = f"{r.table} {'/'.join(map(str, d.key))}"
            if d.kind == "differs":
                what = "; ".join(f"{c}: {a!r} vs {b!r}" for c, (a, b) in d.columns.items())
                console.print(f"  {where}: {what}")
            else:
                side = version_a if d.kind == "only_in_a" else version_b
                console.print(f"  {where}: only in {side}")
    total = sum(r.differences for r in results)
    console.print("no differences" if total == 0 else f"{total:,} rows differ")
