"""The typed decoders of transactions and labels (msgspec) against their JSON Schemas: every message
gets the same verdict whichever path decides it, and an accepted one the same values."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.events import Rejected, decode, load_validator
from streams.fraud.generator import TransactionGenerator, TransactionProfile
from streams.fraud.messages import (
    LabelMessage,
    TransactionMessage,
    as_label,
    as_transaction,
    label_decoder,
    transaction_decoder,
)
from streams.settings import load_settings

SCHEMAS = load_settings().schemas_dir
TX_VALIDATOR = load_validator(SCHEMAS / "transaction.schema.json")
LABEL_VALIDATOR = load_validator(SCHEMAS / "label.schema.json")
TX_DECODER = transaction_decoder(TX_VALIDATOR)
LABEL_DECODER = label_decoder(LABEL_VALIDATOR)

VALID_TX = {
    "transaction_id": "t1",
    "ts": 1_767_225_600_000,
    "customer_id": "c1",
    "amount": 12.34,
    "currency": "EUR",
    "payment_method": "invoice",
    "card_id": "k1",
    "device_id": "d1",
    "ip": "31.1.2.3",
    "email_domain": "web.de",
    "billing_country": "DE",
    "shipping_country": "AT",
    "basket_items": 2,
    "is_new_customer": False,
}
VALID_LABEL = {
    "transaction_id": "t1",
    "customer_id": "c1",
    "ts": 1_767_225_600_000,
    "is_fraud": True,
    "source": "chargeback",
}


def ids(limit: int) -> st.SearchStrategy[Any]:
    """Strings around a length limit (in characters, astral ones included), and other types."""
    return st.one_of(
        st.text(max_size=3),
        st.sampled_from(["x" * limit, "x" * (limit + 1), "😀" * limit, "😀" * (limit + 1), ""]),
        st.integers(-(2**63), 2**63 - 1),
        st.none(),
        st.just([]),
    )


EDGE_TIMES = [946_684_799_999, 946_684_800_000, 4_102_444_800_000, 4_102_444_800_001]
TIMES = st.sampled_from(
    [*EDGE_TIMES, 1_767_225_600_000.0, 1_767_225_600_000.5, 1.7e12, 4_102_444_800_001.0, True, "1", None]
)
COUNTRIES = st.one_of(
    st.sampled_from(["DE", "de", "D", "DEU", "DE\n", "\nDE", "ÄT", "D1", None, 1]), st.text(max_size=3)
)
TX_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "transaction_id": ids(128),
    "ts": TIMES,
    "customer_id": ids(128),
    "amount": st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.integers(-5, 2_000_000),
        st.sampled_from([0, -0.0, 0.0, 1e6, 1_000_000.0000001, 5e-324, 1e-320, True, "12.5", None]),
    ),
    "currency": st.one_of(
        st.sampled_from(["EUR", "eur", "EU", "EURO", "xEUR", "EUR\n", "ÄUR", 1, None]), st.text(max_size=4)
    ),
    "payment_method": st.sampled_from(
        ["invoice", "card", "paypal", "prepaid", "direct_debit", "bitcoin", "", 1, None]
    ),
    "card_id": ids(128),
    "device_id": ids(128),
    "ip": ids(64),
    "email_domain": ids(255),
    "billing_country": COUNTRIES,
    "shipping_country": COUNTRIES,
    "basket_items": st.one_of(
        st.integers(-2, 10_002),
        st.sampled_from([-1, 0, 10_000, 10_001, 3.0, 3.5, 10_000.0, 10_001.0, -0.0, None, True, "3"]),
    ),
    "is_new_customer": st.sampled_from([True, False, None, 0, 1, "true"]),
    "extra": st.one_of(
        st.integers(-(2**63), 2**63 - 1), st.text(max_size=3), st.just({"nested": [1.5, None]})
    ),
}
LABEL_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "transaction_id": ids(128),
    "customer_id": ids(128),
    "ts": TIMES,
    "is_fraud": st.sampled_from([True, False, None, 0, 1, "true"]),
    "source": st.sampled_from(["chargeback", "unpaid_invoice", "manual_review", "paid", "refund", "", None]),
    "extra": st.text(max_size=3),
}


def same_verdict(raw: bytes, typed: Any, by_schema: Any, struct: type[Any]) -> None:
    if isinstance(by_schema, Rejected):
        assert typed == by_schema, raw
        return
    assert isinstance(typed, struct), (raw, typed)
    for name in struct.__struct_fields__:
        value, expected = getattr(typed, name), by_schema.get(name)
        assert value == expected and type(value) is type(expected if name != "amount" else 1.0), (raw, name)


@st.composite
def near(draw: st.DrawFn, valid: dict[str, Any], fields: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    """A valid event with one or two fields changed (most changes make it invalid: a few at a
    time find the limits), sometimes one removed."""
    names = draw(st.lists(st.sampled_from(sorted(fields)), min_size=1, max_size=2, unique=True))
    removed = (
        draw(st.sets(st.sampled_from(sorted(valid)), max_size=1)) if draw(st.integers(0, 4)) == 0 else set()
    )
    changed = {**valid, **{name: draw(fields[name]) for name in names}}
    return {name: value for name, value in changed.items() if name not in removed}


@settings(max_examples=1000)
@given(near(VALID_TX, TX_FIELDS))
def test_the_transaction_decoder_accepts_exactly_what_the_schema_accepts(event: dict[str, Any]) -> None:
    raw = orjson.dumps(event)
    same_verdict(raw, TX_DECODER.decode(raw), decode(raw, TX_VALIDATOR), TransactionMessage)


@settings(max_examples=300)
@given(near(VALID_LABEL, LABEL_FIELDS))
def test_the_label_decoder_accepts_exactly_what_the_schema_accepts(event: dict[str, Any]) -> None:
    raw = orjson.dumps(event)
    same_verdict(raw, LABEL_DECODER.decode(raw), decode(raw, LABEL_VALIDATOR), LabelMessage)


BODY = b'"transaction_id": "t1", "customer_id": "c1", "currency": "EUR", "payment_method": "card"'
RAW = [
    b'{"ts": 1767225600000.0, "amount": 1e2, ' + BODY + b"}",  # integers as JSON Schema counts them
    b'{"ts": 1.7672256e12, "amount": 5, "basket_items": 1e3, ' + BODY + b"}",
    b'{"ts": 1767225600000, "amount": -1, "amount": 5.5, ' + BODY + b"}",  # the last of two keys counts
    b'{"ts": 1767225600000, "amount": 5.5, "amount": -1, ' + BODY + b"}",
    b'{"ts": 1767225600000, "amount": 5, "x": "\xff", ' + BODY + b"}",  # invalid UTF-8 in an extra field
    b'{"ts": 1767225600000, "amount": 5, "x": 1e999, ' + BODY + b"}",  # a number out of range there
    b'{"ts": 1767225600000, "amount": 5, "x": "\\ud800", ' + BODY + b"}",  # a lone surrogate there
    b'{"ts": 1767225600000, "amount": 5, "card_id": "\\ud83d\\ude00", ' + BODY + b"}",
    b'{"ts": 1767225600000, "amount": 5, "card_id": "\\udc00", ' + BODY + b"}",
    b'{"ts": 1767225600000, "amount": 5, "ip": "\xc3\x28", ' + BODY + b"}",
    b'{"ts": 1767225600000, "amount": 5, "billing_country": "DE\\n", ' + BODY + b"}",
    b'{"ts": 1767225600000, "amount": 1000000.0000000001, ' + BODY + b"}",  # rounds to the maximum
    b'{"ts": 1767225600000, "amount": 1e-400, ' + BODY + b"}",  # rounds to zero
    b'\xef\xbb\xbf{"ts": 1767225600000, "amount": 5, ' + BODY + b"}",
    b' {"ts": 1767225600000, "amount": 5, ' + BODY + b"}\n ",
    b'{"ts": 1767225600000, "amount": 5, ' + BODY + b"} x",
    b'{"ts": 1767225600000, "amount": 5, "basket_items": 18446744073709551616, ' + BODY + b"}",
    b"[]",
    b"",
    b"null",
]


@pytest.mark.parametrize("raw", RAW)
def test_raw_edge_cases_get_the_schema_s_verdict(raw: bytes) -> None:
    same_verdict(raw, TX_DECODER.decode(raw), decode(raw, TX_VALIDATOR), TransactionMessage)


def test_generated_messages_decode_to_the_schema_s_values() -> None:
    generator = TransactionGenerator(TransactionProfile(), seed=5, start_ms=1_767_225_600_000, ip_prefixes={})
    scenario = generator.scenario(2000)
    for _, raw in scenario.transactions:
        typed, by_schema = TX_DECODER.decode(raw), decode(raw, TX_VALIDATOR)
        same_verdict(raw, typed, by_schema, TransactionMessage)
        if not isinstance(by_schema, Rejected):
            assert as_transaction(by_schema) == typed
    for _, raw in scenario.labels:
        label, by_schema = LABEL_DECODER.decode(raw), decode(raw, LABEL_VALIDATOR)
        assert isinstance(label, LabelMessage) and not isinstance(by_schema, Rejected)
        assert as_label(by_schema) == label
