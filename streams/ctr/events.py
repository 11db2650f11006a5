"""What the CTR pipeline reads of an ad event, and the message it must come as. Pure."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class AdEvent(msgspec.Struct, frozen=True):
    """What the CTR job reads of an ad event (`schemas/ad_event.schema.json`)."""

    event_id: _Id
    type: Literal["impression", "click"]
    ts: Annotated[int, msgspec.Meta(ge=946_684_800_000, le=4_102_444_800_000)]
    ad_id: _Id
    campaign_id: _Id
    segment: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    # Absent or a string: the schema refuses ``"impression_id": null``, so the struct does too.
    impression_id: _Id | msgspec.UnsetType = msgspec.UNSET  # a click's impression


class AdEventMessage(AdEvent, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An ad event as its JSON message must be: every constraint of the schema, so whatever
    msgspec accepts the schema accepts too (tests hold the two together). A field the struct
    does not know sends the message the schema's way: msgspec skips unknown values more loosely
    than the schema path parses them (a 5,000-digit number, invalid UTF-8)."""

    user_id: _Id

    def __post_init__(self) -> None:
        if self.type == "click" and self.impression_id is msgspec.UNSET:
            raise ValueError("a click needs its impression_id")
