"""`streams dev up | down | status`: the local runtime."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from streams.runtime import manager
from streams.settings import Settings, load_settings

app = typer.Typer(
    help="Local runtime: Kafka (KRaft), Cassandra and Prometheus, no Docker.", no_args_is_help=True
)
console = Console()

Only = Annotated[
    list[str] | None,
    typer.Option("--only", help="Limit to these services (kafka, cassandra, prometheus); repeatable."),
]


def bootstrap(settings: Settings) -> None:
    """Create the project's topics and Cassandra schema (idempotent)."""
    from streams import lifecycle
    from streams.io.cassandra import connect

    cluster, session = connect(settings.cassandra)
    try:
        created = lifecycle.bootstrap(settings, session)
    finally:
        cluster.shutdown()
    if created:
        console.print(f"kafka: created topics {', '.join(created)}")
    console.print(f"cassandra: keyspace {settings.cassandra.keyspace} ready")


@app.command()
def up(only: Only = None) -> None:
    """Fetch (once) and start the services, wait for their health checks, create topics and tables."""
    settings = load_settings()
    manager.up(settings, only, report=console.print)
    if not only or {"kafka", "cassandra"} <= set(only):
        bootstrap(settings)


@app.command()
def down(
    only: Only = None,
    wipe: Annotated[bool, typer.Option("--wipe", help="Also delete the services' data.")] = False,
) -> None:
    """Stop exactly the processes the runtime started (pid files)."""
    manager.down(load_settings(), only, wipe=wipe, report=console.print)


@app.command()
def status(
    only: Only = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Report each service: running, starting or stopped."""
    rows = manager.status(load_settings(), only)
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in rows], indent=2))
        return
    table = Table("service", "state", "pid", "address", "log")
    for r in rows:
        colour = {"running": "green", "starting": "yellow"}.get(r.state, "red")
        table.add_row(r.name, f"[{colour}]{r.state}[/]", str(r.pid or "-"), r.address, r.log)
    console.print(table)
