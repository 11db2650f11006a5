"""Decoding and validating raw event bytes against the JSON Schemas in ``schemas/``, and the dead
letters of what cannot be used. Pure: no input, however hostile, makes these functions raise."""

from __future__ import annotations

import base64
import hashlib
import json
import traceback
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

REJECTION_KINDS = (
    "malformed_json",
    "schema_violation",
    "late_event",
    "unattributed_click",
    "processing_error",
)
REASON_MAX_CHARS = 2_000
# Below Kafka's default message.max.bytes (1 MB), leaving room for the key, headers and framing.
DEFAULT_DEAD_LETTER_MAX_BYTES = 900_000
# Any limit from here up holds every letter (under a tight limit the key and reason give way first).
DEAD_LETTER_MIN_BYTES = 1_024
DEAD_LETTER_KEY_MAX_BYTES = 4_096  # of the message key kept in a letter: the raw topic keeps it all
DEAD_LETTER_ROW_RAW_MAX_BYTES = 1_000_000  # of the value kept in a `dead_letters` row
_TRACEBACK_FRAMES = 5
_EXCEPTION_MESSAGE_CHARS = 1_000


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

    kind: str  # one of REJECTION_KINDS
    reason: str


def capped_reason(reason: str, max_chars: int = REASON_MAX_CHARS) -> str:
    """``reason`` in at most ``max_chars`` characters, always encodable as UTF-8 (a lone
    surrogate in an exception message would make the JSON encoder raise)."""
    text = reason.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) <= max_chars:
        return text
    return text[: max_chars - 1] + "…" if max_chars > 0 else ""


def processing_error(exc: BaseException) -> Rejected:
    """The rejection of a message whose fold raised: exception type, message and the innermost
    frames (``file:line in function``), deterministic for the same code and input."""
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not turn one bad message into a crash loop
        message = "<unprintable message>"
    if len(message) > _EXCEPTION_MESSAGE_CHARS:
        message = message[:_EXCEPTION_MESSAGE_CHARS] + "…"
    frames = traceback.extract_tb(exc.__traceback__)[-_TRACEBACK_FRAMES:]
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in reversed(frames))
    reason = f"{type(exc).__qualname__}: {message}" + (f" (at {where})" if where else "")
    return Rejected("processing_error", capped_reason(reason))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class DeadLetter:
    """A message a pipeline could not use. Its coordinates point at the full original in the raw
    topic (kept forever), so a letter may carry a prefix of big values (``raw_truncated``)."""

    raw: bytes
    coordinates: Coordinates
    rejection: Rejected

    def _key(self, max_bytes: int = DEAD_LETTER_KEY_MAX_BYTES) -> tuple[bytes | None, bool]:
        key = self.coordinates.key
        if key is None or len(key) <= max_bytes:
            return key, False
        return key[:max_bytes], True

    def _metadata(self, pipeline_version: str, key_max_bytes: int, reason_max_chars: int) -> dict[str, Any]:
        """The record but its raw value."""
        c = self.coordinates
        key, key_truncated = self._key(key_max_bytes)
        return {
            "topic": c.topic,
            "partition": c.partition,
            "offset": c.offset,
            "timestamp_ms": c.timestamp_ms,
            "key_base64": _b64(key) if key is not None else None,
            "key_truncated": key_truncated,
            "reason_kind": self.rejection.kind,
            "reason": capped_reason(self.rejection.reason, reason_max_chars),
            "raw_base64": "",
            "raw_size": len(self.raw),
            "raw_sha256": hashlib.sha256(self.raw).hexdigest(),
            "raw_truncated": False,  # "false" is longer than "true": the room is measured with it
            "pipeline_version": pipeline_version,
        }

    def to_record(
        self, pipeline_version: str, max_bytes: int = DEFAULT_DEAD_LETTER_MAX_BYTES
    ) -> dict[str, Any]:
        """The dead-letter topic's record (`schemas/dead_letter.schema.json`): its JSON
        (``orjson.dumps``) is at most ``max_bytes``, the raw value cut to the prefix that fits.
        Under a limit too tight for the key and reason (far below the default), they are cut too."""
        for key_max_bytes, reason_max_chars in (
            (DEAD_LETTER_KEY_MAX_BYTES, REASON_MAX_CHARS),
            (0, 100),
            (0, 0),
        ):
            record = self._metadata(pipeline_version, key_max_bytes, reason_max_chars)
            room = max_bytes - len(orjson.dumps(record))
            if room >= 0:
                break
        else:
            raise ValueError(f"a dead letter needs more than {max_bytes} bytes (at least {max_bytes - room})")
        raw = self.raw[: room // 4 * 3]  # base64: 4 ASCII characters per 3 bytes, none escaped in JSON
        record["raw_base64"] = _b64(raw)
        record["raw_truncated"] = len(raw) < len(self.raw)
        return record

    def to_row(self, pipeline_version: str) -> dict[str, Any]:
        """The row of the ``dead_letters`` table (deploy/cassandra/schema/050_dead_letters.cql),
        where a letter goes when the dead-letter topic refuses it for good."""
        c = self.coordinates
        key, key_truncated = self._key()
        raw = self.raw[:DEAD_LETTER_ROW_RAW_MAX_BYTES]
        return {
            "pipeline_version": pipeline_version,
            "topic": c.topic,
            "partition": c.partition,
            "offset": c.offset,
            "timestamp_ms": c.timestamp_ms,
            "key": key,
            "key_truncated": key_truncated,
            "reason_kind": self.rejection.kind,
            "reason": capped_reason(self.rejection.reason),
            "raw": raw,
            "raw_size": len(self.raw),
            "raw_sha256": hashlib.sha256(self.raw).hexdigest(),
            "raw_truncated": len(raw) < len(self.raw),
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
            # Integral and finite once validated: orjson refuses NaN and infinities.
            if isinstance(event.get(name), float):
                event[name] = int(event[name])
        return event

    validated.judges_only = judged_names(schema)  # type: ignore[attr-defined]
    return validated


# Keywords that constrain an object's set of properties (not one named property).
_PROPERTY_SET_KEYWORDS = {
    "patternProperties", "propertyNames", "minProperties", "maxProperties", "unevaluatedProperties",
    "dependentSchemas", "dependencies",
}  # fmt: skip


def judged_names(schema: Any) -> frozenset[str] | None:
    """The property names whose values alone decide whether an object is valid, or None if the
    schema also looks at the others (a closed or patterned property set): then a field a struct
    does not know can change the verdict."""
    names: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, list):
            return all(visit(item) for item in node)
        if not isinstance(node, dict):
            return True
        if _PROPERTY_SET_KEYWORDS & node.keys() or node.get("additionalProperties", True) is not True:
            return False
        names.update(node.get("properties", {}))
        names.update(node.get("required", []))
        return all(visit(v) for k, v in node.items() if k not in ("properties", "required")) and all(
            visit(v) for v in node.get("properties", {}).values()
        )

    return frozenset(names) if visit(schema) else None


def decode(raw: bytes | None, validator: Validator) -> dict[str, Any] | Rejected:
    """Parse one message value; a schema violation names the first failing field. Every bytes
    value gives an event or a `Rejected`: this is the contract the fast path is held to."""
    if raw is None:
        return Rejected("malformed_json", "empty message value (null)")
    try:
        event = orjson.loads(raw)
    except (orjson.JSONDecodeError, RecursionError) as exc:  # orjson stops nesting at 1024 levels
        return Rejected("malformed_json", f"malformed JSON: {exc}"[:500])
    if not isinstance(event, dict):
        return Rejected("schema_violation", f"expected a JSON object, got {type(event).__name__}")
    try:
        validator(event)
    except fastjsonschema.JsonSchemaValueException as exc:
        return Rejected("schema_violation", exc.message[:500])
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # a validator bug, said so
        return Rejected("schema_violation", f"could not be validated: {type(exc).__name__}: {exc}"[:500])
    return event


class TypedDecoder(Generic[T]):
    """The hot path's decoder: msgspec parses and checks an event into ``struct`` in one C call
    (a microsecond). Whatever it refuses, for whatever reason (a RecursionError on deep nesting
    included), goes the schema's way (`decode`), so the JSON Schema alone decides what is rejected
    and why. ``struct`` must be no looser than the schema and must forbid unknown fields: msgspec
    skips unknown values without the checks the schema path's parser makes."""

    def __init__(self, struct: type[T], validator: Validator) -> None:
        if not struct.__struct_config__.forbid_unknown_fields:
            raise TypeError(f"{struct.__name__} must be declared with forbid_unknown_fields=True")
        self._struct = struct
        self._fields = struct.__struct_encode_fields__
        self._decoder = msgspec.json.Decoder(struct)
        self._validator = validator
        # When the schema judges only fields the struct knows, a message with other fields is valid
        # exactly when its known fields are: orjson's parse (the schema path's) and the struct say so.
        judged = getattr(validator, "judges_only", None)
        self._others_free = judged is not None and judged <= set(self._fields)

    def decode(self, raw: bytes | None) -> T | Rejected:
        if raw is None:
            return self._by_schema(raw)
        try:
            return self._decoder.decode(raw)
        except Exception:  # malformed, invalid, too deep, an unknown field, or 1.0 for 1
            return self._with_other_fields(raw) if self._others_free else self._by_schema(raw)

    def _with_other_fields(self, raw: bytes) -> T | Rejected:
        """A message the strict struct refused may carry fields it does not know (a producer's
        extras): parsed as the schema path parses it, its known fields checked by the struct. A
        refusal still goes the schema's way, which words it."""
        try:
            event = orjson.loads(raw)
        except (orjson.JSONDecodeError, RecursionError):
            return self._by_schema(raw)
        if isinstance(event, dict):
            try:
                return msgspec.convert({n: event[n] for n in self._fields if n in event}, self._struct)
            except (msgspec.ValidationError, ValueError, TypeError):
                pass
        return self._by_schema(raw)

    def _by_schema(self, raw: bytes | None) -> T | Rejected:
        event = decode(raw, self._validator)
        if isinstance(event, Rejected):
            return event
        known = {name: event[name] for name in self._fields if name in event}
        try:
            return msgspec.convert(known, self._struct)
        except msgspec.ValidationError as exc:  # a struct stricter than the schema: a bug, said so
            name = self._struct.__name__
            return Rejected("schema_violation", f"valid by the schema but not as {name}: {exc}"[:500])
