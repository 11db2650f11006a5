"""Hostile values for every field the schema names: wrong types, missing, nulls, lengths, patterns,
enums, numbers JSON cannot hold, bounds, duplicates and extra fields. Read from the schema itself."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from streams.hostile.corpus import VALID, Corpus, HostileMessage

HUGE_DIGITS = 5_000
LONG_ID = 10_000
VIOLATION = "schema_violation"
MALFORMED = "malformed_json"
# One value of each JSON type; a field gets every one its schema's types do not allow.
SAMPLES: dict[str, Any] = {
    "string": "wrong", "integer": 7, "number": 1.5, "boolean": True, "null": None,
    "array": [], "object": {"a": 1},
}  # fmt: skip


def field_cases(c: Corpus, *, far_future: bool) -> Iterator[HostileMessage]:
    for field, spec in c.properties.items():
        yield from _wrong_types(c, field, spec)
        if "string" in types_of(spec):
            yield from _strings(c, field, spec)
        if types_of(spec) & {"integer", "number"}:
            yield from _numbers(c, field, spec, far_future)
    yield from _presence(c)
    yield from _duplicates(c)
    yield from _extras(c)


def types_of(spec: Mapping[str, Any]) -> set[str]:
    """The JSON types a property allows (an enum allows its members' types)."""
    declared = spec.get("type")
    if declared is None and "enum" in spec:
        names = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}
        return {names[type(member)] for member in spec["enum"]}
    return set(declared) if isinstance(declared, list) else {declared} if declared else set(SAMPLES)


def _wrong_types(c: Corpus, field: str, spec: Mapping[str, Any]) -> Iterator[HostileMessage]:
    allowed = types_of(spec) | ({"integer"} if "number" in types_of(spec) else set())
    for json_type, sample in SAMPLES.items():
        if json_type not in allowed:
            yield c.changed(f"wrong_type.{field}.{json_type}", {field: sample}, VIOLATION)
    if "null" in allowed:
        yield c.changed(f"null.{field}", {field: None}, VALID)
    for member in spec.get("enum", ()):
        if isinstance(member, str):
            yield c.changed(f"enum.{field}.{member}.upper", {field: member.upper()}, VIOLATION)
            yield c.changed(f"enum.{field}.{member}.padded", {field: f" {member}"}, VIOLATION)


def _strings(c: Corpus, field: str, spec: Mapping[str, Any]) -> Iterator[HostileMessage]:
    """Lengths (in code points, as JSON Schema counts them) and patterns."""
    if "pattern" in spec:
        sample = str(c.event()[field])
        for name, value in [
            ("lowercase", sample.lower()),
            ("newline", sample + "\n"),
            ("space", f" {sample}"),
        ]:
            yield c.changed(f"pattern.{field}.{name}", {field: value}, VIOLATION)
        return
    low, high = spec.get("minLength", 0), spec.get("maxLength")
    if low > 0:
        yield c.changed(f"too_short.{field}", {field: "x" * (low - 1)}, VIOLATION)
    if high is None:
        return
    for name, pad in [("ascii", "x"), ("two_byte", "é"), ("astral", "😀")]:
        event = c.event()
        unique = str(event.get(field) or "")[:high]
        event[field] = unique + pad * (high - len(unique))
        yield c.message(f"max_length.{field}.{name}", event, VALID)
    yield c.changed(f"too_long.{field}", {field: "x" * (high + 1)}, VIOLATION)
    if field == c.template.id_field:
        yield c.changed(f"{field}_of_{LONG_ID}_characters", {field: "i" * LONG_ID}, VIOLATION)


def _accepts(spec: Mapping[str, Any], value: float) -> bool:
    """Whether a number meets the property's numeric constraints (the type aside)."""
    return (
        value >= spec.get("minimum", value)
        and value <= spec.get("maximum", value)
        and ("exclusiveMinimum" not in spec or value > spec["exclusiveMinimum"])
        and ("exclusiveMaximum" not in spec or value < spec["exclusiveMaximum"])
        and ("integer" not in types_of(spec) or "number" in types_of(spec) or float(value).is_integer())
    )


def _numbers(c: Corpus, field: str, spec: Mapping[str, Any], far_future: bool) -> Iterator[HostileMessage]:
    for name, raw in [("nan", b"NaN"), ("infinity", b"Infinity"), ("minus_infinity", b"-Infinity"),
                      ("huge_integer", b"9" * HUGE_DIGITS), ("huge_negative", b"-" + b"9" * HUGE_DIGITS),
                      ("huge_exponent", b"1e400"), ("hex", b"0x10"), ("leading_zero", b"01"),
                      ("plus_sign", b"+1")]:  # fmt: skip
        yield c.spliced(f"number.{field}.{name}", field, raw, MALFORMED)
    for name, raw, value in [("negative_zero", b"-0", 0), ("negative_zero_float", b"-0.0", 0),
                             ("tiny_exponent", b"1e-400", 0), ("denormal", b"5e-324", 5e-324)]:  # fmt: skip
        yield c.spliced(f"number.{field}.{name}", field, raw, VALID if _accepts(spec, value) else VIOLATION)
    sample = c.event()[field]
    yield c.changed(f"number_as_string.{field}", {field: str(sample)}, VIOLATION)
    if "integer" in types_of(spec):
        yield c.spliced(f"number.{field}.integral_float", field, f"{sample}.0".encode(), VALID)
        yield c.spliced(f"number.{field}.exponent", field, f"{sample}e0".encode(), VALID)
        yield c.spliced(f"number.{field}.fraction", field, f"{sample}.5".encode(), VIOLATION)
    yield from _bounds(c, field, spec, far_future)
    if field == "ts":
        yield c.changed("ts_in_seconds", {"ts": c.base_ms // 1000}, VIOLATION)
        yield c.changed("ts_in_microseconds", {"ts": c.base_ms * 1000}, VIOLATION)


def _bounds(c: Corpus, field: str, spec: Mapping[str, Any], far_future: bool) -> Iterator[HostileMessage]:
    step = 1 if "integer" in types_of(spec) else 0.01
    if "minimum" in spec:
        low = spec["minimum"]
        yield c.changed(f"bound.{field}.minimum", {field: low}, VALID, _effect(c, field, "minimum"))
        yield c.changed(f"bound.{field}.below_minimum", {field: low - step}, VIOLATION)
    if "exclusiveMinimum" in spec:
        low = spec["exclusiveMinimum"]
        yield c.changed(f"bound.{field}.exclusive_minimum", {field: low}, VIOLATION)
        yield c.changed(f"bound.{field}.above_exclusive_minimum", {field: low + step}, VALID)
    if "maximum" in spec:
        high = spec["maximum"]
        if field != "ts" or far_future:
            yield c.changed(f"bound.{field}.maximum", {field: high}, VALID, _effect(c, field, "maximum"))
        yield c.changed(f"bound.{field}.above_maximum", {field: high + step}, VIOLATION)


def _effect(c: Corpus, field: str, bound: str) -> str | None:
    if field != "ts":
        return None
    if bound == "maximum":
        return (
            f"{c.template.effect}; moves its partition's watermark to 2100: every later event there is late"
        )
    if c.kind == "ad_events":
        return "a late_event dead letter (older than its partition's watermark minus the grace period)"
    return f"{c.template.effect}, at event time 2000-01-01"


def _presence(c: Corpus) -> Iterator[HostileMessage]:
    required = set(c.schema.get("required", ()))
    for field in sorted(required):
        yield c.message(f"missing.{field}", {k: v for k, v in c.event().items() if k != field}, VIOLATION)
    only = {k: v for k, v in c.event().items() if k in required}
    yield c.message("only_required_fields", only, VALID)
    condition, then = c.schema.get("if", {}).get("properties", {}), c.schema.get("then", {})
    if condition and then.get("required"):
        consts = {field: spec["const"] for field, spec in condition.items() if "const" in spec}
        event = {k: v for k, v in {**c.event(), **consts}.items() if k not in then["required"]}
        yield c.message("conditional_field_missing", event, VIOLATION)


def _duplicates(c: Corpus) -> Iterator[HostileMessage]:
    """JSON objects with a repeated name: the last value wins, in both decoders."""
    id_field = c.template.id_field

    def twice(name: str, field: str, value: bytes, expected: str, *, first: bool = False) -> HostileMessage:
        event = c.event()
        text, pair = orjson.dumps(event), b'"' + field.encode() + b'":' + value
        doubled = b"{" + pair + b"," + text[1:] if first else text[:-1] + b"," + pair + b"}"
        return c.raw(f"duplicate.{name}", c.key(event), doubled, expected)

    yield twice(f"{id_field}.first_invalid", id_field, b"123", VALID, first=True)
    yield twice(f"{id_field}.last_invalid", id_field, b"123", VIOLATION)
    yield twice(f"{id_field}.two_valid_ids", id_field, f'"{c.run_id}-second-{id_field}"'.encode(), VALID)
    yield twice("ts.last_invalid", "ts", b'"soon"', VIOLATION)
    yield twice("ts.first_invalid", "ts", b'"soon"', VALID, first=True)


def _extras(c: Corpus) -> Iterator[HostileMessage]:
    expected = VALID if c.extra_allowed else VIOLATION
    yield c.spliced("extra_field", "extra", b'{"nested": [1, {"b": null}], "n": 1.5}', expected)
    yield c.spliced("extra_field_empty_name", "", b'"x"', expected)
    yield c.spliced("extra_field_proto", "__proto__", b'{"admin": true}', expected)
    yield c.spliced("extra_field_u64_max", "extra", b"18446744073709551615", expected)
    yield c.spliced("extra_field_negative_zero", "extra", b"-0", expected)
    yield c.spliced("extra_field_huge_integer", "extra", b"9" * HUGE_DIGITS, MALFORMED)
    yield c.spliced("extra_field_nan", "extra", b"NaN", MALFORMED)
