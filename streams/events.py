"""Decoding and validating raw event bytes against the JSON Schemas in ``schemas/``. Pure."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import fastjsonschema
import msgspec
import orjson

# A compiled JSON Schema (draft-07) check: returns the event or raises JsonSchemaValueException.
Validator = Callable[[Any], Any]
T = TypeVar("T", bound=msgspec.Struct)


@dataclass(frozen=True)
class Coordinates:
    """Where a message came from: ``topic[partition]@offset``."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None
    key: bytes | None = None

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True)
class Rejected:
    """An event the pipeline cannot use, with a low-cardinality kind and a precise reason."""

    kind: str  # malformed_json | schema_violation | late_event
    reason: str


@dataclass(frozen=True)
class DeadLetter:
    raw: bytes
    coordinates: Coordinates
    rejection: Rejected

    def to_record(self, pipeline_version: str) -> dict[str, Any]:
        c = self.coordinates
        return {
            "topic": c.topic,
            "partition": c.partition,
            "offset": c.offset,
            "timestamp_ms": c.timestamp_ms,
            "key_base64": base64.b64encode(c.key).decode() if c.key is not None else None,
            "reason_kind": self.rejection.kind,
            "reason": self.rejection.reason,
            "raw_base64": base64.b64encode(self.raw).decode(),
            "pipeline_version": pipeline_version,
        }


def load_validator(schema_path: Path) -> Validator:
    """Compile a schema file of ``schemas/`` once (fastjsonschema: microseconds per event).

    JSON Schema counts ``1700000000000.0`` as an integer; the validated event gets a Python int
    for every integer-typed top-level field, so event-time arithmetic never meets a float."""
    schema = json.loads(schema_path.read_text())
    validate = fastjsonschema.compile(schema)
    integers = [
        name
        for name, spec in schema.get("properties", {}).items()
        if "integer" in (spec.get("type") if isinstance(spec.get("type"), list) else [spec.get("type")])
    ]

    def validated(event: Any) -> Any:
        validate(event)
        for name in integers:
            if isinstance(event.get(name), float):
                event[name] = int(event[name])
        return event

    return validated


def decode(raw: bytes | None, validator: Validator) -> dict[str, Any] | Rejected:
    """Parse one message value; a schema violation names the first failing field."""
    if raw is None:
        return Rejected("malformed_json", "empty message value")
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Rejected("malformed_json", f"malformed JSON: {exc}")
    if not isinstance(event, dict):
        return Rejected("schema_violation", f"expected a JSON object, got {type(event).__name__}")
    try:
        validator(event)
    except fastjsonschema.JsonSchemaValueException as exc:
        return Rejected("schema_violation", exc.message[:500])
    return event


class TypedDecoder(Generic[T]):
    """The hot path's decoder: msgspec parses and checks an event into ``struct`` in one C call
    (a microsecond). Whatever it refuses goes the schema's way (`decode`), so the JSON Schema
    alone decides what is rejected and why; ``struct`` must be no looser than the schema."""

    def __init__(self, struct: type[T], validator: Validator) -> None:
        self._struct = struct
        self._decoder = msgspec.json.Decoder(struct)
        self._validator = validator

    def decode(self, raw: bytes | None) -> T | Rejected:
        if raw is not None:
            try:
                return self._decoder.decode(raw)
            except (msgspec.MsgspecError, ValueError):  # ValueError: e.g. a UnicodeDecodeError
                pass  # malformed, invalid, or valid in a way msgspec is stricter about (1.0 for 1)
        event = decode(raw, self._validator)
        if isinstance(event, Rejected):
            return event
        try:
            return msgspec.convert(event, self._struct)
        except msgspec.ValidationError as exc:  # a struct stricter than the schema: a bug, said so
            name = self._struct.__name__
            return Rejected("schema_violation", f"valid by the schema but not as {name}: {exc}")
