"""Per-transaction fraud features from per-partition state. Pure and deterministic.

State is keyed by customer (transactions and labels are keyed by ``customer_id``, so a customer's
whole history lives in one partition). Device features (distinct cards per device) are
*partition-local*: a device used by customers in other partitions is not seen here; an exact
view would need a re-keyed topic, whose interleaving would make replays non-deterministic.

Features of a transaction use only what came before it in the partition: the customer's
history is updated after scoring, so a transaction never leaks into its own score.

Missing optional fields are imputed with documented defaults and flagged:
amount z-score 0 without history, basket_items 1, unknown device/card/ip/country -> no
mismatch and not new, is_new_customer -> "no history in state".

State is bounded by a history horizon (``history_horizon_ms``, pinned in the version; 30 days by
default): a customer whose newest transaction is older than the partition's watermark minus the
horizon is new again (no history, no known devices or cards), and a device or card the customer
has not used within the horizon is new again. The rule reads the watermark *before* the
transaction, which only grows, so forgetting such entries (a sweep at every new event hour, in
log order) never changes a feature: state is what results need, and replays are unaffected.

The customer's last 24 h are kept in arrival order, as a queue trimmed from its front to what is
within 24 h of the customer's newest time. Next to each time is the running maximum of the times
(``reach``): it never decreases, so the start of each window is found by bisection, and as long
as the transaction is not older than the customer's newest one and no out-of-order entry
straddles a window start, each window is a contiguous run of the queue whose amounts are summed
in arrival order, exactly as a scan would (otherwise a scan of the 24 h run decides).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from math import log1p, sqrt
from typing import Any

from streams.fraud.messages import TransactionMessage, as_transaction

MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
EW_ALPHA = 0.1  # weight of the newest amount in the customer's exponentially weighted history
_EW_KEEP = 1 - EW_ALPHA
PAYMENT_METHODS = ("invoice", "card", "paypal", "prepaid", "direct_debit")

FEATURES: tuple[str, ...] = (
    "log_amount",
    "count_1m",
    "count_1h",
    "count_24h",
    "log_sum_1h",
    "log_sum_24h",
    "amount_z",
    "no_history",
    "distinct_cards_device_1h",
    "device_missing",
    "new_device",
    "card_missing",
    "new_card",
    "is_new_customer",
    "is_new_customer_missing",
    "billing_shipping_mismatch",
    "shipping_missing",
    "billing_ip_mismatch",
    "ip_missing",
    "basket_items",
    "basket_items_missing",
    "night",
    *(f"pm_{m}" for m in PAYMENT_METHODS),
)
_ONE_HOT = {m: tuple(1.0 if m == k else 0.0 for k in PAYMENT_METHODS) for m in PAYMENT_METHODS}
_NO_METHOD = (0.0,) * len(PAYMENT_METHODS)
_COMPACT_AFTER = 64  # trimmed entries kept at the front of a queue before it is compacted


@dataclass(slots=True, eq=False)
class CustomerHistory:
    times: list[int] = field(default_factory=list)  # arrival order; the last 24 h from `start` on
    amounts: list[float] = field(default_factory=list)
    reach: list[int] = field(default_factory=list)  # running maximum of `times`
    late: list[int] = field(default_factory=list)  # indices of entries older than an earlier one
    start: int = 0  # entries before it have left the 24 h history
    ew_mean: float = 0.0  # of log(amount)
    ew_var: float = 0.0
    n: int = 0
    devices: dict[str, int] = field(default_factory=dict)  # device -> newest time used
    cards: dict[str, int] = field(default_factory=dict)  # card -> newest time used

    @property
    def recent(self) -> list[tuple[int, float]]:
        """(ts, amount) of the last 24 h, in arrival order."""
        return list(zip(self.times[self.start :], self.amounts[self.start :], strict=True))


@dataclass
class FeatureState:
    """One partition's feature state."""

    customers: dict[str, CustomerHistory] = field(default_factory=dict)
    device_cards: dict[str, dict[str, int]] = field(default_factory=dict)  # device -> card -> last ts
    watermark: int | None = None  # the newest transaction time folded
    swept_hour: int = 0  # the event hour (ts // HOUR) of the last sweep
    horizon_ms: int = 30 * DAY  # the history horizon (set by the processor)

    def known_since(self) -> int | None:
        """Entries last used before this time are forgotten (None: nothing is, yet)."""
        return None if self.watermark is None else self.watermark - self.horizon_ms


def ip_country(ip: str | None, prefixes: Mapping[str, str]) -> str | None:
    if not ip:
        return None
    return prefixes.get(ip.split(".", 1)[0])


def advance(state: FeatureState, tx: TransactionMessage, prefixes: Mapping[str, str]) -> list[float]:
    """The feature vector of ``tx`` (in `FEATURES` order) from what the partition saw before it;
    then ``tx`` is folded into the state."""
    history = _history(state, tx.customer_id)
    row = _row(state, history, tx, prefixes)
    if history is None:
        history = state.customers[tx.customer_id] = CustomerHistory()
    _fold(state, history, tx, row[0])
    return row


def _history(state: FeatureState, customer: str) -> CustomerHistory | None:
    """The customer's history, unless the customer has been idle beyond the horizon (forgotten)."""
    history = state.customers.get(customer)
    if history is not None and _idle(state, history):
        del state.customers[customer]
        return None
    return history


def _idle(state: FeatureState, history: CustomerHistory) -> bool:
    """Whether the customer's newest transaction is older than the horizon before the watermark."""
    since = state.known_since()
    return since is not None and history.reach[-1] < since


def _known(seen: dict[str, int], key: str | None, since: int | None) -> bool:
    if not key:
        return False
    last = seen.get(key)
    return last is not None and (since is None or last >= since)


def sweep(state: FeatureState) -> None:
    """Forget what no feature can use any more: customers idle beyond the horizon, devices and
    cards a customer has not used within it, devices whose cards were all last used a day before
    the watermark. (Features never read these entries: forgetting them changes no result.)"""
    since = state.known_since()
    if since is None:
        return
    idle = [c for c, history in state.customers.items() if history.reach[-1] < since]
    for customer in idle:
        del state.customers[customer]
    for history in state.customers.values():
        for seen in (history.devices, history.cards):
            if seen and min(seen.values()) < since:
                for key in [k for k, last in seen.items() if last < since]:
                    del seen[key]
    assert state.watermark is not None
    stale = state.watermark - DAY
    gone = [d for d, cards in state.device_cards.items() if max(cards.values(), default=stale) <= stale]
    for device in gone:
        del state.device_cards[device]


def compute(
    state: FeatureState, tx: TransactionMessage | Mapping[str, Any], prefixes: Mapping[str, str]
) -> dict[str, float]:
    """The feature vector of ``tx`` by name (state is not changed)."""
    return dict(zip(FEATURES, features_of(state, as_transaction(tx), prefixes), strict=True))


def update(state: FeatureState, tx: TransactionMessage | Mapping[str, Any]) -> None:
    """Fold ``tx`` into the state, after it has been scored."""
    tx = as_transaction(tx)
    history = _history(state, tx.customer_id)
    if history is None:
        history = state.customers[tx.customer_id] = CustomerHistory()
    _fold(state, history, tx, log1p(tx.amount))


def features_of(state: FeatureState, tx: TransactionMessage, prefixes: Mapping[str, str]) -> list[float]:
    """The feature vector of ``tx``, in `FEATURES` order (state is not changed)."""
    history = state.customers.get(tx.customer_id)
    return _row(state, None if history is None or _idle(state, history) else history, tx, prefixes)


def _row(
    state: FeatureState, history: CustomerHistory | None, tx: TransactionMessage, prefixes: Mapping[str, str]
) -> list[float]:
    ts = tx.ts
    log_amount = log1p(tx.amount)
    device, card = tx.device_id, tx.card_id
    if history is None:
        has_history, z, new_device, new_card = False, 0.0, 0.0, 0.0
        count_1m = count_1h = count_24h = 0
        sum_1h = sum_24h = 0.0
    else:
        has_history = True
        count_1m, count_1h, count_24h, sum_1h, sum_24h = _windows(history, ts)
        z = (log_amount - history.ew_mean) / sqrt(history.ew_var + 0.05)
        since = state.known_since()
        new_device = 1.0 if device and not _known(history.devices, device, since) else 0.0
        new_card = 1.0 if card and not _known(history.cards, card, since) else 0.0
    billing, shipping = tx.billing_country, tx.shipping_country
    ip = tx.ip
    from_ip = prefixes.get(ip.split(".", 1)[0]) if ip else None
    basket, new_customer = tx.basket_items, tx.is_new_customer
    return [
        log_amount,
        float(count_1m),
        float(count_1h),
        float(count_24h),
        log1p(sum_1h),
        log1p(sum_24h),
        z,
        0.0 if has_history else 1.0,
        float(_distinct_cards(state, device, card, ts)) if device else (1.0 if card else 0.0),
        0.0 if device else 1.0,
        new_device,
        0.0 if card else 1.0,
        new_card,
        float(new_customer) if new_customer is not None else (0.0 if has_history else 1.0),
        1.0 if new_customer is None else 0.0,
        1.0 if billing and shipping and billing != shipping else 0.0,
        0.0 if shipping else 1.0,
        1.0 if billing and from_ip and billing != from_ip else 0.0,
        0.0 if from_ip else 1.0,
        float(basket) if basket is not None else 1.0,
        1.0 if basket is None else 0.0,
        1.0 if (ts // HOUR) % 24 < 6 else 0.0,
        *_ONE_HOT.get(tx.payment_method, _NO_METHOD),
    ]


def _distinct_cards(state: FeatureState, device: str, card: str | None, ts: int) -> int:
    """Cards used on the device in the last hour, counting the transaction's own card (a card
    last used a day before the watermark no longer counts: it may have been forgotten)."""
    cards = state.device_cards.get(device)
    others = 0
    if cards:
        after = ts - HOUR if state.watermark is None else max(ts - HOUR, state.watermark - DAY)
        for other, last in cards.items():
            if after < last <= ts and other != card:
                others += 1
    return others + 1 if card else others


def _windows(history: CustomerHistory, ts: int) -> tuple[int, int, int, float, float]:
    """(count 1 min, count 1 h, count 24 h, sum 1 h, sum 24 h) of the earlier transactions within
    ``ts - window < t <= ts``; sums add the amounts in arrival order."""
    reach, end = history.reach, len(history.reach)
    # Entries before a window's start have t <= reach <= the window's lower bound: outside.
    day = bisect_right(reach, ts - DAY, history.start, end)
    hour = bisect_right(reach, ts - HOUR, day, end)
    minute = bisect_right(reach, ts - MIN, hour, end)
    if ts >= reach[-1] and not (history.late and _straddled(history, ts, day, hour, minute)):
        amounts = history.amounts
        return end - minute, end - hour, end - day, sum(amounts[hour:end]), sum(amounts[day:end])
    inside = [
        (t, a)
        for t, a in zip(history.times[day:end], history.amounts[day:end], strict=True)
        if ts - DAY < t <= ts
    ]
    in_hour = [a for t, a in inside if t > ts - HOUR]
    count_1m = sum(1 for t, _ in inside if t > ts - MIN)
    return count_1m, len(in_hour), len(inside), sum(in_hour), sum(a for _, a in inside)


def _straddled(history: CustomerHistory, ts: int, day: int, hour: int, minute: int) -> bool:
    """Whether an out-of-order entry lies past a window's start but is outside that window."""
    times = history.times
    for index in reversed(history.late):
        if index < day:
            return False
        t = times[index]
        if t <= ts - DAY or (t <= ts - HOUR and index >= hour) or (t <= ts - MIN and index >= minute):
            return True
    return False


def _fold(state: FeatureState, history: CustomerHistory, tx: TransactionMessage, log_amount: float) -> None:
    """Append to the customer's 24 h queue, trim its front to within 24 h of the newest time, and
    update the amount history and the device and card sets."""
    ts, times, reach = tx.ts, history.times, history.reach
    if reach and ts < reach[-1]:
        history.late.append(len(times))
        reach.append(reach[-1])
    else:
        reach.append(ts)
    times.append(ts)
    history.amounts.append(tx.amount)
    start, oldest = history.start, reach[-1] - DAY
    while times[start] <= oldest:  # never passes the newest entry
        start += 1
    if start > _COMPACT_AFTER and 2 * start > len(times):
        del times[:start], history.amounts[:start], reach[:start]
        history.late = [index - start for index in history.late if index >= start]
        start = 0
    history.start = start
    if history.n == 0:
        history.ew_mean, history.ew_var = log_amount, 0.0
    else:
        delta = log_amount - history.ew_mean
        history.ew_mean += EW_ALPHA * delta
        history.ew_var = _EW_KEEP * (history.ew_var + EW_ALPHA * delta * delta)
    history.n += 1
    device, card = tx.device_id, tx.card_id
    if device:
        _touch(history.devices, device, ts)
        cards = state.device_cards.get(device)
        if cards is None:
            cards = state.device_cards[device] = {}
        if card:
            last = cards.get(card)
            cards[card] = ts if last is None or ts > last else last
            if len(cards) > 1:  # (the card just used is not stale)
                for other, last in list(cards.items()):
                    if last <= ts - DAY:
                        del cards[other]
    if card:
        _touch(history.cards, card, ts)
    if state.watermark is None or ts > state.watermark:
        state.watermark = ts
        if ts // HOUR > state.swept_hour:  # a new event hour: in log order, so replays sweep alike
            state.swept_hour = ts // HOUR
            sweep(state)


def _touch(seen: dict[str, int], key: str, ts: int) -> None:
    last = seen.get(key)
    if last is None or ts > last:
        seen[key] = ts
