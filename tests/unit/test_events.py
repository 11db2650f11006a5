from __future__ import annotations

import base64

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.events import Coordinates, DeadLetter, Rejected, Validator, decode, load_validator
from streams.pipelines import smoke
from streams.pipelines.batch import decode_batch
from streams.settings import load_settings

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
    validator = load_validator(SCHEMAS / smoke.SCHEMA_FILE)
    messages = []
    for offset, (kind, value) in enumerate(items):
        if kind == "good":
            raw = orjson.dumps({"event_id": f"e{value}", "run_id": "r", "ts": 1700000000000 + int(value)})  # type: ignore[call-overload]
        else:
            raw = value  # type: ignore[assignment]
        messages.append((raw, Coordinates("t", 0, offset)))
    batch = decode_batch(messages, validator)
    assert len(batch.events) + len(batch.dead_letters) == len(messages)
    good_offsets = {o for o, (kind, _) in enumerate(items) if kind == "good"}
    # junk of at most 30 bytes can never be a valid event (the shortest is longer)
    assert good_offsets == {at.offset for _, at, _ in batch.events}
    assert all(letter.raw == messages[letter.coordinates.offset][0] for letter in batch.dead_letters)


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
