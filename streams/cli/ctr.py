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
