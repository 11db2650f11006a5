"""Microseconds per transaction of the fraud pipeline's pure path, before and after the batch
rewrite: decoding (schema path vs msgspec structs) and `process` (the reference in
`fraud_reference` vs `FraudProcessor`), on the project's generator. Prints figures, asserts
nothing about time (the outputs of both are checked equal).

    .venv/bin/python -m tests.unit.fraud_speed --transactions 100000 --batch 1000 --repeats 3

Transactions are split over ``--partitions`` by key and processed one partition's batch at a
time, as the engine folds them. Times are the process's CPU time, best of ``--repeats`` (the
machine may be shared). ``--freeze`` moves everything allocated before the timing (imports, the
prepared inputs) out of the garbage collector's reach (`gc.freeze`), as a worker can do once it
has started; ``--profile`` prints a pyinstrument profile of the new path (``pip install
pyinstrument``).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from streams.events import Rejected, decode, load_validator
from streams.fraud.decision import DecisionPolicy
from streams.fraud.generator import TransactionGenerator, TransactionProfile
from streams.fraud.messages import transaction_decoder
from streams.fraud.model import FraudModel
from streams.fraud.processor import FraudProcessor
from streams.fraud.synthetic import load_ip_prefixes
from streams.settings import Settings
from tests.unit.fraud_reference import ReferenceProcessor

DAY_MS = 86_400_000


def messages(settings: Settings, count: int) -> list[tuple[bytes, bytes]]:
    """The fraud benchmark's workload: ``count`` transactions over 14 days, a few malformed."""
    generator = TransactionGenerator(
        TransactionProfile(mean_gap_ms=14 * DAY_MS / count),
        seed=42,
        start_ms=1_767_225_600_000,
        ip_prefixes=load_ip_prefixes(settings.fraud.ip_countries_file),
    )
    return generator.scenario(count).transactions


def best_of(repeats: int, run: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.process_time()
        result = run()
        best = min(best, time.process_time() - started)
    return best, result


def batches(events: Sequence[tuple[Any, int]], partitions: int, size: int) -> list[list[tuple[Any, int]]]:
    """Each partition's events in log order, cut into batches, partitions taking turns."""
    by_partition: list[list[tuple[Any, int]]] = [[] for _ in range(partitions)]
    for event, partition in events:
        by_partition[partition].append((event, partition))
    cuts = [[events[i : i + size] for i in range(0, len(events), size)] for events in by_partition]
    return [batch for turn in itertools.zip_longest(*cuts) for batch in turn if batch is not None]


def freeze(wanted: bool) -> None:
    """Out of the collector's reach: what exists now (imports, the prepared inputs)."""
    gc.collect()
    if wanted:
        gc.freeze()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--freeze", action="store_true")
    parser.add_argument("--profile", action="store_true")
    options = parser.parse_args()
    settings = Settings()
    raw = messages(settings, options.transactions)
    validator = load_validator(settings.schemas_dir / "transaction.schema.json")
    decoder = transaction_decoder(validator)
    keyed = [(value, zlib.crc32(key) % options.partitions) for key, value in raw]
    freeze(options.freeze)
    before_decode, dicts = best_of(options.repeats, lambda: [(decode(v, validator), p) for v, p in keyed])
    after_decode, structs = best_of(options.repeats, lambda: [(decoder.decode(v), p) for v, p in keyed])
    old_batches = batches(
        [(e, p) for e, p in dicts if not isinstance(e, Rejected)], options.partitions, options.batch
    )
    new_batches = batches(
        [(e, p) for e, p in structs if not isinstance(e, Rejected)], options.partitions, options.batch
    )
    count = sum(len(batch) for batch in new_batches)
    model = FraudModel.load(settings.fraud.model_file)
    prefixes = load_ip_prefixes(settings.fraud.ip_countries_file)
    args = (model, DecisionPolicy(), prefixes, "speed")
    freeze(options.freeze)

    def reference(keep: bool = False) -> list[Any]:
        processor = ReferenceProcessor(*args)
        return [out for batch in old_batches if (out := processor.process(batch, [])) and keep]

    def batched(keep: bool = False) -> list[Any]:
        processor = FraudProcessor(*args)
        return [out for batch in new_batches if (out := processor.process(batch, [])) and keep]

    # Timed runs drop each batch's output, as the engine does once it is written.
    before_process, _ = best_of(options.repeats, reference)
    after_process, _ = best_of(options.repeats, batched)
    same = [vars(o) for o in reference(keep=True)] == [vars(o) for o in batched(keep=True)]
    assert same, "the outputs differ"
    print(f"{len(keyed):,} messages, {count:,} transactions, batches of {options.batch} per partition")
    report(
        before_decode / len(keyed), after_decode / len(keyed), before_process / count, after_process / count
    )
    if options.profile:
        profile(batched)


def report(before_decode: float, after_decode: float, before_process: float, after_process: float) -> None:
    """Seconds per message or transaction, as a table in microseconds."""
    print(f"{'µs per transaction':<22}{'before':>10}{'after':>10}")
    for name, old, new in (
        ("decode", before_decode, after_decode),
        ("process", before_process, after_process),
        ("total", before_decode + before_process, after_decode + after_process),
    ):
        print(f"{name:<22}{old * 1e6:>10.2f}{new * 1e6:>10.2f}")


def profile(run: Callable[[], Any]) -> None:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    profiler.start()
    run()
    profiler.stop()
    print(profiler.output_text(color=False, show_all=False))


if __name__ == "__main__":
    main()
