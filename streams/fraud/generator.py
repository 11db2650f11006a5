"""Synthetic transactions and their delayed labels, with ground truth. Deterministic per seed.

Legitimate customers buy with their own devices and cards from home, with a daily and weekly
rhythm. Fraud (about 1 %) follows known patterns: card-testing bursts (many small amounts on new
cards from one device within minutes), account takeover (new device, new shipping country, high
amount), and amount spikes against the customer's history. Optional fields are sometimes missing;
a few messages are malformed.

Labels are what the shop learns afterwards, and that depends on what it decided (`label_for`): an
allowed transaction is paid, or days later charged back or left unpaid; a disabled invoice cannot
go unpaid (the fraudster, asked to pay first, walks away; an honest customer pays); a reviewed
transaction gets a manual-review verdict within hours. `Scenario.labels_for` gives the labels of
given decisions (`streams produce transactions` reads them from the serving version's scores
topic); `Scenario.labels` those of a shop that allowed everything. Some transactions are never
labelled.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.fraud.decision import ALLOW, DISABLE_INVOICE, REVIEW
from streams.fraud.rings import Rings, household

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
REVIEW_DELAY_HOURS = 6.0  # median time to a manual-review verdict
HOME_COUNTRIES = ("DE", "DE", "DE", "AT", "CH", "NL", "FR", "PL")
FRAUD_COUNTRIES = ("RO", "NG", "ZA", "US", "GB")
PAYMENT_METHODS = ("invoice", "invoice", "invoice", "card", "paypal", "direct_debit")
EMAIL_DOMAINS = ("gmail.com", "web.de", "gmx.de", "outlook.com", "t-online.de")


@dataclass(frozen=True)
class TransactionProfile:
    customers: int = 2000
    mean_gap_ms: float = 2000.0  # between transactions, at the seasonal average
    fraud_share: float = (
        0.005  # fraud events (a card-testing burst is several transactions): ~1.3 % of transactions
    )
    missing_share: float = 0.05  # per optional field
    malformed_share: float = 0.002
    never_labelled_fraud: float = 0.1
    legit_labelled: float = 0.2  # share of legitimate transactions that get a "paid"/review label
    label_delay_days: float = 5.0  # median
    # Rings (`fraud.rings`): the chance that one of each pattern (device_farm, shared_card,
    # reshipping) starts at an arrival, at its rhythm's average. All 0: no rings, no addresses.
    ring_shares: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass
class Customer:
    customer_id: str
    country: str
    typical_amount: float
    devices: list[str]
    cards: list[str]
    email_domain: str
    payment_method: str
    weight: float
    first_seen: bool = True
    address: str = ""  # where it ships to (sent with rings on)


@dataclass(frozen=True)
class Outcome:
    """What will become known about one valid transaction, drawn when it is generated; which label
    the shop gets depends on its decision as well (`label_for`)."""

    transaction_id: str
    customer_id: str
    ts: int
    payment_method: str
    fraud: bool
    labelled: bool  # if allowed: a chargeback or unpaid invoice (fraud), or a payment seen (legit)
    delay_ms: int  # from the transaction to that label
    review_delay_ms: int  # from the transaction to a manual-review verdict, if reviewed


def label_for(outcome: Outcome, decision: str, holdout: bool) -> dict[str, Any] | None:
    """The label the shop gets for ``outcome`` after deciding ``decision`` (``holdout``: allowed
    although risky, an allowed transaction as any other), or None if it never learns anything."""
    ts, fraud = outcome.ts + outcome.delay_ms, outcome.fraud
    if decision == REVIEW and not holdout:
        ts, source = outcome.ts + outcome.review_delay_ms, "manual_review"  # every review ends
    elif not outcome.labelled:
        return None
    elif decision == DISABLE_INVOICE and not holdout and outcome.payment_method == "invoice":
        if fraud:
            return None  # asked to pay first, the fraudster walks away: nothing ever goes unpaid
        source = "paid"  # an honest customer pays first
    elif fraud:
        source = "unpaid_invoice" if outcome.payment_method == "invoice" else "chargeback"
    else:
        source = "paid"
    return {
        "transaction_id": outcome.transaction_id,
        "customer_id": outcome.customer_id,
        "ts": ts,
        "is_fraud": fraud,
        "source": source,
    }


@dataclass
class Scenario:
    """What was produced: messages in arrival order, the ground truth, and what will become known."""

    transactions: list[tuple[bytes, bytes]] = field(default_factory=list)
    truth: dict[str, str] = field(default_factory=dict)  # transaction_id -> "legit" or the fraud pattern
    outcomes: list[Outcome] = field(default_factory=list)  # of the valid transactions, in order

    def labels_for(self, decisions: Mapping[str, tuple[str, bool]] | None) -> list[tuple[bytes, bytes]]:
        """The labels (key, value), in the order they become known, of ``decisions`` (transaction
        id -> (decision, holdout); a transaction without one counts as allowed). None: a shop that
        allowed everything."""
        found = decisions or {}
        labels = []
        for outcome in self.outcomes:
            decision, holdout = found.get(outcome.transaction_id, (ALLOW, False))
            label = label_for(outcome, decision, holdout)
            if label is not None:
                labels.append((label["ts"], outcome.customer_id.encode(), orjson.dumps(label)))
        labels.sort(key=lambda item: item[0])
        return [(key, value) for _, key, value in labels]

    @property
    def labels(self) -> list[tuple[bytes, bytes]]:
        """The labels of a shop that allowed every transaction."""
        return self.labels_for(None)

    def valid_events(self) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """(key, transaction) of each valid transaction once, in arrival order: the malformed
        messages (ids ``bad-...``, or not JSON) left out, as a worker dead-letters them."""
        seen: set[str] = set()
        for key, raw in self.transactions:
            try:
                tx = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            tx_id = tx.get("transaction_id") if isinstance(tx, dict) else None
            if tx_id in self.truth and tx_id not in seen:
                seen.add(tx_id)
                yield key, tx


def _raw_seasonality(hour: int, weekday: int) -> float:
    evening = math.exp(-(((hour - 20) % 24) ** 2) / 40)
    midday = math.exp(-((hour - 12) ** 2) / 18)
    return (0.35 + 0.65 * evening + 0.4 * midday) * (1.25 if weekday >= 5 else 1.0)


_WEEK = [_raw_seasonality(h, d) for h in range(24) for d in range(7)]
_WEEK_MEAN = sum(_WEEK) / len(_WEEK)
_PEAK = max(_WEEK) / _WEEK_MEAN


def seasonality(ts: int) -> float:
    """Relative traffic (mean 1 over a week): evenings and weekends busier, nights quiet (UTC)."""
    hour = (ts // 3_600_000) % 24
    weekday = (ts // DAY_MS + 3) % 7  # 1970-01-01 was a Thursday
    return _raw_seasonality(hour, weekday) / _WEEK_MEAN


class TransactionGenerator:
    def __init__(
        self, profile: TransactionProfile, *, seed: int, start_ms: int, ip_prefixes: dict[str, str]
    ) -> None:
        self.profile = profile
        self.rng = random.Random(seed)
        self.seed = seed
        self.start_ms = start_ms
        self.prefixes_of: dict[str, list[str]] = {}
        for prefix, country in sorted(ip_prefixes.items()):
            self.prefixes_of.setdefault(country, []).append(prefix)
        self.customers = [self._customer(i) for i in range(profile.customers)]
        self.weights = [c.weight for c in self.customers]
        self.sequence = 0
        self.rings = Rings(self) if any(profile.ring_shares) else None

    def _next_time(self, ts: int) -> int:
        """Next arrival of a Poisson process whose rate follows `seasonality` (by thinning), so that
        the average gap is ``mean_gap_ms`` whatever the rhythm."""
        peak = _PEAK / self.profile.mean_gap_ms
        while True:
            ts += int(self.rng.expovariate(peak)) + 1
            if self.rng.random() * _PEAK <= seasonality(ts):
                return ts

    def _customer(self, i: int) -> Customer:
        rng = self.rng
        return Customer(
            customer_id=f"cust-{i:06d}",
            country=rng.choice(HOME_COUNTRIES),
            typical_amount=rng.lognormvariate(math.log(60), 0.6),
            devices=[f"dev-{i:06d}-{k}" for k in range(rng.choice((1, 1, 2)))],
            cards=[f"card-{i:06d}-{k}" for k in range(rng.choice((1, 1, 2)))],
            email_domain=rng.choice(EMAIL_DOMAINS),
            payment_method=rng.choice(PAYMENT_METHODS),
            weight=rng.paretovariate(1.5),
            address=household(i),
        )

    def new_customer(self, customer_id: str, country: str) -> Customer:
        """An account opened now (a ring's): one device and card of its own, its own address."""
        rng = self.rng
        return Customer(
            customer_id=customer_id, country=country, typical_amount=rng.lognormvariate(math.log(60), 0.6),
            devices=[f"dev-{customer_id}"], cards=[f"card-{customer_id}"],
            email_domain=rng.choice(EMAIL_DOMAINS), payment_method="invoice", weight=0.0,
            address=f"addr-{customer_id}",
        )  # fmt: skip

    def ip_in(self, country: str) -> str:
        prefix = self.rng.choice(self.prefixes_of.get(country) or ["10"])
        return f"{prefix}.{self.rng.randrange(256)}.{self.rng.randrange(256)}.{self.rng.randrange(1, 255)}"

    def scenario(self, count: int) -> Scenario:
        """About ``count`` transactions (fraud bursts add a few) and their labels."""
        out = Scenario()
        ts = self.start_ms
        while len(out.truth) < count:
            ts = self._next_time(ts)
            if self.rings is not None:
                self.rings.maybe_start(ts)
                for pattern, account, event in self.rings.due(ts):
                    self._emit(out, pattern, account, event)
                    account.first_seen = False
            customer = self.rng.choices(self.customers, self.weights)[0]
            if self.rng.random() < self.profile.fraud_share:
                pattern = self.rng.choice(("card_testing", "account_takeover", "amount_spike"))
                events = getattr(self, f"_{pattern}")(customer, ts)
            else:
                pattern, events = "legit", [self._legit(customer, ts)]
            for event in events:
                self._emit(out, pattern, customer, event)
            customer.first_seen = False
        return out

    def _emit(self, out: Scenario, pattern: str, customer: Customer, event: dict[str, Any]) -> None:
        out.truth[event["transaction_id"]] = pattern
        out.transactions.append((customer.customer_id.encode(), self._encode(event)))
        out.outcomes.append(self._outcome(event, pattern != "legit"))
        if self.rng.random() < self.profile.malformed_share:
            out.transactions.append((customer.customer_id.encode(), self._malformed(event)))

    def base(self, customer: Customer, ts: int) -> dict[str, Any]:
        """A transaction of ``customer`` at ``ts`` as it usually buys."""
        self.sequence += 1
        return {
            "transaction_id": f"tx{self.seed}-{self.sequence:08d}",
            "ts": ts,
            "customer_id": customer.customer_id,
            "currency": "EUR",
            "payment_method": customer.payment_method,
            "card_id": self.rng.choice(customer.cards),
            "device_id": self.rng.choice(customer.devices),
            "ip": self.ip_in(customer.country),
            "email_domain": customer.email_domain,
            "billing_country": customer.country,
            "shipping_country": customer.country,
            "basket_items": self.rng.randint(1, 6),
            "is_new_customer": customer.first_seen,
        } | ({"shipping_address": customer.address} if self.rings is not None else {})

    def _legit(self, customer: Customer, ts: int) -> dict[str, Any]:
        event = self.base(customer, ts)
        event["amount"] = round(customer.typical_amount * self.rng.lognormvariate(0, 0.35), 2)
        if self.rng.random() < 0.01:  # honest splurge, looks like a spike
            event["amount"] = round(event["amount"] * self.rng.uniform(4, 8), 2)
        return event

    def _card_testing(self, customer: Customer, ts: int) -> list[dict[str, Any]]:
        device = f"dev-x{self.seed}-{self.sequence}"
        events = []
        for k in range(self.rng.randint(4, 9)):
            event = self.base(customer, ts + k * self.rng.randint(5_000, 20_000))
            event.update(
                amount=round(self.rng.uniform(1, 6), 2),
                card_id=f"card-x{self.seed}-{self.sequence}",
                device_id=device,
                payment_method="card",
                ip=self.ip_in(self.rng.choice(FRAUD_COUNTRIES)),
                basket_items=1,
            )
            events.append(event)
        return events

    def _account_takeover(self, customer: Customer, ts: int) -> list[dict[str, Any]]:
        event = self.base(customer, ts)
        country = self.rng.choice(FRAUD_COUNTRIES)
        event.update(
            amount=round(customer.typical_amount * self.rng.uniform(5, 20), 2),
            device_id=f"dev-x{self.seed}-{self.sequence}",
            shipping_country=country,
            ip=self.ip_in(country),
            payment_method="invoice",
            basket_items=self.rng.randint(3, 12),
        )
        return [event]

    def _amount_spike(self, customer: Customer, ts: int) -> list[dict[str, Any]]:
        event = self.base(customer, ts)
        event.update(
            amount=round(customer.typical_amount * self.rng.uniform(8, 25), 2), payment_method="invoice"
        )
        return [event]

    def _outcome(self, event: dict[str, Any], fraud: bool) -> Outcome:
        p, rng = self.profile, self.rng
        labelled = rng.random() >= p.never_labelled_fraud if fraud else rng.random() < p.legit_labelled
        delay = 0
        if labelled:
            delay = int(rng.lognormvariate(math.log(p.label_delay_days), 0.5) * DAY_MS)
            if not fraud:
                rng.choice(("paid", "manual_review"))  # drawn as before: a seed's traffic is unchanged
        # Drawn apart from the traffic's stream, which stays the same whatever is decided.
        own = random.Random(f"{self.seed}:{event['transaction_id']}")
        review = int(own.lognormvariate(math.log(REVIEW_DELAY_HOURS), 0.5) * HOUR_MS)
        return Outcome(
            event["transaction_id"], event["customer_id"], event["ts"], event["payment_method"],
            fraud, labelled, delay, review,
        )  # fmt: skip

    def _encode(self, event: dict[str, Any]) -> bytes:
        optional = (
            "card_id",
            "device_id",
            "ip",
            "email_domain",
            "shipping_country",
            "basket_items",
            "is_new_customer",
        )
        for name in optional:
            if self.rng.random() < self.profile.missing_share:
                event.pop(name) if self.rng.random() < 0.5 else event.update({name: None})
        return orjson.dumps(event)

    def _malformed(self, event: dict[str, Any]) -> bytes:
        bad = dict(event, transaction_id="bad-" + event["transaction_id"])
        match self.rng.randrange(4):
            case 0:
                return orjson.dumps(bad)[:40]
            case 1:
                bad["amount"] = -abs(bad["amount"])
            case 2:
                bad.pop("customer_id")
            case _:
                bad["payment_method"] = "bitcoin"
        return orjson.dumps(bad)
