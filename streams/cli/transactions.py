"""`streams produce transactions`: generated payments, then the labels a shop would learn of them."""

from __future__ import annotations

import time
from collections import Counter
from enum import StrEnum
from functools import partial
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.console import Console

from streams.cli.pipeline import check_report, progress_bar
from streams.cli.query import session_of
from streams.errors import RuntimeServiceError
from streams.lifecycle import resolve_version
from streams.produce import produce
from streams.settings import Settings, load_settings

if TYPE_CHECKING:
    from streams.fraud.generator import Scenario

console = Console()
DAY_MS = 86_400_000


RING_SHARES = (0.0005, 0.0005, 0.0005)  # with --rings: ~0.7 % of transactions in rings


class LabelMode(StrEnum):
    decided = "decided"  # as the serving version decided (waits for its decisions)
    allowed = "allowed"  # as if every transaction had been allowed
    none = "none"


def produce_transactions(
    count: Annotated[int, typer.Option(min=1, help="Transactions (fraud bursts add a few).")] = 10_000,
    days: Annotated[float, typer.Option(min=0.01, help="Days of event time they span.")] = 7,
    start_ms: Annotated[
        int | None, typer.Option(help="Event time of the first one (default: now minus --days).")
    ] = None,
    rate: Annotated[
        float | None, typer.Option(min=1, help="Messages per second (default: as fast as possible).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed: the same seed and start give the same messages.")] = 1,
    labels: Annotated[
        LabelMode,
        typer.Option(
            help="The delayed labels (to the labels topic): 'decided' follows the decisions of the "
            "serving version (or --version), read from its scores topic, so a worker must run; "
            "'allowed' labels every transaction as if it had been allowed; 'none' sends none."
        ),
    ] = LabelMode.decided,
    version: Annotated[
        str | None,
        typer.Option(help="With --labels decided: whose decisions (default: the serving version)."),
    ] = None,
    decision_timeout: Annotated[
        float, typer.Option(min=1, help="With --labels decided: seconds to wait for the decisions.")
    ] = 600,
    rings: Annotated[
        bool,
        typer.Option(
            help="Add fraud rings (device farms, shared stolen cards, reshipping drops) and shipping "
            "addresses: organised fraud that shows only across customers."
        ),
    ] = False,
) -> None:
    """Transactions keyed by customer_id with fraud patterns and seasonality, and their delayed labels."""
    from streams.fraud.generator import TransactionGenerator, TransactionProfile
    from streams.fraud.synthetic import load_ip_prefixes

    settings = load_settings()
    start = start_ms if start_ms is not None else int(time.time() * 1000 - days * DAY_MS)
    profile = TransactionProfile(
        mean_gap_ms=days * DAY_MS / count, ring_shares=RING_SHARES if rings else (0.0, 0.0, 0.0)
    )
    generator = TransactionGenerator(
        profile, seed=seed, start_ms=start, ip_prefixes=load_ip_prefixes(settings.fraud.ip_countries_file)
    )
    scenario = generator.scenario(count)
    patterns = Counter(pattern for pattern in scenario.truth.values() if pattern != "legit")
    fraud = sum(patterns.values())
    console.print(
        f"{len(scenario.truth)} transactions, {fraud} fraudulent ({fraud / len(scenario.truth):.2%}: "
        + ", ".join(f"{n} {pattern}" for pattern, n in sorted(patterns.items()))
        + ")"
    )
    produce_fraud_traffic(settings, scenario, labels, rate=rate, version=version, timeout_s=decision_timeout)


def produce_fraud_traffic(
    settings: Settings, scenario: Scenario, labels: LabelMode, *, rate: float | None = None,
    version: str | None = None, timeout_s: float = 600,
) -> int:  # fmt: skip
    """Send ``scenario``'s transactions, then its labels as ``labels`` says. Returns the messages sent."""
    t = settings.topics
    if labels is LabelMode.decided:  # (checked before anything is sent)
        with session_of(settings) as session:
            version = resolve_version(session, settings, version)
    sent = _send(settings, t.transactions, scenario.transactions, rate)
    if labels is LabelMode.none:
        return sent
    decisions = None
    if labels is LabelMode.decided:
        assert version is not None
        decisions = read_decisions(settings, version, set(scenario.truth), timeout_s)
    messages = scenario.labels_for(decisions)
    sources = Counter(orjson.loads(value)["source"] for _, value in messages)
    console.print(
        f"{len(messages)} labels ("
        + ", ".join(f"{n} {source}" for source, n in sorted(sources.items()))
        + (f"), following the decisions of {version}" if decisions is not None else "), as if all allowed")
    )
    return sent + _send(settings, t.labels, messages, rate)


def _send(settings: Settings, topic: str, messages: list[tuple[bytes, bytes]], rate: float | None) -> int:
    with progress_bar() as progress:
        task = progress.add_task(f"producing to {topic}", total=len(messages))
        report = produce(
            settings.kafka, topic, messages, rate=rate, on_progress=partial(progress.advance, task)
        )
    check_report(report)
    return report.sent


def read_decisions(
    settings: Settings, version: str, wanted: set[str], timeout_s: float
) -> dict[str, tuple[str, bool]]:
    """The decisions of ``version`` about the ``wanted`` transactions, from its scores topic (all of
    it: a transaction sent again is a duplicate the worker does not decide twice)."""
    from streams.io.kafka import tail
    from streams.versions import result_topic

    topic = result_topic(settings.topics.fraud_scores, version)
    found: dict[str, tuple[str, bool]] = {}
    deadline = time.monotonic() + timeout_s
    with progress_bar() as progress:
        task = progress.add_task(f"decisions of {version}", total=len(wanted))
        for values in tail(settings.kafka, topic):
            for value in values:
                record = orjson.loads(value)
                tx_id = record.get("transaction_id")
                if tx_id in wanted and tx_id not in found:
                    found[tx_id] = (record["decision"], bool(record["holdout"]))
                    progress.advance(task)
            if len(found) == len(wanted):
                return found
            if time.monotonic() > deadline:
                break
    raise RuntimeServiceError(
        f"{len(wanted) - len(found)} of {len(wanted)} transactions have no decision of {version} "
        f"after {timeout_s:.0f} s (is a worker of {version} running? `streams worker`; "
        "or send labels as if all were allowed: --labels allowed)"
    )
