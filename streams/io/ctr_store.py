"""Reading the CTR tables (cassandra-driver). Partition buckets are walked newest first."""

from __future__ import annotations

from typing import Any

from cassandra.cluster import Session

from streams.ctr.processor import AD_TABLE, CAMPAIGN_TABLE, CELL_TABLE, DAY_MS, HOUR_MS
from streams.io.cassandra import check_identifier

MAX_BUCKETS = 400


def _buckets(start_ms: int, end_ms: int, bucket_ms: int) -> range:
    first, last = start_ms // bucket_ms, (end_ms - 1) // bucket_ms
    if last - first >= MAX_BUCKETS:
        first = last - MAX_BUCKETS + 1
    return range(last, first - 1, -1)


def _rows(result: Any) -> list[dict[str, Any]]:
    return [dict(row._asdict()) for row in result]


def _read_windows(
    session: Session, table: str, key: tuple[str, str], version: str, window: str, start_ms: int, end_ms: int
) -> list[dict[str, Any]]:
    column, value = key
    statement = session.prepare(
        f"SELECT * FROM {table} WHERE pipeline_version = ? AND {column} = ? "
        "AND window = ? AND bucket = ? AND window_start >= ? AND window_start < ?"
    )
    rows: list[dict[str, Any]] = []
    for bucket in _buckets(start_ms, end_ms, DAY_MS):
        rows += _rows(session.execute(statement, (version, value, window, bucket, start_ms, end_ms)))
    return rows


def read_ad_windows(
    session: Session, keyspace: str, version: str, ad_id: str, window: str, start_ms: int, end_ms: int
) -> list[dict[str, Any]]:
    table = f"{check_identifier(keyspace)}.{AD_TABLE}"
    return _read_windows(session, table, ("ad_id", ad_id), version, window, start_ms, end_ms)


def read_campaign_partials(
    session: Session, keyspace: str, version: str, campaign_id: str, window: str, start_ms: int, end_ms: int
) -> list[dict[str, Any]]:
    table = f"{check_identifier(keyspace)}.{CAMPAIGN_TABLE}"
    return _read_windows(session, table, ("campaign_id", campaign_id), version, window, start_ms, end_ms)


def read_latest_segment_window(
    session: Session, keyspace: str, version: str, segment: str, window: str, at_ms: int, final_only: bool
) -> list[dict[str, Any]]:
    """Every ad cell of the newest window of ``segment`` starting before ``at_ms`` (final ones only
    if asked), looking back at most a day. (`streams query top-ads` passes the start of the newest
    window that has ended, `ctr.views.ended_windows_before`.)"""
    table = f"{check_identifier(keyspace)}.{CELL_TABLE}"
    latest = session.prepare(
        f"SELECT window_start, final FROM {table} WHERE pipeline_version = ? AND segment = ? "
        "AND window = ? AND bucket = ? AND window_start < ?"
    )
    cells = session.prepare(
        f"SELECT * FROM {table} WHERE pipeline_version = ? AND segment = ? AND window = ? "
        "AND bucket = ? AND window_start = ?"
    )
    for bucket in _buckets(at_ms - DAY_MS, at_ms, HOUR_MS):
        for row in session.execute(latest, (version, segment, window, bucket, at_ms)):
            if row.final or not final_only:
                return _rows(session.execute(cells, (version, segment, window, bucket, row.window_start)))
    return []


def scan_ad_totals(
    session: Session, keyspace: str, version: str, window: str, final_only: bool = True
) -> dict[str, list[tuple[int, int]]]:
    """Per campaign, each ad's (impressions, clicks) summed over its ``window`` rows: a full
    table scan, paged by the driver (an offline job, not a serving query)."""
    totals: dict[tuple[str, str], list[int]] = {}
    rows = session.execute(
        f"SELECT pipeline_version, ad_id, window, campaign_id, impressions, clicks, final "
        f"FROM {check_identifier(keyspace)}.{AD_TABLE}"
    )
    for row in rows:
        if row.pipeline_version != version or row.window != window or (final_only and not row.final):
            continue
        total = totals.setdefault((row.campaign_id, row.ad_id), [0, 0])
        total[0] += row.impressions
        total[1] += row.clicks
    by_campaign: dict[str, list[tuple[int, int]]] = {}
    for (campaign, _), (impressions, clicks) in sorted(totals.items()):
        by_campaign.setdefault(campaign, []).append((impressions, clicks))
    return by_campaign
