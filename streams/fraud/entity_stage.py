"""The entity stage: entity features across customers, exact whatever order Kafka interleaves the
customer partitions in. Pure.

Each customer partition of the fraud pipeline sends, for every transaction, one `Sighting` per
entity the transaction names, keyed by that entity (so all of an entity's sightings meet in one
partition of the stage), and after every batch a `SourceMark`: its watermark, the partition's
largest transaction time minus the grace. A transaction below its partition's watermark is late:
its sighting asks for features but is not counted (``counted`` False), a rule that depends on that
partition's log alone. So no counted sighting of a source comes below a mark the source sent.

A sighting is answered once every source's mark has passed its time (`EntityPartition.watermark`,
the least mark): every counted sighting before it has arrived, whatever the interleaving, and its
features (`EntityHistory.features`) are those of the log. The answer (`EntityFeatures`) goes back
to the customer partition of the transaction, which scores its transactions in log order.

A quiet source would hold every answer back (and the end of a finite stream would never be
answered), so a source that has had nothing new for a while says it is idle: it is left out of
the least mark until it sends again. A source that comes back with a sighting below the stage's
watermark (quiet for longer than the idle timeout, then late) is counted as ``behind``: the
answers given meanwhile did not count it, as a replay would have. That is the one case in which
live and replayed features can differ; the metric says when it happened.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from streams.fraud.entities import HORIZON_MS, EntityHistory


class Sighting(msgspec.Struct, frozen=True, tag="sighting"):
    """A transaction names an entity (kind, value); ``seq``: its decision number in ``source``."""

    source: int
    seq: int
    kind: str
    value: str
    ts: int
    transaction_id: str
    customer_id: str
    pair: str
    counted: bool


class SourceMark(msgspec.Struct, frozen=True, tag="mark"):
    """No counted sighting of ``source`` will come below ``watermark`` (None: no transaction
    yet); ``idle``: the source has had nothing new for a while."""

    source: int
    watermark: int | None
    idle: bool = False


class EntityFeatures(msgspec.Struct, frozen=True):
    """The features of one entity of one transaction (`entities.KIND_FEATURES` order)."""

    seq: int
    kind: str
    transaction_id: str
    values: list[float]


StageMessage = Sighting | SourceMark
EVICT_EVERY_MS = 3_600_000
# A waiting question: (ts, transaction id, kind, value, customer, source, seq).
Question = tuple[int, str, str, str, str, int, int]


@dataclass
class EntityPartition:
    history: EntityHistory = field(default_factory=EntityHistory)
    marks: dict[int, int | None] = field(default_factory=dict)  # source -> its latest mark
    idle: dict[int, bool] = field(default_factory=dict)  # source -> said it is idle
    waiting: list[Question] = field(default_factory=list)  # a heap
    watermark: int | None = None  # every sighting before it has been answered
    evicted: int = -(2**62)  # the watermark at the last eviction


@dataclass
class StageOutput:
    answers: list[tuple[int, str, EntityFeatures]] = field(default_factory=list)  # (source, customer, ...)
    tallies: Counter[str] = field(default_factory=Counter)


class EntityStage:
    def __init__(self, sources: int, *, late_limit_ms: int = 86_400_000) -> None:
        """``sources``: the customer partitions (every one must have marked before any answer).
        ``late_limit_ms``: sightings are kept that long past the longest window, so a late
        question (the sources send none later than that) still finds every event it counts."""
        self.sources = sources
        self.keep_ms = HORIZON_MS + late_limit_ms
        self.states: dict[int, EntityPartition] = {}

    def state(self, partition: int) -> EntityPartition:
        return self.states.setdefault(partition, EntityPartition())

    def fold(self, partition: int, messages: Iterable[StageMessage]) -> StageOutput:
        state, out = self.state(partition), StageOutput()
        for message in messages:
            if type(message) is SourceMark:
                self._mark(state, message)
            else:
                assert type(message) is Sighting
                self._sighted(state, message, out)
        self._answer(state, out)
        return out

    def _mark(self, state: EntityPartition, mark: SourceMark) -> None:
        old, new = state.marks.get(mark.source), mark.watermark
        state.marks[mark.source] = new if old is None else old if new is None else max(old, new)
        state.idle[mark.source] = mark.idle

    def _sighted(self, state: EntityPartition, s: Sighting, out: StageOutput) -> None:
        state.idle[s.source] = False  # it sends again: its marks count again
        tallies = out.tallies
        if s.counted:
            if not state.history.add(s.kind, s.value, s.ts, s.transaction_id, s.customer_id, s.pair):
                tallies["entity_sighting:repeat"] += 1  # sent again by a new owner of the source
                return
            tallies["entity_sighting:counted"] += 1
            if state.watermark is not None and s.ts < state.watermark:
                tallies["entity_sighting:behind"] += 1
        else:
            tallies["entity_sighting:late"] += 1
        question = (s.ts, s.transaction_id, s.kind, s.value, s.customer_id, s.source, s.seq)
        heapq.heappush(state.waiting, question)

    def aligned(self, state: EntityPartition) -> int | None:
        """The least mark of the sources that are not idle (None: a source has not marked yet);
        every source idle: past everything received."""
        active = []
        for source in range(self.sources):
            mark = state.marks.get(source)
            if state.idle.get(source, False):
                continue
            if mark is None:
                return None
            active.append(mark)
        if active:
            return min(active)
        known = [q[0] for q in state.waiting] + [m for m in state.marks.values() if m is not None]
        return max(known) + 1 if known else None

    def _answer(self, state: EntityPartition, out: StageOutput) -> None:
        aligned = self.aligned(state)
        if aligned is not None and (state.watermark is None or aligned > state.watermark):
            state.watermark = aligned
        if state.watermark is None:
            return
        waiting, history = state.waiting, state.history
        while waiting and waiting[0][0] < state.watermark:
            ts, tx_id, kind, value, customer, source, seq = heapq.heappop(waiting)
            values = history.features(kind, value, ts, tx_id, customer)
            out.answers.append((source, customer, EntityFeatures(seq, kind, tx_id, values)))
        if state.watermark - state.evicted >= EVICT_EVERY_MS:  # a pass over every entity: seldom
            state.evicted = state.watermark
            history.evict(state.watermark - self.keep_ms)
