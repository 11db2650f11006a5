"""The CTR pipeline's fold over Kafka messages: decoding, dead letters with coordinates, tallies."""

from __future__ import annotations

import orjson

from streams.compose import compose
from streams.ctr.pipeline import SCHEMA_FILE, CtrPipeline
from streams.ctr.processor import CtrProcessor
from streams.engine.testing import LogMessage
from streams.events import load_validator
from streams.settings import Settings

T0 = 1_700_000_000_000


def FakeMessage(value: bytes | None, partition: int, offset: int) -> LogMessage:
    return LogMessage("ad-events", partition, offset, value, b"a1", T0)


def event(event_id: str, ts: int, kind: str = "impression", impression: str = "i") -> bytes:
    fields = {"type": kind, "event_id": event_id, "ts": ts, "ad_id": "a1", "campaign_id": "c1"}
    extra = {"impression_id": impression} if kind == "click" else {}
    return orjson.dumps({**fields, **extra, "user_id": "u", "segment": "news"})


def test_bad_late_and_duplicate_events_are_accounted_for_with_their_coordinates() -> None:
    settings = Settings()
    c = compose(settings).ctr
    processor = CtrProcessor(c.config, c.priors, "v1", ci_level=c.ci_level, cell_policy=c.cell_policy)
    pipeline = CtrPipeline(processor, load_validator(settings.schemas_dir / SCHEMA_FILE), "ad-events", "r")
    messages = [
        FakeMessage(event("e1", T0 + 600_000), 0, 10),
        FakeMessage(event("e1", T0 + 600_000), 0, 11),  # duplicate
        FakeMessage(event("e2", T0), 0, 12),  # 10 min behind the watermark: late
        FakeMessage(b"{oops", 1, 7),  # malformed
        FakeMessage(event("e3", T0 + 600_500, "click"), 1, 8),  # its impression is not here (yet)
    ]
    folded = pipeline.fold(0, {"ad-events": messages[:3]})
    folded.add(pipeline.fold(1, {"ad-events": messages[3:]}))
    assert folded.tallies == {
        "processed:ad-events": 1,
        "duplicate:ad-events": 1,
        "late:ad-events": 1,
        "ctr_event:impression": 1,
        "ctr_event:click": 0,
    }
    letters = {str(letter.coordinates): letter.rejection for letter in folded.letters}
    assert set(letters) == {"ad-events[0]@12", "ad-events[1]@7"}
    assert (
        letters["ad-events[0]@12"].kind == "late_event"
        and str(T0 + 600_000) in letters["ad-events[0]@12"].reason
    )
    assert letters["ad-events[1]@7"].kind == "malformed_json"


def test_a_click_counts_in_its_impressions_windows_or_becomes_a_dead_letter() -> None:
    """A click waits for its impression (out of order) until the watermark passes the click's time
    plus the grace; then it is an ``unattributed_click`` letter with its own coordinates."""
    settings = Settings()
    c = compose(settings).ctr
    processor = CtrProcessor(c.config, c.priors, "v1", ci_level=c.ci_level, cell_policy=c.cell_policy)
    pipeline = CtrPipeline(processor, load_validator(settings.schemas_dir / SCHEMA_FILE), "ad-events", "r")
    minute = 60_000
    base = T0 - T0 % minute  # the clicks below fall in the minute after their impression's
    first = pipeline.fold(
        0,
        {"ad-events": [
            FakeMessage(event("c1", base + 59_000, "click", impression="i1"), 0, 1),  # before its impression
            FakeMessage(event("i1", base + 58_000), 0, 2),  # within the grace: counted, and c1 with it
            FakeMessage(event("c2", base + 70_000, "click", impression="i1"), 0, 3),  # a second click on i1
            FakeMessage(event("c3", base + 71_000, "click", impression="lost"), 0, 4),  # never comes
        ]},
    )  # fmt: skip
    assert first.tallies["processed:ad-events"] == 3 and first.tallies["ctr_event:click"] == 2
    assert not first.letters
    rows = {
        (r["window"], r["window_start"]): (r["impressions"], r["clicks"])
        for r in pipeline.drain().rows["ctr_ad_windows"]
    }
    assert rows[("1m", base)] == (1, 2)  # the impression's minute, not the clicks' (T0 + 1 min)
    assert ("1m", base + minute) not in rows
    later = pipeline.fold(0, {"ad-events": [FakeMessage(event("i9", base + 71_000 + minute + 1), 0, 5)]})
    [letter] = later.letters
    assert str(letter.coordinates) == "ad-events[0]@4" and letter.rejection.kind == "unattributed_click"
    assert "lost" in letter.rejection.reason and letter.raw == event(
        "c3", base + 71_000, "click", impression="lost"
    )
    assert later.tallies["processed:ad-events"] == 1 and later.tallies["ctr_event:click"] == 0
