"""`streams query ctr | top-ads | smoke`: readable tables by default, ``--json`` for scripts."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from streams.errors import ConfigError
from streams.lifecycle import resolve_version
from streams.settings import Settings, load_settings

app = typer.Typer(help="Query results archived in Cassandra.", no_args_is_help=True)
console = Console()

AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
Version = Annotated[
    str | None, typer.Option("--version", help="Pipeline version (default: the serving one).")
]


def parse_time_ms(text: str) -> int:
    """Epoch milliseconds, or an ISO-8601 time (UTC unless it says otherwise)."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"not a time: {text!r} (use ISO-8601 like 2026-11-23T10:00 or epoch ms)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%m-%d %H:%M")


@contextmanager
def session_of(settings: Settings) -> Iterator[Any]:
    from streams.io.cassandra import connect

    cluster, session = connect(settings.cassandra)
    try:
        if settings.cassandra.keyspace not in cluster.metadata.keyspaces:
            raise ConfigError(
                f"keyspace {settings.cassandra.keyspace} does not exist yet: nothing was processed "
                "(start `streams worker`, or run `make demo`)"
            )
        yield session
    finally:
        cluster.shutdown()


def emit(
    rows: Sequence[dict[str, Any]], as_json: bool, render: Callable[[], None], empty: str = "no rows"
) -> None:
    """JSON for scripts, else a table (``render``), else ``empty``."""
    if as_json:
        typer.echo(json.dumps(list(rows), indent=2, default=str))
    elif not rows:
        console.print(empty)
    else:
        render()


def version_ctr_params(session: Any, settings: Settings, explicit: str | None) -> tuple[str, dict[str, Any]]:
    """The version to read (explicit, else serving) and the CTR settings it was pinned with."""
    from streams.io.version_store import read_version
    from streams.lifecycle import resolve_version

    version = resolve_version(session, settings, explicit)
    record = read_version(session, settings.cassandra.keyspace, version)
    ctr = record.params.get("ctr", {}) if record else {}
    return version, {**settings.ctr.model_dump(), **ctr}


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _window_table(title: str, rows: Sequence[dict[str, Any]]) -> Table:
    columns = ("window (UTC)", "impr.", "clicks", "raw", "smoothed", "95% interval", "prior", "final")
    table = Table(*columns, title=title, box=box.SIMPLE_HEAD)
    for r in rows:
        table.add_row(
            iso(r["window_start"]),
            str(r["impressions"]),
            str(r["clicks"]),
            pct(r["raw_ctr"]),
            pct(r["smoothed_ctr"]),
            f"{pct(r['ci_low'])}-{pct(r['ci_high'])}",
            r["prior_level"],
            "yes" if r["final"] else "no",
        )
    return table


@app.command("ctr")
def query_ctr(
    ad: Annotated[str | None, typer.Option(help="An ad id.")] = None,
    campaign: Annotated[str | None, typer.Option(help="A campaign id.")] = None,
    window: Annotated[
        str, typer.Option(help="Which window: the tumbling (1m) or the hopping (1h) one.")
    ] = "1m",
    start: Annotated[
        str | None, typer.Option("--from", help="From (ISO-8601 UTC or epoch ms; default: a day ago).")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="Until (default: now).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Most recent windows to show.")] = 30,
    version: Version = None,
    as_json: AsJson = False,
) -> None:
    """Rolling CTR of one ad or one campaign, newest window first."""
    from streams.ctr.views import campaign_windows
    from streams.io.ctr_store import read_ad_windows, read_campaign_partials

    if (ad is None) == (campaign is None):
        raise ConfigError("give exactly one of --ad or --campaign")
    settings = load_settings()
    to_ms = parse_time_ms(end) if end else int(time.time() * 1000) + 1
    from_ms = parse_time_ms(start) if start else to_ms - 86_400_000
    keyspace = settings.cassandra.keyspace
    with session_of(settings) as session:
        pipeline_version, ctr = version_ctr_params(session, settings, version)
        if window not in (ctr["tumbling"], ctr["hopping"]):
            raise ConfigError(
                f"unknown window {window!r}: version {pipeline_version} has "
                f"{ctr['tumbling']} and {ctr['hopping']}"
            )
        if ad is not None:
            rows = read_ad_windows(session, keyspace, pipeline_version, ad, window, from_ms, to_ms)
            title = f"ad {ad}, {window} windows, version {pipeline_version}"
        else:
            assert campaign is not None
            partials = read_campaign_partials(
                session, keyspace, pipeline_version, campaign, window, from_ms, to_ms
            )
            rows = campaign_windows(partials, ctr["ci_level"])
            title = f"campaign {campaign}, {window} windows, version {pipeline_version}"
    rows = rows[:limit]
    emit(rows, as_json, lambda: console.print(_window_table(title, rows)))


@app.command("top-ads")
def query_top_ads(
    segment: Annotated[str, typer.Option(help="The segment (user group).")],
    k: Annotated[int, typer.Option("--k", min=1, help="How many ads.")] = 10,
    at: Annotated[str | None, typer.Option(help="Newest window ended by this time (default: now).")] = None,
    final_only: Annotated[
        bool, typer.Option("--final-only", help="Only a window closed past grace.")
    ] = False,
    include_open: Annotated[
        bool, typer.Option("--include-open", help="The newest window started by --at, though still open.")
    ] = False,
    version: Version = None,
    as_json: AsJson = False,
) -> None:
    """Best ads of a segment in its newest hopping window that has ended (or, with --include-open,
    started), by the lower credible bound."""
    from streams.ctr.views import ended_windows_before, top_ads
    from streams.ctr.windows import parse_duration_ms
    from streams.io.ctr_store import read_latest_segment_window

    settings = load_settings()
    at_ms = parse_time_ms(at) if at else int(time.time() * 1000) + 1
    with session_of(settings) as session:
        pipeline_version, ctr = version_ctr_params(session, settings, version)
        bound = at_ms if include_open else ended_windows_before(at_ms, parse_duration_ms(ctr["hopping"]))
        cells = read_latest_segment_window(
            session, settings.cassandra.keyspace, pipeline_version, segment, ctr["hopping"], bound, final_only
        )
    rows = top_ads(cells, k)

    def render() -> None:
        first = rows[0]
        state = "final" if first["final"] else ("ended" if first["window_end"] <= at_ms else "open")
        title = (
            f"top {len(rows)} ads in segment {segment}, window {iso(first['window_start'])} .. "
            f"{iso(first['window_end'])} UTC ({state}), by lower {100 * first['ci_level']:.0f}% bound"
        )
        table = Table(
            "ad",
            "campaign",
            "impr.",
            "clicks",
            "smoothed",
            "95% interval",
            "prior",
            title=title,
            box=box.SIMPLE_HEAD,
        )
        for r in rows:
            table.add_row(
                r["ad_id"], r["campaign_id"], str(r["impressions"]), str(r["clicks"]),
                pct(r["smoothed_ctr"]), f"{pct(r['ci_low'])}-{pct(r['ci_high'])}", r["prior_level"],
            )  # fmt: skip
        console.print(table)

    empty = "no rows"
    if not include_open:
        final = " and is final" if final_only else ""
        empty = (f"no {ctr['hopping']} window of segment {segment} has ended by {iso(at_ms)} UTC{final}: "
                 "--include-open shows the newest one started")  # fmt: skip
    emit(rows, as_json, render, empty)


@app.command("smoke")
def query_smoke(
    run_id: Annotated[str, typer.Option(help="The run to read back.")],
    limit: Annotated[int, typer.Option(min=1, help="Rows to show.")] = 20,
    version: Version = None,
    as_json: AsJson = False,
) -> None:
    """Rows the smoke pipeline archived for one run."""
    from streams.io.cassandra import read_smoke_events

    settings = load_settings()
    with session_of(settings) as session:
        rows = read_smoke_events(
            session, settings.cassandra.keyspace, resolve_version(session, settings, version), run_id
        )
    emit(rows[:limit], as_json, lambda: print_smoke(rows, limit))


def print_smoke(rows: Sequence[dict[str, Any]], limit: int) -> None:
    table = Table("event_id", "ts", "payload", "partition", "offset", "version", title=f"{len(rows)} rows")
    columns = ("event_id", "ts", "payload", "source_partition", "source_offset", "pipeline_version")
    for row in rows[:limit]:
        table.add_row(*(str(row[c]) for c in columns))
    console.print(table)
