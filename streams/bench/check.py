"""Reading each contender's results back from Cassandra and comparing them with the oracle.

Every (ad, 1 min window) of the input must be in the contender's table with exactly the oracle's
impressions and clicks, and nothing else may be there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cassandra.concurrent import execute_concurrent_with_args

from streams.bench.workload import Oracle
from streams.ctr.processor import AD_TABLE, DAY_MS
from streams.io.cassandra import check_identifier

JOB_TABLES = ("bench_naive_ctr", "bench_quix_ctr")
Windows = dict[tuple[str, int], tuple[int, int]]


@dataclass(frozen=True)
class Check:
    """The outcome of comparing a contender's results with the oracle, and one line saying how."""

    correct: bool
    summary: str


def compare(oracle: Oracle, found: Mapping[tuple[str, int], tuple[int, int]]) -> Check:
    expected = {key: (counts[0], counts[1]) for key, counts in oracle.windows.items()}
    wrong = sum(1 for key in expected.keys() | found.keys() if expected.get(key) != found.get(key))
    impressions, clicks = oracle.by_type["impression"], oracle.by_type["click"]
    if wrong == 0:
        return Check(True, f"ok: {len(expected)} windows, {impressions} impressions, {clicks} clicks")
    found_impressions, found_clicks = sum(i for i, _ in found.values()), sum(c for _, c in found.values())
    return Check(
        False,
        f"WRONG: {wrong} of {len(expected)} windows differ (found {len(found)}); impressions "
        f"{found_impressions} of {impressions}, clicks {found_clicks} of {clicks}",
    )


def compare_totals(oracle: Oracle, by_type: Mapping[str, float]) -> Check:
    """For the raw ceiling, which keeps no windows: every event decoded once, by type."""
    expected = (oracle.by_type["impression"], oracle.by_type["click"])
    found = (int(by_type.get("impression", 0)), int(by_type.get("click", 0)))
    if found == expected:
        return Check(True, f"ok: {expected[0]} impressions, {expected[1]} clicks decoded")
    return Check(
        False, f"WRONG: decoded {found[0]} impressions of {expected[0]}, {found[1]} clicks of {expected[1]}"
    )


def compare_ids(expected: set[str], found: set[str], what: str) -> Check:
    """Every expected id seen, and nothing else (for the fraud scenarios: scored transactions)."""
    if found == expected:
        return Check(True, f"ok: {len(expected)} {what}")
    missing, extra = len(expected - found), len(found - expected)
    return Check(False, f"WRONG: {missing} of {len(expected)} {what} missing, {extra} unexpected")


def create_job_tables(session: Any, keyspace: str) -> None:
    for table in JOB_TABLES:
        session.execute(
            f"CREATE TABLE IF NOT EXISTS {check_identifier(keyspace)}.{check_identifier(table)} ("
            "run_id text, ad_id text, window_start bigint, impressions bigint, clicks bigint, "
            "PRIMARY KEY ((run_id, ad_id), window_start))",
            timeout=60,
        )


def _read(session: Any, cql: str, keys: Iterable[tuple[Any, ...]]) -> Windows:
    statement = session.prepare(cql)
    found: Windows = {}
    for success, rows in execute_concurrent_with_args(session, statement, list(keys), concurrency=32):
        if not success:
            raise rows
        for row in rows:
            found[(row.ad_id, row.window_start)] = (row.impressions, row.clicks)
    return found


def job_windows(session: Any, keyspace: str, table: str, run_id: str, ads: Iterable[str]) -> Windows:
    cql = (
        f"SELECT ad_id, window_start, impressions, clicks FROM {check_identifier(keyspace)}."
        f"{check_identifier(table)} WHERE run_id = ? AND ad_id = ?"
    )
    return _read(session, cql, ((run_id, ad) for ad in ads))


def our_windows(session: Any, keyspace: str, version: str, oracle: Oracle, window: str = "1m") -> Windows:
    """Our worker's ``ctr_ad_windows`` rows of the tumbling window (partitions bucketed by day)."""
    cql = (
        f"SELECT ad_id, window_start, impressions, clicks FROM {check_identifier(keyspace)}.{AD_TABLE} "
        "WHERE pipeline_version = ? AND ad_id = ? AND window = ? AND bucket = ?"
    )
    buckets = sorted({start // DAY_MS for start in oracle.window_starts})
    return _read(session, cql, ((version, ad, window, b) for ad in oracle.ads for b in buckets))


def delete_job_rows(session: Any, keyspace: str, table: str, run_id: str, ads: Iterable[str]) -> None:
    statement = session.prepare(
        f"DELETE FROM {check_identifier(keyspace)}.{check_identifier(table)} WHERE run_id = ? AND ad_id = ?"
    )
    execute_concurrent_with_args(session, statement, [(run_id, ad) for ad in ads], concurrency=32)
