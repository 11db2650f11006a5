"""Event-time window arithmetic: tumbling and hopping windows over epoch milliseconds. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")


def parse_duration_ms(text: str) -> int:
    """``"90s"``, ``"1m"``, ``"1h"`` -> milliseconds."""
    match = _DURATION.match(text.strip())
    if match is None or int(match.group(1)) <= 0:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 1m, 1h)")
    return int(match.group(1)) * _UNITS_MS[match.group(2)]


@dataclass(frozen=True)
class WindowSpec:
    """Windows of ``size_ms`` starting every ``step_ms`` (tumbling when they are equal)."""

    name: str
    size_ms: int
    step_ms: int

    def __post_init__(self) -> None:
        if self.size_ms <= 0 or self.step_ms <= 0 or self.size_ms % self.step_ms:
            raise ValueError(f"window {self.name}: size must be a positive multiple of the step")

    @classmethod
    def parse(cls, name: str, size: str, every: str | None = None) -> WindowSpec:
        size_ms = parse_duration_ms(size)
        return cls(name, size_ms, parse_duration_ms(every) if every else size_ms)

    def starts(self, ts: int) -> list[int]:
        """Starts of every window that contains ``ts`` (newest first)."""
        last = ts - ts % self.step_ms
        return list(range(last, ts - self.size_ms, -self.step_ms))

    def end(self, start: int) -> int:
        return start + self.size_ms

    def closed(self, start: int, watermark: int, grace_ms: int) -> bool:
        """A window closes for good once the watermark has passed its end plus the grace period."""
        return start + self.size_ms + grace_ms <= watermark
