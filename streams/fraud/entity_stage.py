"""The entity stage: entity features across customers, exact whatever order Kafka interleaves the
customer partitions in. Pure.

Each customer partition of the fraud pipeline sends, for every transaction, one `Sighting` per
entity the transaction names to the stage partition of that entity (so all of an entity's
sightings meet in one partition of the stage). After every batch it sends each stage partition one
`SourceBatch`: the batch's sightings for it and its mark, the watermark of the partition (its
largest transaction time minus the grace). One record per stage partition and batch, not one per
sighting: Kafka's per-record costs are paid once per batch. A transaction below its partition's
watermark is late: its sighting asks for features but is not counted (``counted`` False), a rule
that depends on that partition's log alone. So no counted sighting of a source comes below a mark
the source sent.

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


class Sighting(msgspec.Struct, frozen=True, array_like=True):
    """A transaction names an entity (kind, value); ``seq``: its decision number in its partition."""

    seq: int
    kind: str
    value: str
    ts: int
    transaction_id: str
    customer_id: str
    pair: str
    counted: bool


class SourceBatch(msgspec.Struct, frozen=True):
    """``source``'s sightings for one stage partition from one batch, then its mark: no counted
    sighting of ``source`` will come below ``watermark`` (None: no transaction yet). ``idle``:
    the source has had nothing new for a while (no sightings then)."""

    source: int
    sightings: list[Sighting]
    watermark: int | None
    idle: bool = False


class EntityFeatures(msgspec.Struct, frozen=True, array_like=True):
    """The features of one entity of one transaction (`entities.KIND_FEATURES` order)."""

    seq: int
    kind: str
    transaction_id: str
    values: list[float]


class AnswerBatch(msgspec.Struct, frozen=True):
    """The answers of one stage partition's fold to one customer partition."""

    answers: list[EntityFeatures]


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
    answers: dict[int, list[EntityFeatures]] = field(default_factory=dict)  # by source partition
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

    def fold(self, partition: int, batches: Iterable[SourceBatch]) -> StageOutput:
        state, out = self.state(partition), StageOutput()
        for batch in batches:
            for sighting in batch.sightings:
                self._sighted(state, batch.source, sighting, out)
            self._mark(state, batch)
        self._answer(state, out)
        return out

    def _mark(self, state: EntityPartition, batch: SourceBatch) -> None:
        old, new = state.marks.get(batch.source), batch.watermark
        state.marks[batch.source] = new if old is None else old if new is None else max(old, new)
        state.idle[batch.source] = batch.idle

    def _sighted(self, state: EntityPartition, source: int, s: Sighting, out: StageOutput) -> None:
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
        question = (s.ts, s.transaction_id, s.kind, s.value, s.customer_id, source, s.seq)
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
            out.answers.setdefault(source, []).append(EntityFeatures(seq, kind, tx_id, values))
        if state.watermark - state.evicted >= EVICT_EVERY_MS:  # a pass over every entity: seldom
            state.evicted = state.watermark
            history.evict(state.watermark - self.keep_ms)
