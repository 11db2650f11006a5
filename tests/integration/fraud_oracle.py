"""The fraud tests' scenario clock and their plain re-statement of the transaction contract."""

from __future__ import annotations

from typing import Any

import orjson

DAY = 86_400_000
START = 1_767_225_600_000  # 2026-01-01T00:00Z


def oracle_valid_transaction(raw: bytes | None) -> dict[str, Any] | None:
    try:
        tx = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None
    ok = (
        isinstance(tx, dict)
        and all(isinstance(tx.get(f), str) and tx[f] for f in ("transaction_id", "customer_id"))
        and isinstance(tx.get("amount"), int | float)
        and tx["amount"] > 0
        and tx.get("payment_method") in ("invoice", "card", "paypal", "prepaid", "direct_debit")
        and isinstance(tx.get("ts"), int)
    )
    return tx if ok else None
