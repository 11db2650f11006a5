"""State snapshots: a restart costs the size of the state, not the length of the log.

At a checkpoint, right after a pipeline is drained, the state of each of its partitions that
folded enough since its last snapshot is encoded (msgpack, typed: decoding builds the state's own
classes and runs no code) with the source positions it covers (topic -> next offset). It is
saved once the checkpoint's offsets are committed. When a partition is assigned, the engine loads
the newest snapshot at or below the committed offsets and folds only the log after it.

A snapshot is only a shortcut: one that is missing, incomplete, corrupt (SHA-256), of another
state format, taken under other pins or undecodable is logged with its coordinates, counted, and
the engine takes an older one or the whole log. A snapshot ahead of the committed offsets (its
commit had not landed) is skipped quietly: it would skip messages whose outputs are not durable.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from streams.engine.pipeline import Pipeline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SnapshotInfo:
    """A stored snapshot without its bytes."""

    pipeline: str
    partition: int
    positions: dict[str, int]  # topic -> next offset the state covers
    format: str
    pins: str
    checksum: str  # hex SHA-256 of the bytes
    size: int
    chunks: int = 1

    @property
    def snapshot_id(self) -> int:
        """Grows as the partition is folded: the newest snapshot has the largest."""
        return sum(self.positions.values())

    def __str__(self) -> str:
        at = ", ".join(f"{t}@{o}" for t, o in sorted(self.positions.items()))
        return f"{self.pipeline} partition {self.partition} ({at})"


@dataclass(frozen=True)
class Snapshot:
    info: SnapshotInfo
    data: bytes


class SnapshotStore(Protocol):
    async def save(self, snapshot: Snapshot) -> None: ...
    async def candidates(self, pipeline: str, partition: int) -> list[SnapshotInfo]:
        """Every stored snapshot of the partition, newest first."""
        ...

    async def data(self, info: SnapshotInfo) -> bytes | None:
        """The bytes of a snapshot; None if some of it is missing."""
        ...

    async def prune(self, pipeline: str, partition: int, below: int) -> None:
        """Delete the partition's snapshots whose id is below ``below``."""
        ...


class SnapshotObserver(Protocol):
    def snapshot_saved(self, pipeline: str, size: int, seconds: float) -> None: ...
    def snapshot_failed(self, pipeline: str) -> None: ...
    def snapshot_rejected(self, pipeline: str, reason: str) -> None: ...
    def recovered(self, pipeline: str, source: str, messages: int, seconds: float) -> None: ...


@dataclass(frozen=True)
class SnapshotPolicy:
    """A partition's state is snapshotted once it folded ``every_messages`` messages, or some and
    ``interval_s`` passed, or some and it is revoked (a rolling deploy then restarts cheaply)."""

    interval_s: float = 60.0
    every_messages: int = 1_000_000
    keep: int = 2  # a newer one may be ahead of a commit that did not land


@dataclass
class _Progress:
    since: float  # monotonic time of the last snapshot (or of the state's start)
    folded: int = 0  # messages folded since
    saved: list[int] = field(default_factory=list)  # ids saved by this process, oldest first


def checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Snapshots:
    """Takes, saves and restores the snapshots of one worker's pipelines."""

    def __init__(
        self,
        store: SnapshotStore,
        pins: str,
        observer: SnapshotObserver,
        policy: SnapshotPolicy | None = None,
    ) -> None:
        self.store, self.pins, self.observer = store, pins, observer
        self.policy = policy or SnapshotPolicy()
        self.progress: dict[tuple[str, int], _Progress] = {}

    def started(self, pipeline: str, partition: int) -> None:
        self.progress[(pipeline, partition)] = _Progress(time.monotonic())

    def folded(self, pipeline: str, partition: int, count: int) -> None:
        progress = self.progress.get((pipeline, partition))
        if progress is not None:
            progress.folded += count

    def forget(self, pipeline: str, partitions: Sequence[int]) -> None:
        for partition in partitions:
            self.progress.pop((pipeline, partition), None)

    def capture(
        self, pipeline: Pipeline, positions: Mapping[int, Mapping[str, int]], *, final: bool = False
    ) -> list[Snapshot]:
        """Encode the due partitions of ``pipeline`` (partition -> the positions its state covers);
        called right after a drain, so the state holds nothing unwritten."""
        taken, now, policy = [], time.monotonic(), self.policy
        for partition, at in sorted(positions.items()):
            progress = self.progress.get((pipeline.name, partition))
            if progress is None or progress.folded == 0:
                continue
            if final or progress.folded >= policy.every_messages or now - progress.since >= policy.interval_s:
                data = pipeline.snapshot(partition)
                if data is None:
                    continue
                info = SnapshotInfo(pipeline.name, partition, dict(at), pipeline.snapshot_format,
                                    self.pins, checksum(data), len(data))  # fmt: skip
                taken.append(Snapshot(info, data))
                progress.since, progress.folded = now, 0
        return taken

    async def save(self, snapshots: Sequence[Snapshot]) -> None:
        """Save each snapshot, then drop the partition's older ones beyond ``keep``. A failure is
        logged and counted: the partition is then recovered from an older snapshot or the log."""
        for snapshot in snapshots:
            info, started = snapshot.info, time.perf_counter()
            try:
                await self.store.save(snapshot)
            except Exception as exc:
                log.warning("could not save the snapshot of %s: %r", info, exc)
                self.observer.snapshot_failed(info.pipeline)
                continue
            self.observer.snapshot_saved(info.pipeline, info.size, time.perf_counter() - started)
            progress = self.progress.get((info.pipeline, info.partition))
            if progress is None:
                continue
            progress.saved.append(info.snapshot_id)
            if len(progress.saved) >= self.policy.keep:
                progress.saved = progress.saved[-self.policy.keep :]
                try:
                    await self.store.prune(info.pipeline, info.partition, progress.saved[0])
                except Exception as exc:  # kept a little longer: harmless
                    log.warning("could not prune the snapshots of %s: %r", info, exc)

    async def restore(
        self, pipeline: Pipeline, partition: int, ends: Mapping[str, int]
    ) -> dict[str, int] | None:
        """Load the newest usable snapshot at or below ``ends`` into ``pipeline``: the positions
        it covers, or None (nothing usable: fold the whole log)."""
        try:
            found = await self.store.candidates(pipeline.name, partition)
        except Exception as exc:
            log.warning("could not read the snapshots of %s partition %d: %r", pipeline.name, partition, exc)
            self.observer.snapshot_rejected(pipeline.name, "unreadable")
            return None
        if not found and any(ends.values()):
            log.info("%s partition %d: no snapshot, recovering from the log", pipeline.name, partition)
            self.observer.snapshot_rejected(pipeline.name, "missing")
        for info in found:
            if any(info.positions.get(t, ends[t] + 1) > ends[t] for t in pipeline.topics):
                log.debug("snapshot of %s is ahead of the committed offsets %s: skipped", info, dict(ends))
                continue
            reason = await self._load(pipeline, info)
            if reason is None:
                return {t: info.positions[t] for t in pipeline.topics}
            log.warning("snapshot of %s not used (%s): trying an older one, else the log", info, reason)
            self.observer.snapshot_rejected(pipeline.name, reason.split(":", 1)[0])
        return None

    async def _load(self, pipeline: Pipeline, info: SnapshotInfo) -> str | None:
        """Why the snapshot cannot be used, or None once it is loaded."""
        if info.format != pipeline.snapshot_format:
            return f"format: {info.format}, this worker reads {pipeline.snapshot_format}"
        if info.pins != self.pins:
            return f"pins: taken under pins {info.pins}, this version has {self.pins}"
        try:
            data = await self.store.data(info)
        except Exception as exc:
            return f"unreadable: {exc!r}"
        if data is None:
            return f"incomplete: fewer than its {info.chunks} chunks are stored"
        if len(data) != info.size or checksum(data) != info.checksum:
            return "corrupt: its bytes do not match their SHA-256"
        try:
            pipeline.restore(info.partition, data)
        except Exception as exc:
            pipeline.forget([info.partition])
            return f"undecodable: {exc!r}"
        return None


class MemorySnapshotStore:
    """Snapshots in a dict (the in-process harness and unit tests)."""

    def __init__(self) -> None:
        self.kept: dict[tuple[str, int], dict[int, Snapshot]] = {}

    async def save(self, snapshot: Snapshot) -> None:
        info = snapshot.info
        self.kept.setdefault((info.pipeline, info.partition), {})[info.snapshot_id] = snapshot

    async def candidates(self, pipeline: str, partition: int) -> list[SnapshotInfo]:
        kept = self.kept.get((pipeline, partition), {})
        return [kept[i].info for i in sorted(kept, reverse=True)]

    async def data(self, info: SnapshotInfo) -> bytes | None:
        found = self.kept.get((info.pipeline, info.partition), {}).get(info.snapshot_id)
        return found.data if found is not None else None

    async def prune(self, pipeline: str, partition: int, below: int) -> None:
        kept = self.kept.get((pipeline, partition), {})
        for snapshot_id in [i for i in kept if i < below]:
            del kept[snapshot_id]
