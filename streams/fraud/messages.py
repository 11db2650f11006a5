"""Transactions and labels as typed messages: msgspec decodes and checks one in a single C call.

The structs are the JSON Schemas of ``schemas/transaction.schema.json`` and
``schemas/label.schema.json`` written as msgspec types, never looser: a message msgspec accepts,
the schema accepts with the same values. Where msgspec cannot say what the schema says, the
struct is stricter and `TypedDecoder` hands the message to the schema, which decides:

- integers written as ``1.0`` or ``1e3`` (integers to JSON Schema) are refused by msgspec;
- unknown fields are refused (``additionalProperties`` is true): msgspec skips the value of an
  unknown field without checking it as strictly as the JSON parser of the schema path (invalid
  UTF-8, a number out of range), so a message with extra fields takes the schema path;
- ``$`` in a schema pattern means the end of the string, as ``\\Z`` does in Python (not before a
  final newline), so the patterns here use ``\\Z``.

A test holds the two paths together (`tests/unit/test_fraud_messages.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec

from streams.events import TypedDecoder, Validator

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_EventTime = Annotated[int, msgspec.Meta(ge=946_684_800_000, le=4_102_444_800_000)]
_Country = Annotated[str, msgspec.Meta(pattern=r"\A[A-Z]{2}\Z")]
_Text64 = Annotated[str, msgspec.Meta(max_length=64)]
_Text128 = Annotated[str, msgspec.Meta(max_length=128)]
_Text255 = Annotated[str, msgspec.Meta(max_length=255)]
_Text256 = Annotated[str, msgspec.Meta(max_length=256)]


class TransactionMessage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, gc=False):
    """A checkout (`schemas/transaction.schema.json`); absent optional fields are None."""

    transaction_id: _Id
    ts: _EventTime
    customer_id: _Id
    amount: Annotated[float, msgspec.Meta(gt=0, le=1_000_000)]
    currency: Annotated[str, msgspec.Meta(pattern=r"\A[A-Z]{3}\Z")]
    payment_method: Literal["invoice", "card", "paypal", "prepaid", "direct_debit"]
    card_id: _Text128 | None = None
    device_id: _Text128 | None = None
    ip: _Text64 | None = None
    email_domain: _Text255 | None = None
    billing_country: _Country | None = None
    shipping_country: _Country | None = None
    basket_items: Annotated[int, msgspec.Meta(ge=0, le=10_000)] | None = None
    is_new_customer: bool | None = None
    shipping_address: _Text256 | None = None


class LabelMessage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, gc=False):
    """What became known about a transaction, days later (`schemas/label.schema.json`)."""

    transaction_id: _Id
    customer_id: _Id
    ts: _EventTime
    is_fraud: bool
    source: Literal["chargeback", "unpaid_invoice", "manual_review", "paid"]


def transaction_decoder(validator: Validator) -> TypedDecoder[TransactionMessage]:
    """Raw transaction bytes -> `TransactionMessage` or the schema's `Rejected`."""
    return TypedDecoder(TransactionMessage, validator)


def label_decoder(validator: Validator) -> TypedDecoder[LabelMessage]:
    """Raw label bytes -> `LabelMessage` or the schema's `Rejected`."""
    return TypedDecoder(LabelMessage, validator)


def as_transaction(tx: TransactionMessage | Mapping[str, Any]) -> TransactionMessage:
    """A transaction given as a dict (the schema path's output, a test's literal) as a struct, as
    it is: no checks (the caller validated it, or wants it as it is), ``amount`` made a float."""
    if isinstance(tx, TransactionMessage):
        return tx
    get = tx.get
    return TransactionMessage(
        transaction_id=tx["transaction_id"],
        ts=tx["ts"],
        customer_id=tx["customer_id"],
        amount=float(tx["amount"]),
        currency=get("currency"),  # type: ignore[arg-type]  # features do not need it
        payment_method=tx["payment_method"],
        card_id=get("card_id"),
        device_id=get("device_id"),
        ip=get("ip"),
        email_domain=get("email_domain"),
        billing_country=get("billing_country"),
        shipping_country=get("shipping_country"),
        basket_items=get("basket_items"),
        is_new_customer=get("is_new_customer"),
        shipping_address=get("shipping_address"),
    )


def as_label(label: LabelMessage | Mapping[str, Any]) -> LabelMessage:
    """A label given as a dict as a struct, as it is (no checks)."""
    if isinstance(label, LabelMessage):
        return label
    return LabelMessage(
        transaction_id=label["transaction_id"],
        customer_id=label["customer_id"],
        ts=label["ts"],
        is_fraud=label["is_fraud"],
        source=label["source"],
    )
