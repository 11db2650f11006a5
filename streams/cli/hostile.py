"""`streams produce hostile`: the hostile corpus (`streams.hostile`) to a raw topic."""

from __future__ import annotations

import json
import time
from collections import Counter
from enum import StrEnum
from typing import Annotated

import typer

from streams.cli.pipeline import console, err
from streams.errors import ConfigError
from streams.hostile import DEFAULT_MAX_BYTES, SCHEMA_FILES, HostileMessage, hostile_messages
from streams.produce import produce_each
from streams.settings import Settings, load_settings


class HostileTopic(StrEnum):
    ad_events = "ad-events"
    transactions = "transactions"
    labels = "labels"
    smoke_events = "smoke-events"


# The option's value -> the corpus kind, which is also the attribute of its topic in the settings.
_KINDS = {
    HostileTopic.ad_events: "ad_events",
    HostileTopic.transactions: "transactions",
    HostileTopic.labels: "labels",
    HostileTopic.smoke_events: "smoke",
}


def hostile_corpus(
    settings: Settings, topic: HostileTopic, *, run_id: str, base_ms: int, max_bytes: int, far_future: bool
) -> tuple[str, list[HostileMessage]]:
    """(the configured topic name, its corpus)."""
    kind = _KINDS[topic]
    schema = json.loads((settings.schemas_dir / SCHEMA_FILES[kind]).read_text())
    corpus = hostile_messages(
        kind, schema, run_id=run_id, base_ms=base_ms, max_bytes=max_bytes, far_future=far_future
    )
    try:
        messages = list(corpus)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return getattr(settings.topics, kind), messages


def producer_overrides(max_bytes: int) -> dict[str, str | int | float | bool]:
    """Room for the largest message (a value one byte over ``max_bytes``, or a 100 kB key);
    uncompressed, so the broker judges the real size; not idempotent, so a message the broker
    refuses cannot disturb the sequence of the others."""
    return {
        "message.max.bytes": min(max_bytes * 2 + 1_048_576, 1_000_000_000),
        "compression.type": "none",
        "enable.idempotence": False,
    }


def produce_hostile(
    topic: Annotated[HostileTopic, typer.Option(help="The raw topic whose schema the corpus attacks.")],
    max_bytes: Annotated[
        int,
        typer.Option(
            min=4096, max=100_000_000, help="Size limit to probe: values one byte under and one byte over it."
        ),
    ] = DEFAULT_MAX_BYTES,
    run_id: Annotated[
        str | None, typer.Option(help="Makes the valid messages' ids unique (default: time-based).")
    ] = None,
    base_ms: Annotated[
        int | None, typer.Option(help="Event time of the valid messages, in ms (default: now).")
    ] = None,
    far_future: Annotated[
        bool,
        typer.Option(help="Add a valid event at 2100: its partition's later events all become late."),
    ] = False,
) -> None:
    """Hostile messages (deep nesting, oversized values, broken UTF-8, wrong types...): none may
    stop the stream; each must come out as a result or a dead letter."""
    settings = load_settings()
    run_id = run_id or f"hostile-{int(time.time())}"
    base_ms = base_ms if base_ms is not None else int(time.time() * 1000)
    name, messages = hostile_corpus(
        settings, topic, run_id=run_id, base_ms=base_ms, max_bytes=max_bytes, far_future=far_future
    )
    pairs = [(m.key, m.value) for m in messages]
    outcomes = produce_each(settings.kafka, name, pairs, overrides=producer_overrides(max_bytes))
    for message, outcome in zip(messages, outcomes, strict=True):
        if outcome.error is not None:
            size = len(message.key or b"") + len(message.value or b"")
            err.print(
                f"refused: {message.name} ({size} bytes): {outcome.error}", highlight=False, soft_wrap=True
            )
    sent = [m for m, outcome in zip(messages, outcomes, strict=True) if outcome.error is None]
    verdicts = Counter(m.expected for m in sent)
    summary = ", ".join(f"{count} {verdict}" for verdict, count in sorted(verdicts.items()))
    console.print(
        f"sent {len(sent)} hostile messages to {name} ({summary}); {len(messages) - len(sent)} refused "
        f"by Kafka; run id {run_id}, base time {base_ms}",
        highlight=False,
        soft_wrap=True,
    )
