"""Hostile bytes whatever the schema: nesting, size, encodings, empty and null values and keys."""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from streams.hostile.corpus import VALID, Corpus, HostileMessage

DEEP = 100_000  # levels of nesting (orjson refuses more than 1024)
MALFORMED = "malformed_json"
NOT_AN_OBJECT = "schema_violation"


def structure_cases(c: Corpus, max_bytes: int) -> Iterator[HostileMessage]:
    yield from _nesting(c)
    yield from _sizes(c, max_bytes)
    yield from _encodings(c)
    yield from _values(c)
    yield from _keys(c)


def _nesting(c: Corpus) -> Iterator[HostileMessage]:
    key = c.key(c.event())
    arrays = b"[" * DEEP + b"]" * DEEP
    objects = b'{"a":' * DEEP + b"1" + b"}" * DEEP
    yield c.raw("nested_arrays_100000", key, arrays, MALFORMED)
    yield c.raw("nested_objects_100000", key, objects, MALFORMED)
    yield c.raw("nested_objects_100000_unclosed", key, b'{"a":' * DEEP, MALFORMED)
    yield c.spliced("nested_arrays_100000_in_extra_field", "extra", arrays, MALFORMED)
    yield c.spliced("nested_objects_100000_in_extra_field", "extra", objects, MALFORMED)
    yield c.spliced("nested_arrays_100000_as_id", c.template.id_field, arrays, MALFORMED)
    # 1 + 999 levels: within orjson's limit, so only the schema decides.
    yield c.extra("nested_arrays_1000_in_extra_field", b"[" * 999 + b"]" * 999)


def _padded(c: Corpus, field: str, size: int) -> tuple[bytes, bytes]:
    """(key, value): a fresh valid event whose ``field`` is a string that makes it ``size`` bytes."""
    event = c.event()
    head = orjson.dumps({k: v for k, v in event.items() if k != field})[:-1] + b',"' + field.encode() + b'":"'
    room = size - len(head) - 2
    if room < 1:
        raise ValueError(f"a size limit of {size} bytes leaves no room for a {c.kind} event")
    return c.key(event), head + b"x" * room + b'"}'


def _sizes(c: Corpus, max_bytes: int) -> Iterator[HostileMessage]:
    """One byte under and over ``max_bytes``: in a field the schema does not name, and as the id."""
    padding = VALID if c.extra_allowed else "schema_violation"
    for name, size in (("under", max_bytes - 1), ("over", max_bytes + 1)):
        yield c.raw(f"value_just_{name}_{max_bytes}_bytes", *_padded(c, "padding", size), padding)
        yield c.raw(
            f"{c.template.id_field}_just_{name}_{max_bytes}_bytes",
            *_padded(c, c.template.id_field, size),
            "schema_violation",
        )


def _in_id(c: Corpus, name: str, raw: bytes, expected: str) -> HostileMessage:
    """A fresh valid event whose id has the raw bytes ``raw`` inside its JSON string."""
    event = c.event()
    id_field = c.template.id_field
    unique = orjson.dumps(event[id_field])
    value = orjson.dumps(event).replace(unique, unique[:-1] + raw + b'"', 1)
    return c.raw(name, c.key(event), value, expected)


def _encodings(c: Corpus) -> Iterator[HostileMessage]:
    valid = orjson.dumps(c.event())
    key = c.key(orjson.loads(valid))
    yield c.raw("byte_order_mark", key, b"\xef\xbb\xbf" + valid, MALFORMED)
    yield c.raw("utf16", key, valid.decode().encode("utf-16"), MALFORMED)
    for name, raw in [
        ("invalid_utf8", b"\xff\xfe"),
        ("surrogate_as_utf8_bytes", b"\xed\xa0\x80"),
        ("overlong_utf8_nul", b"\xc0\x80"),
        ("utf8_beyond_unicode", b"\xf4\x90\x80\x80"),
        ("truncated_utf8", b"\xe2\x82"),
        ("lone_high_surrogate_escaped", b"\\ud800"),
        ("lone_low_surrogate_escaped", b"\\udc00"),
        ("reversed_surrogates_escaped", b"\\udc00\\ud800"),
        ("high_surrogate_then_letter_escaped", b"\\ud800\\u0041"),
        ("bad_escape", b"\\x41"),
        ("raw_control_character", b"\x01"),
        ("raw_newline", b"\n"),
        ("raw_tab", b"\t"),
        ("raw_nul", b"\x00"),
    ]:
        yield _in_id(c, f"{name}_in_id", raw, MALFORMED)
    yield _in_id(c, "surrogate_pair_escaped_in_id", b"\\ud83d\\ude00", VALID)
    yield _in_id(c, "escaped_control_characters_in_id", b"\\u0000\\u001f\\u007f\\u2028", VALID)
    yield _in_id(c, "astral_and_combining_characters_in_id", "😀é\u0301\u200b".encode(), VALID)
    yield c.spliced("invalid_utf8_in_extra_field", "extra", b'"\xff"', MALFORMED)
    yield c.spliced("lone_surrogate_in_extra_field", "extra", b'"\\ud800"', MALFORMED)


def _values(c: Corpus) -> Iterator[HostileMessage]:
    key = c.key(c.event())
    yield c.raw(
        "null_value", key, None, MALFORMED, "a malformed_json dead letter (a null value, a tombstone)"
    )
    yield c.raw("empty_value", key, b"", MALFORMED)
    yield c.raw("whitespace_value", key, b" \n\t\r", MALFORMED)
    for name, value in [("null", b"null"), ("true", b"true"), ("number", b"1700000000000"),
                        ("string", b'"event"'), ("array", b"[]"), ("array_of_event", b"[{}]")]:  # fmt: skip
        yield c.raw(f"json_{name}", key, value, NOT_AN_OBJECT)
    yield c.raw("empty_object", key, b"{}", "schema_violation")
    valid = orjson.dumps(c.event())
    for name, value in [
        ("truncated", valid[:-1]),
        ("trailing_garbage", valid + b"x"),
        ("trailing_nul", valid + b"\x00"),
        ("two_events", valid + valid),
        ("trailing_comma", valid[:-1] + b",}"),
        ("single_quotes", valid.replace(b'"', b"'")),
    ]:
        yield c.raw(name, key, value, MALFORMED)
    event = c.event()
    yield c.raw("surrounding_whitespace", c.key(event), b" \r\n\t" + orjson.dumps(event) + b"\n ", VALID)


def _keys(c: Corpus) -> Iterator[HostileMessage]:
    anywhere = f"{c.template.effect} (no key: any partition)"
    yield c.raw("null_key", None, orjson.dumps(c.event()), VALID, anywhere)
    yield c.raw("empty_key", b"", orjson.dumps(c.event()), VALID)
    yield c.raw("invalid_utf8_key", b"\xff\xfe\x00", orjson.dumps(c.event()), VALID)
    yield c.raw("key_of_100000_bytes", b"k" * 100_000, orjson.dumps(c.event()), VALID)
    truncated = "a malformed_json dead letter with a truncated key"
    yield c.raw("key_of_100000_bytes_malformed_value", b"k" * 100_000, b"{", MALFORMED, truncated)
