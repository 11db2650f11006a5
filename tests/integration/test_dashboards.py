"""The Grafana dashboards and the alert rules against the real local Prometheus: a worker runs the
smoke, CTR and fraud pipelines on a short workload, Prometheus scrapes it, and every panel query of
every dashboard returns data for that worker."""

from __future__ import annotations

import json
import math
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.fraud.generator import TransactionGenerator, TransactionProfile
from streams.fraud.synthetic import load_ip_prefixes
from streams.produce import produce
from streams.settings import Settings, project_dir
from streams.smoke import logic as smoke
from tests.integration.faults import produce_clickstream
from tests.integration.fraud_oracle import DAY
from tests.integration.fraud_oracle import START as FRAUD_START
from tests.support import metric, running_worker, scrape, wait_until

pytestmark = pytest.mark.integration

DASHBOARDS = project_dir() / "deploy" / "grafana" / "dashboards"
RULES = project_dir() / "deploy" / "prometheus" / "rules"
VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")
# Grafana's own interval variables, as Grafana would set them for a short dashboard range with the
# provisioned data source's 5 s scrape interval.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) of every target of every panel of every dashboard."""
    queries = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        panels = [p for p in board["panels"] if p["type"] != "row"]
        panels += [nested for p in board["panels"] if p["type"] == "row" for nested in p.get("panels", [])]
        for panel in panels:
            for target in panel.get("targets", []):
                queries.append((path.name, panel["title"], target["expr"]))
    return queries


def substitute(expr: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise AssertionError(f"unknown dashboard variable ${name} in {expr}")
        return values[name]

    return VARIABLE.sub(value, expr)


def prometheus_query(settings: Settings, expr: str) -> list[dict[str, Any]]:
    """The instant-query result; a query Prometheus rejects fails the test with its error."""
    url = f"http://127.0.0.1:{settings.runtime.prometheus_port}/api/v1/query"
    request = urllib.request.Request(
        url, data=urllib.parse.urlencode({"query": expr}).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = orjson.loads(exc.read())
        raise AssertionError(f"Prometheus rejected {expr}: {body.get('error')}") from None
    assert body["status"] == "success", body
    return list(body["data"]["result"])


RATE = 300.0  # messages per second: the workload lasts some 25 s, over several 5 s scrapes


def produce_workload(settings: Settings) -> dict[str, int]:
    """Smoke events with bad ones, a dirty clickstream, transactions and their labels, paced so
    that the counters rise from one scrape to the next (a workload taken in one go shows as one
    step: rates over it are zero, their ratios and quantiles NaN); returns the messages produced
    per topic."""
    t = settings.topics
    smoke_messages = list(
        smoke.smoke_events(f"dash-{uuid.uuid4().hex[:8]}", 500, start_ms=1_700_000_000_000, bad_every=100)
    )
    assert produce(settings.kafka, t.smoke, smoke_messages, rate=RATE).failed == 0
    ad_ends = produce_clickstream(settings, seed=11, impressions=3000, rate=RATE)
    generator = TransactionGenerator(
        TransactionProfile(customers=300, mean_gap_ms=3 * DAY / 3000, fraud_share=0.02),
        seed=7,
        start_ms=FRAUD_START,
        ip_prefixes=load_ip_prefixes(settings.fraud.ip_countries_file),
    )
    scenario = generator.scenario(3000)
    assert produce(settings.kafka, t.transactions, scenario.transactions, rate=RATE).failed == 0
    assert produce(settings.kafka, t.labels, scenario.labels, rate=RATE).failed == 0
    return {
        t.smoke: len(smoke_messages),
        t.ad_events: sum(ad_ends.values()),
        t.transactions: len(scenario.transactions),
        t.labels: len(scenario.labels),
    }


@pytest.fixture
def dashboard_settings(isolated: Settings) -> Settings:
    """Cohort metrics and drift refreshed every 2 s, over every day of the scenario; precision and
    recall from a single flagged holdout row (the workload is too small for the default 10)."""
    fraud = isolated.fraud.model_copy(
        update={"metrics_interval_s": 2.0, "metrics_days": 60, "min_holdout_rows": 1}
    )
    return isolated.model_copy(update={"fraud": fraud})


def test_every_dashboard_panel_shows_data_from_a_real_worker(
    dashboard_settings: Settings, tmp_path: Path
) -> None:
    settings = dashboard_settings
    queries = panel_queries()
    assert {name for name, _, _ in queries} == {
        "streams-pipeline-health.json",
        "streams-ctr.json",
        "streams-fraud.json",
    }
    w, t = settings.worker, settings.topics
    values = {
        **BUILTINS,
        "version": w.pipeline_version,
        "instance": f"{w.metrics_host}:{w.metrics_port}",  # only this test's worker
        "ad_topic": t.ad_events,
        "tx_topic": t.transactions,
        "label_topic": t.labels,
    }
    resolved = [(board, title, substitute(expr, values)) for board, title, expr in queries]

    def empty_panels() -> list[str]:
        """Panels with no series, or only series whose value is NaN (Grafana draws no line)."""
        return [
            f"{board} / {title}: {expr}"
            for board, title, expr in resolved
            if not any(math.isfinite(float(s["value"][1])) for s in prometheus_query(settings, expr))
        ]

    with running_worker(settings, tmp_path) as worker:
        produced = produce_workload(settings)  # while the worker runs
        wait_until(
            lambda: (
                (text := scrape(settings))
                and all(
                    metric(text, "streams_events_consumed_total", topic=k) == n for k, n in produced.items()
                )
            ),
            90,
            "the worker to consume the whole workload",
            interval_s=1,
        )
        missing: list[str] = []

        def every_panel_has_data() -> bool:
            assert worker.poll() is None, "the worker exited"
            missing[:] = empty_panels()
            return not missing

        try:
            wait_until(every_panel_has_data, 60, "Prometheus data for every panel", interval_s=2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; panels without data:\n" + "\n".join(missing)) from None
        text = scrape(settings)

    # The same scrape, with every metric family populated, follows Prometheus' conventions.
    promtool = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True)
    assert promtool.returncode == 0 and not promtool.stdout.strip(), promtool.stdout + promtool.stderr


def loaded_rules(settings: Settings) -> dict[str, dict[str, Any]]:
    """Rule name -> the rule as the local Prometheus parsed and last evaluated it."""
    url = f"http://127.0.0.1:{settings.runtime.prometheus_port}/api/v1/rules"
    with urllib.request.urlopen(url, timeout=10) as response:
        groups = orjson.loads(response.read())["data"]["groups"]
    return {rule["name"]: rule for group in groups for rule in group["rules"]}


def test_the_local_prometheus_loads_and_evaluates_every_rule(runtime: Settings) -> None:
    text = "\n".join(path.read_text() for path in sorted(RULES.glob("*.yml")))
    alerts = set(re.findall(r"^\s*- alert: (\S+)$", text, re.MULTILINE))
    records = set(re.findall(r"^\s*- record: (\S+)$", text, re.MULTILINE))
    assert alerts and records
    loaded = loaded_rules(runtime)
    assert alerts | records <= loaded.keys(), (
        f"the local Prometheus lacks the rules {sorted((alerts | records) - loaded.keys())}: it runs an "
        "older configuration (restart it: `streams dev down --only prometheus && streams dev up`)"
    )
    # As Prometheus parsed them: every alert waits, has a severity, says what and why.
    for name in alerts:
        rule = loaded[name]
        assert rule["duration"] > 0, name
        assert rule["labels"].get("severity") in {"warning", "critical"}, name
        assert {"summary", "description", "runbook"} <= rule["annotations"].keys(), name
    # Evaluated on the real series without error (e.g. no many-to-many vector matching).
    evaluated = wait_until(
        lambda: (
            (r := loaded_rules(runtime))
            and all(not r[name]["lastEvaluation"].startswith("0001") for name in alerts | records)
            and r
        ),
        30,
        "a first evaluation of every rule",
    )
    errors = {
        name: evaluated[name].get("lastError")
        for name in alerts | records
        if evaluated[name]["health"] != "ok"
    }
    assert not errors, errors
