"""A corpus of hostile messages for a raw topic, each with the verdict the decoder must give it.

Deep nesting, values just under and over a size limit, numbers JSON cannot hold, broken UTF-8,
null and empty values and keys, a wrong type for every field of the schema, values at and past
its bounds, duplicate and extra fields: none may stop the stream. Each message says what
`streams.events.decode` returns for it (``valid`` or a rejection kind) and what a pipeline does
with it. Valid ones have ids of their own derived from the run id, and event times from
``base_ms`` on (a millisecond apart), so they can be mixed into live traffic without being late
or duplicates, nor touching another ad's or customer's results. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from streams.hostile.corpus import TEMPLATES, VALID, Corpus, HostileMessage
from streams.hostile.fields import field_cases
from streams.hostile.structure import structure_cases

__all__ = ["DEFAULT_MAX_BYTES", "KINDS", "SCHEMA_FILES", "VALID", "HostileMessage", "hostile_messages"]

DEFAULT_MAX_BYTES = 900_000
KINDS = tuple(TEMPLATES)  # ad_events, transactions, labels, smoke
SCHEMA_FILES = {
    "ad_events": "ad_event.schema.json",
    "transactions": "transaction.schema.json",
    "labels": "label.schema.json",
    "smoke": "smoke_event.schema.json",
}


def hostile_messages(
    kind: str,
    schema: Mapping[str, Any],
    *,
    run_id: str,
    base_ms: int,
    max_bytes: int = DEFAULT_MAX_BYTES,
    far_future: bool = False,
) -> Iterator[HostileMessage]:
    """The hostile corpus of ``kind`` (one of KINDS), deterministic for its arguments.

    ``schema``: the kind's JSON Schema, parsed (``SCHEMA_FILES[kind]`` in ``schemas/``); the
    wrong types, bounds and lengths are read from it. ``max_bytes``: the size limit to probe, with
    values one byte under and one over it. ``far_future`` adds a valid event at the schema's last
    instant (2100), which moves its partition's watermark there so that every later event of that
    partition is late: never mix it into traffic whose results matter."""
    corpus = Corpus(kind, schema, run_id, base_ms)
    yield from structure_cases(corpus, max_bytes)
    yield from field_cases(corpus, far_future=far_future)
