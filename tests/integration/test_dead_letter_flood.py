"""A flood of bad messages (about 30 %) mixed with valid clicks and impressions: the CTR rows still
equal the oracle, every message is accounted for (consumed = processed + dead-lettered), and each
bad message has exactly one dead letter carrying its reason, its coordinates and its exact bytes.

The bad messages are labelled here as they are made (not by the worker's code, nor by the oracle):
unparseable bytes and invalid UTF-8 are ``malformed_json``, valid JSON breaking the event contract
is ``schema_violation``. The valid traffic has no late events and no duplicates, so every message is
either processed or dead-lettered for one of the reasons made here.
"""

from __future__ import annotations

import base64
import random
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.ctr.generator import ClickstreamGenerator
from streams.produce import produce
from streams.settings import Settings
from tests.integration.ctr_oracle import CLEAN_PROFILE, START, assert_rows_match_oracle, oracle, oracle_valid
from tests.integration.kafka_records import read_partitions
from tests.support import metric, running_worker, scrape, wait_until

pytestmark = pytest.mark.integration

IMPRESSIONS = 10_000  # at 100/s of event time: 100 s, so many 10 s windows close
BAD_SHARE = 0.3

Event = dict[str, Any]
Spoiler = Callable[[random.Random, Event, bytes], bytes | None]


def _with(**changes: Any) -> Spoiler:
    return lambda rng, event, raw: orjson.dumps({**event, **changes})


def _without(field: str) -> Spoiler:
    return lambda rng, event, raw: orjson.dumps({k: v for k, v in event.items() if k != field})


def _retyped(field: str, convert: Callable[[Any], Any]) -> Spoiler:
    return lambda rng, event, raw: orjson.dumps({**event, field: convert(event[field])})


def _latin1(rng: random.Random, event: Event, raw: bytes) -> bytes:
    """Valid JSON text, but encoded as Latin-1: the é is not UTF-8."""
    return orjson.dumps({**event, "segment": "café"}).decode().encode("latin-1")


def _bad_utf8_inside(rng: random.Random, event: Event, raw: bytes) -> bytes:
    """A well-formed object whose ad_id string holds an invalid UTF-8 sequence."""
    return raw.replace(event["ad_id"].encode(), b"ad-\xc3\x28")


def _garbage(rng: random.Random, event: Event, raw: bytes) -> bytes:
    return b"\x00" + rng.randbytes(rng.randint(0, 64))  # a NUL first: never JSON


def _click_without_impression(rng: random.Random, event: Event, raw: bytes) -> bytes:
    return orjson.dumps({k: v for k, v in event.items() if k != "impression_id"} | {"type": "click"})


# What makes a message bad, by the reason kind it must be dead-lettered with.
SPOILERS: dict[str, list[Spoiler]] = {
    "malformed_json": [
        lambda rng, event, raw: raw[: rng.randint(1, len(raw) - 1)],  # truncated
        lambda rng, event, raw: raw + raw,  # two objects in one message
        lambda rng, event, raw: b"",
        lambda rng, event, raw: None,  # a tombstone: no value at all
        lambda rng, event, raw: b"not json: " + raw,
        lambda rng, event, raw: raw.replace(b'"ts":', b'"ts":NaN,"was":'),
        lambda rng, event, raw: raw.replace(b'"', b"'"),  # single quotes
        _garbage,
        lambda rng, event, raw: b"\xff\xfe" + raw,  # not UTF-8 (a UTF-16 byte-order mark)
        _latin1,
        _bad_utf8_inside,
    ],
    "schema_violation": [
        lambda rng, event, raw: orjson.dumps([event]),  # JSON, but not an object
        lambda rng, event, raw: b"null",
        lambda rng, event, raw: b"42",
        lambda rng, event, raw: b'"impression"',
        lambda rng, event, raw: b"{}",
        *(
            _without(field)
            for field in ("type", "event_id", "ts", "ad_id", "campaign_id", "user_id", "segment")
        ),
        _retyped("ts", str),
        _retyped("ts", lambda ts: ts + 0.5),
        _retyped("ts", lambda ts: -ts),
        _retyped("ts", lambda ts: ts * 1000),  # microseconds by mistake: past 2100
        _retyped("ts", lambda ts: ts // 1000),  # seconds by mistake: before 2000
        _with(ts=True),
        _with(ts=None),
        _retyped("ad_id", lambda ad: int(ad.removeprefix("ad-"))),
        _retyped("segment", lambda segment: [segment]),
        _with(user_id=""),
        _with(event_id=""),
        _with(campaign_id={"id": "campaign-000"}),
        _with(type="view"),
        _with(type="Impression"),
        _click_without_impression,
        _with(type="click", impression_id=""),
    ],
}


def flood(seed: int) -> Iterator[tuple[bytes, bytes | None, str | None]]:
    """The valid clickstream with bad messages slipped in at random, each on a valid neighbour's
    key (so it lands in the same partition): (key, value, reason kind or None if valid)."""
    rng = random.Random(seed)
    kinds = sorted(SPOILERS)
    for key, raw in ClickstreamGenerator(CLEAN_PROFILE, seed=seed, start_ms=START, rate=100).messages(
        IMPRESSIONS
    ):
        while rng.random() < BAD_SHARE:  # geometric: bad share of all messages = BAD_SHARE
            kind = rng.choice(kinds)
            spoil = rng.choice(SPOILERS[kind])
            yield key, spoil(rng, orjson.loads(raw), raw), kind
        yield key, raw, None


def test_a_flood_of_bad_messages_is_dead_lettered_and_valid_results_match_the_oracle(
    ctr_settings: Settings, tmp_path: Path
) -> None:
    settings = ctr_settings
    topic = settings.topics.ad_events
    messages = list(flood(seed=41))
    bad = Counter((value, kind) for _, value, kind in messages if kind is not None)
    kind_of = {value: kind for value, kind in bad}
    assert len(kind_of) == len(bad), "one bad value, one reason kind"
    valid = [value for _, value, kind in messages if kind is None]
    assert not kind_of.keys() & set(valid)
    verdicts = (oracle_valid(value) for _, value, _ in messages)
    assert [v if isinstance(v, str) else None for v in verdicts] == [kind for _, _, kind in messages]
    n_bad = sum(bad.values())
    bad_by_kind = Counter(kind for _, _, kind in messages if kind is not None)
    print(
        f"\nflood: {len(messages)} messages, {len(valid)} valid, {n_bad} bad "
        f"({n_bad / len(messages):.1%}: {dict(bad_by_kind)}), {len(kind_of)} distinct bad values"
    )

    # A tombstone's value is None: `produce` is typed for bytes, confluent-kafka accepts None.
    report = produce(settings.kafka, topic, [(key, value) for key, value, _ in messages])  # type: ignore[misc]
    assert report.sent == len(messages) and report.failed == 0

    with running_worker(settings, tmp_path):
        final_metrics = wait_until(
            lambda: (
                (text := scrape(settings))
                and metric(text, "streams_events_consumed_total", topic=topic) == len(messages)
                and text
            ),
            120,
            "the worker to consume every message",
            interval_s=1,
        )

    # (1) The raw topic holds what was produced, the oracle agrees with the labels made here,
    # and the CTR rows equal the oracle.
    raw_topic = read_partitions(settings, topic)
    at: dict[tuple[int, int], bytes | None] = {
        (partition, offset): value for partition, records in raw_topic.items() for offset, value in records
    }
    assert Counter(at.values()) == Counter(value for _, value, _ in messages)
    expected = oracle(raw_topic)
    assert expected["rejected"] == bad_by_kind
    assert expected["duplicates"] == 0 and expected["rejected"]["late_event"] == 0
    assert_rows_match_oracle(settings, expected)

    # (2) Every message is accounted for, and the dead-letter count is exactly the bad messages.
    def count(name: str, **labels: str) -> float:
        return metric(final_metrics, name, topic=topic, **labels)

    processed = count("streams_events_processed_total")
    dead_lettered = count("streams_events_dead_lettered_total")
    assert count("streams_events_consumed_total") == processed + dead_lettered == len(messages)
    assert processed == len(valid)
    assert dead_lettered == n_bad
    for kind in SPOILERS:
        assert count("streams_events_dead_lettered_total", reason=kind) == bad_by_kind[kind], kind
    assert count("streams_events_duplicate_total") == count("streams_events_late_total") == 0

    # (3) Exactly one dead letter per bad message, with its reason, coordinates and exact bytes.
    letters = [
        orjson.loads(value or b"")
        for records in read_partitions(settings, settings.topics.dead_letters).values()
        for _, value in records
    ]
    assert len(letters) == n_bad
    coordinates = [(letter["partition"], letter["offset"]) for letter in letters]
    assert len(set(coordinates)) == n_bad
    assert set(coordinates) == {where for where, value in at.items() if value in kind_of}
    for letter in letters:
        where = (letter["partition"], letter["offset"])
        assert letter["topic"] == topic, where
        assert base64.b64decode(letter["raw_base64"]) == (at[where] or b""), where
        assert letter["reason_kind"] == kind_of[at[where]], (where, at[where], letter["reason"])
        assert letter["reason"].strip(), where
        assert letter["pipeline_version"] == settings.worker.pipeline_version
    print(
        "dead letters: "
        + ", ".join(f"{kind}={n}" for kind, n in sorted(Counter(r["reason_kind"] for r in letters).items()))
    )
