"""What the decoding tests share: the event schemas, every typed (msgspec) decoder of the project,
and the check that holds a typed decoder to its schema."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any

import msgspec

from streams.ctr.events import AdEventMessage
from streams.events import Rejected, TypedDecoder, Validator, decode, load_validator
from streams.fraud.messages import LabelMessage, TransactionMessage, label_decoder, transaction_decoder
from streams.settings import load_settings, project_dir

SCHEMAS = load_settings().schemas_dir
EVENT_SCHEMAS = (
    "ad_event.schema.json",
    "transaction.schema.json",
    "label.schema.json",
    "smoke_event.schema.json",
)
# Every struct a `TypedDecoder` is built with in streams/, by the schema it must agree with
# (`test_every_typed_decoder_is_held_to_its_schema` finds them in the source), and how the
# pipelines build its decoder from the schema's validator.
TYPED: dict[str, tuple[type[msgspec.Struct], Callable[[Validator], TypedDecoder[Any]]]] = {
    "ad_event.schema.json": (AdEventMessage, lambda validator: TypedDecoder(AdEventMessage, validator)),
    "transaction.schema.json": (TransactionMessage, transaction_decoder),
    "label.schema.json": (LabelMessage, label_decoder),
}
TYPED_STRUCTS = {schema_file: struct for schema_file, (struct, _) in TYPED.items()}


@cache
def validator(schema_file: str) -> Validator:
    return load_validator(SCHEMAS / schema_file)


@cache
def typed_decoder(schema_file: str) -> TypedDecoder[Any] | None:
    if schema_file not in TYPED:
        return None
    _, build = TYPED[schema_file]
    return build(validator(schema_file))


def structs_used_in_source() -> set[str]:
    """Names of the structs ``TypedDecoder(...)`` is called with anywhere in streams/."""
    call = re.compile(r"TypedDecoder\(\s*([A-Za-z_]\w*)\s*,")
    return {
        name
        for path in (project_dir() / "streams").rglob("*.py")
        for name in call.findall(path.read_text())
        if name != "struct"
    }


def _same_fields(typed: msgspec.Struct, event: dict[str, Any]) -> None:
    """The struct holds the schema's values, field by field, types included: a field absent from
    the event is the struct's default (or unset), and an integer may only widen to a float field."""
    for info in msgspec.structs.fields(typed):
        value = getattr(typed, info.name)
        if info.encode_name in event:
            expected = event[info.encode_name]
            if isinstance(value, float) and type(expected) is int:
                expected = float(expected)
        else:
            expected = msgspec.UNSET if info.default is msgspec.NODEFAULT else info.default
        assert (type(value), value) == (type(expected), expected), (info.name, value, expected)


def verdict(raw: bytes | None, schema_file: str) -> dict[str, Any] | Rejected:
    """The schema's verdict on ``raw``, after checking that the project's typed decoder for the
    schema (if any) gives the same: the same `Rejected`, or an event with the same field values
    (types included), and that msgspec's own fast path never accepts what the schema refuses."""
    by_schema = decode(raw, validator(schema_file))
    typed = typed_decoder(schema_file)
    if typed is None:
        return by_schema
    struct = TYPED_STRUCTS[schema_file]
    result = typed.decode(raw)
    try:
        fast: msgspec.Struct | None = msgspec.json.decode(raw, type=struct) if raw is not None else None
    except Exception:
        fast = None
    if isinstance(by_schema, Rejected):
        assert result == by_schema, (raw[:200] if raw else raw, result, by_schema)
        assert fast is None, (raw[:200] if raw else raw, fast, by_schema)
    else:
        assert isinstance(result, struct), (raw[:200] if raw else raw, result)
        _same_fields(result, by_schema)
        assert fast is None or fast == result
    return by_schema
