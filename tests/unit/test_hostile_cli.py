"""`streams produce hostile` wiring, in process: the corpus of the chosen topic goes to the
configured topic name, and each message Kafka refuses is one line, counted, not a traceback."""

from __future__ import annotations

from typing import Any

import pytest

from streams.cli import hostile
from streams.cli.hostile import HostileTopic, produce_hostile
from streams.produce import Delivery


def test_the_corpus_goes_to_the_configured_topic_and_refusals_are_one_line_each(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAMS_TOPICS__LABELS", "labels-under-test")
    sent: dict[str, Any] = {}

    def fake_produce_each(
        kafka: object, topic: str, messages: list[Any], *, overrides: dict[str, Any]
    ) -> list[Delivery]:
        sent.update(topic=topic, messages=messages, overrides=overrides)
        return [Delivery("Broker: Message size too large")] + [
            Delivery(None, 0, i) for i in range(len(messages) - 1)
        ]

    monkeypatch.setattr(hostile, "produce_each", fake_produce_each)
    produce_hostile(
        HostileTopic.labels, max_bytes=8192, run_id="r1", base_ms=1_800_000_000_000, far_future=False
    )
    out, err = capsys.readouterr()
    assert sent["topic"] == "labels-under-test"
    assert sent["overrides"]["message.max.bytes"] > 8192 and sent["overrides"]["compression.type"] == "none"
    # 200,000 bytes of nested arrays and the 9 of the key
    assert (
        err.strip() == "refused: labels.nested_arrays_100000 (200009 bytes): Broker: Message size too large"
    )
    total = len(sent["messages"])
    assert out.strip().startswith(f"sent {total - 1} hostile messages to labels-under-test (")
    assert "1 refused by Kafka; run id r1, base time 1800000000000" in out
