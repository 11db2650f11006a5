"""Dead letters always fit: the topic's record under its byte limit, the fallback row under its
caps, and the reason of a failed fold short and deterministic."""

from __future__ import annotations

import base64
import hashlib

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.events import (
    DEAD_LETTER_KEY_MAX_BYTES,
    DEAD_LETTER_MIN_BYTES,
    DEAD_LETTER_ROW_RAW_MAX_BYTES,
    DEFAULT_DEAD_LETTER_MAX_BYTES,
    REASON_MAX_CHARS,
    Coordinates,
    DeadLetter,
    Rejected,
    processing_error,
)
from streams.tables import DEAD_LETTERS
from tests.unit.decoding import validator

AT = Coordinates("ad-events", 3, 42, timestamp_ms=1_700_000_000_000, key=b"ad-1")


def blob(size: int) -> bytes:
    """Incompressible-looking bytes of every value, cheaply."""
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def check_record(record: dict[str, object], letter: DeadLetter, max_bytes: int) -> None:
    assert len(orjson.dumps(record)) <= max_bytes
    validator("dead_letter.schema.json")(record)
    kept = base64.b64decode(str(record["raw_base64"]))
    assert letter.raw.startswith(kept)
    assert record["raw_size"] == len(letter.raw)
    assert record["raw_sha256"] == hashlib.sha256(letter.raw).hexdigest()
    assert record["raw_truncated"] == (kept != letter.raw)
    if record["raw_truncated"]:  # the prefix is as long as fits (base64 comes in 4-character steps)
        assert len(orjson.dumps(record)) > max_bytes - 8
    assert len(str(record["reason"])) <= REASON_MAX_CHARS


def test_a_small_letter_is_whole() -> None:
    letter = DeadLetter(b"\xff{bad", AT, Rejected("malformed_json", "malformed JSON: x"))
    record = letter.to_record("v7")
    check_record(record, letter, DEFAULT_DEAD_LETTER_MAX_BYTES)
    assert base64.b64decode(record["raw_base64"]) == b"\xff{bad"
    assert (record["raw_truncated"], record["key_truncated"]) == (False, False)
    assert base64.b64decode(record["key_base64"]) == b"ad-1"


@pytest.mark.parametrize("size", [0, 674_000, 675_000, 900_000, 5_000_000])
def test_a_big_value_is_cut_to_the_prefix_that_fits(size: int) -> None:
    letter = DeadLetter(blob(size), AT, Rejected("schema_violation", "data.event_id must be shorter"))
    check_record(letter.to_record("v1"), letter, DEFAULT_DEAD_LETTER_MAX_BYTES)


@settings(max_examples=60, deadline=None)
@given(
    raw_size=st.integers(0, 400_000),
    key=st.one_of(st.none(), st.binary(max_size=64), st.integers(0, 3 * DEAD_LETTER_KEY_MAX_BYTES).map(blob)),
    reason=st.text(max_size=3 * REASON_MAX_CHARS),
    kind=st.sampled_from(["malformed_json", "schema_violation", "late_event", "processing_error"]),
    max_bytes=st.integers(DEAD_LETTER_MIN_BYTES, 300_000),
)
def test_every_letter_fits_any_limit_from_the_minimum_up(
    raw_size: int, key: bytes | None, reason: str, kind: str, max_bytes: int
) -> None:
    at = Coordinates("t", 0, 2**62, timestamp_ms=None, key=key)
    letter = DeadLetter(blob(raw_size), at, Rejected(kind, reason))
    record = letter.to_record("v1", max_bytes)
    check_record(record, letter, max_bytes)
    if key is not None:
        kept = base64.b64decode(str(record["key_base64"]))
        assert key.startswith(kept) and len(kept) <= DEAD_LETTER_KEY_MAX_BYTES
        assert record["key_truncated"] == (kept != key)


def test_control_characters_and_lone_surrogates_in_a_reason_still_fit() -> None:
    letter = DeadLetter(blob(10**6), AT, Rejected("processing_error", "\x00\ud800" * 5000))
    record = letter.to_record("v1", DEAD_LETTER_MIN_BYTES)
    check_record(record, letter, DEAD_LETTER_MIN_BYTES)


def test_under_a_tight_limit_the_key_and_the_reason_give_way() -> None:
    at = Coordinates("ad-events", 0, 1, key=b"k" * 10_000)
    letter = DeadLetter(b"v" * 10_000, at, Rejected("schema_violation", "\x00" * REASON_MAX_CHARS))
    record = letter.to_record("v1", DEAD_LETTER_MIN_BYTES)
    check_record(record, letter, DEAD_LETTER_MIN_BYTES)
    assert record["key_truncated"] is True and record["raw_truncated"] is True
    assert len(record["reason"]) < REASON_MAX_CHARS


def test_a_limit_below_the_metadata_is_refused() -> None:
    with pytest.raises(ValueError, match="needs more than 100 bytes"):
        DeadLetter(b"x", AT, Rejected("malformed_json", "x")).to_record("v1", 100)


def test_the_fallback_row_caps_value_key_and_reason() -> None:
    at = Coordinates("transactions", 1, 7, timestamp_ms=5, key=blob(DEAD_LETTER_KEY_MAX_BYTES + 1))
    raw = blob(DEAD_LETTER_ROW_RAW_MAX_BYTES + 10)
    row = DeadLetter(raw, at, Rejected("schema_violation", "r" * 10_000)).to_row("v2")
    assert tuple(row[c] for c in DEAD_LETTERS.primary_key) == ("v2", "transactions", 1, 7)
    assert row["raw"] == raw[:DEAD_LETTER_ROW_RAW_MAX_BYTES] and row["raw_truncated"] is True
    assert row["raw_size"] == len(raw) and row["raw_sha256"] == hashlib.sha256(raw).hexdigest()
    assert row["key"] == at.key[:DEAD_LETTER_KEY_MAX_BYTES] and row["key_truncated"] is True  # type: ignore[index]
    assert len(row["reason"]) == REASON_MAX_CHARS
    assert (row["timestamp_ms"], row["reason_kind"]) == (5, "schema_violation")


def test_a_small_fallback_row_is_whole() -> None:
    row = DeadLetter(b"{", Coordinates("t", 0, 1), Rejected("malformed_json", "x")).to_row("v1")
    assert (row["raw"], row["raw_truncated"], row["key"], row["key_truncated"]) == (b"{", False, None, False)


def _fold(event: dict[str, object]) -> None:
    _features(event)


def _features(event: dict[str, object]) -> None:
    raise KeyError(event.get("missing", "amount"))


def _raised(fold: object, event: dict[str, object]) -> BaseException:
    try:
        fold(event)  # type: ignore[operator]
    except Exception as exc:
        return exc
    raise AssertionError("did not raise")


def test_a_processing_error_names_the_exception_and_where_it_was_raised() -> None:
    rejection = processing_error(_raised(_fold, {}))
    assert rejection.kind == "processing_error"
    assert rejection.reason.startswith("KeyError: 'amount' (at test_dead_letters.py:")
    assert "in _features <- test_dead_letters.py:" in rejection.reason
    assert rejection == processing_error(_raised(_fold, {}))  # deterministic


def test_a_processing_error_is_short_whatever_the_exception() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    huge = processing_error(_raised(_fold, {"missing": "m" * 100_000}))
    assert len(huge.reason) <= REASON_MAX_CHARS and "in _features" in huge.reason
    assert processing_error(Unprintable()).reason.endswith("Unprintable: <unprintable message>")
    assert processing_error(ValueError("\ud800")).reason == "ValueError: \\ud800"
