from __future__ import annotations

import asyncio

from streams.sink import MemorySink


def test_memory_sink_upserts_under_the_natural_key() -> None:
    sink = MemorySink({"t": ("k",)})
    asyncio.run(sink.write("t", [{"k": 1, "v": "a"}, {"k": 2, "v": "b"}]))
    asyncio.run(sink.write("t", [{"k": 1, "v": "a2"}]))  # re-delivery overwrites
    assert sink.tables["t"] == {(1,): {"k": 1, "v": "a2"}, (2,): {"k": 2, "v": "b"}}
