"""Fuzzing the decoders of every event schema: arbitrary bytes, arbitrary JSON (deep nesting, huge
numbers, NaN, lone surrogates), nearly valid events and byte-level edits of valid ones. Neither the
schema path nor a typed decoder ever raises, and a typed decoder accepts exactly what the schema
accepts, with the same values (`tests.unit.decoding.verdict`)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.hostile import SCHEMA_FILES
from streams.hostile.corpus import TEMPLATES
from tests.unit.decoding import EVENT_SCHEMAS, SCHEMAS, verdict

FUZZ = settings(max_examples=250, deadline=None)
KIND_OF = {schema_file: kind for kind, schema_file in SCHEMA_FILES.items()}
PROPERTIES = {f: json.loads((SCHEMAS / f).read_text())["properties"] for f in EVENT_SCHEMAS}


def valid_event(schema_file: str) -> dict[str, Any]:
    return TEMPLATES[KIND_OF[schema_file]].build("fuzz-1", "fuzz", 1_700_000_000_000)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),  # beyond 64 bits and beyond a double
    st.floats(),  # NaN and infinities included: json.dumps writes NaN, Infinity
    st.text(),  # lone surrogates included
    st.sampled_from(["", "impression", "click", "EUR", "DE", "card", "paid", "1700000000000"]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def to_bytes(value: Any, ascii_only: bool) -> bytes:
    """JSON text as hostile producers write it: NaN literals, big integers, \\ud800 escapes or
    raw surrogate bytes."""
    text = json.dumps(value, ensure_ascii=ascii_only, allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


def field_values(schema_file: str) -> st.SearchStrategy[Any]:
    """Values near each field's constraints, plus anything at all."""
    near = st.one_of(
        st.text(max_size=3),
        st.text(min_size=60, max_size=70),
        st.text(alphabet="xé😀", min_size=125, max_size=130),
        st.integers(946_684_799_998, 946_684_800_002),
        st.integers(4_102_444_799_998, 4_102_444_800_002),
        st.sampled_from([0, -0.0, 1, 1.0, 1.5, 1e-300, 999_999.99, 1_000_000, 1_000_000.5, 10_000, 10_001]),
        st.sampled_from([1_700_000_000_000.0, 1_700_000_000_000.5, True, False, None]),
    )
    members = [m for spec in PROPERTIES[schema_file].values() for m in spec.get("enum", [])]
    return st.one_of(near, st.sampled_from(members or [None]), json_values)


@pytest.mark.parametrize("schema_file", EVENT_SCHEMAS)
@FUZZ
@given(raw=st.one_of(st.none(), st.binary(max_size=200)))
def test_any_bytes(schema_file: str, raw: bytes | None) -> None:
    verdict(raw, schema_file)


@pytest.mark.parametrize("schema_file", EVENT_SCHEMAS)
@FUZZ
@given(value=json_values, ascii_only=st.booleans())
def test_any_json_value(schema_file: str, value: Any, ascii_only: bool) -> None:
    verdict(to_bytes(value, ascii_only), schema_file)


@pytest.mark.parametrize("schema_file", EVENT_SCHEMAS)
@FUZZ
@given(data=st.data(), ascii_only=st.booleans())
def test_nearly_valid_events(schema_file: str, data: st.DataObject, ascii_only: bool) -> None:
    event = valid_event(schema_file)
    names = sorted(set(event) | set(PROPERTIES[schema_file]))
    changed = data.draw(st.dictionaries(st.sampled_from(names), field_values(schema_file), max_size=3))
    removed = data.draw(st.sets(st.sampled_from(names), max_size=2))
    extra = data.draw(st.dictionaries(st.text(max_size=5), json_values, max_size=2))
    event = {k: v for k, v in {**event, **changed}.items() if k not in removed} | extra
    verdict(to_bytes(event, ascii_only), schema_file)


@pytest.mark.parametrize("schema_file", EVENT_SCHEMAS)
@FUZZ
@given(
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255), st.sampled_from("sid")), max_size=4)
)
def test_byte_edits_of_a_valid_event(schema_file: str, edits: list[tuple[int, int, str]]) -> None:
    """Substitute, insert or delete bytes of a valid message: parser differences show up here."""
    raw = bytearray(orjson.dumps(valid_event(schema_file)))
    for position, byte, op in edits:
        at = position % (len(raw) + 1)
        if op == "i":
            raw[at:at] = bytes([byte])
        elif at < len(raw):
            raw[at : at + 1] = bytes([byte]) if op == "s" else b""
    verdict(bytes(raw), schema_file)


@pytest.mark.parametrize("schema_file", EVENT_SCHEMAS)
@settings(max_examples=60, deadline=None)
@given(
    depth=st.one_of(st.integers(1, 1100), st.just(100_000)),
    opener=st.sampled_from([b"[", b'{"a":']),
    closed=st.booleans(),
    where=st.sampled_from(["value", "ts", "extra"]),
)
def test_deep_nesting(schema_file: str, depth: int, opener: bytes, closed: bool, where: str) -> None:
    closer = b"]" if opener == b"[" else b"}"
    nested = opener * depth + (b"1" if opener != b"[" else b"") + (closer * depth if closed else b"")
    if where != "value":
        event = {k: v for k, v in valid_event(schema_file).items() if k != where}
        nested = orjson.dumps(event)[:-1] + b',"' + where.encode() + b'":' + nested + b"}"
    verdict(nested, schema_file)
