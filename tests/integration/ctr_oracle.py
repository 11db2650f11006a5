"""The CTR tests' scenario and their independent oracle.

The oracle is plain code of its own (the same rules as the README states them, not the
pipeline's): per Kafka partition in offset order, an event older than the partition's watermark
minus the grace is late, an id seen again within the dedupe horizon is a duplicate, every other
event counts in its tumbling and hopping windows (per ad, per campaign, per segment x ad cell); a
click counts in its impression's windows (see `ctr_oracle`).
`oracle` reads the raw topic back and judges validity itself (`oracle_valid`); `ctr_oracle` takes
events already judged. Every (ad, window) row in Cassandra must match it exactly.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.ctr.generator import ClickstreamProfile
from streams.io.cassandra import connect
from streams.settings import CtrSettings, Settings
from tests.integration.kafka_records import Located
from tests.integration.prior_oracle import PriorOracle

SEC = 1000
# Short windows so that a short run closes many: 10 s tumbling, 1 min hopping every 10 s, 5 s grace.
# Low back-off thresholds: a short run has cells on both sides of them (cells of ~20 impressions,
# ads of ~100 per minute), so the e2e posterior check covers the ad back-off path too.
# Priors learned every minute from the trailing 3 minutes: a 4-minute run has rows under the file's
# priors and under learned ones.
CTR_WINDOWS = CtrSettings(
    tumbling="10s", hopping="1m", hop_every="10s", grace="5s", dedupe_horizon="1m",
    min_cell_impressions=30, min_ad_impressions=60,
    prior_refit_every="1m", prior_history="3m", prior_min_impressions=20,
)  # fmt: skip
TUMBLING, HOPPING, HOP, GRACE, HORIZON = 10 * SEC, 60 * SEC, 10 * SEC, 5 * SEC, 60 * SEC
START = 1_700_000_000_000 - 1_700_000_000_000 % (60 * SEC)
PROFILE = ClickstreamProfile(
    campaigns=6,
    ads=60,
    mean_ctr=0.02,  # denser than real traffic so that every window kind sees clicks in a short run
    click_delay_ms=(200, 4000),
    out_of_order_share=0.03,
    max_disorder_ms=8 * SEC,  # beyond the 5 s grace: some out-of-order events are late, some not
    late_share=0.01,
    late_by_ms=30 * SEC,
    duplicate_share=0.01,
    malformed_share=0.005,
)
# Clean timing: disorder within the 5 s grace, no late events, no duplicates, no dirt of its own.
CLEAN_PROFILE = ClickstreamProfile(
    campaigns=6,
    ads=60,
    mean_ctr=0.02,
    click_delay_ms=(200, 4000),
    out_of_order_share=0.03,
    max_disorder_ms=4 * SEC,
    late_share=0.0,
    duplicate_share=0.0,
    malformed_share=0.0,
)

Window = tuple[str, str, int]  # (window name, ad or campaign, window start)
Cell = tuple[str, str, str, int]  # (window name, segment, ad, window start)
TABLES = {"ads": "ctr_ad_windows", "campaigns": "ctr_campaign_windows", "cells": "ctr_segment_cells"}


def oracle_valid(raw: bytes | None) -> dict[str, Any] | str:
    """Plain re-statement of the event contract: the event, or the kind of rejection."""
    try:
        event = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return "malformed_json"
    if not isinstance(event, dict):
        return "schema_violation"
    text = ("event_id", "ad_id", "campaign_id", "user_id", "segment")
    if any(not isinstance(event.get(f), str) or not event.get(f) for f in text):
        return "schema_violation"
    ts = event.get("ts")
    if isinstance(ts, float) and ts.is_integer():  # JSON Schema: 1.0 is an integer
        ts = event["ts"] = int(ts)
    if event.get("type") not in ("impression", "click") or type(ts) is not int:
        return "schema_violation"
    if not 946_684_800_000 <= ts <= 4_102_444_800_000:
        return "schema_violation"
    if event["type"] == "click" and not event.get("impression_id"):
        return "schema_violation"
    return event


@dataclass
class CtrExpected:
    """What the CTR rows must hold: [impressions, clicks] per window of each ad, campaign and cell;
    what the oracle rejected (by reason kind, and where the late and duplicate events are); each
    partition's last watermark and the partition of each ad (whose watermark makes its rows final)."""

    tumbling: tuple[str, int] = ("10s", TUMBLING)
    grace: int = GRACE
    ads: dict[Window, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    campaigns: dict[Window, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    cells: dict[Cell, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    rejected: Counter[str] = field(default_factory=Counter)
    late: set[Located] = field(default_factory=set)
    duplicates: set[Located] = field(default_factory=set)
    unattributed: set[Located] = field(default_factory=set)
    held: list[tuple[int, dict[Any, list[int]], Any, int]] = field(default_factory=list)  # a partition's
    watermark_of: dict[int, int] = field(default_factory=dict)
    partition_of_ad: dict[str, int] = field(default_factory=dict)
    campaign_of_ad: dict[str, str] = field(default_factory=dict)

    def count(self, event: Mapping[str, Any], ts: int, bound: int = 0) -> None:
        """Count at ``ts`` in every window holding it that ``bound`` (a click's watermark) left open:
        in the tumbling windows at once, in the hopping ones only once its pane (10 s) has closed
        (`release`)."""
        kind = 0 if event["type"] == "impression" else 1
        tumbling, tumbling_size = self.tumbling
        for name, size, step in ((tumbling, tumbling_size, tumbling_size), ("1m", HOPPING, HOP)):
            start = ts - ts % step
            pane_closes = start + step + self.grace
            while start > ts - size:
                if start + size + self.grace > bound:
                    keys = [
                        (self.ads, (name, event["ad_id"], start)),
                        (self.campaigns, (name, event["campaign_id"], start)),
                    ]
                    if name == "1m":
                        keys.append((self.cells, (name, event["segment"], event["ad_id"], start)))
                    for table, key in keys:
                        if name == "1m":
                            self.held.append((pane_closes, table, key, kind))
                        else:
                            table[key][kind] += 1
                start -= step

    def release(self, watermark: int) -> None:
        """The hopping counts of the panes the watermark closed join their windows; the others stay
        out (the pipeline writes an hourly window's row when one of its panes closes)."""
        for closes, table, key, kind in self.held:
            if closes <= watermark:
                table[key][kind] += 1
        self.held.clear()


def ctr_oracle(
    partitions: Mapping[int, Sequence[tuple[int, Mapping[str, Any] | str | None]]],
    tumbling: tuple[str, int] = ("10s", TUMBLING),
    grace: int = GRACE,
    attribute: bool = True,
) -> CtrExpected:
    """``partitions``: per partition in offset order, (offset, verdict): the valid event, the reason
    kind of an invalid one, or None for a message the caller rejected itself (not counted).
    ``attribute``: a click counts in its impression's windows still open when it comes, or waits
    for its impression until the watermark passes the click's time plus the grace (then it is
    an ``unattributed_click``); else at its own time."""
    expected = CtrExpected(tumbling, grace)
    for partition, events in partitions.items():
        seen: dict[str, int] = {}
        watermark: int | None = None
        waiting: dict[str, list[tuple[int, Mapping[str, Any]]]] = defaultdict(
            list
        )  # clicks before impressions
        for offset, event in events:
            if event is None:
                continue
            if isinstance(event, str):
                expected.rejected[event] += 1
                continue
            ts = int(event["ts"])
            event_id = event["event_id"]
            if event_id in seen and seen[event_id] >= (watermark or 0) - HORIZON:
                expected.duplicates.add((partition, offset))
                continue
            if watermark is not None and ts < watermark - grace:
                expected.rejected["late_event"] += 1
                expected.late.add((partition, offset))
                continue
            click = attribute and event["type"] == "click"
            impression_at = seen.get(event["impression_id"]) if click else None
            if impression_at is not None and watermark is not None and impression_at < watermark - HORIZON:
                impression_at = None  # beyond the horizon: forgotten
            seen[event_id] = ts
            before, watermark = watermark, ts if watermark is None else max(watermark, ts)
            expected.partition_of_ad[event["ad_id"]] = partition
            expected.campaign_of_ad[event["ad_id"]] = event["campaign_id"]
            if impression_at is not None:
                expected.count(event, impression_at, bound=watermark)
            elif click:
                waiting[event["impression_id"]].append((offset, event))
            else:
                expected.count(event, ts)
                for _, waited in waiting.pop(event_id, []):
                    expected.count(waited, ts, bound=watermark)
            if before is None or watermark > before:
                for impression_id in list(waiting):
                    gone = [(o, c) for o, c in waiting[impression_id] if int(c["ts"]) < watermark - grace]
                    for o, _ in gone:
                        expected.rejected["unattributed_click"] += 1
                        expected.unattributed.add((partition, o))
                    waiting[impression_id] = [w for w in waiting[impression_id] if w not in gone]
                    if not waiting[impression_id]:
                        del waiting[impression_id]
        if watermark is not None:
            expected.watermark_of[partition] = watermark
            expected.release(watermark)
        expected.held.clear()
    return expected


def oracle(
    partitions: Mapping[int, Sequence[tuple[int, bytes | None]]],
    tumbling: tuple[str, int] = ("10s", TUMBLING),
    grace: int = GRACE,
) -> dict[str, Any]:
    """The oracle over a raw topic as read back (`read_partitions`), each message judged by
    `oracle_valid`: window counts, rejections by kind, the number of duplicates, watermarks."""
    expected = ctr_oracle(
        {p: [(offset, oracle_valid(raw)) for offset, raw in messages] for p, messages in partitions.items()},
        tumbling,
        grace,
    )
    return {
        "ads": expected.ads,
        "campaigns": expected.campaigns,
        "cells": expected.cells,
        "rejected": expected.rejected,
        "duplicates": len(expected.duplicates),
        "watermark_of": expected.watermark_of,
        "partition_of_ad": expected.partition_of_ad,
        "campaign_of_ad": expected.campaign_of_ad,
        "grace": expected.grace,
    }


def as_counts(counts: Mapping[Any, Sequence[int]]) -> dict[Any, tuple[int, int]]:
    """(impressions, clicks) per key."""
    return {key: (n[0], n[1]) for key, n in counts.items()}


def ctr_rows(settings: Settings) -> dict[str, list[Any]]:
    """The settings' version's rows of the ad, campaign and cell tables."""
    version = settings.worker.pipeline_version
    cluster, session = connect(settings.cassandra, keyspace=settings.cassandra.keyspace)
    try:
        return {
            name: [r for r in session.execute(f"SELECT * FROM {table}") if r.pipeline_version == version]
            for name, table in TABLES.items()
        }
    finally:
        cluster.shutdown()


def assert_ctr_rows_match(settings: Settings, expected: CtrExpected | Mapping[str, Any]) -> list[Any]:
    """Identical impressions and clicks for every (ad, window), campaign (summed over partitions) and
    cell, and no other row; ``expected``: `ctr_oracle`'s verdict or `oracle`'s. Returns the ad rows."""
    want_of = expected if isinstance(expected, Mapping) else vars(expected)
    rows = ctr_rows(settings)
    campaign_sums: dict[Window, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows["campaigns"]:
        campaign_sums[(r.window, r.campaign_id, r.window_start)][0] += r.impressions
        campaign_sums[(r.window, r.campaign_id, r.window_start)][1] += r.clicks
    got_of = {
        "ads": {(r.window, r.ad_id, r.window_start): (r.impressions, r.clicks) for r in rows["ads"]},
        "campaigns": as_counts(campaign_sums),
        "cells": {
            (r.window, r.segment, r.ad_id, r.window_start): (r.impressions, r.clicks) for r in rows["cells"]
        },
    }
    for name in TABLES:
        want, got = as_counts(want_of[name]), got_of[name]
        assert got == want, (
            f"{name}: {len(got.keys() - want.keys())} unexpected rows, {len(want.keys() - got.keys())} "
            f"missing, {sum(got[k] != want[k] for k in got.keys() & want.keys())} with other counts"
        )
    return rows["ads"]


def assert_rows_match_oracle(settings: Settings, expected: Mapping[str, Any]) -> list[Any]:
    """Every ad, campaign (summed over partitions) and cell row equals the oracle; final flags too."""
    ad_rows = assert_ctr_rows_match(settings, expected)

    # Final exactly when the partition's watermark passed end + grace; the posterior exactly.
    learned = PriorOracle(settings.ctr, expected)
    levels: Counter[str] = Counter()
    for r in ad_rows:
        watermark = expected["watermark_of"][expected["partition_of_ad"][r.ad_id]]
        assert r.final == (r.window_end + expected["grace"] <= watermark), (r.window, r.ad_id, r.window_start)
        assert r.pipeline_version == settings.worker.pipeline_version and r.prior_version
        assert_posterior(settings, r, learned)
        levels[r.prior_level] += 1
    print(f"ad posteriors checked by prior level: {dict(levels)}")
    levels.clear()
    for cell in ctr_rows(settings)["cells"]:
        ad = expected["ads"].get((cell.window, cell.ad_id, cell.window_start), (0, 0))
        if cell.final or cell.prior_level != "ad":  # an open cell may hold an older ad count
            assert_posterior(settings, cell, learned, ad_counts=ad)
            levels[cell.prior_level] += 1
    print(f"cell posteriors checked by prior level: {dict(levels)}")
    return ad_rows


def assert_posterior(
    settings: Settings, row: Any, learned: PriorOracle, ad_counts: Sequence[int] | None = None
) -> None:
    """The row's smoothed CTR and interval are those of Beta(alpha + clicks, beta + misses) under
    its campaign's prior (restated here: the learned campaign prior of the window's epoch, else the
    prior file's campaign prior, the learned global prior, the file's global one, its default;
    scipy's Beta), at the configured level, equal-tailed. A cell (``ad_counts``: its ad's
    [impressions, clicks] in the window) with fewer than min_cell_impressions whose ad has
    min_ad_impressions in its other segments borrows a prior of exactly backoff_strength
    pseudo-impressions at the smoothed mean of those other segments (its own counts left out)."""
    from scipy.stats import beta as beta_distribution

    ctr = settings.ctr
    priors = orjson.loads(ctr.prior_file.read_bytes())
    from_file = priors["campaigns"].get(row.campaign_id)
    learned_campaign, learned_global = learned.learned(row.ad_id, row.campaign_id, row.window_start)
    if learned_campaign or (not from_file and learned_global):
        alpha, beta, level = learned_campaign or learned_global  # type: ignore[misc]
    else:
        prior = from_file or priors["global"] or priors["default"]
        alpha, beta, level = prior["alpha"], prior["beta"], prior["level"]
    if (
        ad_counts is not None
        and row.impressions < ctr.min_cell_impressions
        and ad_counts[0] - row.impressions >= ctr.min_ad_impressions
    ):
        n, c = ad_counts[0] - row.impressions, max(ad_counts[1] - row.clicks, 0)
        mean = (alpha + c) / (alpha + beta + max(n, c))
        alpha, beta, level = mean * ctr.backoff_strength, (1 - mean) * ctr.backoff_strength, "ad"
    assert row.prior_level == level, (row, level)
    a = alpha + row.clicks
    # misses floored at 0: a window can hold clicks whose impressions fell in the window before
    b = beta + max(row.impressions - row.clicks, 0)
    tail = (1 - settings.ctr.ci_level) / 2
    want = (a / (a + b), beta_distribution.ppf(tail, a, b), beta_distribution.ppf(1 - tail, a, b))
    got = (row.smoothed_ctr, row.ci_low, row.ci_high)
    assert all(abs(x - y) <= 1e-9 * max(1.0, abs(y)) for x, y in zip(got, want, strict=True)), (row, want)
