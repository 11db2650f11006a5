"""The hostile corpus: every message gets exactly the verdict it declares, from the schema path and
from the project's typed decoder alike, and the valid ones can be mixed into live traffic."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import orjson
import pytest

from streams.events import DEFAULT_DEAD_LETTER_MAX_BYTES, Coordinates, DeadLetter, Rejected
from streams.hostile import KINDS, SCHEMA_FILES, VALID, HostileMessage, hostile_messages
from tests.unit.decoding import SCHEMAS, verdict

BASE_MS = 1_800_000_000_000
RUN_ID = "run-7"


@cache
def schema(kind: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / SCHEMA_FILES[kind]).read_text())


@cache
def corpus(kind: str, max_bytes: int = 900_000, far_future: bool = False) -> tuple[HostileMessage, ...]:
    messages = hostile_messages(
        kind, schema(kind), run_id=RUN_ID, base_ms=BASE_MS, max_bytes=max_bytes, far_future=far_future
    )
    return tuple(messages)


def outcome(message: HostileMessage, kind: str) -> str:
    result = verdict(message.value, SCHEMA_FILES[kind])
    return result.kind if isinstance(result, Rejected) else VALID


@pytest.mark.parametrize("kind", KINDS)
def test_every_message_gets_the_verdict_it_declares_from_both_decoders(kind: str) -> None:
    wrong = {m.name: (m.expected, outcome(m, kind)) for m in corpus(kind) if outcome(m, kind) != m.expected}
    assert wrong == {}


@pytest.mark.parametrize("kind", KINDS)
def test_the_corpus_covers_every_kind_of_hostility(kind: str) -> None:
    messages = corpus(kind)
    names = [m.name for m in messages]
    assert len(names) == len(set(names)) and all(name.startswith(f"{kind}.") for name in names)
    assert {m.expected for m in messages} == {VALID, "malformed_json", "schema_violation"}
    for part in ["nested_arrays_100000", "nested_objects_100000", "byte_order_mark", "invalid_utf8",
                 "lone_high_surrogate_escaped", "surrogate_as_utf8_bytes", "null_value", "empty_value",
                 "null_key", "number.ts.nan", "number.ts.huge_integer", "number.ts.negative_zero",
                 "duplicate.", "extra_field", "number_as_string.ts", "bound.ts.minimum",
                 "bound.ts.below_minimum", "bound.ts.above_maximum", "_of_10000_characters",
                 "escaped_control_characters_in_id", "raw_control_character_in_id"]:  # fmt: skip
        assert any(part in name for name in names), part
    for field in schema(kind)["properties"]:
        assert any(name.startswith(f"{kind}.wrong_type.{field}.") for name in names), field
    sizes = {m.name.split(".", 1)[1]: len(m.value or b"") for m in messages if "_bytes" in m.name}
    assert sizes["value_just_under_900000_bytes"] == 899_999
    assert sizes["value_just_over_900000_bytes"] == 900_001


@pytest.mark.parametrize("kind", KINDS)
def test_valid_messages_can_be_mixed_into_live_traffic(kind: str) -> None:
    """Their own ids (from the run id), event times within a second from the base time."""
    valid = [m for m in corpus(kind) if m.expected == VALID]
    events = [(m, orjson.loads(m.value)) for m in valid if m.value is not None]
    assert len(events) == len(valid)
    id_field = {"ad_events": "event_id", "transactions": "transaction_id", "labels": "transaction_id",
                "smoke": "event_id"}[kind]  # fmt: skip
    ids = [event[id_field] for _, event in events]
    assert len(ids) == len(set(ids)) and all(RUN_ID in i for i in ids)
    for message, event in events:
        if message.name.endswith("bound.ts.minimum"):
            assert event["ts"] == schema(kind)["properties"]["ts"]["minimum"]
        else:
            assert BASE_MS < event["ts"] < BASE_MS + 1000, message.name


def test_only_far_future_adds_an_event_at_the_last_instant() -> None:
    assert not any(m.name.endswith("bound.ts.maximum") for m in corpus("ad_events"))
    far = [m for m in corpus("ad_events", far_future=True) if m.name.endswith("bound.ts.maximum")]
    assert len(far) == 1 and far[0].expected == VALID and "2100" in far[0].effect


def test_the_size_limit_is_a_parameter_and_the_corpus_is_deterministic() -> None:
    small = corpus("smoke", 4_096)
    assert {len(m.value or b"") for m in small if "just_under_4096" in m.name} == {4_095}
    assert small == tuple(hostile_messages("smoke", schema("smoke"), run_id=RUN_ID, base_ms=BASE_MS,
                                           max_bytes=4_096))  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_the_dead_letter_of_every_rejected_message_fits(kind: str) -> None:
    for offset, message in enumerate(corpus(kind)):
        if message.expected != VALID:
            at = Coordinates("raw", 0, offset, key=message.key)
            record = DeadLetter(message.value or b"", at, Rejected(message.expected, "x")).to_record("v1")
            assert len(orjson.dumps(record)) <= DEFAULT_DEAD_LETTER_MAX_BYTES


@pytest.mark.parametrize(
    ("kind", "run_id", "message"),
    [("clicks", RUN_ID, "no hostile corpus for 'clicks'"), ("smoke", "a b", "a run id is")],
)
def test_a_wrong_kind_or_run_id_is_refused(kind: str, run_id: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        list(hostile_messages(kind, {}, run_id=run_id, base_ms=BASE_MS))
