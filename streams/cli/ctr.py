"""`streams ctr fit-prior`: fit empirical-Bayes priors from the archive, for a new pipeline version."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from streams.cli.query import session_of
from streams.errors import ConfigError
from streams.settings import load_settings

app = typer.Typer(help="CTR model maintenance.", no_args_is_help=True)
console = Console()


@app.command("fit-prior")
def fit_prior(
    out: Annotated[
        Path, typer.Option(help="Where to write the prior file (pin it with STREAMS_CTR__PRIOR_FILE).")
    ],
    prior_version: Annotated[str, typer.Option(help="The version recorded with every row that uses it.")],
    source_version: Annotated[
        str | None,
        typer.Option(help="Pipeline version whose archived windows to fit on (default: configured)."),
    ] = None,
    window: Annotated[
        str | None, typer.Option(help="Window to sum per ad (default: the tumbling one).")
    ] = None,
    min_impressions: Annotated[
        int, typer.Option(min=1, help="Ads with fewer impressions are left out.")
    ] = 1000,
    min_cells: Annotated[
        int, typer.Option(min=2, help="Fewer usable ads than this: the fit is degenerate.")
    ] = 3,
) -> None:
    """Beta priors by method of moments: per campaign, plus a global one; degenerate fits back off."""
    from streams.ctr.smoothing import PriorSet, fit_priors
    from streams.io.ctr_store import scan_ad_totals

    settings = load_settings()
    if out.exists():
        raise ConfigError(f"{out} exists: prior files are versioned, write a new one")
    current = PriorSet.load(settings.ctr.prior_file)
    version = source_version or settings.worker.pipeline_version
    with session_of(settings) as session:
        cells = scan_ad_totals(session, settings.cassandra.keyspace, version, window or settings.ctr.tumbling)
    if not cells:
        raise ConfigError(
            f"no final {window or settings.ctr.tumbling} windows archived for version {version}"
        )
    priors = fit_priors(
        cells,
        version=prior_version,
        default=current.default,
        min_impressions=min_impressions,
        min_cells=min_cells,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(priors.to_json() + "\n")
    fitted = f"global {'fitted' if priors.global_ else 'degenerate (default kept)'}"
    console.print(
        f"wrote {out}: {len(priors.campaigns)} of {len(cells)} campaigns fitted, {fitted}; "
        f"pin it with STREAMS_CTR__PRIOR_FILE={out} in a new pipeline version"
    )


@app.command("prior-study")
def prior_study(
    seed: Annotated[int, typer.Option(help="Seed of the generated clickstream.")] = 7,
    hours: Annotated[int, typer.Option(min=2, help="Hours of event time generated.")] = 12,
    warmup_hours: Annotated[
        int, typer.Option(min=0, help="Windows starting earlier are left out (priors still learning).")
    ] = 6,
    rate: Annotated[float, typer.Option(min=1, help="Impressions per second of event time.")] = 20.0,
    spread: Annotated[float, typer.Option(min=1, help="Highest over lowest campaign CTR level.")] = 50.0,
    partitions: Annotated[int, typer.Option(min=1, help="Partitions the ads are spread over.")] = 4,
) -> None:
    """How close the smoothed hourly CTRs come to the generator's true CTRs: raw, the default prior,
    the learned priors and the true campaign priors (the ideal), by sparsity. No services needed."""
    from rich.table import Table

    from streams.ctr.smoothing import PriorSet
    from streams.ctr.study import METHODS, StudyOptions, run_study

    if warmup_hours >= hours - 1:
        raise ConfigError(f"--warmup-hours {warmup_hours} leaves no final hourly window of {hours} hours")
    settings = load_settings()
    default = PriorSet.load(settings.ctr.prior_file).default
    options = StudyOptions(seed, hours, rate, spread, partitions=partitions, warmup_hours=warmup_hours)
    title = f"RMSE of the smoothed hourly CTR against the true CTR (seed {seed}, {spread:g}x spread)"
    table = Table(title=title)
    table.add_column("impressions per window")
    table.add_column("windows", justify="right")
    for method in METHODS:
        table.add_column(f"RMSE {method}", justify="right")
    for method in METHODS[1:]:
        table.add_column(f"95% coverage {method}", justify="right")
    for band in run_study(options, default):
        rmse = [f"{band.rmse[m]:.5f}" if m in band.rmse else "-" for m in METHODS]
        coverage = [f"{band.coverage[m]:.1%}" if m in band.coverage else "-" for m in METHODS[1:]]
        table.add_row(band.band, f"{band.windows:,}", *rmse, *coverage)
    console.print(table)
    console.print("learned over true priors' RMSE: 1.0 is the ideal; raw has no interval")
