"""`streams train`, `streams produce transactions`, `streams query fraud | fraud-metrics`."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from streams.cli.query import AsJson, Version, emit, iso, parse_time_ms, pct, session_of
from streams.cli.query import app as query_app
from streams.errors import ConfigError
from streams.lifecycle import resolve_version
from streams.settings import load_settings

console = Console()
DAY_MS = 86_400_000


def train(
    version: Annotated[str, typer.Option(help="The new model version (written into the file).")],
    out: Annotated[
        Path, typer.Option(help="Where to write the model file (pin it with STREAMS_FRAUD__MODEL_FILE).")
    ],
    source_version: Annotated[
        str | None, typer.Option(help="Pipeline version whose archived, labelled transactions to learn from.")
    ] = None,
    maturity_days: Annotated[
        int, typer.Option(min=0, help="Unlabelled transactions older than this count as legitimate.")
    ] = 30,
    synthetic: Annotated[
        bool, typer.Option(help="Learn from generated history instead (bootstrap).")
    ] = False,
    transactions: Annotated[int, typer.Option(min=1000, help="With --synthetic: how many.")] = 120_000,
    seed: Annotated[int, typer.Option(help="With --synthetic: the generator seed.")] = 1001,
    rings: Annotated[
        bool,
        typer.Option(help="With --synthetic: traffic with fraud rings (`produce transactions --rings`)."),
    ] = False,
    entities: Annotated[
        bool, typer.Option(help="With --synthetic: entity features too (`fraud.entities`, one global view).")
    ] = False,
    fraud_weight: Annotated[
        float | None,
        typer.Option(min=1.0, help="A fraud row's weight in the fit (default: balanced classes)."),
    ] = None,
) -> None:
    """Train a fraud model: time-based split, class weights, calibration, report against the current model."""
    from streams.cli.transactions import RING_SHARES
    from streams.fraud.model import FraudModel
    from streams.fraud.synthetic import load_ip_prefixes, synthetic_training_data
    from streams.fraud.training import train as fit

    settings = load_settings()
    if out.exists():
        raise ConfigError(f"{out} exists: model files are versioned, write a new one")
    if entities and not synthetic:
        raise ConfigError("--entities needs --synthetic: archived data with entity features is not supported")
    if synthetic:
        data = synthetic_training_data(
            load_ip_prefixes(settings.fraud.ip_countries_file), seed=seed, transactions=transactions,
            start_ms=1_764_547_200_000, ring_shares=RING_SHARES if rings else (0.0, 0.0, 0.0),
            entities=entities,
        )  # fmt: skip
    else:
        data = _archived_training_data(
            settings, source_version or settings.worker.pipeline_version, maturity_days
        )
    current = FraudModel.load(settings.fraud.model_file) if settings.fraud.model_file.exists() else None
    try:
        threshold = settings.fraud.disable_invoice_at
        model, report = fit(data, version, threshold=threshold, current=current, fraud_weight=fraud_weight)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if entities:  # the command that makes the file again (older files, made without it, stay as they are)
        weight = "" if fraud_weight is None else f" --fraud-weight {fraud_weight:g}"
        command = (f"streams train --version {version} --out {out} --synthetic --transactions {transactions} "
                   f"--seed {seed}{' --rings' if rings else ''} --entities{weight}")  # fmt: skip
        model = replace(model, metrics={**model.metrics, "command": command})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(model.to_json() + "\n")
    print_training_report(report, version)
    console.print(
        f"wrote {out}; deploy it as a new pipeline version (replay) with STREAMS_FRAUD__MODEL_FILE={out}"
    )


def print_training_report(report: dict[str, Any], version: str) -> None:
    table = Table(
        "model", "PR-AUC", "recall@thr", "precision@thr", "Brier",
        title="test split (newest 20 %)", box=box.SIMPLE_HEAD,
    )  # fmt: skip
    for name in ("new", "current"):
        if name in report:
            r = report[name]
            table.add_row(
                f"{name} {r.get('version', version)}",
                f"{r['pr_auc']:.3f}",
                pct(r["recall_at_threshold"]),
                pct(r["precision_at_threshold"]),
                f"{r['brier']:.4f}",
            )
    console.print(table)
    train, test = report["train"], report["test"]
    if report.get("weighted"):
        console.print(
            f"holdout rows weighted 1 / holdout share: effective sample size {train['effective_n']:,.0f} "
            f"of {train['n']:,} training rows, {test['effective_n']:,.0f} of {test['n']:,} test rows"
        )


def _archived_training_data(settings: Any, version: str, maturity_days: int) -> Any:
    from streams.fraud.training import TrainingData
    from streams.io.fraud_store import scan_training_rows
    from streams.io.version_store import read_version

    with session_of(settings) as session:
        rows = scan_training_rows(session, settings.cassandra.keyspace, version)
        record = read_version(session, settings.cassandra.keyspace, version)
    pinned = record.params.get("fraud", {}) if record is not None else {}
    holdout_share = float(pinned.get("holdout_share", settings.fraud.holdout_share))
    if not rows:
        raise ConfigError(f"no scored transactions archived for version {version}")
    newest = max(r["ts"] for r in rows)
    usable = [r for r in rows if r["is_fraud"] is not None or r["ts"] < newest - maturity_days * DAY_MS]
    # Blocked transactions show no fraud: learn from the allowed ones and the holdout, a holdout row
    # standing for 1 / h risky transactions (the share the source version was pinned with).
    usable = [r for r in usable if r["decision"] == "allow"]
    return TrainingData(
        np.array([r["features"] for r in usable], dtype=float),
        np.array([1.0 if r["is_fraud"] else 0.0 for r in usable]),
        np.array([r["ts"] for r in usable], dtype=np.int64),
        np.array([1.0 / holdout_share if r["holdout"] else 1.0 for r in usable]),
    )


@query_app.command("fraud")
def query_fraud(
    transaction: Annotated[str | None, typer.Option(help="A transaction id.")] = None,
    customer: Annotated[str | None, typer.Option(help="A customer id.")] = None,
    start: Annotated[str | None, typer.Option("--from", help="From (ISO-8601 UTC or epoch ms).")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Until (default: now).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Most recent transactions to show.")] = 30,
    version: Version = None,
    as_json: AsJson = False,
) -> None:
    """Scores and decisions of one transaction or of a customer's transactions, newest first."""
    from streams.io.fraud_store import read_customer, read_transaction

    if (transaction is None) == (customer is None):
        raise ConfigError("give exactly one of --transaction or --customer")
    settings = load_settings()
    to_ms = parse_time_ms(end) if end else int(time.time() * 1000) + 1
    from_ms = parse_time_ms(start) if start else 0
    with session_of(settings) as session:
        pipeline_version = resolve_version(session, settings, version)
        if transaction is not None:
            rows = read_transaction(session, settings.cassandra.keyspace, pipeline_version, transaction)
        else:
            assert customer is not None
            rows = read_customer(
                session, settings.cassandra.keyspace, pipeline_version, customer, from_ms, to_ms, limit
            )
    emit(rows, as_json, lambda: _print_scores(rows, pipeline_version))


def _print_scores(rows: list[dict[str, Any]], pipeline_version: str) -> None:
    table = Table(
        "time (UTC)",
        "transaction",
        "score",
        "decision",
        "holdout",
        "reasons",
        "label",
        box=box.SIMPLE_HEAD,
        title=f"version {pipeline_version}, model {rows[0]['model_version']}",
    )
    for r in rows:
        is_fraud = r.get("is_fraud")
        label = ("fraud" if is_fraud else "legit" if is_fraud is False else "-") if "is_fraud" in r else ""
        table.add_row(
            iso(r["ts"]),
            r["transaction_id"],
            f"{r['score']:.3f}",
            r["decision"],
            "yes" if r["holdout"] else "",
            ", ".join(r["reasons"] or []),
            label,
        )
    console.print(table)


@query_app.command("fraud-metrics")
def query_fraud_metrics(
    days: Annotated[int, typer.Option(min=1, help="Most recent cohorts (days of decision).")] = 14,
    version: Version = None,
    as_json: AsJson = False,
) -> None:
    """Quality per decision cohort from delayed labels (refreshed by the workers)."""
    from streams.io.fraud_store import read_metrics

    settings = load_settings()
    with session_of(settings) as session:
        pipeline_version = resolve_version(session, settings, version)
        rows = read_metrics(session, settings.cassandra.keyspace, pipeline_version, days)
    for row in rows:
        row["reliability"] = json.loads(row["reliability"] or "[]")
        row["decisions"] = dict(row["decisions"] or {})
    emit(rows, as_json, lambda: _print_cohorts(rows, pipeline_version), empty="no cohort metrics yet")


def _print_cohorts(rows: list[dict[str, Any]], pipeline_version: str) -> None:
    """Two tables (each fits 80 columns): quality at the threshold with its intervals, daily and
    pooled over 7 days; then the day's labels and its ranking quality."""
    threshold = Table(
        "cohort",
        "held out",
        "precision",
        "recall",
        "7-day precision",
        "7-day recall",
        title=f"fraud cohorts, version {pipeline_version}: at the threshold (95 % intervals)",
        caption="held out: flagged rows allowed anyway, whose outcome is seen; below "
        "STREAMS_FRAUD__MIN_HOLDOUT_ROWS of them a cohort is insufficient",
        box=box.SIMPLE_HEAD,
    )
    ranking = Table(
        "cohort",
        "tx",
        "labelled",
        "fraud",
        "prec@k",
        "rec@k",
        "PR-AUC",
        "computed",
        title="the review queue (k = the review budget) and the ranking; computed: UTC",
        caption="prec@k, rec@k: - when the queue's blocked rows rest on fewer than "
        "STREAMS_FRAUD__MIN_HOLDOUT_ROWS held-out ones",
        box=box.SIMPLE_HEAD,
    )
    for r in rows:
        day = iso(r["cohort_day"] * DAY_MS)[:5]
        threshold.add_row(
            day,
            "-" if r.get("holdout_flagged") is None else str(r["holdout_flagged"]),
            _estimate(r, "precision"),
            _estimate(r, "recall"),
            _estimate(r, "pooled_precision", "pooled_insufficient"),
            _estimate(r, "pooled_recall", "pooled_insufficient"),
        )
        ranking.add_row(
            day,
            str(r["transactions"]),
            str(r["labelled"]),
            str(r["fraud_labelled"]),
            _percent(r["precision_at_k"]),
            _percent(r.get("recall_at_k")),
            "-" if r["pr_auc"] is None else f"{r['pr_auc']:.3f}",
            "-" if r.get("computed_at") is None else f"{r['computed_at']:%m-%d %H:%M}",
        )
    console.print(threshold)
    console.print(ranking)


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _estimate(row: dict[str, Any], name: str, insufficient: str = "insufficient") -> str:
    """``25% (11-47)``, or ``insufficient``."""
    if row.get(insufficient):
        return "insufficient"
    value, low, high = row.get(name), row.get(f"{name}_low"), row.get(f"{name}_high")
    if value is None:
        return "-"
    if low is None or high is None:
        return _percent(value)
    return f"{100 * value:.0f}% ({100 * low:.0f}-{100 * high:.0f})"


def evaluate(
    model_files: Annotated[
        list[Path] | None,
        typer.Option(
            "--model", help="A model file, or several to compare (default: STREAMS_FRAUD__MODEL_FILE)."
        ),
    ] = None,
    transactions: Annotated[int, typer.Option(min=100, help="Generated transactions.")] = 20_000,
    days: Annotated[float, typer.Option(min=0.01, help="Days of event time they span.")] = 14,
    seed: Annotated[int, typer.Option(help="Generator seed (other than training's, 1001).")] = 2001,
    rings: Annotated[bool, typer.Option(help="Include fraud rings (`produce transactions --rings`).")] = True,
    partitions: Annotated[
        int | None,
        typer.Option(min=1, help="Kafka partitions to spread customers over (default: the topic's)."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Detection per fraud pattern on generated ground truth (no services), models side by side:
    recall at the invoice-disable and review thresholds, PR-AUC against legitimate traffic, false
    positives. Each model gets the rows its features name (entity features: one global view)."""
    from streams.compose import compose
    from streams.fraud.detection import detection, scores_of
    from streams.fraud.model import FraudModel

    settings = load_settings()
    params = compose(settings).fraud
    models = [FraudModel.load(f) for f in model_files] if model_files else [params.model]
    scenario = _generated(dict(params.ip_prefixes), seed, transactions, days, rings)
    count, policy = partitions or settings.kafka.partitions, params.policy
    scores = scores_of(models, params.ip_prefixes, scenario, count)  # each model's features decide its rows
    reports = [detection(s, scenario.truth, policy) for s in scores]
    shares = [float(np.mean(np.array(list(s.values())) >= policy.disable_invoice_at)) for s in scores]
    if as_json:
        compared = [{"model": m.version, "flagged": share, "patterns": [vars(r) for r in report]}
                    for m, share, report in zip(models, shares, reports, strict=True)]  # fmt: skip
        summary = {"partitions": count, "transactions": len(scenario.truth), "seed": seed, "models": compared}
        typer.echo(json.dumps(summary, indent=2))
        return
    flagged = ", ".join(f"{m.version} {pct(share)}" for m, share in zip(models, shares, strict=True))
    caption = (
        f"flagged: score >= {policy.disable_invoice_at} (invoice disabled): recall, for legitimate traffic "
        f"the false-positive rate; review: >= {policy.review_at}. Seed {seed}. Flagged of all: {flagged}."
    )
    title = f"{len(scenario.truth):,} generated transactions in {count} partitions"
    console.print(_patterns_table(title, caption, [m.version for m in models], reports))


def _generated(prefixes: dict[str, str], seed: int, count: int, days: float = 14, rings: bool = True) -> Any:
    """A held-out period from 2026-01-01 (the demo's: 20,000 transactions in 14 days, rings on)."""
    from streams.cli.transactions import RING_SHARES
    from streams.fraud.synthetic import generated

    shares = RING_SHARES if rings else (0.0, 0.0, 0.0)
    return generated(prefixes, seed=seed, transactions=count, start_ms=1_767_225_600_000,
                     mean_gap_ms=days * DAY_MS / count, ring_shares=shares)  # fmt: skip


def _patterns_table(
    title: str, caption: str, names: list[str], reports: list[Any], *, review: bool = True
) -> Table:
    """Per pattern, a line per model (several: named, one under the other)."""
    columns = ("pattern", *(("model",) if len(names) > 1 else ()), "transactions", "flagged",
               *(("review",) if review else ()), "PR-AUC")  # fmt: skip
    table = Table(*columns, title=title, caption=caption, box=box.SIMPLE_HEAD)
    for rows in zip(*reports, strict=True):
        for k, (name, r) in enumerate(zip(names, rows, strict=True)):
            table.add_row(
                "" if k else r.pattern, *((name,) if len(names) > 1 else ()), f"{r.transactions:,}",
                pct(r.flagged), *((pct(r.reviewed),) if review else ()),
                "-" if r.pr_auc is None else f"{r.pr_auc:.3f}", end_section=k == len(names) - 1,
            )  # fmt: skip
    return table


def entity_study(
    train: Annotated[int, typer.Option(min=1000, help="Generated transactions to learn from.")] = 120_000,
    test: Annotated[
        int, typer.Option(min=1000, help="Generated transactions of the held-out period.")
    ] = 40_000,
    max_fpr: Annotated[
        float, typer.Option(min=0.0001, max=0.5, help="False-positive rate to read recall at.")
    ] = 0.01,
    as_json: AsJson = False,
) -> None:
    """What entity features across customers are worth (no services): logistic regressions on the
    partition-local features alone and with `fraud.entities` (one global view of the generated
    traffic, rings included: what an exact entity stage would see), recall per pattern at a false-
    positive rate on a held-out period, and PR-AUC. `streams train --entities` trains such a model."""
    from streams.compose import compose
    from streams.fraud.detection import entity_study as study
    from streams.fraud.detection import study_data

    prefixes = dict(compose(load_settings()).fraud.ip_prefixes)
    results = study(
        study_data(_generated(prefixes, 1001, train, 14 * train / 20_000), prefixes),
        study_data(_generated(prefixes, 2001, test, 14 * test / 20_000), prefixes),
        max_fpr,
    )
    if as_json:
        summary = {
            name: {"threshold": r["threshold"], "patterns": [vars(p) for p in r["patterns"]]}
            for name, r in results.items()
        }
        typer.echo(json.dumps(summary, indent=2))
        return
    for name, r in results.items():
        caption = f"flagged: score >= {r['threshold']:.3f}, where {max_fpr:.1%} of the legitimate ones lie"
        title = f"{name}: learned from {train:,} generated transactions, tested on {test:,} others"
        console.print(_patterns_table(title, caption, [name], [r["patterns"]], review=False))
