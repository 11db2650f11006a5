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


def event(event_id: str, ts: int, kind: str = "impression") -> bytes:
    fields = {"type": kind, "event_id": event_id, "ts": ts, "ad_id": "a1", "campaign_id": "c1"}
    extra = {"impression_id": "i"} if kind == "click" else {}
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
        FakeMessage(event("e3", T0 + 600_500, "click"), 1, 8),
    ]
    folded = pipeline.fold(0, {"ad-events": messages[:3]})
    folded.add(pipeline.fold(1, {"ad-events": messages[3:]}))
    assert folded.tallies == {
        "processed:ad-events": 2,
        "duplicate:ad-events": 1,
        "late:ad-events": 1,
        "ctr_event:impression": 1,
        "ctr_event:click": 1,
    }
    letters = {str(letter.coordinates): letter.rejection for letter in folded.letters}
    assert set(letters) == {"ad-events[0]@12", "ad-events[1]@7"}
    assert (
        letters["ad-events[0]@12"].kind == "late_event"
        and str(T0 + 600_000) in letters["ad-events[0]@12"].reason
    )
    assert letters["ad-events[1]@7"].kind == "malformed_json"
