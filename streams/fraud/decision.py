"""From a score to a decision, with a deterministic random holdout. Pure."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

ALLOW, DISABLE_INVOICE, REVIEW = "allow", "disable_invoice", "review"


@dataclass(frozen=True)
class DecisionPolicy:
    disable_invoice_at: float = 0.3  # offer only pre-paid methods from this probability on
    review_at: float = 0.7  # and send to manual review from this one
    holdout_share: float = 0.05  # of risky transactions that are allowed anyway, for evaluation
    holdout_salt: str = "holdout-v1"


def holdout_draw(transaction_id: str, salt: str) -> float:
    """A uniform number in [0, 1) that depends only on the transaction id (replays agree)."""
    digest = hashlib.blake2b(f"{salt}:{transaction_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def decide(transaction_id: str, score: float, policy: DecisionPolicy) -> tuple[str, bool]:
    """(decision, holdout). A risky transaction in the holdout is allowed and flagged."""
    if score < policy.disable_invoice_at:
        return ALLOW, False
    if holdout_draw(transaction_id, policy.holdout_salt) < policy.holdout_share:
        return ALLOW, True
    return (REVIEW if score >= policy.review_at else DISABLE_INVOICE), False
