"""Organised fraud for the generator: rings whose transactions look ordinary one customer at a time
and stand out only across customers. Each pattern has its own share and rhythm:

- ``device_farm``: one device (behind one IP) opens many new accounts within hours, each buying
  once on invoice; peaks at night (around 02:00 UTC).
- ``shared_card``: one stolen card pays in several existing customers' accounts within a day, from
  their own devices and homes; peaks on weekday afternoons (around 14:00 UTC).
- ``reshipping``: new accounts on different devices and e-mail domains send high-value invoice
  orders to one shipping address; peaks on weekend evenings (around 20:00 UTC).

With rings on (`TransactionProfile.ring_shares`), every transaction carries a ``shipping_address``
(a customer's own; some households share one), so that an address shared by strangers is the
signal, not the field itself. A ring's transactions are queued by event time and sent when the
traffic's clock reaches them, so the stream stays in time order.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.fraud.generator import Customer, TransactionGenerator

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
PATTERNS = ("device_farm", "shared_card", "reshipping")
# (peak hour UTC, weekdays only, weekends only)
_RHYTHM = {
    "device_farm": (2, False, False),
    "shared_card": (14, True, False),
    "reshipping": (20, False, True),
}


def _raw_rhythm(pattern: str, hour: int, weekday: int) -> float:
    peak, weekdays, weekends = _RHYTHM[pattern]
    distance = min(abs(hour - peak), 24 - abs(hour - peak))
    level = 0.25 + 3.0 * math.exp(-(distance**2) / 8)
    if weekdays:
        level *= 1.3 if weekday < 5 else 0.25
    if weekends:
        level *= 2.0 if weekday >= 5 else 0.6
    return level


_MEAN = {p: sum(_raw_rhythm(p, h, d) for h in range(24) for d in range(7)) / 168 for p in _RHYTHM}


def rhythm(pattern: str, ts: int) -> float:
    """How likely a ring of ``pattern`` starts at ``ts``, relative to its weekly average (mean 1)."""
    hour = (ts // HOUR_MS) % 24
    weekday = (ts // DAY_MS + 3) % 7  # 1970-01-01 was a Thursday
    return _raw_rhythm(pattern, hour, weekday) / _MEAN[pattern]


def household(i: int) -> str:
    """A customer's shipping address: every 20th customer shares one with the customer before."""
    return f"addr-{i - 1 if i % 20 == 1 else i:06d}"


@dataclass(order=True)
class Pending:
    ts: int
    number: int  # in the order queued: ties of time go first come, first sent
    pattern: str = field(compare=False)
    make: Callable[[int], tuple[Customer, dict[str, Any]]] = field(compare=False)


class Rings:
    """The rings of one generator: started as the traffic goes, sent in event-time order."""

    def __init__(self, generator: TransactionGenerator) -> None:
        self.g = generator
        self.queue: list[Pending] = []
        self.started = self.queued = 0

    def maybe_start(self, ts: int) -> None:
        """At each arrival of the ordinary traffic: a ring of each pattern starts with its share."""
        rng, shares = self.g.rng, self.g.profile.ring_shares
        for pattern, share in zip(PATTERNS, shares, strict=True):
            if share and rng.random() < share * rhythm(pattern, ts):
                self.started += 1
                getattr(self, f"_{pattern}")(ts, self.started)

    def due(self, ts: int) -> list[tuple[str, Customer, dict[str, Any]]]:
        """The ring transactions whose time has come, in time order."""
        out = []
        while self.queue and self.queue[0].ts <= ts:
            pending = heapq.heappop(self.queue)
            customer, event = pending.make(pending.ts)
            out.append((pending.pattern, customer, event))
        return out

    def _push(self, ts: int, pattern: str, make: Callable[[int], tuple[Customer, dict[str, Any]]]) -> None:
        self.queued += 1
        heapq.heappush(self.queue, Pending(ts, self.queued, pattern, make))

    def _spread(self, ts: int, count: int, hours: float) -> list[int]:
        rng = self.g.rng
        return sorted(ts + int(rng.uniform(0, hours) * HOUR_MS) for _ in range(count))

    def _device_farm(self, ts: int, n: int) -> None:
        g, rng = self.g, self.g.rng
        device, country = f"dev-farm-{g.seed}-{n}", rng.choice(("DE", "DE", "AT", "NL"))
        ip = g.ip_in(country)
        for k, at in enumerate(self._spread(ts, rng.randint(5, 14), rng.uniform(1, 6))):
            account = g.new_customer(f"cust-farm-{g.seed}-{n}-{k}", country)

            def make(at: int, account: Customer = account) -> tuple[Customer, dict[str, Any]]:
                event = g.base(account, at)
                amount = round(rng.uniform(120, 600), 2)
                event.update(device_id=device, ip=ip, payment_method="invoice", amount=amount,
                             basket_items=rng.randint(1, 4))  # fmt: skip
                return account, event

            self._push(at, "device_farm", make)

    def _shared_card(self, ts: int, n: int) -> None:
        g, rng = self.g, self.g.rng
        card = f"card-stolen-{g.seed}-{n}"
        victims = {id(c): c for c in rng.choices(g.customers, g.weights, k=rng.randint(4, 10))}.values()
        for victim, at in zip(victims, self._spread(ts, len(victims), rng.uniform(2, 20)), strict=True):

            def make(at: int, victim: Customer = victim) -> tuple[Customer, dict[str, Any]]:
                event = g.base(victim, at)
                event.update(card_id=card, payment_method="card",
                             amount=round(victim.typical_amount * rng.uniform(1.0, 2.5), 2))  # fmt: skip
                return victim, event

            self._push(at, "shared_card", make)

    def _reshipping(self, ts: int, n: int) -> None:
        g, rng = self.g, self.g.rng
        address = f"addr-drop-{g.seed}-{n}"
        for k, at in enumerate(self._spread(ts, rng.randint(4, 10), rng.uniform(6, 48))):
            account = g.new_customer(f"cust-ship-{g.seed}-{n}-{k}", rng.choice(("DE", "AT", "NL")))

            def make(at: int, account: Customer = account) -> tuple[Customer, dict[str, Any]]:
                event = g.base(account, at)
                amount = round(rng.uniform(200, 900), 2)
                event.update(shipping_address=address, payment_method="invoice", amount=amount,
                             basket_items=rng.randint(1, 3))  # fmt: skip
                return account, event

            self._push(at, "reshipping", make)
