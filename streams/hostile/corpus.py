"""The hostile messages' record and their builder: a valid event of each kind with its own ids."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

VALID = "valid"
_RUN_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True)
class HostileMessage:
    """One message and the verdict the decoder must give it."""

    name: str  # kind.case, unique within the corpus
    key: bytes | None
    value: bytes | None
    expected: str  # VALID, "malformed_json" or "schema_violation": what `streams.events.decode` returns
    effect: str  # what a pipeline does with it


def _ad_event(uid: str, run_id: str, ts: int) -> dict[str, Any]:
    return {"type": "impression", "event_id": f"e-{uid}", "ts": ts, "ad_id": f"ad-{uid}",
            "campaign_id": f"campaign-{run_id}", "user_id": f"u-{uid}", "segment": "hostile"}  # fmt: skip


def _transaction(uid: str, run_id: str, ts: int) -> dict[str, Any]:
    return {"transaction_id": f"t-{uid}", "ts": ts, "customer_id": f"c-{uid}", "amount": 42.5,
            "currency": "EUR", "payment_method": "card", "card_id": f"card-{uid}",
            "device_id": f"d-{uid}", "ip": "192.0.2.1", "email_domain": "example.com",
            "billing_country": "DE", "shipping_country": "DE", "basket_items": 2,
            "is_new_customer": False}  # fmt: skip


def _label(uid: str, run_id: str, ts: int) -> dict[str, Any]:
    return {"transaction_id": f"t-{uid}", "customer_id": f"c-{uid}", "ts": ts, "is_fraud": False,
            "source": "paid"}  # fmt: skip


def _smoke_event(uid: str, run_id: str, ts: int) -> dict[str, Any]:
    return {"event_id": f"e-{uid}", "run_id": run_id, "ts": ts, "payload": "hostile"}


@dataclass(frozen=True)
class Template:
    build: Callable[[str, str, int], dict[str, Any]]  # (unique id, run id, ts) -> a valid event
    key_field: str  # what the topic is keyed by
    id_field: str  # the event's unique id
    effect: str  # what a pipeline does with a valid event


TEMPLATES: dict[str, Template] = {
    "ad_events": Template(_ad_event, "ad_id", "event_id", "an impression counted in its own ad's windows"),
    "transactions": Template(_transaction, "customer_id", "transaction_id", "a transaction scored"),
    "labels": Template(_label, "customer_id", "transaction_id", "a label of an unseen transaction: orphaned"),
    "smoke": Template(_smoke_event, "event_id", "event_id", "a smoke row"),
}


class Corpus:
    """Builds the messages of one kind. Every valid event gets new ids (``<run>-hNNN``) and an
    event time one millisecond after the previous one's, from ``base_ms`` on."""

    def __init__(self, kind: str, schema: Mapping[str, Any], run_id: str, base_ms: int) -> None:
        if kind not in TEMPLATES:
            raise ValueError(f"no hostile corpus for {kind!r} (one of {', '.join(TEMPLATES)})")
        if not _RUN_ID.match(run_id):
            raise ValueError(f"a run id is 1-64 letters, digits, '.', '_' or '-', not {run_id!r}")
        self.kind, self.schema, self.run_id, self.base_ms = kind, schema, run_id, base_ms
        self.template = TEMPLATES[kind]
        self.properties: dict[str, Any] = dict(schema.get("properties", {}))
        self.extra_allowed = schema.get("additionalProperties", True) is not False
        self._count = 0

    def event(self) -> dict[str, Any]:
        self._count += 1
        return self.template.build(
            f"{self.run_id}-h{self._count:03d}", self.run_id, self.base_ms + self._count
        )

    def key(self, event: Mapping[str, Any]) -> bytes:
        value = event.get(self.template.key_field)
        return value.encode() if isinstance(value, str) else f"hostile-{self.run_id}".encode()

    def raw(
        self, name: str, key: bytes | None, value: bytes | None, expected: str, effect: str | None = None
    ) -> HostileMessage:
        if effect is None:
            effect = self.template.effect if expected == VALID else f"a {expected} dead letter"
        return HostileMessage(f"{self.kind}.{name}", key, value, expected, effect)

    def message(
        self, name: str, event: Mapping[str, Any], expected: str, effect: str | None = None
    ) -> HostileMessage:
        """``event`` as JSON, keyed like the topic's producers key it."""
        return self.raw(name, self.key(event), orjson.dumps(event), expected, effect)

    def changed(
        self, name: str, fields: Mapping[str, Any], expected: str, effect: str | None = None
    ) -> HostileMessage:
        """A fresh valid event with some fields replaced."""
        return self.message(name, {**self.event(), **fields}, expected, effect)

    def spliced(self, name: str, field: str, value: bytes, expected: str) -> HostileMessage:
        """A fresh valid event whose ``field`` is the raw JSON bytes ``value`` (added when absent)."""
        event = self.event()
        text = orjson.dumps({k: v for k, v in event.items() if k != field})
        spliced = text[:-1] + b',"' + field.encode() + b'":' + value + b"}"
        return self.raw(name, self.key(event), spliced, expected)

    def extra(self, name: str, value: bytes) -> HostileMessage:
        """A fresh valid event with one field the schema does not name, holding ``value``."""
        return self.spliced(name, "extra", value, VALID if self.extra_allowed else "schema_violation")
