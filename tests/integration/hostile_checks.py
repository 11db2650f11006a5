"""The hostile corpus (`streams.hostile`) as the tests send it, and the checks of what the worker
made of it: one dead letter per rejected message with its coordinates, reason and capped bytes;
a worker that never crashed; the local Prometheus' view of the alert rules."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml

from streams.cli.hostile import producer_overrides
from streams.events import DEAD_LETTER_KEY_MAX_BYTES
from streams.hostile import DEFAULT_MAX_BYTES, SCHEMA_FILES, VALID, HostileMessage, hostile_messages
from streams.settings import Settings, project_dir
from tests.integration.kafka_records import Located, produce_located, read_records

RULES = project_dir() / "deploy" / "prometheus" / "rules" / "streams.yml"
CRASH_MARKS = ("We experienced a crash", "Traceback (most recent call last)")


def corpus(settings: Settings, kind: str, run_id: str, base_ms: int) -> list[HostileMessage]:
    """The kind's corpus as `streams produce hostile` builds it (no far-future event)."""
    schema = json.loads((settings.schemas_dir / SCHEMA_FILES[kind]).read_text())
    messages = list(hostile_messages(kind, schema, run_id=run_id, base_ms=base_ms))
    names = {m.name.split(".", 1)[1]: m for m in messages}
    id_field = {"ad_events": "event_id"}.get(kind, "transaction_id")
    # The two cases of the issue: a ~900 kB event (a long id, under Kafka's 1 MB) and deep nesting.
    assert names[f"{id_field}_just_over_{DEFAULT_MAX_BYTES}_bytes"].expected == "schema_violation"
    assert names["nested_objects_100000_unclosed"].value == b'{"a":' * 100_000
    assert "bound.ts.maximum" not in names, "a far-future event would make later traffic late"
    return messages


def send_corpus(
    settings: Settings, topic: str, messages: Sequence[HostileMessage]
) -> dict[Located, HostileMessage]:
    """Produce the corpus as the CLI does (room for ~900 kB, uncompressed); where each one is."""
    overrides = producer_overrides(DEFAULT_MAX_BYTES)
    where = produce_located(settings.kafka, topic, [(m.key, m.value) for m in messages], overrides)
    return dict(zip(where, messages, strict=True))


def expected_letter(message: HostileMessage) -> str | None:
    """The reason kind of the message's dead letter, or None if it must be processed."""
    if message.expected != VALID:
        return message.expected
    return "late_event" if "late_event" in message.effect else None


def parsed(message: HostileMessage) -> dict[str, Any]:
    """A valid message's event as any JSON decoder reads it (the last of repeated names wins)."""
    event = orjson.loads(message.value or b"")
    assert isinstance(event, dict), message.name
    return event


def read_letters(settings: Settings) -> list[tuple[dict[str, Any], int]]:
    """Every record of the dead-letter topic and its size in bytes."""
    partitions = read_records(settings, settings.topics.dead_letters)
    return [
        (orjson.loads(value or b""), len(value or b""))
        for records in partitions.values()
        for _, _, value in records
    ]


def assert_one_letter_each(
    letters: Sequence[tuple[dict[str, Any], int]], topic: str, sent: Mapping[Located, HostileMessage]
) -> None:
    """Exactly one letter per rejected message, at its coordinates, with its reason and bytes;
    none for the messages that must be processed; none for any other message of any topic."""
    expected = {where: kind for where, m in sent.items() if (kind := expected_letter(m)) is not None}
    coordinates = Counter((letter["topic"], letter["partition"], letter["offset"]) for letter, _ in letters)
    assert {c: n for c, n in coordinates.items() if n > 1} == {}, "a message with several dead letters"
    assert set(coordinates) == {(topic, p, o) for p, o in expected}, (
        f"letters for unexpected messages: {sorted(set(coordinates) - {(topic, *w) for w in expected})[:5]}, "
        f"missing: {sorted(sent[w].name for w in expected if (topic, *w) not in coordinates)[:10]}"
    )
    for letter, size in letters:
        where = (letter["partition"], letter["offset"])
        message = sent[where]
        assert letter["reason_kind"] == expected[where], (message.name, letter["reason"])
        assert_carries(letter, size, message)


def assert_carries(letter: Mapping[str, Any], size: int, message: HostileMessage) -> None:
    """The letter fits the cap and carries the value (or a prefix of it) with its size and hash."""
    raw, key = message.value or b"", message.key
    assert size <= DEFAULT_MAX_BYTES, (message.name, size)
    assert letter["raw_size"] == len(raw), message.name
    assert letter["raw_sha256"] == hashlib.sha256(raw).hexdigest(), message.name
    carried = base64.b64decode(letter["raw_base64"])
    assert letter["raw_truncated"] == (carried != raw), message.name
    assert raw.startswith(carried), message.name
    if len(raw) >= DEFAULT_MAX_BYTES * 3 // 4:  # its base64 alone exceeds the cap: it must be cut
        assert letter["raw_truncated"], message.name
    assert letter["key_truncated"] == (key is not None and len(key) > DEAD_LETTER_KEY_MAX_BYTES), message.name
    if key is not None:
        assert key.startswith(base64.b64decode(letter["key_base64"])), message.name
    assert letter["reason"].strip(), message.name


def assert_kept_in_table(row: Any, version: str, reason_kind: str, key: bytes, value: bytes) -> None:
    """A row of the `dead_letters` table holds the whole message, its reason, size and hash."""
    fields = ("pipeline_version", "reason_kind", "raw", "raw_size", "raw_truncated", "key", "key_truncated")
    assert {f: getattr(row, f) for f in fields} == {
        "pipeline_version": version, "reason_kind": reason_kind, "raw": value, "raw_size": len(value),
        "raw_truncated": False, "key": key, "key_truncated": False,
    }  # fmt: skip
    assert row.raw_sha256 == hashlib.sha256(value).hexdigest() and row.reason.strip()


def assert_alive(worker: subprocess.Popen[bytes], log_dir: Path) -> None:
    """The one worker process we started is still running, and its log shows no engine crash."""
    assert worker.poll() is None, f"the worker exited with {worker.returncode}:\n{log_tail(log_dir)}"
    assert_no_crash_logged(log_dir)


def assert_no_crash_logged(log_dir: Path, *, started: bool = False) -> None:
    """No crash in the log, and Faust's worker started at most once (``started``: exactly once)."""
    text = log_text(log_dir)
    starts = text.count("[^Worker]: Starting")
    assert starts == 1 if started else starts <= 1, f"the worker started {starts} times:\n{log_tail(log_dir)}"
    for mark in CRASH_MARKS:
        assert mark not in text, f"{mark!r} in the worker's log:\n{excerpt(text, mark)}"


def log_text(log_dir: Path) -> str:
    (log,) = sorted(log_dir.glob("worker-*.log"))
    return log.read_text(errors="replace")


def log_tail(log_dir: Path) -> str:
    return log_text(log_dir)[-3000:]


def excerpt(text: str, mark: str) -> str:
    at = text.index(mark)
    return text[max(0, at - 1500) : at + 2500]


def prometheus(settings: Settings, path: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{settings.runtime.prometheus_port}{path}"
    request = urllib.request.Request(url, data=urllib.parse.urlencode(params).encode() if params else None)
    with urllib.request.urlopen(request, timeout=10) as response:
        body = orjson.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


def rule_expr(alert: str) -> str:
    """The ``expr`` of an alert rule, exactly as written in the project's rule file."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    (expr,) = [rule["expr"] for group in groups for rule in group["rules"] if rule.get("alert") == alert]
    return str(expr)


def rule_loaded(settings: Settings, alert: str) -> bool:
    groups = prometheus(settings, "/api/v1/rules")["groups"]
    return any(rule["name"] == alert for group in groups for rule in group["rules"])


def alert_states(settings: Settings, alert: str, **labels: str) -> list[str]:
    """States (pending, firing) of the alert's instances whose labels include ``labels``."""
    return [
        a["state"]
        for a in prometheus(settings, "/api/v1/alerts")["alerts"]
        if a["labels"].get("alertname") == alert and labels.items() <= a["labels"].items()
    ]


def expr_values(settings: Settings, expr: str, **labels: str) -> list[float]:
    """Values of the instant query's series whose labels include ``labels``."""
    result = prometheus(settings, "/api/v1/query", query=expr)["result"]
    return [float(s["value"][1]) for s in result if labels.items() <= s["metric"].items()]
