from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Annotated

import msgspec
import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from streams.engine.testing import LogMessage
from streams.events import Coordinates, DeadLetter, Rejected, Validator, decode, load_validator
from streams.settings import load_settings
from streams.smoke import logic as smoke
from streams.smoke.pipeline import SmokePipeline
from tests.unit.decoding import TYPED_STRUCTS, structs_used_in_source, verdict

SCHEMAS = load_settings().schemas_dir


@pytest.fixture(scope="module")
def validator() -> Validator:
    return load_validator(SCHEMAS / smoke.SCHEMA_FILE)


def test_a_valid_event_decodes(validator: Validator) -> None:
    raw = b'{"event_id": "e1", "run_id": "r", "ts": 1700000000000}'
    assert decode(raw, validator) == {"event_id": "e1", "run_id": "r", "ts": 1700000000000}


@pytest.mark.parametrize(
    ("raw", "kind", "mentions"),
    [
        (b"{oops", "malformed_json", "malformed JSON"),
        (None, "malformed_json", "empty"),
        (b"[1]", "schema_violation", "JSON object"),
        (b'{"run_id": "r", "ts": 1700000000000}', "schema_violation", "event_id"),
        (b'{"event_id": "e", "run_id": "r", "ts": -1}', "schema_violation", "ts"),
        (b'{"event_id": "e", "run_id": "r", "ts": 99999999999999}', "schema_violation", "ts"),
        (b'{"event_id": "e", "run_id": "r", "ts": "soon"}', "schema_violation", "ts"),
    ],
)
def test_bad_input_is_rejected_with_a_reason(
    validator: Validator, raw: bytes | None, kind: str, mentions: str
) -> None:
    result = decode(raw, validator)
    assert isinstance(result, Rejected)
    assert result.kind == kind
    assert mentions in result.reason


def test_dead_letter_record_keeps_bytes_and_coordinates_and_follows_its_schema() -> None:
    at = Coordinates("raw", 3, 42, timestamp_ms=1700000000000, key=b"k")
    letter = DeadLetter(b"\xff{bad", at, Rejected("malformed_json", "malformed JSON: x"))
    record = letter.to_record("v7")
    assert str(at) == "raw[3]@42"
    assert base64.b64decode(record["raw_base64"]) == b"\xff{bad"
    assert (record["topic"], record["partition"], record["offset"]) == ("raw", 3, 42)
    load_validator(SCHEMAS / "dead_letter.schema.json")(record)


@given(
    st.lists(
        st.one_of(
            st.builds(lambda i: ("good", i), st.integers(0, 10**6)),
            st.builds(lambda b: ("junk", b), st.binary(max_size=30)),
        ),
        max_size=60,
    )
)
def test_a_batch_splits_into_exactly_the_valid_events_and_the_rest(items: list[tuple[str, object]]) -> None:
    pipeline = SmokePipeline(load_validator(SCHEMAS / smoke.SCHEMA_FILE), "t", "v1")
    messages = []
    for offset, (kind, value) in enumerate(items):
        if kind == "good":
            raw = orjson.dumps({"event_id": f"e{value}", "run_id": "r", "ts": 1700000000000 + int(value)})  # type: ignore[call-overload]
        else:
            raw = value  # type: ignore[assignment]
        messages.append(LogMessage("t", 0, offset, raw))
    folded = pipeline.fold(0, {"t": messages})
    rows = pipeline.drain().rows.get(smoke.TABLE, [])
    assert len(rows) + len(folded.letters) == len(messages)
    good_offsets = {o for o, (kind, _) in enumerate(items) if kind == "good"}
    # junk of at most 30 bytes can never be a valid event (the shortest is longer)
    assert good_offsets == {row["source_offset"] for row in rows}
    assert all(
        letter.raw == (messages[letter.coordinates.offset].value() or b"") for letter in folded.letters
    )


def test_an_integral_float_time_is_an_integer_time() -> None:
    """JSON Schema counts 1700000000000.0 as an integer; event-time arithmetic must get an int."""
    from streams.settings import Settings

    validator = load_validator(Settings().schemas_dir / "ad_event.schema.json")
    raw = (
        b'{"type": "impression", "event_id": "e1", "ts": 1700000000000.0, "ad_id": "a", '
        b'"campaign_id": "c", "user_id": "u", "segment": "news"}'
    )
    event = decode(raw, validator)
    assert isinstance(event, dict) and event["ts"] == 1_700_000_000_000 and type(event["ts"]) is int
    assert isinstance(decode(raw.replace(b".0,", b".5,"), validator), Rejected)


_AD_FIELDS = {
    "type": st.sampled_from(["impression", "click", "view", "", 1, None]),
    "event_id": st.one_of(
        st.text(max_size=3), st.just("e" * 129), st.integers(-(2**63), 2**63 - 1), st.none()
    ),
    "ts": st.one_of(
        st.integers(946_684_799_999, 946_684_800_001),
        st.integers(4_102_444_799_999, 4_102_444_800_001),
        st.just(1_700_000_000_000.0),
        st.just(1_700_000_000_000.5),
        st.booleans(),
        st.just("1700000000000"),
        st.none(),
    ),
    "ad_id": st.one_of(st.text(max_size=2), st.just("a" * 128), st.just("a" * 129), st.none()),
    "campaign_id": st.one_of(st.text(max_size=2), st.none()),
    "user_id": st.one_of(st.text(max_size=2), st.just([]), st.none()),
    "segment": st.one_of(st.text(max_size=2), st.just("s" * 64), st.just("s" * 65), st.none()),
    "impression_id": st.one_of(st.text(max_size=2), st.none()),
    "extra": st.integers(-(2**63), 2**63 - 1),
}


_VALID_AD_EVENT = {
    "type": "click",
    "event_id": "e1",
    "ts": 1_700_000_000_000,
    "ad_id": "a1",
    "campaign_id": "c1",
    "user_id": "u1",
    "segment": "news",
    "impression_id": "i1",
}


def _null_cases(test: Callable[..., None]) -> Callable[..., None]:
    """Pinned: an explicit ``null`` for every field of the schema, for an impression and a click
    (the fast decoder once accepted ``"impression_id": null``, which the schema refuses)."""
    for field in sorted(_VALID_AD_EVENT):
        for kind in ("impression", "click"):
            changes = {"type": kind, field: None} if field != "type" else {"type": None}
            test = example(changes, set())(test)
    return test


@given(
    st.fixed_dictionaries({}, optional=_AD_FIELDS),
    st.sets(st.sampled_from(sorted(_VALID_AD_EVENT)), max_size=2),
)
@_null_cases
def test_the_typed_ad_decoder_accepts_exactly_what_the_schema_accepts(
    changes: dict[str, object], removed: set[str]
) -> None:
    """msgspec is the fast path; the JSON Schema is the contract. Every event gets the same verdict
    (and an accepted one the same values) whichever path decides it."""
    event = {k: v for k, v in {**_VALID_AD_EVENT, **changes}.items() if k not in removed}
    verdict(orjson.dumps(event), "ad_event.schema.json")


@given(
    st.one_of(st.binary(max_size=40), st.builds(lambda b: b'{"type": "' + b + b'"}', st.binary(max_size=8)))
)
def test_the_typed_decoder_turns_any_bytes_into_an_event_or_the_schema_s_rejection(raw: bytes) -> None:
    """Invalid UTF-8, truncated JSON, anything: never an exception, always the schema's verdict."""
    verdict(raw, "ad_event.schema.json")


def test_a_null_impression_id_is_refused_by_both_paths() -> None:
    event = {**_VALID_AD_EVENT, "type": "impression", "impression_id": None}
    result = verdict(orjson.dumps(event), "ad_event.schema.json")
    assert isinstance(result, Rejected) and "impression_id" in result.reason


_DEEP = 100_000
_VALID_AD_BYTES = orjson.dumps(_VALID_AD_EVENT)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":' * _DEEP,
        b'{"a":' * _DEEP + b"1" + b"}" * _DEEP,
        b"[" * _DEEP + b"]" * _DEEP,
        _VALID_AD_BYTES[:-1] + b',"x":' + b'{"a":' * _DEEP + b"1" + b"}" * _DEEP + b"}",
        _VALID_AD_BYTES[:-1] + b',"x":' + b"[" * _DEEP + b"]" * _DEEP + b"}",
        _VALID_AD_BYTES[:-1] + b',"impression_id":' + b"[" * _DEEP + b"]" * _DEEP + b"}",
    ],
    ids=["open-objects", "objects", "arrays", "objects-in-extra", "arrays-in-extra", "arrays-in-field"],
)
def test_deep_nesting_is_malformed_json_not_a_crash(raw: bytes) -> None:
    """msgspec raises RecursionError on deep objects; orjson stops at 1024 levels."""
    result = verdict(raw, "ad_event.schema.json")
    assert isinstance(result, Rejected) and result.kind == "malformed_json", result


def test_unknown_fields_take_the_schema_path_and_are_judged_by_it() -> None:
    """msgspec would skip these values; the schema path's parser refuses them."""
    for extra, kind in [
        (b"1" * 5000, "malformed_json"),
        (b'"\xff"', "malformed_json"),
        (b'"ok"', None),
    ]:
        result = verdict(_VALID_AD_BYTES[:-1] + b',"x":' + extra + b"}", "ad_event.schema.json")
        assert (result.kind if isinstance(result, Rejected) else None) == kind


def test_a_struct_that_skips_unknown_fields_cannot_be_a_typed_decoder() -> None:
    from streams.ctr.events import AdEvent
    from streams.events import TypedDecoder

    with pytest.raises(TypeError, match="forbid_unknown_fields"):
        TypedDecoder(AdEvent, load_validator(SCHEMAS / "ad_event.schema.json"))


def test_every_typed_decoder_is_held_to_its_schema() -> None:
    """The property tests cover every struct a TypedDecoder is built with."""
    covered = {struct.__name__ for struct in TYPED_STRUCTS.values()}
    used = structs_used_in_source()
    assert used and used <= covered, used - covered


class _CountingValidator:
    """The ad-event schema's validator, counting its calls: whether the fast path decided."""

    def __init__(self) -> None:
        self.calls = 0
        self._validate = load_validator(SCHEMAS / "ad_event.schema.json")

    def __call__(self, event: object) -> object:
        self.calls += 1
        return self._validate(event)


def test_the_typed_decoder_decides_a_valid_event_without_the_schema() -> None:
    from streams.ctr.events import AdEventMessage
    from streams.events import TypedDecoder

    validator = _CountingValidator()
    decoder = TypedDecoder(AdEventMessage, validator)
    event = decoder.decode(_VALID_AD_BYTES)
    assert isinstance(event, AdEventMessage) and event.impression_id == "i1" and validator.calls == 0
    # a field the struct does not know: the schema decides, and the struct keeps the known fields
    with_extra = decoder.decode(_VALID_AD_BYTES[:-1] + b',"x":"ok"}')
    assert with_extra == event and validator.calls == 1
    refused = decoder.decode(orjson.dumps({**_VALID_AD_EVENT, "impression_id": None}))
    assert isinstance(refused, Rejected) and "impression_id" in refused.reason and validator.calls == 2
    assert isinstance(decoder.decode(None), Rejected) and validator.calls == 2  # nothing to validate


def test_a_click_without_its_impression_is_refused_by_the_struct_itself() -> None:
    from streams.ctr.events import AdEventMessage

    click = {k: v for k, v in _VALID_AD_EVENT.items() if k != "impression_id"}
    with pytest.raises(msgspec.ValidationError) as refused:
        msgspec.json.decode(orjson.dumps(click), type=AdEventMessage)
    assert str(refused.value) == "a click needs its impression_id"


@pytest.mark.parametrize(("length", "cut"), [(1000, False), (1001, True)])
def test_a_processing_error_keeps_a_thousand_characters_of_the_message(length: int, cut: bool) -> None:
    from streams.events import processing_error

    reason = processing_error(ValueError("m" * length)).reason
    assert reason == "ValueError: " + "m" * 1000 + ("…" if cut else "")


def test_the_reasons_of_the_schema_path_word_for_word() -> None:
    validator = load_validator(SCHEMAS / smoke.SCHEMA_FILE)
    assert decode(None, validator) == Rejected("malformed_json", "empty message value (null)")
    assert decode(b"[1]", validator) == Rejected("schema_violation", "expected a JSON object, got list")

    def broken(event: object) -> object:
        raise ValueError("boom " + "x" * 600)

    reason = ("could not be validated: ValueError: boom " + "x" * 600)[:500]
    assert decode(b"{}", broken) == Rejected("schema_violation", reason)


class Strict(msgspec.Struct, forbid_unknown_fields=True):
    event_id: Annotated[str, msgspec.Meta(min_length=5)]


def test_a_struct_stricter_than_the_schema_is_a_schema_violation_that_says_so() -> None:
    """Valid by the schema, refused by the struct: a bug of the struct, named in the rejection."""
    from streams.events import TypedDecoder

    decoder = TypedDecoder(Strict, load_validator(SCHEMAS / smoke.SCHEMA_FILE))
    assert decoder.decode(b'{"event_id": "e-long", "run_id": "r", "ts": 1700000000000}') == Strict("e-long")
    rejected = decoder.decode(b'{"event_id": "e", "run_id": "r", "ts": 1700000000000}')
    assert isinstance(rejected, Rejected) and rejected.kind == "schema_violation"
    assert rejected.reason.startswith("valid by the schema but not as Strict: Expected `str` of length >= 5")


@pytest.mark.parametrize(
    ("reason", "max_chars", "capped"),
    [("abc", 3, "abc"), ("abcd", 3, "ab…"), ("abc", 1, "…"), ("abc", 0, ""), ("\ud800x", 100, "\\ud800x")],
)
def test_capped_reasons_at_their_limits(reason: str, max_chars: int, capped: str) -> None:
    from streams.events import capped_reason

    assert capped_reason(reason, max_chars) == capped


def test_a_schema_without_properties_still_validates(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "any.schema.json"
    path.write_text('{"type": "object"}')
    assert decode(b'{"a": 1.0}', load_validator(path)) == {"a": 1.0}


def test_fields_the_struct_does_not_know_are_decided_without_the_schema_when_it_ignores_them() -> None:
    """Every schema here leaves other fields free (``additionalProperties: true``): a producer's
    extras (the benchmark's YSB fields) are parsed as the schema path parses them, and only the
    known fields are judged; the schema words a refusal."""
    from streams.ctr.events import AdEventMessage
    from streams.events import TypedDecoder

    validator = _CountingValidator()
    validator.judges_only = load_validator(SCHEMAS / "ad_event.schema.json").judges_only  # type: ignore[attr-defined]
    decoder = TypedDecoder(AdEventMessage, validator)
    with_extra = decoder.decode(_VALID_AD_BYTES[:-1] + b',"page_id":"p","ip_address":"10.0.0.1"}')
    assert with_extra == decoder.decode(_VALID_AD_BYTES) and validator.calls == 0
    huge = decoder.decode(_VALID_AD_BYTES[:-1] + b',"x":' + b"1" * 5000 + b"}")
    assert isinstance(huge, Rejected) and huge.kind == "malformed_json"
    bad_known = decoder.decode(orjson.dumps({**_VALID_AD_EVENT, "ts": "soon", "x": 1}))
    assert isinstance(bad_known, Rejected) and bad_known.kind == "schema_violation" and validator.calls == 1


@pytest.mark.parametrize(
    ("schema", "names"),
    [
        ({"properties": {"a": {}}, "required": ["a"]}, {"a"}),
        ({"properties": {"a": {}}, "if": {"properties": {"b": {"const": 1}}}, "then": {"required": ["c"]}},
         {"a", "b", "c"}),
        ({"properties": {"a": {}}, "additionalProperties": False}, None),
        ({"properties": {"a": {}}, "patternProperties": {"^x": {}}}, None),
        ({"properties": {"a": {"type": "object", "additionalProperties": {"type": "string"}}}}, None),
        ({"properties": {"a": {}}, "maxProperties": 3}, None),
    ],
)  # fmt: skip
def test_what_a_schema_judges(schema: dict[str, object], names: set[str] | None) -> None:
    from streams.events import judged_names

    assert judged_names(schema) == (frozenset(names) if names is not None else None)
