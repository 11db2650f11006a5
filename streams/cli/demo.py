"""`streams demo`: the whole pipeline on the local runtime, live, in about a minute."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from streams.cli.pipeline import check_report, produce_smoke_run, progress_bar
from streams.cli.query import iso, pct, print_smoke, query_top_ads, session_of
from streams.errors import RuntimeServiceError
from streams.produce import produce
from streams.runtime import manager
from streams.runtime.process import ManagedProcess
from streams.scrape import fetch_metrics, samples, total
from streams.settings import Settings, load_settings
from streams.versions import result_topic

console = Console()
DEMO_METRICS_INTERVAL_S = 5  # the demo's worker refreshes cohort metrics this often


def start_background_worker(settings: Settings) -> ManagedProcess:
    """A worker kept running after the demo (stopped by `streams dev down`)."""
    home = settings.runtime.home
    process = ManagedProcess("worker", home / "run" / "worker.pid", home / "worker" / "worker.log")
    if process.pid() is None:
        # A short cohort-metrics refresh so the demo shows them within seconds.
        process.start(
            [sys.executable, "-m", "streams", "worker"], env={"STREAMS_FRAUD__METRICS_INTERVAL_S": "5"}
        )
        console.print(f"worker: started (pid {process.pid()}, log {process.log_file})")
    else:
        console.print(f"worker: already running (pid {process.pid()})")
    return process


def worker_metrics(settings: Settings) -> str:
    return fetch_metrics(settings.worker.metrics_host, settings.worker.metrics_port)


def consumed(settings: Settings, topic: str) -> float:
    """The worker's consumed counter for ``topic`` (0 while it is starting)."""
    return total(worker_metrics(settings), "streams_events_consumed_total", topic=topic)


def wait_for(condition: Callable[[], bool], worker: ManagedProcess, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if worker.pid() is None:
            raise RuntimeServiceError(
                f"the worker stopped: {worker.last_log_line()} (log: {worker.log_file})"
            )
        if time.monotonic() > deadline:
            raise RuntimeServiceError(f"timed out waiting for {what} (worker log: {worker.log_file})")
        time.sleep(1)


def demo(
    seconds: Annotated[float, typer.Option(min=1, help="Seconds of clickstream traffic.")] = 30,
    rate: Annotated[float, typer.Option(min=1, help="Impressions per second.")] = 2000,
) -> None:
    """Start everything, stream clickstream and smoke events, show CTR and rows from Cassandra."""
    from streams.cli.dev import bootstrap

    settings = load_settings()
    manager.up(settings, report=console.print)
    bootstrap(settings)
    worker = start_background_worker(settings)

    smoke_rows = demo_smoke(settings, worker)
    clicks = demo_clickstream(settings, worker, seconds, rate)
    # 3. Payments: two weeks of transactions with fraud, their delayed labels, scores and cohorts.
    fraud_summary = show_fraud(settings, worker)
    print_where_next(settings, f"{smoke_rows} smoke events, {clicks} clickstream messages and "
                     f"{fraud_summary} transactions went through")  # fmt: skip


def demo_smoke(settings: Settings, worker: ManagedProcess) -> int:
    """1. The smoke path: exactly these rows come back from Cassandra."""
    run_id = f"demo-{int(time.time())}"
    produce_smoke_run(settings, run_id, 500, None, bad_every=100, seed=7)
    rows: list[dict[str, object]] = []

    def smoke_arrived() -> bool:
        nonlocal rows
        from streams.io.cassandra import read_smoke_events

        with session_of(settings) as session:
            rows = read_smoke_events(
                session, settings.cassandra.keyspace, settings.worker.pipeline_version, run_id
            )
        return len(rows) >= 500

    wait_for(smoke_arrived, worker, "the smoke events", 120)
    print_smoke(rows, 5)
    return len(rows)


DEMO_SPAN_MS = 7 * 60_000


def demo_clickstream(settings: Settings, worker: ManagedProcess, seconds: float, rate: float) -> int:
    """2. The clickstream: live CTR per campaign and top ads per segment."""
    from streams.ctr.generator import ClickstreamGenerator, ClickstreamProfile

    topic = settings.topics.ad_events
    before = consumed(settings, topic)
    impressions = int(rate * seconds)
    # The traffic spans the last 7 minutes of event time (sent in ``seconds``): enough for the first
    # 5-minute panes to close (end + 1 min grace), so the hourly windows have rows to show.
    span_ms = DEMO_SPAN_MS
    start_ms = int(time.time() * 1000) - span_ms
    generator = ClickstreamGenerator(
        ClickstreamProfile(), seed=int(time.time()), start_ms=start_ms, rate=impressions * 1000 / span_ms
    )
    console.print(f"producing {impressions} impressions and their clicks to {topic} at {rate:.0f}/s")
    with progress_bar() as progress:
        task = progress.add_task(f"producing to {topic}", total=impressions)
        report = produce(
            settings.kafka, topic, generator.messages(impressions), rate=rate,
            on_progress=lambda n: progress.advance(task, n),
        )  # fmt: skip
    check_report(report)
    wait_for(lambda: consumed(settings, topic) - before >= report.sent, worker, "the worker to catch up", 600)
    show_campaigns(settings, sorted({ad.campaign_id for ad in generator.ads}), start_ms)
    # The hopping window that starts just before the demo's traffic holds its closed panes (open).
    for segment in generator.profile.segments[:2]:
        query_top_ads(
            segment=segment, k=5, at=str(start_ms + 1), final_only=False, include_open=True, version=None,
            as_json=False,
        )  # fmt: skip
    return report.sent


def print_where_next(settings: Settings, summary: str) -> None:
    w = settings.worker
    console.print(f"[bold]{summary}[/]")
    console.print(f"metrics:      http://{w.metrics_host}:{w.metrics_port}/metrics")
    console.print(
        f"prometheus:   http://127.0.0.1:{settings.runtime.prometheus_port}/graph?g0.expr=streams_events_processed_total"
    )
    console.print(
        f"dead letters: topic {settings.topics.dead_letters}; results: topics "
        f"{result_topic(settings.topics.ctr_results, w.pipeline_version)}, "
        f"{result_topic(settings.topics.fraud_scores, w.pipeline_version)}"
    )
    console.print(
        "more: streams query ctr --campaign campaign-000 --window 1h | "
        "streams query top-ads --segment news --include-open"
    )
    console.print("      streams query fraud --customer cust-000001 | streams query fraud-metrics")
    console.print(
        "      streams versions | STREAMS_CTR__TUMBLING=2m streams replay --version v2 | "
        "streams verify v1 v2 | streams promote v2"
    )
    console.print(
        "      fraud rings across customers: streams evaluate --model deploy/models/fraud-lr-v2.json "
        "--model deploy/models/fraud-lr-v3.json | STREAMS_FRAUD__MODEL_FILE=deploy/models/fraud-lr-v3.json "
        "streams replay --version v3"
    )
    prometheus = f"http://127.0.0.1:{settings.runtime.prometheus_port}/graph"
    console.print("ready Prometheus queries:")
    console.print(f"  {prometheus}?g0.expr=sum%20by(topic)(rate(streams_events_processed_total[1m]))")
    console.print(f"  {prometheus}?g0.expr=sum%20by(decision)(rate(streams_fraud_decisions_total[5m]))")
    console.print(f"  {prometheus}?g0.expr=streams_fraud_cohort_metric")
    console.print("services and worker keep running; stop them with [bold]make down[/]")


def show_fraud(settings: Settings, worker: ManagedProcess) -> int:
    """Produce transactions and labels, wait for scores and cohort metrics, print the fraud view."""
    from streams.cli.fraud import query_fraud_metrics
    from streams.cli.transactions import LabelMode, produce_fraud_traffic
    from streams.fraud.generator import TransactionGenerator, TransactionProfile
    from streams.fraud.synthetic import load_ip_prefixes

    count, days = 20_000, 14
    start_ms = int(time.time() * 1000) - days * 86_400_000
    generator = TransactionGenerator(
        TransactionProfile(mean_gap_ms=days * 86_400_000 / count), seed=int(time.time()), start_ms=start_ms,
        ip_prefixes=load_ip_prefixes(settings.fraud.ip_countries_file),
    )  # fmt: skip
    scenario = generator.scenario(count)
    t = settings.topics
    before = consumed(settings, t.transactions) + consumed(settings, t.labels)
    # Labels follow the worker's decisions: a disabled invoice is never left unpaid.
    sent = produce_fraud_traffic(
        settings, scenario, LabelMode.decided, version=settings.worker.pipeline_version
    )
    wait_for(
        lambda: consumed(settings, t.transactions) + consumed(settings, t.labels) - before >= sent,
        worker, "the worker to score every transaction", 600,
    )  # fmt: skip
    time.sleep(DEMO_METRICS_INTERVAL_S + 3)  # one cohort-metrics refresh of the worker
    decisions = decision_counts(settings)
    total = sum(decisions.values()) or 1
    fraud = sum(1 for pattern in scenario.truth.values() if pattern != "legit")
    console.print(
        f"fraud rate in this traffic: {fraud / len(scenario.truth):.2%}; decisions so far: "
        + ", ".join(f"{k} {v:.0f} ({v / total:.1%})" for k, v in sorted(decisions.items()))
    )
    query_fraud_metrics(days=7, version=None, as_json=False)
    return len(scenario.truth)


def decision_counts(settings: Settings) -> dict[str, float]:
    return {
        labels["decision"]: value
        for labels, value in samples(worker_metrics(settings), "streams_fraud_decisions_total")
    }


def show_campaigns(settings: Settings, campaigns: list[str], since_ms: int) -> None:
    """Each campaign's hopping window that covers the demo, ranked by smoothed CTR."""
    from streams.ctr.views import campaign_windows
    from streams.io.ctr_store import read_campaign_partials

    c, version = settings.ctr, settings.worker.pipeline_version
    best = []
    with session_of(settings) as session:
        for campaign in campaigns:
            partials = read_campaign_partials(
                session, settings.cassandra.keyspace, version, campaign, c.hopping, since_ms - 3_600_000,
                int(time.time() * 1000) + 1,
            )  # fmt: skip
            windows = campaign_windows(partials, c.ci_level)
            if windows:
                best.append(max(windows, key=lambda w: w["impressions"]))
    start = iso(best[0]["window_start"]) if best else "-"
    title = f"campaigns by smoothed CTR, {c.hopping} window from {start} UTC"
    columns = ("campaign", "impr.", "clicks", "raw", "smoothed", "95% interval", "prior")
    table = Table(*columns, title=title, box=box.SIMPLE_HEAD)
    for w in sorted(best, key=lambda w: -w["smoothed_ctr"]):
        table.add_row(
            w["campaign_id"], str(w["impressions"]), str(w["clicks"]), pct(w["raw_ctr"]),
            pct(w["smoothed_ctr"]), f"{pct(w['ci_low'])}-{pct(w['ci_high'])}", w["prior_level"],
        )  # fmt: skip
    console.print(table)
